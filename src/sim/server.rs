//! The simulator's HTTP server: one axum app on a loopback port that routes
//! by `Host` header. `*.sim.test` hosts get pages; anything else (e.g.
//! `127.0.0.1:PORT`) gets the API: `/api/search`, `/api/url`, `/sim/stats`,
//! `/sim/truth`.
//!
//! Fault injection per request, in order: concurrency limit (429), token
//! bucket (429 with `Retry-After`), then one draw for reset / timeout / 5xx,
//! then the lognormal service latency. Credits are charged only for 200
//! answers (search 1, render 5). A request picked to hang releases its
//! concurrency slot first (the upstream has "lost" it) and hangs for
//! [`HANG`] or until shutdown, then answers 504.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::corpus::{Corpus, HostileKind, PageKind, HOSTILE_DOMAIN};
use super::scenario::{EndpointProfile, Scenario};
use super::text::{esc, mix64, Rng};
use crate::settings::{EmbedBackend, Secret, Settings};

/// How long a "timeout" fault hangs before answering 504.
pub const HANG: Duration = Duration::from_secs(60);
/// Upper bound on the slow-drip page.
pub const SLOW_DRIP_MAX: Duration = Duration::from_secs(120);
/// Credits per successful call.
pub const SEARCH_CREDITS: u64 = 1;
pub const RENDER_CREDITS: u64 = 5;

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub scenario: Scenario,
    pub seed: u64,
    /// `127.0.0.1:0` for an ephemeral port.
    pub addr: SocketAddr,
    /// Bearer key the `/api/*` endpoints require.
    pub api_key: String,
    /// 1.0 = real time; 10.0 = phases run 10x faster. Latencies are not scaled.
    pub time_scale: f64,
}

impl SimOptions {
    /// Steady scenario, ephemeral port, key `sim-key`, real time.
    pub fn new(scenario: Scenario, seed: u64) -> SimOptions {
        SimOptions {
            scenario,
            seed,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: "sim-key".into(),
            time_scale: 1.0,
        }
    }
}

/// Counters of one endpoint or domain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointStats {
    pub requests: u64,
    pub ok: u64,
    /// 4xx other than 429 (auth, bad body, unknown URL).
    pub client_errors: u64,
    pub status_429: u64,
    pub status_5xx: u64,
    pub resets: u64,
    pub timeouts: u64,
    pub in_flight: u64,
}

/// Snapshot of the simulator's counters (`GET /sim/stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SimStats {
    pub scenario: String,
    pub phase_index: usize,
    pub phase_name: String,
    pub credits_used: u64,
    /// Keys: `search`, `render`, `page`.
    pub endpoints: BTreeMap<String, EndpointStats>,
    /// Page counters per domain (only domains that saw requests).
    pub domains: BTreeMap<String, EndpointStats>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    client_errors: AtomicU64,
    s429: AtomicU64,
    s5xx: AtomicU64,
    resets: AtomicU64,
    timeouts: AtomicU64,
    in_flight: AtomicUsize,
}

impl Counters {
    fn snapshot(&self) -> EndpointStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EndpointStats {
            requests: l(&self.requests),
            ok: l(&self.ok),
            client_errors: l(&self.client_errors),
            status_429: l(&self.s429),
            status_5xx: l(&self.s5xx),
            resets: l(&self.resets),
            timeouts: l(&self.timeouts),
            in_flight: self.in_flight.load(Ordering::Relaxed) as u64,
        }
    }
    fn count_status(&self, s: StatusCode) {
        let c = match s.as_u16() {
            200..=399 => &self.ok,
            429 => &self.s429,
            400..=499 => &self.client_errors,
            _ => &self.s5xx,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Limits and counters of one endpoint, or of one domain for pages.
#[derive(Default)]
struct Limiter {
    counters: Counters,
    bucket: Mutex<Option<(f64, Instant)>>,
}

struct InFlight<'a>(&'a Counters);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limiter {
    /// Concurrency then token bucket; Err(retry_after_secs) means 429.
    fn admit(&self, p: &EndpointProfile) -> Result<InFlight<'_>, u64> {
        let n = self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let g = InFlight(&self.counters);
        if let Some(max) = p.max_concurrency {
            if n >= max {
                return Err(1);
            }
        }
        if let Some(rps) = p.rate_limit_rps {
            let cap = rps.max(1.0);
            let now = Instant::now();
            let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let (tokens, last) = b.get_or_insert((cap, now));
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rps).min(cap);
            *last = now;
            if *tokens >= 1.0 {
                *tokens -= 1.0;
            } else {
                return Err(((1.0 - *tokens) / rps).ceil().max(1.0) as u64);
            }
        }
        Ok(g)
    }
}

