//! The approval queue end to end, over real HTTP on loopback: a `freshet
//! run` process whose controller asks the scripted LLM endpoint; its
//! proposals of `approval = true` knobs are queued (audited), listed by
//! `freshet approvals list` and `GET /v1/approvals` (read token), applied
//! only on `freshet approvals approve` (then baked and committed like any
//! change), dropped with the reason on `reject`, and expired after
//! `approval_expiry_s` (audited). A proposal of a knob that already waits is
//! refused; deciding needs the admin token.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use freshet::control::audit::{read_records, EventKind, Record};
use freshet::sim::llm::{LlmSim, LlmSimOptions, Reply};
use serde_json::{json, Value};

const ADMIN: &str = "admin-t0ken";
const READ: &str = "read-t0ken";
const EXPIRY_S: u64 = 12;

fn guardrails() -> String {
    format!(
        r#"
[global]
bake_windows = 1
rollback_goodput_drop = 1.0
rollback_error_rate_rise = 1.0
rollback_quality_drop = 1.0
approval_expiry_s = {EXPIRY_S}

[knobs."extract.slots"]
min = 1
max = 64

[knobs."transform.min_quality"]
approval = true

[knobs."transform.chunk_tokens"]
min = 64
max = 1024
approval = true

[knobs."transform.chunk_overlap"]
approval = true
"#
    )
}

fn answer(knob: &str, value: Value) -> Reply {
    Reply::Answer(json!({
        "changes": [{"knob": knob, "value": value, "reason": format!("{knob} should be {value}")}],
        "rationale": format!("raise {knob}"),
        "expected_gain": 0.1
    }))
}

fn records(audit: &Path) -> Vec<Record> {
    read_records(audit).unwrap_or_default()
}

fn cli(args: &[&str], token: &str) -> (bool, String, String) {
    common::freshet_env(args, &[("FRESHET_SERVICE__ADMIN_TOKEN", token)])
}

