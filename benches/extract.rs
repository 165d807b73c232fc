//! Main-content extraction throughput on the simulator's article pages
//! (50-150 KB of HTML each, several site templates). Target: >= 200 pages/s
//! per core. One page per iteration, single thread.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use freshet::dataplane::extract::content;
use freshet::sim::Corpus;

fn bench_extract(c: &mut Criterion) {
    let corpus = Corpus::new(7);
    let pages: Vec<_> = corpus
        .article_urls(80, 64)
        .iter()
        .filter_map(|u| corpus.page(&url::Url::parse(u).expect("corpus URLs parse")))
        .collect();
    let bytes: usize = pages.iter().map(|p| p.html.len()).sum();
    let mut group = c.benchmark_group("extract");
    group.throughput(Throughput::Elements(pages.len() as u64));
    group.sample_size(10);
    group.bench_function(
        format!("{}_pages_{}KB_avg", pages.len(), bytes / pages.len() / 1024),
        |b| {
            b.iter(|| {
                for page in &pages {
                    black_box(content::extract(&page.html, Some(&page.url)));
                }
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_extract);
criterion_main!(benches);
