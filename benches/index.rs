//! qdrant-edge (`EdgeIndex`) upsert throughput while the collection grows,
//! then search latency. Target: >= 5,000 points/s at 384 dimensions.
//!
//! A plain `main` rather than criterion: the interesting number is how
//! throughput changes as the shard grows, which criterion's repeated
//! identical iterations cannot show. Prints a Markdown table (one row per
//! step) and one `summary:` line.
//!
//! Every upsert is durable when it returns (a full shard flush, see
//! `src/dataplane/index/edge.rs`), exactly as in the pipeline.
//!
//! Knobs (environment): `FRESHET_BENCH_POINTS` (default 200000),
//! `FRESHET_BENCH_STEP` (20000), `FRESHET_BENCH_BATCH` (256),
//! `FRESHET_BENCH_OPTIMIZE=1` to also build the HNSW index and measure
//! search again (minutes on 2 cores).
//!
//! Run: `cargo bench --bench index`.

use std::time::{Duration, Instant};

use freshet::dataplane::index::edge::EdgeIndex;
use freshet::dataplane::index::{chunk_id, ChunkPayload, ChunkPoint, VectorIndex};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 384;
const CHUNKS_PER_DOC: u64 = 8;
const QUERIES: usize = 1_000;
const K: usize = 10;
const TARGET: f64 = 5_000.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_unit(rng: &mut SmallRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A point with a payload the size of a real chunk (~1 KB of text).
fn point(rng: &mut SmallRng, n: u64, text: &str) -> ChunkPoint {
    let doc = format!("https://bench.example/doc/{}", n / CHUNKS_PER_DOC);
    let index = (n % CHUNKS_PER_DOC) as u32;
    ChunkPoint {
        id: chunk_id(&doc, index),
        vector: random_unit(rng),
        payload: ChunkPayload {
            doc_id: doc.clone(),
            chunk_index: index,
            chunk_count: CHUNKS_PER_DOC as u32,
            url: doc,
            title: format!("Bench document {}", n / CHUNKS_PER_DOC),
            text: text.to_owned(),
            content_hash: format!("{:064x}", u128::from(n) * 0x9e37_79b9),
            doc_hash: format!("{:064x}", u128::from(n / CHUNKS_PER_DOC) * 0x85eb_ca6b),
            fetched_at_ms: 1_760_000_000_000 + n,
            event_ts_ms: 1_760_000_000_000 + n,
            indexed_ts_ms: 1_760_000_000_000 + n,
            domain: String::new(),
            render_mode: "http".into(),
            quality: 0.8,
            source_offset: format!("embedded:0:{n}"),
            metadata: Default::default(),
        },
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn search_latency(index: &EdgeIndex, rng: &mut SmallRng) -> (Duration, Duration) {
    let queries: Vec<_> = (0..QUERIES).map(|_| random_unit(rng)).collect();
    let mut lat = Vec::with_capacity(QUERIES);
    for q in queries {
        let t = Instant::now();
        let hits = index.search(q, K).await.expect("search");
        lat.push(t.elapsed());
        assert_eq!(hits.len(), K);
    }
    lat.sort();
    (percentile(&lat, 0.50), percentile(&lat, 0.99))
}

fn main() {
    let total = env_usize("FRESHET_BENCH_POINTS", 200_000);
    let step = env_usize("FRESHET_BENCH_STEP", 20_000).max(1);
    let batch = env_usize("FRESHET_BENCH_BATCH", 256).max(1);
    let optimize = std::env::var("FRESHET_BENCH_OPTIMIZE").is_ok_and(|v| v == "1");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let dir = std::env::temp_dir().join(format!("freshet-bench-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let index = EdgeIndex::open(&dir, DIM).expect("open edge index");
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let text: String = "lorem ipsum dolor sit amet consectetur ".repeat(26);

    println!(
        "\nqdrant-edge upsert, {DIM} dims, batches of {batch}, durable (flushed) per batch, \
         {cores} cores\n"
    );
    println!("| step | total points | points/s | step elapsed (s) | upsert p99 (ms) |");
    println!("|---:|---:|---:|---:|---:|");

    let mut done = 0usize;
    let mut upsert_time = Duration::ZERO;
    let mut min_rate = f64::INFINITY;
    let mut step_no = 0;
    while done < total {
        step_no += 1;
        let step_end = (done + step).min(total);
        let mut step_time = Duration::ZERO;
        let mut batch_lat = Vec::new();
        let step_start = done;
        while done < step_end {
            let n = batch.min(step_end - done);
            let points: Vec<_> = (done..done + n)
                .map(|i| point(&mut rng, i as u64, &text))
                .collect();
            let t = Instant::now();
            rt.block_on(index.upsert(points)).expect("upsert");
            let e = t.elapsed();
            step_time += e;
            batch_lat.push(e);
            done += n;
        }
        batch_lat.sort();
        let rate = (done - step_start) as f64 / step_time.as_secs_f64();
        min_rate = min_rate.min(rate);
        upsert_time += step_time;
        println!(
            "| {step_no} | {done} | {rate:.0} | {:.2} | {:.1} |",
            step_time.as_secs_f64(),
            ms(percentile(&batch_lat, 0.99))
        );
    }

    let count = rt.block_on(index.count()).expect("count");
    assert_eq!(count, total as u64, "every point stored");
    let overall = total as f64 / upsert_time.as_secs_f64();
    let (p50, p99) = rt.block_on(search_latency(&index, &mut rng));
    println!(
        "\nsearch (k={K}, {QUERIES} queries, {total} points, no HNSW yet): \
         p50 {:.2} ms, p99 {:.2} ms",
        ms(p50),
        ms(p99)
    );
    println!(
        "disk: data dir {:.0} MiB, of which WAL {:.0} MiB",
        dir_bytes(&dir) as f64 / 1048576.0,
        index.wal_bytes() as f64 / 1048576.0
    );

    let mut optimized = String::new();
    if optimize {
        let t = Instant::now();
        rt.block_on(index.optimize()).expect("optimize");
        let took = t.elapsed();
        let (o50, o99) = rt.block_on(search_latency(&index, &mut rng));
        println!(
            "optimize (HNSW build) {:.1} s; search after: p50 {:.2} ms, p99 {:.2} ms",
            took.as_secs_f64(),
            ms(o50),
            ms(o99)
        );
        optimized = format!(
            "; optimize {:.1} s, search after p50 {:.2} ms p99 {:.2} ms",
            took.as_secs_f64(),
            ms(o50),
            ms(o99)
        );
    }

    println!(
        "\nsummary: edge upsert {total} points x {DIM} dims, batch {batch}, {cores} cores: \
         {overall:.0} points/s overall, slowest step {min_rate:.0} points/s, target >= {TARGET:.0}: \
         {}; search k={K} p50 {:.2} ms p99 {:.2} ms{optimized}",
        if min_rate >= TARGET { "met" } else { "MISSED" },
        ms(p50),
        ms(p99)
    );

    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
}
