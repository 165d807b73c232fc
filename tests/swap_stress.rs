//! 1,000 knob swaps during a full-speed run lose and duplicate nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use freshet::dataplane::{Counters, Task};
use freshet::knobs::Change;
use freshet::service::Runtime;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_swaps_during_a_run_lose_and_duplicate_nothing() {
    let tmp = common::TempDir::new("swaps");
    let settings = common::TestSettings::new(&tmp.0)
        .set("service.drain_timeout_s", 120)
        .set("embed.dimensions", 32)
        .build();
    let runtime = Runtime::build(&settings).await.unwrap();
    let live = runtime.live.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while n < 1_000 || !stop.load(Ordering::Relaxed) {
                let i = n % 7;
                live.patch(
                    &[
                        Change::new("transform.batch_size", 1 + i * 9),
                        Change::new("transform.linger_ms", i),
                        Change::new("embed.batch_size", 1 + i * 5),
                        Change::new("embed.slots", 1 + i % 3),
                        Change::new("index.batch_size", 1 + i * 40),
                        Change::new("index.slots", 1 + i % 2),
                        Change::new("source.max_in_flight", 4 + i * 30),
                    ],
                    None,
                )
                .unwrap();
                n += 1;
                if n < 1_000 {
                    if n % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                if n >= 1_000 && stop.load(Ordering::Relaxed) {
                    break;
                }
                if n > 1_000_000 {
                    break;
                }
            }
            n
        })
    };
    const DOCS: usize = 1_500;
    for i in 0..DOCS {
        let text: String = (0..30)
            .map(|s| {
                format!(
                    "Document {i} sentence {s} records fact number {}. ",
                    i * 31 + s
                )
            })
            .collect();
        let task = Task::Document {
            id: format!("d{i}"),
            text,
            title: String::new(),
            url: String::new(),
            ts_ms: None,
            metadata: Default::default(),
        };
        assert!(runtime.source.push(task, "stress").await);
    }
    let index = runtime.index.clone();
    let (drained, counters, tracker) = runtime.drain().await;
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.await.unwrap();
    assert!(drained);
    assert!(swaps >= 1_000, "{swaps} swaps");
    let c = tracker.counts();
    assert_eq!(
        (c.registered, c.finished, c.abandoned),
        (DOCS as u64, DOCS as u64, 0)
    );
    assert_eq!(
        Counters::get(&counters.docs_indexed),
        DOCS as u64,
        "every document indexed once"
    );
    let points = index.all_points().await.unwrap();
    assert_eq!(
        points.len() as u64,
        Counters::get(&counters.chunks_indexed),
        "no duplicate points"
    );
    let docs: std::collections::HashSet<_> = points.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(docs.len(), DOCS, "no document lost");
}
