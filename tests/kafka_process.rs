//! `freshet run` with the Kafka source, as processes on a real broker:
//! SIGKILL mid-run loses and duplicates nothing; two instances in one group
//! split the partitions and share knob changes within one control interval;
//! `bench freshness` over Debezium events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::kafka::{self, Msg};
use common::TempDir;

/// The control interval the scale-out test holds knob propagation to.
const CONTROL_INTERVAL: Duration = Duration::from_secs(2);

struct Instance {
    child: Child,
    base: String,
    log: PathBuf,
    data: PathBuf,
}

impl Instance {
    /// Starts `freshet run` named `name` with its data in `data-<data>`.
    fn start(dir: &Path, name: &str, data: &str, kafka_toml: &str) -> Instance {
        let port = common::free_port();
        let data = dir.join(format!("data-{data}"));
        let config = dir.join(format!("{name}.toml"));
        common::TestSettings::new(&data)
            .set("service.listen", format!("127.0.0.1:{port}"))
            .set("service.log_format", "json")
            .set("service.admin_token", "secret")
            .set("service.drain_timeout_s", 30)
            .set("knobs.transform.linger_ms", 10)
            .set("knobs.index.linger_ms", 5)
            .set("source.kind", "kafka")
            .merge(kafka_toml)
            .write(&config);
        let log = dir.join(format!("{name}.log"));
        let mut child = common::spawn_run(&config, &log);
        let base = format!("http://127.0.0.1:{port}");
        common::wait_running(&mut child, name, &base, &log, Duration::from_secs(60));
        Instance {
            child,
            base,
            log,
            data,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        reqwest::blocking::get(format!("{}/metrics", self.base))
            .and_then(|r| r.text())
            .unwrap_or_default()
    }

    /// Values of a metric by its label text, e.g. `topic="t",partition="0"`.
    fn metric(&self, name: &str) -> BTreeMap<String, f64> {
        common::parse_metric(&self.metrics(), name)
    }

    fn assigned(&self, topic: &str) -> BTreeSet<i32> {
        self.metric("freshet_source_partition_assigned")
            .into_iter()
            .filter(|(labels, v)| *v == 1.0 && labels.contains(&format!("topic=\"{topic}\"")))
            .filter_map(|(labels, _)| {
                labels
                    .split("partition=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    fn leader(&self) -> bool {
        self.metric("freshet_controller_leader").get("") == Some(&1.0)
    }

    fn config(&self) -> serde_json::Value {
        reqwest::blocking::Client::new()
            .get(format!("{}/v1/config", self.base))
            .bearer_auth("secret")
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn patch(&self, knob: &str, value: i64) -> u64 {
        let r = reqwest::blocking::Client::new()
            .patch(format!("{}/v1/knobs", self.base))
            .bearer_auth("secret")
            .json(&json!({"changes": [{"knob": knob, "value": value, "reason": "test"}], "operator": "test", "force": true}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().unwrap()["version"]
            .as_u64()
            .unwrap()
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    /// SIGTERM and wait; the exit must be clean.
    fn stop(mut self) -> PathBuf {
        let Some(status) = common::terminate(&mut self.child, Duration::from_secs(60)) else {
            panic!("no exit after SIGTERM:\n{}", self.logs());
        };
        assert!(status.success(), "exit {status:?}:\n{}", self.logs());
        self.data.clone()
    }

    fn kill(mut self) -> PathBuf {
        self.signal("-KILL");
        let _ = self.child.wait();
        self.data.clone()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
/// Chunk points per document in a data dir's index.
async fn index_docs(data: &Path) -> BTreeMap<String, usize> {
    let s = common::TestSettings::new(data).build();
    let index = freshet::service::open_index(&s).await.unwrap();
    let mut docs = BTreeMap::new();
    for (_, d) in index.all_points().await.unwrap() {
        *docs.entry(d).or_insert(0) += 1;
    }
    docs
}

fn doc(id: &str, sentences: usize, tag: &str) -> Vec<u8> {
    json!({"type": "document", "id": id, "title": id, "text": kafka::prose(&format!("{id} {tag}"), sentences)})
        .to_string()
        .into_bytes()
}

fn wait_committed(
    broker: &str,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    logs: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = kafka::committed(broker, group, topic, ends.len() as i32);
        if &c == ends {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed {c:?}, want {ends:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ends_of(positions: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for (p, o) in positions {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_and_duplicates_nothing() {
    let Some(broker) = kafka::broker("sigkill_mid_run_loses_and_duplicates_nothing") else {
        return;
    };
    let topic = kafka::unique("crash-tasks");
    let group = kafka::unique("crash-group");
    let control = kafka::unique("crash-control");
    kafka::create_topic(&broker, &topic, 3).await;
    // 3,000 documents of ~3 chunks; the first 500 then shrink to 1 chunk
    // (their stale chunks must go), the last 100 are deleted.
    let mut messages = Vec::new();
    for i in 0..3000 {
        let id = format!("d-{i}");
        messages.push(Msg::keyed(&id, doc(&id, 30, "v1")));
    }
    for i in 0..500 {
        let id = format!("d-{i}");
        messages.push(Msg::keyed(&id, doc(&id, 6, "v2")));
    }
    for i in 2900..3000 {
        let id = format!("d-{i}");
        messages.push(Msg::keyed(
            &id,
            json!({"type": "delete", "id": id}).to_string(),
        ));
    }
    let producer = kafka::producer(&broker);
    let ends = ends_of(&kafka::produce_batched(&producer, &topic, &messages).await);
    assert_eq!(ends.values().sum::<i64>(), 3600);

    let dir = TempDir::new("kafka-crash");
    let kafka_toml = format!(
        "[kafka]\nbrokers = \"{broker}\"\ngroup_id = \"{group}\"\ntask_topics = [\"{topic}\"]\ncontrol_topic = \"{control}\"\ninstance_id = \"crash-node\"\nstatic_membership = true\ncommit_interval_ms = 100\n"
    );
    let (k, d) = (kafka_toml.clone(), dir.0.clone());
    let first = tokio::task::spawn_blocking(move || {
        let first = Instance::start(&d, "first", "node", &k);
        // Mid-run: some work indexed, much not yet.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let chunks = first
                .metric("freshet_chunks_indexed_total")
                .get("")
                .copied()
                .unwrap_or(0.0);
            if chunks >= 600.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nothing indexed:\n{}",
                first.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        first.kill()
    })
    .await
    .unwrap();
    let c = kafka::committed(&broker, &group, &topic, 3);
    let committed: i64 = c.values().sum();
    assert!(
        committed < 3600,
        "the kill came after everything was committed ({c:?})"
    );
    for (p, o) in &c {
        assert!(*o <= ends[p], "committed past the end on {p}");
    }

    // Restart on the same data dir: the rest is redelivered and finished.
    let (k, d, b, g, t, e) = (
        kafka_toml,
        dir.0.clone(),
        broker.clone(),
        group.clone(),
        topic.clone(),
        ends.clone(),
    );
    let data = tokio::task::spawn_blocking(move || {
        let second = Instance::start(&d, "second", "node", &k);
        wait_committed(&b, &g, &t, &e, &|| {
            format!("{}\n{}", second.metrics(), second.logs())
        });
        second.stop()
    })
    .await
    .unwrap();
    assert_eq!(data, first);
    let got = index_docs(&data).await;

    // Reference: the final versions through a fresh pipeline, in process.
    let reference_dir = TempDir::new("kafka-crash-ref");
    let s = common::TestSettings::new(&reference_dir.0).build();
    let runtime = freshet::service::Runtime::build(&s).await.unwrap();
    for i in 0..2900 {
        let id = format!("d-{i}");
        let line = if i < 500 {
            doc(&id, 6, "v2")
        } else {
            doc(&id, 30, "v1")
        };
        let task = freshet::dataplane::Task::parse(std::str::from_utf8(&line).unwrap()).unwrap();
        assert!(runtime.source.push(task, "reference").await);
    }
    assert!(runtime.drain().await.0);
    let want = index_docs(&reference_dir.0).await;
    assert_eq!(want.len(), 2900);
    assert!(want["d-0"] < want["d-600"], "v2 documents are shorter");
    let missing: Vec<_> = want
        .keys()
        .filter(|d| !got.contains_key(*d))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|d| !want.contains_key(*d))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    let differ: Vec<_> = want
        .iter()
        .filter(|(d, n)| got.get(*d) != Some(n))
        .map(|(d, n)| (d.clone(), *n, got.get(d).copied()))
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "chunk counts differ (doc, want, got): {differ:?}"
    );
    assert_eq!(got.values().sum::<usize>(), want.values().sum::<usize>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_partitions_and_share_knob_changes() {
    let Some(broker) = kafka::broker("two_instances_split_partitions_and_share_knob_changes")
    else {
        return;
    };
    let topic = kafka::unique("scale-tasks");
    let group = kafka::unique("scale-group");
    let control = kafka::unique("scale-control");
    kafka::create_topic(&broker, &topic, 4).await;
    let dir = TempDir::new("kafka-scale");
    let toml = |name: &str| {
        format!(
            "[kafka]\nbrokers = \"{broker}\"\ngroup_id = \"{group}\"\ntask_topics = [\"{topic}\"]\ncontrol_topic = \"{control}\"\n\
             instance_id = \"{name}\"\ncommit_interval_ms = 100\nsession_timeout_ms = 6000\n"
        )
    };
    let (ta, tb, d) = (toml("inst-a"), toml("inst-b"), dir.0.clone());
    let (a, b) = tokio::task::spawn_blocking(move || {
        let a = Instance::start(&d, "a", "a", &ta);
        let b = Instance::start(&d, "b", "b", &tb);
        (a, b)
    })
    .await
    .unwrap();
    let t = topic.clone();
    let (a, b, sa, sb) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (sa, sb) = (a.assigned(&t), b.assigned(&t));
            let union: BTreeSet<i32> = sa.union(&sb).copied().collect();
            let leaders = [a.leader(), b.leader()];
            if !sa.is_empty()
                && !sb.is_empty()
                && sa.is_disjoint(&sb)
                && union.len() == 4
                && leaders.iter().filter(|l| **l).count() == 1
            {
                return (a, b, sa, sb);
            }
            assert!(
                Instant::now() < deadline,
                "partitions {sa:?} / {sb:?}, leaders {leaders:?}\nA:\n{}\nB:\n{}",
                a.logs(),
                b.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();

    let messages: Vec<Msg> = (0..400)
        .map(|i| {
            let id = format!("s-{i}");
            Msg::keyed(&id, doc(&id, 6, "v1"))
        })
        .collect();
    let producer = kafka::producer(&broker);
    let positions = kafka::produce_batched(&producer, &topic, &messages).await;
    let ends = ends_of(&positions);
    let partition_of: BTreeMap<String, i32> = positions
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (format!("s-{i}"), *p))
        .collect();
    let (b2, g2, t2) = (broker.clone(), group.clone(), topic.clone());
    let (a, b, timings) = tokio::task::spawn_blocking(move || {
        wait_committed(&b2, &g2, &t2, &ends, &|| {
            format!("A:\n{}\nB:\n{}", a.logs(), b.logs())
        });
        // A knob change on either instance is in force on the other within
        // one control interval, at the same version.
        let mut timings = Vec::new();
        for (from, to, value) in [(&a, &b, 13), (&b, &a, 5)] {
            let started = Instant::now();
            let version = from.patch("extract.slots", value);
            loop {
                let c = to.config();
                if c["version"] == json!(version) && c["knobs"]["extract"]["slots"] == json!(value)
                {
                    break;
                }
                assert!(
                    started.elapsed() < CONTROL_INTERVAL,
                    "knob change v{version} not in force on the other instance after {:?}: {c}",
                    started.elapsed()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            timings.push(started.elapsed());
            assert_eq!(from.config()["version"], json!(version));
        }
        (a, b, timings)
    })
    .await
    .unwrap();
    eprintln!("knob propagation: {timings:?}");

    // The leader leaves: the other instance takes the controller over.
    let (a_leads, a, b) = (a.leader(), a, b);
    let (leaving, staying) = if a_leads { (a, b) } else { (b, a) };
    let (data_leaving, staying) = tokio::task::spawn_blocking(move || {
        let data = leaving.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !staying.leader() {
            assert!(
                Instant::now() < deadline,
                "no takeover:\n{}",
                staying.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (data, staying)
    })
    .await
    .unwrap();
    let data_staying = tokio::task::spawn_blocking(move || staying.stop())
        .await
        .unwrap();
    let (data_a, data_b) = if a_leads {
        (data_leaving, data_staying)
    } else {
        (data_staying, data_leaving)
    };

    // Each instance indexed exactly the documents of its partitions.
    let docs_a: BTreeSet<String> = index_docs(&data_a).await.into_keys().collect();
    let docs_b: BTreeSet<String> = index_docs(&data_b).await.into_keys().collect();
    assert!(docs_a.is_disjoint(&docs_b));
    assert_eq!(docs_a.len() + docs_b.len(), 400);
    for d in &docs_a {
        assert!(
            sa.contains(&partition_of[d]),
            "{d} is not from A's partitions"
        );
    }
    for d in &docs_b {
        assert!(
            sb.contains(&partition_of[d]),
            "{d} is not from B's partitions"
        );
    }
    // Each one's audit trail holds the other's change.
    let others = |data: &Path| {
        freshet::service::cluster::read_cluster_audit(data)
            .unwrap()
            .into_iter()
            .map(|l| (l.instance, l.record.kind))
            .collect::<Vec<_>>()
    };
    let kinds_a = others(&data_a);
    assert!(
        kinds_a
            .iter()
            .any(|(i, k)| i == "inst-b" && *k == freshet::control::audit::EventKind::Override),
        "{kinds_a:?}"
    );
    let kinds_b = others(&data_b);
    assert!(
        kinds_b
            .iter()
            .any(|(i, k)| i == "inst-a" && *k == freshet::control::audit::EventKind::Override),
        "{kinds_b:?}"
    );
    // Each audit head is mirrored to the control topic, equal to the one
    // on the instance's disk.
    let topic_state = kafka::latest_by_key(&broker, &control);
    for (name, data) in [("inst-a", &data_a), ("inst-b", &data_b)] {
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("audit.head")).unwrap()).unwrap();
        let mirrored = topic_state
            .get(&format!("head/{name}"))
            .and_then(|v| v.as_deref())
            .unwrap_or_else(|| panic!("no head/{name} on the control topic"));
        let mirrored: serde_json::Value = serde_json::from_slice(mirrored).unwrap();
        assert_eq!(mirrored["seq"], on_disk["seq"], "{name}");
        assert_eq!(mirrored["hash"], on_disk["hash"], "{name}");
    }
}

/// `freshet bench freshness --brokers`: Debezium change events through a
/// real broker become searchable, every one, as a reader sees it.
#[test]
fn bench_freshness_over_debezium_sees_every_row() {
    let Some(brokers) = kafka::broker("bench_freshness_over_debezium_sees_every_row") else {
        return;
    };
    let (ok, out, err) = common::freshet(&[
        "bench",
        "freshness",
        "--embedder",
        "hash",
        "--rate",
        "40",
        "--duration",
        "2s",
        "--search-rate",
        "2",
        "--brokers",
        &brokers,
    ]);
    assert!(ok, "bench freshness --brokers failed:\n{out}\n{err}");
    let row: serde_json::Value = err
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON row on stderr:\n{err}"));
    assert_eq!(row["input"], "debezium", "{row}");
    let posted = row["posted"].as_u64().unwrap();
    assert!(posted >= 40, "{row}");
    assert_eq!(row["unseen"], 0, "every row became searchable: {row}");
    assert_eq!(row["points"].as_u64(), Some(posted), "{row}");
}
