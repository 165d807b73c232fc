//! Transform throughput in MB/s of markdown: normalization, the Polars
//! columnar step (whitespace, word counts, filters, in-batch dedupe) and
//! chunking with ids, on batches of the simulator's article markdown.
//! Target: >= 100 MB/s on the reference machine.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use freshet::dataplane::transform::{transform_batch, DocIn};
use freshet::knobs::TransformKnobs;
use freshet::sim::Corpus;

fn bench_transform(c: &mut Criterion) {
    let corpus = Corpus::new(7);
    let docs: Vec<DocIn> = corpus
        .article_urls(80, 64)
        .iter()
        .filter_map(|u| corpus.page(&url::Url::parse(u).expect("corpus URLs parse")))
        .map(|p| DocIn::page(p.url.clone(), p.rendered_markdown.clone(), 0.9))
        .collect();
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    let knobs = TransformKnobs::default();
    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(20);
    group.bench_function(
        format!("batch_of_{}_docs_{}KB", docs.len(), bytes / 1024),
        |b| b.iter(|| black_box(transform_batch(&docs, &knobs).expect("transform succeeds"))),
    );
    group.finish();
}

criterion_group!(benches, bench_transform);
criterion_main!(benches);
