//! The admin API (docs/ARCHITECTURE.md §6): read the config, change knobs by hand,
//! roll back to an earlier version, read the audit log.
//!
//! - `GET  /v1/config`: the knob snapshot in force (version + knobs);
//! - `PATCH /v1/knobs`: `{"changes": [{"knob", "value", "reason"}], "operator": "alice", "force": false}`;
//!   the changes pass the guard unless `force` (then only the knobs' own
//!   type and range checks apply), and are recorded with the operator's name;
//! - `POST /v1/rollback/{version}?operator=alice`: back to an earlier
//!   snapshot (the last 256 are kept);
//! - `GET  /v1/audit?after=SEQ&limit=N`: audit records;
//! - `POST /v1/controller/pause?operator=alice`, `POST /v1/controller/resume?operator=alice`:
//!   stop and restart the controller's decisions (it keeps observing);
//! - `GET  /v1/controller`: paused or not, and what the controller did so far;
//! - `GET  /v1/approvals`: the proposals waiting for a person's approval
//!   (read token); `POST /v1/approvals/{id}/approve` `{"operator"}` applies
//!   one (then the controller bakes it), `POST /v1/approvals/{id}/reject`
//!   `{"operator", "reason"}` drops it (admin token). 404 for an id not
//!   waiting, 409 (with the verdicts) when the guard no longer passes it.
//!
//! Every `/v1/*` call needs a bearer token ([`Access`]): changes need
//! `Authorization: Bearer <service.admin_token>`; the reading calls need
//! `service.read_token` (or the admin token), `POST /v1/ingest` needs
//! `service.ingest_token` (or the admin token). A missing or wrong token is
//! answered 401 and recorded in the audit log (without the token). Tokens
//! are compared as SHA-256 digests in constant time, so neither their
//! content nor their length leaks through timing. Changes are serialized by
//! one lock, and each is fsynced to the audit log **before** the knob swap
//! it describes.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::control::approvals::ApprovalError;
use crate::control::audit::{self, Event, EventKind};
use crate::control::guard::Verdict;
use crate::control::rollout::{self, ApplyError};
use crate::control::{ControlState, ControllerReport};
use crate::knobs::{self, Change};
use crate::settings::{Secret, ServiceSettings};

/// Most changes one request may carry.
pub const MAX_CHANGES: usize = 64;

/// What the admin API works on.
#[derive(Debug)]
pub struct AdminState {
    /// Knobs, guard, change lock, cooldowns and audit log, shared with the
    /// controller.
    pub control: Arc<ControlState>,
    /// The bearer tokens of the `/v1/*` calls.
    pub access: Access,
    /// The running controller's report, once it runs.
    pub controller: std::sync::Mutex<Option<Arc<std::sync::Mutex<ControllerReport>>>>,
    /// Refusals are audited at most once a second; the rest are counted
    /// and written as one record when the second is over, so a flood cannot
    /// grow the log without limit and no refusal goes unrecorded.
    refusals: Arc<std::sync::Mutex<(Option<Instant>, u64)>>,
}

impl AdminState {
    /// State over `control`, with `access` guarding every call.
    pub fn new(control: Arc<ControlState>, access: Access) -> AdminState {
        AdminState {
            control,
            access,
            controller: Default::default(),
            refusals: Default::default(),
        }
    }
}

impl AdminState {
    /// A copy of the running controller's report, once it runs.
    pub fn controller_report(&self) -> Option<ControllerReport> {
        self.controller
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/config", get(config))
        .route("/v1/knobs", patch(patch_knobs))
        .route("/v1/rollback/{version}", post(rollback))
        .route("/v1/audit", get(audit_records))
        .route("/v1/controller", get(controller_status))
        .route("/v1/controller/pause", post(pause))
        .route("/v1/controller/resume", post(resume))
        .route("/v1/approvals", get(approvals_list))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/reject", post(reject))
        .with_state(state)
}

/// A JSON error answer: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// What a `/v1/*` call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Changes: knobs, rollback, pause, resume, approvals (`admin_token`).
    Admin,
    /// `POST /v1/ingest` (`ingest_token`, else `admin_token`).
    Ingest,
    /// Reading calls: config, audit, controller, approvals (`read_token`, else `admin_token`).
    Read,
}

