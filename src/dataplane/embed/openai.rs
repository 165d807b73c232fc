//! Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint, through
//! async-openai: OpenAI, vLLM, Ollama, TEI, LiteLLM, the simulator.
//!
//! One call is one attempt: retries, timeouts and concurrency belong to the
//! stage (live knobs), so async-openai's own retrying is not used.

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use async_openai::Client;

use super::{check_vectors, EmbedError, Embedder};
use crate::dataplane::retry::ErrorClass;

/// Client of an OpenAI-compatible embeddings endpoint.
pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    model: String,
    dim: usize,
    /// Send `dimensions` in the request (only models that support it).
    send_dimensions: bool,
    /// The key, to scrub from error messages.
    api_key: crate::settings::Secret,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("model", &self.model)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl OpenAiEmbedder {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1`), model and dimension.
    pub fn new(
        base_url: &str,
        api_key: &str,
        model: &str,
        dim: usize,
        send_dimensions: bool,
    ) -> OpenAiEmbedder {
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key);
        OpenAiEmbedder {
            client: Client::with_config(config),
            model: model.to_string(),
            dim,
            send_dimensions,
            api_key: crate::settings::Secret::new(api_key),
        }
    }
}

fn classify(err: &OpenAIError) -> ErrorClass {
    match err {
        OpenAIError::Reqwest(e) => {
            if e.is_timeout() {
                ErrorClass::Timeout
            } else if e.is_connect() {
                ErrorClass::Connect
            } else if let Some(status) = e.status() {
                ErrorClass::from_status(status.as_u16())
            } else {
                ErrorClass::Reset
            }
        }
        OpenAIError::ApiError(api) => ErrorClass::from_status(api.status_code.as_u16()),
        OpenAIError::JSONDeserialize(..) => ErrorClass::Parse,
        OpenAIError::InvalidArgument(_) => ErrorClass::Invalid,
        _ => ErrorClass::Upstream,
    }
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    fn backend(&self) -> &'static str {
        "openai"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let request = CreateEmbeddingRequest {
            model: self.model.clone(),
            input: EmbeddingInput::StringArray(texts.to_vec()),
            encoding_format: None,
            user: None,
            dimensions: self.send_dimensions.then_some(self.dim as u32),
        };
        let response = self
            .client
            .embeddings()
            .create(request)
            .await
            .map_err(|e| {
                let message: String =
                    crate::settings::scrub(&e.to_string(), &[self.api_key.expose()])
                        .chars()
                        .take(300)
                        .collect();
                EmbedError {
                    backend: "openai",
                    class: classify(&e),
                    message,
                }
            })?;
        let mut data = response.data;
        data.sort_by_key(|d| d.index);
        if data.iter().enumerate().any(|(i, d)| d.index as usize != i) {
            return Err(EmbedError {
                backend: "openai",
                class: ErrorClass::Parse,
                message: format!(
                    "the answer's `index` values are not 0..{} (missing or repeated)",
                    texts.len()
                ),
            });
        }
        let vectors: Vec<Vec<f32>> = data.into_iter().map(|d| d.embedding).collect();
        check_vectors("openai", self.dim, texts.len(), &vectors)?;
        Ok(vectors)
    }
}
