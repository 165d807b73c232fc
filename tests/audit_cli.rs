//! `freshet audit verify|show|tail` on a log written by `AuditLog`.

use freshet::control::audit::{AuditLog, Event, EventKind};

mod common;
use common::freshet;

#[test]
fn verify_show_and_tail_and_tampering_is_named() {
    let tmp = common::TempDir::new("audit-cli");
    let path = tmp.0.join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..4u64 {
        log.append(
            EventKind::Override,
            Event {
                from_version: Some(i + 1),
                to_version: Some(i + 2),
                diff: serde_json::json!([{"knob": "extract.slots", "from": 8 + i, "to": 9 + i}]),
                actor: serde_json::json!({"operator": "alice"}),
                ..Default::default()
            },
        )
        .unwrap();
    }
    drop(log);
    let dir = tmp.0.to_str().unwrap();
    let (ok, out, _) = freshet(&["audit", "verify", "--data-dir", dir]);
    assert!(ok && out.contains("ok, 4 records"), "{out}");
    let (ok, out, _) = freshet(&["audit", "show", "3", "--data-dir", dir]);
    assert!(
        ok && out.contains("\"seq\": 3") && out.contains("alice"),
        "{out}"
    );
    let (ok, out, _) = freshet(&["audit", "tail", "-n", "2", "--data-dir", dir]);
    assert!(
        ok && out.lines().count() == 2 && out.contains("#4"),
        "{out}"
    );

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"to\":11", "\"to\":99");
    std::fs::write(&path, text).unwrap();
    let (ok, _, err) = freshet(&["audit", "verify", "--data-dir", dir]);
    assert!(!ok, "a tampered log fails verification");
    assert!(err.contains("seq 3") && err.contains("altered"), "{err}");
}

#[test]
fn cluster_shows_the_other_instances_records_and_names_a_bad_line() {
    let tmp = common::TempDir::new("audit-cli-cluster");
    // Another instance's log, as the control topic mirrors it here.
    let other = tmp.0.join("other.jsonl");
    let log = AuditLog::open(&other).unwrap();
    for i in 0..3u64 {
        log.append(
            EventKind::Applied,
            Event {
                from_version: Some(i + 1),
                to_version: Some(i + 2),
                diff: serde_json::json!([{"knob": "embed.slots", "from": 2 + i, "to": 3 + i}]),
                ..Default::default()
            },
        )
        .unwrap();
    }
    drop(log);
    let lines: String = freshet::control::audit::read_records(&other)
        .unwrap()
        .into_iter()
        .map(|record| {
            let line = freshet::service::cluster::ClusterAuditLine {
                instance: "node-b".into(),
                record,
            };
            format!("{}\n", serde_json::to_string(&line).unwrap())
        })
        .collect();
    let path = tmp.0.join("cluster-audit.jsonl");
    std::fs::write(&path, &lines).unwrap();
    let dir = tmp.0.to_str().unwrap();
    let (ok, out, err) = freshet(&["audit", "cluster", "-n", "2", "--data-dir", dir]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("[node-b] #3") && out.contains(r#""from":4,"to":5"#),
        "{out}"
    );
    std::fs::write(&path, format!("{lines}not json\n")).unwrap();
    let (ok, _, err) = freshet(&["audit", "cluster", "--data-dir", dir]);
    assert!(!ok);
    assert!(err.contains("line 4"), "{err}");
}
