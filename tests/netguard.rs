//! The outbound address guard end to end: `freshet extract` and the running
//! pipeline refuse loopback in every spelling, and a redirect into loopback,
//! while an address the operator allowed is fetched.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use freshet::dataplane::dlq::Dlq;
use freshet::service::Runtime;

mod common;
use common::freshet;

/// A loopback HTTP server that records every path asked for: `/page` is a
/// real article, `/to-ip` and `/to-name` redirect to `/secret` on loopback
/// by address and by name.
struct Origin {
    port: u16,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        let corpus = freshet::sim::Corpus::new(3);
        let url = corpus.article_urls(80, 1).pop().unwrap();
        let body =
            String::from_utf8_lossy(&corpus.page(&url::Url::parse(&url).unwrap()).unwrap().body)
                .into_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = first.split(' ').nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(path.clone());
                let response = match path.as_str() {
                    "/to-ip" => format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/secret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    "/to-name" => format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://localhost:{port}/secret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    "/to-odd" => format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://0x7f.1:{port}/secret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    _ => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Origin { port, paths }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

fn config(dir: &std::path::Path, extra: &str) -> String {
    common::TestSettings::new(&dir.join("data"))
        .merge(extra)
        .write(&dir.join("freshet.toml"))
}

#[test]
fn extract_refuses_loopback_in_every_spelling_and_fetches_what_is_allowed() {
    let origin = Origin::start();
    let port = origin.port;
    let tmp = common::TempDir::new("netguard-cli");
    let plain = config(&tmp.0.join("plain"), "");
    for url in [
        format!("http://127.0.0.1:{port}/page"),
        format!("http://2130706433:{port}/page"),
        format!("http://0x7f.1:{port}/page"),
        format!("http://0177.0.0.1:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        format!("http://localhost:{port}/page"),
    ] {
        let (ok, out, err) = freshet(&["--config", &plain, "extract", &url, "--format", "json"]);
        assert!(!ok, "{url} was fetched: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
        assert_eq!(v["error"]["class"], "blocked", "{url}: {out} {err}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("loopback")
                && (message.contains("127.0.0.1") || message.contains("::1")),
            "{url}: {message}"
        );
    }
    assert!(
        origin.paths().is_empty(),
        "a refused fetch reached the server: {:?}",
        origin.paths()
    );

    // A public-looking name (pinned by the operator to the origin) whose
    // page redirects into loopback: by address, by name, by odd spelling.
    let pinned = config(
        &tmp.0.join("pinned"),
        "[extract.resolve]\n\"news.example\" = \"127.0.0.1\"\n",
    );
    for hop in ["/to-ip", "/to-name", "/to-odd"] {
        let url = format!("http://news.example:{port}{hop}");
        let (ok, out, err) = freshet(&["--config", &pinned, "extract", &url, "--format", "json"]);
        assert!(!ok, "{url}: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
        assert_eq!(v["error"]["class"], "blocked", "{url}: {out} {err}");
    }
    let paths = origin.paths();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(!paths.iter().any(|p| p == "/secret"), "{paths:?}");

    // The operator allows loopback explicitly: fetched.
    let allowed = config(
        &tmp.0.join("allowed"),
        "[extract]\nallow_private = [\"127.0.0.0/8\"]\n",
    );
    let url = format!("http://127.0.0.1:{port}/page");
    let (ok, out, err) = freshet(&["--config", &allowed, "extract", &url, "--format", "json"]);
    assert!(ok, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["page"]["markdown"].as_str().unwrap().len() > 200, "{out}");
    // Host names too.
    let by_name = config(
        &tmp.0.join("by-name"),
        "[extract]\nallow_private = [\"localhost\"]\n",
    );
    let url = format!("http://localhost:{port}/page");
    let (ok, out, err) = freshet(&["--config", &by_name, "extract", &url, "--format", "json"]);
    assert!(ok, "{out} {err}");

    // A bad entry is a settings error naming the field.
    let bad = config(
        &tmp.0.join("bad"),
        "[extract]\nallow_private = [\"10.0.0.0/40\"]\n",
    );
    let (ok, _, err) = freshet(&["--config", &bad, "config", "check", &bad]);
    assert!(!ok && err.contains("extract.allow_private"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_dead_letters_a_loopback_url_as_blocked() {
    let origin = Origin::start();
    let tmp = common::TempDir::new("netguard-pipeline");
    let dir = tmp.0.clone();
    let settings = common::TestSettings::new(&dir)
        .set("knobs.transform.linger_ms", 2)
        .build();
    let metrics = freshet::metrics::install();
    let runtime = Runtime::build(&settings).await.unwrap();
    let lines = [
        format!("http://127.0.0.1:{}/page", origin.port),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://[::1]:{}/page", origin.port),
    ]
    .iter()
    .map(|u| serde_json::json!({"type": "url", "url": u}).to_string())
    .collect::<Vec<_>>()
    .join("\n");
    let report = runtime
        .source
        .feed_lines(lines.as_bytes(), "test", Default::default())
        .await
        .unwrap();
    assert_eq!(report.accepted, 3);
    let (drained, _, _) = runtime.drain().await;
    assert!(drained);
    let (letters, _) = Dlq::read_all(&dir.join("dlq.jsonl")).unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    for l in &letters {
        assert_eq!(l.error_type, "blocked", "{l:?}");
        assert_eq!(l.stage, "extract");
    }
    assert!(letters
        .iter()
        .any(|l| l.message.contains("169.254.169.254") && l.message.contains("link_local")));
    assert!(origin.paths().is_empty(), "{:?}", origin.paths());
    let text = metrics.render();
    assert!(
        text.lines().any(
            |l| l.starts_with("freshet_fetch_blocked_total") && l.contains("rule=\"loopback\"")
        ),
        "{text}"
    );
}
