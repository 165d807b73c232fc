//! The service's HTTP endpoint: health, Prometheus metrics and task ingest.
//!
//! - `GET /healthz`: the process is up;
//! - `GET /readyz`: the pipeline accepts work (503 while draining, and
//!   `degraded: …` 503 while an upstream circuit is open, see
//!   [`crate::dataplane::circuit`]);
//! - `GET /metrics`: Prometheus text format;
//! - `POST /v1/ingest`: one JSON task per line of the body (at most 16 MiB);
//!   answers `{"accepted": n, "rejected": m}`; malformed lines are
//!   dead-lettered with their line number. After
//!   `[service] ingest_max_invalid_lines` of them (default 100) the rest of
//!   the body is not read: one summary dead letter (`too_many_invalid`)
//!   names the line, and the answer is 400 with `stopped_at_line`. While
//!   an upstream is down, or when a line finds no room in the pipeline
//!   within [`INGEST_ROOM_WAIT`], it answers 503 with `Retry-After` (and
//!   `stopped_at_line`, `busy` when part of the body was taken). It needs
//!   `Authorization: Bearer <ingest_token or admin_token>` (401 otherwise;
//!   `[service] open_ingest = true` lifts this on loopback when no token is
//!   set) and `Content-Type: application/x-ndjson` or `application/json`
//!   (415 otherwise), so a web page in an operator's browser cannot post
//!   tasks with a plain form or a "simple" cross-origin request;
//! - `POST /v1/search`: nearest chunks to a query, with filters
//!   ([`crate::service::search`]); needs the read token (or the admin token).
//!
//! - `POST /v1/dlq/replay`: re-submits the task of every dead letter
//!   ([`crate::dataplane::dlq::Replayer`]); needs the admin token, answers
//!   `{"replayed": n, "kept": k}` (409 while another replay runs) and is
//!   audited. `freshet dlq replay` calls it when this instance holds the
//!   data dir.
//!
//! - `/mcp`: the MCP server's streamable HTTP transport
//!   ([`crate::service::mcp`]), when served.
//!
//! `/healthz`, `/readyz` and `/metrics` stay open (probes and scrapers).
//!
//! It binds to loopback by default (`[service] listen`), and also serves the
//! admin API ([`crate::service::admin`]) when one is given.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::dataplane::source::embedded::EmbeddedSource;

/// Largest ingest body.
pub const MAX_INGEST_BYTES: usize = 16 * 1024 * 1024;

/// Shared state of the endpoint.
#[derive(Clone)]
pub struct HttpState {
    /// Where ingested tasks go.
    pub source: EmbeddedSource,
    /// Malformed lines one ingest request may carry before it is answered
    /// 400 (`[service] ingest_max_invalid_lines`).
    pub ingest_max_invalid: u64,
    /// The pipeline's upstream circuits: while one is open, `/readyz`
    /// reports the stage degraded and ingest answers 503.
    pub circuits: crate::dataplane::circuit::Circuits,
    /// Metrics renderer.
    pub metrics: PrometheusHandle,
    /// False once draining starts.
    pub ready: Arc<AtomicBool>,
    /// The admin API, when configured.
    pub admin: Option<Arc<crate::service::admin::AdminState>>,
    /// What `POST /v1/search` searches, when served.
    pub search: Option<crate::service::search::Searcher>,
    /// What `POST /v1/dlq/replay` replays, when served.
    pub dlq: Option<Arc<crate::dataplane::dlq::Replayer>>,
    /// What the MCP tools at `/mcp` work on, when served.
    pub mcp: Option<Arc<crate::service::mcp::McpBackend>>,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    router_until(state, tokio_util::sync::CancellationToken::new(), true)
}

/// The router; `stop` ends the MCP transport's open streams (so a graceful
/// shutdown does not wait on them), `loopback` says whether the listener is
/// on a loopback address.
pub fn router_until(
    state: HttpState,
    stop: tokio_util::sync::CancellationToken,
    loopback: bool,
) -> Router {
    let admin = state.admin.clone();
    let mcp = state.mcp.clone();
    let base = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/ingest", post(ingest))
        .route("/v1/search", post(search))
        .route("/v1/dlq/replay", post(replay_dlq))
        .layer(DefaultBodyLimit::max(MAX_INGEST_BYTES))
        .with_state(state);
    let base = match mcp {
        Some(backend) => base.merge(crate::service::mcp::router(backend, loopback, stop)),
        None => base,
    };
    match admin {
        Some(admin) => base.merge(crate::service::admin::router(admin)),
        None => base,
    }
}

async fn readyz(State(st): State<HttpState>) -> Response {
    if !st.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let open: Vec<String> = st
        .circuits
        .status()
        .into_iter()
        .filter(|c| c.open)
        .map(|c| {
            format!(
                "{} upstream down for {:.1} s ({})",
                c.stage.as_str(),
                c.open_for_ms as f64 / 1e3,
                c.last_error
            )
        })
        .collect();
    if open.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: {}; work is held, not dropped\n", open.join("; ")),
        )
            .into_response()
    }
}

