//! Circuits: an upstream outage holds work instead of dead-lettering it.
//!
//! Each stage that talks to one upstream of its own (search: the provider;
//! embed: the embedder; index: the vector store) has a [`Circuit`]. Failed
//! attempts of an *outage* class (`ErrorClass::is_outage`: timeouts,
//! refused or broken connections, 5xx) count as
//! consecutive failures (a 429 does not: the upstream is up and paces the
//! item through `Retry-After` within its retry budget); [`TRIP_AFTER`] of them open the circuit. While it
//! is open, the stage's work waits in [`Circuit::pass`] instead of spending
//! its retry budget: one caller at a time probes the upstream (half-open,
//! with a longer timeout: `retry::PROBE_TIMEOUT_FACTOR`),
//! the first after [`FIRST_PROBE`], then with a doubling delay up to
//! [`MAX_PROBE`], so the stage resumes within [`MAX_PROBE`] plus one attempt
//! of the upstream coming back. Any answer that is not an outage (success,
//! or a content error such as a 400 for one input) closes the circuit.
//!
//! A circuit also carries the upstream's [`Pace`]: a 429 is not an outage,
//! but it pauses every request to the upstream, not only the one it
//! answered (`crate::dataplane::pace`).
//!
//! Work that waits keeps its source share unfinished, so the source holds
//! too: Kafka stops at `source.max_in_flight` and pauses its partitions
//! (nothing is committed past the waiting work), `POST /v1/ingest` answers
//! 503 with `Retry-After`, `/readyz` reports the stage as degraded, and the
//! controller changes nothing of an open stage. Only content failures are
//! dead-lettered: an item whose upstream keeps failing it while the same
//! upstream serves other work is poison, not an outage, and goes to the
//! dead letters after its retry budget (see `retry::Retry`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::dataplane::pace::Pace;
use crate::dataplane::Stage;

/// Consecutive outage-class failures that open a circuit.
pub const TRIP_AFTER: u32 = 3;

/// The first probe of an open circuit, after it opened.
pub const FIRST_PROBE: Duration = Duration::from_millis(250);

/// The longest delay between probes of an open circuit.
pub const MAX_PROBE: Duration = Duration::from_secs(2);

/// One upstream's circuit.
#[derive(Debug)]
pub struct Circuit {
    stage: Stage,
    state: Mutex<State>,
    /// Bumped on every change a waiter may care about (opened, closed, a
    /// probe settled).
    changed: tokio::sync::watch::Sender<u64>,
    /// Attempts that reached the upstream and were not outages.
    answered: AtomicU64,
    /// The upstream's "slow down" (429), shared by every request to it.
    pace: Pace,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open: Option<Open>,
    opened_total: u64,
}

#[derive(Debug)]
struct Open {
    since: Instant,
    probe_at: Instant,
    delay: Duration,
    probing: bool,
    last_error: String,
}

/// What [`Circuit::pass`] lets a caller do.
#[derive(Debug)]
pub enum Pass<'a> {
    /// The circuit is closed: go.
    Closed,
    /// The circuit is open and this caller probes the upstream; settle it
    /// with [`Circuit::succeeded`] or [`Circuit::failed`] (dropping it
    /// unsettled, e.g. when the work is cancelled, lets another probe).
    Probe(ProbeGuard<'a>),
}

/// The right to probe an open circuit.
#[derive(Debug)]
pub struct ProbeGuard<'a> {
    circuit: &'a Circuit,
    settled: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let mut st = self.circuit.lock();
            if let Some(open) = st.open.as_mut() {
                open.probing = false;
            }
            drop(st);
            self.circuit.bump();
        }
    }
}

/// A circuit's state, for `/readyz`, the controller and status tools.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitStatus {
    /// The stage.
    pub stage: Stage,
    /// Whether work of the stage is held.
    pub open: bool,
    /// How long it has been open.
    pub open_for_ms: u64,
    /// Consecutive outage-class failures.
    pub failures: u32,
    /// The last failure, when open.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// Times it opened since the process started.
    pub opened_total: u64,
}

