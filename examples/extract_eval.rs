//! Extraction quality on the simulator's generated articles: token-level F1
//! against the known article text, per method and per template, and pages/s.
//!
//! `cargo run --release --example extract_eval -- [N] [SEED]`

use std::time::Instant;

use freshet::dataplane::extract::{content, quality::token_f1};
use freshet::sim::Corpus;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let corpus = Corpus::new(seed);
    let urls = corpus.article_urls(80, n);
    let mut total_f1 = 0.0;
    let mut worst: Vec<(f64, String, &'static str)> = Vec::new();
    let mut by_method = std::collections::BTreeMap::<&str, (usize, f64)>::new();
    let mut bytes = 0usize;
    let mut pages = Vec::new();
    for url in &urls {
        let page = corpus.page(&url::Url::parse(url).unwrap()).unwrap();
        bytes += page.html.len();
        pages.push(page);
    }
    let mut min_q = 1.0f64;
    let (mut prec, mut rec) = (0.0f64, 0.0f64);
    let started = Instant::now();
    for page in &pages {
        let out = match std::env::var("METHOD").as_deref() {
            Ok("readability") => {
                content::extract_single(&page.html, Some(&page.url), content::Method::Readability)
            }
            Ok("trafilatura") => {
                content::extract_single(&page.html, Some(&page.url), content::Method::Trafilatura)
            }
            _ => content::extract(&page.html, Some(&page.url)),
        };
        let f1 = token_f1(
            &freshet::dataplane::extract::quality::markdown_text(&out.markdown).0,
            &page.article_text,
        );
        total_f1 += f1;
        {
            use std::collections::HashMap;
            let mut want: HashMap<String, i64> = HashMap::new();
            let mut tn = 0;
            for t in freshet::dataplane::extract::quality::tokens(&page.article_text) {
                *want.entry(t).or_default() += 1;
                tn += 1;
            }
            let (mut pn, mut hit) = (0, 0);
            for t in freshet::dataplane::extract::quality::tokens(
                &freshet::dataplane::extract::quality::markdown_text(&out.markdown).0,
            ) {
                pn += 1;
                if let Some(n) = want.get_mut(&t) {
                    if *n > 0 {
                        *n -= 1;
                        hit += 1;
                    }
                }
            }
            prec += if pn > 0 { hit as f64 / pn as f64 } else { 0.0 };
            rec += if tn > 0 { hit as f64 / tn as f64 } else { 0.0 };
        }
        let e = by_method.entry(out.method.as_str()).or_default();
        e.0 += 1;
        e.1 += f1;
        worst.push((f1, page.url.clone(), out.method.as_str()));
        min_q = min_q.min(out.quality.score);
        if std::env::var("SHOWQ").is_ok() && out.quality.score < 0.75 {
            println!(
                "lowq {:?} {} {}",
                out.quality,
                out.method.as_str(),
                page.url
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    worst.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    println!(
        "pages: {n}, mean size {:.0} KB, mean F1 {:.4}, {:.0} pages/s (1 thread)",
        bytes as f64 / n as f64 / 1024.0,
        total_f1 / n as f64,
        n as f64 / secs
    );
    println!(
        "  precision {:.4} recall {:.4}",
        prec / n as f64,
        rec / n as f64
    );
    println!("  lowest quality score of an article: {min_q:.3}");
    for (m, (c, f)) in by_method {
        println!("  {m}: {c} pages, F1 {:.4}", f / c as f64);
    }
    for (f1, url, m) in worst.iter().take(8) {
        println!("  worst {f1:.3} {m} {url}");
    }
}
