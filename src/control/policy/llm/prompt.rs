//! The prompt: the system message is the operator's prompt file, checked
//! for edits by content hash and swapped in only when usable; the user
//! message is one JSON object built from the [`Context`] (see the parent
//! module's docs for what it holds and what it never holds).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{lock, LlmSetupError, DEFAULT_RELOAD_EVERY, MAX_PROMPT_BYTES};
use crate::control::observe::Observation;
use crate::control::policy::{Context, PolicyEvent};
use crate::knobs::{KnobKind, SPECS};

/// Recent decisions sent to the model (the latest ones).
const RECENT_DECISIONS: usize = 10;
/// Earlier windows sent, summarized.
const RECENT_OBSERVATIONS: usize = 5;
/// Longest reason text of a past decision sent back to the model.
const MAX_REASON_CHARS: usize = 200;

/// The prompt in force and what the last check saw.
struct PromptState {
    text: Arc<str>,
    sha256: String,
    /// When the file was last read.
    checked_at: Instant,
    /// Fingerprint of the last rejected content, so an edit is reported once.
    rejected: Option<String>,
}

/// The prompt file and the text in force.
pub(super) struct Prompt {
    path: PathBuf,
    reload_every: Duration,
    state: Mutex<PromptState>,
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

impl Prompt {
    /// Reads the prompt file at `path`; refused if it cannot be used.
    pub(super) fn load(path: PathBuf) -> Result<Prompt, LlmSetupError> {
        let text =
            read_prompt(&path)
                .and_then(check_prompt)
                .map_err(|error| LlmSetupError::Prompt {
                    path: path.display().to_string(),
                    error,
                })?;
        let sha256 = sha256_hex(text.as_bytes());
        Ok(Prompt {
            path,
            reload_every: DEFAULT_RELOAD_EVERY,
            state: Mutex::new(PromptState {
                text: text.into(),
                sha256,
                checked_at: Instant::now(),
                rejected: None,
            }),
        })
    }

    /// Checks the file for edits at most this often.
    pub(super) fn set_reload_every(&mut self, every: Duration) {
        self.reload_every = every;
    }

    /// The file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 (hex) of the text in force.
    pub(super) fn sha256(&self) -> String {
        lock(&self.state).sha256.clone()
    }

    /// The text in force.
    pub(super) fn text(&self) -> Arc<str> {
        lock(&self.state).text.clone()
    }

    /// Re-reads the prompt file if the last check is older than
    /// `reload_every`; swaps it in if it changed and is usable, else keeps
    /// the old one. Returns the event to report: a reload, or a rejected
    /// edit (once, not once per check); None when nothing is new.
    pub(super) fn refresh(&self) -> Option<PolicyEvent> {
        let mut st = lock(&self.state);
        if st.checked_at.elapsed() < self.reload_every {
            return None;
        }
        st.checked_at = Instant::now();
        // The outcome, and a fingerprint so that a bad edit is reported once.
        let (fingerprint, outcome) = match read_prompt(&self.path) {
            Ok(bytes) => {
                let sha256 = sha256_hex(&bytes);
                if sha256 == st.sha256 {
                    st.rejected = None;
                    return None;
                }
                (
                    sha256.clone(),
                    check_prompt(bytes).map(|text| (text, sha256)),
                )
            }
            Err(error) => (error.clone(), Err(error)),
        };
        let path = self.path.display().to_string();
        match outcome {
            Ok((text, sha256)) => {
                let previous = std::mem::replace(&mut st.sha256, sha256.clone());
                st.text = text.into();
                st.rejected = None;
                tracing::info!(prompt = %path, %sha256, %previous, "llm policy: prompt reloaded");
                Some(PolicyEvent::PromptReloaded {
                    path,
                    sha256,
                    previous,
                })
            }
            Err(error) => {
                if st.rejected.as_ref() == Some(&fingerprint) {
                    return None;
                }
                st.rejected = Some(fingerprint);
                tracing::warn!(prompt = %path, %error, "llm policy: prompt edit rejected; the previous prompt stays in force");
                Some(PolicyEvent::PromptRejected { path, error })
            }
        }
    }
}

/// One knob's type and limits, as the model should read them.
fn knob_specs() -> Vec<Value> {
    let modes =
        |s: &crate::knobs::KnobSpec| -> Vec<&str> { s.modes.iter().map(|m| m.as_str()).collect() };
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
                "values": modes(s),
                "doc": s.doc,
            }),
            KnobKind::RenderModeMap => json!({
                "knob": s.path,
                "type": "render_mode_map",
                "values": modes(s),
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
