//! The live-tunable knobs (docs/ARCHITECTURE.md §3).
//!
//! A [`Knobs`] value is one complete, validated setting of everything the
//! control plane may change while freshet runs. Knobs are addressed by a dotted
//! path (`extract.slots`, `search.retry.max_attempts`); the table [`SPECS`]
//! lists every path with its type and structural limits. Structural limits are
//! what the code can run with at all (a stage needs at least one slot); the
//! guard's policy files narrow them further.
//!
//! A patch is a list of [`Change`]s. [`Knobs::apply_patch`] never coerces: an
//! unknown path, a string where a number belongs, `12.5` for a slot count or a
//! NaN are errors that name the path. The result is validated as a whole
//! before it is returned, so a caller only ever holds a consistent snapshot.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stage::Stage;

/// How a page is turned into markdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenderMode {
    /// Plain HTTP fetch plus local main-content extraction. Costs no credits.
    Http,
    /// HTTP first; a page that looks like a JavaScript shell or scores
    /// below the quality bar is fetched again with `extract.escalate_to`.
    Auto,
    /// A local headless Chromium runs the page's scripts (browser
    /// CPU-seconds, no credits).
    Browser,
    /// The provider's URL-to-markdown endpoint, which runs JavaScript. Costs credits.
    Remote,
}

impl RenderMode {
    /// Every mode, in the order of their cost.
    pub const ALL: [RenderMode; 4] = [
        RenderMode::Http,
        RenderMode::Auto,
        RenderMode::Browser,
        RenderMode::Remote,
    ];

    /// The modes `auto` may escalate to.
    pub const ESCALATION_TARGETS: [RenderMode; 2] = [RenderMode::Browser, RenderMode::Remote];

    /// The knob value and metric label of this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            RenderMode::Http => "http",
            RenderMode::Auto => "auto",
            RenderMode::Browser => "browser",
            RenderMode::Remote => "remote",
        }
    }

    /// Parses a mode name, explaining which names exist when it fails.
    pub fn parse(name: &str) -> Result<RenderMode, String> {
        RenderMode::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                format!("unknown render mode `{name}` (available: http, auto, browser, remote)")
            })
    }
}

impl fmt::Display for RenderMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retry budget and backoff of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryKnobs {
    /// Attempts in all, the first one included (1 = never retry).
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; doubles per attempt (full jitter).
    pub base_ms: u64,
    /// Upper bound of any single backoff delay.
    pub max_ms: u64,
}

impl Default for RetryKnobs {
    fn default() -> Self {
        RetryKnobs {
            max_attempts: 3,
            base_ms: 100,
            max_ms: 5_000,
        }
    }
}

/// Knobs of the search stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchKnobs {
    /// Concurrent search requests.
    pub slots: u32,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Retry budget for failed searches.
    pub retry: RetryKnobs,
}

impl Default for SearchKnobs {
    fn default() -> Self {
        SearchKnobs {
            slots: 4,
            timeout_ms: 10_000,
            retry: RetryKnobs::default(),
        }
    }
}

/// Knobs of the extract stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractKnobs {
    /// Concurrent page fetches / renders.
    pub slots: u32,
    /// Per-attempt timeout for the whole fetch (headers and body).
    pub timeout_ms: u64,
    /// Retry budget for failed fetches.
    pub retry: RetryKnobs,
    /// The render mode used for domains without an override.
    pub render_mode: RenderMode,
    /// Per-domain render modes; a key matches the host and its subdomains.
    pub render_overrides: BTreeMap<String, RenderMode>,
    /// Headless-browser tabs open at once (`browser` and escalated pages).
    pub browser_slots: u32,
    /// What `auto` fetches a JS shell or low-quality page again with
    /// (`browser` or `remote`).
    pub escalate_to: RenderMode,
}

impl Default for ExtractKnobs {
    fn default() -> Self {
        ExtractKnobs {
            slots: 8,
            timeout_ms: 10_000,
            retry: RetryKnobs::default(),
            render_mode: RenderMode::Http,
            render_overrides: BTreeMap::new(),
            browser_slots: 2,
            escalate_to: RenderMode::Browser,
        }
    }
}