impl Circuit {
    /// A closed circuit for `stage`'s upstream.
    pub fn new(stage: Stage) -> Circuit {
        // The series exists (at 0) from the start, so an alert or a
        // dashboard tells "closed" from "never reported".
        metrics::gauge!(crate::metrics::CIRCUIT_OPEN, "stage" => stage.as_str()).increment(0.0);
        Circuit {
            stage,
            state: Mutex::new(State::default()),
            changed: tokio::sync::watch::Sender::new(0),
            answered: AtomicU64::new(0),
            pace: Pace::new(),
        }
    }

    /// The upstream's pace: requests that go through the circuit also
    /// wait out a "slow down" it sent (`retry::Retry::through`).
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether the circuit is open.
    pub fn is_open(&self) -> bool {
        self.lock().open.is_some()
    }

    /// Attempts that reached the upstream and were not outages: an item
    /// that keeps failing while this grows is failing on its own content.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// Waits while the circuit is open, until it closes or this caller's
    /// turn to probe comes.
    pub async fn pass(&self) -> Pass<'_> {
        loop {
            let mut changed = self.changed.subscribe();
            let wake_at = {
                let mut st = self.lock();
                match st.open.as_mut() {
                    None => return Pass::Closed,
                    Some(open) if !open.probing && Instant::now() >= open.probe_at => {
                        open.probing = true;
                        return Pass::Probe(ProbeGuard {
                            circuit: self,
                            settled: false,
                        });
                    }
                    Some(open) if open.probing => None,
                    Some(open) => Some(open.probe_at),
                }
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        _ = changed.changed() => {}
                    }
                }
                None => {
                    let _ = changed.changed().await;
                }
            }
        }
    }

    /// An attempt got an answer that is not an outage: the circuit closes.
    pub fn succeeded(&self, pass: Pass<'_>) {
        self.answered.fetch_add(1, Ordering::AcqRel);
        let closed = {
            let mut st = self.lock();
            st.failures = 0;
            st.open.take()
        };
        if let Pass::Probe(mut guard) = pass {
            guard.settled = true;
        }
        if let Some(open) = closed {
            tracing::info!(
                stage = self.stage.as_str(),
                open_for_ms = open.since.elapsed().as_millis() as u64,
                "upstream is back: circuit closed, held work resumes"
            );
            metrics::gauge!(crate::metrics::CIRCUIT_OPEN, "stage" => self.stage.as_str()).set(0.0);
            self.bump();
        }
    }

    /// An attempt failed with an outage class (`class`: its `error_type`
    /// label): counts towards opening the circuit, or, for a probe, keeps it
    /// open with a longer delay.
    pub fn failed(&self, pass: Pass<'_>, class: &'static str, why: &str) {
        let now = Instant::now();
        let opened = {
            let mut st = self.lock();
            st.failures = st.failures.saturating_add(1);
            let failures = st.failures;
            match st.open.as_mut() {
                Some(open) => {
                    if matches!(pass, Pass::Probe(_)) {
                        open.probing = false;
                        open.delay = (open.delay * 2).min(MAX_PROBE);
                        open.probe_at = now + open.delay;
                    }
                    open.last_error = why.chars().take(300).collect();
                    false
                }
                None if failures >= TRIP_AFTER => {
                    st.open = Some(Open {
                        since: now,
                        probe_at: now + FIRST_PROBE,
                        delay: FIRST_PROBE,
                        probing: false,
                        last_error: why.chars().take(300).collect(),
                    });
                    st.opened_total += 1;
                    true
                }
                None => false,
            }
        };
        if let Pass::Probe(mut guard) = pass {
            guard.settled = true;
        }
        if opened {
            tracing::warn!(
                stage = self.stage.as_str(),
                error_type = class,
                error = why,
                "upstream failing: circuit open, the stage's work is held (not dead-lettered) until it answers again"
            );
            metrics::gauge!(crate::metrics::CIRCUIT_OPEN, "stage" => self.stage.as_str()).set(1.0);
            metrics::counter!(crate::metrics::CIRCUIT_OPENED_TOTAL, "stage" => self.stage.as_str())
                .increment(1);
        }
        self.bump();
    }

    /// The circuit's state now.
    pub fn status(&self) -> CircuitStatus {
        let st = self.lock();
        CircuitStatus {
            stage: self.stage,
            open: st.open.is_some(),
            open_for_ms: st
                .open
                .as_ref()
                .map_or(0, |o| o.since.elapsed().as_millis() as u64),
            failures: st.failures,
            last_error: st
                .open
                .as_ref()
                .map(|o| o.last_error.clone())
                .unwrap_or_default(),
            opened_total: st.opened_total,
        }
    }
}

