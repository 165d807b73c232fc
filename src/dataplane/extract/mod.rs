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
pub mod content;
pub mod corpus;
pub mod fetch;
pub mod quality;
pub mod render;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::dataplane::retry::{self, Classify, ErrorClass};
use crate::dataplane::Stage;
use crate::knobs::RenderMode;
use crate::live::{LiveConfig, SlotPermit, Slots};
use crate::metrics;
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// The extract stage runtime.
#[derive(Debug)]
pub struct ExtractStage {
    fetcher: fetch::Fetcher,
    renderer: Arc<dyn render::RemoteRenderer>,
    live: Arc<LiveConfig>,
    slots: Arc<Slots>,
    _follow: tokio::task::JoinHandle<()>,
}

impl ExtractStage {
    /// A stage whose slot count follows `extract.slots`.
    pub fn new(
        fetcher: fetch::Fetcher,
        renderer: Arc<dyn render::RemoteRenderer>,
        live: Arc<LiveConfig>,
    ) -> ExtractStage {
        let slots = Arc::new(Slots::new(live.load().knobs.extract.slots as usize));
        let follow = slots.follow(&live, |k| k.extract.slots);
        ExtractStage {
            fetcher,
            renderer,
            live,
            slots,
            _follow: follow,
        }
    }

    /// The stage's slot limit (for observation).
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Extracts one URL with the render mode the live knobs give its domain.
    pub async fn extract(&self, url: &str) -> Result<Page, ExtractError> {
        self.extract_permitted(url, None, None).await
    }

    /// Extracts one URL with the given render mode.
    pub async fn extract_with(&self, url: &str, mode: RenderMode) -> Result<Page, ExtractError> {
        self.extract_permitted(url, Some(mode), None).await
    }

    /// Extracts one URL holding a slot the caller already took (so a
    /// dispatcher can bound the tasks it spawns); `mode` defaults to the
    /// knobs' mode for the URL's domain.
    pub async fn extract_permitted(
        &self,
        url: &str,
        mode: Option<RenderMode>,
        permit: Option<SlotPermit>,
    ) -> Result<Page, ExtractError> {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let mode = mode.unwrap_or_else(|| self.live.load().knobs.extract.render_mode_for(&host));
        let stage = Stage::Extract.as_str();
        let started = Instant::now();
        let result = self.run(url, mode, started, permit).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!(metrics::STAGE_LATENCY_SECONDS, "stage" => stage, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let scored = match &result {
            Ok(page) => Some(page),
            Err(err) => err.page.as_deref(),
        };
        if let (Some(page), false) = (scored, host.is_empty()) {
            metrics::histogram!(metrics::EXTRACT_DOMAIN_QUALITY, "domain" => metrics::domain_label(&host), "render_mode" => mode.as_str())
                .record(page.quality.score);
        }
        match &result {
            Ok(page) => {
                metrics::histogram!(metrics::EXTRACT_QUALITY, "render_mode" => mode.as_str())
                    .record(page.quality.score);
                metrics::counter!(metrics::EXTRACT_PAGES_TOTAL, "render_mode" => mode.as_str(), "method" => page.method.as_str())
                    .increment(1);
            }
            Err(err) => {
                if let Some(page) = &err.page {
                    metrics::histogram!(metrics::EXTRACT_QUALITY, "render_mode" => mode.as_str())
                        .record(page.quality.score);
                }
                metrics::record_error(stage, err.class.as_str(), err);
            }
        }
        result
    }

    async fn run(
        &self,
        url: &str,
        mode: RenderMode,
        started: Instant,
        permit: Option<SlotPermit>,
    ) -> Result<Page, ExtractError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ExtractError::new(ErrorClass::Invalid, url, format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ExtractError::new(
                ErrorClass::Invalid,
                url,
                "only http and https URLs with a host can be fetched".into(),
            ));
        }
        let _permit = match permit {
            Some(p) => p,
            None => self.slots.acquire().await,
        };
        let stage = Stage::Extract.as_str();
        metrics::counter!(metrics::STAGE_REQUESTS_TOTAL, "stage" => stage).increment(1);
        metrics::gauge!(metrics::STAGE_SLOTS, "stage" => stage).set(self.slots.limit() as f64);
        let _in_flight = metrics::InFlight::new(stage);
        let queued = started.elapsed();
        let fetched_at_ms = now_ms();
        let fetch_started = Instant::now();
        let (out, final_url, html_bytes) = match mode {
            RenderMode::Http => {
                let fetched =
                    retry::retry(&self.live, Stage::Extract, |_| self.fetcher.fetch(&parsed))
                        .await
                        .map_err(|mut e| {
                            e.url = url.to_string();
                            e
                        })?;
                let final_url = fetched.final_url.to_string();
                let html_bytes = fetched.body.len();
                let target = final_url.clone();
                let out = tokio::task::spawn_blocking(move || {
                    let html =
                        fetch::decode(&fetched.body, fetched.header_charset.as_deref(), &target)?;
                    Ok::<_, ExtractError>(content::extract(&html, Some(&target)))
                })
                .await
                .map_err(|e| {
                    ExtractError::new(ErrorClass::Invalid, url, format!("extractor crashed: {e}"))
                })??;
                (out, final_url, html_bytes)
            }
            RenderMode::Remote => {
                let rendered =
                    retry::retry(&self.live, Stage::Extract, |_| self.renderer.render(url))
                        .await
                        .map_err(|mut e| {
                            e.url = url.to_string();
                            e
                        })?;
                (
                    content::from_remote(rendered.title, &rendered.markdown),
                    url.to_string(),
                    0,
                )
            }
        };
        let fetch_ms = fetch_started.elapsed().as_secs_f64() * 1e3 - out.micros as f64 / 1e3;
        let domain = url::Url::parse(&final_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let page = Page {
            url: url.to_string(),
            final_url,
            domain,
            title: out.title,
            markdown: out.markdown,
            quality: out.quality,
            render_mode: mode,
            method: out.method,
            trafilatura_confidence: out.trafilatura_confidence,
            fetched_at_ms,
            html_bytes,
            timings: Timings {
                queue_ms: queued.as_secs_f64() * 1e3,
                fetch_ms: fetch_ms.max(0.0),
                extract_ms: out.micros as f64 / 1e3,
                total_ms: started.elapsed().as_secs_f64() * 1e3,
            },
        };
        if page.quality.score < NO_CONTENT_SCORE {
            let mut err = ExtractError::new(
                ErrorClass::NoContent,
                url,
                format!(
                    "no main content (quality {:.2}, {} words) with render mode {mode}",
                    page.quality.score, page.quality.words
                ),
            );
            err.page = Some(Box::new(page));
            return Err(err);
        }
        Ok(page)
    }
}
