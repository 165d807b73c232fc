//! Static settings: a TOML file plus `FRESHET_*` environment overrides,
//! validated into typed settings.
//!
//! Loading happens in three steps, each with errors a person can act on:
//! 1. parse the file as written (errors carry the file's line and column);
//! 2. apply environment overrides: `FRESHET_<SECTION>__<KEY>[__<KEY>…]`, for
//!    example `FRESHET_PROVIDER__API_KEY` or `FRESHET_KNOBS__EXTRACT__SLOTS=16`.
//!    A value is read as a TOML value when it parses as one (`16`, `true`,
//!    `"x"`), else as a string; keys ending in `key`, `token`, `url` or `dir`
//!    are always strings (errors name the variable);
//! 3. validate without I/O into [`Settings`] (errors name the field and, when
//!    it came from the file, its line).
//!
//! Static settings need a restart; the `[knobs]` table only gives the knobs'
//! starting values, which the control plane then changes live.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::knobs::Knobs;

/// A credential: never printed, logged or serialized in clear.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no credential is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// Whether a `[kafka.properties]` key names a credential (a password,
/// secret, token or key): its value is hidden wherever settings are shown.
pub fn secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|word| key.contains(word))
}

/// `text` with the user information of every URL in it (`https://user:pass@host`)
/// replaced by `***`, so credentials in URLs never reach output.
pub fn scrub_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`' | ')' | ']' | ','
                ) || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `text` with every one of `secrets` (non-empty) replaced by `***` and the
/// user information of URLs hidden: for error messages of upstreams (the
/// embedder, the LLM, the provider) that may echo a request.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    scrub_userinfo(&text)
}

fn serialize_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&scrub_userinfo(url))
}

fn serialize_properties<S: serde::Serializer>(
    props: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(props.len()))?;
    for (k, v) in props {
        if secret_property(k) && !v.is_empty() {
            map.serialize_entry(k, "***")?;
        } else {
            map.serialize_entry(k, &scrub_userinfo(v))?;
        }
    }
    map.end()
}

/// Debug output of settings sections that hold credentials: their
/// serialized (redacted) form, so `{:?}` in a log line hides them too.
fn debug_redacted<T: Serialize>(name: &str, value: &T, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match serde_json::to_string(value) {
        Ok(json) => write!(f, "{name} {json}"),
        Err(_) => write!(f, "{name} {{..}}"),
    }
}

macro_rules! redacted_debug {
    ($($t:ident),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                debug_redacted(stringify!($t), self, f)
            }
        }
    )*};
}

redacted_debug!(
    ProviderSettings,
    EmbedSettings,
    IndexSettings,
    KafkaSettings,
    LlmSettings
);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[service]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// Where the index, dead letters and the audit log live.
    pub data_dir: PathBuf,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Default log filter (`RUST_LOG` wins when set).
    pub log_level: String,
    /// Address of the HTTP endpoint (`/v1/ingest`, `/metrics`, health).
    pub listen: String,
    /// How long a graceful stop waits for in-flight work.
    pub drain_timeout_s: u64,
    /// Guardrails file for knob changes (e.g. `policies/guardrails.toml`);
    /// absent: the shipped `policies/guardrails.toml`, compiled in. Knobs the
    /// file does not name are closed to policies (deny by default).
    pub guardrails: Option<PathBuf>,
    /// Bearer token for every changing admin call (and, when the tokens
    /// below are not set, for ingest and reads); prefer
    /// `FRESHET_SERVICE__ADMIN_TOKEN`. Empty: changes are refused.
    pub admin_token: Secret,
    /// Bearer token for `POST /v1/ingest`; empty: `admin_token` serves.
    /// Prefer `FRESHET_SERVICE__INGEST_TOKEN`.
    pub ingest_token: Secret,
    /// Bearer token for the reading `/v1/*` calls (config, audit,
    /// controller status); empty: `admin_token` serves. Prefer
    /// `FRESHET_SERVICE__READ_TOKEN`.
    pub read_token: Secret,
    /// Accept `POST /v1/ingest` without a token when no ingest or admin
    /// token is set. Only on a loopback `listen` address: on any other the
    /// service refuses to start without a token.
    pub open_ingest: bool,
    /// Malformed lines one `POST /v1/ingest` request may carry: each is
    /// dead-lettered, and after this many the rest of the body is not read,
    /// one summary dead letter says where it stopped and the request is
    /// answered 400. Default 100.
    pub ingest_max_invalid_lines: u32,
    /// Key of the audit log's HMAC chain. Only from the environment
    /// (`FRESHET_SERVICE__AUDIT_KEY`): a key written in the settings file
    /// would sit beside the log it protects, so the file may not set it.
    pub audit_key: Secret,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            data_dir: PathBuf::from("./freshet-data"),
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            listen: "127.0.0.1:8080".to_string(),
            drain_timeout_s: 30,
            guardrails: None,
            admin_token: Secret::default(),
            ingest_token: Secret::default(),
            read_token: Secret::default(),
            open_ingest: false,
            ingest_max_invalid_lines: 100,
            audit_key: Secret::default(),
        }
    }
}

/// `[provider]`: the SERPpost-style API used for search and remote rendering.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSettings {
    /// Base URL of the API (`POST {base_url}/api/search`, `/api/url`).
    #[serde(serialize_with = "serialize_url")]
    pub base_url: String,
    /// Bearer key; prefer `FRESHET_PROVIDER__API_KEY` to writing it in a file.
    pub api_key: Secret,
    /// Search engine name passed as `t` (e.g. `google`, `bing`).
    pub engine: String,
    /// How long the remote renderer waits for the page's scripts (`w`).
    pub render_wait_ms: u64,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            base_url: "https://serppost.com".to_string(),
            api_key: Secret::default(),
            engine: "google".to_string(),
            render_wait_ms: 1_000,
        }
    }
}

/// `[extract]`: fetch limits that need no live tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractSettings {
    /// Largest page body read, in bytes; larger pages fail as `too_large`.
    pub max_bytes: u64,
    /// Redirects followed before failing as `redirect`.
    pub max_redirects: u32,
    /// User-Agent header of page fetches.
    pub user_agent: String,
    /// Host name suffix -> IP address used instead of DNS (the simulator's
    /// `*.sim.test` domains, or a staging mirror). Empty in production.
    /// The operator wrote these, so the outbound address guard trusts them:
    /// a host matched here connects to its fixed address even if it is
    /// loopback or private.
    pub resolve: BTreeMap<String, String>,
    /// Exceptions to the outbound address guard (`crate::netguard`), which
    /// otherwise refuses loopback, private, link-local and other internal
    /// addresses for every page fetch and redirect hop: CIDRs
    /// (`"10.1.0.0/16"`), single addresses, or host names (the host and its
    /// subdomains, whatever they resolve to), e.g. `["10.1.0.0/16", "wiki.internal"]`.
    pub allow_private: Vec<String>,
    /// The headless browser of the `browser` render mode (Chromium or
    /// Chrome); unset: `chromium`, `chromium-browser`, `google-chrome` or
    /// `chrome` on `PATH`, looked up when a page first needs it.
    pub browser_path: Option<std::path::PathBuf>,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        ExtractSettings {
            max_bytes: 5 * 1024 * 1024,
            max_redirects: 5,
            user_agent: concat!("freshet/", env!("CARGO_PKG_VERSION")).to_string(),
            resolve: BTreeMap::new(),
            allow_private: Vec::new(),
            browser_path: None,
        }
    }
}

/// Which embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbedBackend {
    /// A sentence encoder run in-process (`[embed] model_dir`; installed by
    /// `freshet model fetch`): no key, no network.
    #[default]
    Local,
    /// Per-token vectors distilled from the local model, averaged (no
    /// network runs at embedding time; `freshet model fetch` makes them).
    Static,
    /// Any OpenAI-compatible `/v1/embeddings` endpoint.
    Openai,
    /// Feature hashing (lexical only; tests, benchmarks, offline demos).
    Hash,
}

/// `[embed]`: the embedding model.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedSettings {
    /// `local` (default), `static`, `openai` or `hash`.
    pub backend: EmbedBackend,
    /// `local` and `static`: the model's directory (default
    /// `~/.local/share/freshet/models/all-MiniLM-L6-v2`, where
    /// `freshet model fetch` installs it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<std::path::PathBuf>,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`.
    #[serde(serialize_with = "serialize_url")]
    pub base_url: String,
    /// API key; prefer `FRESHET_EMBED__API_KEY`.
    pub api_key: Secret,
    /// `openai`: the model name.
    pub model: String,
    /// Vector size the model returns (and the index is created with).
    pub dimensions: u32,
    /// Send `dimensions` in requests (models that can shorten their output).
    pub send_dimensions: bool,
}

/// The local embedder's default model (the directory name
/// `freshet model fetch` installs it under).
pub const DEFAULT_LOCAL_MODEL: &str = "all-MiniLM-L6-v2";

impl EmbedSettings {
    /// Where the local model lives: `[embed] model_dir`, else
    /// `$XDG_DATA_HOME/freshet/models/all-MiniLM-L6-v2`, else
    /// `$HOME/.local/share/freshet/models/all-MiniLM-L6-v2`.
    pub fn local_model_dir(&self) -> std::path::PathBuf {
        if let Some(dir) = &self.model_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| std::path::PathBuf::from(h).join(".local/share"))
            })
            .unwrap_or_else(|| std::path::PathBuf::from("."));
        base.join("freshet/models").join(DEFAULT_LOCAL_MODEL)
    }
}

impl Default for EmbedSettings {
    fn default() -> Self {
        EmbedSettings {
            backend: EmbedBackend::Local,
            model_dir: None,
            base_url: "https://api.openai.com/v1".to_string(),
            api_key: Secret::default(),
            model: "text-embedding-3-small".to_string(),
            dimensions: 384,
            send_dimensions: true,
        }
    }
}

/// Which vector store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    /// qdrant-edge, embedded, in `<data_dir>/index`.
    #[default]
    Edge,
    /// A Qdrant server or cluster over gRPC.
    Qdrant,
}

/// `[index]`: the vector store.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSettings {
    /// `edge` or `qdrant`.
    pub backend: IndexBackend,
    /// gRPC URL of the Qdrant server (`qdrant` only).
    #[serde(serialize_with = "serialize_url")]
    pub url: String,
    /// API key of the Qdrant server; prefer `FRESHET_INDEX__API_KEY`.
    pub api_key: Secret,
    /// Collection name (`qdrant` only).
    pub collection: String,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            backend: IndexBackend::Edge,
            url: "http://127.0.0.1:6334".to_string(),
            api_key: Secret::default(),
            collection: "freshet".to_string(),
        }
    }
}

/// Which durable source feeds the pipeline (the embedded queue is always there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Only the in-process queue: files, stdin, `POST /v1/ingest`.
    #[default]
    Embedded,
    /// A Kafka consumer group (`[kafka]`), besides the in-process queue.
    Kafka,
}

/// `[source]`: where tasks come from, and the length floor each kind of
/// document meets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSettings {
    /// `embedded` (default) or `kafka` (then `[kafka]` must name brokers and topics).
    pub kind: SourceKind,
    /// JSON Lines files of tasks fed at start, in order.
    pub files: Vec<PathBuf>,
    /// Also read tasks from standard input.
    pub stdin: bool,
    /// Fewest words (after cleaning) an extracted web page needs to be
    /// indexed; shorter pages are dead-lettered as `too_short`. Default 20.
    pub page_min_words: u32,
    /// Fewest words an explicit document (a `document` task, a CDC row)
    /// needs. Default 0: a user's own record is indexed however short (it
    /// needs one word); boilerplate-line removal does not apply either.
    pub document_min_words: u32,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            kind: SourceKind::default(),
            files: Vec::new(),
            stdin: false,
            page_min_words: crate::dataplane::transform::MIN_WORDS,
            document_min_words: 0,
        }
    }
}

/// `[transform]`: bounds on what one document may cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformSettings {
    /// The most chunks one document may become; a document over it is
    /// dead-lettered as `too_large` before its chunks are built. Default
    /// 2,000 (about 500k tokens at the default chunk size).
    pub max_chunks_per_doc: u32,
}

impl Default for TransformSettings {
    fn default() -> Self {
        TransformSettings {
            max_chunks_per_doc: crate::dataplane::transform::MAX_CHUNKS_PER_DOC,
        }
    }
}

/// Where a new consumer group starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// From the oldest retained message (nothing published before start is missed).
    #[default]
    Earliest,
    /// Only messages published after the group first joined.
    Latest,
}

impl OffsetReset {
    /// The librdkafka `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// `[kafka.tables.<table>]`: how one table's Debezium change events become documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableMapping {
    /// The Debezium topic of this table (one table per topic, Debezium's default
    /// routing), e.g. `pg.public.articles`.
    pub topic: String,
    /// The row column holding the primary key; it is also looked up in the
    /// message key, which is all a tombstone has.
    pub id_field: String,
    /// Prefix of the document id (`<prefix><id>`), so that ids of different
    /// tables never collide; absent: `<table>:`.
    pub id_prefix: Option<String>,
    /// Column used as the document title (optional).
    pub title_field: String,
    /// Columns whose text makes the document, joined by blank lines, in order.
    pub text_fields: Vec<String>,
    /// Column holding the document's URL (optional).
    pub url_field: String,
    /// Columns copied into every chunk's payload under `metadata` (for filters).
    pub payload_fields: Vec<String>,
}

impl Default for TableMapping {
    fn default() -> Self {
        TableMapping {
            topic: String::new(),
            id_field: "id".to_string(),
            id_prefix: None,
            title_field: String::new(),
            text_fields: Vec::new(),
            url_field: String::new(),
            payload_fields: Vec::new(),
        }
    }
}

impl TableMapping {
    /// The document id prefix of `table`.
    pub fn prefix(&self, table: &str) -> String {
        self.id_prefix
            .clone()
            .unwrap_or_else(|| format!("{table}:"))
    }
}

/// `[kafka]`: the Kafka source, its dead-letter topic and the control topic
/// that several instances share (`[source] kind = "kafka"`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap brokers, comma separated (`host:port,host:port`); the
    /// variable `FRESHET_KAFKA_BROKERS` overrides it.
    pub brokers: String,
    /// Consumer group of the input topics; instances with the same group
    /// share the partitions.
    pub group_id: String,
    /// Topics of JSON task messages (one task per message, keyed by document id).
    pub task_topics: Vec<String>,
    /// Debezium tables: `[kafka.tables."public.articles"] topic = …`.
    pub tables: BTreeMap<String, TableMapping>,
    /// Topic for dead letters (created if missing); empty: `<data_dir>/dlq.jsonl`.
    pub dlq_topic: String,
    /// Compacted topic shared by all instances of the group: knob snapshots,
    /// audit records and controller leadership (created if missing). Empty:
    /// this instance runs alone and always leads.
    pub control_topic: String,
    /// This instance's name: its Kafka client id and its name on the
    /// control topic; unique per instance. Empty: host name, process id and
    /// start time.
    pub instance_id: String,
    /// Static group membership (`group.instance.id` = `instance_id`, which
    /// must then be set): a restart under a supervisor takes the old
    /// member's place at once instead of waiting for its session to expire
    /// (tansu 0.6 never expires a member that died without leaving).
    pub static_membership: bool,
    /// How often finished offsets are committed (also on rebalance and stop).
    pub commit_interval_ms: u64,
    /// How often consumer lag is computed and exported.
    pub lag_interval_ms: u64,
    /// Group session timeout: how fast a dead instance's partitions move.
    pub session_timeout_ms: u64,
    /// Where a new group starts reading.
    pub auto_offset_reset: OffsetReset,
    /// Replication factor of the topics freshet creates (DLQ, control).
    pub replication_factor: i32,
    /// Extra librdkafka properties (security, tuning), e.g.
    /// `"security.protocol" = "ssl"`; the ones freshet owns are refused.
    /// Values of keys naming a password, secret, token or key are hidden
    /// wherever settings are shown ([`secret_property`]).
    #[serde(serialize_with = "serialize_properties")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".to_string(),
            group_id: "freshet".to_string(),
            task_topics: Vec::new(),
            tables: BTreeMap::new(),
            dlq_topic: String::new(),
            control_topic: "freshet.control".to_string(),
            instance_id: String::new(),
            static_membership: false,
            commit_interval_ms: 1_000,
            lag_interval_ms: 2_000,
            session_timeout_ms: 10_000,
            auto_offset_reset: OffsetReset::Earliest,
            replication_factor: 1,
            properties: BTreeMap::new(),
        }
    }
}

/// librdkafka properties freshet sets itself (refused in `[kafka] properties`).
pub const KAFKA_OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "session.timeout.ms",
    "enable.partition.eof",
];

/// Whether `name` is a valid Kafka topic name.
pub fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// How the controller acts on its decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControllerMode {
    /// No controller runs; knobs change only by hand.
    Off,
    /// Observe, propose and record, but never apply.
    Shadow,
    /// Observe, propose, guard, apply, bake, commit or roll back.
    #[default]
    Auto,
}

/// Which policy proposes changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// The built-in rules (needs nothing).
    #[default]
    Heuristic,
    /// An OpenAI-compatible chat model steered by the prompt file; falls
    /// back to the heuristic when it fails.
    Llm,
    /// Never changes anything (a baseline).
    Static,
    /// Slots by additive increase / multiplicative decrease (a baseline).
    Aimd,
    /// Netflix concurrency-limits Gradient2 with an AIMD cut on drops (a baseline).
    Gradient2,
    /// Netflix concurrency-limits Vegas (a baseline).
    Vegas,
    /// Vector's Adaptive Request Concurrency (a baseline).
    Arc,
    /// Envoy's adaptive-concurrency gradient controller (a baseline).
    #[serde(rename = "envoy-gradient")]
    EnvoyGradient,
    /// DS2 / the Flink autoscaler: slots from useful time (a baseline).
    Ds2,
}

/// `[controller.llm]`: the chat endpoint of the `llm` policy.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// Base URL of an OpenAI-compatible API, up to and including `/v1`.
    #[serde(serialize_with = "serialize_url")]
    pub base_url: String,
    /// `openai`: the model name.
    pub model: String,
    /// API key; prefer `FRESHET_CONTROLLER__LLM__API_KEY`.
    pub api_key: Secret,
    /// An answer later than this is a policy error (the heuristic decides).
    pub timeout_ms: u64,
    /// Largest answer accepted, in bytes.
    pub max_answer_bytes: usize,
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            base_url: String::new(),
            model: String::new(),
            api_key: Secret::default(),
            timeout_ms: 5_000,
            max_answer_bytes: 64 * 1024,
        }
    }
}

/// `[controller]`: the control loop (docs/ARCHITECTURE.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerSettings {
    /// `off`, `shadow` or `auto`.
    pub mode: ControllerMode,
    /// `heuristic` or `llm`.
    pub policy: PolicyKind,
    /// Length of one observation window, in milliseconds.
    pub interval_ms: u64,
    /// The LLM policy's system prompt, reloaded when edited.
    pub prompt: PathBuf,
    /// `[controller.llm]`
    pub llm: LlmSettings,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            mode: ControllerMode::Auto,
            policy: PolicyKind::Heuristic,
            interval_ms: 10_000,
            prompt: PathBuf::from("prompts/controller.md"),
            llm: LlmSettings::default(),
        }
    }
}

/// The file as written: every section optional, unknown fields rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettings {
    /// `[service]`
    pub service: ServiceSettings,
    /// `[provider]`
    pub provider: ProviderSettings,
    /// `[extract]`
    pub extract: ExtractSettings,
    /// `[embed]`
    pub embed: EmbedSettings,
    /// `[index]`
    pub index: IndexSettings,
    /// `[source]`
    pub source: SourceSettings,
    /// `[transform]`
    pub transform: TransformSettings,
    /// `[kafka]`
    pub kafka: KafkaSettings,
    /// `[controller]`
    pub controller: ControllerSettings,
    /// `[knobs]`: starting values of the live knobs.
    pub knobs: Knobs,
}

/// Validated settings, the type the runtime uses. `Debug` hides the
/// credentials its sections and the parsed provider URL may carry.
#[derive(Clone, Serialize)]
pub struct Settings {
    /// `[service]`
    pub service: ServiceSettings,
    /// `[provider]`, with a parsed base URL.
    pub provider: ProviderSettings,
    /// The provider's base URL, parsed.
    #[serde(skip)]
    pub provider_url: url::Url,
    /// `[extract]`
    pub extract: ExtractSettings,
    /// `[extract] resolve`, parsed.
    #[serde(skip)]
    pub resolve: Vec<(String, IpAddr)>,
    /// `[embed]`
    pub embed: EmbedSettings,
    /// `[index]`
    pub index: IndexSettings,
    /// `[source]`
    pub source: SourceSettings,
    /// `[transform]`
    pub transform: TransformSettings,
    /// `[kafka]`
    pub kafka: KafkaSettings,
    /// `[controller]`
    pub controller: ControllerSettings,
    /// Starting knobs.
    pub knobs: Knobs,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("service", &self.service)
            .field("provider", &self.provider)
            .field("provider_url", &scrub_userinfo(self.provider_url.as_str()))
            .field("extract", &self.extract)
            .field("resolve", &self.resolve)
            .field("embed", &self.embed)
            .field("index", &self.index)
            .field("source", &self.source)
            .field("transform", &self.transform)
            .field("kafka", &self.kafka)
            .field("controller", &self.controller)
            .field("knobs", &self.knobs)
            .finish()
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown/mistyped fields.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// toml's message, which names the line, column and field.
        message: String,
    },
    /// An environment override does not fit.
    #[error("environment variable {var}: {message}")]
    Env {
        /// Variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A field has a value the runtime cannot use.
    #[error("{path}{line}: `{field}`: {message}", line = line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// File, or `<defaults>`.
        path: String,
        /// Line of the field in the file, when it was written there.
        line: Option<usize>,
        /// Dotted field path.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl Settings {
    /// Loads a settings file with the process environment's overrides.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::from_toml(&text, &path.display().to_string(), std::env::vars())
    }

    /// Defaults with the process environment's overrides (no file).
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_toml("", "<defaults>", std::env::vars())
    }

    /// Parses `text` (named `origin` in errors) and applies overrides from `env`.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        // Step 1: the file as written, so toml's errors point into it.
        toml::from_str::<RawSettings>(text).map_err(|e| SettingsError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        // Step 2: environment overrides on the generic tree.
        let mut tree: toml::Table = toml::from_str(text).map_err(|e| SettingsError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                // The documented short form for the one setting every
                // environment changes.
                "FRESHET_KAFKA_BROKERS" => ("FRESHET_KAFKA__BROKERS".to_string(), v),
                _ => (k, v),
            })
            .filter(|(k, _)| k.starts_with("FRESHET_") && k.contains("__"))
            .collect();
        vars.sort();
        let mut last_var = None;
        for (var, value) in vars {
            apply_env(&mut tree, &var, &value)?;
            last_var = Some(var);
        }
        let raw: RawSettings = toml::Table::try_into(tree).map_err(|e| SettingsError::Env {
            var: last_var.unwrap_or_else(|| "FRESHET_*".into()),
            message: e.to_string().trim_end().to_string(),
        })?;
        // Step 3: validation without I/O.
        raw.validate(text, origin)
    }
}

fn apply_env(tree: &mut toml::Table, var: &str, value: &str) -> Result<(), SettingsError> {
    let path: Vec<String> = var["FRESHET_".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(SettingsError::Env {
            var: var.to_string(),
            message: "empty key between `__` separators".into(),
        });
    }
    let leaf = path.last().expect("split yields at least one part");
    let always_string = ["key", "token", "url", "dir"]
        .iter()
        .any(|suffix| leaf.ends_with(suffix));
    let parsed = if always_string {
        toml::Value::String(value.to_string())
    } else {
        format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()))
    };
    let mut node = tree;
    for key in &path[..path.len() - 1] {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(SettingsError::Env {
                    var: var.to_string(),
                    message: format!("`{key}` is not a table"),
                })
            }
        };
    }
    node.insert(leaf.clone(), parsed);
    Ok(())
}

/// The 1-based line where the dotted `field` is written in `text`, if it is.
pub fn line_of(text: &str, field: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut span = None;
    for key in field.split('.') {
        let table = item.as_table_like()?;
        let (k, v) = table.get_key_value(key)?;
        span = k.span().or(span);
        item = v;
    }
    let offset = span?.start;
    Some(text[..offset.min(text.len())].matches('\n').count() + 1)
}

impl RawSettings {
    /// Checks every field; the error names the field and its line.
    pub fn validate(self, text: &str, origin: &str) -> Result<Settings, SettingsError> {
        let invalid = |field: &str, message: String| SettingsError::Invalid {
            path: origin.to_string(),
            line: line_of(text, field),
            field: field.to_string(),
            message,
        };
        let provider_url = url::Url::parse(&self.provider.base_url).map_err(|e| {
            invalid(
                "provider.base_url",
                format!("not a URL ({e}); write e.g. \"https://api.example.com\""),
            )
        })?;
        if !matches!(provider_url.scheme(), "http" | "https") {
            return Err(invalid(
                "provider.base_url",
                "must be an http or https URL".into(),
            ));
        }
        if line_of(text, "service.audit_key").is_some() {
            return Err(invalid(
                "service.audit_key",
                "the audit key may not be written in the settings file (it would sit beside the log it protects); set FRESHET_SERVICE__AUDIT_KEY in the environment".into(),
            ));
        }
        let resolve = self.validate_extract(&invalid)?;
        self.validate_stores(&invalid)?;
        self.validate_service(&invalid)?;
        self.validate_controller(&invalid)?;
        if self.source.kind == SourceKind::Kafka {
            if !cfg!(feature = "kafka") {
                return Err(invalid(
                    "source.kind",
                    "this freshet was built without the `kafka` feature; rebuild with default features (or `--features kafka`) to read from Kafka".into(),
                ));
            }
            self.kafka.validate(&invalid)?;
        }
        self.knobs.validate().map_err(|e| {
            let field = match &e {
                crate::knobs::KnobError::UnknownKnob(k)
                | crate::knobs::KnobError::WrongType { knob: k, .. }
                | crate::knobs::KnobError::OutOfRange { knob: k, .. } => format!("knobs.{k}"),
                crate::knobs::KnobError::Inconsistent(_) => "knobs".to_string(),
            };
            invalid(&field, e.to_string())
        })?;
        Ok(Settings {
            service: self.service,
            provider: self.provider,
            provider_url,
            extract: self.extract,
            resolve,
            embed: self.embed,
            index: self.index,
            source: self.source,
            transform: self.transform,
            kafka: self.kafka,
            controller: self.controller,
            knobs: self.knobs,
        })
    }

    /// `[extract]`: size and redirect limits, and the `resolve` table as
    /// (suffix, address) pairs.
    fn validate_extract(
        &self,
        invalid: &Invalid<'_>,
    ) -> Result<Vec<(String, IpAddr)>, SettingsError> {
        if self.extract.max_bytes < 1024 {
            return Err(invalid(
                "extract.max_bytes",
                format!(
                    "{} is too small; pages need at least 1024 bytes",
                    self.extract.max_bytes
                ),
            ));
        }
        if self.extract.max_redirects > 20 {
            return Err(invalid("extract.max_redirects", "at most 20".into()));
        }
        if let Err(e) = crate::netguard::Allow::parse(&self.extract.allow_private) {
            return Err(invalid("extract.allow_private", e.to_string()));
        }
        let mut resolve = Vec::new();
        for (suffix, ip) in &self.extract.resolve {
            let ip: IpAddr = ip.parse().map_err(|_| {
                invalid(
                    &format!("extract.resolve.{suffix}"),
                    format!("`{ip}` is not an IP address"),
                )
            })?;
            if !crate::knobs::valid_domain(suffix) {
                return Err(invalid(
                    &format!("extract.resolve.{suffix}"),
                    "keys must be lowercase domain names".into(),
                ));
            }
            resolve.push((suffix.clone(), ip));
        }
        Ok(resolve)
    }

    /// `[embed]` and `[index]`: what the chosen backends need.
    fn validate_stores(&self, invalid: &Invalid<'_>) -> Result<(), SettingsError> {
        if !(8..=8192).contains(&self.embed.dimensions) {
            return Err(invalid(
                "embed.dimensions",
                format!("{} is outside 8..=8192", self.embed.dimensions),
            ));
        }
        if self.embed.backend == EmbedBackend::Openai {
            url::Url::parse(&self.embed.base_url)
                .map_err(|e| invalid("embed.base_url", format!("not a URL ({e})")))?;
            if self.embed.model.trim().is_empty() {
                return Err(invalid("embed.model", "must name a model".into()));
            }
        }
        if self.index.backend == IndexBackend::Qdrant {
            url::Url::parse(&self.index.url)
                .map_err(|e| invalid("index.url", format!("not a URL ({e})")))?;
            if self.index.collection.trim().is_empty() {
                return Err(invalid("index.collection", "must not be empty".into()));
            }
        }
        Ok(())
    }

    /// `[service]`.
    fn validate_service(&self, invalid: &Invalid<'_>) -> Result<(), SettingsError> {
        if self.service.drain_timeout_s == 0 {
            return Err(invalid(
                "service.drain_timeout_s",
                "must be at least 1".into(),
            ));
        }
        if self.service.ingest_max_invalid_lines == 0 {
            return Err(invalid(
                "service.ingest_max_invalid_lines",
                "must be at least 1".into(),
            ));
        }
        if self.transform.max_chunks_per_doc == 0 {
            return Err(invalid(
                "transform.max_chunks_per_doc",
                "must be at least 1".into(),
            ));
        }
        if self.service.log_level.trim().is_empty() {
            return Err(invalid(
                "service.log_level",
                "must not be empty (e.g. \"info\")".into(),
            ));
        }
        Ok(())
    }

    /// `[controller]` and `[controller.llm]`.
    fn validate_controller(&self, invalid: &Invalid<'_>) -> Result<(), SettingsError> {
        if !(100..=3_600_000).contains(&self.controller.interval_ms) {
            return Err(invalid(
                "controller.interval_ms",
                format!(
                    "{} is outside 100..=3600000 (0.1 s to 1 h)",
                    self.controller.interval_ms
                ),
            ));
        }
        if self.controller.policy == PolicyKind::Llm {
            let url = url::Url::parse(&self.controller.llm.base_url).map_err(|e| {
                invalid(
                    "controller.llm.base_url",
                    format!("the llm policy needs an OpenAI-compatible base URL ({e})"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(
                    "controller.llm.base_url",
                    "must be an http or https URL".into(),
                ));
            }
            if self.controller.llm.model.trim().is_empty() {
                return Err(invalid(
                    "controller.llm.model",
                    "the llm policy needs a model name".into(),
                ));
            }
        }
        if !(100..=600_000).contains(&self.controller.llm.timeout_ms) {
            return Err(invalid(
                "controller.llm.timeout_ms",
                "must be within 100..=600000".into(),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.controller.llm.max_answer_bytes) {
            return Err(invalid(
                "controller.llm.max_answer_bytes",
                "must be within 1024..=16777216".into(),
            ));
        }
        Ok(())
    }
}

/// Builds the error for a field: `invalid(field, message)`.
type Invalid<'a> = dyn Fn(&str, String) -> SettingsError + 'a;

impl KafkaSettings {
    /// Every input topic: task topics, then the tables' topics.
    pub fn input_topics(&self) -> Vec<String> {
        let mut topics = self.task_topics.clone();
        topics.extend(self.tables.values().map(|t| t.topic.clone()));
        topics
    }

    fn validate(&self, invalid: &Invalid<'_>) -> Result<(), SettingsError> {
        let brokers: Vec<&str> = self
            .brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .collect();
        if brokers.is_empty() {
            return Err(invalid(
                "kafka.brokers",
                "name at least one broker, e.g. \"127.0.0.1:9092\" (or set FRESHET_KAFKA_BROKERS)"
                    .into(),
            ));
        }
        if let Some(b) = brokers.iter().find(|b| !b.contains(':')) {
            return Err(invalid(
                "kafka.brokers",
                format!("`{b}` has no port; write host:port"),
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty".into()));
        }
        self.validate_topics(invalid)?;
        self.validate_client(invalid)
    }

    /// Input topics (task topics and tables), each used once, and the DLQ
    /// and control topics apart from them and from each other.
    fn validate_topics(&self, invalid: &Invalid<'_>) -> Result<(), SettingsError> {
        if self.task_topics.is_empty() && self.tables.is_empty() {
            return Err(invalid(
                "kafka.task_topics",
                "source kind is kafka but no input topic is configured: set task_topics and/or [kafka.tables.<table>]".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.task_topics {
            if !valid_topic(t) {
                return Err(invalid(
                    "kafka.task_topics",
                    format!("`{t}` is not a topic name (letters, digits, `.`, `_`, `-`)"),
                ));
            }
            if !seen.insert(t.clone()) {
                return Err(invalid(
                    "kafka.task_topics",
                    format!("topic `{t}` is listed twice"),
                ));
            }
        }
        for (table, m) in &self.tables {
            let field = |f: &str| format!("kafka.tables.{table}.{f}");
            if !valid_topic(&m.topic) {
                return Err(invalid(
                    &field("topic"),
                    format!(
                        "`{}` is not a topic name; name the table's Debezium topic",
                        m.topic
                    ),
                ));
            }
            if !seen.insert(m.topic.clone()) {
                return Err(invalid(
                    &field("topic"),
                    format!("topic `{}` is already used by another table or as a task topic (one table per topic)", m.topic),
                ));
            }
            if m.id_field.trim().is_empty() {
                return Err(invalid(&field("id_field"), "must name a column".into()));
            }
            if m.text_fields.is_empty() || m.text_fields.iter().any(|f| f.trim().is_empty()) {
                return Err(invalid(
                    &field("text_fields"),
                    "name the columns that hold the document's text, e.g. [\"body\"]".into(),
                ));
            }
        }
        for (name, topic) in [
            ("kafka.dlq_topic", &self.dlq_topic),
            ("kafka.control_topic", &self.control_topic),
        ] {
            if topic.is_empty() {
                continue;
            }
            if !valid_topic(topic) {
                return Err(invalid(name, format!("`{topic}` is not a topic name")));
            }
            if seen.contains(topic) {
                return Err(invalid(
                    name,
                    format!("`{topic}` is also an input topic; use a topic of its own"),
                ));
            }
        }
        if !self.dlq_topic.is_empty() && self.dlq_topic == self.control_topic {
            return Err(invalid(
                "kafka.control_topic",
                "must differ from dlq_topic".into(),
            ));
        }
        Ok(())
    }

    /// Intervals, timeouts, membership, replication and client properties.
    fn validate_client(&self, invalid: &Invalid<'_>) -> Result<(), SettingsError> {
        if self.commit_interval_ms < 10 || self.commit_interval_ms > 600_000 {
            return Err(invalid(
                "kafka.commit_interval_ms",
                "must be within 10..=600000".into(),
            ));
        }
        if self.lag_interval_ms < 100 {
            return Err(invalid("kafka.lag_interval_ms", "at least 100".into()));
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(invalid(
                "kafka.session_timeout_ms",
                "must be within 1000..=300000".into(),
            ));
        }
        if self.static_membership && self.instance_id.trim().is_empty() {
            return Err(invalid(
                "kafka.static_membership",
                "needs a stable `instance_id` (unique per instance, the same across restarts)"
                    .into(),
            ));
        }
        if self.replication_factor < 1 {
            return Err(invalid("kafka.replication_factor", "at least 1".into()));
        }
        if let Some(k) = self
            .properties
            .keys()
            .find(|k| KAFKA_OWNED_PROPERTIES.contains(&k.as_str()))
        {
            return Err(invalid(
                &format!("kafka.properties.{k}"),
                "freshet sets this property itself (offsets are committed from acknowledgements); use the [kafka] field instead".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_toml(
            text,
            "test.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let s = load("", &[]).unwrap();
        assert_eq!(s.knobs, Knobs::default());
        assert_eq!(s.service.data_dir, PathBuf::from("./freshet-data"));
    }

    #[test]
    fn unknown_fields_name_the_line() {
        let err = load(
            "[service]\nlog_level = \"info\"\n\n[extract]\nmax_bytez = 3\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("max_bytez"), "{err}");
    }

    #[test]
    fn invalid_values_name_field_and_line() {
        let err = load("\n[knobs.extract]\nslots = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.toml:3"), "{err}");
        assert!(err.contains("knobs.extract.slots"), "{err}");
        let err = load("[provider]\nbase_url = \"not a url\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2") && err.contains("provider.base_url"),
            "{err}"
        );
        let err = load("[extract.resolve]\n\"sim.test\" = \"localhost\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an IP address"), "{err}");
    }

    #[test]
    fn the_kafka_example_is_valid_and_brokers_come_from_the_environment() {
        let example = include_str!("../examples/kafka.toml");
        let s = load(example, &[]).unwrap();
        assert_eq!(s.source.kind, SourceKind::Kafka);
        assert_eq!(s.kafka.task_topics, vec!["freshet.tasks".to_string()]);
        let t = &s.kafka.tables["public.articles"];
        assert_eq!(t.topic, "pg.public.articles");
        assert_eq!(t.prefix("public.articles"), "articles:");
        assert_eq!(
            s.kafka.input_topics(),
            vec![
                "freshet.tasks".to_string(),
                "pg.public.articles".to_string()
            ]
        );
        let s = load(
            example,
            &[("FRESHET_KAFKA_BROKERS", "10.0.0.1:9092,10.0.0.2:9092")],
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "10.0.0.1:9092,10.0.0.2:9092");
        let s = load(example, &[("FRESHET_KAFKA__GROUP_ID", "other")]).unwrap();
        assert_eq!(s.kafka.group_id, "other");
    }

    #[test]
    fn bad_kafka_settings_name_the_field() {
        let base = "[source]\nkind = \"kafka\"\n[kafka]\n";
        let err = |extra: &str| {
            load(&format!("{base}{extra}"), &[])
                .unwrap_err()
                .to_string()
        };
        assert!(err("").contains("no input topic"));
        assert!(err("task_topics = [\"a b\"]\n").contains("not a topic name"));
        assert!(err("task_topics = [\"t\"]\nbrokers = \"localhost\"\n").contains("has no port"));
        assert!(err("task_topics = [\"t\", \"t\"]\n").contains("listed twice"));
        assert!(err("task_topics = [\"t\"]\ndlq_topic = \"t\"\n").contains("also an input topic"));
        assert!(err("task_topics = [\"t\"]\nstatic_membership = true\n").contains("instance_id"));
        let e =
            err("task_topics = [\"t\"]\n[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n");
        assert!(e.contains("kafka.properties.enable.auto.commit"), "{e}");
        let e = err("[kafka.tables.users]\ntopic = \"db.users\"\n");
        assert!(
            e.contains("kafka.tables.users.text_fields") && e.contains("[\"body\"]"),
            "{e}"
        );
        let e = err("task_topics = [\"db.users\"]\n[kafka.tables.users]\ntopic = \"db.users\"\ntext_fields = [\"bio\"]\n");
        assert!(e.contains("one table per topic"), "{e}");
        // An embedded source ignores the [kafka] section's contents.
        assert!(load("[kafka]\nbrokers = \"\"\n", &[]).is_ok());
    }

    #[test]
    fn kafka_credentials_and_url_passwords_are_hidden_everywhere() {
        let s = load(
            "[provider]\nbase_url = \"https://u:PROVPASS@api.example/x\"\n\
             [embed]\nbase_url = \"http://e:EMBPASS@10.0.0.1:8000/v1\"\n\
             [kafka.properties]\n\"sasl.password\" = \"KPASS\"\n\"ssl.key.password\" = \"KEYPASS\"\n\
             \"sasl.oauthbearer.client.secret\" = \"OSECRET\"\n\"sasl.username\" = \"bob\"\n",
            &[("FRESHET_SERVICE__AUDIT_KEY", "AUDITKEY")],
        )
        .unwrap();
        assert_eq!(s.kafka.properties["sasl.password"], "KPASS", "kept for use");
        let shown = format!(
            "{s:?} {} {}",
            serde_json::to_string(&s).unwrap(),
            toml::Table::try_from(&s).unwrap()
        );
        for secret in [
            "PROVPASS", "EMBPASS", "KPASS", "KEYPASS", "OSECRET", "AUDITKEY",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("bob") && shown.contains("***@api.example"),
            "{shown}"
        );
        assert!(secret_property("SASL.PASSWORD") && secret_property("ssl.keystore.key"));
        assert!(!secret_property("security.protocol"));
        assert_eq!(
            scrub(
                "POST http://a:b@h:1/v1 failed: key sk-123 refused",
                &["sk-123"]
            ),
            "POST http://***@h:1/v1 failed: key *** refused"
        );
        assert_eq!(scrub_userinfo("no url here"), "no url here");
        assert_eq!(
            scrub_userinfo("(http://x@y/z) and https://p:q@r"),
            "(http://***@y/z) and https://***@r"
        );
        // The audit key belongs in the environment, not the file.
        let err = load("[service]\naudit_key = \"k\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("FRESHET_SERVICE__AUDIT_KEY"), "{err}");
    }

    #[test]
    fn env_overrides_apply_and_secrets_stay_hidden() {
        let s = load(
            "[knobs.extract]\nslots = 4\n",
            &[
                ("FRESHET_KNOBS__EXTRACT__SLOTS", "16"),
                ("FRESHET_PROVIDER__API_KEY", "12345"),
                ("FRESHET_PROVIDER__ENGINE", "bing"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(s.knobs.extract.slots, 16);
        assert_eq!(s.provider.api_key.expose(), "12345");
        assert_eq!(s.provider.engine, "bing");
        let shown = format!("{s:?} {}", serde_json::to_string(&s).unwrap());
        assert!(!shown.contains("12345"), "{shown}");
        let err = load("", &[("FRESHET_KNOBS__EXTRACT__SLOTS", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("FRESHET_KNOBS__EXTRACT__SLOTS"), "{err}");
    }
}