impl ExtractKnobs {
    /// The render mode for `host`: the override of the longest matching
    /// domain suffix, else the global mode.
    pub fn render_mode_for(&self, host: &str) -> RenderMode {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.render_overrides
            .iter()
            .filter(|(domain, _)| {
                host == **domain
                    || (host.ends_with(domain.as_str())
                        && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
            })
            .max_by_key(|(domain, _)| domain.len())
            .map(|(_, mode)| *mode)
            .unwrap_or(self.render_mode)
    }
}

/// Knobs of the transform stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformKnobs {
    /// Documents per Polars micro-batch.
    pub batch_size: u32,
    /// How long a partial batch waits for more documents.
    pub linger_ms: u64,
    /// Documents whose extraction quality is below this are dropped.
    pub min_quality: f64,
    /// Target chunk length in tokens.
    pub chunk_tokens: u32,
    /// Tokens shared by consecutive chunks.
    pub chunk_overlap: u32,
}

impl Default for TransformKnobs {
    fn default() -> Self {
        TransformKnobs {
            batch_size: 32,
            linger_ms: 10,
            min_quality: 0.5,
            chunk_tokens: 256,
            chunk_overlap: 32,
        }
    }
}

/// Knobs of the embed stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedKnobs {
    /// Concurrent embedding requests.
    pub slots: u32,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Retry budget for failed embedding requests.
    pub retry: RetryKnobs,
    /// Inputs per embedding request.
    pub batch_size: u32,
    /// CPU threads of the local embedder (0: one per core); other back ends
    /// ignore it.
    pub threads: u32,
}

impl Default for EmbedKnobs {
    fn default() -> Self {
        EmbedKnobs {
            slots: 2,
            timeout_ms: 30_000,
            retry: RetryKnobs::default(),
            batch_size: 32,
            threads: 0,
        }
    }
}

/// Knobs of the index stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexKnobs {
    /// Concurrent upsert/delete requests.
    pub slots: u32,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Retry budget for failed index writes.
    pub retry: RetryKnobs,
    /// Points per upsert.
    pub batch_size: u32,
    /// How long a partial upsert batch waits for more points.
    pub linger_ms: u64,
}

impl Default for IndexKnobs {
    fn default() -> Self {
        IndexKnobs {
            slots: 2,
            timeout_ms: 10_000,
            retry: RetryKnobs::default(),
            batch_size: 256,
            linger_ms: 5,
        }
    }
}

/// Knobs of the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceKnobs {
    /// Source messages that may be unacknowledged at once.
    pub max_in_flight: u32,
}

impl Default for SourceKnobs {
    fn default() -> Self {
        SourceKnobs { max_in_flight: 512 }
    }
}

/// Every live knob, one consistent setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Knobs {
    /// Search stage.
    pub search: SearchKnobs,
    /// Extract stage.
    pub extract: ExtractKnobs,
    /// Transform stage.
    pub transform: TransformKnobs,
    /// Embed stage.
    pub embed: EmbedKnobs,
    /// Index stage.
    pub index: IndexKnobs,
    /// Source.
    pub source: SourceKnobs,
}

/// The value type of a knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KnobKind {
    /// A whole number within `[min, max]`.
    Integer,
    /// A finite number within `[min, max]`.
    Number,
    /// A render mode name.
    RenderMode,
    /// A map from domain to render mode.
    RenderModeMap,
}

/// One knob's path, type and structural limits.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KnobSpec {
    /// Dotted path, e.g. `extract.slots`.
    pub path: &'static str,
    /// Value type.
    pub kind: KnobKind,
    /// Smallest value the code can run with (numbers only).
    pub min: f64,
    /// Largest value the code accepts (numbers only).
    pub max: f64,
    /// What the knob does.
    pub doc: &'static str,
    /// The render modes a render-mode knob accepts (empty for numbers).
    pub modes: &'static [RenderMode],
}

