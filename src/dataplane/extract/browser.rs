//! The `browser` render mode: a real headless Chromium, driven over the
//! DevTools protocol (`chromiumoxide`), runs the page's scripts and hands
//! back the DOM they built.
//!
//! - **Every request goes through the fetcher.** Request interception
//!   (`Fetch` domain) pauses each request the page makes; freshet fetches it
//!   with the same guarded client as plain fetches ([`Fetcher`]: outbound
//!   address guard on every host and redirect hop, body cap) and fulfils it.
//!   Chromium itself never opens a connection: it starts with a resolver
//!   that resolves nothing, a dead proxy and WebRTC limited to the proxy,
//!   so a request that escaped interception (WebSocket, WebRTC, prefetch)
//!   fails instead of reaching an address the guard did not see.
//! - Images, media, fonts, stylesheets, pings and manifests are refused
//!   before they are fetched. Frames and navigations after the first
//!   document get an empty `204` (a page that navigates away keeps the DOM
//!   it had). Only `GET`, `HEAD` and `POST` are fetched.
//! - The document itself is fetched by [`Fetcher::fetch`], so a download or
//!   a non-HTML body fails as `not_html`, a refused address as `blocked`,
//!   exactly as in `http` mode.
//! - Dialogs (`alert`, `confirm`, `beforeunload`) are dismissed.
//! - Tabs: at most `extract.browser_slots` (a live knob) at once; each page
//!   gets a fresh tab that is closed after it, and the browser is restarted
//!   every [`RECYCLE_AFTER`] pages so its memory stays bounded. A page's V8
//!   heap is capped ([`JS_HEAP_MB`]): a page that allocates without end
//!   crashes its own renderer, not the service.
//! - Per page: the whole render is bounded by `extract.timeout_ms`. The page
//!   is done when the load event fired and no request has been in flight
//!   for [`QUIET`], or at [`SETTLE_MAX`] after load. A page whose script
//!   never yields (an infinite loop) times out; its tab is closed, and if
//!   the browser does not answer either it is killed and relaunched. A
//!   browser that crashed or went away fails the page as `connect` (the
//!   retry loop tries again on a fresh browser).
//! - The DOM handed back is capped at `[extract] max_bytes` like a fetched
//!   body (`too_large` above it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::fetch::{
    EventRequestPaused, FailRequestParams, FulfillRequestParams, HeaderEntry,
};
use chromiumoxide::cdp::browser_protocol::inspector::EventTargetCrashed;
use chromiumoxide::cdp::browser_protocol::network::{ErrorReason, ResourceType};
use chromiumoxide::cdp::browser_protocol::page::{
    EventJavascriptDialogOpening, HandleJavaScriptDialogParams,
};
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;

use super::fetch::Fetcher;
use super::ExtractError;
use crate::dataplane::retry::ErrorClass;
use crate::live::{LiveConfig, Slots};

/// Pages rendered by one browser process before it is replaced.
pub const RECYCLE_AFTER: u64 = 200;
/// V8 heap limit of each page, in MiB.
pub const JS_HEAP_MB: u32 = 256;
/// No request in flight for this long after load: the page is done.
pub const QUIET: Duration = Duration::from_millis(300);
/// Longest wait after the load event for the page's requests to end.
pub const SETTLE_MAX: Duration = Duration::from_secs(5);
/// Longest wait for the browser to answer a tab command (open, close).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Executable names looked up on `PATH` when `[extract] browser_path` is unset.
const EXECUTABLES: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
];

/// The page's HTML as the browser left it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The document URL (the page cannot navigate away, so the URL asked for
    /// unless the document's fetch followed redirects).
    pub final_url: String,
    /// `document.documentElement.outerHTML` after the page's scripts ran.
    pub html: String,
}

/// Finds the browser executable: `configured` if set (it must exist), else
/// the first of [`EXECUTABLES`] on `PATH`.
pub fn find_executable(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "[extract] browser_path {} does not exist",
                p.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in EXECUTABLES {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "no headless browser found: install Chromium (Debian: `apt-get install chromium`) or set [extract] browser_path; looked for {} on PATH",
        EXECUTABLES.join(", ")
    ))
}

