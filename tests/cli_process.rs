//! The binary as a user runs it: `demo` then `query`, `extract --file`
//! offline with JSON output, and `bench freshness` end to end.

mod common;
use common::freshet;

#[test]
fn demo_indexes_the_simulated_web_and_query_finds_it() {
    let tmp = common::TempDir::new("demo");
    let dir = tmp.0.to_str().unwrap();
    let (ok, out, err) = freshet(&[
        "demo",
        "--duration",
        "3s",
        "--rate",
        "20",
        "--data-dir",
        dir,
    ]);
    assert!(ok, "demo failed:\n{out}\n{err}");
    assert!(
        out.contains("freshet demo summary") && out.contains("drained cleanly                yes"),
        "{out}"
    );
    let chunks: u64 = out
        .lines()
        .find(|l| l.trim_start().starts_with("chunks indexed"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(chunks > 0, "{out}");
    let (ok, out, err) = freshet(&[
        "query",
        "heat pumps winter bills",
        "-k",
        "3",
        "--data-dir",
        dir,
    ]);
    assert!(ok, "query failed: {err}");
    assert!(out.contains("1. [") && out.contains(".sim.test:"), "{out}");
}

#[test]
fn extract_works_offline_on_a_saved_page() {
    let tmp = common::TempDir::new("extract-file");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let corpus = freshet::sim::Corpus::new(3);
    let url = corpus.article_urls(80, 1).pop().unwrap();
    let page = corpus.page(&url::Url::parse(&url).unwrap()).unwrap();
    let file = tmp.0.join("page.html");
    std::fs::write(&file, &page.body).unwrap();
    let (ok, out, err) = freshet(&[
        "extract",
        "--file",
        file.to_str().unwrap(),
        "--url",
        &url,
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["page"];
    assert_eq!(p["title"], page.title.as_str());
    assert!(p["quality"]["score"].as_f64().unwrap() > 0.5, "{p}");
    for part in ["words", "length", "structure", "prose", "links", "clean"] {
        assert!(p["quality"].get(part).is_some(), "quality part {part}");
    }
    assert_eq!(p["render_mode"], "http");
    assert!(p["timings"]["extract_ms"].as_f64().is_some());
    let f1 = freshet::dataplane::extract::quality::token_f1(
        &freshet::dataplane::extract::quality::markdown_text(p["markdown"].as_str().unwrap()).0,
        &page.article_text,
    );
    assert!(f1 > 0.95, "F1 {f1}");
    let (ok, text, _) = freshet(&[
        "extract",
        "--file",
        file.to_str().unwrap(),
        "--format",
        "text",
    ]);
    assert!(ok && !text.contains("](") && text.len() > 200, "{text}");
}

#[test]
fn bench_freshness_sees_every_posted_document_over_http() {
    let (ok, out, err) = freshet(&[
        "bench",
        "freshness",
        "--embedder",
        "hash",
        "--rate",
        "50",
        "--duration",
        "2s",
        "--search-rate",
        "5",
    ]);
    assert!(ok, "bench freshness failed:\n{out}\n{err}");
    let row: serde_json::Value = err
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON row on stderr:\n{err}"));
    let posted = row["posted"].as_u64().unwrap();
    assert!(posted >= 50, "{row}");
    assert_eq!(row["unseen"], 0, "every document became searchable: {row}");
    assert_eq!(row["points"].as_u64(), Some(posted), "{row}");
    assert!(row["searches"].as_u64().unwrap() > 0, "{row}");
    assert!(row["fresh_p99_ms"].as_f64().unwrap() > 0.0, "{row}");
    assert!(
        out.contains("| hash |") && out.contains("searchable p50"),
        "{out}"
    );
}
