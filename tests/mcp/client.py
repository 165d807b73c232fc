"""An MCP client freshet did not write: the official Python SDK (`mcp` on PyPI).

Run by tests/mcp.rs against a running freshet:

    client.py http URL READ_TOKEN INGEST_TOKEN   # streamable HTTP at /mcp
    client.py stdio FRESHET_BIN CONFIG           # launches `freshet mcp --config CONFIG`

It lists the tools, ingests a document through `ingest_document`, polls
`search` (bounded) until the document is returned, reads `status`, and checks
that bad arguments and missing roles come back as tool errors. Every check
prints one `ok ...` line; the first failed check exits with status 1.
"""

import asyncio
import sys
import time

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

DOC_ID = "mcp-doc-1"
TEXT = (
    "The Lighthouse Bakery on Harbour Street sells rye sourdough every morning. "
    "Its refund policy gives customers fourteen days to return unopened goods."
)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


def text_of(result):
    return "\n".join(getattr(c, "text", "") for c in result.content)


def http_client(token):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return create_mcp_http_client(headers=headers)


def http_server(url, token):
    return streamable_http_client(url, http_client=http_client(token))


async def tools_are_listed(client):
    listed = await client.list_tools()
    names = sorted(t.name for t in listed.tools)
    check(names == ["ingest_document", "ingest_url", "search", "status"], f"tools listed: {names}")
    search = next(t for t in listed.tools if t.name == "search")
    check("query" in search.input_schema.get("required", []), "search requires a query")
    modes = search.input_schema.get("properties", {}).get("mode", {}).get("enum", [])
    check(set(modes) == {"dense", "sparse", "hybrid"}, f"search offers the three modes: {modes}")


async def ingest(client):
    result = await client.call_tool(
        "ingest_document",
        {"id": DOC_ID, "title": "Lighthouse Bakery", "text": TEXT,
         "url": "https://bakery.example/refunds", "metadata": {"lang": "en"}},
    )
    check(not result.is_error, f"ingest_document queued: {text_of(result)}")


async def found(client):
    """Polls search (at most 30 s) until the document comes back."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = await client.call_tool(
            "search", {"query": "bakery refund policy", "k": 5, "filter": {"doc_id": DOC_ID}}
        )
        check(not result.is_error, "search answered")
        hits = (result.structured_content or {}).get("results", [])
        if hits:
            return result, hits
        await asyncio.sleep(0.2)
    check(False, "the ingested document became searchable within 30 s")


async def reads(client):
    result, hits = await found(client)
    check(hits[0]["doc_id"] == DOC_ID, "the hit is the ingested document")
    check(hits[0]["url"] == "https://bakery.example/refunds", "the hit carries its URL")
    text = text_of(result)
    check("https://bakery.example/refunds" in text and "ago" in text,
          "the model-facing text names the source URL and the chunk's age")
    check("fourteen days" in text, "the model-facing text holds the chunk")

    # BM25 on a word of the document; the answer says which mode ranked it.
    sparse = await client.call_tool("search", {"query": "lighthouse", "k": 5, "mode": "sparse"})
    sparse_hits = (sparse.structured_content or {}).get("results", [])
    check(not sparse.is_error and sparse_hits and sparse_hits[0]["doc_id"] == DOC_ID,
          f"sparse search finds the document by its word: {text_of(sparse)}")
    check((sparse.structured_content or {}).get("mode") == "sparse", "the answer names its mode")

    bad = await client.call_tool("search", {"query": "x", "k": 0})
    check(bad.is_error and "`k` must be" in text_of(bad), f"k=0 is a tool error: {text_of(bad)}")
    unknown = await client.call_tool("search", {"query": "x", "top_k": 3})
    check(unknown.is_error and "unknown field" in text_of(unknown), "unknown arguments are refused")

    status = await client.call_tool("status", {})
    s = status.structured_content or {}
    check(not status.is_error and s.get("ready") is True, "status: ready")
    check(s.get("docs_indexed", 0) >= 1, f"status: documents indexed = {s.get('docs_indexed')}")
    check(s.get("freshness_ms", {}).get("p99") is not None, "status: freshness measured")


async def over_http(url, read_token, ingest_token):
    # No token: the endpoint itself refuses (HTTP 401), before any MCP session.
    async with httpx2.AsyncClient() as raw:
        r = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                           headers={"Accept": "application/json, text/event-stream"})
        check(r.status_code == 401, f"/mcp without a token answers 401 (got {r.status_code})")
    async with Client(http_server(url, ingest_token)) as client:
        await tools_are_listed(client)
        await ingest(client)
        denied = await client.call_tool("search", {"query": "bakery"})
        check(denied.is_error and "unauthorized" in text_of(denied),
              "the ingest token cannot search")
    async with Client(http_server(url, read_token)) as client:
        await reads(client)
        denied = await client.call_tool("ingest_url", {"url": "https://bakery.example/"})
        check(denied.is_error and "unauthorized" in text_of(denied),
              "the read token cannot ingest")


async def over_stdio(freshet, config):
    params = StdioServerParameters(command=freshet, args=["mcp", "--config", config])
    async with Client(params) as client:
        await tools_are_listed(client)
        await ingest(client)
        await reads(client)
        bad_url = await client.call_tool("ingest_url", {"url": "ftp://bakery.example/"})
        check(bad_url.is_error, f"a non-http URL is refused: {text_of(bad_url)}")


def main():
    mode = sys.argv[1]
    if mode == "http":
        asyncio.run(over_http(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif mode == "stdio":
        asyncio.run(over_stdio(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown mode {mode!r}")
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
