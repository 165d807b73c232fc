//! The data plane: sources, search, extract, transform, embed, index.
//!
//! Each stage is one module with a config part and a runtime part; stages
//! talk only through bounded channels of typed items. Every stage reads the
//! live knobs ([`crate::live::LiveConfig`]) once per unit of work.

pub mod ack;
pub mod dlq;
pub mod embed;
pub mod extract;
pub mod index;
pub mod pipeline;
pub mod retry;
pub mod search;
pub mod source;
pub mod transform;

use serde::Serialize;

pub use pipeline::{Counters, Deps, Envelope, Pipeline, Task};

/// The stages of the pipeline, as metric labels and knob prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Reading tasks from the embedded queue or Kafka.
    Source,
    /// Keyword -> URLs.
    Search,
    /// URL -> markdown and quality.
    Extract,
    /// Markdown -> clean chunks.
    Transform,
    /// Chunks -> vectors.
    Embed,
    /// Vectors -> the index.
    Index,
}

impl Stage {
    /// The `stage` metric label and knob prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Search => "search",
            Stage::Extract => "extract",
            Stage::Transform => "transform",
            Stage::Embed => "embed",
            Stage::Index => "index",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