/// The circuits of one pipeline: search (with a provider), embed, index.
#[derive(Debug, Clone)]
pub struct Circuits {
    /// The search provider's, when there is one.
    pub search: Option<Arc<Circuit>>,
    /// The embedder's.
    pub embed: Arc<Circuit>,
    /// The vector store's.
    pub index: Arc<Circuit>,
}

impl Default for Circuits {
    fn default() -> Self {
        Circuits {
            search: None,
            embed: Arc::new(Circuit::new(Stage::Embed)),
            index: Arc::new(Circuit::new(Stage::Index)),
        }
    }
}

impl Circuits {
    /// Every circuit.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Circuit>> {
        self.search.iter().chain([&self.embed, &self.index])
    }

    /// The stages whose circuit is open.
    pub fn open(&self) -> Vec<Stage> {
        self.all()
            .filter(|c| c.is_open())
            .map(|c| c.stage())
            .collect()
    }

    /// Every circuit's state.
    pub fn status(&self) -> Vec<CircuitStatus> {
        self.all().map(|c| c.status()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_outages_probes_one_at_a_time_and_closes() {
        let c = Circuit::new(Stage::Embed);
        for _ in 0..TRIP_AFTER - 1 {
            let pass = c.pass().await;
            assert!(matches!(pass, Pass::Closed));
            c.failed(pass, "connect", "refused");
        }
        assert!(!c.is_open());
        c.failed(c.pass().await, "connect", "refused");
        assert!(c.is_open());
        assert_eq!(c.status().last_error, "refused");

        // Two waiters: one probes after FIRST_PROBE, the other keeps waiting.
        let start = Instant::now();
        let probe = c.pass().await;
        assert!(matches!(probe, Pass::Probe(_)));
        assert!(start.elapsed() >= FIRST_PROBE);
        let other = tokio::time::timeout(Duration::from_secs(10), c.pass()).await;
        assert!(other.is_err(), "a second probe while one runs");
        // The probe fails: the next one waits twice as long.
        c.failed(probe, "timeout", "slow");
        let before = Instant::now();
        let probe = c.pass().await;
        assert!(
            before.elapsed() >= FIRST_PROBE * 2,
            "{:?}",
            before.elapsed()
        );
        // A probe dropped unsettled (cancelled work) lets another probe.
        drop(probe);
        let probe = tokio::time::timeout(Duration::from_millis(1), c.pass())
            .await
            .expect("another probe at once");
        assert!(matches!(probe, Pass::Probe(_)));
        // It gets an answer: closed, and every waiter goes.
        let waiter = async { matches!(c.pass().await, Pass::Closed) };
        let settle = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            c.succeeded(probe);
        };
        let (closed, ()) = tokio::join!(waiter, settle);
        assert!(closed);
        assert!(!c.is_open());
        assert_eq!(c.status().opened_total, 1);
        assert_eq!(c.answered(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_never_wait_longer_than_max_probe() {
        let c = Circuit::new(Stage::Index);
        for _ in 0..TRIP_AFTER {
            c.failed(c.pass().await, "upstream", "503");
        }
        for _ in 0..10 {
            let p = c.pass().await;
            c.failed(p, "upstream", "503");
        }
        let before = Instant::now();
        let p = c.pass().await;
        assert!(before.elapsed() <= MAX_PROBE, "{:?}", before.elapsed());
        c.succeeded(p);
        assert!(matches!(c.pass().await, Pass::Closed));
    }

    #[test]
    fn a_success_resets_the_count() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = Circuit::new(Stage::Search);
            for _ in 0..10 {
                c.failed(c.pass().await, "timeout", "t");
                c.failed(c.pass().await, "timeout", "t");
                c.succeeded(c.pass().await);
            }
            assert!(!c.is_open());
        });
    }
}
