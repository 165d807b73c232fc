//! deploy/prometheus and deploy/grafana:
//!
//! - the alert rules pass `promtool check rules`, and their unit tests
//!   (`deploy/prometheus/freshet-rules.test.yml`) pass `promtool test rules`;
//! - every query of the Grafana dashboard is valid PromQL (checked by
//!   promtool as recording rules);
//! - a real `freshet run` against the simulated web (search, pages, embed,
//!   index, a dead letter, the controller) serves a `/metrics` that passes
//!   `promtool check metrics`, exports every metric the rules and the
//!   dashboard name, and has the alert gauges at their healthy values
//!   (pausing the controller turns `freshet_controller_paused` on).
//!
//! promtool is Debian's `prometheus` package (scripts/test installs it).
//! Without it these tests skip, except under scripts/test
//! (`FRESHET_TEST_SUITE=1`) or with `FRESHET_TEST_PROMTOOL_REQUIRED=1`,
//! where they fail.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use freshet::sim::{Scenario, SimOptions, SimServer};

mod common;

fn asset(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

const RULES: &str = "deploy/prometheus/freshet-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/freshet-rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/freshet-overview.json";
const ADMIN: &str = "admin-t0ken";

/// The promtool binary, or None (the test skips) when it is missing and
/// not required.
fn promtool() -> Option<String> {
    let bin = std::env::var("FRESHET_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    if Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(bin);
    }
    let required = ["FRESHET_TEST_SUITE", "FRESHET_TEST_PROMTOOL_REQUIRED"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| v == "1"));
    assert!(
        !required,
        "promtool ({bin}) is missing: install Debian's `prometheus` package (scripts/test does)"
    );
    eprintln!("skipped: promtool is missing (apt-get install prometheus)");
    None
}

/// Runs `promtool ARGS` (with `stdin`, if any): (success, stdout + stderr).
fn run_promtool(promtool: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes())
            .expect("promtool reads stdin");
    }
    drop(pipe);
    let out = child.wait_with_output().expect("promtool ends");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let (ok, text) = run_promtool(
        &promtool,
        &["check", "rules", asset(RULES).to_str().unwrap()],
        None,
    );
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
    let (ok, text) = run_promtool(
        &promtool,
        &["test", "rules", asset(RULE_TESTS).to_str().unwrap()],
        None,
    );
    assert!(ok, "promtool test rules:\n{text}");
    // Every alert of the rules file has its unit test.
    let rules = std::fs::read_to_string(asset(RULES)).unwrap();
    let tests = std::fs::read_to_string(asset(RULE_TESTS)).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no test in {RULE_TESTS}"
        );
    }
}

/// Every `expr` of the dashboard (panels and annotations), with Grafana's
/// variables replaced by what Prometheus would receive.
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(asset(DASHBOARD)).unwrap()).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
        })
        .collect()
}

#[test]
fn the_dashboard_has_the_overview_panels_and_its_queries_are_valid_promql() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(asset(DASHBOARD)).unwrap()).unwrap();
    let titles: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap_or("").to_lowercase())
        .collect();
    for needle in [
        "goodput",
        "freshness p50 / p99",
        "error rate",
        "credits per minute",
        "source lag",
        "slots per stage",
        "saturation per stage",
        "queue depth per stage",
        "backpressure per stage",
        "dead letters",
        "circuits",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(needle)),
            "no `{needle}` panel in {titles:?}"
        );
    }
    let ids: BTreeSet<u64> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), titles.len(), "panel ids are not unique");

    let Some(promtool) = promtool() else { return };
    let queries = dashboard_queries();
    assert!(queries.len() >= titles.len(), "{queries:?}");
    // promtool parses every rule's expression: the queries as recording rules.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    let tmp = common::TempDir::new("dashboard-promql");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let file = tmp.0.join("queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, text) = run_promtool(&promtool, &["check", "rules", file.to_str().unwrap()], None);
    assert!(
        ok,
        "a dashboard query is not valid PromQL:\n{text}\n{rules}"
    );
}

/// The `freshet_*` metric names in `text`, histogram series folded to
/// their metric.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("freshet_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if before_ok {
            let name = &text[start..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(name.to_string());
        }
        i = end;
    }
    names
}

