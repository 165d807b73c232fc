//! The `llm` policy: an OpenAI-compatible chat model proposes knob changes
//! (DESIGN.md §4, step 3).
//!
//! # What the model sees
//! The system message is the prompt file (`prompts/controller.md` by
//! default): the operator steers the controller by editing it. It is checked
//! for edits (content hash, not mtime, so a same-size edit within one mtime
//! tick is not missed) when the controller collects events or asks for a
//! proposal, at most every [`DEFAULT_RELOAD_EVERY`]; its SHA-256 is part of
//! [`Policy::actor`], hence of every audit record.
//! An edit that cannot be used (unreadable, empty, not UTF-8, larger than
//! [`MAX_PROMPT_BYTES`]) is reported as [`PolicyEvent::PromptRejected`] and
//! the previous text stays in force.
//!
//! The user message is one JSON object ([`user_message`]): the observation,
//! a summary of the few windows before it, the knobs in force, every knob's
//! type and structural limits, the guard's limits and the recent decisions
//! with their outcomes. Only numbers and sanitized names: the observation
//! holds no page content, host names come from parsed URLs and render
//! override keys are validated domain names.
//!
//! # What comes back
//! A JSON object following [`answer_schema`], requested as structured output
//! and parsed strictly by [`parse_answer`] whatever the server claims to have
//! enforced. The changes are passed through exactly as the model gave them:
//! nothing is coerced, clamped or dropped here. A small model answers
//! well-formed JSON that is semantically wrong (zero slots, a number where a
//! mode name belongs, a knob that does not exist); the guard rejects those
//! with a reason, and that reason is what the audit log must show.
//!
//! # Structured output across servers
//! OpenAI-compatible servers disagree on `response_format`, so the policy
//! walks down a ladder of [`AnswerFormat`]s, one rung per rejection, and
//! remembers the first rung the server answers (detected once per process):
//!
//! 1. `json_schema` with `strict: true` (vLLM, SGLang, current llama.cpp);
//! 2. `json_schema` with `strict: false`, when the server refuses the schema
//!    *for strict mode* (OpenAI requires `additionalProperties: false` on
//!    every object, which the domain -> mode map of
//!    `extract.render_overrides` cannot satisfy);
//! 3. `json_object` with the schema in `response_format.schema` and in a
//!    top-level `schema` field, when the server refuses `json_schema` itself
//!    (older llama.cpp-based servers answer HTTP 500 "response_format type
//!    must be one of \"text\" or \"json_object\"", others 400).
//!
//! A rejection is recognised by status (400, 422, 500) *and* a message that
//! names `response_format` or `json_schema`, so a plain outage is an
//! endpoint error, not a reason to downgrade.
//!
//! # Transport
//! The request body is built from async-openai's chat types (so it follows
//! the OpenAI API as that crate tracks it), but it is sent with plain
//! reqwest rather than async-openai's client, because the client (0.43)
//! cannot do three things this policy needs: it buffers the whole response
//! before we see a byte, so `max_answer_bytes` could not be enforced while
//! reading (a hostile or runaway endpoint could make us buffer gigabytes);
//! it does not let the fallback add the non-OpenAI `schema` fields; and it
//! retries on its own, which would spend the controller's timeout on
//! retries the controller does not want (a late answer falls back to the
//! heuristic instead). The response envelope is parsed leniently (servers
//! add and omit fields); only the model's answer is parsed strictly.
//!
//! # Failures
//! No answer within `timeout_ms` (connect, request and body together) is
//! [`PolicyError::Timeout`]; transport errors and non-2xx answers are
//! [`PolicyError::Endpoint`]; an answer that is too large, not a chat
//! completion, cut off, refused or off-schema is [`PolicyError::Malformed`].
//! The API key is sent only in the `Authorization` header and is scrubbed
//! from every error text (a server may echo it back).
//!
//! The timeout runs on tokio's clock: a test that pauses the clock
//! (`tokio::time::pause`) must not drive this policy over a real socket,
//! because auto-advance fires the timeout while the socket is still waiting.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest, ResponseFormat, ResponseFormatJsonSchema,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{Context, Policy, PolicyError, PolicyEvent, Proposal};
use crate::control::observe::Observation;
use crate::knobs::{Change, KnobKind, RenderMode, SPECS};
use crate::settings::{ControllerSettings, LlmSettings, Secret};