const fn int(path: &'static str, min: f64, max: f64, doc: &'static str) -> KnobSpec {
    KnobSpec {
        path,
        kind: KnobKind::Integer,
        min,
        max,
        doc,
        modes: &[],
    }
}

/// Every knob path, in display order.
pub const SPECS: &[KnobSpec] = &[
    int("search.slots", 1.0, 1024.0, "concurrent search requests"),
    int(
        "search.timeout_ms",
        10.0,
        600_000.0,
        "per-attempt search timeout",
    ),
    int(
        "search.retry.max_attempts",
        1.0,
        20.0,
        "search attempts in all",
    ),
    int(
        "search.retry.base_ms",
        1.0,
        60_000.0,
        "first search backoff ceiling",
    ),
    int(
        "search.retry.max_ms",
        1.0,
        600_000.0,
        "largest search backoff",
    ),
    int("extract.slots", 1.0, 1024.0, "concurrent page fetches"),
    int(
        "extract.timeout_ms",
        10.0,
        600_000.0,
        "per-attempt fetch timeout",
    ),
    int(
        "extract.retry.max_attempts",
        1.0,
        20.0,
        "fetch attempts in all",
    ),
    int(
        "extract.retry.base_ms",
        1.0,
        60_000.0,
        "first fetch backoff ceiling",
    ),
    int(
        "extract.retry.max_ms",
        1.0,
        600_000.0,
        "largest fetch backoff",
    ),
    KnobSpec {
        path: "extract.render_mode",
        kind: KnobKind::RenderMode,
        min: 0.0,
        max: 0.0,
        doc: "global render mode (http, auto, browser, remote)",
        modes: &RenderMode::ALL,
    },
    KnobSpec {
        path: "extract.render_overrides",
        kind: KnobKind::RenderModeMap,
        min: 0.0,
        max: 0.0,
        doc: "render mode per domain",
        modes: &RenderMode::ALL,
    },
    int(
        "extract.browser_slots",
        1.0,
        256.0,
        "headless-browser tabs at once",
    ),
    KnobSpec {
        path: "extract.escalate_to",
        kind: KnobKind::RenderMode,
        min: 0.0,
        max: 0.0,
        doc: "the mode auto escalates to (browser or remote) for JS shells and low-quality pages",
        modes: &RenderMode::ESCALATION_TARGETS,
    },
    int(
        "transform.batch_size",
        1.0,
        100_000.0,
        "documents per micro-batch",
    ),
    int("transform.linger_ms", 0.0, 60_000.0, "micro-batch wait"),
    KnobSpec {
        path: "transform.min_quality",
        kind: KnobKind::Number,
        min: 0.0,
        max: 1.0,
        doc: "quality bar for documents",
        modes: &[],
    },
    int("transform.chunk_tokens", 16.0, 8_192.0, "tokens per chunk"),
    int(
        "transform.chunk_overlap",
        0.0,
        4_096.0,
        "tokens shared by neighbours",
    ),
    int("embed.slots", 1.0, 1024.0, "concurrent embedding requests"),
    int(
        "embed.timeout_ms",
        10.0,
        600_000.0,
        "per-attempt embedding timeout",
    ),
    int(
        "embed.retry.max_attempts",
        1.0,
        20.0,
        "embedding attempts in all",
    ),
    int(
        "embed.retry.base_ms",
        1.0,
        60_000.0,
        "first embedding backoff ceiling",
    ),
    int(
        "embed.retry.max_ms",
        1.0,
        600_000.0,
        "largest embedding backoff",
    ),
    int(
        "embed.batch_size",
        1.0,
        4_096.0,
        "inputs per embedding request",
    ),
    int(
        "embed.threads",
        0.0,
        256.0,
        "local embedder CPU threads (0: one per core)",
    ),
    int("index.slots", 1.0, 1024.0, "concurrent index writes"),
    int(
        "index.timeout_ms",
        10.0,
        600_000.0,
        "per-attempt index timeout",
    ),
    int(
        "index.retry.max_attempts",
        1.0,
        20.0,
        "index attempts in all",
    ),
    int(
        "index.retry.base_ms",
        1.0,
        60_000.0,
        "first index backoff ceiling",
    ),
    int(
        "index.retry.max_ms",
        1.0,
        600_000.0,
        "largest index backoff",
    ),
    int("index.batch_size", 1.0, 100_000.0, "points per upsert"),
    int("index.linger_ms", 0.0, 60_000.0, "upsert batch wait"),
    int(
        "source.max_in_flight",
        1.0,
        1_000_000.0,
        "unacknowledged source messages",
    ),
];