/// The bearer tokens of the `/v1/*` calls (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Access {
    admin: Secret,
    ingest: Secret,
    read: Secret,
    open_ingest: bool,
}

/// Why the service must not start with these tokens on this address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to start: [service] listen = {listen} is not a loopback address and no ingest or admin token is set, so anyone who can reach it could add and delete documents and spend search credits; set FRESHET_SERVICE__INGEST_TOKEN (or FRESHET_SERVICE__ADMIN_TOKEN), or listen on 127.0.0.1 (where [service] open_ingest = true allows ingest without a token)")]
pub struct OpenToTheNetwork {
    /// The address.
    pub listen: String,
}

impl Access {
    /// The tokens of `[service]`.
    pub fn from_settings(s: &ServiceSettings) -> Access {
        Access {
            admin: s.admin_token.clone(),
            ingest: s.ingest_token.clone(),
            read: s.read_token.clone(),
            open_ingest: s.open_ingest,
        }
    }

    /// The startup check: without any ingest or admin token, ingest may
    /// only be served on a loopback address. An address that does not
    /// parse is left to the listener to report.
    pub fn check_listen(&self, listen: &str) -> Result<(), OpenToTheNetwork> {
        let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
            return Ok(());
        };
        if self.admin.is_empty() && self.ingest.is_empty() && !addr.ip().is_loopback() {
            return Err(OpenToTheNetwork {
                listen: listen.to_string(),
            });
        }
        Ok(())
    }

    /// Whether `role` is allowed with no token at all (only ingest, on
    /// loopback, with `open_ingest` and no token configured).
    fn open(&self, role: Role) -> bool {
        role == Role::Ingest && self.open_ingest && self.admin.is_empty() && self.ingest.is_empty()
    }

    /// `Ok` when the request's bearer token may do `role`, else why not.
    pub fn check(&self, role: Role, headers: &HeaderMap) -> Result<(), &'static str> {
        if self.open(role) {
            return Ok(());
        }
        let accepted: Vec<&Secret> = match role {
            Role::Admin => vec![&self.admin],
            Role::Ingest => vec![&self.ingest, &self.admin],
            Role::Read => vec![&self.read, &self.admin],
        }
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
        if accepted.is_empty() {
            return Err(match role {
                Role::Admin => "no admin token is configured (set FRESHET_SERVICE__ADMIN_TOKEN)",
                Role::Ingest => "no ingest token is configured (set FRESHET_SERVICE__INGEST_TOKEN, or [service] open_ingest = true on a loopback address)",
                Role::Read => "no read token is configured (set FRESHET_SERVICE__READ_TOKEN or FRESHET_SERVICE__ADMIN_TOKEN)",
            });
        }
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given else {
            return Err("missing bearer token");
        };
        // Every candidate is compared, so timing does not tell which matched.
        let matched = accepted.iter().fold(false, |m, t| {
            m | tokens_equal(given.as_bytes(), t.expose().as_bytes())
        });
        if matched {
            Ok(())
        } else {
            Err("wrong bearer token")
        }
    }
}