/// Most changes one answer may carry; more is malformed (the guard allows
/// far fewer per decision, but an answer with dozens is not a proposal).
pub const MAX_CHANGES: usize = 16;
/// Largest prompt file accepted.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// How often the prompt file is checked for edits, at most.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(1);
/// The `json_schema.name` sent with the schema.
pub const SCHEMA_NAME: &str = "freshet_proposal";
/// Recent decisions sent to the model (the latest ones).
const RECENT_DECISIONS: usize = 10;
/// Earlier windows sent, summarized.
const RECENT_OBSERVATIONS: usize = 5;
/// Longest reason text of a past decision sent back to the model.
const MAX_REASON_CHARS: usize = 200;
/// Bytes of an error response read for its message.
const MAX_ERROR_BODY: usize = 4 * 1024;
/// Characters of a server's error message kept in a [`PolicyError`].
const MAX_ERROR_CHARS: usize = 300;

/// The JSON schema every answer must follow.
///
/// `value` is a number (counts, milliseconds, shares), a string (a render
/// mode) or an object (the domain -> render mode map). Every object lists
/// all its properties as required and forbids others, as strict structured
/// output requires; `maxItems` and the like are left out because strict
/// mode does not support them everywhere; [`parse_answer`] checks them.
pub fn answer_schema() -> Value {
    let modes: Vec<&str> = RenderMode::ALL.iter().map(|m| m.as_str()).collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["changes", "rationale", "expected_gain"],
        "properties": {
            "changes": {
                "type": "array",
                "description": "Knob changes, most important first; empty to change nothing.",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["knob", "value", "reason"],
                    "properties": {
                        "knob": {"type": "string", "description": "A knob path from knob_specs, e.g. extract.slots"},
                        "value": {
                            "description": "The new value: a number, a render mode name, or an object of domain -> render mode",
                            "anyOf": [
                                {"type": "number"},
                                {"type": "string"},
                                {"type": "object", "additionalProperties": {"type": "string", "enum": modes}}
                            ]
                        },
                        "reason": {"type": "string", "description": "The numbers that justify this change"}
                    }
                }
            },
            "rationale": {"type": "string", "description": "Why, as a whole, in one or two sentences"},
            "expected_gain": {"type": "number", "description": "Expected relative goodput gain, e.g. 0.1 for +10 %; 0 when changing nothing"}
        }
    })
}

/// How the answer's structure is requested (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// `response_format: {"type": "json_schema", …, "strict": true}`.
    StrictSchema,
    /// The same with `strict: false`.
    Schema,
    /// `response_format: {"type": "json_object", "schema": …}` plus a
    /// top-level `schema`.
    JsonObject,
}

impl AnswerFormat {
    fn from_u8(v: u8) -> AnswerFormat {
        match v {
            0 => AnswerFormat::StrictSchema,
            1 => AnswerFormat::Schema,
            _ => AnswerFormat::JsonObject,
        }
    }

    fn as_u8(self) -> u8 {
        self as u8
    }

    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerFormat::StrictSchema => "json_schema (strict)",
            AnswerFormat::Schema => "json_schema (not strict)",
            AnswerFormat::JsonObject => "json_object + schema",
        }
    }

    /// The rung to try after the server refused this one with `message`.
    fn next(self, message: &str) -> Option<AnswerFormat> {
        let m = message.to_ascii_lowercase();
        match self {
            AnswerFormat::StrictSchema
                if m.contains("strict") || m.contains("additionalproperties") =>
            {
                Some(AnswerFormat::Schema)
            }
            AnswerFormat::StrictSchema | AnswerFormat::Schema => Some(AnswerFormat::JsonObject),
            AnswerFormat::JsonObject => None,
        }
    }
}

