//! The admin API (DESIGN.md §6): read the config, change knobs by hand,
//! roll back to an earlier version, read the audit log.
//!
//! - `GET  /v1/config`: the knob snapshot in force (version + knobs);
//! - `PATCH /v1/knobs`: `{"changes": [{"knob", "value", "reason"}], "operator": "alice", "force": false}`;
//!   the changes pass the guard unless `force` (then only the knobs' own
//!   type and range checks apply), and are recorded with the operator's name;
//! - `POST /v1/rollback/{version}?operator=alice`: back to an earlier
//!   snapshot (the last 256 are kept);
//! - `GET  /v1/audit?after=SEQ&limit=N`: audit records.
//!
//! Every changing call needs `Authorization: Bearer <service.admin_token>`;
//! a missing or wrong token is answered 401 and recorded in the audit log
//! (without the token). Changes are serialized by one lock, and each is
//! fsynced to the audit log **before** the knob swap it describes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::control::audit::{self, AuditLog, Event, EventKind};
use crate::control::guard::{Guard, Verdict};
use crate::knobs::{self, Change};
use crate::live::LiveConfig;
use crate::settings::Secret;

/// Most changes one request may carry.
pub const MAX_CHANGES: usize = 64;

/// What the admin API works on.
#[derive(Debug)]
pub struct AdminState {
    /// Live knobs.
    pub live: Arc<LiveConfig>,
    /// The guard (replaced on reload).
    pub guard: RwLock<Guard>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The bearer token for changes.
    pub token: Secret,
    /// Serializes every change (admin calls and, later, the controller).
    pub change_lock: tokio::sync::Mutex<()>,
    /// When each knob last changed (for cooldowns).
    pub last_change: std::sync::Mutex<HashMap<String, Instant>>,
    /// Refusals are audited at most once a second; the rest are counted
    /// into the next record, so a flood cannot grow the log without limit.
    refusals: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl AdminState {
    /// State over `live` with `guard`, writing to `audit`.
    pub fn new(
        live: Arc<LiveConfig>,
        guard: Guard,
        audit: Arc<AuditLog>,
        token: Secret,
    ) -> AdminState {
        AdminState {
            live,
            guard: RwLock::new(guard),
            audit,
            token,
            change_lock: tokio::sync::Mutex::new(()),
            last_change: Default::default(),
            refusals: Default::default(),
        }
    }
}

/// The admin routes.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/config", get(config))
        .route("/v1/knobs", patch(patch_knobs))
        .route("/v1/rollback/{version}", post(rollback))
        .route("/v1/audit", get(audit_records))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// 401 unless the bearer token matches; refusals are audited.
fn authorize(st: &AdminState, headers: &HeaderMap, what: &str) -> Result<(), Box<Response>> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = !st.token.is_empty()
        && given.is_some_and(|g| constant_time_eq(g.as_bytes(), st.token.expose().as_bytes()));
    if ok {
        return Ok(());
    }
    let why = if st.token.is_empty() {
        "no admin token is configured (set FRESHET_SERVICE__ADMIN_TOKEN)"
    } else if given.is_none() {
        "missing bearer token"
    } else {
        "wrong bearer token"
    };
    let suppressed = {
        let mut r = st.refusals.lock().unwrap_or_else(|p| p.into_inner());
        match r.0 {
            Some(at) if at.elapsed() < std::time::Duration::from_secs(1) => {
                r.1 += 1;
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
        let _ = st.audit.append(
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn config(State(st): State<Arc<AdminState>>) -> Response {
    let snapshot = st.live.load();
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
    if let Err(r) = authorize(&st, &headers, "PATCH /v1/knobs") {
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
    let _serial = st.change_lock.lock().await;
    let current = st.live.load();
    let verdicts: Vec<Verdict> = if req.force {
        req.changes
            .iter()
            .map(
                |c| match knobs::spec(&c.knob).map(|spec| knobs::check_value(spec, &c.value)) {
                    Some(Ok(())) => Verdict::Accepted {
                        knob: c.knob.clone(),
                        value: c.value.clone(),
                    },
                    Some(Err(e)) => Verdict::Rejected {
                        knob: c.knob.clone(),
                        proposed: c.value.clone(),
                        reason: e.to_string(),
                    },
                    None => Verdict::Rejected {
                        knob: c.knob.clone(),
                        proposed: c.value.clone(),
                        reason: format!("unknown knob `{}`", c.knob),
                    },
                },
            )
            .collect()
    } else {
        let last = st
            .last_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let guard = st.guard.read().unwrap_or_else(|p| p.into_inner()).clone();
        guard.check(&req.changes, &current.knobs, |k| {
            last.get(k).map(|t| t.elapsed().as_secs())
        })
    };
    let actor = json!({"operator": operator, "force": req.force});
    let applied: Vec<Change> = verdicts.iter().filter_map(Verdict::change).collect();
    let verdict_json = serde_json::to_value(&verdicts).unwrap_or_default();
    let refuse = |reason: String| {
        let _ = st.audit.append(
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
    let diff = current.knobs.diff(&knobs);
    // Audit first (fsynced), then swap.
    let recorded = st.audit.append(
        EventKind::Override,
        Event {
            from_version: Some(current.version),
            to_version: Some(current.version + 1),
            diff: serde_json::to_value(&diff).unwrap_or_default(),
            actor: actor.clone(),
            verdict: verdict_json.clone(),
            detail: req
                .changes
                .iter()
                .map(|c| c.reason.as_str())
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
            ..Default::default()
        },
    );
    if let Err(e) = recorded {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not applied: the audit log cannot be written ({e})"),
        );
    }
    match st.live.swap_if(knobs, current.version) {
        Ok(swapped) => {
            let now = Instant::now();
            let mut last = st.last_change.lock().unwrap_or_else(|p| p.into_inner());
            for d in &swapped.diff {
                last.insert(d.knob.clone(), now);
            }
            Json(
                json!({"version": swapped.new.version, "diff": swapped.diff, "verdicts": verdicts}),
            )
            .into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
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
    if let Err(r) = authorize(&st, &headers, "POST /v1/rollback") {
        return *r;
    }
    let operator = q.operator.unwrap_or_default();
    if operator.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "add ?operator=<name> to say who rolls back",
        );
    }
    let _serial = st.change_lock.lock().await;
    let current = st.live.load();
    let Some(target) = st.live.snapshot(version) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("version {version} is not kept (the last 256 versions are)"),
        );
    };
    let diff = current.knobs.diff(&target.knobs);
    let recorded = st.audit.append(
        EventKind::RolledBack,
        Event {
            from_version: Some(current.version),
            to_version: Some(current.version + 1),
            diff: serde_json::to_value(&diff).unwrap_or_default(),
            actor: json!({"operator": operator}),
            detail: format!("rollback to the knobs of version {version}"),
            ..Default::default()
        },
    );
    if let Err(e) = recorded {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not applied: the audit log cannot be written ({e})"),
        );
    }
    match st.live.swap_if(target.knobs.clone(), current.version) {
        Ok(swapped) => {
            Json(json!({"version": swapped.new.version, "diff": swapped.diff})).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn audit_records(State(st): State<Arc<AdminState>>, Query(q): Query<AuditQuery>) -> Response {
    match audit::read_records(st.audit.path()) {
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
