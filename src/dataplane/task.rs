//! What sources hand the pipeline: [`Task`] (one JSON object per message or
//! line), its [`Envelope`] with the acknowledgement share, and the limits and
//! ids every stage agrees on. Sources import this module, never the wiring.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::ack::Ack;

/// A unit of work as sources deliver it (one JSON object per message/line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Task {
    /// Search the web for `query` and index the pages found.
    Keyword {
        /// The search query.
        query: String,
        /// Event time (Unix ms); freshness is measured from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
    },
    /// Fetch and index one page; its document id is the URL without fragment.
    Url {
        /// http(s) URL.
        url: String,
        /// Event time (Unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
    },
    /// Index a document given in full (replaces an earlier version).
    Document {
        /// Document id.
        id: String,
        /// Text or markdown.
        text: String,
        /// Title.
        #[serde(default)]
        title: String,
        /// Where it lives, if anywhere.
        #[serde(default)]
        url: String,
        /// Event time (Unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
        /// Fields stored with every chunk under `metadata` (e.g. a table's
        /// payload columns), for filtering at query time.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        metadata: BTreeMap<String, serde_json::Value>,
    },
    /// Remove every chunk of a document.
    Delete {
        /// Document id.
        id: String,
        /// Event time (Unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
    },
}

/// Largest document text accepted in a task.
pub const MAX_TEXT_BYTES: usize = 10 * 1024 * 1024;

/// Largest `metadata` of a document task, as JSON. Every chunk of the
/// document carries it (in its index payload), so it is kept small: at
/// [`MAX_CHUNKS_PER_DOC`](crate::dataplane::transform::MAX_CHUNKS_PER_DOC)
/// chunks, 16 KiB each is 32 MB for one document.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

impl Task {
    /// Parses and validates one task; the error says what is wrong.
    pub fn parse(json: &str) -> Result<Task, String> {
        let task: Task = serde_json::from_str(json).map_err(|e| format!("not a task: {e}"))?;
        task.validate()?;
        Ok(task)
    }

    /// Checks the fields a parser cannot.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = |id: &str| !id.trim().is_empty() && id.len() <= 1024;
        match self {
            Task::Keyword { query, .. } if query.trim().is_empty() || query.len() > 2048 => {
                Err("keyword query must be 1..=2048 bytes".into())
            }
            Task::Url { url, .. } => match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
                Ok(u) => Err(format!(
                    "url must be http(s) with a host, got scheme `{}`",
                    u.scheme()
                )),
                Err(e) => Err(format!("bad url: {e}")),
            },
            Task::Document { id, .. } | Task::Delete { id, .. } if !id_ok(id) => {
                Err("document id must be 1..=1024 bytes".into())
            }
            Task::Document { text, .. } if text.len() > MAX_TEXT_BYTES => Err(format!(
                "document text is larger than {MAX_TEXT_BYTES} bytes"
            )),
            Task::Document { metadata, .. }
                if metadata.keys().any(|k| k.is_empty() || k.len() > 128) =>
            {
                Err("metadata keys must be 1..=128 bytes".into())
            }
            Task::Document { metadata, .. }
                if serde_json::to_vec(metadata).map_or(0, |v| v.len()) > MAX_METADATA_BYTES =>
            {
                Err(format!(
                    "document metadata is larger than {MAX_METADATA_BYTES} bytes of JSON"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The task type label.
    pub fn kind(&self) -> &'static str {
        match self {
            Task::Keyword { .. } => "keyword",
            Task::Url { .. } => "url",
            Task::Document { .. } => "document",
            Task::Delete { .. } => "delete",
        }
    }

    /// Event time (Unix ms), if the task carries one.
    pub fn ts_ms(&self) -> Option<u64> {
        match self {
            Task::Keyword { ts_ms, .. }
            | Task::Url { ts_ms, .. }
            | Task::Document { ts_ms, .. }
            | Task::Delete { ts_ms, .. } => *ts_ms,
        }
    }
}

/// The document id of a page: its URL without the fragment.
pub fn url_doc_id(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// A task with its acknowledgement share, as sources hand it in.
#[derive(Debug)]
pub struct Envelope {
    /// The task.
    pub task: Task,
    /// Its source message's share.
    pub ack: Ack,
    /// Unix ms when the source received it (freshness when the task has no `ts_ms`).
    pub received_ms: u64,
    /// Where it came from, e.g. `embedded:0:17`.
    pub source: String,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_with(metadata: serde_json::Value) -> String {
        serde_json::json!({"type": "document", "id": "d", "text": "hello", "metadata": metadata})
            .to_string()
    }

    #[test]
    fn metadata_is_bounded_in_size_and_key_length() {
        // The case: 60 KiB of metadata, cloned into every chunk.
        let big = doc_with(serde_json::json!({"blob": "x".repeat(60 * 1024)}));
        let err = Task::parse(&big).unwrap_err();
        assert!(err.contains("metadata is larger than 16384 bytes"), "{err}");
        let ok = doc_with(serde_json::json!({"blob": "x".repeat(8 * 1024), "tags": ["a", "b"]}));
        assert!(Task::parse(&ok).is_ok());
        let long_key = doc_with(serde_json::json!({"k".repeat(129): 1}));
        assert!(Task::parse(&long_key).unwrap_err().contains("keys must be"));
        let empty_key = doc_with(serde_json::json!({"": 1}));
        assert!(Task::parse(&empty_key)
            .unwrap_err()
            .contains("keys must be"));
    }
}