/// Whether an error answer says the server refused our `response_format`.
fn refuses_format(status: u16, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    matches!(status, 400 | 422 | 500)
        && (m.contains("response_format") || m.contains("json_schema"))
}

/// Why the policy could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmSetupError {
    /// The prompt file cannot be used.
    #[error("prompt {path}: {error} (the llm policy needs a non-empty UTF-8 prompt file of at most {MAX_PROMPT_BYTES} bytes)")]
    Prompt {
        /// The file.
        path: String,
        /// What is wrong with it.
        error: String,
    },
    /// The base URL is not an http(s) URL.
    #[error("controller.llm.base_url `{0}` is not an http or https URL")]
    BaseUrl(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The prompt in force and what the last check saw.
struct PromptState {
    text: Arc<str>,
    sha256: String,
    /// When the file was last read.
    checked_at: Instant,
    /// Fingerprint of the last rejected content, so an edit is reported once.
    rejected: Option<String>,
}

/// The `llm` policy (see the module docs).
pub struct LlmPolicy {
    http: reqwest::Client,
    /// `{base_url}/chat/completions`
    url: String,
    model: String,
    api_key: Secret,
    timeout: Duration,
    max_answer_bytes: usize,
    prompt_path: PathBuf,
    reload_every: Duration,
    prompt: Mutex<PromptState>,
    /// The [`AnswerFormat`] the server accepts, as far as we know.
    format: AtomicU8,
    events: Mutex<Vec<PolicyEvent>>,
}

impl std::fmt::Debug for LlmPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmPolicy")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("prompt", &self.prompt_path)
            .field("prompt_sha256", &self.prompt_sha256())
            .field("format", &self.answer_format())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks prompt bytes: `Ok(text)` or why they cannot be used.
fn check_prompt(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() > MAX_PROMPT_BYTES {
        return Err(format!("larger than {MAX_PROMPT_BYTES} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|e| format!("not UTF-8 ({e})"))?;
    if text.trim().is_empty() {
        return Err("empty".into());
    }
    Ok(text)
}

/// Reads at most one byte more than [`MAX_PROMPT_BYTES`], so a huge file is
/// refused without being read whole. Synchronous on purpose: a local file of
/// at most 64 KiB, read at most once per `reload_every`, costs less than a
/// trip through the blocking pool, and it lets [`Policy::events`] (which is
/// not async) check for edits too.
fn read_prompt(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PROMPT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(bytes)
}

impl LlmPolicy {
    /// The policy configured by `[controller]` (its `prompt` and `[controller.llm]`).
    pub fn from_settings(settings: &ControllerSettings) -> Result<LlmPolicy, LlmSetupError> {
        LlmPolicy::new(&settings.llm, &settings.prompt)
    }

    /// A policy talking to `settings.base_url`, steered by the prompt file
    /// at `prompt` (read now; refused if it cannot be used).
    pub fn new(
        settings: &LlmSettings,
        prompt: impl AsRef<Path>,
    ) -> Result<LlmPolicy, LlmSetupError> {
        let prompt_path = prompt.as_ref().to_path_buf();
        let text = read_prompt(&prompt_path)
            .and_then(check_prompt)
            .map_err(|error| LlmSetupError::Prompt {
                path: prompt_path.display().to_string(),
                error,
            })?;
        let base = settings.base_url.trim_end_matches('/');
        match url::Url::parse(base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(LlmSetupError::BaseUrl(settings.base_url.clone())),
        }
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let http = reqwest::Client::builder()
            // An API does not redirect; following one could only send the
            // key somewhere it was not meant to go.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .build()
            .map_err(|e| LlmSetupError::Client(e.to_string()))?;
        let sha256 = sha256_hex(text.as_bytes());
        Ok(LlmPolicy {
            http,
            url: format!("{base}/chat/completions"),
            model: settings.model.clone(),
            api_key: settings.api_key.clone(),
            timeout,
            max_answer_bytes: settings.max_answer_bytes,
            prompt_path,
            reload_every: DEFAULT_RELOAD_EVERY,
            prompt: Mutex::new(PromptState {
                text: text.into(),
                sha256,
                checked_at: Instant::now(),
                rejected: None,
            }),
            format: AtomicU8::new(AnswerFormat::StrictSchema.as_u8()),
            events: Mutex::new(Vec::new()),
        })
    }

    /// Checks the prompt file for edits at most this often (tests use zero).
    pub fn with_reload_every(mut self, every: Duration) -> LlmPolicy {
        self.reload_every = every;
        self
    }

    /// SHA-256 (hex) of the prompt in force.
    pub fn prompt_sha256(&self) -> String {
        lock(&self.prompt).sha256.clone()
    }

    /// The structured-output format the next request will use.
    pub fn answer_format(&self) -> AnswerFormat {
        AnswerFormat::from_u8(self.format.load(Ordering::Relaxed))
    }

    /// Re-reads the prompt file if the last check is older than
    /// `reload_every`; swaps it in if it changed and is usable, else keeps
    /// the old one. Either way the outcome is queued for [`Policy::events`]
    /// (a rejected edit once, not once per check).
    ///
    /// Called from both `events()` and `propose()`: a controller that
    /// collects events before it proposes records "prompt reloaded" before
    /// the first proposal made with the new prompt.
    fn refresh_prompt(&self) {
        let mut st = lock(&self.prompt);
        if st.checked_at.elapsed() < self.reload_every {
            return;
        }
        st.checked_at = Instant::now();
        // The outcome, and a fingerprint so that a bad edit is reported once.
        let (fingerprint, outcome) = match read_prompt(&self.prompt_path) {
            Ok(bytes) => {
                let sha256 = sha256_hex(&bytes);
                if sha256 == st.sha256 {
                    st.rejected = None;
                    return;
                }
                (
                    sha256.clone(),
                    check_prompt(bytes).map(|text| (text, sha256)),
                )
            }
            Err(error) => (error.clone(), Err(error)),
        };
        let path = self.prompt_path.display().to_string();
        let event = match outcome {
            Ok((text, sha256)) => {
                let previous = std::mem::replace(&mut st.sha256, sha256.clone());
                st.text = text.into();
                st.rejected = None;
                tracing::info!(prompt = %path, %sha256, %previous, "llm policy: prompt reloaded");
                PolicyEvent::PromptReloaded {
                    path,
                    sha256,
                    previous,
                }
            }
            Err(error) => {
                if st.rejected.as_ref() == Some(&fingerprint) {
                    return;
                }
                st.rejected = Some(fingerprint);
                tracing::warn!(prompt = %path, %error, "llm policy: prompt edit rejected; the previous prompt stays in force");
                PolicyEvent::PromptRejected { path, error }
            }
        };
        drop(st);
        lock(&self.events).push(event);
    }

    /// The request body for `format`.
    fn request_body(&self, format: AnswerFormat, system: &str, user: &str) -> Value {
        let schema = answer_schema();
        let response_format = match format {
            AnswerFormat::StrictSchema | AnswerFormat::Schema => ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("Knob changes for freshet's data plane".into()),
                    name: SCHEMA_NAME.into(),
                    schema: schema.clone(),
                    strict: Some(format == AnswerFormat::StrictSchema),
                },
            },
            AnswerFormat::JsonObject => ResponseFormat::JsonObject,
        };
        let request = CreateChatCompletionRequest {
            model: self.model.clone(),
            messages: vec![
                ChatCompletionRequestSystemMessage {
                    content: system.into(),
                    name: None,
                }
                .into(),
                ChatCompletionRequestUserMessage {
                    content: user.into(),
                    name: None,
                }
                .into(),
            ],
            response_format: Some(response_format),
            ..Default::default()
        };
        let mut body = serde_json::to_value(&request).expect("a chat request serializes");
        if format == AnswerFormat::JsonObject {
            body["response_format"]["schema"] = schema.clone();
            body["schema"] = schema;
        }
        body
    }

    /// Removes the API key from text that may end up in logs or the audit log.
    fn scrub(&self, text: String) -> String {
        let key = self.api_key.expose();
        if key.is_empty() {
            text
        } else {
            text.replace(key, "***")
        }
    }

    /// One POST. `Ok(body)` for a 2xx answer within `max_answer_bytes`.
    async fn post(&self, body: &Value) -> Result<Vec<u8>, Failure> {
        let mut request = self.http.post(&self.url).json(body);
        if !self.api_key.is_empty() {
            request = request.bearer_auth(self.api_key.expose());
        }
        let response = request.send().await.map_err(|e| {
            Failure::Policy(PolicyError::Endpoint(self.scrub(format!(
                "POST {}: {}",
                self.url,
                error_chain(&e)
            ))))
        })?;
        let status = response.status();
        if !status.is_success() {
            let (bytes, _) = read_at_most(response, MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            // Scrub before shortening, so no prefix of the key survives a cut.
            let message = error_message(&self.scrub(String::from_utf8_lossy(&bytes).into_owned()));
            if refuses_format(status.as_u16(), &message) {
                return Err(Failure::Format(message));
            }
            return Err(Failure::Policy(PolicyError::Endpoint(format!(
                "POST {} answered HTTP {}: {message}",
                self.url,
                status.as_u16()
            ))));
        }
        let too_large = || {
            Failure::Policy(PolicyError::Malformed(format!(
                "the answer is larger than max_answer_bytes ({} bytes); stopped reading",
                self.max_answer_bytes
            )))
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_answer_bytes as u64)
        {
            return Err(too_large());
        }
        match read_at_most(response, self.max_answer_bytes).await {
            Ok((bytes, false)) => Ok(bytes),
            Ok((_, true)) => Err(too_large()),
            Err(e) => Err(Failure::Policy(PolicyError::Endpoint(self.scrub(format!(
                "reading the answer from {}: {}",
                self.url,
                error_chain(&e)
            ))))),
        }
    }

    /// Asks the model, walking down the format ladder on refusals; returns
    /// the assistant message's text.
    async fn ask(&self, system: &str, user: &str) -> Result<String, PolicyError> {
        let known = self.answer_format();
        let mut format = known;
        loop {
            let body = self.request_body(format, system, user);
            match self.post(&body).await {
                Ok(bytes) => {
                    if format != known {
                        tracing::warn!(
                            url = %self.url,
                            from = known.as_str(),
                            to = format.as_str(),
                            "llm policy: the server refused the structured-output format; using the fallback from now on"
                        );
                        self.format.store(format.as_u8(), Ordering::Relaxed);
                    }
                    return completion_text(&bytes);
                }
                Err(Failure::Format(message)) => match format.next(&message) {
                    Some(next) => {
                        tracing::debug!(from = format.as_str(), to = next.as_str(), %message, "llm policy: response_format refused; trying the next format");
                        format = next;
                    }
                    None => {
                        return Err(PolicyError::Endpoint(format!(
                            "the server refused every structured-output format (json_schema, json_object): {message}"
                        )))
                    }
                },
                Err(Failure::Policy(e)) => return Err(e),
            }
        }
    }
}

/// Why one POST gave no answer.
enum Failure {
    /// The server refused our `response_format` (its message).
    Format(String),
    /// Anything else.
    Policy(PolicyError),
}

/// An error with its sources, which is where reqwest says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads up to `cap` bytes of the body; `true` when there was more (the
/// rest is not read: the connection is dropped).
async fn read_at_most(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::with_capacity(
        response
            .content_length()
            .map_or(8 * 1024, |n| n as usize)
            .min(cap),
    );
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > cap {
            let room = cap - bytes.len();
            bytes.extend_from_slice(&chunk[..room]);
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

/// The message of an error answer (`{"error": {"message": …}}`, `{"error":
/// "…"}`, `{"message"|"detail": …}` or the text), shortened and on one line.
fn error_message(text: &str) -> String {
    let from_json = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        [
            v.pointer("/error/message"),
            v.get("error"),
            v.get("message"),
            v.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(|m| m.as_str().map(str::to_string))
    });
    let message = from_json.unwrap_or_else(|| text.to_string());
    let message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_CHARS)
        .collect();
    if message.trim().is_empty() {
        "(no message)".into()
    } else {
        message.trim().to_string()
    }
}

/// The chat completion envelope, parsed leniently: only what we read.
#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

/// The assistant's text out of a chat completion body.
fn completion_text(bytes: &[u8]) -> Result<String, PolicyError> {
    let completion: Completion = serde_json::from_slice(bytes).map_err(|e| {
        PolicyError::Malformed(format!(
            "the endpoint's answer is not a chat completion: {e}"
        ))
    })?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err(PolicyError::Malformed(
            "the chat completion has no choices".into(),
        ));
    };
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
        let refusal: String = refusal.chars().take(MAX_ERROR_CHARS).collect();
        return Err(PolicyError::Malformed(format!(
            "the model refused: {refusal}"
        )));
    }
    if choice.finish_reason.as_deref() == Some("length") {
        return Err(PolicyError::Malformed(
            "the answer was cut off at the model's token limit".into(),
        ));
    }
    choice
        .message
        .content
        .ok_or_else(|| PolicyError::Malformed("the chat completion has no content".into()))
}

/// The answer as the schema states it; any other field is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    changes: Vec<AnswerChange>,
    rationale: String,
    expected_gain: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerChange {
    knob: String,
    value: Value,
    reason: String,
}

/// Whether every number in `v` is finite.
fn all_finite(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::Array(a) => a.iter().all(all_finite),
        Value::Object(m) => m.values().all(all_finite),
        _ => true,
    }
}

