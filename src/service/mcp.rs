//! The MCP server: freshet's index and ingest as tools an LLM application or
//! agent can call (Model Context Protocol, with the official Rust SDK `rmcp`).
//!
//! Two transports serve the same [`FreshetMcp`] handler:
//! - **streamable HTTP** at `/mcp` on the service's endpoint (`freshet run`);
//! - **stdio**: `freshet mcp --config …` runs the service like `run` and
//!   speaks MCP on its standard input and output (logs go to stderr), the way
//!   MCP clients launch local servers.
//!
//! Tools:
//! - `search` — the most relevant chunks for a query, as [`POST
//!   /v1/search`](crate::service::search) takes it (`query`, `k`, `filter`,
//!   `mode`), formatted for a model: title, source URL, document id, score and
//!   how old the chunk is; the same results are in the structured content;
//! - `ingest_url` — fetch, extract and index one page;
//! - `ingest_document` — index a document given in full (replaces an earlier
//!   version with the same id);
//! - `status` — readiness, pipeline counters, in-pipeline freshness and the
//!   controller's recent decisions.
//!
//! **Access.** Over HTTP, `/mcp` needs a bearer token that may read or
//! ingest (401 otherwise, audited like the other `/v1/*` refusals), and each
//! tool checks its own role: `search` and `status` the read token (or the
//! admin token), `ingest_*` the ingest token (or the admin token; `[service]
//! open_ingest` works as for `/v1/ingest`). A tool call without the role is
//! answered as a tool error naming the token it needs. The SDK's `Host`
//! check (DNS rebinding) stays on for loopback listeners. Over stdio the
//! caller is whoever started the process with this config and data dir: it
//! has every role.
//!
//! Input is untrusted: arguments are parsed with unknown fields refused and
//! checked like the HTTP API's before any work; a bad argument is a tool
//! error that says what is wrong, never a panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::ServerHandler;
use serde_json::{json, Value};

use crate::dataplane::events::Counters;
use crate::dataplane::source::embedded::EmbeddedSource;
use crate::dataplane::task::{now_ms, Task};
use crate::service::admin::{AdminState, Role};
use crate::service::search::{SearchRequest, SearchResponse, SearchResult, Searcher};

/// Largest MCP request body (the size of an ingest request).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long an ingest tool waits for room in the pipeline's queue.
pub const INGEST_WAIT: Duration = Duration::from_secs(10);

/// Longest text of one result in the model-facing answer (the structured
/// content keeps the whole chunk).
const RESULT_TEXT_CHARS: usize = 2000;

/// What the tools work on: the running service's parts.
#[derive(Debug, Clone)]
pub struct McpBackend {
    /// Embeds queries and searches the index.
    pub searcher: Searcher,
    /// Where ingested tasks go.
    pub source: EmbeddedSource,
    /// Tokens, the controller's report and the audit log.
    pub admin: Arc<AdminState>,
    /// False once draining starts.
    pub ready: Arc<AtomicBool>,
    /// The pipeline's counters.
    pub counters: Arc<Counters>,
}

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The stdio transport: the operator's own process; every role.
    Local,
    /// The HTTP transport: roles come from the request's bearer token.
    Http,
}

