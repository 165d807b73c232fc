//! The extract stage: a URL becomes clean markdown of its main content and a
//! quality score.
//!
//! Per page: read the live knobs once, pick the render mode for the page's
//! domain, take an `extract.slots` slot, then fetch (or render remotely) with
//! retries and extract the main content off the async runtime. A page that
//! decodes but holds no main content (score under [`NO_CONTENT_SCORE`]: JS
//! shells, error pages, empty bodies) fails as `no_content`, and the error
//! still carries the page and its score for debugging and render escalation.

pub mod batch;
pub mod browser;
pub mod content;
pub mod corpus;
pub mod depth;
pub mod fetch;
pub mod quality;
pub mod render;
pub mod shell;
mod stage;

pub(crate) use stage::run;
pub use stage::ExtractStage;

use std::time::Duration;

use serde::Serialize;

use crate::dataplane::retry::{Classify, ErrorClass};
use crate::dataplane::task::now_ms;
use crate::knobs::RenderMode;
pub use content::Method;
pub use quality::Quality;

/// Pages scoring below this have no main content and fail as `no_content`.
pub const NO_CONTENT_SCORE: f64 = 0.2;

/// One extracted page.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The URL asked for.
    pub url: String,
    /// The URL after redirects.
    pub final_url: String,
    /// Host of `final_url`.
    pub domain: String,
    /// Page title.
    pub title: String,
    /// Main content as markdown.
    pub markdown: String,
    /// Quality score and its parts.
    pub quality: Quality,
    /// Render mode used.
    pub render_mode: RenderMode,
    /// Extractor used.
    pub method: Method,
    /// rs-trafilatura's own confidence, when it ran.
    pub trafilatura_confidence: Option<f64>,
    /// Unix milliseconds when the page was fetched.
    pub fetched_at_ms: u64,
    /// Bytes of HTML (0 for remote renders).
    pub html_bytes: usize,
    /// Where the time went.
    pub timings: Timings,
}

/// Time spent per step, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Timings {
    /// Waiting for a slot.
    pub queue_ms: f64,
    /// Fetching or remote rendering, retries included.
    pub fetch_ms: f64,
    /// Main-content extraction.
    pub extract_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// A failed extraction.
#[derive(Debug, Clone, thiserror::Error)]
#[error("extract {url} failed ({class}): {message}")]
pub struct ExtractError {
    /// Failure class.
    pub class: ErrorClass,
    /// The URL.
    pub url: String,
    /// What happened.
    pub message: String,
    /// The upstream's Retry-After.
    pub retry_after: Option<Duration>,
    /// The page as far as it was extracted (for `no_content`).
    pub page: Option<Box<Page>>,
}

impl ExtractError {
    /// An error of `class` for `url`.
    pub fn new(class: ErrorClass, url: &str, message: String) -> ExtractError {
        ExtractError {
            class,
            url: url.to_string(),
            message,
            retry_after: None,
            page: None,
        }
    }
}

impl Classify for ExtractError {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    fn timed_out(after: Duration) -> Self {
        ExtractError::new(
            ErrorClass::Timeout,
            "",
            format!("no complete page within {} ms", after.as_millis()),
        )
    }
}

/// Runs main-content extraction on HTML already in hand (no network).
pub fn extract_html(html: &str, url: &str) -> Page {
    let out = content::extract(html, Some(url));
    let domain = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    Page {
        url: url.to_string(),
        final_url: url.to_string(),
        domain,
        title: out.title,
        markdown: out.markdown,
        quality: out.quality,
        render_mode: RenderMode::Http,
        method: out.method,
        trafilatura_confidence: out.trafilatura_confidence,
        fetched_at_ms: now_ms(),
        html_bytes: html.len(),
        timings: Timings {
            extract_ms: out.micros as f64 / 1e3,
            total_ms: out.micros as f64 / 1e3,
            ..Default::default()
        },
    }
}
