//! The controller against the simulator's scenarios: short real-time runs
//! with the phases pinned by the test (so the drop happens exactly when the
//! test says), one-second control windows, and cooldowns counted in
//! scenario time (x10). Seeds are fixed.
//!
//! The observer reads the process-wide metrics tap, so the tests in this
//! binary run one at a time (`SERIAL`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freshet::control::audit::{AuditLog, EventKind, Record};
use freshet::control::guard::Guard;
use freshet::control::policy::heuristic::Heuristic;
use freshet::control::policy::{Context, Policy, PolicyError, Proposal};
use freshet::control::{ControlState, Controller, ControllerOptions, ControllerReport};
use freshet::dataplane::Task;
use freshet::knobs::Change;
use freshet::service::Runtime;
use freshet::settings::{ControllerMode, Settings};
use freshet::sim::{Scenario, SimOptions, SimServer};

mod common;
use common::{TempDir, TestSettings};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const INTERVAL: Duration = Duration::from_secs(1);

fn settings(sim: &SimServer, data_dir: &std::path::Path) -> Settings {
    TestSettings::new(data_dir)
        .set("service.drain_timeout_s", 20)
        .sim(&sim.base_url())
        .set("controller.mode", "off")
        .build()
}

fn guard(extra: &str) -> Guard {
    let text = std::fs::read_to_string("policies/guardrails.toml").expect("guardrails file");
    let text = if extra.is_empty() {
        text
    } else {
        // Later keys win: rewrite [global] values by appending a replacement table.
        let mut table: toml::Table = text.parse().unwrap();
        let extra: toml::Table = extra.parse().unwrap();
        for (k, v) in extra {
            if let (Some(toml::Value::Table(t)), toml::Value::Table(e)) = (table.get_mut(&k), &v) {
                for (ek, ev) in e {
                    t.insert(ek.clone(), ev.clone());
                }
            } else {
                table.insert(k, v);
            }
        }
        toml::to_string(&table).unwrap()
    };
    Guard::from_toml(&text, "test guardrails").expect("valid guardrails")
}

struct Rig {
    sim: SimServer,
    runtime: Runtime,
    state: Arc<ControlState>,
    report: Arc<Mutex<ControllerReport>>,
    stop_controller: Option<tokio::sync::oneshot::Sender<()>>,
    controller: Option<tokio::task::JoinHandle<()>>,
    feeding: Arc<AtomicBool>,
    feeder: Option<tokio::task::JoinHandle<u64>>,
    _dir: TempDir,
}

impl Rig {
    async fn start(
        scenario: &str,
        guard_extra: &str,
        policy: Arc<dyn Policy>,
        mode: ControllerMode,
    ) -> Rig {
        let scenario = Scenario::load(std::path::Path::new(scenario)).expect("scenario");
        let sim = SimServer::start(SimOptions::new(scenario, 11))
            .await
            .expect("sim starts");
        sim.set_phase(0);
        let dir = TempDir::new("controller");
        let runtime = Runtime::build(&settings(&sim, &dir.0))
            .await
            .expect("runtime builds");
        let audit = Arc::new(AuditLog::open(&dir.0.join("controller-audit.jsonl")).unwrap());
        let state = Arc::new(
            ControlState::new(runtime.live.clone(), guard(guard_extra), None, audit)
                .with_time_scale(10.0),
        );
        let controller = Controller::new(
            state.clone(),
            policy,
            ControllerOptions {
                mode,
                interval: INTERVAL,
                samples: 5,
                history: 30,
            },
        );
        let report = controller.report();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller.run(async move {
            let _ = stopped.await;
        }));
        Rig {
            sim,
            runtime,
            state,
            report,
            stop_controller: Some(stop),
            controller: Some(task),
            feeding: Arc::new(AtomicBool::new(true)),
            feeder: None,
            _dir: dir,
        }
    }

    /// Offers `tasks` at `rate` per second until stopped.
    fn feed(&mut self, tasks: Vec<Task>, rate: f64) {
        let source = self.runtime.source.clone();
        let feeding = self.feeding.clone();
        self.feeder = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut n = 0u64;
            for task in tasks.into_iter().cycle() {
                if !feeding.load(Ordering::SeqCst) {
                    break;
                }
                tick.tick().await;
                // Never block the feeder for long on a full pipeline.
                match tokio::time::timeout(Duration::from_millis(500), source.push(task, "test"))
                    .await
                {
                    Ok(true) => n += 1,
                    Ok(false) => break,
                    Err(_) => {}
                }
            }
            n
        }));
    }

    /// URL tasks for `n` distinct simulated articles across all domains.
    fn url_tasks(&self, n: usize) -> Vec<Task> {
        self.sim
            .corpus()
            .article_urls(self.sim.addr().port(), n)
            .into_iter()
            .map(|url| Task::Url { url, ts_ms: None })
            .collect()
    }

    fn report(&self) -> ControllerReport {
        self.report.lock().unwrap().clone()
    }

    fn records(&self) -> Vec<Record> {
        freshet::control::audit::read_records(self.state.audit.path()).unwrap()
    }

    async fn stop(mut self) -> (ControllerReport, Vec<Record>) {
        self.feeding.store(false, Ordering::SeqCst);
        if let Some(f) = self.feeder.take() {
            let _ = f.await;
        }
        let _ = self.stop_controller.take().map(|s| s.send(()));
        if let Some(c) = self.controller.take() {
            c.await.unwrap();
        }
        let report = self.report();
        let records = self.records();
        let verified = freshet::control::audit::verify(self.state.audit.path())
            .expect("the audit log verifies");
        assert_eq!(verified.records, records.len() as u64);
        let _ = self.runtime.drain().await;
        self.sim.shutdown().await;
        (report, records)
    }
}