/// Constant time in the content and the length of both tokens: SHA-256
/// digests (fixed length) compared with `subtle`.
fn tokens_equal(given: &[u8], want: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let a = Sha256::digest(given);
    let b = Sha256::digest(want);
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// 401 unless the bearer token may do `role`; refusals are audited.
pub(crate) fn authorize(
    st: &AdminState,
    headers: &HeaderMap,
    what: &str,
    role: Role,
) -> Result<(), Box<Response>> {
    let Err(why) = st.access.check(role, headers) else {
        return Ok(());
    };
    let suppressed = {
        let mut r = st.refusals.lock().unwrap_or_else(|p| p.into_inner());
        match r.0 {
            Some(at) if at.elapsed() < REFUSAL_WINDOW => {
                r.1 += 1;
                if r.1 == 1 {
                    // The first one counted in this second: write the count
                    // when the second is over (unless a later refusal, after
                    // the second, writes it first).
                    flush_refusals_at(st, at + REFUSAL_WINDOW);
                }
                None
            }
            _ => {
                let n = r.1;
                *r = (Some(Instant::now()), 0);
                Some(n)
            }
        }
    };
    if let Some(earlier) = suppressed {
        let more = if earlier > 0 {
            format!(
                " ({earlier} more refusals in the previous second were not recorded one by one)"
            )
        } else {
            String::new()
        };
        let _ = st.control.audit.append(
            EventKind::Unauthorized,
            Event {
                detail: format!("{what}: {why}{more}"),
                ..Default::default()
            },
        );
    }
    Err(Box::new(error(
        StatusCode::UNAUTHORIZED,
        format!("{why}; send `Authorization: Bearer <token>`"),
    )))
}

/// Refusals within this long of an audited one are counted, not written.
const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// At `when`, writes one record for the refusals counted since the last one.
fn flush_refusals_at(st: &AdminState, when: Instant) {
    let refusals = st.refusals.clone();
    let control = st.control.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(when.into()).await;
        let n = {
            let mut r = refusals.lock().unwrap_or_else(|p| p.into_inner());
            let n = r.1;
            if n > 0 {
                *r = (Some(Instant::now()), 0);
            }
            n
        };
        if n > 0 {
            let _ = control.audit.append(
                EventKind::Unauthorized,
                Event {
                    detail: format!(
                        "{n} more refusals in the previous second were not recorded one by one"
                    ),
                    ..Default::default()
                },
            );
        }
    });
}

async fn config(State(st): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "GET /v1/config", Role::Read) {
        return *r;
    }
    let snapshot = st.control.live.load();
    Json(json!({"version": snapshot.version, "knobs": snapshot.knobs})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRequest {
    changes: Vec<Change>,
    operator: String,
    #[serde(default)]
    force: bool,
}

async fn patch_knobs(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&st, &headers, "PATCH /v1/knobs", Role::Admin) {
        return *r;
    }
    let req: PatchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"changes\": [{{\"knob\", \"value\", \"reason\"}}], \"operator\": name, \"force\": bool}}: {e}"),
            )
        }
    };
    let operator = req.operator.trim();
    if operator.is_empty() || operator.len() > 128 {
        return error(
            StatusCode::BAD_REQUEST,
            "`operator` must name who makes the change (1..=128 bytes)",
        );
    }
    if req.changes.is_empty() || req.changes.len() > MAX_CHANGES {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`changes` must hold 1..={MAX_CHANGES} changes"),
        );
    }
    let c = &st.control;
    let _serial = c.change_lock.lock().await;
    let current = c.live.load();
    let verdicts: Vec<Verdict> = if req.force {
        req.changes
            .iter()
            .map(
                |ch| match knobs::spec(&ch.knob).map(|spec| knobs::check_value(spec, &ch.value)) {
                    Some(Ok(())) => Verdict::Accepted {
                        knob: ch.knob.clone(),
                        value: ch.value.clone(),
                    },
                    Some(Err(e)) => Verdict::Rejected {
                        knob: ch.knob.clone(),
                        proposed: ch.value.clone(),
                        reason: e.to_string(),
                    },
                    None => Verdict::Rejected {
                        knob: ch.knob.clone(),
                        proposed: ch.value.clone(),
                        reason: format!("unknown knob `{}`", ch.knob),
                    },
                },
            )
            .collect()
    } else {
        c.guard()
            .check_operator(&req.changes, &current.knobs, c.since_change())
    };
    let actor = json!({"operator": operator, "force": req.force});
    let applied: Vec<Change> = verdicts.iter().filter_map(Verdict::change).collect();
    let verdict_json = serde_json::to_value(&verdicts).unwrap_or_default();
    let refuse = |reason: String| {
        let _ = c.audit.append(
            EventKind::Rejected,
            Event {
                from_version: Some(current.version),
                actor: actor.clone(),
                verdict: verdict_json.clone(),
                detail: reason.clone(),
                ..Default::default()
            },
        );
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": reason, "version": current.version, "verdicts": verdicts})),
        )
            .into_response()
    };
    if applied.is_empty() {
        return refuse("no change passed the guard".into());
    }
    let knobs = match current.knobs.apply_patch(&applied) {
        Ok(k) => k,
        Err(e) => return refuse(e.to_string()),
    };
    let detail = req
        .changes
        .iter()
        .map(|ch| ch.reason.as_str())
        .filter(|r| !r.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let result = rollout::apply(
        &c.live,
        &c.audit,
        &current,
        knobs,
        EventKind::Override,
        Event {
            actor: actor.clone(),
            verdict: verdict_json.clone(),
            detail,
            ..Default::default()
        },
    );
    match result {
        Ok((_, swapped)) => {
            c.note_changed(&swapped.diff);
            Json(
                json!({"version": swapped.new.version, "diff": swapped.diff, "verdicts": verdicts}),
            )
            .into_response()
        }
        Err(e) => apply_error(e),
    }
}

