//! Authentication of the `/v1/*` endpoints over HTTP: every call needs the
//! token of its role, ingest needs a JSON content type, probes and metrics
//! stay open, and without any token the service will not serve ingest to
//! the network.

use freshet::service::Runtime;
use freshet::settings::Settings;

mod common;

fn settings(dir: &std::path::Path, service: &str) -> Settings {
    common::TestSettings::new(dir)
        .set("embed.dimensions", 32)
        .set("knobs.transform.linger_ms", 2)
        .merge(&format!("[service]\n{service}"))
        .build()
}

struct Served {
    base: String,
    http: common::Served,
    runtime: Runtime,
}

async fn serve_with(dir: &std::path::Path, service: &str) -> Served {
    let runtime = Runtime::build(&settings(dir, service)).await.unwrap();
    let http = common::serve_runtime(&runtime).await;
    Served {
        base: http.base.clone(),
        http,
        runtime,
    }
}

impl Served {
    async fn finish(self) {
        let _ = self.http.stop.send(true);
        self.http.server.await.unwrap();
        let (drained, _, _) = self.runtime.drain().await;
        assert!(drained);
    }
}

fn doc(id: &str) -> String {
    let text: String = (0..30)
        .map(|i| format!("Sentence {i} of {id} says something new about topic {i}. "))
        .collect();
    serde_json::json!({"type": "document", "id": id, "text": text}).to_string()
}

async fn ingest(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    content_type: Option<&str>,
) -> (u16, String) {
    let mut req = client.post(format!("{base}/v1/ingest")).body(doc("a"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get(client: &reqwest::Client, url: String, token: Option<&str>) -> u16 {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_call_needs_the_token_of_its_role() {
    let tmp = common::TempDir::new("auth-roles");
    let s = serve_with(
        &tmp.0,
        "admin_token = \"adm-token\"\ningest_token = \"ing-token\"\nread_token = \"read-token\"",
    )
    .await;
    let c = reqwest::Client::new();
    let b = s.base.as_str();
    let nd = Some("application/x-ndjson");

    // Ingest: its own token or the admin token; nothing else.
    assert_eq!(ingest(&c, b, None, nd).await.0, 401);
    assert_eq!(ingest(&c, b, Some("read-token"), nd).await.0, 401);
    assert_eq!(ingest(&c, b, Some("ing-token2"), nd).await.0, 401);
    assert_eq!(ingest(&c, b, Some("ing-toke"), nd).await.0, 401);
    assert_eq!(ingest(&c, b, Some("ing-token"), nd).await.0, 200);
    assert_eq!(ingest(&c, b, Some("adm-token"), nd).await.0, 200);
    assert_eq!(
        ingest(
            &c,
            b,
            Some("ing-token"),
            Some("application/json; charset=utf-8")
        )
        .await
        .0,
        200
    );
    // A form post or a "simple" cross-origin request is not a task stream.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, body) = ingest(&c, b, Some("ing-token"), ct).await;
        assert_eq!(status, 415, "{ct:?}: {body}");
        assert!(body.contains("application/x-ndjson"), "{body}");
    }

    // Reads: the read token or the admin token.
    for path in ["/v1/config", "/v1/audit", "/v1/controller"] {
        assert_eq!(get(&c, format!("{b}{path}"), None).await, 401, "{path}");
        assert_eq!(
            get(&c, format!("{b}{path}"), Some("ing-token")).await,
            401,
            "{path}"
        );
        assert_eq!(
            get(&c, format!("{b}{path}"), Some("read-token")).await,
            200,
            "{path}"
        );
        assert_eq!(
            get(&c, format!("{b}{path}"), Some("adm-token")).await,
            200,
            "{path}"
        );
    }
    // Changes: the admin token only.
    let patch = |token: &'static str| {
        c.patch(format!("{b}/v1/knobs"))
            .bearer_auth(token)
            .json(&serde_json::json!({"changes": [{"knob": "extract.slots", "value": 9, "reason": "t"}], "operator": "t"}))
            .send()
    };
    assert_eq!(patch("read-token").await.unwrap().status(), 401);
    assert_eq!(patch("ing-token").await.unwrap().status(), 401);
    assert_eq!(patch("adm-token").await.unwrap().status(), 200);
    let r = c
        .post(format!("{b}/v1/controller/pause?operator=t"))
        .bearer_auth("read-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Probes and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&c, format!("{b}{path}"), None).await, 200, "{path}");
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_ingest_is_closed_unless_opened_on_loopback() {
    let tmp = common::TempDir::new("auth-open");
    let c = reqwest::Client::new();
    let nd = Some("application/x-ndjson");

    // Nothing configured: the service starts on loopback, ingest is refused.
    let s = serve_with(&tmp.0.join("closed"), "").await;
    let (status, body) = ingest(&c, &s.base, None, nd).await;
    assert_eq!(status, 401);
    assert!(body.contains("open_ingest"), "{body}");
    assert_eq!(get(&c, format!("{}/v1/config", s.base), None).await, 401);
    s.finish().await;

    // open_ingest: ingest without a token on loopback; reads stay closed.
    let s = serve_with(&tmp.0.join("open"), "open_ingest = true").await;
    assert_eq!(ingest(&c, &s.base, None, nd).await.0, 200);
    assert_eq!(ingest(&c, &s.base, None, Some("text/plain")).await.0, 415);
    assert_eq!(get(&c, format!("{}/v1/config", s.base), None).await, 401);
    s.finish().await;

    // A non-loopback address without a token: the service does not start.
    for service in [
        "listen = \"0.0.0.0:8080\"",
        "listen = \"0.0.0.0:8080\"\nopen_ingest = true",
        "listen = \"[::]:8080\"",
        "listen = \"192.168.1.10:8080\"\nread_token = \"r\"",
    ] {
        let err = match Runtime::build(&settings(&tmp.0.join("net"), service)).await {
            Ok(_) => panic!("{service}: started without a token"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("refusing to start") && err.contains("INGEST_TOKEN"),
            "{service}: {err}"
        );
    }
    // With an ingest token it may listen anywhere.
    let rt = Runtime::build(&settings(
        &tmp.0.join("net-ok"),
        "listen = \"0.0.0.0:8080\"\ningest_token = \"i\"",
    ))
    .await
    .unwrap();
    assert!(rt.drain().await.0);
}