/// The windows as lines, for failure messages.
fn windows(report: &ControllerReport) -> String {
    report
        .recent
        .iter()
        .map(|o| {
            let st = |n: &str| {
                let s = o.stage(n);
                format!(
                    "{n}: tp {:.1} err {:?} retries {:?} sat {:.2} q {:.1}",
                    s.throughput, s.errors, s.retries, s.saturation, s.queue_depth
                )
            };
            format!(
                "\n  v{} goodput {:.1} err {:.3} quality {:.2} ({} pages) | {} | {}",
                o.knobs_version,
                o.goodput,
                o.error_rate,
                o.quality.overall.mean,
                o.quality.overall.pages,
                st("search"),
                st("extract")
            )
        })
        .collect()
}

fn now_ms() -> u64 {
    freshet::dataplane::task::now_ms()
}

fn slot_changes(records: &[Record], knob: &str) -> Vec<(u64, f64, f64)> {
    records
        .iter()
        .filter(|r| matches!(r.kind, EventKind::Applied | EventKind::RolledBack))
        .flat_map(|r| {
            r.event
                .diff
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|d| d["knob"] == knob)
                .map(|d| {
                    (
                        r.time_ms,
                        d["from"].as_f64().unwrap_or(0.0),
                        d["to"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Distinct queries (repeated ones would find unchanged pages and index nothing).
fn keywords() -> Vec<Task> {
    const WORDS: [&str; 12] = [
        "heat pumps",
        "council budget",
        "river flooding",
        "school meals",
        "bridge repairs",
        "museum opening",
        "energy prices",
        "harbour expansion",
        "library hours",
        "festival tickets",
        "tram lines",
        "water quality",
    ];
    (0..2000)
        .map(|i| Task::Keyword {
            query: format!("{} {} {}", WORDS[i % 12], WORDS[(i / 12) % 12], i),
            ts_ms: None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_drop_backs_off_within_three_intervals() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::start(
        "scenarios/rate-limit-drop.toml",
        "",
        Arc::new(Heuristic),
        ControllerMode::Auto,
    )
    .await;
    rig.feed(keywords(), 8.0);
    tokio::time::sleep(INTERVAL * 5).await;
    let before = rig.runtime.live.load().knobs.search.slots;
    rig.sim.set_phase(1);
    let dropped_at = now_ms();
    tokio::time::sleep(INTERVAL * 12).await;
    let (report, records) = rig.stop().await;
    let cuts: Vec<_> = slot_changes(&records, "search.slots")
        .into_iter()
        .filter(|(t, from, to)| *t >= dropped_at && to < from)
        .collect();
    let first = cuts
        .first()
        .unwrap_or_else(|| panic!("no search.slots cut after the drop; records: {records:#?}"));
    // The drop is seen at the end of the window it falls in (up to one
    // interval), then up to three decisions; plus a little scheduling slack.
    assert!(
        first.0 - dropped_at <= 4 * INTERVAL.as_millis() as u64 + 300,
        "first cut {} ms after the drop (slots {before} before): {cuts:?}; {}",
        first.0 - dropped_at,
        windows(&report)
    );
    let last: Vec<_> = report.recent.iter().rev().take(3).collect();
    let search_errors = last
        .iter()
        .map(|o| o.stage("search").error_rate)
        .fold(0.0, f64::max);
    assert!(
        search_errors < 0.02,
        "search error rate in the last windows {search_errors:.3}: {:#?}",
        last.iter().map(|o| o.stage("search")).collect::<Vec<_>>()
    );
    assert!(rig_slots_at_most(&records, "search.slots", 2.0), "{cuts:?}");
}

fn rig_slots_at_most(records: &[Record], knob: &str, max: f64) -> bool {
    slot_changes(records, knob)
        .last()
        .is_some_and(|(_, _, to)| *to <= max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_heavy_shift_escalates_render_mode_and_quality_recovers() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::start(
        "scenarios/js-heavy-shift.toml",
        "[global]\ncredits_budget_per_minute = 20000\n",
        Arc::new(Heuristic),
        ControllerMode::Auto,
    )
    .await;
    let urls = rig.url_tasks(2000);
    rig.feed(urls, 24.0);
    tokio::time::sleep(INTERVAL * 3).await;
    rig.sim.set_phase(1);
    tokio::time::sleep(INTERVAL * 14).await;
    let (report, records) = rig.stop().await;
    let escalated: Vec<String> = records
        .iter()
        .filter(|r| r.kind == EventKind::Applied)
        .flat_map(|r| r.event.diff.as_array().cloned().unwrap_or_default())
        .filter(|d| d["knob"] == "extract.render_overrides")
        .flat_map(|d| {
            d["to"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    let shifted = [
        "techdaily.sim.test",
        "marketpulse.sim.test",
        "devdocs.sim.test",
        "citybeat.sim.test",
        "privacywatch.sim.test",
    ];
    let hits = shifted
        .iter()
        .filter(|d| escalated.iter().any(|e| e == *d))
        .count();
    assert!(
        hits >= 4,
        "escalated {escalated:?}, expected the shifted domains; {}",
        windows(&report)
    );
    assert!(
        escalated.iter().all(|d| shifted.contains(&d.as_str())),
        "only the shifted domains escalate: {escalated:?}"
    );
    // Quality: the worst window during the shift vs the last windows.
    let q: Vec<f64> = report
        .recent
        .iter()
        .filter(|o| o.quality.overall.pages > 0)
        .map(|o| o.quality.overall.mean)
        .collect();
    let worst = q.iter().cloned().fold(1.0, f64::min);
    let end = q.iter().rev().take(3).sum::<f64>() / 3.0;
    assert!(
        end > worst + 0.1 && end > 0.7,
        "quality recovers: worst {worst:.2}, last windows {end:.2}: {q:?}"
    );
}

/// A policy that makes one harmful change, "expected" to help: every page
/// through the slow, rate-limited remote renderer.
#[derive(Debug, Default)]
struct Saboteur(AtomicBool);

#[async_trait::async_trait]
impl Policy for Saboteur {
    fn name(&self) -> &str {
        "saboteur"
    }

    async fn propose(&self, ctx: &Context<'_>) -> Result<Proposal, PolicyError> {
        if ctx.observation.goodput <= 0.0 || self.0.swap(true, Ordering::SeqCst) {
            return Ok(Proposal::none("nothing"));
        }
        Ok(Proposal {
            changes: vec![Change {
                knob: "extract.render_mode".into(),
                value: serde_json::json!("remote"),
                reason: "test: a harmful change".into(),
            }],
            rationale: "render everything remotely".into(),
            expected_gain: Some(0.1),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_lowers_goodput_is_rolled_back() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::start(
        "scenarios/steady.toml",
        "[global]\ncredits_budget_per_minute = 100000\n",
        Arc::new(Saboteur::default()),
        ControllerMode::Auto,
    )
    .await;
    let urls = rig.url_tasks(3000);
    rig.feed(urls, 30.0);
    tokio::time::sleep(INTERVAL * 9).await;
    let mode = rig.runtime.live.load().knobs.extract.render_mode;
    let (report, records) = rig.stop().await;
    let applied = records
        .iter()
        .find(|r| r.kind == EventKind::Applied)
        .unwrap_or_else(|| {
            panic!(
                "the harmful change was not applied: {records:#?} {}",
                windows(&report)
            )
        });
    let rolled = records
        .iter()
        .find(|r| r.kind == EventKind::RolledBack)
        .unwrap_or_else(|| {
            panic!(
                "no rollback: {:?} {}",
                records
                    .iter()
                    .map(|r| (r.kind, r.event.detail.clone(), r.event.verdict.to_string()))
                    .collect::<Vec<_>>(),
                windows(&report)
            )
        });
    assert!(rolled.seq > applied.seq);
    assert!(rolled.event.detail.contains("goodput fell"), "{rolled:?}");
    assert_eq!(mode, freshet::knobs::RenderMode::Http, "back to plain HTTP");
    assert_eq!(report.rolled_back, 1);
    assert_eq!(report.applied, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_records_proposals_but_never_applies() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::start(
        "scenarios/steady.toml",
        "",
        Arc::new(Saboteur::default()),
        ControllerMode::Shadow,
    )
    .await;
    let urls = rig.url_tasks(500);
    rig.feed(urls, 20.0);
    tokio::time::sleep(INTERVAL * 4).await;
    let version = rig.runtime.live.version();
    let (report, records) = rig.stop().await;
    assert_eq!(version, 1, "no swap in shadow mode");
    assert!(records.iter().any(|r| r.kind == EventKind::Proposal));
    assert!(!records
        .iter()
        .any(|r| matches!(r.kind, EventKind::Applied | EventKind::RolledBack)));
    assert_eq!(report.applied, 0);
}