enum Fault {
    Reset,
    Hang,
    Error(StatusCode),
}

struct Inner {
    corpus: Arc<Corpus>,
    scenario: Scenario,
    api_key: String,
    time_scale: f64,
    seed: u64,
    start: Instant,
    pinned: AtomicUsize,
    seq: AtomicU64,
    credits: AtomicU64,
    search: Limiter,
    render: Limiter,
    embed: Limiter,
    page: Limiter,
    /// Article domains in corpus order, then the hostile domain.
    domains: Vec<Limiter>,
    shutdown: watch::Receiver<bool>,
    port: u16,
}

impl Inner {
    fn phase(&self) -> usize {
        let p = self.pinned.load(Ordering::Relaxed);
        if p != usize::MAX {
            return p.min(self.scenario.phases.len() - 1);
        }
        self.scenario
            .phase_at(self.start.elapsed().as_secs_f64() * self.time_scale)
    }

    fn rng(&self) -> Rng {
        Rng::derive(
            self.seed ^ 0xFA17,
            mix64(self.seq.fetch_add(1, Ordering::Relaxed)),
        )
    }

    fn draw_fault(&self, p: &EndpointProfile) -> Option<Fault> {
        let mut r = self.rng();
        let u = r.f64();
        if u < p.reset {
            Some(Fault::Reset)
        } else if u < p.reset + p.timeout {
            Some(Fault::Hang)
        } else if u < p.reset + p.timeout + p.error_5xx {
            Some(Fault::Error(
                [
                    StatusCode::INTERNAL_SERVER_ERROR,
                    StatusCode::BAD_GATEWAY,
                    StatusCode::SERVICE_UNAVAILABLE,
                ][r.range(0, 2)],
            ))
        } else {
            None
        }
    }

    fn latency(&self, p: &EndpointProfile) -> Duration {
        let mut r = self.rng();
        let mu = p.latency_ms.p50.ln();
        let sigma = (p.latency_ms.p99.ln() - mu) / 2.326;
        let ms = (mu + sigma * r.normal()).exp().min(30_000.0);
        Duration::from_secs_f64(ms / 1000.0)
    }

    /// Sleep unless shutting down; false if interrupted by shutdown.
    async fn sleep(&self, d: Duration) -> bool {
        let mut rx = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = rx.wait_for(|v| *v) => false,
        }
    }

    fn stats(&self) -> SimStats {
        let i = self.phase();
        let mut domains = BTreeMap::new();
        for (k, l) in self.domains.iter().enumerate() {
            let s = l.counters.snapshot();
            if s.requests > 0 {
                let name = self
                    .corpus
                    .domains()
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| HOSTILE_DOMAIN.to_string());
                domains.insert(name, s);
            }
        }
        SimStats {
            scenario: self.scenario.name.clone(),
            phase_index: i,
            phase_name: self.scenario.phases[i].name.clone(),
            credits_used: self.credits.load(Ordering::Relaxed),
            endpoints: [
                ("search", &self.search),
                ("render", &self.render),
                ("embed", &self.embed),
                ("page", &self.page),
            ]
            .into_iter()
            .map(|(k, l)| (k.to_string(), l.counters.snapshot()))
            .collect(),
            domains,
        }
    }
}

// ---------------------------------------------------------------- connections

/// Per-connection handle that lets a handler drop the connection without
/// answering (the "reset" fault).
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub remote: SocketAddr,
    kill: Arc<AtomicBool>,
}

