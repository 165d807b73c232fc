use std::time::Instant;
use freshet::dataplane::transform::*;
use freshet::sim::Corpus;
fn main() {
    let corpus = Corpus::new(7);
    let docs: Vec<DocIn> = corpus.article_urls(80, 64).iter().filter_map(|u| corpus.page(&url::Url::parse(u).unwrap())).map(|p| DocIn { doc_id: p.url.clone(), text: p.rendered_markdown.clone(), quality: 0.9 }).collect();
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    let n = 20;
    let t = Instant::now(); for _ in 0..n { for d in &docs { std::hint::black_box(normalize(&d.text)); } } let a = t.elapsed().as_secs_f64()/n as f64;
    let t = Instant::now(); for _ in 0..n { for d in &docs { std::hint::black_box(sha256_hex(&d.text)); } } let b = t.elapsed().as_secs_f64()/n as f64;
    let t = Instant::now(); for _ in 0..n { for d in &docs { std::hint::black_box(chunk(&d.doc_id, &d.text, 256, 32)); } } let c = t.elapsed().as_secs_f64()/n as f64;
    let k = freshet::knobs::TransformKnobs::default();
    let t = Instant::now(); for _ in 0..n { std::hint::black_box(transform_batch(&docs, &k).unwrap()); } let d = t.elapsed().as_secs_f64()/n as f64;
    let mb = bytes as f64 / 1e6;
    println!("bytes {mb:.2} MB; normalize {:.0} MB/s; sha {:.0} MB/s; chunk {:.0} MB/s; total {:.0} MB/s", mb/a, mb/b, mb/c, mb/d);
}