struct Instance {
    browser: Arc<Browser>,
    handler: tokio::task::JoinHandle<()>,
    rendered: AtomicU64,
    generation: u64,
    _profile: tempfile::TempDir,
}

impl Instance {
    fn alive(&self) -> bool {
        !self.handler.is_finished()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // The child is spawned with kill_on_drop; the handler task only
        // drives its socket.
        self.handler.abort();
    }
}

/// The headless-browser renderer (one per process; launched on first use).
pub struct BrowserRenderer {
    fetcher: Fetcher,
    configured: Option<PathBuf>,
    live: Arc<LiveConfig>,
    slots: Arc<Slots>,
    current: tokio::sync::Mutex<Option<Arc<Instance>>>,
    launches: AtomicU64,
    _follow: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for BrowserRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserRenderer")
            .field("configured", &self.configured)
            .field("launches", &self.launches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl BrowserRenderer {
    /// A renderer whose tabs fetch through `fetcher`, with at most
    /// `extract.browser_slots` tabs open; `configured` is `[extract]
    /// browser_path` (else `PATH` is searched when the browser is first
    /// needed).
    pub fn new(fetcher: Fetcher, configured: Option<PathBuf>, live: Arc<LiveConfig>) -> Self {
        let slots = Arc::new(Slots::new(
            live.load().knobs.extract.browser_slots.max(1) as usize
        ));
        let follow = slots.follow(&live, |k| k.extract.browser_slots.max(1));
        BrowserRenderer {
            fetcher,
            configured,
            live,
            slots,
            current: tokio::sync::Mutex::new(None),
            launches: AtomicU64::new(0),
            _follow: follow,
        }
    }

    /// Browser processes launched so far (restarts included).
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    /// The tab limit (for observation).
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// The running browser, launched or replaced when needed.
    async fn instance(&self, url: &str) -> Result<Arc<Instance>, ExtractError> {
        let mut current = self.current.lock().await;
        if let Some(inst) = current.as_ref() {
            let worn = inst.rendered.load(Ordering::Relaxed) >= RECYCLE_AFTER;
            if inst.alive() && !worn {
                return Ok(inst.clone());
            }
            // Tabs still open on a worn browser finish on it (they hold
            // the Arc); new pages go to a fresh one.
            *current = None;
        }
        let fail = |m: String| ExtractError::new(ErrorClass::Connect, url, m);
        let exe = find_executable(self.configured.as_deref())
            .map_err(|m| ExtractError::new(ErrorClass::Invalid, url, m))?;
        let profile = tempfile::Builder::new()
            .prefix("freshet-chromium-")
            .tempdir()
            .map_err(|e| fail(format!("cannot create a browser profile dir: {e}")))?;
        let config = BrowserConfig::builder()
            .chrome_executable(&exe)
            .new_headless_mode()
            .no_sandbox()
            .user_data_dir(profile.path())
            .enable_request_intercept()
            .disable_cache()
            .launch_timeout(Duration::from_secs(30))
            .request_timeout(COMMAND_TIMEOUT)
            .args([
                // Chromium connects nowhere itself: every request is
                // fulfilled by freshet's guarded fetcher (module docs).
                "--host-resolver-rules=MAP * ~NOTFOUND".to_string(),
                "--proxy-server=127.0.0.1:9".to_string(),
                // WebRTC would otherwise send UDP to literal addresses,
                // past both the resolver and the proxy.
                "--force-webrtc-ip-handling-policy=disable_non_proxied_udp".to_string(),
                format!("--js-flags=--max-old-space-size={JS_HEAP_MB}"),
                "--disable-gpu".to_string(),
                "--disable-dev-shm-usage".to_string(),
                "--disable-background-networking".to_string(),
                "--disable-component-update".to_string(),
                "--disable-sync".to_string(),
                "--no-first-run".to_string(),
                "--mute-audio".to_string(),
            ])
            .build()
            .map_err(|e| fail(format!("browser config: {e}")))?;
        let (browser, mut handler) = Browser::launch(config)
            .await
            .map_err(|e| fail(format!("cannot launch {}: {e}", exe.display())))?;
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    // A message chromiumoxide cannot parse is not fatal;
                    // a closed socket ends the stream.
                    tracing::debug!(error = %e, "browser handler");
                }
            }
        });
        let generation = self.launches.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!(crate::metrics::BROWSER_LAUNCHES_TOTAL).increment(1);
        tracing::info!(executable = %exe.display(), generation, "headless browser launched");
        let inst = Arc::new(Instance {
            browser: Arc::new(browser),
            handler,
            rendered: AtomicU64::new(0),
            generation,
            _profile: profile,
        });
        *current = Some(inst.clone());
        Ok(inst)
    }

    /// Drops `inst` as the current browser if it still is (it hung or died).
    async fn retire(&self, inst: &Arc<Instance>) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|c| c.generation == inst.generation)
        {
            *current = None;
            tracing::warn!(
                generation = inst.generation,
                "headless browser retired (crashed or unresponsive); the next page relaunches it"
            );
        }
    }

    /// Renders `url` in a fresh tab (one attempt; the caller retries).
    pub async fn render(&self, url: &str) -> Result<Rendered, ExtractError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ExtractError::new(ErrorClass::Invalid, url, format!("not a URL: {e}")))?;
        let _slot = self.slots.acquire().await;
        let budget = Duration::from_millis(self.live.load().knobs.extract.timeout_ms.max(1));
        let inst = self.instance(url).await?;
        inst.rendered.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let opened = tokio::time::timeout(COMMAND_TIMEOUT, inst.browser.new_page("about:blank"))
            .await
            .unwrap_or_else(|_| Err(chromiumoxide::error::CdpError::Timeout));
        let page = match opened {
            Ok(p) => p,
            Err(e) => {
                self.retire(&inst).await;
                return Err(ExtractError::new(
                    ErrorClass::Connect,
                    url,
                    format!("browser: cannot open a tab ({e}); restarting the browser"),
                ));
            }
        };
        let tab = Tab::new(page.clone(), self.fetcher.clone(), parsed.clone());
        let result = tokio::time::timeout(budget, tab.run()).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(ExtractError::new(
                ErrorClass::Timeout,
                url,
                format!(
                    "browser: page not rendered within {} ms (a script that never yields, or requests that never end)",
                    budget.as_millis()
                ),
            )),
        };
        tab.stop();
        // Close the tab; a browser that cannot even do that is replaced.
        let closed = tokio::time::timeout(COMMAND_TIMEOUT, page.close()).await;
        if !matches!(closed, Ok(Ok(()))) || !inst.alive() {
            self.retire(&inst).await;
        }
        metrics::histogram!(crate::metrics::BROWSER_RENDER_SECONDS)
            .record(started.elapsed().as_secs_f64());
        match result {
            Err(mut e) if !inst.alive() => {
                e.class = ErrorClass::Connect;
                e.message = format!("{}; the browser went away", e.message);
                Err(e)
            }
            other => other,
        }
    }
}