impl ConnHandle {
    fn kill(&self) {
        self.kill.store(true, Ordering::SeqCst);
    }
}

struct KillListener(TcpListener);

impl axum::serve::Listener for KillListener {
    type Io = KillStream;
    type Addr = ConnHandle;
    async fn accept(&mut self) -> (KillStream, ConnHandle) {
        loop {
            match self.0.accept().await {
                Ok((s, remote)) => {
                    let _ = s.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    return (
                        KillStream {
                            inner: s,
                            kill: kill.clone(),
                        },
                        ConnHandle { remote, kill },
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    fn local_addr(&self) -> io::Result<ConnHandle> {
        Ok(ConnHandle {
            remote: self.0.local_addr()?,
            kill: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<axum::serve::IncomingStream<'_, KillListener>> for ConnHandle {
    fn connect_info(s: axum::serve::IncomingStream<'_, KillListener>) -> Self {
        s.remote_addr().clone()
    }
}

struct KillStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl KillStream {
    fn killed(&mut self) -> Option<io::Error> {
        if self.kill.load(Ordering::SeqCst) {
            // RST instead of FIN, like a crashed upstream.
            let _ = self.inner.set_zero_linger();
            Some(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "sim: injected reset",
            ))
        } else {
            None
        }
    }
}

impl AsyncRead for KillStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------- server

/// A running simulator.
pub struct SimServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Bind, spawn the server and return immediately.
    pub async fn start(opts: SimOptions) -> anyhow::Result<SimServer> {
        opts.scenario.validate()?;
        if !(opts.time_scale > 0.0 && opts.time_scale.is_finite()) {
            anyhow::bail!(
                "sim: time_scale = {} must be a positive number",
                opts.time_scale
            );
        }
        let listener = TcpListener::bind(opts.addr)
            .await
            .map_err(|e| anyhow::anyhow!("sim: cannot bind {}: {e}", opts.addr))?;
        let addr = listener.local_addr()?;
        let corpus = Arc::new(Corpus::new(opts.seed));
        let (stop, shutdown) = watch::channel(false);
        let inner = Arc::new(Inner {
            domains: (0..=corpus.domains().len())
                .map(|_| Limiter::default())
                .collect(),
            corpus,
            scenario: opts.scenario,
            api_key: opts.api_key,
            time_scale: opts.time_scale,
            seed: opts.seed,
            start: Instant::now(),
            pinned: AtomicUsize::new(usize::MAX),
            seq: AtomicU64::new(0),
            credits: AtomicU64::new(0),
            search: Limiter::default(),
            render: Limiter::default(),
            embed: Limiter::default(),
            page: Limiter::default(),
            shutdown: shutdown.clone(),
            port: addr.port(),
        });
        let app = router(inner.clone());
        let mut rx = shutdown;
        let task = tokio::spawn(async move {
            let serve = axum::serve(
                KillListener(listener),
                app.into_make_service_with_connect_info::<ConnHandle>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "sim: server failed");
            }
        });
        tracing::info!(%addr, scenario = %inner.scenario.name, seed = inner.seed, "sim: serving");
        Ok(SimServer {
            addr,
            inner,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Settings for a freshet pointed at this simulator: `base` (the
    /// user's, or defaults) with its data dir, search provider, resolver
    /// entries and, with `sim_embeddings`, the simulator's embeddings
    /// endpoint (else the offline `hash` embedder).
    pub fn freshet_settings(
        &self,
        base: &Settings,
        data_dir: &Path,
        sim_embeddings: bool,
    ) -> anyhow::Result<Settings> {
        let mut s = base.clone();
        s.service.data_dir = data_dir.to_path_buf();
        s.provider.base_url = self.base_url();
        s.provider.api_key = Secret::new("sim-key");
        s.provider_url = url::Url::parse(&self.base_url())?;
        s.resolve = vec![(
            "sim.test".to_string(),
            std::net::IpAddr::from([127, 0, 0, 1]),
        )];
        s.extract.resolve = [("sim.test".to_string(), "127.0.0.1".to_string())]
            .into_iter()
            .collect();
        if sim_embeddings {
            s.embed.backend = EmbedBackend::Openai;
            s.embed.base_url = format!("{}/v1", self.base_url());
            s.embed.model = crate::dataplane::embed::hash::SIM_MODEL.to_string();
            s.embed.api_key = Secret::new("sim-key");
            s.embed.send_dimensions = true;
        } else {
            s.embed.backend = EmbedBackend::Hash;
        }
        Ok(s)
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Ground truth.
    pub fn corpus(&self) -> &Corpus {
        &self.inner.corpus
    }
    /// Shared handle on the ground truth.
    pub fn corpus_arc(&self) -> Arc<Corpus> {
        self.inner.corpus.clone()
    }
    pub fn scenario(&self) -> &Scenario {
        &self.inner.scenario
    }
    pub fn stats(&self) -> SimStats {
        self.inner.stats()
    }
    /// Pin a phase (clamped to the last one); the clock no longer moves it.
    pub fn set_phase(&self, index: usize) {
        self.inner.pinned.store(
            index.min(self.inner.scenario.phases.len() - 1),
            Ordering::Relaxed,
        );
    }
    /// Let the phase clock drive the phase again.
    pub fn unpin_phase(&self) {
        self.inner.pinned.store(usize::MAX, Ordering::Relaxed);
    }
    pub fn current_phase(&self) -> usize {
        self.inner.phase()
    }
    /// What the server would serve for `url` right now (current phase's js share).
    pub fn page_now(&self, url: &url::Url) -> Option<super::corpus::SimPage> {
        let js = self.inner.scenario.phases[self.inner.phase()]
            .domain_profile(url.host_str().unwrap_or(""))
            .1;
        self.inner.corpus.page_in(url, js)
    }
    /// Graceful stop: hanging and dripping responses end at once; connections
    /// get 5 s to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            tracing::warn!("sim: graceful shutdown timed out; aborting");
            task.abort();
        }
    }
}

/// Run a simulator until `shutdown` resolves (the CLI's `sim serve`).
pub async fn serve(
    opts: SimOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let s = SimServer::start(opts).await?;
    shutdown.await;
    s.shutdown().await;
    Ok(())
}

fn router(st: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/search", post(api_search))
        .route("/api/url", post(api_url))
        .route("/v1/embeddings", post(api_embeddings))
        .route("/sim/stats", get(sim_stats))
        .route("/sim/truth", get(sim_truth))
        .fallback(|| async {
            json_err(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/search, /api/url, /sim/stats, /sim/truth",
            )
        })
        .layer(middleware::from_fn_with_state(st.clone(), dispatch_host))
        .with_state(st)
}

fn json_err(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({"error": msg}))).into_response()
}

fn too_many(retry_after: u64) -> Response {
    let mut r = json_err(StatusCode::TOO_MANY_REQUESTS, "rate limited; retry later");
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

/// Host of the request without port, lowercased.
fn req_host(req: &Request) -> Option<String> {
    let h = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))?;
    let h = h.trim().to_ascii_lowercase();
    let h = h
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h.to_string())
        .unwrap_or(h);
    Some(h.trim_end_matches('.').to_string())
}

async fn dispatch_host(State(st): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    match req_host(&req) {
        Some(h) if h.ends_with(".sim.test") => page(st, h, req).await,
        _ => next.run(req).await,
    }
}

/// Run admission, faults and latency; Ok(guard) to proceed, Err(response) otherwise.
async fn gate<'a>(
    st: &'a Inner,
    lims: &[&'a Limiter],
    p: &EndpointProfile,
    conn: Option<&ConnHandle>,
) -> Result<Vec<InFlight<'a>>, Response> {
    let mut guards = Vec::new();
    for l in lims {
        match l.admit(p) {
            Ok(g) => guards.push(g),
            Err(secs) => return Err(too_many(secs)),
        }
    }
    match st.draw_fault(p) {
        Some(Fault::Reset) if conn.is_some() => {
            for l in lims {
                l.counters.resets.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(c) = conn {
                c.kill();
            }
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
        Some(Fault::Hang) => {
            for l in lims {
                l.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            drop(guards);
            st.sleep(HANG).await;
            return Err(json_err(StatusCode::GATEWAY_TIMEOUT, "upstream timed out"));
        }
        Some(Fault::Error(s)) => {
            st.sleep(st.latency(p) / 4).await;
            return Err(json_err(s, "injected upstream error"));
        }
        _ => {}
    }
    if !st.sleep(st.latency(p)).await {
        return Err(json_err(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    }
    Ok(guards)
}

fn count(lims: &[&Limiter], r: &Response, reset: bool) {
    for l in lims {
        if !reset {
            l.counters.count_status(r.status());
        }
    }
}

/// Checks the key, then parses the JSON body; `expected` describes the body
/// in the 400 answer.
fn authed_body<T: serde::de::DeserializeOwned>(
    st: &Inner,
    headers: &HeaderMap,
    body: &[u8],
    expected: &str,
) -> Result<T, Box<Response>> {
    if let Some(r) = check_auth(st, headers) {
        return Err(Box::new(r));
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(json_err(
            StatusCode::BAD_REQUEST,
            &format!("bad JSON body, expected {expected}: {e}"),
        ))
    })
}

/// `Some(401 response)` unless the bearer key matches.
fn check_auth(st: &Inner, headers: &HeaderMap) -> Option<Response> {
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if got == Some(st.api_key.as_str()) {
        None
    } else {
        Some(json_err(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key; send `Authorization: Bearer <key>`",
        ))
    }
}

#[derive(Deserialize)]
struct SearchReq {
    s: String,
    #[allow(dead_code)]
    t: Option<String>,
}

#[derive(Deserialize)]
struct UrlReq {
    s: String,
    #[allow(dead_code)]
    t: Option<String>,
    #[allow(dead_code)]
    b: Option<bool>,
    #[allow(dead_code)]
    w: Option<u64>,
}

/// The connection handle, the headers and the body (≤ 1 MiB) of a request.
async fn split(req: Request) -> (Option<ConnHandle>, HeaderMap, Bytes) {
    let conn = req
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.clone());
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    (conn, parts.headers, body)
}

async fn api_search(State(st): State<Arc<Inner>>, req: Request) -> Response {
    let lim = [&st.search];
    st.search.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (conn, headers, body) = split(req).await;
    let (r, reset) = search_inner(&st, conn.as_ref(), &headers, &body).await;
    count(&lim, &r, reset);
    r
}

async fn search_inner(
    st: &Inner,
    conn: Option<&ConnHandle>,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, bool) {
    let req: SearchReq = match authed_body(st, headers, body, "{\"s\": query, \"t\": engine}") {
        Ok(r) => r,
        Err(r) => return (*r, false),
    };
    if req.s.trim().is_empty() {
        return (json_err(StatusCode::BAD_REQUEST, "empty query `s`"), false);
    }
    let phase = &st.scenario.phases[st.phase()];
    let _g = match gate(st, &[&st.search], &phase.search, conn).await {
        Ok(g) => g,
        Err(r) => return (r, conn.is_some_and(|c| c.kill.load(Ordering::Relaxed))),
    };
    let hits = st.corpus.search(&req.s, st.port, 10);
    st.credits.fetch_add(SEARCH_CREDITS, Ordering::Relaxed);
    (
        Json(serde_json::json!({"data": hits})).into_response(),
        false,
    )
}

async fn api_url(State(st): State<Arc<Inner>>, req: Request) -> Response {
    st.render.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (conn, headers, body) = split(req).await;
    let (r, reset) = render_inner(&st, conn.as_ref(), &headers, &body).await;
    count(&[&st.render], &r, reset);
    r
}

async fn render_inner(
    st: &Inner,
    conn: Option<&ConnHandle>,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, bool) {
    let req: UrlReq = match authed_body(
        st,
        headers,
        body,
        "{\"s\": url, \"t\": \"url\", \"b\": true, \"w\": wait_ms}",
    ) {
        Ok(r) => r,
        Err(r) => return (*r, false),
    };
    let url = match url::Url::parse(&req.s) {
        Ok(u) => u,
        Err(e) => {
            return (
                json_err(StatusCode::BAD_REQUEST, &format!("`s` is not a URL: {e}")),
                false,
            )
        }
    };
    let phase = &st.scenario.phases[st.phase()];
    let _g = match gate(st, &[&st.render], &phase.render, conn).await {
        Ok(g) => g,
        Err(r) => return (r, conn.is_some_and(|c| c.kill.load(Ordering::Relaxed))),
    };
    let Some(page) = st.corpus.page(&url) else {
        return (
            json_err(
                StatusCode::NOT_FOUND,
                &format!("cannot render {url}: no such page"),
            ),
            false,
        );
    };
    match page.kind {
        PageKind::Hostile(HostileKind::RedirectLoop) => {
            return (
                json_err(StatusCode::BAD_GATEWAY, "cannot render: too many redirects"),
                false,
            )
        }
        PageKind::Hostile(HostileKind::SlowDrip) => {
            return (
                json_err(
                    StatusCode::GATEWAY_TIMEOUT,
                    "cannot render: page load timed out",
                ),
                false,
            )
        }
        _ => {}
    }
    st.credits.fetch_add(RENDER_CREDITS, Ordering::Relaxed);
    (Json(serde_json::json!({"data": {"url": page.url, "title": page.title, "markdown": page.rendered_markdown}})).into_response(), false)
}

async fn sim_stats(State(st): State<Arc<Inner>>) -> Json<SimStats> {
    Json(st.stats())
}

async fn sim_truth(State(st): State<Arc<Inner>>, RawQuery(q): RawQuery) -> Response {
    let Some(u) = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
    else {
        return json_err(StatusCode::BAD_REQUEST, "missing `url` query parameter");
    };
    let Ok(url) = url::Url::parse(&u) else {
        return json_err(StatusCode::BAD_REQUEST, "`url` is not a URL");
    };
    let js = st.scenario.phases[st.phase()]
        .domain_profile(url.host_str().unwrap_or(""))
        .1;
    match st.corpus.page_in(&url, js) {
        Some(p) => Json(serde_json::json!({
            "url": p.url, "title": p.title, "kind": p.kind, "status": p.status,
            "content_type": p.content_type, "article_text": p.article_text,
            "rendered_markdown": p.rendered_markdown, "body_bytes": p.body.len(),
        }))
        .into_response(),
        None => json_err(StatusCode::NOT_FOUND, "no such page"),
    }
}

// ---------------------------------------------------------------- pages

async fn page(st: Arc<Inner>, host: String, req: Request) -> Response {
    let conn = req
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.clone());
    let di = if host == HOSTILE_DOMAIN {
        Some(st.corpus.domains().len())
    } else {
        st.corpus.domains().iter().position(|d| *d == host)
    };
    st.page.counters.requests.fetch_add(1, Ordering::Relaxed);
    let Some(di) = di else {
        let r = (StatusCode::NOT_FOUND, "unknown simulated domain").into_response();
        count(&[&st.page], &r, false);
        return r;
    };
    let dl = &st.domains[di];
    dl.counters.requests.fetch_add(1, Ordering::Relaxed);
    let lims = [&st.page, dl];
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let (method, path) = (
        req.method().clone(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
    );
    drop(req);
    let (r, reset) = page_inner(&st, &host, &lims, conn.as_ref(), &method, &path).await;
    count(&lims, &r, reset);
    // Every fourth site compresses its pages, as many real servers do.
    if gzip && di % 4 == 1 && host != HOSTILE_DOMAIN && r.status() == StatusCode::OK {
        return gzip_response(r).await;
    }
    r
}

/// The same response with a gzip-compressed body.
async fn gzip_response(r: Response) -> Response {
    use std::io::Write as _;
    let (mut parts, body) = r.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "body too large to compress",
        )
            .into_response();
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if encoder.write_all(&bytes).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "compression failed").into_response();
    }
    let Ok(compressed) = encoder.finish() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "compression failed").into_response();
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    Response::from_parts(parts, Body::from(compressed))
}

async fn page_inner(
    st: &Inner,
    host: &str,
    lims: &[&Limiter],
    conn: Option<&ConnHandle>,
    method: &Method,
    path: &str,
) -> (Response, bool) {
    if method != Method::GET && method != Method::HEAD {
        return (
            (StatusCode::METHOD_NOT_ALLOWED, "GET only").into_response(),
            false,
        );
    }
    let url = match url::Url::parse(&format!("http://{host}:{}{path}", st.port)) {
        Ok(u) => u,
        Err(_) => return ((StatusCode::BAD_REQUEST, "bad path").into_response(), false),
    };
    if host == HOSTILE_DOMAIN {
        return (hostile(st, &url).await, false);
    }
    let (profile, js) = st.scenario.phases[st.phase()].domain_profile(host);
    // Only the domain's own limiter enforces limits; the aggregate counts.
    let _g = match gate(st, &lims[1..], &profile, conn).await {
        Ok(g) => g,
        Err(r) => return (r, conn.is_some_and(|c| c.kill.load(Ordering::Relaxed))),
    };
    let _g2 = InFlightCount::new(lims[0]);
    match url.path() {
        "/robots.txt" => {
            return (
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    "User-agent: *\nAllow: /\n",
                )
                    .into_response(),
                false,
            )
        }
        "/" => {
            let links = st
                .corpus
                .domain_links(host, st.port, 40)
                .unwrap_or_default();
            let mut h = format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{host}</title></head><body><h1>{host}</h1><ul>");
            for (u, t) in links {
                h.push_str(&format!("<li><a href=\"{}\">{}</a></li>", esc(&u), esc(&t)));
            }
            h.push_str("</ul></body></html>");
            return (
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], h).into_response(),
                false,
            );
        }
        path if path.starts_with("/_content/") => {
            // The API a JS shell's script calls for its article.
            let mut article = url.clone();
            article.set_path(&path["/_content".len()..]);
            return match st.corpus.content_json(&article) {
                Some(v) => (Json(v).into_response(), false),
                None => (json_err(StatusCode::NOT_FOUND, "no such article"), false),
            };
        }
        _ => {}
    }
    let Some(p) = st.corpus.page_in(&url, js) else {
        return ((StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], "<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1><p>The requested page does not exist.</p></body></html>").into_response(), false);
    };
    let mut r = Response::new(Body::from(p.body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&p.content_type).unwrap_or(HeaderValue::from_static("text/html")),
    );
    if let Some(t) = st.corpus.published(&url) {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(t)) {
            r.headers_mut().insert(header::LAST_MODIFIED, v);
        }
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    (r, false)
}

