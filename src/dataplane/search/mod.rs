//! The search stage: a keyword becomes ranked URLs.
//!
//! A [`SearchProvider`] performs one attempt; [`SearchStage`] adds what every
//! provider needs: a live-resizable slot limit (`search.slots`), retries with
//! the live retry knobs, and metrics.

pub mod serppost;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dataplane::retry::{self, Classify, ErrorClass};
use crate::dataplane::Stage;
use crate::live::{LiveConfig, SlotPermit, Slots};
use crate::metrics;

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The result's URL.
    pub url: String,
    /// The result's title.
    #[serde(default)]
    pub title: String,
    /// The snippet the engine showed.
    #[serde(default)]
    pub snippet: String,
}

/// A failed search or remote render attempt.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider} {endpoint} failed ({class}): {message}")]
pub struct ProviderError {
    /// Provider name.
    pub provider: &'static str,
    /// `search` or `render`.
    pub endpoint: &'static str,
    /// Failure class.
    pub class: ErrorClass,
    /// What happened; never contains the API key.
    pub message: String,
    /// The upstream's Retry-After.
    pub retry_after: Option<Duration>,
}

impl Classify for ProviderError {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    fn timed_out(after: Duration) -> Self {
        ProviderError {
            provider: "provider",
            endpoint: "request",
            class: ErrorClass::Timeout,
            message: format!("no answer within {} ms", after.as_millis()),
            retry_after: None,
        }
    }
}

/// A search API. Implementations make exactly one attempt per call.
#[async_trait::async_trait]
pub trait SearchProvider: Send + Sync + std::fmt::Debug {
    /// Provider name for metrics and logs.
    fn name(&self) -> &'static str;
    /// Runs one search attempt.
    async fn search(&self, query: &str) -> Result<Vec<SearchHit>, ProviderError>;
    /// Credits spent so far by this provider instance.
    fn credits_used(&self) -> u64;
}

/// The search stage runtime.
#[derive(Debug)]
pub struct SearchStage {
    provider: Arc<dyn SearchProvider>,
    live: Arc<LiveConfig>,
    slots: Arc<Slots>,
    _follow: tokio::task::JoinHandle<()>,
}

impl SearchStage {
    /// A stage whose slot count follows `search.slots`.
    pub fn new(provider: Arc<dyn SearchProvider>, live: Arc<LiveConfig>) -> SearchStage {
        let slots = Arc::new(Slots::new(live.load().knobs.search.slots as usize));
        let follow = slots.follow(&live, |k| k.search.slots);
        SearchStage {
            provider,
            live,
            slots,
            _follow: follow,
        }
    }

    /// The stage's slot limit (for observation).
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Searches `query` with retries; counts and logs the outcome.
    pub async fn search(&self, query: &str) -> Result<Vec<SearchHit>, ProviderError> {
        self.search_permitted(query, None).await
    }

    /// Like [`search`](Self::search), holding a slot the caller already took.
    pub async fn search_permitted(
        &self,
        query: &str,
        permit: Option<SlotPermit>,
    ) -> Result<Vec<SearchHit>, ProviderError> {
        let query = query.trim();
        if query.is_empty() || query.len() > 2_048 {
            let err = ProviderError {
                provider: self.provider.name(),
                endpoint: "search",
                class: ErrorClass::Invalid,
                message: format!("query must be 1..=2048 bytes, got {}", query.len()),
                retry_after: None,
            };
            metrics::record_error("search", err.class.as_str(), &err);
            return Err(err);
        }
        let _permit = match permit {
            Some(p) => p,
            None => self.slots.acquire().await,
        };
        let stage = Stage::Search.as_str();
        metrics::counter!(metrics::STAGE_REQUESTS_TOTAL, "stage" => stage).increment(1);
        let in_flight = metrics::InFlight::new(stage);
        metrics::gauge!(metrics::STAGE_SLOTS, "stage" => stage).set(self.slots.limit() as f64);
        let started = Instant::now();
        let result = retry::retry(&self.live, Stage::Search, |_| self.provider.search(query)).await;
        drop(in_flight);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!(metrics::STAGE_LATENCY_SECONDS, "stage" => stage, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            metrics::record_error(stage, err.class.as_str(), err);
        }
        result
    }
}