/// Looks up the spec of a knob path.
pub fn spec(path: &str) -> Option<&'static KnobSpec> {
    SPECS.iter().find(|s| s.path == path)
}

/// One requested knob change, as policies, operators and `PATCH /v1/knobs` send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Knob path, e.g. `extract.slots`.
    pub knob: String,
    /// New value; its JSON type must match the knob's kind.
    pub value: Value,
    /// Why the change is wanted (free text, recorded in the audit log).
    #[serde(default)]
    pub reason: String,
}

impl Change {
    /// A change without a reason (tests, operators).
    pub fn new(knob: impl Into<String>, value: impl Into<Value>) -> Change {
        Change {
            knob: knob.into(),
            value: value.into(),
            reason: String::new(),
        }
    }
}

/// One knob that differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobDiff {
    /// Knob path.
    pub knob: String,
    /// Value before.
    pub from: Value,
    /// Value after.
    pub to: Value,
}

/// Why a knob value or patch was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KnobError {
    /// The path names no knob.
    #[error("unknown knob `{0}` (see `freshet config show` for the knob paths)")]
    UnknownKnob(String),
    /// The JSON type does not match the knob.
    #[error("knob `{knob}` takes {expected}, got {got}")]
    WrongType {
        /// Knob path.
        knob: String,
        /// What the knob takes.
        expected: &'static str,
        /// What was sent.
        got: String,
    },
    /// The value is outside the structural limits.
    #[error("knob `{knob}` must be within [{min}, {max}], got {got}")]
    OutOfRange {
        /// Knob path.
        knob: String,
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// What was sent.
        got: String,
    },
    /// The values are each valid but do not fit together.
    #[error("inconsistent knobs: {0}")]
    Inconsistent(String),
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(60).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Checks one value against a knob's spec without converting it.
pub fn check_value(spec: &KnobSpec, value: &Value) -> Result<(), KnobError> {
    let wrong = |expected| KnobError::WrongType {
        knob: spec.path.to_string(),
        expected,
        got: describe(value),
    };
    match spec.kind {
        KnobKind::Integer | KnobKind::Number => {
            let number = match value {
                Value::Number(n) => n,
                _ => {
                    return Err(wrong(if spec.kind == KnobKind::Integer {
                        "a whole number"
                    } else {
                        "a number"
                    }))
                }
            };
            let x = number.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                wrong(if spec.kind == KnobKind::Integer {
                    "a whole number"
                } else {
                    "a finite number"
                })
            })?;
            if spec.kind == KnobKind::Integer && !(number.is_u64() || number.is_i64()) {
                return Err(wrong("a whole number"));
            }
            if x < spec.min || x > spec.max {
                return Err(KnobError::OutOfRange {
                    knob: spec.path.to_string(),
                    min: spec.min,
                    max: spec.max,
                    got: describe(value),
                });
            }
            Ok(())
        }
        KnobKind::RenderMode => match value {
            Value::String(s) => check_mode(spec, s, "a render mode name"),
            _ => Err(wrong("a render mode name (http, auto, browser, remote)")),
        },
        KnobKind::RenderModeMap => match value {
            Value::Object(map) => {
                for (domain, mode) in map {
                    if !valid_domain(domain) {
                        return Err(KnobError::WrongType {
                            knob: spec.path.to_string(),
                            expected: "lowercase domain names as keys",
                            got: describe(&Value::String(domain.clone())),
                        });
                    }
                    let Value::String(mode) = mode else {
                        return Err(wrong("render mode names as values"));
                    };
                    check_mode(spec, mode, "render mode names as values")?;
                }
                Ok(())
            }
            _ => Err(wrong("an object of domain -> render mode")),
        },
    }
}

