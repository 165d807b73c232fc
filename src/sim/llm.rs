//! A scripted OpenAI-compatible chat endpoint: `POST /v1/chat/completions`
//! on a loopback port, standing in for the model behind the `llm` policy in
//! tests, the demo and the scenario bench (the `llm-scripted` policy).
//!
//! What it answers is decided per request, in order:
//! 1. its [`SchemaSupport`]: a server that does not take `json_schema` (or
//!    not strict, like OpenAI with a free-form map) refuses the request the
//!    way real servers do, without consuming the script;
//! 2. the script: a queue of [`Reply`]s pushed by the test (good answers,
//!    malformed JSON, huge or late answers, errors, …), one per request;
//! 3. when the queue is empty, [`LlmSimOptions::idle`]: by default
//!    [`Reply::Rules`], a deterministic rule set ([`rule_answer`]) that reads
//!    the observation, knobs and guard from the request and answers with
//!    sensible proposals, so the LLM path runs end to end.
//!
//! Every request is recorded ([`SeenRequest`]) so tests can count requests
//! and check what the policy sent.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::guard::GuardFile;
use crate::control::observe::{Observation, SLOTTED};
use crate::knobs::{self, valid_domain};

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200: a chat completion whose message content is this text, verbatim.
    Content(String),
    /// 200: a chat completion whose content is this JSON value.
    Answer(Value),
    /// 200: the answer [`rule_answer`] computes from the request.
    Rules,
    /// 200: an answer that changes nothing.
    NoChange,
    /// This status with this body.
    Status(u16, String),
    /// 200: a well-formed answer padded to about `bytes` bytes; `chunked`
    /// streams it without a `Content-Length` (the reader must stop on its
    /// own), otherwise the length is declared.
    Huge {
        /// Body size.
        bytes: usize,
        /// Stream it without a declared length.
        chunked: bool,
    },
    /// Waits (ended early by shutdown), then replies.
    Delay(Duration, Box<Reply>),
    /// This status with the request's `Authorization` header in the body:
    /// a server that leaks credentials back into its error messages.
    EchoAuth(u16),
}

/// Which `response_format`s the server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaSupport {
    /// Every format (vLLM, SGLang, current llama.cpp).
    Full,
    /// `json_object` (schema in `response_format.schema`) but not
    /// `json_schema`, refused with this status and older llama.cpp's message.
    JsonObjectOnly(u16),
    /// Like OpenAI: strict `json_schema` only when every object forbids
    /// additional properties; unknown top-level fields are refused.
    OpenAi,
}

/// How to run the scripted endpoint.
#[derive(Debug, Clone)]
pub struct LlmSimOptions {
    /// `127.0.0.1:0` for an ephemeral port.
    pub addr: SocketAddr,
    /// Bearer key required when set (401 otherwise).
    pub api_key: Option<String>,
    /// Which structured-output formats are accepted.
    pub schema_support: SchemaSupport,
    /// The reply when the script is empty.
    pub idle: Reply,
}

impl Default for LlmSimOptions {
    fn default() -> Self {
        LlmSimOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            schema_support: SchemaSupport::Full,
            idle: Reply::Rules,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    /// `response_format.type`.
    pub response_format: Option<String>,
    /// `response_format.json_schema.strict`.
    pub strict: Option<bool>,
    /// Whether `response_format.schema` was sent (the json_object fallback).
    pub format_schema: bool,
    /// Whether a top-level `schema` was sent (the json_object fallback).
    pub top_level_schema: bool,
    /// The `model` field.
    pub model: String,
    /// The system message.
    pub system: String,
    /// The user message, parsed (Null when it is not JSON).
    pub user: Value,
    /// The HTTP status answered (200 for replies that stream or wait).
    pub status: u16,
}

struct Shared {
    opts: LlmSimOptions,
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<SeenRequest>>,
    shutdown: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running scripted endpoint.
pub struct LlmSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LlmSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSim")
            .field("addr", &self.addr)
            .field("schema_support", &self.shared.opts.schema_support)
            .finish_non_exhaustive()
    }
}