/// The MCP handler (one per session; cheap to clone).
#[derive(Debug, Clone)]
pub struct FreshetMcp {
    backend: Arc<McpBackend>,
    caller: Caller,
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The tools, with their input schemas.
pub fn tools() -> Vec<Tool> {
    let filter = json!({
        "type": "object",
        "description": "Conditions every result meets.",
        "properties": {
            "url_prefix": {"type": "string", "description": "The chunk's URL starts with this."},
            "domain": {"type": "string", "description": "The URL's host, e.g. docs.example.com."},
            "doc_id": {"type": "string", "description": "Only this document."},
            "metadata": {
                "type": "object",
                "description": "metadata.<key> equals the value (string, integer or boolean).",
                "additionalProperties": {"type": ["string", "integer", "boolean"]}
            }
        },
        "additionalProperties": false
    });
    vec![
        Tool::new(
            "search",
            "Search freshet's continuously updated index. Returns the most relevant chunks of \
             indexed web pages and documents, each with its title, source URL, document id, \
             relevance score and how long ago it was indexed. Cite the source URLs.",
            schema(json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for, in natural language."},
                    "k": {"type": "integer", "minimum": 1, "maximum": crate::service::search::MAX_K,
                          "description": "How many chunks to return (default 10)."},
                    "filter": filter,
                    "mode": {"type": "string", "enum": ["dense", "sparse", "hybrid"], "description": "Ranking: dense (meaning), sparse (exact words, BM25) or hybrid (both; the default)."}
                },
                "required": ["query"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "ingest_url",
            "Ask freshet to fetch a web page, extract its main content and index it. Returns \
             once the page is queued; it becomes searchable when the pipeline has processed it \
             (usually seconds). Its document id is the URL without the fragment.",
            schema(json!({
                "type": "object",
                "properties": {
                    "url": {"type": "string", "description": "An http(s) URL."},
                    "ts_ms": {"type": "integer", "description": "Event time (Unix ms); default now."}
                },
                "required": ["url"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "ingest_document",
            "Index a document given in full; it replaces any earlier version with the same id. \
             Returns once it is queued.",
            schema(json!({
                "type": "object",
                "properties": {
                    "id": {"type": "string", "description": "Document id (stable across updates)."},
                    "text": {"type": "string", "description": "The text or markdown."},
                    "title": {"type": "string"},
                    "url": {"type": "string", "description": "Where the document lives, if anywhere."},
                    "metadata": {"type": "object", "description": "Fields stored with every chunk, for filtering."},
                    "ts_ms": {"type": "integer", "description": "Event time (Unix ms); default now."}
                },
                "required": ["id", "text"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "status",
            "freshet's health: whether it accepts work, documents indexed and dead-lettered, \
             freshness (event to indexed) and the self-tuning controller's recent decisions.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        ),
    ]
}

fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

fn with_structured(text: String, value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

/// Parses a tool's arguments (absent = `{}`), unknown fields refused.
fn arguments<T: serde::de::DeserializeOwned>(
    tool: &str,
    args: Option<JsonObject>,
) -> Result<T, Box<CallToolResult>> {
    serde_json::from_value(Value::Object(args.unwrap_or_default()))
        .map_err(|e| Box::new(tool_error(format!("bad arguments for `{tool}`: {e}"))))
}

/// "3 s", "4 min", "2 h", "5 d".
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// The answer a model reads: one numbered block per chunk.
pub fn format_results(query: &str, response: &SearchResponse, now_ms: u64) -> String {
    if response.results.is_empty() {
        return format!("No indexed chunk matches \"{query}\".");
    }
    let mut out = format!(
        "{} results for \"{query}\" ({} retrieval, {} ms):\n",
        response.results.len(),
        response.mode,
        response.took_ms
    );
    for (i, r) in response.results.iter().enumerate() {
        out.push_str(&format_result(i + 1, r, now_ms));
    }
    out
}

fn format_result(n: usize, r: &SearchResult, now_ms: u64) -> String {
    let title = if r.title.trim().is_empty() {
        "(untitled)"
    } else {
        r.title.trim()
    };
    let source = if r.url.is_empty() {
        String::new()
    } else {
        format!(" — {}", r.url)
    };
    let mut text: String = r.text.chars().take(RESULT_TEXT_CHARS).collect();
    if text.len() < r.text.len() {
        text.push_str(" …");
    }
    format!(
        "\n[{n}] {title}{source}\n    document {} · chunk {}/{} · score {:.3} · indexed {} ago · event {} ago\n{}\n",
        r.doc_id,
        r.chunk_index + 1,
        r.chunk_count.max(1),
        r.score,
        age(now_ms.saturating_sub(r.indexed_ts_ms)),
        age(now_ms.saturating_sub(r.event_ts_ms)),
        text.trim()
    )
}

impl FreshetMcp {
    /// A handler over `backend` for `caller`.
    pub fn new(backend: Arc<McpBackend>, caller: Caller) -> FreshetMcp {
        FreshetMcp { backend, caller }
    }

    /// `Ok` when the caller may do `role`; else the tool error to answer.
    fn allowed(&self, role: Role, headers: Option<&HeaderMap>) -> Result<(), Box<CallToolResult>> {
        if self.caller == Caller::Local {
            return Ok(());
        }
        let empty = HeaderMap::new();
        let headers = headers.unwrap_or(&empty);
        self.backend
            .admin
            .access
            .check(role, headers)
            .map_err(|why| {
                let token = match role {
                    Role::Read => "the read token (or the admin token)",
                    Role::Ingest => "the ingest token (or the admin token)",
                    Role::Admin => "the admin token",
                };
                Box::new(tool_error(format!(
                    "unauthorized: this tool needs {token}: {why}"
                )))
            })
    }

    async fn search(&self, args: Option<JsonObject>) -> CallToolResult {
        let req: SearchRequest = match arguments("search", args) {
            Ok(r) => r,
            Err(e) => return *e,
        };
        let valid = match req.validate() {
            Ok(v) => v,
            Err(why) => return tool_error(why),
        };
        match self.backend.searcher.respond(&valid).await {
            Ok(response) => {
                let text = format_results(&valid.query, &response, now_ms());
                with_structured(text, serde_json::to_value(&response).unwrap_or_default())
            }
            Err(e) => tool_error(format!("search failed: {e}")),
        }
    }

    async fn enqueue(&self, task: Task, what: String) -> CallToolResult {
        if let Err(why) = task.validate() {
            return tool_error(why);
        }
        if !self.backend.ready.load(Ordering::Acquire) {
            return tool_error("freshet is draining (shutting down); retry on another instance");
        }
        match tokio::time::timeout(INGEST_WAIT, self.backend.source.push(task, "mcp")).await {
            Ok(true) => with_structured(
                format!("Queued {what}. It becomes searchable once the pipeline has processed it."),
                json!({"queued": true}),
            ),
            Ok(false) => tool_error("the pipeline is closed (freshet is shutting down)"),
            Err(_) => tool_error(format!(
                "the pipeline's queue stayed full for {} s; retry later",
                INGEST_WAIT.as_secs()
            )),
        }
    }

    /// `ingest_url` and `ingest_document`: the arguments are the task's own
    /// fields (as `/v1/ingest` takes them, `type` implied, `ts_ms` now
    /// unless given), parsed and checked by [`Task`] itself.
    async fn ingest(&self, kind: &str, args: Option<JsonObject>) -> CallToolResult {
        let mut fields = args.unwrap_or_default();
        if fields.contains_key("type") {
            return tool_error(format!(
                "bad arguments for `ingest_{kind}`: unknown field `type`"
            ));
        }
        fields.insert("type".into(), json!(kind));
        fields.entry("ts_ms").or_insert_with(|| json!(now_ms()));
        let task: Task = match serde_json::from_value(Value::Object(fields)) {
            Ok(t) => t,
            Err(e) => return tool_error(format!("bad arguments for `ingest_{kind}`: {e}")),
        };
        let what = match &task {
            Task::Url { url, .. } => format!("{url} for fetching"),
            Task::Document { id, .. } => format!("document {id}"),
            _ => "the task".to_string(),
        };
        self.enqueue(task, what).await
    }

    /// The `status` tool's structured answer.
    pub fn status_value(&self) -> Value {
        let c = &self.backend.counters;
        let get = |a: &std::sync::atomic::AtomicU64| Counters::get(a);
        let ms = |q: f64| c.freshness_quantile(q).map(|s| (s * 1000.0).round() as u64);
        let report = self.backend.admin.controller_report();
        let decisions: Vec<Value> = report
            .as_ref()
            .map(|r| {
                r.decisions
                    .iter()
                    .rev()
                    .take(5)
                    .map(|d| {
                        json!({
                            "seq": d.seq,
                            "at_ms": d.at_ms,
                            "policy": d.policy,
                            "changes": d.changes.iter().map(|ch| json!({
                                "knob": ch.knob, "value": ch.value, "reason": ch.reason
                            })).collect::<Vec<_>>(),
                            "outcome": format!("{:?}", d.outcome).to_lowercase(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "ready": self.backend.ready.load(Ordering::Acquire),
            "tasks": get(&c.tasks),
            "pages_extracted": get(&c.pages),
            "docs_indexed": get(&c.docs_indexed),
            "docs_deleted": get(&c.docs_deleted),
            "chunks_indexed": get(&c.chunks_indexed),
            "not_indexed": {
                "too_short": get(&c.docs_too_short),
                "too_large": get(&c.docs_too_large),
                "low_quality": get(&c.docs_low_quality),
                "duplicate": get(&c.docs_duplicate),
                "unchanged": get(&c.docs_unchanged),
            },
            "dead_letters": get(&c.dead_letters),
            "freshness_ms": {"p50": ms(0.5), "p99": ms(0.99)},
            "controller": {
                "running": report.is_some(),
                "paused": self.backend.admin.control.paused(),
                "windows": report.as_ref().map(|r| r.windows),
                "applied": report.as_ref().map(|r| r.applied),
                "rolled_back": report.as_ref().map(|r| r.rolled_back),
                "recent_decisions": decisions,
            },
        })
    }

    fn status(&self) -> CallToolResult {
        let v = self.status_value();
        let fresh = match (&v["freshness_ms"]["p50"], &v["freshness_ms"]["p99"]) {
            (Value::Number(p50), Value::Number(p99)) => {
                format!("freshness (event to indexed) p50 {p50} ms, p99 {p99} ms")
            }
            _ => "no chunk indexed yet".to_string(),
        };
        let text = format!(
            "freshet is {}. {} tasks received, {} documents indexed ({} chunks), {} deleted, {} dead letters; {}. Controller: {}, {} decisions applied, {} rolled back.",
            if v["ready"] == json!(true) { "ready" } else { "draining" },
            v["tasks"],
            v["docs_indexed"],
            v["chunks_indexed"],
            v["docs_deleted"],
            v["dead_letters"],
            fresh,
            match (&v["controller"]["running"], &v["controller"]["paused"]) {
                (Value::Bool(false), _) => "not running",
                (_, Value::Bool(true)) => "paused",
                _ => "running",
            },
            v["controller"]["applied"].as_u64().unwrap_or(0),
            v["controller"]["rolled_back"].as_u64().unwrap_or(0),
        );
        with_structured(text, v)
    }
}

impl ServerHandler for FreshetMcp {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info.name = "freshet".into();
        info.server_info.version = env!("CARGO_PKG_VERSION").into();
        info.instructions = Some(
            "freshet keeps a retrieval index fresh from web pages, documents and change events. \
             Use `search` for current facts and cite the returned source URLs; results say how \
             old each chunk is."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult {
            tools: tools(),
            ..Default::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let headers = context
            .extensions
            .get::<axum::http::request::Parts>()
            .map(|p| &p.headers);
        let role = match request.name.as_ref() {
            "search" | "status" => Role::Read,
            "ingest_url" | "ingest_document" => Role::Ingest,
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool `{other}`; the tools are search, ingest_url, ingest_document and status"),
                    None,
                ))
            }
        };
        if let Err(refused) = self.allowed(role, headers) {
            return Ok((*refused).into());
        }
        let result = match request.name.as_ref() {
            "search" => self.search(request.arguments).await,
            "ingest_url" => self.ingest("url", request.arguments).await,
            "ingest_document" => self.ingest("document", request.arguments).await,
            _ => self.status(),
        };
        Ok(result.into())
    }
}

/// `/mcp`: the streamable HTTP transport, behind a check that the caller
/// holds a token that may read or ingest. `loopback` keeps the SDK's `Host`
/// check (DNS rebinding); on other addresses the bearer token is the guard.
pub fn router(
    backend: Arc<McpBackend>,
    loopback: bool,
    stop: tokio_util::sync::CancellationToken,
) -> axum::Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop)
        .with_max_request_body_bytes(MAX_BODY_BYTES);
    if !loopback {
        config = config.disable_allowed_hosts();
    }
    let factory = backend.clone();
    let service: StreamableHttpService<FreshetMcp, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(FreshetMcp::new(factory.clone(), Caller::Http)),
            Default::default(),
            config,
        );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(move |req, next| {
            gate(backend.clone(), req, next)
        }))
}

async fn gate(
    backend: Arc<McpBackend>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let access = &backend.admin.access;
    let headers = req.headers();
    if access.check(Role::Read, headers).is_ok() || access.check(Role::Ingest, headers).is_ok() {
        return next.run(req).await;
    }
    let what = format!("{} /mcp", req.method());
    match crate::service::admin::authorize(&backend.admin, headers, &what, Role::Read) {
        Ok(()) => next.run(req).await,
        Err(refused) => *refused,
    }
}

/// Serves MCP on this process's stdin/stdout until the client closes them
/// or `stop` resolves.
pub async fn serve_stdio(
    backend: Arc<McpBackend>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let handler = FreshetMcp::new(backend, Caller::Local);
    let running = handler
        .serve(rmcp::transport::io::stdio_pipes())
        .await
        .map_err(|e| anyhow::anyhow!("MCP on stdio: the client's initialization failed: {e}"))?;
    let token = running.cancellation_token();
    tokio::select! {
        quit = running.waiting() => {
            quit.map_err(|e| anyhow::anyhow!("MCP on stdio failed: {e}"))?;
        }
        () = stop => token.cancel(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(0), "0 s");
        assert_eq!(age(59_000), "59 s");
        assert_eq!(age(180_000), "3 min");
        assert_eq!(age(3 * 3_600_000), "3 h");
        assert_eq!(age(5 * 86_400_000), "5 d");
    }

    #[test]
    fn every_tool_schema_is_a_closed_object() {
        let tools = tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, ["search", "ingest_url", "ingest_document", "status"]);
        for t in &tools {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
            assert_eq!(
                t.input_schema.get("additionalProperties"),
                Some(&json!(false)),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn results_are_formatted_with_source_and_age() {
        let response = SearchResponse {
            results: vec![SearchResult {
                doc_id: "faq:7".into(),
                chunk_index: 0,
                chunk_count: 2,
                title: "Refunds".into(),
                url: "https://shop.example/help/refunds".into(),
                text: "Refunds are paid within 14 days.".into(),
                score: 0.8123,
                event_ts_ms: 1_000,
                indexed_ts_ms: 4_000,
                fetched_at_ms: 2_000,
                metadata: Default::default(),
            }],
            k: 10,
            mode: "dense".into(),
            took_ms: 3,
        };
        let text = format_results("refund policy", &response, 64_000);
        assert!(
            text.starts_with("1 results for \"refund policy\""),
            "{text}"
        );
        assert!(
            text.contains("[1] Refunds — https://shop.example/help/refunds"),
            "{text}"
        );
        assert!(
            text.contains(
                "document faq:7 · chunk 1/2 · score 0.812 · indexed 60 s ago · event 63 s ago"
            ),
            "{text}"
        );
        assert!(text.contains("Refunds are paid within 14 days."), "{text}");
        let empty = SearchResponse {
            results: vec![],
            ..response
        };
        assert!(format_results("x", &empty, 0).starts_with("No indexed chunk"));
    }

    #[test]
    fn bad_arguments_are_tool_errors() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Query {
            #[allow(dead_code)]
            query: String,
        }
        let args = |v: Value| match v {
            Value::Object(m) => Some(m),
            _ => None,
        };
        let e = arguments::<Query>("search", args(json!({"query": 1}))).unwrap_err();
        assert_eq!(e.is_error, Some(true));
        let e = arguments::<Query>("search", args(json!({"query": "q", "x": 1}))).unwrap_err();
        let ContentBlock::Text(t) = &e.content[0] else {
            panic!("text content expected")
        };
        assert!(t.text.contains("unknown field"), "{}", t.text);
        assert!(arguments::<Query>("search", None).is_err());
    }
}
