//! The `llm` policy: an OpenAI-compatible chat model proposes knob changes
//! (docs/ARCHITECTURE.md §4, step 3).
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
//!
//! # Layout
//! - [`prompt`]: the prompt file and its hot reload, and the user message;
//! - [`transport`]: the request, the POST with its format-fallback ladder,
//!   the lenient reading of the chat completion envelope;
//! - [`answer`]: the answer schema and the strict parsing of the answer.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::{Context, Policy, PolicyError, PolicyEvent, Proposal};
use crate::settings::{ControllerSettings, LlmSettings};

pub mod answer;
pub mod prompt;
pub mod transport;

pub use answer::{answer_schema, parse_answer};
pub use prompt::user_message;
pub use transport::AnswerFormat;

use prompt::Prompt;
use transport::Transport;

/// Most changes one answer may carry; more is malformed (the guard allows
/// far fewer per decision, but an answer with dozens is not a proposal).
pub const MAX_CHANGES: usize = 16;
/// Largest prompt file accepted.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// How often the prompt file is checked for edits, at most.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(1);
/// The `json_schema.name` sent with the schema.
pub const SCHEMA_NAME: &str = "freshet_proposal";

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

/// The `llm` policy (see the module docs).
pub struct LlmPolicy {
    transport: Transport,
    timeout: Duration,
    prompt: Prompt,
    events: Mutex<Vec<PolicyEvent>>,
}

impl std::fmt::Debug for LlmPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmPolicy")
            .field("url", &self.transport.url())
            .field("model", &self.transport.model())
            .field("api_key", self.transport.api_key())
            .field("timeout", &self.timeout)
            .field("prompt", &self.prompt.path())
            .field("prompt_sha256", &self.prompt_sha256())
            .field("format", &self.answer_format())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        let prompt = Prompt::load(prompt.as_ref().to_path_buf())?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let transport = Transport::new(settings, timeout)?;
        Ok(LlmPolicy {
            transport,
            timeout,
            prompt,
            events: Mutex::new(Vec::new()),
        })
    }

    /// Checks the prompt file for edits at most this often (tests use zero).
    pub fn with_reload_every(mut self, every: Duration) -> LlmPolicy {
        self.prompt.set_reload_every(every);
        self
    }

    /// SHA-256 (hex) of the prompt in force.
    pub fn prompt_sha256(&self) -> String {
        self.prompt.sha256()
    }

    /// The structured-output format the next request will use.
    pub fn answer_format(&self) -> AnswerFormat {
        self.transport.answer_format()
    }

    /// Checks the prompt file for edits (see [`Prompt::refresh`]) and
    /// queues the outcome for [`Policy::events`].
    ///
    /// Called from both `events()` and `propose()`: a controller that
    /// collects events before it proposes records "prompt reloaded" before
    /// the first proposal made with the new prompt.
    fn refresh_prompt(&self) {
        if let Some(event) = self.prompt.refresh() {
            lock(&self.events).push(event);
        }
    }
}

#[async_trait::async_trait]
impl Policy for LlmPolicy {
    fn name(&self) -> &str {
        "llm"
    }

    fn actor(&self) -> Value {
        json!({
            "policy": "llm",
            "model": self.transport.model(),
            "prompt_sha256": self.prompt_sha256(),
        })
    }

    async fn propose(&self, ctx: &Context<'_>) -> Result<Proposal, PolicyError> {
        self.refresh_prompt();
        let system = self.prompt.text();
        let user = user_message(ctx);
        let started = Instant::now();
        let text = tokio::time::timeout(self.timeout, self.transport.ask(&system, &user))
            .await
            .map_err(|_| PolicyError::Timeout(self.timeout.as_millis() as u64))??;
        let proposal = parse_answer(&text);
        tracing::debug!(
            model = %self.transport.model(),
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