/// The value of the series `series` (name and labels exactly as rendered),
/// if the scrape has it.
fn value_of(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn scrape(client: &reqwest::blocking::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// Writes the settings and tasks of a run against the simulator at
/// `sim_base` (port `sim_port`): article URLs, keywords, a document and
/// one line that is not a task (a dead letter).
fn write_run(dir: &Path, sim_base: &str, urls: &[String], port: u16) -> PathBuf {
    let tasks = dir.join("tasks.jsonl");
    let mut lines: Vec<String> = urls
        .iter()
        .map(|u| serde_json::json!({"type": "url", "url": u}).to_string())
        .collect();
    for q in ["heat pumps", "urban cycling"] {
        lines.push(serde_json::json!({"type": "keyword", "query": q}).to_string());
    }
    let text: String = (0..40)
        .map(|i| format!("Line {i} of the report tells something new about the harbour. "))
        .collect();
    lines.push(
        serde_json::json!({"type": "document", "id": "harbour-report", "text": text}).to_string(),
    );
    lines.push("not json".into());
    std::fs::write(&tasks, lines.join("\n") + "\n").unwrap();
    let config = dir.join("freshet.toml");
    common::TestSettings::new(&dir.join("data"))
        .sim(sim_base)
        .set("service.listen", format!("127.0.0.1:{port}"))
        .set("service.admin_token", ADMIN)
        .set("controller.interval_ms", 1000)
        .set("knobs.transform.linger_ms", 20)
        .set("knobs.index.linger_ms", 5)
        .set(
            "source.files",
            toml::Value::Array(vec![tasks.display().to_string().into()]),
        )
        .write(&config);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_passes_promtool_and_exports_every_metric_the_assets_use() {
    let Some(promtool) = promtool() else { return };
    let sim = SimServer::start(SimOptions::new(
        Scenario::from_toml_str(common::FAST).unwrap(),
        3,
    ))
    .await
    .unwrap();
    let urls = sim.corpus().article_urls(sim.addr().port(), 30);
    let sim_base = sim.base_url();
    tokio::task::spawn_blocking(move || run_and_check(&promtool, &sim_base, &urls))
        .await
        .unwrap();
    sim.shutdown().await;
}

fn run_and_check(promtool: &str, sim_base: &str, urls: &[String]) {
    let tmp = common::TempDir::new("prometheus-assets");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let port = common::free_port();
    let config = write_run(&tmp.0, sim_base, urls, port);
    let log = tmp.0.join("freshet.log");
    let mut child = common::spawn_run(&config, &log);
    let base = format!("http://127.0.0.1:{port}");
    common::wait_running(
        &mut child,
        "freshet run",
        &base,
        &log,
        Duration::from_secs(60),
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Let the work through (pages, searches, the dead letter) and the
    // controller decide a few windows, then scrape.
    let started = Instant::now();
    let text = loop {
        let text = scrape(&client, &base);
        let chunks = value_of(&text, "freshet_chunks_indexed_total").unwrap_or(0.0);
        let pages = text.contains("freshet_extract_pages_total{");
        let credits = text.contains("freshet_credits_total{");
        let dead = text.contains("freshet_dlq_records_total{");
        if chunks >= 20.0 && pages && credits && dead && started.elapsed() > Duration::from_secs(4)
        {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the run did not index, search and dead-letter within 90 s:\n{text}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };

    let (ok, lint) = run_promtool(promtool, &["check", "metrics"], Some(&text));
    assert!(
        ok,
        "promtool check metrics:\n{lint}\n--- the scrape:\n{text}"
    );

    // Every name the assets use is one src/metrics.rs defines, and is in
    // the scrape unless it only appears with its first event: the Kafka
    // source's lag (a Kafka source), stage errors (a failure; their
    // label sets are too many to register at 0) and backpressure (a full
    // channel), which a healthy run on the fast simulator may not have.
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| metric_names(l.split(['{', ' ']).next().unwrap_or("")))
        .collect();
    let defined = metric_names(
        &std::fs::read_to_string(asset("src/metrics.rs"))
            .unwrap()
            .lines()
            .filter(|l| l.trim_start().starts_with("pub const ") || l.trim_start().starts_with('"'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let on_first_event = [
        freshet::metrics::SOURCE_LAG,
        freshet::metrics::STAGE_ERRORS_TOTAL,
        freshet::metrics::STAGE_BACKPRESSURE_SECONDS,
    ];
    for path in [RULES, DASHBOARD] {
        let used = metric_names(&std::fs::read_to_string(asset(path)).unwrap());
        assert!(used.len() >= 5, "{path} names {used:?}");
        for name in used {
            assert!(
                defined.contains(&name),
                "{path} uses {name}, which src/metrics.rs does not define: {defined:?}"
            );
            assert!(
                exported.contains(&name) || on_first_event.contains(&name.as_str()),
                "{path} uses {name}, which a running freshet does not export; it exports {exported:?}"
            );
        }
    }

    // A healthy run: no alert gauge is raised, and each is there to read.
    for (series, healthy) in [
        ("freshet_audit_verify_ok", 1.0),
        ("freshet_controller_paused", 0.0),
        ("freshet_controller_rollbacks_in_a_row", 0.0),
        ("freshet_circuit_open{stage=\"search\"}", 0.0),
        ("freshet_circuit_open{stage=\"embed\"}", 0.0),
        ("freshet_circuit_open{stage=\"index\"}", 0.0),
    ] {
        assert_eq!(value_of(&text, series), Some(healthy), "{series}:\n{text}");
    }
    // The freshness histogram reaches past the alert's 300 s target.
    assert!(
        text.contains("freshet_freshness_seconds_bucket{le=\"300\"}")
            && text.contains("freshet_freshness_seconds_bucket{le=\"600\"}"),
        "{text}"
    );

    // Pausing the controller shows.
    let r = client
        .post(format!("{base}/v1/controller/pause?operator=ops-test"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        value_of(&scrape(&client, &base), "freshet_controller_paused"),
        Some(1.0)
    );

    let status = common::terminate(&mut child, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "freshet run did not drain:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