/// Counts the aggregate `page` endpoint as in flight.
struct InFlightCount<'a>(&'a Counters);
impl<'a> InFlightCount<'a> {
    fn new(l: &'a Limiter) -> Self {
        l.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightCount(&l.counters)
    }
}
impl Drop for InFlightCount<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn hostile(st: &Inner, url: &url::Url) -> Response {
    let Some(p) = st.corpus.page(url) else {
        return (StatusCode::NOT_FOUND, "no such hostile page").into_response();
    };
    let ct =
        HeaderValue::from_str(&p.content_type).unwrap_or(HeaderValue::from_static("text/html"));
    match p.kind {
        PageKind::Hostile(HostileKind::RedirectLoop) => {
            let loc = p.location.unwrap_or_default();
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        PageKind::Hostile(HostileKind::SlowDrip) => {
            let chunks: Vec<Bytes> = p.body.chunks(8).map(Bytes::copy_from_slice).collect();
            let max = SLOW_DRIP_MAX.as_secs() as usize;
            let rx = st.shutdown.clone();
            let stream = futures::stream::unfold(
                (chunks.into_iter().take(max), rx, true),
                |(mut it, mut rx, first)| async move {
                    if !first {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = rx.wait_for(|v| *v) => return None,
                        }
                    }
                    let c = it.next()?;
                    Some((Ok::<_, io::Error>(c), (it, rx, false)))
                },
            );
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            r
        }
        _ => {
            let mut r = Response::new(Body::from(p.body));
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            r
        }
    }
}

