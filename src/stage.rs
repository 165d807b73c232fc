//! The stages of the pipeline, as one leaf type that the data plane, the
//! knobs and the control plane all name (so `knobs` need not import the
//! data plane).

use serde::Serialize;

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
