//! The search stage: a keyword becomes ranked URLs.
//!
//! A [`SearchProvider`] performs one attempt; [`SearchStage`] adds what every
//! provider needs: a live-resizable slot limit (`search.slots`), retries with
//! the live retry knobs, and metrics.

pub mod serppost;
mod stage;

pub(crate) use stage::run;
pub use stage::SearchStage;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dataplane::retry::{Classify, ErrorClass};

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
