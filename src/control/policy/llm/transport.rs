//! Transport: the chat request, one POST with a bounded read, and the
//! format-fallback ladder over [`AnswerFormat`]s (see the parent module's
//! docs for why plain reqwest and why the ladder); the chat completion
//! envelope is parsed leniently here, the answer in it strictly in
//! [`super::answer`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest, ResponseFormat, ResponseFormatJsonSchema,
};
use serde::Deserialize;
use serde_json::Value;

use super::answer::answer_schema;
use super::{LlmSetupError, SCHEMA_NAME};
use crate::control::policy::PolicyError;
use crate::settings::{LlmSettings, Secret};

/// Bytes of an error response read for its message.
const MAX_ERROR_BODY: usize = 4 * 1024;
/// Characters of a server's error message kept in a [`PolicyError`].
const MAX_ERROR_CHARS: usize = 300;

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

/// The endpoint and what it is known to accept.
pub(super) struct Transport {
    http: reqwest::Client,
    /// `{base_url}/chat/completions`
    url: String,
    model: String,
    api_key: Secret,
    max_answer_bytes: usize,
    /// The [`AnswerFormat`] the server accepts, as far as we know.
    format: AtomicU8,
}

impl Transport {
    /// A transport to `settings.base_url`; `timeout` bounds connecting.
    pub(super) fn new(
        settings: &LlmSettings,
        timeout: Duration,
    ) -> Result<Transport, LlmSetupError> {
        let base = settings.base_url.trim_end_matches('/');
        match url::Url::parse(base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(LlmSetupError::BaseUrl(settings.base_url.clone())),
        }
        let http = reqwest::Client::builder()
            // An API does not redirect; following one could only send the
            // key somewhere it was not meant to go.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .build()
            .map_err(|e| LlmSetupError::Client(e.to_string()))?;
        Ok(Transport {
            http,
            url: format!("{base}/chat/completions"),
            model: settings.model.clone(),
            api_key: settings.api_key.clone(),
            max_answer_bytes: settings.max_answer_bytes,
            format: AtomicU8::new(AnswerFormat::StrictSchema.as_u8()),
        })
    }

    /// `{base_url}/chat/completions`.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The model asked.
    pub(super) fn model(&self) -> &str {
        &self.model
    }

    /// The API key (its `Debug` hides it).
    pub(super) fn api_key(&self) -> &Secret {
        &self.api_key
    }

    /// The structured-output format the next request will use.
    pub(super) fn answer_format(&self) -> AnswerFormat {
        AnswerFormat::from_u8(self.format.load(Ordering::Relaxed))
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
    pub(super) async fn ask(&self, system: &str, user: &str) -> Result<String, PolicyError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
