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
        ok && out.starts_with("#3 override v4: extract.slots 10 -> 11")
            && out.contains("operator  alice")
            && out.contains("observation  none recorded"),
        "{out}"
    );
    let (ok, out, _) = freshet(&["audit", "tail", "-n", "2", "--data-dir", dir]);
    assert!(
        ok && out.lines().count() == 2
            && out.contains("#4 override v5: extract.slots 11 -> 12 (operator alice)"),
        "{out}"
    );
    let (ok, out, _) = freshet(&["audit", "tail", "-n", "2", "--json", "--data-dir", dir]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(ok && lines.len() == 2 && lines[1]["seq"] == 4, "{out}");
    let (ok, out, _) = freshet(&["audit", "show", "3", "--json", "--data-dir", dir]);
    assert!(ok && out.contains("\"seq\": 3"), "{out}");
    // Knob differences between versions: 1 -> 5 crosses every change.
    let (ok, out, err) = freshet(&["audit", "diff", "1", "5", "--data-dir", dir]);
    assert!(ok, "{err}");
    assert!(out.contains("extract.slots  8 -> 12"), "{out}");
    let (ok, out, _) = freshet(&["audit", "diff", "3", "3", "--data-dir", dir]);
    assert!(ok && out.contains("same knobs"), "{out}");
    let (ok, _, err) = freshet(&["audit", "diff", "1", "9", "--data-dir", dir]);
    assert!(!ok && err.contains("no version 9"), "{err}");

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
        out.contains("[node-b]") && out.contains("#3 applied v4: embed.slots 4 -> 5"),
        "{out}"
    );
    std::fs::write(&path, format!("{lines}not json\n")).unwrap();
    let (ok, _, err) = freshet(&["audit", "cluster", "--data-dir", dir]);
    assert!(!ok);
    assert!(err.contains("line 4"), "{err}");
}
