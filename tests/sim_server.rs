//! The simulator over real HTTP on loopback (ephemeral port).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use freshet::sim::{HostileKind, PageKind, Scenario, SimOptions, SimServer, SimStats};

const KEY: &str = "test-key";

fn fast_scenario(extra: &str) -> Scenario {
    let s = format!(
        r#"
name = "test"
[[phase]]
name = "one"
duration_s = 3600
js_share = 0.0
[phase.search]
latency_ms = {{ p50 = 2, p99 = 5 }}
[phase.render]
latency_ms = {{ p50 = 5, p99 = 10 }}
[phase.pages]
latency_ms = {{ p50 = 2, p99 = 5 }}
{extra}
"#
    );
    Scenario::from_toml_str(&s).unwrap()
}

async fn start(sc: Scenario, seed: u64) -> SimServer {
    let mut o = SimOptions::new(sc, seed);
    o.api_key = KEY.into();
    SimServer::start(o).await.unwrap()
}

/// A client that resolves every simulated domain to the server.
fn client(sim: &SimServer) -> reqwest::Client {
    let addr: SocketAddr = sim.addr();
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .redirect(reqwest::redirect::Policy::limited(10));
    for d in sim.corpus().domains() {
        b = b.resolve(d, addr);
    }
    b.resolve("hostile.sim.test", addr).build().unwrap()
}

