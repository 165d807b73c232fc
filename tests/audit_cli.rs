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
