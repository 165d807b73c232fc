//! The SERPpost-style JSON API: search (`POST /api/search`) and
//! URL-to-markdown rendering (`POST /api/url`).
//!
//! The API key goes only into the `Authorization` header. Errors and logs
//! carry the endpoint path and status, never the key, and upstream error
//! bodies are cut short and scrubbed of it before they are quoted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{ProviderError, SearchHit, SearchProvider};
use crate::dataplane::events::{CreditsSpent, InternalEvent};
use crate::dataplane::retry::{parse_retry_after, ErrorClass};
use crate::settings::{ProviderSettings, Secret};

/// Credits one search costs.
pub const SEARCH_CREDITS: u64 = 1;
/// Credits one remote render costs.
pub const RENDER_CREDITS: u64 = 5;
/// Largest response body read from the API.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// A remote rendering of one URL.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Title reported by the renderer.
    pub title: String,
    /// The page as markdown.
    pub markdown: String,
}

/// Client of a SERPpost-style API.
pub struct SerpPost {
    client: reqwest::Client,
    base: url::Url,
    key: Secret,
    engine: String,
    render_wait_ms: u64,
    credits: AtomicU64,
}

impl std::fmt::Debug for SerpPost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerpPost")
            .field("base", &self.base.as_str())
            .field("key", &self.key)
            .field("engine", &self.engine)
            .finish()
    }
}

#[derive(Deserialize)]
struct SearchResponse {
    data: Vec<SearchHit>,
}

#[derive(Deserialize)]
struct RenderResponse {
    data: RenderData,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RenderData {
    Object {
        #[serde(default)]
        title: String,
        #[serde(alias = "content", alias = "md")]
        markdown: String,
    },
    Text(String),
}

impl SerpPost {
    /// A client for `settings.base_url` with `settings.api_key`.
    pub fn new(settings: &ProviderSettings) -> Result<SerpPost, ProviderError> {
        let base = url::Url::parse(&settings.base_url).map_err(|e| ProviderError {
            provider: "serppost",
            endpoint: "config",
            class: ErrorClass::Invalid,
            message: format!("provider.base_url is not a URL: {e}"),
            retry_after: None,
        })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ProviderError {
                provider: "serppost",
                endpoint: "config",
                class: ErrorClass::Invalid,
                message: format!("cannot build HTTP client: {e}"),
                retry_after: None,
            })?;
        Ok(SerpPost {
            client,
            base,
            key: settings.api_key.clone(),
            engine: settings.engine.clone(),
            render_wait_ms: settings.render_wait_ms,
            credits: AtomicU64::new(0),
        })
    }

    fn error(&self, endpoint: &'static str, class: ErrorClass, message: String) -> ProviderError {
        let key = self.key.expose();
        let message = if key.len() >= 4 {
            message.replace(key, "***")
        } else {
            message
        };
        ProviderError {
            provider: "serppost",
            endpoint,
            class,
            message,
            retry_after: None,
        }
    }

    async fn call(
        &self,
        endpoint: &'static str,
        body: serde_json::Value,
    ) -> Result<bytes::Bytes, ProviderError> {
        let path = match endpoint {
            "search" => "api/search",
            _ => "api/url",
        };
        let url = self
            .base
            .join(path)
            .map_err(|e| self.error(endpoint, ErrorClass::Invalid, e.to_string()))?;
        let response = self
            .client
            .post(url)
            .bearer_auth(self.key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                self.error(
                    endpoint,
                    ErrorClass::from_reqwest(&e),
                    format!("POST /{path}: {}", e.without_url()),
                )
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_capped(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|(class, msg)| self.error(endpoint, class, format!("POST /{path}: {msg}")))?;
        if !status.is_success() {
            let class = if status.as_u16() == 503 && retry_after.is_some() {
                ErrorClass::RateLimited
            } else {
                ErrorClass::from_status(status.as_u16())
            };
            let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            let mut err = self.error(
                endpoint,
                class,
                format!("POST /{path}: HTTP {status}: {snippet}"),
            );
            err.retry_after = retry_after;
            return Err(err);
        }
        Ok(body)
    }

    fn spend(&self, endpoint: &'static str, credits: u64) {
        self.credits.fetch_add(credits, Ordering::Relaxed);
        CreditsSpent {
            provider: "serppost",
            endpoint,
            credits,
        }
        .emit();
    }

    /// Renders `url` to markdown with the provider's browser (one attempt).
    pub async fn render(&self, url: &str) -> Result<Rendered, ProviderError> {
        let body = self
            .call(
                "render",
                json!({"s": url, "t": "url", "b": true, "w": self.render_wait_ms}),
            )
            .await?;
        self.spend("render", RENDER_CREDITS);
        let parsed: RenderResponse = serde_json::from_slice(&body).map_err(|e| {
            self.error(
                "render",
                ErrorClass::Parse,
                format!("unexpected /api/url answer: {e}"),
            )
        })?;
        Ok(match parsed.data {
            RenderData::Object { title, markdown } => Rendered { title, markdown },
            RenderData::Text(markdown) => Rendered {
                title: String::new(),
                markdown,
            },
        })
    }
}

/// Reads a body up to `cap` bytes; longer bodies fail as `too_large`.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<bytes::Bytes, (ErrorClass, String)> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err((
            ErrorClass::TooLarge,
            format!(
                "body of {} bytes exceeds the {cap} byte cap",
                response.content_length().unwrap_or(0)
            ),
        ));
    }
    let mut body = bytes::BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    return Err((
                        ErrorClass::TooLarge,
                        format!("body exceeds the {cap} byte cap"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => return Err((ErrorClass::from_reqwest(&e), e.without_url().to_string())),
        }
    }
}

#[async_trait::async_trait]
impl SearchProvider for SerpPost {
    fn name(&self) -> &'static str {
        "serppost"
    }

    async fn search(&self, query: &str) -> Result<Vec<SearchHit>, ProviderError> {
        let body = self
            .call("search", json!({"s": query, "t": self.engine}))
            .await?;
        self.spend("search", SEARCH_CREDITS);
        let parsed: SearchResponse = serde_json::from_slice(&body).map_err(|e| {
            self.error(
                "search",
                ErrorClass::Parse,
                format!("unexpected /api/search answer: {e}"),
            )
        })?;
        Ok(parsed
            .data
            .into_iter()
            .filter(|hit| matches!(url::Url::parse(&hit.url), Ok(u) if matches!(u.scheme(), "http" | "https")))
            .collect())
    }

    fn credits_used(&self) -> u64 {
        self.credits.load(Ordering::Relaxed)
    }
}