/// One page's tab: its interception and dialog tasks and what they saw.
struct Tab {
    page: Page,
    fetcher: Fetcher,
    url: url::Url,
    state: Arc<TabState>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct TabState {
    pending: AtomicUsize,
    last_activity_ms: AtomicU64,
    documents: AtomicUsize,
    /// How the document's own fetch failed, if it did.
    document_error: Mutex<Option<ExtractError>>,
    /// The document URL after redirects.
    final_url: Mutex<Option<String>>,
    crashed: std::sync::atomic::AtomicBool,
    epoch: Instant,
}

impl TabState {
    fn new() -> TabState {
        TabState {
            pending: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(0),
            documents: AtomicUsize::new(0),
            document_error: Mutex::new(None),
            final_url: Mutex::new(None),
            crashed: std::sync::atomic::AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    fn touch(&self) {
        self.last_activity_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }
}

impl Tab {
    fn new(page: Page, fetcher: Fetcher, url: url::Url) -> Tab {
        Tab {
            page,
            fetcher,
            url,
            state: Arc::new(TabState::new()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    fn stop(&self) {
        for t in self.tasks.lock().expect("tab tasks").drain(..) {
            t.abort();
        }
    }

    fn fail(&self, class: ErrorClass, message: String) -> ExtractError {
        ExtractError::new(class, self.url.as_str(), format!("browser: {message}"))
    }

    async fn listen(&self) -> Result<(), ExtractError> {
        let cdp = |e: chromiumoxide::error::CdpError| {
            self.fail(
                ErrorClass::Connect,
                format!("cannot listen to the tab: {e}"),
            )
        };
        let mut paused = self
            .page
            .event_listener::<EventRequestPaused>()
            .await
            .map_err(cdp)?;
        let mut dialogs = self
            .page
            .event_listener::<EventJavascriptDialogOpening>()
            .await
            .map_err(cdp)?;
        let mut crashes = self
            .page
            .event_listener::<EventTargetCrashed>()
            .await
            .map_err(cdp)?;
        let (page, fetcher, state) = (self.page.clone(), self.fetcher.clone(), self.state.clone());
        let intercept = tokio::spawn(async move {
            while let Some(event) = paused.next().await {
                state.pending.fetch_add(1, Ordering::Relaxed);
                state.touch();
                let (page, fetcher, state) = (page.clone(), fetcher.clone(), state.clone());
                tokio::spawn(async move {
                    answer(&page, &fetcher, &state, &event).await;
                    state.pending.fetch_sub(1, Ordering::Relaxed);
                    state.touch();
                });
            }
        });
        let page = self.page.clone();
        let dismiss = tokio::spawn(async move {
            while dialogs.next().await.is_some() {
                let _ = page.execute(HandleJavaScriptDialogParams::new(false)).await;
            }
        });
        let state = self.state.clone();
        let crashed = tokio::spawn(async move {
            if crashes.next().await.is_some() {
                state.crashed.store(true, Ordering::Relaxed);
            }
        });
        self.tasks
            .lock()
            .expect("tab tasks")
            .extend([intercept, dismiss, crashed]);
        Ok(())
    }

    async fn run(&self) -> Result<Rendered, ExtractError> {
        self.state.touch();
        self.listen().await?;
        let navigated = self.page.goto(self.url.as_str()).await;
        if let Some(e) = self.state.document_error.lock().expect("tab state").take() {
            return Err(e);
        }
        if self.state.crashed.load(Ordering::Relaxed) {
            return Err(self.crashed());
        }
        if let Err(e) = navigated {
            return Err(self.fail(ErrorClass::Upstream, format!("navigation failed: {e}")));
        }
        // Wait for the page's own requests (its content) to end.
        let settle = Instant::now();
        loop {
            if self.state.crashed.load(Ordering::Relaxed) {
                return Err(self.crashed());
            }
            let quiet =
                self.state.pending.load(Ordering::Relaxed) == 0 && self.state.idle_for() >= QUIET;
            if quiet || settle.elapsed() >= SETTLE_MAX {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let max_bytes = self.fetcher.max_bytes();
        let length: u64 = self
            .eval("document.documentElement ? document.documentElement.outerHTML.length : 0")
            .await?;
        if length as usize > max_bytes {
            return Err(self.fail(
                ErrorClass::TooLarge,
                format!("the rendered DOM is {length} characters, over the {max_bytes}-byte limit"),
            ));
        }
        let html: String = self
            .eval("document.documentElement ? document.documentElement.outerHTML : ''")
            .await?;
        let final_url = self
            .state
            .final_url
            .lock()
            .expect("tab state")
            .clone()
            .unwrap_or_else(|| self.url.to_string());
        Ok(Rendered { final_url, html })
    }

    fn crashed(&self) -> ExtractError {
        self.fail(
            ErrorClass::NoContent,
            format!("the page's renderer crashed (out of memory past the {JS_HEAP_MB} MiB script heap, or a renderer bug)"),
        )
    }

    async fn eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> Result<T, ExtractError> {
        if self.state.crashed.load(Ordering::Relaxed) {
            return Err(self.crashed());
        }
        let value =
            self.page.evaluate(js).await.map_err(|e| {
                self.fail(ErrorClass::Upstream, format!("cannot read the DOM: {e}"))
            })?;
        value
            .into_value::<T>()
            .map_err(|e| self.fail(ErrorClass::Upstream, format!("cannot read the DOM: {e}")))
    }
}

/// Whether a request of `kind` is refused without fetching it.
fn skipped(kind: &ResourceType) -> bool {
    matches!(
        kind,
        ResourceType::Image
            | ResourceType::Media
            | ResourceType::Font
            | ResourceType::Stylesheet
            | ResourceType::TextTrack
            | ResourceType::Ping
            | ResourceType::CspViolationReport
            | ResourceType::Manifest
            | ResourceType::Prefetch
            | ResourceType::SignedExchange
            | ResourceType::WebSocket
            | ResourceType::EventSource
    )
}

/// Answers one paused request: refuse it, or fetch it through the guarded
/// fetcher and fulfil it.
async fn answer(page: &Page, fetcher: &Fetcher, state: &TabState, event: &EventRequestPaused) {
    let id = event.request_id.clone();
    let refuse = |reason: ErrorReason| FailRequestParams::new(id.clone(), reason);
    let request = &event.request;
    let Ok(url) = url::Url::parse(&request.url) else {
        let _ = page.execute(refuse(ErrorReason::BlockedByClient)).await;
        return;
    };
    if url.scheme() == "data" || url.scheme() == "blob" {
        // Content already in the page: let the browser decode it.
        let _ = page
            .execute(
                chromiumoxide::cdp::browser_protocol::fetch::ContinueRequestParams::new(id.clone()),
            )
            .await;
        return;
    }
    let is_document = event.resource_type == ResourceType::Document;
    if is_document && state.documents.fetch_add(1, Ordering::Relaxed) > 0 {
        // A second document (a frame, or the page navigating away) gets an
        // empty 204: the browser stays on the page it has, where a refused
        // navigation would replace it with an error page.
        let _ = page
            .execute(FulfillRequestParams::new(id.clone(), 204))
            .await;
        return;
    }
    if skipped(&event.resource_type) {
        let _ = page.execute(refuse(ErrorReason::BlockedByClient)).await;
        return;
    }
    if is_document {
        match fetcher.fetch(&url).await {
            Ok(fetched) => {
                *state.final_url.lock().expect("tab state") = Some(fetched.final_url.to_string());
                let content_type = match &fetched.header_charset {
                    Some(c) => format!("text/html; charset={c}"),
                    None => "text/html".to_string(),
                };
                fulfil(page, id, 200, &content_type, &fetched.body).await;
            }
            Err(e) => {
                *state.document_error.lock().expect("tab state") = Some(e);
                let _ = page.execute(refuse(ErrorReason::Failed)).await;
            }
        }
        return;
    }
    let body = request
        .post_data_entries
        .as_ref()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e.bytes.as_ref())
                .filter_map(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(AsRef::<str>::as_ref(b))
                        .ok()
                })
                .flatten()
                .collect::<Vec<u8>>()
        })
        .unwrap_or_default();
    let content_type = request
        .headers
        .inner()
        .get("Content-Type")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    match fetcher
        .fetch_resource(&request.method, &url, body, content_type)
        .await
    {
        Ok(r) => {
            fulfil(page, id, r.status, &r.content_type, &r.body).await;
        }
        Err(e) => {
            let reason = if e.class == ErrorClass::Blocked {
                ErrorReason::AddressUnreachable
            } else if e.class == ErrorClass::Timeout {
                ErrorReason::TimedOut
            } else {
                ErrorReason::Failed
            };
            let _ = page.execute(refuse(reason)).await;
        }
    }
}

async fn fulfil(
    page: &Page,
    id: chromiumoxide::cdp::browser_protocol::fetch::RequestId,
    status: u16,
    content_type: &str,
    body: &[u8],
) {
    let mut params = FulfillRequestParams::new(id, status as i64);
    params.response_headers = Some(vec![HeaderEntry::new("Content-Type", content_type)]);
    params.body = Some(
        base64::engine::general_purpose::STANDARD
            .encode(body)
            .into(),
    );
    let _ = page.execute(params).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_must_exist() {
        let err = find_executable(Some(Path::new("/nonexistent/chromium"))).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn heavy_resources_are_skipped_and_content_is_fetched() {
        assert!(skipped(&ResourceType::Image));
        assert!(skipped(&ResourceType::Font));
        assert!(skipped(&ResourceType::Media));
        assert!(!skipped(&ResourceType::Script));
        assert!(!skipped(&ResourceType::Xhr));
        assert!(!skipped(&ResourceType::Fetch));
        assert!(!skipped(&ResourceType::Document));
    }
}
