//! Extraction quality and speed, freshet beside its peers.
//!
//! Real pages (the corpora `scripts/fetch-corpora` lays out):
//!
//! `cargo run --release --example extract_eval -- corpora [--split dev|val|all] [--worst N] [--only freshet]`
//!
//! prints, per corpus and split, mean precision / recall / F1 over pages of
//! the `--format text` output and the median and p90 milliseconds per page
//! (one thread) for freshet, rs-trafilatura and dom_smoothie run on the same
//! pages in the same run, then how well freshet's quality score predicts its
//! per-page F1 (Spearman, and the share of failed pages, F1 < 0.5, that score
//! below `transform.min_quality`).
//!
//! Simulator pages: `cargo run --release --example extract_eval -- --sim [N] [SEED]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use freshet::dataplane::extract::corpus::{self, Prf, RealPage};
use freshet::dataplane::extract::{content, quality};

#[derive(Clone, Copy, PartialEq)]
enum Extractor {
    Freshet,
    Trafilatura,
    Smoothie,
}

impl Extractor {
    fn name(self) -> &'static str {
        match self {
            Extractor::Freshet => "freshet",
            Extractor::Trafilatura => "rs-trafilatura",
            Extractor::Smoothie => "dom_smoothie",
        }
    }

    /// Text output and, for freshet, its quality score.
    fn run(self, page: &RealPage) -> (String, f64) {
        let url = page.url.as_deref();
        match self {
            Extractor::Freshet => {
                let out = content::extract(&page.html, url);
                (
                    quality::markdown_text(&out.markdown).0.trim().to_string(),
                    out.quality.score,
                )
            }
            Extractor::Trafilatura => {
                let options = rs_trafilatura::Options {
                    url: url.map(str::to_string),
                    ..Default::default()
                };
                let text = rs_trafilatura::extract_with_options(&page.html, &options)
                    .map(|r| r.content_text)
                    .unwrap_or_default();
                (text, 0.0)
            }
            Extractor::Smoothie => {
                let text = dom_smoothie::Readability::new(page.html.as_str(), url, None)
                    .ok()
                    .and_then(|mut r| r.parse().ok())
                    .map(|a| a.text_content.to_string())
                    .unwrap_or_default();
                (text, 0.0)
            }
        }
    }
}

