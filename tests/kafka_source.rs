//! The Kafka source on a real broker (tansu, started by ./scripts/test):
//! tasks and Debezium events end in the index exactly, bad messages in the
//! DLQ topic with their reason, offsets are committed only over finished
//! work, lag matches what was produced, and the DLQ topic replays.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshet::dataplane::ack::AckTracker;
use freshet::dataplane::dlq::Dlq;
use freshet::dataplane::source::kafka::KafkaSource;
use freshet::dataplane::Envelope;
use freshet::knobs::{Change, Knobs};
use freshet::live::LiveConfig;
use freshet::service::Runtime;
use freshet::settings::Settings;
use serde_json::{json, Value};

mod common;
use common::kafka::{self, Msg};
use common::TempDir;

fn doc_task(id: &str, text: &str) -> Vec<u8> {
    json!({"type": "document", "id": id, "title": id, "text": text})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_never_pass_unfinished_work_and_lag_matches_what_was_produced() {
    let Some(broker) = kafka::broker("commits_never_pass_unfinished_work") else {
        return;
    };
    let topic = kafka::unique("commit-tasks");
    let group = kafka::unique("commit-group");
    kafka::create_topic(&broker, &topic, 2).await;
    let producer = kafka::producer(&broker);
    let mut messages = Vec::new();
    for i in 0..20 {
        let id = format!("p0-{i}");
        messages.push(Msg::to(0, Some(&id), Some(doc_task(&id, "text"))));
    }
    for i in 0..10 {
        let id = format!("p1-{i}");
        messages.push(Msg::to(1, Some(&id), Some(doc_task(&id, "text"))));
    }
    // One record per batch (tansu 0.6 skips the rest of a batch when a
    // fetch resumes inside it, which pausing here would provoke); the lag
    // computation with its wrong high watermarks is unit-tested in kafka.rs.
    let positions = kafka::produce_batched(&producer, &topic, &messages).await;
    assert_eq!(positions.iter().filter(|(p, _)| *p == 0).count(), 20);

    let dir = TempDir::new("kafka-commit");
    let settings = Settings::from_toml(
        &format!(
            "[source]\nkind = \"kafka\"\n[kafka]\nbrokers = \"{broker}\"\ngroup_id = \"{group}\"\n\
             task_topics = [\"{topic}\"]\ncontrol_topic = \"\"\ncommit_interval_ms = 100\nlag_interval_ms = 100\n"
        ),
        "test",
        std::iter::empty(),
    )
    .unwrap();
    let live = LiveConfig::new(Knobs::default()).unwrap();
    live.patch(&[Change::new("source.max_in_flight", 5)], None)
        .unwrap();
    let dlq = Arc::new(Dlq::open(&dir.0).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Envelope>(64);
    let source = KafkaSource::start(
        &settings.kafka,
        "commit-test",
        AckTracker::new(&live),
        dlq,
        tx,
    )
    .await
    .unwrap();

    // max_in_flight = 5: five messages come, then nothing until one finishes.
    let mut held = Vec::new();
    for _ in 0..5 {
        let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a message within 30 s")
            .unwrap();
        held.push(e);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(700), rx.recv())
            .await
            .is_err(),
        "a sixth message came while five were unfinished"
    );
    // Lag counts every message not finished, per partition, exactly.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lag = source.lag();
        let want: BTreeMap<(String, i32), i64> =
            [((topic.clone(), 0), 20), ((topic.clone(), 1), 10)].into();
        if lag == want {
            break;
        }
        assert!(Instant::now() < deadline, "lag {lag:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Finish everything except partition 0 offset 3.
    let mut blocker = None;
    let mut finished = 0;
    let finish = |e: Envelope, blocker: &mut Option<Envelope>| {
        if e.source.ends_with(&format!("{topic}:0:3")) {
            *blocker = Some(e);
        } else {
            e.ack.done();
        }
    };
    for e in held.drain(..) {
        finish(e, &mut blocker);
        finished += 1;
    }
    while finished < 30 {
        let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the rest within 30 s")
            .unwrap();
        finish(e, &mut blocker);
        finished += 1;
    }
    let blocker = blocker.expect("offset 0:3 was delivered");
    // Committed: partition 0 stops at the unfinished offset 3, partition 1 is done.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = kafka::committed(&broker, &group, &topic, 2);
        let lag = source.lag();
        if c == BTreeMap::from([(0, 3), (1, 10)])
            && lag.get(&(topic.clone(), 0)) == Some(&17)
            && lag.get(&(topic.clone(), 1)) == Some(&0)
        {
            break;
        }
        assert!(
            c.get(&0).is_none_or(|&o| o <= 3),
            "committed past unfinished offset 3: {c:?}"
        );
        assert!(
            Instant::now() < deadline,
            "committed {c:?}, lag {lag:?}; expected {{0: 3, 1: 10}}, lag 17/0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Hold it a little longer: the commit must not move on its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        kafka::committed(&broker, &group, &topic, 2).get(&0),
        Some(&3)
    );
    blocker.ack.done();
    let deadline = Instant::now() + Duration::from_secs(20);
    while kafka::committed(&broker, &group, &topic, 2) != BTreeMap::from([(0, 20), (1, 10)]) {
        assert!(Instant::now() < deadline, "final commit missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    source.stop_intake();
    source.finish().await;
    assert_eq!(source.tracker().counts().finished, 30);
}

fn settings(broker: &str, group: &str, topics: &Topics, data_dir: &std::path::Path) -> Settings {
    let toml = format!(
        r#"
[source]
kind = "kafka"
[kafka]
brokers = "{broker}"
group_id = "{group}"
task_topics = ["{tasks}"]
dlq_topic = "{dlq}"
control_topic = "{control}"
commit_interval_ms = 200
lag_interval_ms = 200
[kafka.tables."public.articles"]
topic = "{cdc}"
id_field = "id"
title_field = "title"
text_fields = ["title", "body"]
url_field = "url"
payload_fields = ["author"]
"#,
        tasks = topics.tasks,
        dlq = topics.dlq,
        control = topics.control,
        cdc = topics.cdc,
    );
    common::TestSettings::new(data_dir)
        .set("service.drain_timeout_s", 30)
        .set("embed.dimensions", 128)
        .set("knobs.transform.linger_ms", 20)
        .set("knobs.index.linger_ms", 5)
        .merge(&toml)
        .build()
}

struct Topics {
    tasks: String,
    cdc: String,
    dlq: String,
    control: String,
}

fn row(id: i64, body: Value) -> Value {
    json!({"id": id, "title": format!("Article {id}"), "body": body, "url": format!("https://shop.example/a/{id}"), "author": format!("author-{}", id % 3)})
}

fn change(op: &str, before: Value, after: Value, wrapped: bool) -> Vec<u8> {
    let payload = json!({"op": op, "before": before, "after": after, "ts_ms": freshet::dataplane::task::now_ms(),
        "source": {"connector": "postgresql", "db": "shop", "schema": "public", "table": "articles"}});
    let value = if wrapped {
        json!({"schema": {"type": "struct", "name": "pg.public.articles.Envelope"}, "payload": payload})
    } else {
        payload
    };
    value.to_string().into_bytes()
}

fn key(id: i64) -> String {
    json!({"id": id}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_change_events_end_in_the_index_or_the_dlq() {
    let Some(broker) = kafka::broker("tasks_and_change_events_end_in_the_index_or_the_dlq") else {
        return;
    };
    let topics = Topics {
        tasks: kafka::unique("tasks"),
        cdc: kafka::unique("pg.public.articles"),
        dlq: kafka::unique("dlq"),
        control: kafka::unique("control"),
    };
    let group = kafka::unique("e2e-group");
    kafka::create_topic(&broker, &topics.tasks, 3).await;
    kafka::create_topic(&broker, &topics.cdc, 2).await;
    let producer = kafka::producer(&broker);

    // N task messages: 60 documents, 10 of them updated, 5 deleted, and 2
    // keywords (no search provider: dead-lettered, replayed below).
    let mut tasks = Vec::new();
    for i in 0..60 {
        let id = format!("doc-{i}");
        tasks.push(Msg::keyed(&id, doc_task(&id, &kafka::prose(&id, 6))));
    }
    for i in 0..10 {
        let id = format!("doc-{i}");
        let text = format!(
            "{} Revised edition marker zebra{i}.",
            kafka::prose(&format!("{id} v2"), 4)
        );
        tasks.push(Msg::keyed(&id, doc_task(&id, &text)));
    }
    for i in 50..55 {
        let id = format!("doc-{i}");
        tasks.push(Msg::keyed(
            &id,
            json!({"type": "delete", "id": id}).to_string(),
        ));
    }
    for q in ["heat pumps", "harbour council"] {
        tasks.push(Msg::keyed(
            q,
            json!({"type": "keyword", "query": q}).to_string(),
        ));
    }
    // Bad task messages, each with the reason expected in its dead letter.
    let bad_tasks: Vec<(Msg, &str)> = vec![
        (Msg::keyed("x", "{not json"), "not JSON"),
        (
            Msg::keyed("y", r#"{"type":"launch","id":"y"}"#),
            "not a task",
        ),
        (
            Msg::keyed("other-key", doc_task("doc-x", &kafka::prose("doc-x", 3))),
            "differs from the document id",
        ),
        (
            Msg {
                partition: None,
                key: Some(b"z".to_vec()),
                value: None,
            },
            "tombstone",
        ),
        (Msg::keyed("w", vec![0xff, 0xfe, 0x00]), "not UTF-8"),
        (
            Msg::keyed("u", r#"{"type":"url","url":"ftp://example.com/x"}"#),
            "http(s)",
        ),
    ];
    let mut expected_bad: BTreeMap<(String, i32, i64), &str> = BTreeMap::new();
    let good_positions = kafka::produce(&producer, &topics.tasks, &tasks).await;
    let (bad_msgs, bad_reasons): (Vec<Msg>, Vec<&str>) = bad_tasks.into_iter().unzip();
    for (pos, reason) in kafka::produce(&producer, &topics.tasks, &bad_msgs)
        .await
        .into_iter()
        .zip(bad_reasons)
    {
        expected_bad.insert((topics.tasks.clone(), pos.0, pos.1), reason);
    }

    // M Debezium events.
    let mut events = Vec::new();
    for id in 1..=20 {
        let body = kafka::prose(&format!("article {id}"), 3);
        events.push(Msg::keyed(
            &key(id),
            change("r", Value::Null, row(id, json!(body)), id % 2 == 0),
        ));
    }
    for id in 21..=25 {
        let body = kafka::prose(&format!("article {id}"), 3);
        events.push(Msg::keyed(
            &key(id),
            change("c", Value::Null, row(id, json!(body)), false),
        ));
    }
    for id in 1..=5 {
        let body = format!(
            "{} Updated row marker quokka{id}.",
            kafka::prose(&format!("article {id} update"), 3)
        );
        events.push(Msg::keyed(
            &key(id),
            change("u", row(id, json!("old")), row(id, json!(body)), id == 1),
        ));
    }
    for id in 6..=8 {
        events.push(Msg::keyed(
            &key(id),
            change("d", row(id, json!("old")), Value::Null, false),
        ));
        events.push(Msg {
            partition: None,
            key: Some(key(id).into_bytes()),
            value: None,
        });
    }
    let mut empty = row(9, Value::Null);
    empty["title"] = Value::Null;
    events.push(Msg::keyed(&key(9), change("u", Value::Null, empty, false)));
    events.push(Msg {
        partition: None,
        key: Some(key(10).into_bytes()),
        value: None,
    });
    kafka::produce(&producer, &topics.cdc, &events).await;
    let mut other_table: Value =
        serde_json::from_slice(&change("c", Value::Null, row(40, json!("x")), false)).unwrap();
    other_table["source"]["table"] = json!("users");
    let mut no_id = row(41, json!("text"));
    no_id.as_object_mut().unwrap().remove("id");
    let bad_events: Vec<(Msg, &str)> = vec![
        (
            Msg::keyed(&key(30), "{\"op\": \"c\", \"after\": {"),
            "not JSON",
        ),
        (
            Msg::keyed(
                &key(31),
                change("x", Value::Null, row(31, json!("b")), false),
            ),
            "unsupported Debezium op `x`",
        ),
        (
            Msg::keyed(&key(32), change("t", Value::Null, Value::Null, false)),
            "truncate",
        ),
        (
            Msg::keyed(&key(33), json!({"id": 33, "title": "flat row"}).to_string()),
            "no `op` field",
        ),
        (
            Msg::keyed(&key(40), other_table.to_string()),
            "mapped to `public.articles`",
        ),
        (
            Msg::keyed(&key(41), change("c", Value::Null, no_id, false)),
            "id column `id` is not in",
        ),
        (
            Msg::keyed(
                &key(42),
                change("c", Value::Null, row(42, json!({"nested": 1})), false),
            ),
            "holds a JSON object",
        ),
    ];
    let (bad_msgs, bad_reasons): (Vec<Msg>, Vec<&str>) = bad_events.into_iter().unzip();
    for (pos, reason) in kafka::produce(&producer, &topics.cdc, &bad_msgs)
        .await
        .into_iter()
        .zip(bad_reasons)
    {
        expected_bad.insert((topics.cdc.clone(), pos.0, pos.1), reason);
    }
    let total_messages = (tasks.len() + 6 + events.len() + 7) as u64;
    let mut produced_per_partition: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (p, o) in &good_positions {
        let e = produced_per_partition
            .entry((topics.tasks.clone(), *p))
            .or_default();
        *e = (*e).max(o + 1);
    }

    let dir = TempDir::new("kafka-e2e");
    let s = settings(&broker, &group, &topics, &dir.0);
    let runtime = Runtime::build(&s).await.expect("runtime builds");
    assert!(
        runtime
            .controller_leader
            .load(std::sync::atomic::Ordering::Acquire)
            || wait_for(
                || runtime
                    .controller_leader
                    .load(std::sync::atomic::Ordering::Acquire),
                20
            )
            .await,
        "a lone instance becomes the controller leader"
    );
    let kafka_source = runtime.find_source("kafka").expect("kafka source");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = kafka_source.tracker().counts();
        if c.finished >= total_messages
            && kafka_source.lag().values().all(|&l| l == 0)
            && kafka_source.lag().len() == 5
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not finished: {c:?} of {total_messages}, lag {:?}",
            kafka_source.lag()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (drained, counters, _) = runtime.drain().await;
    assert!(drained);
    assert_eq!(kafka_source.tracker().counts().abandoned, 0);

    // The index holds exactly the expected documents.
    let index = freshet::service::open_index(&s).await.unwrap();
    let mut docs: BTreeMap<String, usize> = BTreeMap::new();
    for (_, d) in index.all_points().await.unwrap() {
        *docs.entry(d).or_default() += 1;
    }
    let mut expected: BTreeSet<String> = (0..60)
        .filter(|i| !(50..55).contains(i))
        .map(|i| format!("doc-{i}"))
        .collect();
    expected.extend(
        (1..=25)
            .filter(|i| !(6..=10).contains(i))
            .map(|i| format!("public.articles:{i}")),
    );
    assert_eq!(docs.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(docs.len(), 55 + 20);
    // Updates replaced their documents: the new text is what is indexed.
    let embedder = freshet::service::embedder(&s).unwrap();
    for (marker, doc) in [("zebra3", "doc-3"), ("quokka2", "public.articles:2")] {
        let v = embedder
            .embed(&[format!("marker {marker}")])
            .await
            .unwrap()
            .pop()
            .unwrap();
        let hits = index.search(v, 3).await.unwrap();
        let hit = hits
            .iter()
            .find(|h| h.payload.doc_id == doc)
            .unwrap_or_else(|| panic!("{doc} not found for {marker}: {hits:?}"));
        assert!(
            hit.payload.text.contains(marker),
            "{doc} holds its new version"
        );
        if doc.starts_with("public.articles") {
            assert_eq!(hit.payload.metadata.get("author"), Some(&json!("author-2")));
            assert_eq!(hit.payload.url, "https://shop.example/a/2");
        }
    }
    assert_eq!(
        freshet::dataplane::Counters::get(&counters.dead_letters),
        2,
        "the two keywords"
    );

    // Every bad message is in the DLQ topic with its reason and origin.
    let k = s.kafka.clone();
    let dlq_topic = topics.dlq.clone();
    let records =
        tokio::task::spawn_blocking(move || freshet::dataplane::dlq::read_topic(&k, &dlq_topic))
            .await
            .unwrap()
            .unwrap();
    let mut seen = BTreeMap::new();
    let mut keywords = 0;
    for r in &records {
        let letter = r.letter.clone().expect("a dead letter");
        assert_eq!(r.headers.get("freshet.stage"), Some(&letter.stage));
        assert_eq!(
            r.headers.get("freshet.error_type"),
            Some(&letter.error_type)
        );
        let origin = (
            r.headers["freshet.topic"].clone(),
            r.headers["freshet.partition"].parse::<i32>().unwrap(),
            r.headers["freshet.offset"].parse::<i64>().unwrap(),
        );
        if letter.task.get("type") == Some(&json!("keyword")) {
            keywords += 1;
            assert!(letter.message.contains("no search provider"), "{letter:?}");
            continue;
        }
        seen.insert(origin, letter);
    }
    assert_eq!(keywords, 2);
    assert_eq!(seen.len(), expected_bad.len(), "{records:#?}");
    for (origin, reason) in &expected_bad {
        let letter = seen
            .get(origin)
            .unwrap_or_else(|| panic!("no dead letter for {origin:?} ({reason})"));
        assert!(
            letter.message.contains(reason),
            "{origin:?}: expected `{reason}` in `{}`",
            letter.message
        );
        assert_eq!(letter.stage, "source");
    }

    // Committed offsets: every partition to its end, and not beyond.
    let c = kafka::committed(&broker, &group, &topics.tasks, 3);
    for p in 0..3 {
        let end = expected_bad
            .keys()
            .filter(|(t, pp, _)| t == &topics.tasks && *pp == p)
            .map(|(_, _, o)| o + 1)
            .chain(
                produced_per_partition
                    .get(&(topics.tasks.clone(), p))
                    .copied(),
            )
            .max()
            .unwrap_or(0);
        assert_eq!(c.get(&p).copied().unwrap_or(0), end, "tasks partition {p}");
    }

    // Replay the DLQ topic with a search provider: the keywords now index pages.
    drop(index); // the embedded index is opened by one owner at a time
    let sim = freshet::sim::SimServer::start(freshet::sim::SimOptions::new(
        freshet::sim::Scenario::from_toml_str(common::FAST).unwrap(),
        3,
    ))
    .await
    .unwrap();
    let mut with_provider = s.clone();
    with_provider.provider.base_url = sim.base_url();
    with_provider.provider.api_key = freshet::settings::Secret::new("sim-key");
    with_provider.resolve = vec![("sim.test".into(), std::net::IpAddr::from([127, 0, 0, 1]))];
    let runtime = Runtime::build_without_intake(&with_provider).await.unwrap();
    assert!(runtime.find_source("kafka").is_none() && runtime.cluster.is_none());
    let (replayed, kept) = runtime.replay_dlq().await.unwrap();
    assert_eq!((replayed, kept), (2, expected_bad.len()));
    let (drained, counters, _) = runtime.drain().await;
    assert!(drained);
    assert!(
        freshet::dataplane::Counters::get(&counters.searches) == 2,
        "both keywords searched"
    );
    let index = freshet::service::open_index(&s).await.unwrap();
    let pages = index
        .all_points()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, d)| d.contains("sim.test"))
        .count();
    assert!(pages > 0, "replayed keywords indexed pages");
    let c = kafka::committed(&broker, &format!("{group}.dlq-replay"), &topics.dlq, 1);
    assert_eq!(
        c.get(&0).copied(),
        Some((expected_bad.len() + 2) as i64),
        "replay committed past what it replayed"
    );
    sim.shutdown().await;
}

async fn wait_for(mut f: impl FnMut() -> bool, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
