//! A crash between the audit write and the swap it describes leaves a
//! consistent log: the child process below records a change through the
//! same order `rollout::apply` uses (audit record, fsync) and then dies
//! with `abort()` before swapping, so no destructor or buffer flush runs.
//! The parent then checks the log verifies, restarts the service on the
//! same data dir, and finds the knobs of the settings in force, a `started`
//! record that says so, and a chain that goes on verifying.

use std::process::Command;

use freshet::control::audit::{self, AuditLog, Event, EventKind};
use freshet::knobs::{Change, Knobs};
use freshet::live::LiveConfig;
use freshet::service::Runtime;
use freshet::settings::Settings;

mod common;

const CHILD: &str = "FRESHET_AUDIT_CRASH_CHILD";

fn settings(dir: &std::path::Path) -> Settings {
    common::TestSettings::new(dir)
        .set("embed.dimensions", 16)
        .set("controller.mode", "off")
        .build()
}

/// Runs only inside the child process.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let path = std::path::Path::new(&dir).join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let live = LiveConfig::new(Knobs::default()).unwrap();
    let current = live.load();
    let knobs = current
        .knobs
        .apply_patch(&[Change::new("extract.slots", 20)])
        .unwrap();
    log.append(
        EventKind::Applied,
        Event {
            from_version: Some(current.version),
            to_version: Some(current.version + 1),
            diff: serde_json::to_value(current.knobs.diff(&knobs)).unwrap(),
            actor: serde_json::json!({"policy": "crash-test"}),
            ..Default::default()
        },
    )
    .unwrap();
    // The crash: after the fsynced record, before `live.swap_if`.
    std::process::abort();
}

#[tokio::test]
async fn a_crash_between_audit_write_and_swap_leaves_a_consistent_log() {
    let tmp = common::TempDir::new("audit-crash");
    // The first start writes its `started` record.
    let runtime = Runtime::build(&settings(&tmp.0)).await.unwrap();
    assert!(runtime.drain().await.0);

    let status = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture"])
        .env(CHILD, &tmp.0)
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborted");

    let path = tmp.0.join("audit.jsonl");
    let report = audit::verify(&path).expect("the log verifies after the crash");
    assert_eq!(report.records, 2);
    let records = audit::read_records(&path).unwrap();
    assert_eq!(records[1].kind, EventKind::Applied);
    assert_eq!(records[1].event.to_version, Some(2));

    // The restart: the settings' knobs are in force, and the log says so.
    let runtime = Runtime::build(&settings(&tmp.0)).await.unwrap();
    assert_eq!(runtime.live.version(), 1);
    assert_eq!(
        runtime.live.load().knobs.extract.slots,
        Knobs::default().extract.slots
    );
    assert!(runtime.drain().await.0);
    let records = audit::read_records(&path).unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].kind, EventKind::Started);
    assert_eq!(records[2].event.to_version, Some(1));
    assert_eq!(records[2].prev, records[1].hash);
    assert_eq!(audit::verify(&path).unwrap().records, 3);
}