fn apply_error(e: ApplyError) -> Response {
    let status = match e {
        ApplyError::Audit(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ApplyError::Conflict(_) => StatusCode::CONFLICT,
        ApplyError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, e.to_string())
}

#[derive(Debug, Deserialize)]
struct RollbackQuery {
    operator: Option<String>,
}

async fn rollback(
    State(st): State<Arc<AdminState>>,
    Path(version): Path<u64>,
    Query(q): Query<RollbackQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&st, &headers, "POST /v1/rollback", Role::Admin) {
        return *r;
    }
    let operator = q.operator.unwrap_or_default();
    if operator.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "add ?operator=<name> to say who rolls back",
        );
    }
    let c = &st.control;
    let _serial = c.change_lock.lock().await;
    let current = c.live.load();
    let Some(target) = c.live.snapshot(version) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("version {version} is not kept (the last 256 versions are)"),
        );
    };
    let result = rollout::apply(
        &c.live,
        &c.audit,
        &current,
        target.knobs.clone(),
        EventKind::RolledBack,
        Event {
            actor: json!({"operator": operator}),
            detail: format!("rollback to the knobs of version {version}"),
            ..Default::default()
        },
    );
    match result {
        Ok((_, swapped)) => {
            c.note_changed(&swapped.diff);
            Json(json!({"version": swapped.new.version, "diff": swapped.diff})).into_response()
        }
        Err(e) => apply_error(e),
    }
}

/// `?operator=<name>`: who does a change (1..=128 bytes).
#[derive(Debug, Deserialize)]
pub(crate) struct OperatorQuery {
    operator: Option<String>,
}

impl OperatorQuery {
    /// The operator's name, or the 400 answer saying what is missing.
    pub(crate) fn operator(&self) -> Result<&str, Box<Response>> {
        let operator = self.operator.as_deref().unwrap_or_default().trim();
        if operator.is_empty() || operator.len() > 128 {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "add ?operator=<name> (1..=128 bytes) to say who does this",
            )));
        }
        Ok(operator)
    }
}

async fn pause(
    State(st): State<Arc<AdminState>>,
    Query(q): Query<OperatorQuery>,
    headers: HeaderMap,
) -> Response {
    set_paused(&st, q, &headers, true)
}

async fn resume(
    State(st): State<Arc<AdminState>>,
    Query(q): Query<OperatorQuery>,
    headers: HeaderMap,
) -> Response {
    set_paused(&st, q, &headers, false)
}