/// Parses the model's answer strictly against [`answer_schema`]: one JSON
/// object (whitespace around it allowed, nothing else), exactly the schema's
/// fields with their types, at most [`MAX_CHANGES`] changes, each value a
/// number, string or object, every number finite.
///
/// Values are *not* checked against the knobs: that is the guard's job, and
/// its verdicts are what the audit log records.
pub fn parse_answer(text: &str) -> Result<Proposal, PolicyError> {
    let malformed = |m: String| PolicyError::Malformed(m);
    let answer: Answer = serde_json::from_str(text.trim())
        .map_err(|e| malformed(format!("the answer does not follow the schema: {e}")))?;
    if answer.changes.len() > MAX_CHANGES {
        return Err(malformed(format!(
            "the answer has {} changes; at most {MAX_CHANGES} are accepted",
            answer.changes.len()
        )));
    }
    if !answer.expected_gain.is_finite() {
        return Err(malformed("expected_gain is not a finite number".into()));
    }
    let mut changes = Vec::with_capacity(answer.changes.len());
    for (i, c) in answer.changes.into_iter().enumerate() {
        let kind = match &c.value {
            Value::Number(_) | Value::String(_) | Value::Object(_) => None,
            Value::Null => Some("null"),
            Value::Bool(_) => Some("a boolean"),
            Value::Array(_) => Some("an array"),
        };
        if let Some(kind) = kind {
            return Err(malformed(format!(
                "change {i} (`{}`): value must be a number, a string or an object, got {kind}",
                c.knob
            )));
        }
        if !all_finite(&c.value) {
            return Err(malformed(format!(
                "change {i} (`{}`): value holds a non-finite number",
                c.knob
            )));
        }
        changes.push(Change {
            knob: c.knob,
            value: c.value,
            reason: c.reason,
        });
    }
    Ok(Proposal {
        changes,
        rationale: answer.rationale,
        expected_gain: Some(answer.expected_gain),
    })
}

