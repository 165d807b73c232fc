//! Retries: exponential backoff with full jitter that honours `Retry-After`.
//!
//! Every failure is classified ([`ErrorClass`]); only transient classes are
//! retried. The retry knobs (`<stage>.retry.*`) and the per-attempt timeout
//! (`<stage>.timeout_ms`) are read from the live snapshot **on every attempt**,
//! so an operator or the controller can widen or cut a retry budget while a
//! request is already retrying.
//!
//! Why not `backon`/`tokio-retry`: both fix the backoff schedule when the
//! retry starts; freshet must re-read live knobs per attempt and take the
//! delay floor from the failed response (`Retry-After`), which is simpler to
//! state directly than to bend a builder into.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use crate::dataplane::circuit::{Circuit, Pass};
use crate::dataplane::pace::Pace;
use crate::dataplane::Stage;
use crate::knobs::{Knobs, RetryKnobs};
use crate::live::{LiveConfig, SlotPermit, Slots};
use crate::metrics;

/// What kind of failure happened; decides whether to retry and labels metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// No complete answer within the per-attempt timeout.
    Timeout,
    /// The upstream said 429 (or 503 with Retry-After): slow down.
    RateLimited,
    /// The upstream answered 5xx.
    Upstream,
    /// Could not connect.
    Connect,
    /// The connection broke mid-request.
    Reset,
    /// The body is larger than the size cap.
    TooLarge,
    /// Too many redirects, or a redirect loop.
    Redirect,
    /// The bytes could not be decoded as text.
    Decode,
    /// The response is not HTML (PDF, image, …).
    NotHtml,
    /// The page holds no main content (JS shell, error page, empty).
    NoContent,
    /// Credentials were refused (401/403).
    Auth,
    /// 404 / 410.
    NotFound,
    /// Another 4xx: the request itself is wrong.
    Client,
    /// The upstream's answer did not parse.
    Parse,
    /// The input is invalid (bad URL, bad task).
    Invalid,
    /// The outbound address guard refused the address (loopback, private,
    /// link-local, …; see `crate::netguard`) or the scheme.
    Blocked,
}

impl ErrorClass {
    /// Whether another attempt may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Timeout
                | ErrorClass::RateLimited
                | ErrorClass::Upstream
                | ErrorClass::Connect
                | ErrorClass::Reset
        )
    }

    /// Whether the failure says the upstream is unavailable (so every
    /// item would fail alike) rather than that this item is bad: a stage
    /// with a circuit holds such work instead of dead-lettering it
    /// ([`crate::dataplane::circuit`]). A 429 is not: the upstream is up and
    /// paces the item (`Retry-After`) within its budget. Refused
    /// credentials are not either: they fail at once, as before, so a
    /// wrong key is a clear error (and a replayable dead letter) rather
    /// than a stage that waits forever.
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            ErrorClass::Timeout | ErrorClass::Upstream | ErrorClass::Connect | ErrorClass::Reset
        )
    }

    /// The `error_type` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Upstream => "upstream",
            ErrorClass::Connect => "connect",
            ErrorClass::Reset => "reset",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::Redirect => "redirect",
            ErrorClass::Decode => "decode",
            ErrorClass::NotHtml => "not_html",
            ErrorClass::NoContent => "no_content",
            ErrorClass::Auth => "auth",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Client => "client",
            ErrorClass::Parse => "parse",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Blocked => "blocked",
        }
    }

    /// The class of an HTTP status that is not a success.
    pub fn from_status(status: u16) -> ErrorClass {
        match status {
            429 => ErrorClass::RateLimited,
            401 | 403 => ErrorClass::Auth,
            404 | 410 => ErrorClass::NotFound,
            408 => ErrorClass::Timeout,
            500..=599 => ErrorClass::Upstream,
            _ => ErrorClass::Client,
        }
    }

    /// The class of a reqwest transport error.
    pub fn from_reqwest(err: &reqwest::Error) -> ErrorClass {
        if err.is_timeout() {
            ErrorClass::Timeout
        } else if err.is_redirect() {
            ErrorClass::Redirect
        } else if err.is_connect() {
            ErrorClass::Connect
        } else if err.is_decode() {
            ErrorClass::Decode
        } else if let Some(status) = err.status() {
            ErrorClass::from_status(status.as_u16())
        } else if err.is_body() || err.is_request() {
            ErrorClass::Reset
        } else {
            ErrorClass::Upstream
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a retryable operation's error must tell the retry loop.
pub trait Classify {
    /// The failure's class.
    fn class(&self) -> ErrorClass;
    /// The upstream's `Retry-After`, when it sent one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// An error for an attempt cut off by the per-attempt timeout.
    fn timed_out(after: Duration) -> Self;
}

/// A `Retry-After` longer than this ends the retries at once (the item is
/// dead-lettered and can be replayed later). A shorter one is honoured up
/// to the stage's per-attempt timeout (`<stage>.timeout_ms`), and waited
/// without holding the stage's slot ([`retry_holding`]).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Parses a `Retry-After` header value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The backoff before attempt `next_attempt` (2 = first retry): a random
/// delay in `[0, min(max_ms, base_ms * 2^(next_attempt - 2))]`, never less
/// than `retry_after`.
pub fn backoff(
    retry: &RetryKnobs,
    next_attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exp = next_attempt.saturating_sub(2).min(30);
    let ceiling = retry
        .base_ms
        .saturating_mul(1u64 << exp)
        .min(retry.max_ms)
        .max(1);
    let jitter = Duration::from_millis(rng.random_range(0..=ceiling));
    match retry_after {
        Some(floor) => jitter.max(floor),
        None => jitter,
    }
}

/// One attempt's context, given to the operation.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// The per-attempt timeout in force for this attempt.
    pub timeout: Duration,
}

fn stage_retry(knobs: &Knobs, stage: Stage) -> (RetryKnobs, Duration) {
    let (retry, timeout_ms) = match stage {
        Stage::Search => (&knobs.search.retry, knobs.search.timeout_ms),
        Stage::Extract => (&knobs.extract.retry, knobs.extract.timeout_ms),
        Stage::Embed => (&knobs.embed.retry, knobs.embed.timeout_ms),
        Stage::Index => (&knobs.index.retry, knobs.index.timeout_ms),
        Stage::Transform | Stage::Source => (&knobs.index.retry, knobs.index.timeout_ms),
    };
    (retry.clone(), Duration::from_millis(timeout_ms))
}

/// Runs `op` until it succeeds, fails with a non-retryable error, or the
/// stage's retry budget (read live before every attempt) is spent. Each
/// attempt is bounded by the stage's live `timeout_ms`, and so is the wait a
/// `Retry-After` asks for. Retries are counted in
/// `freshet_stage_retries_total`. [`Retry`] adds a slot to give back while
/// waiting and a circuit to hold on.
pub async fn retry<T, E, F, Fut>(live: &LiveConfig, stage: Stage, op: F) -> Result<T, E>
where
    E: Classify + std::fmt::Display,
    F: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    Retry::new(live, stage).run(op).await
}