struct Row {
    id: String,
    prf: Prf,
    ms: f64,
    quality: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--sim") {
        let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
        let seed = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
        sim_eval(n, seed);
        return;
    }
    let mut dir = PathBuf::from("corpora");
    let mut split = "all".to_string();
    let mut worst = 0usize;
    let mut only_freshet = false;
    let mut profile = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--split" => split = it.next().cloned().unwrap_or_default(),
            "--worst" => worst = it.next().and_then(|n| n.parse().ok()).unwrap_or(10),
            "--only" => only_freshet = it.next().map(String::as_str) == Some("freshet"),
            "--profile" => profile = true,
            other => dir = PathBuf::from(other),
        }
    }
    let pages = match corpus::load(&dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let pages: Vec<RealPage> = pages
        .into_iter()
        .filter(|p| match split.as_str() {
            "dev" => !p.is_validation(),
            "val" => p.is_validation(),
            _ => true,
        })
        .collect();
    if profile {
        profile_parse(&pages);
        return;
    }
    let extractors: &[Extractor] = if only_freshet {
        &[Extractor::Freshet]
    } else {
        &[
            Extractor::Freshet,
            Extractor::Trafilatura,
            Extractor::Smoothie,
        ]
    };
    let min_quality = freshet::knobs::Knobs::default().transform.min_quality;
    // (corpus, split) -> extractor -> rows
    let mut results: BTreeMap<(&str, &str), BTreeMap<&str, Vec<Row>>> = BTreeMap::new();
    for page in &pages {
        let part = if page.is_validation() { "val" } else { "dev" };
        for ex in extractors {
            let started = Instant::now();
            let (text, q) = ex.run(page);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let row = Row {
                id: page.id.clone(),
                prf: page.score(&text),
                ms,
                quality: q,
            };
            for key in [(page.corpus, part), (page.corpus, "all")] {
                results
                    .entry(key)
                    .or_default()
                    .entry(ex.name())
                    .or_default()
                    .push(row_clone(&row));
            }
        }
    }
    let kb = pages.iter().map(|p| p.html.len()).sum::<usize>() as f64
        / pages.len().max(1) as f64
        / 1024.0;
    println!(
        "{} pages from {} (split {split}), mean {kb:.0} KB of HTML; metric: token P/R/F1 \
         (readability) or segment P/R/F1 (trafilatura), mean over pages",
        pages.len(),
        dir.display()
    );
    println!(
        "{:<12} {:<4} {:<15} {:>5} {:>7} {:>7} {:>7} {:>8} {:>8}",
        "corpus", "part", "extractor", "pages", "P", "R", "F1", "p50 ms", "p90 ms"
    );
    for ((corpus_name, part), by_ex) in &results {
        for (name, rows) in by_ex {
            let prf = Prf::mean(rows.iter().map(|r| &r.prf));
            let mut ms: Vec<f64> = rows.iter().map(|r| r.ms).collect();
            ms.sort_by(f64::total_cmp);
            println!(
                "{:<12} {:<4} {:<15} {:>5} {:>7.4} {:>7.4} {:>7.4} {:>8.2} {:>8.2}",
                corpus_name,
                part,
                name,
                rows.len(),
                prf.precision,
                prf.recall,
                prf.f1,
                percentile(&ms, 0.5),
                percentile(&ms, 0.9)
            );
        }
    }
    println!("\nquality score vs freshet's per-page F1 (min_quality {min_quality}):");
    println!(
        "{:<12} {:<4} {:>9} {:>7} {:>16}",
        "corpus", "part", "spearman", "failed", "failed below min"
    );
    for ((corpus_name, part), by_ex) in &results {
        let Some(rows) = by_ex.get("freshet") else {
            continue;
        };
        let q: Vec<f64> = rows.iter().map(|r| r.quality).collect();
        let f: Vec<f64> = rows.iter().map(|r| r.prf.f1).collect();
        let failed: Vec<&Row> = rows.iter().filter(|r| r.prf.f1 < 0.5).collect();
        let below = failed.iter().filter(|r| r.quality < min_quality).count();
        println!(
            "{:<12} {:<4} {:>9.3} {:>7} {:>16}",
            corpus_name,
            part,
            corpus::spearman(&q, &f),
            failed.len(),
            if failed.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{below} ({:.0} %)",
                    100.0 * below as f64 / failed.len() as f64
                )
            }
        );
    }
    if worst > 0 {
        for ((corpus_name, part), by_ex) in &results {
            if *part == "all" {
                continue;
            }
            let Some(rows) = by_ex.get("freshet") else {
                continue;
            };
            let mut rows: Vec<&Row> = rows.iter().collect();
            rows.sort_by(|a, b| a.prf.f1.total_cmp(&b.prf.f1));
            println!("\nworst freshet pages, {corpus_name} {part}:");
            for r in rows.iter().take(worst) {
                println!(
                    "  F1 {:.3} P {:.3} R {:.3} q {:.2} {:.1} ms  {}",
                    r.prf.f1, r.prf.precision, r.prf.recall, r.quality, r.ms, r.id
                );
            }
        }
    }
}

/// Median milliseconds of the HTML parse alone next to the whole extraction,
/// to see where the time goes.
fn profile_parse(pages: &[RealPage]) {
    let mut parse = Vec::new();
    let mut full = Vec::new();
    for page in pages {
        let t = Instant::now();
        let doc = dom_query::Document::from(page.html.as_str());
        parse.push(t.elapsed().as_secs_f64() * 1e3);
        drop(doc);
        let t = Instant::now();
        let _ = content::extract(&page.html, page.url.as_deref());
        full.push(t.elapsed().as_secs_f64() * 1e3);
    }
    parse.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    println!(
        "{} pages: parse p50 {:.2} ms p90 {:.2}; freshet extract p50 {:.2} ms p90 {:.2}",
        pages.len(),
        percentile(&parse, 0.5),
        percentile(&parse, 0.9),
        percentile(&full, 0.5),
        percentile(&full, 0.9)
    );
}

fn row_clone(r: &Row) -> Row {
    Row {
        id: r.id.clone(),
        prf: r.prf,
        ms: r.ms,
        quality: r.quality,
    }
}

/// Quality on the simulator's generated articles (known article text).
fn sim_eval(n: usize, seed: u64) {
    use freshet::sim::Corpus;
    let corpus = Corpus::new(seed);
    let pages: Vec<_> = corpus
        .article_urls(80, n)
        .iter()
        .filter_map(|u| corpus.page(&url::Url::parse(u).ok()?))
        .collect();
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut min_q = 1.0f64;
    for page in &pages {
        let out = content::extract(&page.html, Some(&page.url));
        rows.push(corpus::token_prf(
            &quality::markdown_text(&out.markdown).0,
            &page.article_text,
        ));
        min_q = min_q.min(out.quality.score);
    }
    let secs = started.elapsed().as_secs_f64();
    let prf = Prf::mean(&rows);
    println!(
        "simulator: {} pages, P {:.4} R {:.4} F1 {:.4}, {:.0} pages/s (1 thread), lowest quality {min_q:.3}",
        pages.len(),
        prf.precision,
        prf.recall,
        prf.f1,
        pages.len() as f64 / secs
    );
}