#[derive(Deserialize)]
struct EmbedReq {
    #[serde(default)]
    model: String,
    input: EmbedInput,
    #[serde(default)]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

/// Dimension of the simulator's vectors when the request names none.
pub const EMBED_DEFAULT_DIM: usize = 384;
/// Most inputs one embeddings request may carry (like OpenAI's 2048).
pub const EMBED_MAX_INPUTS: usize = 2048;

async fn api_embeddings(State(st): State<Arc<Inner>>, req: Request) -> Response {
    st.embed.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (conn, headers, body) = split(req).await;
    let (r, reset) = embed_inner(&st, conn.as_ref(), &headers, &body).await;
    count(&[&st.embed], &r, reset);
    openai_error_shape(r).await
}

/// OpenAI clients expect `{"error": {"message", "type", "code"}}`: rewrap
/// the simulator's plain error bodies, keeping status and headers.
async fn openai_error_shape(r: Response) -> Response {
    if r.status().is_success() {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    let kind = match parts.status.as_u16() {
        401 => "invalid_request_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": parts.status.as_u16().to_string()}});
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// OpenAI-compatible embeddings. The vectors are the `hash` embedder's
/// (feature hashing: lexical, deterministic), so a client can reproduce them
/// offline; the cost model makes batch size and concurrency matter: each
/// request takes the phase's overhead latency plus `per_item_ms` per input,
/// stretched by `in_flight / knee` once more than `knee` requests run at once.
async fn embed_inner(
    st: &Inner,
    conn: Option<&ConnHandle>,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, bool) {
    let req: EmbedReq = match authed_body(
        st,
        headers,
        body,
        "{\"model\": name, \"input\": text or [texts]}",
    ) {
        Ok(r) => r,
        Err(r) => return (*r, false),
    };
    let inputs = match req.input {
        EmbedInput::One(t) => vec![t],
        EmbedInput::Many(v) => v,
    };
    if inputs.is_empty() || inputs.len() > EMBED_MAX_INPUTS {
        return (
            json_err(
                StatusCode::BAD_REQUEST,
                &format!("`input` must hold 1..={EMBED_MAX_INPUTS} texts"),
            ),
            false,
        );
    }
    let dim = req.dimensions.unwrap_or(EMBED_DEFAULT_DIM);
    if !(8..=4096).contains(&dim) {
        return (
            json_err(
                StatusCode::BAD_REQUEST,
                "`dimensions` must be within 8..=4096",
            ),
            false,
        );
    }
    let phase = &st.scenario.phases[st.phase()];
    let profile = &phase.embed;
    let _g = match gate(st, &[&st.embed], profile, conn).await {
        Ok(g) => g,
        Err(r) => return (r, conn.is_some_and(|c| c.kill.load(Ordering::Relaxed))),
    };
    // Per-input cost, stretched past the concurrency knee.
    let in_flight = st.embed.counters.in_flight.load(Ordering::Relaxed).max(1);
    let stretch = profile
        .knee
        .map_or(1.0, |k| (in_flight as f64 / k as f64).max(1.0));
    let extra = Duration::from_secs_f64(profile.per_item_ms * inputs.len() as f64 / 1e3 * stretch);
    if !st.sleep(extra).await {
        return (
            json_err(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            false,
        );
    }
    let embedder = crate::dataplane::embed::hash::HashEmbedder::new(dim);
    let mut tokens = 0usize;
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += text.split_whitespace().count();
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedder.vector(text)})
        })
        .collect();
    let model = if req.model.is_empty() {
        "freshet-sim-hash".to_string()
    } else {
        req.model
    };
    (
        Json(serde_json::json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
        }))
        .into_response(),
        false,
    )
}
