//! `freshet audit verify` against the attacks the head file and the key
//! stop: records cut off the end, and a file rewritten with recomputed
//! hashes.

use freshet::control::audit::{self, AuditLog, Event, EventKind, Record, GENESIS};

mod common;

fn fill(path: &std::path::Path, key: Option<&str>, n: u64) {
    let log = AuditLog::open_with_key(path, key.map(|k| k.as_bytes().to_vec())).unwrap();
    for i in 0..n {
        log.append(
            EventKind::Override,
            Event {
                diff: serde_json::json!([{"knob": "extract.slots", "from": 8 + i, "to": 9 + i}]),
                actor: serde_json::json!({"operator": "alice"}),
                ..Default::default()
            },
        )
        .unwrap();
    }
}

fn verify_cli(dir: &str, key: Option<&str>) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_freshet"));
    cmd.args(["audit", "verify", "--data-dir", dir])
        .env_remove(audit::AUDIT_KEY_VAR);
    if let Some(k) = key {
        cmd.env(audit::AUDIT_KEY_VAR, k);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn verify_detects_records_cut_off_the_end() {
    let tmp = common::TempDir::new("audit-anchor-cut");
    let path = tmp.0.join("audit.jsonl");
    fill(&path, None, 5);
    let dir = tmp.0.to_str().unwrap();
    let head = audit::verify_with_key(&path, None).unwrap().head;
    let (ok, out) = verify_cli(dir, None);
    assert!(
        ok && out.contains("5 records") && out.contains(&head),
        "{out}"
    );

    let text = std::fs::read_to_string(&path).unwrap();
    let kept: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, kept).unwrap();
    let (ok, out) = verify_cli(dir, None);
    assert!(!ok, "a truncated log verified: {out}");
    assert!(out.contains("truncated") && out.contains("seq 5"), "{out}");
}

#[test]
fn a_keyed_chain_rewritten_with_recomputed_hashes_fails_verify() {
    let tmp = common::TempDir::new("audit-anchor-key");
    let path = tmp.0.join("audit.jsonl");
    let key = "the-operators-audit-key";
    fill(&path, Some(key), 4);
    let dir = tmp.0.to_str().unwrap();
    let (ok, out) = verify_cli(dir, Some(key));
    assert!(ok && out.contains("4 records"), "{out}");
    let (ok, out) = verify_cli(dir, None);
    assert!(!ok && out.contains(audit::AUDIT_KEY_VAR), "{out}");

    // The attacker edits record 2 and recomputes every hash and the head,
    // as the unkeyed chain would have them.
    let mut records: Vec<Record> = audit::read_records(&path).unwrap();
    records[1].event.diff = serde_json::json!([{"knob": "extract.slots", "from": 9, "to": 500}]);
    let mut prev = GENESIS.to_string();
    let mut lines = String::new();
    for r in &mut records {
        r.prev = prev.clone();
        r.hash = r.compute_hash();
        prev = r.hash.clone();
        lines.push_str(&serde_json::to_string(r).unwrap());
        lines.push('\n');
    }
    std::fs::write(&path, lines).unwrap();
    std::fs::write(
        audit::head_path(&path),
        serde_json::json!({"seq": 4, "hash": prev}).to_string(),
    )
    .unwrap();
    let (ok, out) = verify_cli(dir, Some(key));
    assert!(!ok, "a rewritten keyed chain verified: {out}");
    assert!(out.contains("seq 1") && out.contains("altered"), "{out}");
}
