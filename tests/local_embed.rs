//! The local embedder (all-MiniLM-L6-v2 on candle) against its reference
//! implementation, and `freshet run` on the default embedder end to end.
//!
//! The model is what `freshet model fetch` installs (`scripts/test` runs it);
//! `FRESHET_TEST_MODEL_DIR` names another directory. Without the model these
//! tests say so and pass, unless `FRESHET_TEST_SUITE=1` (CI), where a missing
//! model fails them.
//!
//! tests/data/minilm-reference.json holds texts and the vectors
//! sentence-transformers 6.3 (torch 2.15, CPU) produced for them from the same
//! model files (scripts/embed-reference.py makes it): short and long (past
//! the 256-token limit), accents, CJK, code, numbers, whitespace, empty.

use std::time::{Duration, Instant};

use freshet::dataplane::embed::local::LocalEmbedder;
use freshet::dataplane::embed::Embedder;

mod common;

fn model_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("FRESHET_TEST_MODEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| freshet::settings::EmbedSettings::default().local_model_dir());
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    if std::env::var("FRESHET_TEST_SUITE").as_deref() == Ok("1") {
        panic!(
            "no local model in {} (scripts/test installs it with `freshet model fetch`)",
            dir.display()
        );
    }
    eprintln!(
        "skipped: no local model in {} (run `freshet model fetch`)",
        dir.display()
    );
    None
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_match_sentence_transformers_within_1e3_cosine() {
    let Some(dir) = model_dir() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("data/minilm-reference.json")).unwrap();
    let texts: Vec<String> = serde_json::from_value(reference["texts"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(reference["vectors"].clone()).unwrap();
    assert_eq!(texts.len(), want.len());
    let embedder = LocalEmbedder::load(&dir, 384).unwrap();
    // Whole, and one at a time: batching (padding, length sorting) must not
    // change a vector.
    let batched = embedder.embed(&texts).await.unwrap();
    let mut worst: f64 = 1.0;
    for (i, text) in texts.iter().enumerate() {
        let alone = embedder.embed(std::slice::from_ref(text)).await.unwrap();
        for got in [&batched[i], &alone[0]] {
            assert_eq!(got.len(), 384);
            let c = cosine(got, &want[i]);
            worst = worst.min(c);
            assert!(
                c >= 1.0 - 1e-3,
                "text {i} ({:?}…): cosine {c} to the reference",
                text.chars().take(40).collect::<String>()
            );
            let norm = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "text {i}: norm {norm}");
        }
    }
    eprintln!("lowest cosine to the reference: {worst:.7}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paraphrases_are_closer_than_unrelated_text_and_threads_follow_the_knob() {
    let Some(dir) = model_dir() else { return };
    let embedder = LocalEmbedder::load(&dir, 384).unwrap();
    let texts: Vec<String> = [
        "How can I get my money back for a purchase?",
        "Refunds are issued within five business days of the return.",
        "The stadium was full for the championship final.",
    ]
    .map(String::from)
    .to_vec();
    let v = embedder.embed(&texts).await.unwrap();
    let related = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]);
    assert!(
        related > unrelated + 0.2,
        "paraphrase {related:.3} vs unrelated {unrelated:.3}"
    );
    // One thread gives the same vectors as the default pool.
    let knobs = freshet::knobs::EmbedKnobs {
        threads: 1,
        ..Default::default()
    };
    embedder.tune(&knobs);
    let one = embedder.embed(&texts).await.unwrap();
    for (a, b) in v.iter().zip(&one) {
        assert!(cosine(a, b) > 1.0 - 1e-6);
    }
    // A mismatched [embed] dimensions is refused with the model's own size.
    let err = LocalEmbedder::load(&dir, 64).unwrap_err().to_string();
    assert!(err.contains("384"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_static_table_weights_informative_tokens_and_keeps_meaning() {
    use freshet::dataplane::embed::distilled::StaticEmbedder;
    let Some(dir) = model_dir() else { return };
    let table = StaticEmbedder::load(&dir, 384)
        .unwrap_or_else(|e| panic!("{e:#} (scripts/test distills it with `freshet model fetch`)"));
    let norm = |t: &str| {
        let v = table
            .token_vector(t)
            .unwrap_or_else(|| panic!("no token {t}"));
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    };
    // SIF weighting: frequent words count for less than rare, telling ones.
    assert!(
        norm("the") < norm("government"),
        "the {} government {}",
        norm("the"),
        norm("government")
    );
    assert!(norm(",") < norm("music"));
    // Special tokens are not text.
    assert_eq!(norm("[PAD]"), 0.0);
    let texts: Vec<String> = [
        "refund for a returned purchase",
        "money back after returning an item",
        "volcanic eruption on the island",
    ]
    .map(String::from)
    .to_vec();
    let v = table.embed(&texts).await.unwrap();
    assert!(
        cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.1,
        "related {:.3} unrelated {:.3}",
        cosine(&v[0], &v[1]),
        cosine(&v[0], &v[2])
    );
    for x in &v {
        assert!((x.iter().map(|a| a * a).sum::<f32>().sqrt() - 1.0).abs() < 1e-4);
    }
    // Text with no known token is a fixed unit vector, not NaN.
    let empty = table.embed(&[String::new()]).await.unwrap();
    assert_eq!(empty[0][0], 1.0);
    // A mismatched [embed] dimensions is refused with the table's own size.
    let err = StaticEmbedder::load(&dir, 64).unwrap_err().to_string();
    assert!(err.contains("384"), "{err}");
}

#[test]
fn a_missing_model_is_a_clear_start_up_error() {
    let tmp = common::TempDir::new("local-embed-missing");
    let config = common::TestSettings::new(&tmp.0.join("data"))
        .set("embed.backend", "local")
        .set("embed.dimensions", 384)
        .set(
            "embed.model_dir",
            tmp.0.join("no-model").display().to_string(),
        )
        .write(&tmp.0.join("freshet.toml"));
    let (ok, _, err) = common::freshet(&["--config", &config, "run"]);
    assert!(!ok);
    assert!(
        err.contains("freshet model fetch") && err.contains("no-model"),
        "{err}"
    );
}

/// `freshet run` with no `[embed]` section embeds with the local model: an
/// ingested document is found by a paraphrase that shares none of its
/// words. With `backend = "static"` (the distilled table, which knows words
/// rather than sentences) a query that shares a word stem finds it.
#[test]
fn run_on_the_default_embedder_finds_a_document_by_meaning() {
    let Some(dir) = model_dir() else { return };
    for backend in [None, Some("static")] {
        run_and_search(&dir, backend);
    }
}

fn run_and_search(dir: &std::path::Path, backend: Option<&str>) {
    let tmp = common::TempDir::new(&format!("local-embed-run-{}", backend.unwrap_or("default")));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let query = match backend {
        None => "how do I get my money back",
        Some(_) => "reimbursement to my card",
    };
    let port = common::free_port();
    let config = tmp.0.join("freshet.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\ndata_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\nlog_format = \"json\"\n\
             ingest_token = \"in\"\nread_token = \"rd\"\n[embed]\nmodel_dir = {:?}\n{}",
            tmp.0.join("data").display().to_string(),
            dir.display().to_string(),
            backend
                .map(|b| format!("backend = {b:?}\n"))
                .unwrap_or_default()
        ),
    )
    .unwrap();
    let common::Logged { mut child, .. } = common::spawn_logged(
        env!("CARGO_BIN_EXE_freshet"),
        &["--config", config.to_str().unwrap(), "run"],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    common::wait_ready(&client, &base, Duration::from_secs(60));
    let docs = [
        (
            "faq:refunds",
            "Refund policy",
            "Returned items are reimbursed to the original card within five business days.",
        ),
        (
            "faq:shipping",
            "Shipping",
            "Parcels leave our warehouse every weekday and arrive in two to four days.",
        ),
        (
            "faq:password",
            "Account access",
            "Forgotten your password? Use the reset link on the sign-in page.",
        ),
    ];
    let body: String = docs
        .iter()
        .map(|(id, title, text)| {
            serde_json::json!({"type": "document", "id": id, "title": title, "text": text})
                .to_string()
                + "\n"
        })
        .collect();
    let answer = common::ingest(&client, &base, "in", body);
    assert_eq!(answer["accepted"], 3, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let top = loop {
        let r: serde_json::Value = client
            .post(format!("{base}/v1/search"))
            .bearer_auth("rd")
            .json(&serde_json::json!({"query": query, "k": 3}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let results = r["results"].as_array().cloned().unwrap_or_default();
        if results.len() == 3 {
            break results;
        }
        assert!(Instant::now() < deadline, "not all searchable: {r}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(top[0]["doc_id"], "faq:refunds", "{top:?}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.0.join("data/index-meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["embedder"], backend.unwrap_or("local"), "{meta}");
    common::terminate(&mut child, Duration::from_secs(30));
}