/// Seconds a client is asked to wait (`Retry-After`) while the pipeline
/// holds work for an upstream that is down, or has no room.
pub const BUSY_RETRY_AFTER_S: u64 = 5;

/// How long one ingested line waits for room in the pipeline before the
/// request is answered 503.
pub const INGEST_ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// An ingest answer that is not a plain success: `status` with the feed's
/// report (if any) and `message` as `error`; a 503 also says when to retry.
fn stopped(
    status: StatusCode,
    report: Option<crate::dataplane::source::embedded::FeedReport>,
    message: String,
) -> Response {
    let mut body = report
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    body["error"] = serde_json::Value::String(message);
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(BUSY_RETRY_AFTER_S),
        );
    }
    response
}

async fn metrics(State(st): State<HttpState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn search(
    State(st): State<HttpState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    crate::service::search::endpoint(st.search.as_ref(), st.admin.as_deref(), &headers, &body).await
}

async fn replay_dlq(
    State(st): State<HttpState>,
    axum::extract::Query(q): axum::extract::Query<crate::service::admin::OperatorQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    use crate::control::audit::{Event, EventKind};
    use crate::service::admin::{authorize, error, Role};
    let (Some(admin), Some(replayer)) = (&st.admin, &st.dlq) else {
        return error(
            StatusCode::NOT_FOUND,
            "this instance does not serve dead-letter replay",
        );
    };
    if let Err(r) = authorize(admin, &headers, "POST /v1/dlq/replay", Role::Admin) {
        return *r;
    }
    if !st.ready.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "draining; replay later");
    }
    let operator = match q.operator() {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let Some(result) = replayer.replay().await else {
        return error(StatusCode::CONFLICT, "a replay is already running");
    };
    let detail = match &result {
        Ok(done) => format!(
            "replayed {} dead letters from {}; {} kept",
            done.replayed,
            replayer.location(),
            done.kept
        ),
        Err(e) => format!("replay of {} failed: {e}", replayer.location()),
    };
    let event = Event {
        actor: serde_json::json!({"operator": operator}),
        detail,
        ..Default::default()
    };
    if let Err(e) = admin.control.audit.append(EventKind::DlqReplayed, event) {
        // The replay happened (or failed) either way; say so plainly.
        tracing::error!(error = %e, "a dead-letter replay could not be audited");
    }
    match result {
        Ok(done) => {
            Json(serde_json::json!({"replayed": done.replayed, "kept": done.kept})).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("replay failed: {e}"),
        ),
    }
}

/// Content types `POST /v1/ingest` accepts.
pub const INGEST_CONTENT_TYPES: &[&str] = &["application/x-ndjson", "application/json"];

async fn ingest(
    State(st): State<HttpState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::service::admin::{authorize, Access, Role};
    let allowed = match &st.admin {
        Some(admin) => authorize(admin, &headers, "POST /v1/ingest", Role::Ingest),
        // No admin state: no tokens known, so only refusals are possible.
        None => Access::default()
            .check(Role::Ingest, &headers)
            .map_err(|why| {
                Box::new(
                    (
                        StatusCode::UNAUTHORIZED,
                        Json(serde_json::json!({"error": why})),
                    )
                        .into_response(),
                )
            }),
    };
    if let Err(r) = allowed {
        return *r;
    }
    let mime = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !INGEST_CONTENT_TYPES.contains(&mime.as_str()) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(serde_json::json!({
                "error": format!(
                    "Content-Type `{mime}` is not accepted; send one JSON task per line as application/x-ndjson (or application/json)"
                )
            })),
        )
            .into_response();
    }
    if !st.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "draining; retry on another instance"})),
        )
            .into_response();
    }
    let held = st.circuits.open();
    if !held.is_empty() {
        let stages: Vec<&str> = held.iter().map(|s| s.as_str()).collect();
        return stopped(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!(
                "the {} upstream is down; work already taken is held, new work is refused until it is back",
                stages.join(" and ")
            ),
        );
    }
    let limits = crate::dataplane::source::embedded::FeedLimits {
        max_invalid: Some(st.ingest_max_invalid),
        room_wait: Some(INGEST_ROOM_WAIT),
    };
    match st.source.feed_lines(&body[..], "ingest", limits).await {
        Ok(report) if report.stopped_at_line.is_some() => {
            let line = report.stopped_at_line.unwrap_or_default();
            let (status, why) = if report.busy {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the pipeline has no room (an upstream is slow or down)".to_string(),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("more than {} malformed lines", st.ingest_max_invalid),
                )
            };
            stopped(
                status,
                Some(report),
                format!(
                    "{why}; reading stopped at line {line}: it and the lines after it were not read, the tasks before it were accepted"
                ),
            )
        }
        Ok(report) => (StatusCode::OK, Json(report)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": format!("ingest failed: {e}")})),
        )
            .into_response(),
    }
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e} (set [service] listen)"))?;
    let bound = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let app = router_until(state, stop.clone(), bound.ip().is_loopback());
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop.cancel();
            })
            .await
        {
            tracing::error!(error = %e, "HTTP endpoint failed");
        }
    });
    Ok((bound, handle))
}
