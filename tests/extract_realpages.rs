//! Extraction on real pages with human or reference ground truth: the
//! subset of the mozilla/readability and adbar/trafilatura corpora that
//! `scripts/fetch-corpora --subset 12` lays out, committed in
//! `tests/data/realpages` (Apache-2.0 repositories; see its NOTICE).
//!
//! The pages are third-party data kept under their repositories' licence.
//! The test reads `$FRESHET_REALPAGES` (e.g. the whole corpora), else
//! `../shared/realpages`, else the committed `tests/data/realpages`. With
//! none of them present it says so and skips, unless
//! `FRESHET_REQUIRE_REALPAGES` is set (scripts/test sets it: then a missing
//! corpus fails).
//!
//! The floors are regression floors a few points below what today's
//! extractor scores over the whole corpora (readability 0.94, trafilatura
//! 0.88 mean F1; docs/BENCHMARKS.md), not the goal of 0.97: a
//! change that breaks extraction on real pages fails here.

use std::path::PathBuf;

use freshet::dataplane::extract::batch;
use freshet::dataplane::extract::corpus::{self, Prf, RealPage};
use freshet::dataplane::extract::{content, quality};

/// Mean token F1 the readability subset must reach (whole corpus today: 0.94).
const READABILITY_FLOOR: f64 = 0.88;
/// Mean segment F1 the trafilatura subset must reach (whole corpus today: 0.88).
const TRAFILATURA_FLOOR: f64 = 0.80;

fn corpus_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("FRESHET_REALPAGES").map(PathBuf::from),
        Some(PathBuf::from("../shared/realpages")),
        Some(PathBuf::from("tests/data/realpages")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_dir());
    if found.is_none() {
        assert!(
            std::env::var_os("FRESHET_REQUIRE_REALPAGES").is_none(),
            "no real-page corpus: set FRESHET_REALPAGES or run scripts/fetch-corpora"
        );
        eprintln!(
            "skipped: no real-page corpus (FRESHET_REALPAGES, ../shared/realpages, \
             tests/data/realpages); lay one out with scripts/fetch-corpora --subset 12"
        );
    }
    found
}

fn pages() -> Option<Vec<RealPage>> {
    let dir = corpus_dir()?;
    Some(corpus::load(&dir).unwrap_or_else(|e| panic!("{e}")))
}

fn mean_f1(pages: &[RealPage], corpus_name: &str) -> (usize, Prf) {
    let scores: Vec<Prf> = pages
        .iter()
        .filter(|p| p.corpus == corpus_name)
        .map(|p| {
            let out = content::extract(&p.html, p.url.as_deref());
            p.score(quality::markdown_text(&out.markdown).0.trim())
        })
        .collect();
    (scores.len(), Prf::mean(&scores))
}

#[test]
fn real_pages_reach_the_f1_floor() {
    let Some(pages) = pages() else { return };
    for (name, floor) in [
        ("readability", READABILITY_FLOOR),
        ("trafilatura", TRAFILATURA_FLOOR),
    ] {
        let (n, prf) = mean_f1(&pages, name);
        if n == 0 {
            continue;
        }
        eprintln!(
            "{name}: {n} pages, P {:.4} R {:.4} F1 {:.4}",
            prf.precision, prf.recall, prf.f1
        );
        assert!(
            prf.f1 >= floor,
            "{name}: mean F1 {:.4} over {n} pages is below the floor {floor}",
            prf.f1
        );
    }
}

#[test]
fn batch_jsonl_is_well_formed() {
    let Some(pages) = pages() else { return };
    let dir = std::env::temp_dir().join(format!("freshet-realbatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("pages.jsonl");
    let mut lines = String::new();
    for p in &pages {
        let url = p
            .url
            .clone()
            .unwrap_or_else(|| format!("https://{}.example/", p.id));
        lines.push_str(&serde_json::json!({"url": url, "html": p.html}).to_string());
        lines.push('\n');
    }
    std::fs::write(&input, lines).unwrap();
    let mut out = Vec::new();
    let summary = batch::run(
        &batch::Source::detect(&input),
        &mut out,
        &batch::Options { jobs: 2 },
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len(), pages.len());
    assert_eq!(summary.pages, pages.len());
    assert_eq!(summary.errors, 0);
    for (r, p) in records.iter().zip(&pages) {
        for key in ["url", "title", "text", "markdown", "method"] {
            assert!(r[key].is_string(), "{key} in {r}");
        }
        let q = r["quality"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&q), "{r}");
        assert!(r["ms"].as_f64().unwrap() >= 0.0);
        // The text field is what --format text prints for the page.
        let direct = content::extract(&p.html, r["url"].as_str());
        assert_eq!(
            r["text"].as_str().unwrap(),
            quality::markdown_text(&direct.markdown).0.trim()
        );
    }
    assert!(summary.p50_ms > 0.0 && summary.p99_ms >= summary.p50_ms);
    assert!(summary.pages_per_sec > 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

/// The nesting-depth cap that guards extraction against hostile pages
/// leaves real pages as they are: none of them is flattened.
#[test]
fn the_depth_cap_leaves_real_pages_unchanged() {
    use freshet::dataplane::extract::depth;
    let Some(pages) = pages() else { return };
    let flattened: Vec<&str> = pages
        .iter()
        .filter(|p| {
            matches!(
                depth::cap_nesting(&p.html, depth::MAX_DEPTH),
                std::borrow::Cow::Owned(_)
            )
        })
        .map(|p| p.id.as_str())
        .collect();
    assert!(
        flattened.is_empty(),
        "{} of {} real pages were flattened: {flattened:?}",
        flattened.len(),
        pages.len()
    );
}