fn set_paused(st: &AdminState, q: OperatorQuery, headers: &HeaderMap, paused: bool) -> Response {
    let what = if paused {
        "POST /v1/controller/pause"
    } else {
        "POST /v1/controller/resume"
    };
    if let Err(r) = authorize(st, headers, what, Role::Admin) {
        return *r;
    }
    let operator = match q.operator() {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let changed = st.control.set_paused(paused);
    if changed {
        let kind = if paused {
            EventKind::Paused
        } else {
            EventKind::Resumed
        };
        if let Err(e) = st.control.audit.append(
            kind,
            Event {
                actor: json!({"operator": operator}),
                ..Default::default()
            },
        ) {
            // Undo: an unrecorded pause must not take effect.
            st.control.set_paused(!paused);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("not done: the audit log cannot be written ({e})"),
            );
        }
    }
    Json(json!({"paused": paused, "changed": changed})).into_response()
}

async fn controller_status(State(st): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "GET /v1/controller", Role::Read) {
        return *r;
    }
    let report = st.controller_report();
    Json(json!({
        "running": report.is_some(),
        "paused": st.control.paused(),
        "report": report,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn audit_records(
    State(st): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, "GET /v1/audit", Role::Read) {
        return *r;
    }
    match audit::read_records(st.control.audit.path()) {
        Ok(records) => {
            let after = q.after.unwrap_or(0);
            let limit = q.limit.unwrap_or(100).min(1000);
            let page: Vec<Value> = records
                .into_iter()
                .filter(|r| r.seq > after)
                .take(limit)
                .map(|r| serde_json::to_value(r).unwrap_or_default())
                .collect();
            Json(json!({"records": page})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    operator: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectRequest {
    operator: String,
    reason: String,
}

/// The longest rejection reason kept.
const MAX_REASON: usize = 2048;

/// The operator's name of a request body (1..=128 bytes), or the 400 answer.
fn operator_of(operator: &str) -> Result<&str, Box<Response>> {
    let operator = operator.trim();
    if operator.is_empty() || operator.len() > 128 {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "`operator` must name who decides (1..=128 bytes)",
        )));
    }
    Ok(operator)
}

async fn approvals_list(State(st): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&st, &headers, "GET /v1/approvals", Role::Read) {
        return *r;
    }
    let pending = st.control.pending_approvals().await;
    Json(json!({
        "approvals": pending,
        "expiry_s": st.control.guard().global().approval_expiry_s,
    }))
    .into_response()
}

async fn approve(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(
        &st,
        &headers,
        "POST /v1/approvals/{id}/approve",
        Role::Admin,
    ) {
        return *r;
    }
    let req: ApproveRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"operator\": name}}: {e}"),
            )
        }
    };
    let operator = match operator_of(&req.operator) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    match st.control.approve(id, operator).await {
        Ok((record, swapped)) => Json(json!({
            "approval": id,
            "seq": record.seq,
            "version": swapped.new.version,
            "diff": swapped.diff,
        }))
        .into_response(),
        Err(e) => approval_error(e),
    }
}

async fn reject(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&st, &headers, "POST /v1/approvals/{id}/reject", Role::Admin) {
        return *r;
    }
    let req: RejectRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"operator\": name, \"reason\": text}}: {e}"),
            )
        }
    };
    let operator = match operator_of(&req.operator) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > MAX_REASON {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`reason` must say why (1..={MAX_REASON} bytes)"),
        );
    }
    match st.control.reject_approval(id, operator, reason).await {
        Ok(record) => Json(json!({"approval": id, "seq": record.seq})).into_response(),
        Err(e) => approval_error(e),
    }
}

fn approval_error(e: ApprovalError) -> Response {
    match e {
        ApprovalError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        ApprovalError::Refused { ref verdicts, .. } => (
            StatusCode::CONFLICT,
            Json(json!({"error": e.to_string(), "verdicts": verdicts})),
        )
            .into_response(),
        ApprovalError::Apply(a) => apply_error(a),
        ApprovalError::Audit(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