/// One knob's type and limits, as the model should read them.
fn knob_specs() -> Vec<Value> {
    let modes: Vec<&str> = RenderMode::ALL.iter().map(|m| m.as_str()).collect();
    SPECS
        .iter()
        .map(|s| match s.kind {
            KnobKind::Integer | KnobKind::Number => json!({
                "knob": s.path,
                "type": if s.kind == KnobKind::Integer { "integer" } else { "number" },
                "min": s.min,
                "max": s.max,
                "doc": s.doc,
            }),
            KnobKind::RenderMode => json!({
                "knob": s.path,
                "type": "render_mode",
                "values": modes,
                "doc": s.doc,
            }),
            KnobKind::RenderModeMap => json!({
                "knob": s.path,
                "type": "render_mode_map",
                "values": modes,
                "doc": format!("{}: an object {{\"domain\": \"mode\"}} that replaces the whole map", s.doc),
            }),
        })
        .collect()
}

fn tail<T>(items: &[T], n: usize) -> &[T] {
    &items[items.len().saturating_sub(n)..]
}

/// The user message: one JSON object with everything the model may look at.
pub fn user_message(ctx: &Context<'_>) -> String {
    let decisions: Vec<Value> = tail(ctx.decisions, RECENT_DECISIONS)
        .iter()
        .map(|d| {
            let mut d = d.clone();
            for c in &mut d.changes {
                if c.reason.chars().count() > MAX_REASON_CHARS {
                    c.reason = c.reason.chars().take(MAX_REASON_CHARS).collect();
                }
            }
            serde_json::to_value(d).expect("a decision serializes")
        })
        .collect();
    let recent: Vec<Value> = tail(ctx.recent, RECENT_OBSERVATIONS)
        .iter()
        .map(Observation::summary)
        .collect();
    json!({
        "observation": ctx.observation,
        "recent_observations": recent,
        "knobs_version": ctx.version,
        "knobs": ctx.knobs.to_paths(),
        "knob_specs": knob_specs(),
        "guard": ctx.guard.file(),
        "recent_decisions": decisions,
    })
    .to_string()
}

