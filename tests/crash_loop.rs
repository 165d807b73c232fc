//! Crash loop: `freshet run` (the binary) is killed with SIGKILL at ten
//! seeded pseudo-random moments while it works, and restarted on the same
//! data dir each time. At the end every document is in the index exactly
//! once — the chunk points of each document id are exactly the ones a
//! clean, uninterrupted run writes — `freshet audit verify` passes, and no
//! dead letter exists (a clean run of these documents writes none).
//!
//! Two variants:
//!
//! - **Embedded source, `POST /v1/ingest`.** The embedded queue is in
//!   memory: an accepted task (`{"accepted": n}`) is queued, not yet
//!   durable, and a SIGKILL loses whatever was queued or in flight. The
//!   delivery contract the driver follows is therefore the one a real
//!   producer of this endpoint must follow: *a document is delivered when
//!   it is searchable* (`POST /v1/search` with `filter.doc_id` returns all
//!   of its chunks); until then the producer keeps it and, after every
//!   restart, posts again every document it released that is not yet
//!   searchable. Writes are idempotent (chunk ids are UUIDv5 of document id
//!   and chunk index, and an unchanged document is skipped), so resending
//!   may never duplicate. A document once found searchable is never sent
//!   again: if a later crash lost it, the final check fails.
//!   New documents are released at a steady rate across the whole run, so
//!   each kill lands while work is queued, in flight and being posted.
//!
//! - **Kafka source.** N document tasks are produced once to a topic
//!   (before the first start); the instance is killed and restarted ten
//!   times; at the end the group's committed offsets reach the end of every
//!   partition, and redelivery of the uncommitted tail after each kill must
//!   not duplicate chunks. Needs a broker in `FRESHET_TEST_KAFKA` (see
//!   `tests/common/kafka.rs`; skipped without one unless
//!   `FRESHET_TEST_KAFKA_REQUIRED=1`).
//!
//! The kill moments come from a fixed-seed xorshift, so a failure replays
//! with the same schedule: times after each start for the ingest variant
//! (the machine's speed still moves what is in flight at each moment), and
//! points in the backlog for the Kafka variant (a kill once the run has
//! taken a seeded part of its share of what is left through the transform,
//! so every kill leaves work in flight however fast the machine consumes).
//! The expected chunk count of every document comes from a reference run of
//! the same documents through a fresh in-process pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::TempDir;

/// SIGKILLs per variant.
const KILLS: usize = 10;
/// The seed of the kill schedule.
const SEED: u64 = 0x5eed_f00d_c0ff_ee15;
const INGEST_TOKEN: &str = "ingest-t0ken";
const READ_TOKEN: &str = "read-t0ken";