/// A probe of an open circuit gets this many times the stage's timeout...
pub const PROBE_TIMEOUT_FACTOR: u32 = 4;

/// ...and at least this long.
pub const MIN_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stage slot held by the caller of a [`Retry`]: given back while the
/// retry waits, taken again before the next attempt.
pub type HeldSlot<'a> = (&'a Slots, &'a mut Option<SlotPermit>);

/// One retried operation of a stage: [`retry`] with options.
pub struct Retry<'a> {
    live: &'a LiveConfig,
    stage: Stage,
    slot: Option<HeldSlot<'a>>,
    circuit: Option<&'a Circuit>,
    pace: Option<&'a Pace>,
}

impl<'a> Retry<'a> {
    /// Retries under `stage`'s live retry knobs.
    pub fn new(live: &'a LiveConfig, stage: Stage) -> Retry<'a> {
        Retry {
            live,
            stage,
            slot: None,
            circuit: None,
            pace: None,
        }
    }

    /// Gives `slot` back while waiting between attempts (so an upstream's
    /// `Retry-After` or a long backoff does not keep a slot from other
    /// work) and waits for a slot again before the next attempt.
    pub fn holding(mut self, slot: HeldSlot<'a>) -> Retry<'a> {
        self.slot = Some(slot);
        self
    }

    /// Shares the upstream's `pace`: a rate-limited answer (429) pauses
    /// every request to the upstream, and every attempt waits out a pause
    /// in force before it is sent (giving back the held slot meanwhile).
    pub fn paced_by(mut self, pace: &'a Pace) -> Retry<'a> {
        self.pace = Some(pace);
        self
    }

    /// Gives the held slot back, waits `wait`, and takes a slot again.
    async fn wait_without_slot(&mut self, wait: Duration) {
        if let Some((_, permit)) = self.slot.as_mut() {
            permit.take();
        }
        tokio::time::sleep(wait).await;
        if let Some((slots, permit)) = self.slot.as_mut() {
            **permit = Some(slots.acquire().await);
        }
    }

    /// Goes through the upstream's `circuit`: while it is open, attempts
    /// wait for it (one probes); outage-class failures
    /// ([`ErrorClass::is_outage`]) never spend the retry budget, so the
    /// work is held, not failed. Only an item that keeps failing while the
    /// upstream answers other work (poison) fails after its budget.
    ///
    /// The circuit's [`Pace`] paces the attempts ([`Retry::paced_by`]).
    pub fn through(mut self, circuit: &'a Circuit) -> Retry<'a> {
        self.circuit = Some(circuit);
        self.pace = Some(circuit.pace());
        self
    }

    /// Runs `op` (see [`retry`]).
    pub async fn run<T, E, F, Fut>(mut self, mut op: F) -> Result<T, E>
    where
        E: Classify + std::fmt::Display,
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (live, stage) = (self.live, self.stage);
        let mut number = 1;
        // What the circuit had answered when this item first failed.
        let mut answered_then: Option<u64> = None;
        loop {
            while let Some(wait) = self.pace.and_then(Pace::remaining) {
                tracing::debug!(
                    stage = stage.as_str(),
                    ?wait,
                    "upstream asked to slow down; paced"
                );
                self.wait_without_slot(wait).await;
            }
            let pass = match self.circuit {
                Some(c) => Some(c.pass().await),
                None => None,
            };
            let (_, mut timeout) = stage_retry(&live.load().knobs, stage);
            if matches!(pass, Some(Pass::Probe(_))) {
                // A probe waits longer: an upstream that is slower than
                // the timeout (or a timeout set too short) must be able to
                // close the circuit, or the stage would be held forever.
                timeout = (timeout * PROBE_TIMEOUT_FACTOR).max(MIN_PROBE_TIMEOUT);
            }
            let attempt = Attempt { number, timeout };
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, op(attempt)).await {
                Ok(result) => result,
                Err(_) => Err(E::timed_out(started.elapsed())),
            };
            let err = match result {
                Ok(value) => {
                    if let (Some(c), Some(pass)) = (self.circuit, pass) {
                        c.succeeded(pass);
                    }
                    return Ok(value);
                }
                Err(err) => err,
            };
            let class = err.class();
            // Re-read: the budget may have changed while the attempt ran.
            let (retry_knobs, timeout) = stage_retry(&live.load().knobs, stage);
            let mut held = false;
            if let (Some(c), Some(pass)) = (self.circuit, pass) {
                if class.is_outage() {
                    c.failed(pass, class.as_str(), &err.to_string());
                    let answered = c.answered();
                    let then = *answered_then.get_or_insert(answered);
                    let poison = answered > then && number >= retry_knobs.max_attempts;
                    held = !poison;
                } else {
                    // The upstream answered: it is up, this item is the problem.
                    c.succeeded(pass);
                }
            }
            if !held && (!class.retryable() || number >= retry_knobs.max_attempts) {
                return Err(err);
            }
            let retry_after = err.retry_after();
            if let (Some(pace), ErrorClass::RateLimited) = (self.pace, class) {
                let pause = match retry_after {
                    Some(d) => d.min(timeout),
                    None => backoff(
                        &retry_knobs,
                        number.saturating_add(1),
                        None,
                        &mut rand::rng(),
                    ),
                };
                pace.hold_for(pause);
            }
            if !held && retry_after.is_some_and(|d| d > MAX_RETRY_AFTER) {
                return Err(err);
            }
            let retry_after = retry_after.map(|d| d.min(timeout));
            metrics::counter!(metrics::STAGE_RETRIES_TOTAL, "stage" => stage.as_str(), "error_type" => class.as_str())
                .increment(1);
            number = number.saturating_add(1);
            if held && self.circuit.is_some_and(Circuit::is_open) {
                // The circuit paces the next attempt (a probe).
                tracing::debug!(
                    stage = stage.as_str(),
                    error_type = class.as_str(),
                    "upstream down; held"
                );
                continue;
            }
            let delay = backoff(&retry_knobs, number, retry_after, &mut rand::rng());
            tracing::debug!(
                stage = stage.as_str(),
                error_type = class.as_str(),
                attempt = number - 1,
                ?delay,
                "retrying"
            );
            self.wait_without_slot(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::Change;
    use rand::SeedableRng;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct TestError(ErrorClass, Option<Duration>);

    impl std::fmt::Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }
    impl Classify for TestError {
        fn class(&self) -> ErrorClass {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
        fn timed_out(_: Duration) -> Self {
            TestError(ErrorClass::Timeout, None)
        }
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let knobs = RetryKnobs {
            max_attempts: 5,
            base_ms: 100,
            max_ms: 1_000,
        };
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for attempt in 2..10 {
            for _ in 0..100 {
                let d = backoff(&knobs, attempt, None, &mut rng);
                let ceiling = (100u64 << (attempt - 2)).min(1_000);
                assert!(d <= Duration::from_millis(ceiling), "{attempt}: {d:?}");
            }
        }
        let d = backoff(&knobs, 2, Some(Duration::from_secs(3)), &mut rng);
        assert!(d >= Duration::from_secs(3));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_within_the_live_budget() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        let calls = AtomicU32::new(0);
        let result: Result<(), TestError> = retry(&live, Stage::Search, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(TestError(ErrorClass::Upstream, None)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "default budget is 3 attempts"
        );

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), TestError> = retry(&live, Stage::Search, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(TestError(ErrorClass::Auth, None)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "auth errors are not retried"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn budget_change_during_retries_takes_effect_on_next_attempt() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        let calls = AtomicU32::new(0);
        let result: Result<(), TestError> = retry(&live, Stage::Extract, |attempt| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(attempt.number, n);
            if n == 1 {
                live.patch(&[Change::new("extract.retry.max_attempts", 6)], None)
                    .unwrap();
            }
            async { Err(TestError(ErrorClass::Reset, None)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_at_least_retry_after_and_times_out_attempts() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        live.patch(&[Change::new("search.timeout_ms", 2_500)], None)
            .unwrap();
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let result: Result<u32, TestError> = retry(&live, Stage::Search, |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(TestError(
                        ErrorClass::RateLimited,
                        Some(Duration::from_secs(2)),
                    )),
                    1 => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok(1)
                    }
                    _ => Ok(2),
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert!(
            start.elapsed() >= Duration::from_millis(4_500),
            "2 s of Retry-After, then a 2.5 s attempt cut off: {:?}",
            start.elapsed()
        );
        assert!(start.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped_at_the_timeout_and_waited_without_the_slot() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        live.patch(
            &[
                Change::new("extract.timeout_ms", 1_000),
                Change::new("extract.retry.base_ms", 10),
                Change::new("extract.retry.max_ms", 10),
            ],
            None,
        )
        .unwrap();
        let slots = Slots::new(1);
        let mut permit = Some(slots.acquire().await);
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let free_while_waiting = std::sync::atomic::AtomicBool::new(false);
        let result: Result<u32, TestError> = {
            let slots_ref = &slots;
            let free = &free_while_waiting;
            let waiting = async {
                // Another piece of work takes the slot while the retry waits.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let other = slots_ref.try_acquire();
                free.store(other.is_some(), Ordering::SeqCst);
            };
            let retried = Retry::new(&live, Stage::Extract)
                .holding((&slots, &mut permit))
                .run(|_| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            // `Retry-After: 100`: under MAX_RETRY_AFTER, over the timeout.
                            0 => Err(TestError(
                                ErrorClass::RateLimited,
                                Some(Duration::from_secs(100)),
                            )),
                            _ => Ok(7),
                        }
                    }
                });
            let (result, ()) = tokio::join!(retried, waiting);
            result
        };
        assert_eq!(result.unwrap(), 7);
        assert!(
            start.elapsed() < Duration::from_millis(1_100),
            "waited {:?} for a 100 s Retry-After with a 1 s timeout",
            start.elapsed()
        );
        assert!(
            free_while_waiting.load(Ordering::SeqCst),
            "the slot was held while waiting"
        );
        assert!(permit.is_some(), "the slot is held again after the wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_answer_paces_every_request_to_the_upstream() {
        let live = LiveConfig::new(Knobs::default()).unwrap();
        let pace = Pace::new();
        let start = tokio::time::Instant::now();
        // The first request is told to wait 2 s.
        let first = async {
            let r: Result<(), TestError> = Retry::new(&live, Stage::Search)
                .paced_by(&pace)
                .run(|attempt| async move {
                    match attempt.number {
                        1 => Err(TestError(
                            ErrorClass::RateLimited,
                            Some(Duration::from_secs(2)),
                        )),
                        _ => Ok(()),
                    }
                })
                .await;
            r
        };
        // Another request, started while the first waits, is not sent
        // before the pause ends.
        let second = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sent_at = std::sync::Mutex::new(None);
            let result: Result<(), TestError> = Retry::new(&live, Stage::Search)
                .paced_by(&pace)
                .run(|_| {
                    *sent_at.lock().unwrap() = Some(start.elapsed());
                    async { Ok(()) }
                })
                .await;
            result.unwrap();
            sent_at.into_inner().unwrap().unwrap()
        };
        let (first, sent_at) = tokio::join!(first, second);
        first.unwrap();
        assert!(
            sent_at >= Duration::from_secs(2),
            "sent {sent_at:?} after the start, inside the upstream's 2 s pause"
        );
        // A request of another upstream (its own pace) is not held.
        let other = Pace::new();
        let at = tokio::time::Instant::now();
        pace.hold_for(Duration::from_secs(5));
        let r: Result<(), TestError> = Retry::new(&live, Stage::Search)
            .paced_by(&other)
            .run(|_| async { Ok(()) })
            .await;
        r.unwrap();
        assert_eq!(at.elapsed(), Duration::ZERO);
    }
}
