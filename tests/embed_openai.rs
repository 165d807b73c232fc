//! The OpenAI-compatible embedder (async-openai) against the simulator's
//! `/v1/embeddings`: real HTTP on loopback.

use std::time::Instant;

use freshet::dataplane::embed::hash::HashEmbedder;
use freshet::dataplane::embed::openai::OpenAiEmbedder;
use freshet::dataplane::embed::Embedder;
use freshet::dataplane::retry::ErrorClass;
use freshet::sim::{Scenario, SimOptions, SimServer};

const SCENARIO: &str = r#"
name = "embed"
[[phase]]
name = "only"
duration_s = 600
[phase.embed]
latency_ms = { p50 = 20, p99 = 25 }
per_item_ms = 2.0
knee = 2
"#;

#[tokio::test]
async fn openai_embedder_matches_the_hash_embedder_and_batches_pay_off() {
    let sim = SimServer::start(SimOptions::new(
        Scenario::from_toml_str(SCENARIO).unwrap(),
        1,
    ))
    .await
    .unwrap();
    let base = format!("{}/v1", sim.base_url());
    let e = OpenAiEmbedder::new(&base, "sim-key", "freshet-sim-hash", 64, true);
    let texts: Vec<String> = (0..16)
        .map(|i| format!("heat pumps and winter bills, note {i}"))
        .collect();
    let vectors = e.embed(&texts).await.expect("embeddings");
    let local = HashEmbedder::new(64);
    for (t, v) in texts.iter().zip(&vectors) {
        assert_eq!(
            v,
            &local.vector(t),
            "the simulator serves the hash embedder's vectors"
        );
    }

    // Cost model: one request of 16 costs one overhead; 16 requests of 1 cost 16.
    let started = Instant::now();
    e.embed(&texts).await.unwrap();
    let batched = started.elapsed();
    let started = Instant::now();
    for t in &texts {
        e.embed(std::slice::from_ref(t)).await.unwrap();
    }
    let single = started.elapsed();
    assert!(
        single > batched * 3,
        "batching pays: {single:?} vs {batched:?}"
    );

    // Wrong key: an auth error, classified; wrong size: a parse error.
    let bad = OpenAiEmbedder::new(&base, "nope", "m", 64, true);
    assert_eq!(
        bad.embed(&texts[..1]).await.unwrap_err().class,
        ErrorClass::Auth
    );
    let wrong_dim = OpenAiEmbedder::new(&base, "sim-key", "m", 32, false);
    let err = wrong_dim.embed(&texts[..1]).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Parse, "{err}");
    assert!(err.message.contains("dimensions"), "{err}");
    let stats = sim.stats();
    assert!(stats.endpoints["embed"].requests >= 19, "{stats:?}");
    sim.shutdown().await;
}