impl LlmSim {
    /// Binds and serves in the background.
    pub async fn start(opts: LlmSimOptions) -> anyhow::Result<LlmSim> {
        let listener = TcpListener::bind(opts.addr)
            .await
            .map_err(|e| anyhow::anyhow!("llm sim: cannot bind {}: {e}", opts.addr))?;
        let addr = listener.local_addr()?;
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            opts,
            script: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            shutdown: shutdown.clone(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(shared.clone());
        let mut rx = shutdown;
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "llm sim: server failed");
            }
        });
        Ok(LlmSim {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, the `base_url` for `[controller.llm]`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues replies, answered in order, one per request.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.script).extend(replies);
    }

    /// Replies still queued.
    pub fn remaining(&self) -> usize {
        lock(&self.shared.script).len()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.seen).clone()
    }

    /// Stops serving; waiting replies end at once.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn error_body(status: u16, message: &str, kind: &str) -> Response {
    let body = json!({"error": {"code": status, "message": message, "type": kind}});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Whether every object node of a JSON schema forbids additional
/// properties (what OpenAI's strict mode demands).
fn strict_compatible(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => {
            let is_object = m.get("type") == Some(&json!("object"));
            (!is_object || m.get("additionalProperties") == Some(&json!(false)))
                && m.values().all(strict_compatible)
        }
        Value::Array(a) => a.iter().all(strict_compatible),
        _ => true,
    }
}

/// A chat completion with `content` as the assistant's message.
pub fn completion(model: &str, content: &str) -> Value {
    json!({
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    })
}

fn no_change() -> Value {
    json!({"changes": [], "rationale": "nothing to change", "expected_gain": 0})
}

