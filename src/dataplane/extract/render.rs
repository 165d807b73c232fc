//! Render modes: how a URL becomes a document.
//!
//! - `http`: [`super::fetch::Fetcher`] plus local main-content extraction;
//!   free, fast, blind to content that only JavaScript produces.
//! - `remote`: the provider's URL-to-markdown endpoint, which runs the page's
//!   scripts; costs credits per page.
//!
//! The mode comes from the live knobs per page: `extract.render_overrides`
//! (longest matching domain suffix) else `extract.render_mode`.

use super::ExtractError;
use crate::dataplane::retry::ErrorClass;
use crate::dataplane::search::serppost::{Rendered, SerpPost};

/// A service that renders a URL to markdown (one attempt per call).
#[async_trait::async_trait]
pub trait RemoteRenderer: Send + Sync + std::fmt::Debug {
    /// Renders `url`.
    async fn render(&self, url: &str) -> Result<Rendered, ExtractError>;
}

#[async_trait::async_trait]
impl RemoteRenderer for SerpPost {
    async fn render(&self, url: &str) -> Result<Rendered, ExtractError> {
        SerpPost::render(self, url).await.map_err(|e| {
            let mut err = ExtractError::new(e.class, url, format!("remote render: {}", e.message));
            err.retry_after = e.retry_after;
            err
        })
    }
}

/// Used where no provider is configured: every remote render fails clearly.
#[derive(Debug)]
pub struct NoRenderer;

#[async_trait::async_trait]
impl RemoteRenderer for NoRenderer {
    async fn render(&self, url: &str) -> Result<Rendered, ExtractError> {
        Err(ExtractError::new(
            ErrorClass::Invalid,
            url,
            "render mode `remote` needs a provider: set [provider] base_url and api_key".into(),
        ))
    }
}