/// Waits until `pred` holds for the audit records; panics with them after 60 s.
fn wait_for(audit: &Path, what: &str, pred: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rs = records(audit);
        if pred(&rs) {
            return rs;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within 60 s:\n{}",
            rs.iter()
                .map(|r| r.summary_line())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_of_approval_knobs_wait_for_a_person() {
    let sim = LlmSim::start(LlmSimOptions {
        api_key: Some("sk-approvals".into()),
        idle: Reply::NoChange,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.push([
        // 1: queued (A); 2: the same knob again: refused while A waits;
        // 3: queued (B, rejected below); 4: queued (C, left to expire).
        answer("transform.min_quality", json!(0.3)),
        answer("transform.min_quality", json!(0.4)),
        answer("transform.chunk_tokens", json!(300)),
        answer("transform.chunk_overlap", json!(48)),
    ]);
    let base_url = sim.base_url();
    tokio::task::spawn_blocking(move || run(&base_url))
        .await
        .unwrap();
    sim.shutdown().await;
}

fn run(llm_base: &str) {
    let tmp = common::TempDir::new("approvals");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let guard_path = tmp.0.join("guardrails.toml");
    std::fs::write(&guard_path, guardrails()).unwrap();
    let port = common::free_port();
    let config = tmp.0.join("freshet.toml");
    let prompt = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/controller.md");
    common::TestSettings::new(&tmp.0.join("data"))
        .set("service.listen", format!("127.0.0.1:{port}"))
        .set("service.admin_token", ADMIN)
        .set("service.read_token", READ)
        .set("service.guardrails", guard_path.display().to_string())
        .set("controller.policy", "llm")
        .set("controller.interval_ms", 500)
        .set("controller.prompt", prompt.display().to_string())
        .set("controller.llm.base_url", llm_base)
        .set("controller.llm.model", "scripted")
        .set("controller.llm.api_key", "sk-approvals")
        .write(&config);
    let log = tmp.0.join("freshet.log");
    let mut child = common::spawn_run(&config, &log);
    let base = format!("http://127.0.0.1:{port}");
    let addr = format!("127.0.0.1:{port}");
    common::wait_running(
        &mut child,
        "freshet run",
        &base,
        &log,
        Duration::from_secs(60),
    );
    let audit = tmp.0.join("data/audit.jsonl");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Three proposals queued, the repeated knob refused.
    let rs = wait_for(&audit, "three approvals queued", |rs| {
        rs.iter()
            .filter(|r| r.kind == EventKind::ApprovalQueued)
            .count()
            >= 3
    });
    let queued: Vec<&Record> = rs
        .iter()
        .filter(|r| r.kind == EventKind::ApprovalQueued)
        .collect();
    let (a, b, c) = (queued[0].seq, queued[1].seq, queued[2].seq);
    for (r, knob) in queued.iter().zip([
        "transform.min_quality",
        "transform.chunk_tokens",
        "transform.chunk_overlap",
    ]) {
        assert_eq!(r.event.verdict["changes"][0]["knob"], knob, "{r:?}");
        assert_eq!(r.event.actor["policy"], "llm");
        // The proposal record before it says the verdict.
        let proposal = rs
            .iter()
            .find(|p| Some(p.seq) == r.event.verdict["proposal_seq"].as_u64())
            .expect("the queued record names its proposal");
        assert_eq!(proposal.kind, EventKind::Proposal);
        assert_eq!(
            proposal.event.verdict["verdicts"][0]["verdict"],
            "awaiting_approval"
        );
    }
    let refused = rs
        .iter()
        .find(|r| r.kind == EventKind::Rejected)
        .expect("the repeated knob was refused");
    assert!(
        refused
            .event
            .verdict
            .to_string()
            .contains(&format!("already waits for approval (#{a})")),
        "{refused:?}"
    );
    // Nothing applied yet.
    let config: Value = client
        .get(format!("{base}/v1/config"))
        .bearer_auth(READ)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["version"], 1, "{config}");

    // Listing: the read token may, no token may not.
    let r = client.get(format!("{base}/v1/approvals")).send().unwrap();
    assert_eq!(r.status(), 401);
    let listed: Value = client
        .get(format!("{base}/v1/approvals"))
        .bearer_auth(READ)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<u64> = listed["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [a, b, c], "{listed}");
    assert_eq!(listed["expiry_s"], EXPIRY_S);
    assert_eq!(listed["approvals"][0]["diff"][0]["to"], json!(0.3));
    let (ok, out, err) = common::freshet_env(
        &["approvals", "list", "--addr", &addr],
        &[("FRESHET_SERVICE__READ_TOKEN", READ)],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "#{a} transform.min_quality 0.5 -> 0.3 — raise transform.min_quality (llm, proposed "
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("#{b} transform.chunk_tokens 256 -> 300")),
        "{out}"
    );

    // Deciding needs the admin token.
    let r = client
        .post(format!("{base}/v1/approvals/{a}/approve"))
        .bearer_auth(READ)
        .json(&json!({"operator": "mallory"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let (ok, _, err) = cli(
        &[
            "approvals",
            "approve",
            &a.to_string(),
            "--operator",
            "alice",
            "--addr",
            &addr,
        ],
        "not-the-token",
    );
    assert!(!ok && err.contains("401"), "{err}");

    // Approve A through the CLI: applied now, then baked and committed.
    let (ok, out, err) = cli(
        &[
            "approvals",
            "approve",
            &a.to_string(),
            "--operator",
            "alice",
            "--addr",
            &addr,
        ],
        ADMIN,
    );
    assert!(ok, "{err}");
    assert!(out.contains("applied as knob version 2"), "{out}");
    let config: Value = client
        .get(format!("{base}/v1/config"))
        .bearer_auth(READ)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["knobs"]["transform"]["min_quality"], json!(0.3));
    // Approving it twice: it is not waiting any more.
    let r = client
        .post(format!("{base}/v1/approvals/{a}/approve"))
        .bearer_auth(ADMIN)
        .json(&json!({"operator": "alice"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // Reject B with a reason; a reason is required.
    let r = client
        .post(format!("{base}/v1/approvals/{b}/reject"))
        .bearer_auth(ADMIN)
        .json(&json!({"operator": "bob", "reason": "  "}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let (ok, out, err) = cli(
        &[
            "approvals",
            "reject",
            &b.to_string(),
            "--operator",
            "bob",
            "--reason",
            "chunks stay as they are until the reindex",
            "--addr",
            &addr,
        ],
        ADMIN,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("rejected #{b}")), "{out}");

    let rs = wait_for(
        &audit,
        "the approved change committed and C expired",
        |rs| {
            let applied = rs
                .iter()
                .find(|r| r.kind == EventKind::Applied && r.event.actor["approval"] == a);
            let committed = applied.is_some_and(|ap| {
                rs.iter().any(|r| {
                    r.kind == EventKind::Committed && r.event.verdict["applied_seq"] == ap.seq
                })
            });
            committed && rs.iter().any(|r| r.kind == EventKind::ApprovalExpired)
        },
    );
    let applied = rs
        .iter()
        .find(|r| r.kind == EventKind::Applied && r.event.actor["approval"] == a)
        .unwrap();
    assert_eq!(applied.event.actor["operator"], "alice");
    assert_eq!(applied.event.actor["proposed_by"]["policy"], "llm");
    assert_eq!(applied.event.diff[0]["knob"], "transform.min_quality");
    assert_eq!(applied.event.to_version, Some(2));
    let rejected = rs
        .iter()
        .find(|r| r.kind == EventKind::ApprovalRejected)
        .unwrap();
    assert_eq!(rejected.event.verdict["approval"], b);
    assert_eq!(rejected.event.actor["operator"], "bob");
    assert_eq!(
        rejected.event.detail,
        "chunks stay as they are until the reindex"
    );
    let expired: Vec<&Record> = rs
        .iter()
        .filter(|r| r.kind == EventKind::ApprovalExpired)
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].event.verdict["approval"], c);
    // It expired no earlier than its time.
    let queued_c = rs.iter().find(|r| r.seq == c).unwrap();
    assert!(expired[0].time_ms >= queued_c.time_ms + EXPIRY_S * 1000);
    // Neither B nor C was applied: the knobs are A's.
    let config: Value = client
        .get(format!("{base}/v1/config"))
        .bearer_auth(READ)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["knobs"]["transform"]["chunk_tokens"], 256);
    assert_eq!(config["knobs"]["transform"]["chunk_overlap"], 32);
    let listed: Value = client
        .get(format!("{base}/v1/approvals"))
        .bearer_auth(READ)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed["approvals"], json!([]), "{listed}");
    // The controller's history follows the queue.
    let controller: Value = client
        .get(format!("{base}/v1/controller"))
        .bearer_auth(READ)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let outcome = |seq: u64| {
        controller["report"]["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["seq"] == seq)
            .map(|d| d["outcome"].clone())
    };
    assert_eq!(
        outcome(applied.seq),
        Some(json!("committed")),
        "{controller}"
    );
    assert_eq!(outcome(b), Some(json!("rejected")), "{controller}");
    assert_eq!(outcome(c), Some(json!("expired")), "{controller}");

    let (ok, tail, err) = common::freshet(&[
        "audit",
        "tail",
        "-n",
        "100",
        "--data-dir",
        tmp.0.join("data").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        tail.contains(&format!("applied v2 (approval #{a})")),
        "{tail}"
    );
    assert!(tail.contains(&format!("approval #{b} rejected")), "{tail}");
    assert!(tail.contains(&format!("approval #{c} expired")), "{tail}");

    let status = common::terminate(&mut child, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "freshet run did not drain"
    );
    freshet::control::audit::verify(&audit).unwrap();
}