fn json_response(body: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn message(req: &Value, role: &str) -> Option<String> {
    req.get("messages")?
        .as_array()?
        .iter()
        .find(|m| m.get("role").and_then(Value::as_str) == Some(role))?
        .get("content")?
        .as_str()
        .map(str::to_string)
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error_body(400, "the body is not JSON", "invalid_request_error");
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let format = req
        .pointer("/response_format/type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let strict = req
        .pointer("/response_format/json_schema/strict")
        .and_then(Value::as_bool);
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let user = message(&req, "user").unwrap_or_default();
    let mut seen = SeenRequest {
        response_format: format.clone(),
        strict,
        format_schema: req.pointer("/response_format/schema").is_some(),
        top_level_schema: req.get("schema").is_some(),
        model: model.clone(),
        system: message(&req, "system").unwrap_or_default(),
        user: serde_json::from_str(&user).unwrap_or(Value::Null),
        status: 200,
    };
    let refusal = refusal(&shared.opts, &req, &auth, format.as_deref(), strict);
    let reply = match refusal {
        Some(r) => Err(r),
        None => Ok(lock(&shared.script)
            .pop_front()
            .unwrap_or_else(|| shared.opts.idle.clone())),
    };
    seen.status = match &reply {
        Err((status, _, _)) => *status,
        Ok(r) => final_status(r),
    };
    lock(&shared.seen).push(seen);
    match reply {
        Err((status, message, kind)) => error_body(status, &message, kind),
        Ok(reply) => render(reply, &req, &model, &auth, shared.shutdown.clone()).await,
    }
}

/// The refusal (status, message, error type) this server gives `req`, if any.
fn refusal(
    opts: &LlmSimOptions,
    req: &Value,
    auth: &str,
    format: Option<&str>,
    strict: Option<bool>,
) -> Option<(u16, String, &'static str)> {
    if let Some(key) = &opts.api_key {
        if auth != format!("Bearer {key}") {
            return Some((
                401,
                "Incorrect API key provided".into(),
                "invalid_request_error",
            ));
        }
    }
    match opts.schema_support {
        SchemaSupport::Full => None,
        SchemaSupport::JsonObjectOnly(status) => (format == Some("json_schema")).then(|| {
            (
                status,
                "response_format type must be one of \"text\" or \"json_object\", but got: json_schema"
                    .into(),
                if status >= 500 { "server_error" } else { "invalid_request_error" },
            )
        }),
        SchemaSupport::OpenAi => {
            if let Some(field) = ["schema", "json_schema", "grammar"]
                .into_iter()
                .find(|f| req.get(*f).is_some())
            {
                return Some((
                    400,
                    format!("Unrecognized request argument supplied: {field}"),
                    "invalid_request_error",
                ));
            }
            let schema = req
                .pointer("/response_format/json_schema/schema")
                .unwrap_or(&Value::Null);
            (format == Some("json_schema") && strict == Some(true) && !strict_compatible(schema))
                .then(|| {
                    (
                        400,
                        "Invalid schema for response_format 'freshet_proposal': In context=('properties', 'value'), 'additionalProperties' is required to be supplied and to be false.".into(),
                        "invalid_request_error",
                    )
                })
        }
    }
}

fn final_status(reply: &Reply) -> u16 {
    match reply {
        Reply::Status(s, _) | Reply::EchoAuth(s) => *s,
        Reply::Delay(_, inner) => final_status(inner),
        _ => 200,
    }
}

async fn render(
    reply: Reply,
    req: &Value,
    model: &str,
    auth: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Response {
    let mut reply = reply;
    loop {
        match reply {
            Reply::Delay(wait, inner) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => reply = *inner,
                    _ = shutdown.wait_for(|v| *v) => {
                        return error_body(503, "shutting down", "server_error");
                    }
                }
            }
            Reply::Content(text) => return json_response(&completion(model, &text)),
            Reply::Answer(answer) => return json_response(&completion(model, &answer.to_string())),
            Reply::NoChange => return json_response(&completion(model, &no_change().to_string())),
            Reply::Rules => {
                let user = message(req, "user").unwrap_or_default();
                let answer = serde_json::from_str::<Value>(&user)
                    .map_err(|e| e.to_string())
                    .and_then(|u| rule_answer(&u));
                return match answer {
                    Ok(answer) => json_response(&completion(model, &answer.to_string())),
                    Err(e) => error_body(
                        400,
                        &format!("the user message is not what freshet sends: {e}"),
                        "invalid_request_error",
                    ),
                };
            }
            Reply::Status(status, body) => {
                return (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    body,
                )
                    .into_response()
            }
            Reply::EchoAuth(status) => {
                return error_body(
                    status,
                    &format!("invalid credentials: {auth}"),
                    "invalid_request_error",
                )
            }
            Reply::Huge { bytes, chunked } => {
                let pad = "x".repeat(bytes.saturating_sub(300));
                let answer = json!({"changes": [], "rationale": pad, "expected_gain": 0});
                let body = completion(model, &answer.to_string()).to_string();
                if !chunked {
                    return (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                        .into_response();
                }
                let chunks: Vec<Result<Bytes, Infallible>> = body
                    .into_bytes()
                    .chunks(8 * 1024)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(futures::stream::iter(chunks)),
                )
                    .into_response();
            }
        }
    }
}

/// The rule-based "model": reads the observation, knobs and guard from the
/// user message freshet sends and proposes, most urgent first and at most
/// the guard's changes per decision:
///
/// 1. halve the slots of a stage whose operational error rate is above 2 %
///    (rate limits and timeouts mean too much concurrency);
/// 2. render with `remote` the domains fetched over `http` whose pages
///    mostly fall below the quality bar, while credits stay under 80 % of
///    the budget;
/// 3. add a quarter more slots (at least one, within the guard's maximum)
///    to a stage that is saturated, not blocked downstream and error-free.
///
/// Deterministic: the same message gives the same answer.
pub fn rule_answer(user: &Value) -> Result<Value, String> {
    let field = |name: &str| {
        user.get(name)
            .cloned()
            .ok_or_else(|| format!("no `{name}` field"))
    };
    let obs: Observation =
        serde_json::from_value(field("observation")?).map_err(|e| format!("observation: {e}"))?;
    let knobs: BTreeMap<String, Value> =
        serde_json::from_value(field("knobs")?).map_err(|e| format!("knobs: {e}"))?;
    let guard: GuardFile =
        serde_json::from_value(field("guard")?).map_err(|e| format!("guard: {e}"))?;
    let num = |k: &str| knobs.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let ceiling = |k: &str| {
        guard
            .knobs
            .get(k)
            .and_then(|r| r.max)
            .or_else(|| knobs::spec(k).map(|s| s.max))
            .unwrap_or(1.0)
    };
    let mut cuts = Vec::new();
    let mut growth = Vec::new();
    for stage in SLOTTED {
        let s = obs.stage(stage.as_str());
        let knob = format!("{stage}.slots");
        let slots = num(&knob);
        if s.throughput > 0.0 && s.error_rate > 0.02 && slots > 1.0 {
            let to = (slots / 2.0).floor().max(1.0);
            cuts.push(json!({
                "knob": knob,
                "value": to as u64,
                "reason": format!("{stage} error rate {:.1} % is above 2 %: halve slots {slots} -> {to}", s.error_rate * 100.0),
            }));
        } else if s.saturation > 0.9
            && s.backpressure < 0.1
            && s.error_rate < 0.005
            && obs.error_rate < 0.01
            && slots < ceiling(&knob)
        {
            let to = (slots + (slots / 4.0).ceil().max(1.0)).min(ceiling(&knob));
            growth.push(json!({
                "knob": knob,
                "value": to as u64,
                "reason": format!("{stage} saturation {:.2} with no errors or backpressure: slots {slots} -> {to}", s.saturation),
            }));
        }
    }
    let mut changes = cuts;
    if obs.credits_per_min < 0.8 * guard.global.credits_budget_per_minute {
        let mut overrides = knobs
            .get("extract.render_overrides")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut added = Vec::new();
        for d in &obs.quality.domains {
            if d.render_mode == "http"
                && d.stats.pages >= 3
                && d.stats.low_share > 0.5
                && valid_domain(&d.domain)
                && !overrides.contains_key(&d.domain)
            {
                overrides.insert(d.domain.clone(), json!("remote"));
                added.push(format!(
                    "{} ({:.0} % low)",
                    d.domain,
                    d.stats.low_share * 100.0
                ));
            }
        }
        if !added.is_empty() {
            changes.push(json!({
                "knob": "extract.render_overrides",
                "value": overrides,
                "reason": format!("mostly below the quality bar over http: {}", added.join(", ")),
            }));
        }
    }
    changes.extend(growth);
    changes.truncate(guard.global.max_changes_per_decision.max(1));
    let rationale = if changes.is_empty() {
        format!(
            "goodput {:.2}/s, error rate {:.1} %: nothing to change",
            obs.goodput,
            obs.error_rate * 100.0
        )
    } else {
        format!(
            "goodput {:.2}/s, error rate {:.1} %: {} change(s)",
            obs.goodput,
            obs.error_rate * 100.0,
            changes.len()
        )
    };
    Ok(json!({
        "changes": changes,
        "rationale": rationale,
        "expected_gain": 0.05 * changes.len() as f64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::observe::{DomainQuality, QualityStats, StageStats};

    fn message_for(obs: &Observation) -> Value {
        let guard = crate::control::guard::Guard::from_toml(
            "[knobs.\"extract.slots\"]\nmax = 10\n",
            "test",
        )
        .unwrap();
        json!({
            "observation": obs,
            "knobs": crate::knobs::Knobs::default().to_paths(),
            "guard": guard.file(),
        })
    }

    #[test]
    fn rules_cut_on_errors_escalate_low_quality_and_grow_saturated_stages() {
        let mut obs = Observation::default();
        obs.stages.insert(
            "search".into(),
            StageStats {
                throughput: 5.0,
                error_rate: 0.2,
                ..Default::default()
            },
        );
        obs.stages.insert(
            "extract".into(),
            StageStats {
                throughput: 20.0,
                saturation: 0.97,
                ..Default::default()
            },
        );
        obs.quality.domains.push(DomainQuality {
            domain: "citybeat.sim.test".into(),
            render_mode: "http".into(),
            stats: QualityStats {
                pages: 10,
                mean: 0.1,
                low_share: 0.9,
            },
        });
        let answer = rule_answer(&message_for(&obs)).unwrap();
        let changes = answer["changes"].as_array().unwrap();
        assert_eq!(changes[0]["knob"], "search.slots");
        assert_eq!(changes[0]["value"], 2); // 4 -> 2
        assert_eq!(changes[1]["knob"], "extract.render_overrides");
        assert_eq!(changes[1]["value"], json!({"citybeat.sim.test": "remote"}));
        // Growth is last; within the guard's maximum of 10: 8 -> 10.
        assert_eq!(changes[2]["knob"], "extract.slots");
        assert_eq!(changes[2]["value"], 10);
        // The answer follows the policy's strict schema.
        let p = crate::control::policy::llm::parse_answer(&answer.to_string()).unwrap();
        assert_eq!(p.changes.len(), 3);
        // Deterministic.
        assert_eq!(answer, rule_answer(&message_for(&obs)).unwrap());
        // A quiet window changes nothing.
        let quiet = rule_answer(&message_for(&Observation::default())).unwrap();
        assert_eq!(quiet["changes"], json!([]));
    }

    #[test]
    fn the_openai_personality_refuses_free_form_maps_in_strict_mode() {
        let schema = crate::control::policy::llm::answer_schema();
        assert!(!strict_compatible(&schema));
        assert!(strict_compatible(
            &json!({"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}})
        ));
    }
}