#[async_trait::async_trait]
impl Policy for LlmPolicy {
    fn name(&self) -> &str {
        "llm"
    }

    fn actor(&self) -> Value {
        json!({
            "policy": "llm",
            "model": self.model,
            "prompt_sha256": self.prompt_sha256(),
        })
    }

    async fn propose(&self, ctx: &Context<'_>) -> Result<Proposal, PolicyError> {
        self.refresh_prompt();
        let system = lock(&self.prompt).text.clone();
        let user = user_message(ctx);
        let started = Instant::now();
        let text = tokio::time::timeout(self.timeout, self.ask(&system, &user))
            .await
            .map_err(|_| PolicyError::Timeout(self.timeout.as_millis() as u64))??;
        let proposal = parse_answer(&text);
        tracing::debug!(
            model = %self.model,
            format = self.answer_format().as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = proposal.is_ok(),
            "llm policy: answer"
        );
        proposal
    }

    fn events(&self) -> Vec<PolicyEvent> {
        self.refresh_prompt();
        std::mem::take(&mut *lock(&self.events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing_passes_values_through_and_refuses_off_schema_answers() {
        let p = parse_answer(
            r#" {"changes":[{"knob":"extract.slots","value":0,"reason":"r"},
                {"knob":"extract.render_mode","value":3,"reason":"r"},
                {"knob":"extract.render_overrides","value":{"a.sim.test":"remote"},"reason":"r"}],
               "rationale":"x","expected_gain":0.1} "#,
        )
        .unwrap();
        // Semantically wrong values come through untouched: the guard judges them.
        assert_eq!(p.changes[0].value, json!(0));
        assert_eq!(p.changes[1].value, json!(3));
        assert_eq!(p.expected_gain, Some(0.1));
        for (text, needle) in [
            ("", "EOF"),
            ("not json", "expected"),
            (
                r#"{"changes":[],"rationale":"x"}"#,
                "missing field `expected_gain`",
            ),
            (
                r#"{"changes":[],"rationale":"x","expected_gain":"0.1"}"#,
                "invalid type",
            ),
            (
                r#"{"changes":[],"rationale":"x","expected_gain":0,"guard":{}}"#,
                "unknown field `guard`",
            ),
            (
                r#"{"changes":[{"knob":"a","value":1,"reason":"r","force":true}],"rationale":"x","expected_gain":0}"#,
                "unknown field `force`",
            ),
            (
                r#"{"changes":[{"knob":"a","value":1}],"rationale":"x","expected_gain":0}"#,
                "missing field `reason`",
            ),
            (
                r#"{"changes":[{"knob":"a","value":[1],"reason":"r"}],"rationale":"x","expected_gain":0}"#,
                "an array",
            ),
            (
                r#"{"changes":[{"knob":"a","value":true,"reason":"r"}],"rationale":"x","expected_gain":0}"#,
                "a boolean",
            ),
            (
                r#"{"changes":[{"knob":"a","value":null,"reason":"r"}],"rationale":"x","expected_gain":0}"#,
                "null",
            ),
            (
                r#"{"changes":[{"knob":"a","value":1e400,"reason":"r"}],"rationale":"x","expected_gain":0}"#,
                "out of range",
            ),
            (
                r#"{"changes":[],"rationale":"x","expected_gain":0} trailing"#,
                "trailing",
            ),
            (
                r#"{"changes":[],"changes":[],"rationale":"x","expected_gain":0}"#,
                "duplicate field",
            ),
            (
                "```json\n{\"changes\":[],\"rationale\":\"x\",\"expected_gain\":0}\n```",
                "expected value",
            ),
        ] {
            match parse_answer(text) {
                Err(PolicyError::Malformed(m)) => assert!(m.contains(needle), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let many: Vec<Value> = (0..=MAX_CHANGES)
            .map(|i| json!({"knob": format!("k{i}"), "value": 1, "reason": ""}))
            .collect();
        let text = json!({"changes": many, "rationale": "", "expected_gain": 0}).to_string();
        assert!(
            matches!(parse_answer(&text), Err(PolicyError::Malformed(m)) if m.contains("at most 16"))
        );
    }

    #[test]
    fn format_refusals_are_recognised_and_outages_are_not() {
        let llama =
            r#"response_format type must be one of "text" or "json_object", but got: json_schema"#;
        assert!(refuses_format(500, llama));
        assert!(refuses_format(400, llama));
        assert!(!refuses_format(503, llama));
        assert!(!refuses_format(500, "internal server error"));
        assert_eq!(
            AnswerFormat::StrictSchema.next(llama),
            Some(AnswerFormat::JsonObject)
        );
        let openai = "Invalid schema for response_format 'freshet_proposal': 'additionalProperties' is required to be supplied and to be false.";
        assert!(refuses_format(400, openai));
        assert_eq!(
            AnswerFormat::StrictSchema.next(openai),
            Some(AnswerFormat::Schema)
        );
        assert_eq!(
            AnswerFormat::Schema.next(openai),
            Some(AnswerFormat::JsonObject)
        );
        assert_eq!(AnswerFormat::JsonObject.next(llama), None);
    }

    #[test]
    fn error_messages_are_extracted_and_shortened() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad\nthing","code":500}}"#),
            "bad thing"
        );
        assert_eq!(error_message(r#"{"error":"plain"}"#), "plain");
        assert_eq!(error_message(r#"{"detail":"fastapi"}"#), "fastapi");
        assert_eq!(error_message(""), "(no message)");
        assert_eq!(error_message(&"x".repeat(5000)).len(), MAX_ERROR_CHARS);
    }

    #[test]
    fn the_schema_is_strict_shaped() {
        // Every object with properties forbids others and requires them all.
        fn walk(v: &Value) {
            if let Some(props) = v.get("properties").and_then(Value::as_object) {
                assert_eq!(v["additionalProperties"], json!(false), "{v}");
                let required: Vec<&str> = v["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                for k in props.keys() {
                    assert!(required.contains(&k.as_str()), "{k} not required");
                }
                props.values().for_each(walk);
            }
            if let Some(items) = v.get("items") {
                walk(items);
            }
        }
        walk(&answer_schema());
    }
}
