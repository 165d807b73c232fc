//! The extract stage's runtime: slots, render mode per domain, retries and
//! telemetry around fetch and main-content extraction, and the pipeline's
//! URL loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::browser::BrowserRenderer;
use super::{content, fetch, render, shell, ExtractError, Page, Timings, NO_CONTENT_SCORE};
use crate::dataplane::dispatch::{self, Dispatch};
use crate::dataplane::events::{
    InternalEvent, LetterClass, PageExtracted, PageScored, QueueDepth, StageCompleted, StageFailed,
    StageRequested,
};
use crate::dataplane::flow::{send_measured, Ctx, DocItem, DocKind, Origin, TransformIn};
use crate::dataplane::pace::Pace;
use crate::dataplane::retry::{self, ErrorClass};
use crate::dataplane::task::{now_ms, url_doc_id};
use crate::dataplane::Stage;
use crate::knobs::RenderMode;
use crate::live::{LiveConfig, SlotPermit, Slots};

const STAGE: Stage = Stage::Extract;

/// The extract stage runtime.
#[derive(Debug)]
pub struct ExtractStage {
    fetcher: fetch::Fetcher,
    renderer: Arc<dyn render::RemoteRenderer>,
    live: Arc<LiveConfig>,
    slots: Arc<Slots>,
    /// The remote renderer's "slow down" (429), shared by every render.
    /// Page fetches go to many hosts and are not paced together: a 429
    /// from one host waits out its item's `Retry-After` alone.
    render_pace: Pace,
    browser: BrowserRenderer,
    _follow: tokio::task::JoinHandle<()>,
}

/// Where a page's HTML came from.
enum Source {
    /// A plain fetch (bytes to decode).
    Fetched(fetch::Fetched),
    /// The DOM a headless browser left.
    Rendered(super::browser::Rendered),
}

/// One way of getting a page: its extraction, final URL, HTML bytes, and
/// whether its HTML looked like a JavaScript shell.
struct Got {
    out: content::Extracted,
    final_url: String,
    html_bytes: usize,
    shell: bool,
}

impl ExtractStage {
    /// A stage whose slot count follows `extract.slots`; the `browser`
    /// mode finds its browser on `PATH`.
    pub fn new(
        fetcher: fetch::Fetcher,
        renderer: Arc<dyn render::RemoteRenderer>,
        live: Arc<LiveConfig>,
    ) -> ExtractStage {
        ExtractStage::with_browser(fetcher, renderer, live, None)
    }

    /// [`new`](Self::new) with `[extract] browser_path`.
    pub fn with_browser(
        fetcher: fetch::Fetcher,
        renderer: Arc<dyn render::RemoteRenderer>,
        live: Arc<LiveConfig>,
        browser_path: Option<std::path::PathBuf>,
    ) -> ExtractStage {
        let browser = BrowserRenderer::new(fetcher.clone(), browser_path, live.clone());
        let slots = Arc::new(Slots::new(live.load().knobs.extract.slots as usize));
        let follow = slots.follow(&live, |k| k.extract.slots);
        ExtractStage {
            fetcher,
            renderer,
            live,
            slots,
            render_pace: Pace::new(),
            browser,
            _follow: follow,
        }
    }

    /// The headless-browser renderer (for observation).
    pub fn browser(&self) -> &BrowserRenderer {
        &self.browser
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
        let started = Instant::now();
        let result = self.run(url, mode, started, permit).await;
        StageCompleted {
            stage: STAGE,
            ok: result.is_ok(),
            elapsed: started.elapsed(),
        }
        .emit();
        let scored = match &result {
            Ok(page) => Some(page),
            Err(err) => err.page.as_deref(),
        };
        if let Some(page) = scored {
            PageScored {
                host: &host,
                render_mode: page.render_mode.as_str(),
                quality: page.quality.score,
                method: result.is_ok().then(|| page.method.as_str()),
            }
            .emit();
        }
        if let Err(err) = &result {
            StageFailed::of(STAGE, err).emit();
        }
        result
    }