async fn search(
    c: &reqwest::Client,
    sim: &SimServer,
    q: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut r = c
        .post(format!("{}/api/search", sim.base_url()))
        .json(&serde_json::json!({"s": q, "t": "google"}));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn search_is_deterministic_and_authenticated() {
    let sim = start(fast_scenario(""), 42).await;
    let c = client(&sim);
    assert_eq!(
        search(&c, &sim, "vector databases", None).await.status(),
        401
    );
    assert_eq!(
        search(&c, &sim, "vector databases", Some("wrong"))
            .await
            .status(),
        401
    );
    let bad = c
        .post(format!("{}/api/search", sim.base_url()))
        .bearer_auth(KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let a: serde_json::Value = search(&c, &sim, "vector databases", Some(KEY))
        .await
        .json()
        .await
        .unwrap();
    let b: serde_json::Value = search(&c, &sim, "vector databases", Some(KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a, b);
    let hits = a["data"].as_array().unwrap();
    assert_eq!(hits.len(), 10);
    let port = sim.addr().port();
    for h in hits {
        let u = h["url"].as_str().unwrap();
        assert!(
            u.contains(".sim.test:") && u.contains(&port.to_string()),
            "{u}"
        );
        assert!(!h["title"].as_str().unwrap().is_empty());
        assert!(!h["snippet"].as_str().unwrap().is_empty());
    }
    assert!(hits[0]["title"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("vector"));
    let expect = sim.corpus().search("vector databases", port, 10);
    assert_eq!(hits[0]["url"].as_str().unwrap(), expect[0].url);
    let st = sim.stats();
    assert_eq!(st.credits_used, 2);
    assert_eq!(st.endpoints["search"].requests, 5);
    assert_eq!(st.endpoints["search"].client_errors, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn render_returns_markdown_for_js_shell() {
    let sim = start(fast_scenario(""), 3).await;
    sim.set_phase(0);
    let c = client(&sim);
    let port = sim.addr().port();
    // At share 1.0 every article is a shell; the shell hides the text.
    let url = sim.corpus().article_urls(port, 1).remove(0);
    let parsed = url::Url::parse(&url).unwrap();
    let shell = sim.corpus().page_in(&parsed, 1.0).unwrap();
    assert_eq!(shell.kind, PageKind::JsShell);
    let r = c
        .post(format!("{}/api/url", sim.base_url()))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"s": url, "t": "url", "b": true, "w": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let md = v["data"]["markdown"].as_str().unwrap();
    assert_eq!(md, shell.rendered_markdown);
    assert!(md.starts_with(&format!("# {}\n\n", shell.title)));
    // The first single-line block (a takeaways box may come first).
    let first_para = shell
        .article_text
        .split("\n\n")
        .find(|b| !b.contains('\n'))
        .unwrap();
    assert!(md.contains(first_para));
    let r = c.post(format!("{}/api/url", sim.base_url())).bearer_auth(KEY).json(&serde_json::json!({"s": format!("http://techdaily.sim.test:{port}/nope-1"), "t": "url"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(sim.stats().credits_used, 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn js_share_makes_shells_and_truth_follows_phase() {
    let extra = r#"
[[phase]]
name = "spa"
duration_s = 10
js_share = 0.0
[phase.domains."techdaily.sim.test"]
js_share = 1.0
"#;
    let sim = start(fast_scenario(extra), 3).await;
    let c = client(&sim);
    let port = sim.addr().port();
    let url = sim
        .corpus()
        .article_urls(port, 30)
        .into_iter()
        .find(|u| u.contains("techdaily"))
        .unwrap();
    let get = |u: String| {
        let c = c.clone();
        async move { c.get(u).send().await.unwrap().text().await.unwrap() }
    };
    sim.set_phase(0);
    let html = get(url.clone()).await;
    assert!(!html.contains("id=\"root\""));
    sim.set_phase(1);
    assert_eq!(sim.current_phase(), 1);
    let html = get(url.clone()).await;
    assert!(html.contains("<div id=\"root\"></div>"));
    let truth: serde_json::Value = c
        .get(format!("{}/sim/truth", sim.base_url()))
        .query(&[("url", &url)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(truth["kind"]["type"], "JsShell");
    let stats: SimStats = c
        .get(format!("{}/sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.phase_name, "spa");
    assert_eq!(stats.domains["techdaily.sim.test"].ok, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn phase_clock_advances_with_time_scale() {
    let extra = "[[phase]]\nname = \"two\"\nduration_s = 3600\n";
    let mut sc = fast_scenario(extra);
    sc.phases[0].duration_s = 1.0;
    let mut o = SimOptions::new(sc, 1);
    o.time_scale = 2.0;
    let sim = SimServer::start(o).await.unwrap();
    assert_eq!(sim.current_phase(), 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sim.current_phase(), 1);
    sim.set_phase(0);
    assert_eq!(sim.current_phase(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn pages_by_host_match_corpus_and_seed() {
    let sim = start(fast_scenario(""), 11).await;
    let c = client(&sim);
    let port = sim.addr().port();
    let urls = sim.corpus().article_urls(port, 48);
    let mut templates_seen = std::collections::HashSet::new();
    for u in &urls {
        let r = c.get(u).send().await.unwrap();
        assert_eq!(r.status(), 200, "{u}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let body = r.bytes().await.unwrap();
        let p = sim.corpus().page(&url::Url::parse(u).unwrap()).unwrap();
        assert_eq!(ct, p.content_type);
        assert_eq!(body, p.body, "{u}");
        assert!(body.len() >= 40_000, "{u}: {} bytes", body.len());
        templates_seen.insert(u.split('/').nth(3).unwrap().to_string());
        if ct.contains("windows-1252") {
            assert!(std::str::from_utf8(&body).is_err() || body.is_ascii());
        }
    }
    assert!(templates_seen.len() >= 4, "{templates_seen:?}");
    // A manual Host header works the same as the resolver override.
    let plain = reqwest::Client::new();
    let u = url::Url::parse(&urls[0]).unwrap();
    let r = plain
        .get(format!("{}{}", sim.base_url(), u.path()))
        .header("host", format!("{}:{port}", u.host_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap(),
        sim.corpus().page(&u).unwrap().body
    );
    // Unknown paths on page hosts and unknown API paths are 404s.
    assert_eq!(
        c.get(format!("http://techdaily.sim.test:{port}/no/such/page"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(format!("{}/nope", sim.base_url()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Same seed, same pages (modulo the port in links); other seed, other pages.
    let other = start(fast_scenario(""), 11).await;
    let p2 = other.addr().port().to_string();
    let u2 = urls[5].replace(&port.to_string(), &p2);
    let b2 = client(&other)
        .get(&u2)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let b1 = c.get(&urls[5]).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&b1).replace(&port.to_string(), "P"),
        String::from_utf8_lossy(&b2).replace(&p2, "P")
    );
    assert_ne!(
        freshet::sim::Corpus::new(12).article_urls(port, 3),
        sim.corpus().article_urls(port, 3)
    );
    other.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_and_concurrency_give_429_with_retry_after() {
    let mut sc = fast_scenario("");
    sc.phases[0].search.rate_limit_rps = Some(0.2);
    sc.phases[0].render.max_concurrency = Some(1);
    sc.phases[0].render.latency_ms = freshet::sim::Latency {
        p50: 400.0,
        p99: 500.0,
    };
    let sim = start(sc, 1).await;
    let c = client(&sim);
    let mut codes = vec![];
    for _ in 0..6 {
        let r = search(&c, &sim, "sourdough", Some(KEY)).await;
        if r.status() == 429 {
            let ra: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(ra >= 1);
        }
        codes.push(r.status().as_u16());
    }
    // Burst of one token at 0.2/s: one passes, the rest wait for Retry-After.
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 5, "{codes:?}");
    // Concurrency: two renders at once with max_concurrency = 1.
    let url = sim.corpus().article_urls(sim.addr().port(), 1).remove(0);
    let body = serde_json::json!({"s": url, "t": "url"});
    let f = || {
        c.post(format!("{}/api/url", sim.base_url()))
            .bearer_auth(KEY)
            .json(&body)
            .send()
    };
    let (a, b) = tokio::join!(f(), f());
    let mut s = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    s.sort();
    assert_eq!(s, [200, 429]);
    let st = sim.stats();
    assert_eq!(st.endpoints["search"].status_429, 5);
    assert_eq!(st.endpoints["render"].status_429, 1);
    assert_eq!(st.credits_used, 1 + 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_reset_timeout_5xx() {
    let extra = r#"
[phase.domains."worldwire.sim.test"]
reset = 1.0
[phase.domains."citybeat.sim.test"]
timeout = 1.0
[phase.domains."datastack.sim.test"]
error_5xx = 1.0
"#;
    let sim = start(fast_scenario(extra), 5).await;
    let c = client(&sim);
    let urls = sim.corpus().article_urls(sim.addr().port(), 48);
    let pick = |d: &str| urls.iter().find(|u| u.contains(d)).unwrap().clone();
    let e = c.get(pick("worldwire")).send().await.unwrap_err();
    assert!(!e.is_timeout(), "{e:?}");
    let t0 = Instant::now();
    let e = c
        .get(pick("citybeat"))
        .timeout(Duration::from_millis(800))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(3));
    let r = c.get(pick("datastack")).send().await.unwrap();
    assert!(r.status().is_server_error());
    let st = sim.stats();
    assert_eq!(st.domains["worldwire.sim.test"].resets, 1);
    assert_eq!(st.domains["citybeat.sim.test"].timeouts, 1);
    assert_eq!(st.domains["datastack.sim.test"].status_5xx, 1);
    // Shutdown is prompt even with a hanging request outstanding.
    let c2 = c.clone();
    let u = pick("citybeat");
    tokio::spawn(async move {
        let _ = c2.get(u).send().await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    sim.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn hostile_pages() {
    let sim = start(fast_scenario(""), 9).await;
    let c = client(&sim);
    let port = sim.addr().port();
    let urls: std::collections::HashMap<HostileKind, String> =
        sim.corpus().hostile_urls(port).into_iter().collect();
    let huge = c
        .get(&urls[&HostileKind::Huge])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(huge.len() >= 10 * 1024 * 1024);
    let e = c
        .get(&urls[&HostileKind::RedirectLoop])
        .send()
        .await
        .unwrap_err();
    assert!(e.is_redirect(), "{e:?}");
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("hostile.sim.test", sim.addr())
        .build()
        .unwrap();
    let r = no_follow
        .get(&urls[&HostileKind::RedirectLoop])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        format!("http://hostile.sim.test:{port}/redirect-loop-b")
    );
    let bad = c
        .get(&urls[&HostileKind::InvalidUtf8])
        .send()
        .await
        .unwrap();
    assert!(bad.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("utf-8"));
    assert!(std::str::from_utf8(&bad.bytes().await.unwrap()).is_err());
    let mal = c
        .get(&urls[&HostileKind::Malformed])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(mal.contains("<div <p"));
    assert_eq!(
        c.get(&urls[&HostileKind::Empty])
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        0
    );
    let err = c.get(&urls[&HostileKind::ErrorPage]).send().await.unwrap();
    assert_eq!(err.status(), 200);
    assert!(err.text().await.unwrap().contains("404"));
    // Slow drip: a few bytes per second.
    let mut r = c.get(&urls[&HostileKind::SlowDrip]).send().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut got = 0;
    while let Ok(Ok(Some(b))) = tokio::time::timeout_at(deadline, r.chunk()).await {
        got += b.len();
    }
    assert!(got > 0 && got <= 40, "{got} bytes in 2.5 s");
    drop(r);
    sim.shutdown().await;
}

#[test]
fn scenario_files_parse_and_bad_ones_are_rejected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let sc = Scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            assert!(
                sc.total_duration_s() >= 120.0 && sc.total_duration_s() <= 300.0,
                "{}",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 4);
    let cases = [
        ("name='x'\n", "phase"),
        ("name='x'\n[[phase]]\nname='a'\nduration_s=1\nspeed=3\n", "speed"),
        ("name='x'\n[[phase]]\nname='a'\nduration_s=1\n[phase.search]\nreset=2.0\n", "reset"),
        ("name='x'\n[[phase]]\nname='a'\nduration_s=1\n[phase.pages]\nlatency_ms={p50=-1,p99=5}\n", "p50"),
        ("name='x'\n[[phase]]\nname='a'\nduration_s=1\n[phase.domains.\"nope.sim.test\"]\njs_share=0.5\n", "unknown domain"),
        ("name='x'\n[[phase]]\nname='a'\nduration_s=0\n", "duration_s"),
    ];
    for (src, want) in cases {
        let e = format!("{:#}", Scenario::from_toml_str(src).unwrap_err());
        assert!(
            e.contains(want),
            "error for {src:?} should mention {want:?}: {e}"
        );
    }
    let e = format!(
        "{:#}",
        Scenario::from_toml_str("name='x'\n[[phase]]\nname='a'\nduration_s=1\nspeed=3\n")
            .unwrap_err()
    );
    assert!(e.contains("line 5"), "{e}");
}