/// xorshift64*: the test's only source of "randomness".
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `lo..hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// `KILLS` delays, each counted from the moment the instance is ready.
fn kill_schedule(seed: u64, lo_ms: u64, hi_ms: u64) -> Vec<Duration> {
    let mut rng = XorShift(seed);
    (0..KILLS)
        .map(|_| Duration::from_millis(rng.between(lo_ms, hi_ms)))
        .collect()
}

/// The documents: unique prose (no two share content, so none is a
/// duplicate of another) of 2..40 sentences, so chunk counts vary.
fn documents(prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut rng = XorShift(SEED ^ 0xd0c5);
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let sentences = rng.between(2, 40) as usize;
            let line = json!({"type": "document", "id": id, "title": id,
                "text": common::kafka::prose(&id, sentences)})
            .to_string();
            (id, line)
        })
        .collect()
}

/// Chunk points per document id in a data dir's index (opened directly:
/// no instance may hold it).
async fn index_docs(data: &Path) -> BTreeMap<String, usize> {
    let s = common::TestSettings::new(data).build();
    let index = freshet::service::open_index(&s).await.unwrap();
    let mut docs = BTreeMap::new();
    let points = index.all_points().await.unwrap();
    let ids: BTreeSet<_> = points.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), points.len(), "a point id listed twice");
    assert_eq!(index.count().await.unwrap() as usize, points.len());
    for (_, d) in points {
        *docs.entry(d).or_insert(0) += 1;
    }
    docs
}

/// What a clean run writes: chunks per document, through a fresh
/// in-process pipeline.
async fn reference(name: &str, docs: &[(String, String)]) -> BTreeMap<String, usize> {
    let dir = TempDir::new(name);
    let s = common::TestSettings::new(&dir.0).build();
    let runtime = freshet::service::Runtime::build(&s).await.unwrap();
    for (_, line) in docs {
        let task = freshet::dataplane::Task::parse(line).unwrap();
        assert!(runtime.source.push(task, "reference").await);
    }
    assert!(runtime.drain().await.0);
    let want = index_docs(&dir.0).await;
    assert_eq!(
        want.len(),
        docs.len(),
        "the clean run indexes every document"
    );
    assert_eq!(
        dead_letters(&dir.0),
        Vec::<String>::new(),
        "a clean run writes no dead letter"
    );
    want
}

/// The data dir's dead letters (lines of `dlq.jsonl`, none if absent).
fn dead_letters(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("dlq.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `freshet audit verify` on the data dir must pass.
fn audit_verifies(data: &Path, when: &str) {
    let (ok, out, err) =
        common::freshet(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "audit verify failed {when}:\n{out}\n{err}");
}

/// Every check a kill is followed by: the audit chain verifies and no
/// dead letter was written.
/// The final checks of both variants: no dead letter, the audit log
/// verifies, and the index holds exactly the reference run's chunks.
async fn at_the_end(data: &Path, want: &BTreeMap<String, usize>) {
    let got = index_docs(data).await;
    assert_eq!(
        dead_letters(data),
        Vec::<String>::new(),
        "dead letters a clean run does not write"
    );
    audit_verifies(data, "at the end");
    same_index(want, &got);
}

fn after_kill(data: &Path, when: &str) {
    audit_verifies(data, when);
    let dlq = dead_letters(data);
    assert!(dlq.is_empty(), "dead letters {when}: {dlq:#?}");
}

/// One `freshet run` process.
struct Instance {
    child: Child,
    base: String,
    log: PathBuf,
    /// Kept for the instance's life: a scrape reuses its connection.
    http: reqwest::blocking::Client,
}

impl Instance {
    /// Starts `freshet run` on `data` with the given settings (written to
    /// `dir/<name>.toml`) and waits for `/readyz`.
    fn start(dir: &Path, name: &str, settings: common::TestSettings) -> Instance {
        let port = common::free_port();
        let config = dir.join(format!("{name}.toml"));
        settings
            .set("service.listen", format!("127.0.0.1:{port}"))
            .set("service.log_format", "json")
            .set("service.drain_timeout_s", 30)
            .set("knobs.transform.linger_ms", 10)
            .set("knobs.index.linger_ms", 5)
            .write(&config);
        let log = dir.join(format!("{name}.log"));
        let mut child = common::spawn_run(&config, &log);
        let base = format!("http://127.0.0.1:{port}");
        common::wait_running(&mut child, name, &base, &log, Duration::from_secs(30));
        Instance {
            child,
            base,
            log,
            http: client(),
        }
    }

    /// Documents this process took through the transform, whatever the
    /// outcome (`freshet_docs_total` over its labels): a redelivered
    /// document already in the index counts as `unchanged` here while it
    /// adds no chunk.
    fn docs_done(&self) -> f64 {
        self.metric_sum("freshet_docs_total")
    }

    /// The sum of every series of the metric `name` in `/metrics`.
    fn metric_sum(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        common::parse_metric(&text, name).values().sum()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (std's `Child::kill` on Unix) and reap.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; the exit must be clean.
    fn stop(mut self) {
        let Some(status) = common::terminate(&mut self.child, Duration::from_secs(40)) else {
            panic!("no exit after SIGTERM:\n{}", self.logs());
        };
        assert!(status.success(), "exit {status:?}:\n{}", self.logs());
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// How much of document `id` the instance at `base` serves: `Ok(true)`
/// when every one of its `want` chunks is returned exactly once, `Ok(false)`
/// when not yet; `Err` on a duplicate or a wrong chunk count (never
/// acceptable), or when the instance does not answer.
fn searchable(
    client: &reqwest::blocking::Client,
    base: &str,
    id: &str,
    want: usize,
) -> Result<bool, String> {
    let r = client
        .post(format!("{base}/v1/search"))
        .bearer_auth(READ_TOKEN)
        .json(&json!({"query": id, "k": 100, "filter": {"doc_id": id}}))
        .send()
        .map_err(|e| format!("search: {e}"))?;
    if r.status() != 200 {
        return Err(format!("search answered {}", r.status()));
    }
    let body: serde_json::Value = r.json().map_err(|e| format!("search: {e}"))?;
    let hits = body["results"].as_array().cloned().unwrap_or_default();
    let mut indexes = BTreeSet::new();
    for h in &hits {
        assert_eq!(h["doc_id"], json!(id), "the doc_id filter held");
        let count = h["chunk_count"].as_u64().unwrap_or(0) as usize;
        let index = h["chunk_index"].as_u64().unwrap_or(u64::MAX);
        assert_eq!(
            count, want,
            "{id}: a chunk says chunk_count {count}, a clean run writes {want}: {hits:?}"
        );
        assert!(indexes.insert(index), "{id}: chunk {index} twice: {hits:?}");
    }
    assert!(
        hits.len() <= want,
        "{id}: {} chunks searchable, a clean run writes {want}: {hits:?}",
        hits.len()
    );
    Ok(hits.len() == want && indexes == (0..want as u64).collect())
}

/// What the ingest driver knows, shared by its producer thread and the
/// checker (the test's main thread).
#[derive(Default)]
struct Driver {
    /// Documents released so far (the first `released` of the list).
    released: usize,
    /// Released documents found searchable: delivered, never sent again.
    confirmed: BTreeSet<usize>,
    /// Released documents posted and accepted at least once.
    accepted: BTreeSet<usize>,
    /// Posts that reached the instance / failed (the instance gone).
    posts_ok: usize,
    posts_failed: usize,
    /// Posts answered 503 (busy): their rest was sent again.
    posts_busy: usize,
    /// Documents posted again after a restart.
    resent: usize,
}

/// Documents released per batch, and the pause between batches.
const BATCH: usize = 32;
const BATCH_EVERY: Duration = Duration::from_millis(100);

/// One round's producer: first posts again every released document that is
/// not searchable, then releases new ones at a steady rate, until `stop`
/// or the instance stops answering.
fn producer(
    base: String,
    docs: Arc<Vec<(String, String)>>,
    driver: Arc<Mutex<Driver>>,
    stop: Arc<AtomicBool>,
) {
    let client = client();
    // Posts a batch; a 503 (the pipeline holding work, or without room)
    // means "the first `accepted` lines were taken": wait and send the rest,
    // as a producer honouring Retry-After does.
    let post = |batch: &[usize]| -> bool {
        let mut rest = batch;
        loop {
            let body: String = rest.iter().map(|&i| format!("{}\n", docs[i].1)).collect();
            let sent = client
                .post(format!("{base}/v1/ingest"))
                .bearer_auth(INGEST_TOKEN)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send();
            let taken = match sent {
                Ok(r) if r.status() == 200 => {
                    let answer: serde_json::Value = r.json().unwrap_or_default();
                    assert_eq!(answer["accepted"], json!(rest.len()), "{answer}");
                    rest.len()
                }
                Ok(r) if r.status() == 503 => {
                    let answer: serde_json::Value = r.json().unwrap_or_default();
                    answer["accepted"].as_u64().unwrap_or(0) as usize
                }
                Ok(r) => panic!("ingest answered {}: {:?}", r.status(), r.text()),
                Err(_) => {
                    driver.lock().unwrap().posts_failed += 1;
                    return false;
                }
            };
            let mut d = driver.lock().unwrap();
            d.posts_ok += 1;
            d.accepted.extend(rest[..taken].iter().copied());
            rest = &rest[taken..];
            if rest.is_empty() {
                return true;
            }
            d.posts_busy += 1;
            drop(d);
            if stop.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Resend what a crash may have lost.
    let resend: Vec<usize> = {
        let mut d = driver.lock().unwrap();
        let r: Vec<usize> = (0..d.released)
            .filter(|i| !d.confirmed.contains(i))
            .collect();
        d.resent += r.len();
        r
    };
    for batch in resend.chunks(BATCH * 5) {
        if stop.load(Ordering::Acquire) || !post(batch) {
            return;
        }
    }
    // New documents.
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let batch: Vec<usize> = {
            let mut d = driver.lock().unwrap();
            let from = d.released;
            d.released = (from + BATCH).min(docs.len());
            (from..d.released).collect()
        };
        if batch.is_empty() || !post(&batch) {
            return;
        }
        std::thread::sleep(BATCH_EVERY);
    }
}

/// Marks every accepted, unconfirmed document that is now searchable.
/// Errors (the instance gone) and `until` end the pass.
fn check(
    client: &reqwest::blocking::Client,
    base: &str,
    docs: &[(String, String)],
    want: &BTreeMap<String, usize>,
    driver: &Mutex<Driver>,
    until: Instant,
) {
    let todo: Vec<usize> = {
        let d = driver.lock().unwrap();
        d.accepted.difference(&d.confirmed).copied().collect()
    };
    for i in todo {
        if Instant::now() >= until {
            return;
        }
        let id = &docs[i].0;
        match searchable(client, base, id, want[id]) {
            Ok(true) => {
                driver.lock().unwrap().confirmed.insert(i);
            }
            Ok(false) => {}
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_crash_loop_delivers_every_document_exactly_once() {
    let started = Instant::now();
    const N: usize = 2400;
    let docs = Arc::new(documents("doc", N));
    let want = reference("crash-loop-ref", &docs).await;
    let chunks: usize = want.values().sum();
    let dir = TempDir::new("crash-loop-ingest");
    std::fs::create_dir_all(&dir.0).unwrap();
    let data = dir.0.join("data");
    let schedule = kill_schedule(SEED, 300, 1200);

    let (d, docs2, want2, sched) = (dir.0.clone(), docs.clone(), want.clone(), schedule.clone());
    let (kills, driver) = tokio::task::spawn_blocking(move || {
        let schedule = sched;
        let (dir, docs, want) = (d, docs2, want2);
        let data = dir.join("data");
        let settings = || {
            common::TestSettings::new(&data)
                .set("service.ingest_token", INGEST_TOKEN)
                .set("service.read_token", READ_TOKEN)
        };
        let driver = Arc::new(Mutex::new(Driver::default()));
        let client = client();
        // Per kill: (released, confirmed, accepted but not confirmed).
        let mut kills = Vec::new();
        for round in 0..=KILLS {
            let instance = Instance::start(&dir, &format!("run-{round}"), settings());
            let ready = Instant::now();
            let stop = Arc::new(AtomicBool::new(false));
            let feeding = {
                let (b, docs, driver, stop) = (
                    instance.base.clone(),
                    docs.clone(),
                    driver.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || producer(b, docs, driver, stop))
            };
            if let Some(delay) = schedule.get(round) {
                let kill_at = ready + *delay;
                while Instant::now() < kill_at {
                    check(&client, &instance.base, &docs, &want, &driver, kill_at);
                    std::thread::sleep(Duration::from_millis(20));
                }
                // The time is up; confirming stops, so the kill waits
                // (boundedly) for the next accepted post: it lands with
                // accepted work not yet confirmed searchable, however
                // fast this machine drains it, rather than in a lull the
                // confirmations just emptied.
                let settle = Instant::now() + Duration::from_secs(5);
                while Instant::now() < settle {
                    let d = driver.lock().unwrap();
                    if d.released >= docs.len()
                        || d.accepted.difference(&d.confirmed).next().is_some()
                    {
                        break;
                    }
                    drop(d);
                    std::thread::sleep(Duration::from_millis(2));
                }
                let at = {
                    let d = driver.lock().unwrap();
                    (
                        d.released,
                        d.confirmed.len(),
                        d.accepted.difference(&d.confirmed).count(),
                    )
                };
                instance.kill();
                stop.store(true, Ordering::Release);
                feeding.join().unwrap();
                kills.push(at);
                after_kill(&data, &format!("after kill {}", round + 1));
            } else {
                // The last run: no kill; everything must become searchable.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    check(&client, &instance.base, &docs, &want, &driver, deadline);
                    if driver.lock().unwrap().confirmed.len() == docs.len() {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "not searchable after the last restart: {} of {}\n{}",
                        docs.len() - driver.lock().unwrap().confirmed.len(),
                        docs.len(),
                        instance.logs()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                stop.store(true, Ordering::Release);
                feeding.join().unwrap();
                instance.stop();
            }
        }
        let driver = Arc::try_unwrap(driver).ok().unwrap().into_inner().unwrap();
        (kills, driver)
    })
    .await
    .unwrap();

    eprintln!(
        "ingest crash loop: {N} documents, {chunks} chunks, {KILLS} kills at {schedule:?}; \
         at each kill (released, searchable, accepted not yet searchable): {kills:?}; \
         {} posts accepted, {} refused by the kill, {} documents resent; {:?}",
        driver.posts_ok,
        driver.posts_failed,
        driver.resent,
        started.elapsed()
    );
    // The kills landed under load: work accepted and not yet searchable
    // (lost, or to be finished after the restart), and documents still to
    // release.
    let loaded = kills
        .iter()
        .filter(|(r, _, open)| *open > 0 && *r < N)
        .count();
    assert!(
        loaded >= KILLS / 2,
        "only {loaded} of {KILLS} kills came while work was in flight: {kills:?}"
    );
    assert!(driver.resent > 0, "no restart had anything to resend");

    at_the_end(&data, &want).await;
}

/// `got` holds exactly the documents of `want`, each with its chunk count.
fn same_index(want: &BTreeMap<String, usize>, got: &BTreeMap<String, usize>) {
    let missing: Vec<_> = want.keys().filter(|d| !got.contains_key(*d)).collect();
    let extra: Vec<_> = got.keys().filter(|d| !want.contains_key(*d)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {} {:?}, extra {} {:?}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(10).collect::<Vec<_>>()
    );
    let differ: Vec<_> = want
        .iter()
        .filter(|(d, n)| got.get(*d) != Some(n))
        .map(|(d, n)| (d.clone(), *n, got[d]))
        .collect();
    assert!(
        differ.is_empty(),
        "{} documents with another chunk count than a clean run's (doc, want, got): {:?}",
        differ.len(),
        differ.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(got.values().sum::<usize>(), want.values().sum::<usize>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_crash_loop_indexes_every_document_exactly_once() {
    use common::kafka::{self, Msg};
    let Some(broker) = kafka::broker("kafka_crash_loop_indexes_every_document_exactly_once") else {
        return;
    };
    let started = Instant::now();
    const N: usize = 3000;
    const PARTITIONS: i32 = 3;
    let docs = documents("kdoc", N);
    let want = reference("crash-loop-kafka-ref", &docs).await;
    let chunks: usize = want.values().sum();

    let topic = kafka::unique("crash-loop-tasks");
    let group = kafka::unique("crash-loop-group");
    let control = kafka::unique("crash-loop-control");
    kafka::create_topic(&broker, &topic, PARTITIONS).await;
    let messages: Vec<Msg> = docs
        .iter()
        .map(|(id, line)| Msg::keyed(id, line.clone()))
        .collect();
    let producer = kafka::producer(&broker);
    let positions = kafka::produce_batched(&producer, &topic, &messages).await;
    let mut ends = BTreeMap::new();
    for (p, o) in &positions {
        let e = ends.entry(*p).or_insert(0i64);
        *e = (*e).max(o + 1);
    }
    assert_eq!(ends.values().sum::<i64>(), N as i64);

    let dir = TempDir::new("crash-loop-kafka");
    std::fs::create_dir_all(&dir.0).unwrap();
    let data = dir.0.join("data");
    let kafka_toml = format!(
        "[source]\nkind = \"kafka\"\n[kafka]\nbrokers = \"{broker}\"\ngroup_id = \"{group}\"\n\
         task_topics = [\"{topic}\"]\ncontrol_topic = \"{control}\"\ninstance_id = \"crash-loop-node\"\n\
         static_membership = true\ncommit_interval_ms = 100\n"
    );
    let schedule = kill_schedule(SEED ^ 0x00ca_fca0, 300, 1200);
    let (d, b, g, t, e) = (
        dir.0.clone(),
        broker.clone(),
        group.clone(),
        topic.clone(),
        ends.clone(),
    );
    let sched = schedule.clone();
    let kills = tokio::task::spawn_blocking(move || {
        let schedule = sched;
        let data = d.join("data");
        let settings = || common::TestSettings::new(&data).merge(&kafka_toml);
        // Per kill: the offsets committed when it came.
        let mut kills = Vec::new();
        // Offsets committed when the last run died (none before the first).
        let mut left_at: i64 = 0;
        for round in 0..=KILLS {
            let instance = Instance::start(&d, &format!("run-{round}"), settings());
            if let Some(delay) = schedule.get(round) {
                // Kill at a seeded point of the stream rather than a
                // time: once this run has taken its share of what is left
                // (less a seeded amount) through the transform, so every
                // kill lands with work in flight and a tail to redeliver,
                // whatever the machine's speed. What is left is known
                // exactly: the offsets committed when the last run died.
                // The point is read from the instance's own document
                // counter (fine-grained, a loopback scrape on a kept
                // connection; chunks would undercount, a redelivered
                // document already indexed adds none), not from the
                // group's committed offsets: those move in commit-interval
                // steps and a broker round trip, and a fast run overshoots
                // a late, small share between two reads. The share is of
                // what is left, not of N, so a kill that overshot its
                // point does not leave the next one none.
                let kills_left = (KILLS - round) as i64;
                let share = (N as i64 - left_at) / (kills_left + 1);
                let back = delay.as_millis() as i64 % (share / 2).max(1);
                let target = (share - back).max(1) as f64;
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut done = instance.docs_done();
                while done < target {
                    assert!(
                        Instant::now() < deadline,
                        "run {round} stuck at {done} of {target} documents ({left_at} \
                         committed at its start):\n{}",
                        instance.logs()
                    );
                    std::thread::sleep(Duration::from_millis(2));
                    done = instance.docs_done();
                }
                instance.kill();
                // Read after the kill: a dead process commits nothing more.
                let after: i64 = kafka::committed(&b, &g, &t, PARTITIONS).values().sum();
                eprintln!(
                    "kill {}: {left_at} committed at the start, {target} documents \
                     wanted, {done} done, {after} committed after",
                    round + 1
                );
                left_at = after;
                kills.push(after);
                after_kill(&data, &format!("after kill {}", round + 1));
            } else {
                let deadline = Instant::now() + Duration::from_secs(40);
                loop {
                    let c = kafka::committed(&b, &g, &t, PARTITIONS);
                    if c == e {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "committed {c:?}, want {e:?}\n{}",
                        instance.logs()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                instance.stop();
            }
        }
        kills
    })
    .await
    .unwrap();
    eprintln!(
        "kafka crash loop: {N} documents, {chunks} chunks, {KILLS} kills at {schedule:?}; \
         committed offsets at each kill: {kills:?}; {:?}",
        started.elapsed()
    );
    let loaded = kills.iter().filter(|c| **c < N as i64).count();
    assert_eq!(
        loaded, KILLS,
        "kills after everything was committed: {kills:?}"
    );

    at_the_end(&data, &want).await;
}