    /// `auto`: HTTP first; a page that looks like a JavaScript shell or
    /// scores below `transform.min_quality` is fetched again with
    /// `extract.escalate_to`, and the better of the two is kept. Returns the
    /// mode whose result is kept.
    async fn auto(
        &self,
        url: &str,
        parsed: &url::Url,
        permit: &mut Option<SlotPermit>,
    ) -> Result<(Got, RenderMode), ExtractError> {
        let plain = self.get(RenderMode::Http, url, parsed, permit).await?;
        let knobs = self.live.load().knobs.clone();
        let low = plain.out.quality.score < knobs.transform.min_quality;
        if !(plain.shell || low) {
            return Ok((plain, RenderMode::Http));
        }
        let target = knobs.extract.escalate_to;
        let outcome = |o: &'static str| {
            metrics::counter!(crate::metrics::EXTRACT_ESCALATIONS_TOTAL,
                "target" => target.as_str(), "outcome" => o)
            .increment(1);
        };
        match self.get(target, url, parsed, permit).await {
            Ok(better) if better.out.quality.score > plain.out.quality.score => {
                outcome("improved");
                Ok((better, target))
            }
            Ok(_) => {
                outcome("not_improved");
                Ok((plain, RenderMode::Http))
            }
            Err(e) => {
                outcome("failed");
                tracing::debug!(%url, error = %e, "auto: escalation failed; the HTTP result stands");
                Ok((plain, RenderMode::Http))
            }
        }
    }

    /// Gets `url` with one concrete mode (not `auto`), retries included.
    async fn get(
        &self,
        mode: RenderMode,
        url: &str,
        parsed: &url::Url,
        permit: &mut Option<SlotPermit>,
    ) -> Result<Got, ExtractError> {
        let restore_url = |mut e: ExtractError| {
            e.url = url.to_string();
            e
        };
        let retry = retry::Retry::new(&self.live, STAGE).holding((&*self.slots, permit));
        // The HTML to extract from: fetched bytes (decoded off the runtime)
        // or the DOM the browser left.
        let source = match mode {
            RenderMode::Remote => {
                let rendered = retry
                    .paced_by(&self.render_pace)
                    .run(|_| self.renderer.render(url))
                    .await
                    .map_err(restore_url)?;
                return Ok(Got {
                    out: content::from_remote(rendered.title, &rendered.markdown),
                    final_url: url.to_string(),
                    html_bytes: 0,
                    shell: false,
                });
            }
            RenderMode::Browser => {
                let rendered = retry
                    .run(|_| self.browser.render(url))
                    .await
                    .map_err(restore_url)?;
                Source::Rendered(rendered)
            }
            RenderMode::Http | RenderMode::Auto => {
                let fetched = retry
                    .run(|_| self.fetcher.fetch(parsed))
                    .await
                    .map_err(restore_url)?;
                Source::Fetched(fetched)
            }
        };
        let (final_url, html_bytes) = match &source {
            Source::Fetched(f) => (f.final_url.to_string(), f.body.len()),
            Source::Rendered(r) => (r.final_url.clone(), r.html.len()),
        };
        let target = final_url.clone();
        let (out, shell) = extract_off_runtime(url, move || {
            let (html, fetched_plain) = match source {
                Source::Fetched(f) => (
                    fetch::decode(&f.body, f.header_charset.as_deref(), &target)?,
                    true,
                ),
                Source::Rendered(r) => (r.html, false),
            };
            let out = content::extract(&html, Some(&target));
            // Only plain fetches can be shells: a rendered DOM ran its scripts.
            let shell = fetched_plain && shell::looks_like_js_shell(&html, out.quality.words);
            Ok((out, shell))
        })
        .await?;
        Ok(Got {
            out,
            final_url,
            html_bytes,
            shell,
        })
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
        let mut permit = Some(match permit {
            Some(p) => p,
            None => self.slots.acquire().await,
        });
        StageRequested { stage: STAGE }.emit();
        let _in_flight = dispatch::occupy(STAGE, &self.slots);
        let queued = started.elapsed();
        let fetched_at_ms = now_ms();
        let fetch_started = Instant::now();
        let (got, mode) = match mode {
            RenderMode::Auto => self.auto(url, &parsed, &mut permit).await?,
            direct => (self.get(direct, url, &parsed, &mut permit).await?, direct),
        };
        let Got {
            out,
            final_url,
            html_bytes,
            ..
        } = got;
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

/// Runs CPU-bound extraction on the blocking pool; a panic in it fails
/// the page instead of the worker.
async fn extract_off_runtime<T: Send + 'static>(
    url: &str,
    work: impl FnOnce() -> Result<T, ExtractError> + Send + 'static,
) -> Result<T, ExtractError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ExtractError::new(ErrorClass::Invalid, url, format!("extractor crashed: {e}"))
    })?
}

/// The pipeline's extract loop: one worker per URL, each holding an
/// `extract.slots` slot; a page goes on to the transform, a failure to the
/// dead letters.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    extract: Arc<ExtractStage>,
    mut rx: mpsc::Receiver<(String, Origin)>,
    transform_tx: mpsc::Sender<TransformIn>,
) {
    let mut dispatch = Dispatch::new(STAGE, ctx.letters.clone());
    while let Some((url, origin)) = dispatch.next(&mut rx).await {
        QueueDepth {
            stage: STAGE,
            depth: rx.len(),
        }
        .emit();
        let (ctx, extract, transform_tx) = (ctx.clone(), extract.clone(), transform_tx.clone());
        let held = vec![origin.letter()];
        let slots = extract.slots.clone();
        dispatch
            .spawn(&slots, held, move |permit| async move {
                match extract.extract_permitted(&url, None, Some(permit)).await {
                    Ok(page) => {
                        ctx.emit(PageExtracted);
                        let item = DocItem {
                            kind: DocKind::Page,
                            doc_id: url_doc_id(&url),
                            url: page.final_url,
                            title: page.title,
                            text: page.markdown,
                            quality: page.quality.score,
                            render_mode: page.render_mode.as_str().to_string(),
                            fetched_at_ms: page.fetched_at_ms,
                            metadata: BTreeMap::new(),
                            origin,
                        };
                        let _ = send_measured(&transform_tx, TransformIn::Doc(item), STAGE).await;
                    }
                    Err(e) => {
                        let class = LetterClass::Error(e.class);
                        ctx.dead_letter(STAGE, class, e.to_string(), origin).await;
                    }
                }
            })
            .await;
    }
    dispatch.drain().await;
}