/// `name` is a render mode that `spec` accepts (its `modes`).
fn check_mode(spec: &KnobSpec, name: &str, expected: &'static str) -> Result<(), KnobError> {
    let wrong = |got: String| KnobError::WrongType {
        knob: spec.path.to_string(),
        expected,
        got,
    };
    let mode = RenderMode::parse(name).map_err(wrong)?;
    if spec.modes.contains(&mode) {
        Ok(())
    } else {
        Err(wrong(format!(
            "`{name}` is not accepted here: {}",
            spec.doc
        )))
    }
}

/// A domain usable as a render override key: lowercase labels of
/// `[a-z0-9-]`, dot separated, at most 253 bytes.
pub fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl Knobs {
    /// `<stage>.slots` and `<stage>.timeout_ms` of a slotted stage
    /// (`search`, `extract`, `embed`, `index`); None for any other stage.
    pub fn stage_limits(&self, stage: Stage) -> Option<(u32, u64)> {
        match stage {
            Stage::Search => Some((self.search.slots, self.search.timeout_ms)),
            Stage::Extract => Some((self.extract.slots, self.extract.timeout_ms)),
            Stage::Embed => Some((self.embed.slots, self.embed.timeout_ms)),
            Stage::Index => Some((self.index.slots, self.index.timeout_ms)),
            Stage::Source | Stage::Transform => None,
        }
    }

    /// The knobs as one flat map from path to value.
    pub fn to_paths(&self) -> BTreeMap<String, Value> {
        let tree = serde_json::to_value(self).expect("knobs serialize to JSON");
        SPECS
            .iter()
            .map(|spec| {
                let value = lookup(&tree, spec.path).cloned().unwrap_or(Value::Null);
                (spec.path.to_string(), value)
            })
            .collect()
    }

    /// The current value of one knob.
    pub fn get(&self, path: &str) -> Result<Value, KnobError> {
        spec(path).ok_or_else(|| KnobError::UnknownKnob(path.to_string()))?;
        let tree = serde_json::to_value(self).expect("knobs serialize to JSON");
        Ok(lookup(&tree, path).cloned().unwrap_or(Value::Null))
    }

    /// The knobs that differ from `self` in `other`, in [`SPECS`] order.
    pub fn diff(&self, other: &Knobs) -> Vec<KnobDiff> {
        let before = self.to_paths();
        let after = other.to_paths();
        SPECS
            .iter()
            .filter_map(|spec| {
                let from = &before[spec.path];
                let to = &after[spec.path];
                (from != to).then(|| KnobDiff {
                    knob: spec.path.to_string(),
                    from: from.clone(),
                    to: to.clone(),
                })
            })
            .collect()
    }

    /// Applies a patch: every change is checked, then the whole result is
    /// validated. Nothing is coerced; the first bad change is the error.
    pub fn apply_patch(&self, changes: &[Change]) -> Result<Knobs, KnobError> {
        let mut tree = serde_json::to_value(self).expect("knobs serialize to JSON");
        for change in changes {
            let spec =
                spec(&change.knob).ok_or_else(|| KnobError::UnknownKnob(change.knob.clone()))?;
            check_value(spec, &change.value)?;
            let slot = lookup_mut(&mut tree, spec.path).expect("every spec path exists in Knobs");
            *slot = change.value.clone();
        }
        let knobs: Knobs = serde_json::from_value(tree)
            .map_err(|e| KnobError::Inconsistent(format!("patched knobs do not parse: {e}")))?;
        knobs.validate()?;
        Ok(knobs)
    }

    /// Checks every knob against its spec and the knobs against each other.
    pub fn validate(&self) -> Result<(), KnobError> {
        let paths = self.to_paths();
        for spec in SPECS {
            check_value(spec, &paths[spec.path])?;
        }
        for (stage, retry) in [
            ("search", &self.search.retry),
            ("extract", &self.extract.retry),
            ("embed", &self.embed.retry),
            ("index", &self.index.retry),
        ] {
            if retry.base_ms > retry.max_ms {
                return Err(KnobError::Inconsistent(format!(
                    "{stage}.retry.base_ms ({}) is larger than {stage}.retry.max_ms ({})",
                    retry.base_ms, retry.max_ms
                )));
            }
        }
        if self.transform.chunk_overlap >= self.transform.chunk_tokens {
            return Err(KnobError::Inconsistent(format!(
                "transform.chunk_overlap ({}) must be smaller than transform.chunk_tokens ({})",
                self.transform.chunk_overlap, self.transform.chunk_tokens
            )));
        }
        Ok(())
    }
}

fn lookup<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |node, key| node.get(key))
}

fn lookup_mut<'a>(tree: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.')
        .try_fold(tree, |node, key| node.get_mut(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_spec_path_exists_and_defaults_validate() {
        let knobs = Knobs::default();
        knobs.validate().unwrap();
        let tree = serde_json::to_value(&knobs).unwrap();
        for spec in SPECS {
            assert!(lookup(&tree, spec.path).is_some(), "{} missing", spec.path);
        }
        // and every leaf of the struct has a spec
        fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) if !prefix.ends_with("render_overrides") => {
                    for (k, v) in m {
                        let p = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&p, v, out);
                    }
                }
                _ => out.push(prefix.to_string()),
            }
        }
        let mut all = Vec::new();
        leaves("", &tree, &mut all);
        for path in all {
            assert!(spec(&path).is_some(), "no spec for {path}");
        }
    }

    #[test]
    fn patch_sets_values_and_diff_reports_them() {
        let base = Knobs::default();
        let patched = base
            .apply_patch(&[
                Change::new("extract.slots", 12),
                Change::new(
                    "extract.render_overrides",
                    json!({"news.sim.test": "remote"}),
                ),
                Change::new("transform.min_quality", 0.25),
            ])
            .unwrap();
        assert_eq!(patched.extract.slots, 12);
        assert_eq!(
            patched.extract.render_mode_for("a.news.sim.test"),
            RenderMode::Remote
        );
        assert_eq!(
            patched.extract.render_mode_for("othernews.sim.test"),
            RenderMode::Http
        );
        let diff = base.diff(&patched);
        let paths: Vec<_> = diff.iter().map(|d| d.knob.as_str()).collect();
        assert_eq!(
            paths,
            [
                "extract.slots",
                "extract.render_overrides",
                "transform.min_quality"
            ]
        );
        assert_eq!(diff[0].from, json!(8));
        assert_eq!(diff[0].to, json!(12));
        assert!(patched.diff(&patched).is_empty());
    }

    #[test]
    fn patch_rejects_without_coercion() {
        let k = Knobs::default();
        let cases = [
            (Change::new("extract.sluts", 3), "unknown knob"),
            (Change::new("extract.slots", "12"), "whole number"),
            (Change::new("extract.slots", 12.5), "whole number"),
            (Change::new("extract.slots", 0), "within"),
            (Change::new("extract.slots", -3), "within"),
            (Change::new("transform.min_quality", 1.5), "within"),
            (Change::new("extract.render_mode", 3), "render mode"),
            (Change::new("extract.escalate_to", "http"), "escalates to"),
            (
                Change::new("extract.render_mode", "fast"),
                "unknown render mode",
            ),
            (
                Change::new("extract.render_overrides", json!({"Bad Domain": "http"})),
                "domain",
            ),
            (Change::new("extract", json!({})), "unknown knob"),
            (Change::new("search.retry.base_ms", 60_000), "inconsistent"),
            (Change::new("transform.chunk_overlap", 300), "inconsistent"),
        ];
        for (change, needle) in cases {
            let err = k
                .apply_patch(std::slice::from_ref(&change))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{change:?}: {err}");
        }
    }

    #[test]
    fn nan_is_rejected() {
        let spec = spec("transform.min_quality").unwrap();
        // serde_json cannot hold NaN; a float that overflows to infinity is the nearest
        let v: Value = serde_json::from_str("1e400").unwrap_or(Value::Null);
        assert!(check_value(spec, &v).is_err());
    }
}
