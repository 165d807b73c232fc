//! The search and extract stages against the in-process simulator, over real
//! HTTP on loopback.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshet::dataplane::extract::{fetch::Fetcher, quality, ExtractStage};
use freshet::dataplane::retry::ErrorClass;
use freshet::dataplane::search::{serppost::SerpPost, SearchProvider, SearchStage};
use freshet::knobs::{Change, Knobs, RenderMode};
use freshet::live::LiveConfig;
use freshet::settings::Settings;
use freshet::sim::{HostileKind, PageKind, Scenario, SimOptions, SimServer};

mod common;
use common::FAST;

struct Harness {
    sim: SimServer,
    live: Arc<LiveConfig>,
    extract: ExtractStage,
    provider: Arc<SerpPost>,
}

async fn harness(scenario: &str, knobs: Knobs) -> Harness {
    let scenario = Scenario::from_toml_str(scenario).expect("test scenario parses");
    let sim = SimServer::start(SimOptions::new(scenario, 7))
        .await
        .expect("sim starts");
    let toml = format!(
        "[provider]\nbase_url = \"{}\"\napi_key = \"sim-key\"\n[extract.resolve]\n\"sim.test\" = \"127.0.0.1\"\n",
        sim.base_url()
    );
    let settings = Settings::from_toml(&toml, "test", std::iter::empty()).expect("settings");
    let live = LiveConfig::new(knobs).expect("knobs");
    let provider = Arc::new(SerpPost::new(&settings.provider).expect("provider"));
    let fetcher = Fetcher::new(&settings.extract, &settings.resolve).expect("fetcher");
    let extract = ExtractStage::new(fetcher, provider.clone(), live.clone());
    Harness {
        sim,
        live,
        extract,
        provider,
    }
}

#[tokio::test]
async fn search_returns_the_simulators_urls_and_counts_credits() {
    let h = harness(FAST, Knobs::default()).await;
    let stage = SearchStage::new(h.provider.clone(), h.live.clone());
    let hits = stage
        .search("rust async runtimes")
        .await
        .expect("search works");
    let want = h
        .sim
        .corpus()
        .search("rust async runtimes", h.sim.addr().port(), 10);
    assert!(!hits.is_empty());
    assert_eq!(
        hits.iter().map(|h| &h.url).collect::<Vec<_>>(),
        want.iter().map(|h| &h.url).collect::<Vec<_>>()
    );
    assert_eq!(h.provider.credits_used(), 1);

    // A wrong key is an auth error, not retried, and the key never shows.
    let toml = format!(
        "[provider]\nbase_url = \"{}\"\napi_key = \"wrong-secret-key\"\n",
        h.sim.base_url()
    );
    let settings = Settings::from_toml(&toml, "test", std::iter::empty()).unwrap();
    let bad = Arc::new(SerpPost::new(&settings.provider).unwrap());
    let stage = SearchStage::new(bad, h.live.clone());
    let err = stage.search("rust").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Auth);
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-secret-key"), "{shown}");
    assert_eq!(
        h.sim.stats().endpoints["search"].requests,
        2,
        "auth failures are not retried"
    );
}

#[tokio::test]
async fn extraction_of_simulator_articles_reaches_f1_095() {
    let h = harness(FAST, Knobs::default()).await;
    let urls = h.sim.corpus().article_urls(h.sim.addr().port(), 200);
    let extract = Arc::new(h.extract);
    let mut total = 0.0;
    let mut worst = (1.0, String::new());
    let results = futures::future::join_all(urls.iter().map(|u| {
        let extract = extract.clone();
        async move { (u.clone(), extract.extract(u).await) }
    }))
    .await;
    for (url, result) in results {
        let page = result.unwrap_or_else(|e| panic!("{url}: {e}"));
        let truth = h
            .sim
            .corpus()
            .page(&url::Url::parse(&url).unwrap())
            .unwrap();
        assert_eq!(truth.kind, PageKind::Article);
        let f1 = quality::token_f1(
            &quality::markdown_text(&page.markdown).0,
            &truth.article_text,
        );
        if f1 < worst.0 {
            worst = (f1, url.clone());
        }
        total += f1;
        assert!(page.quality.score >= 0.5, "{url}: {:?}", page.quality);
    }
    let mean = total / urls.len() as f64;
    eprintln!(
        "mean F1 {mean:.4} over {} pages; worst {worst:?}",
        urls.len()
    );
    assert!(mean >= 0.95, "mean F1 {mean:.4}; worst {worst:?}");
}

#[tokio::test]
async fn js_shells_score_low_over_http_and_high_when_rendered() {
    let scenario = FAST.replace("js_share = 0.0", "js_share = 1.0");
    let h = harness(&scenario, Knobs::default()).await;
    let port = h.sim.addr().port();
    let urls = h.sim.corpus().article_urls(port, 6);
    for url in &urls {
        let served = h.sim.page_now(&url::Url::parse(url).unwrap()).unwrap();
        assert_eq!(served.kind, PageKind::JsShell, "{url}");
        let err = h
            .extract
            .extract_with(url, RenderMode::Http)
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::NoContent, "{url}: {err}");
        let low = err.page.expect("no_content carries the page").quality.score;
        assert!(low < 0.2, "{url}: http quality {low}");
        let page = h
            .extract
            .extract_with(url, RenderMode::Remote)
            .await
            .expect("remote render");
        assert!(
            page.quality.score > 0.7,
            "{url}: remote quality {:?}",
            page.quality
        );
        let f1 = quality::token_f1(
            &quality::markdown_text(&page.markdown).0,
            &served.article_text,
        );
        assert!(f1 > 0.95, "{url}: remote F1 {f1}");
    }
    assert_eq!(
        h.sim.stats().endpoints["render"].requests,
        urls.len() as u64
    );
}

#[tokio::test]
async fn hostile_pages_end_in_classified_errors_within_their_timeout() {
    let knobs = Knobs::default()
        .apply_patch(&[
            Change::new("extract.timeout_ms", 2_000),
            Change::new("extract.retry.max_attempts", 1),
        ])
        .unwrap();
    let h = harness(FAST, knobs).await;
    let port = h.sim.addr().port();
    for (kind, url) in h.sim.corpus().hostile_urls(port) {
        let started = Instant::now();
        let result = h.extract.extract(&url).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(4_000),
            "{kind:?} took {took:?}"
        );
        // Broken markup and a few invalid bytes in otherwise good text are
        // recovered (as a browser would), never half-accepted: the text
        // must then match the page's true text.
        if matches!(kind, HostileKind::Malformed | HostileKind::InvalidUtf8) {
            if let Ok(page) = &result {
                let truth = h.sim.page_now(&url::Url::parse(&url).unwrap()).unwrap();
                let f1 = quality::token_f1(
                    &quality::markdown_text(&page.markdown).0,
                    &truth.article_text,
                );
                assert!(f1 > 0.9, "{kind:?} recovered with F1 {f1}");
                continue;
            }
        }
        let err = match result {
            Ok(page) => panic!("{kind:?} was accepted: quality {:?}", page.quality),
            Err(e) => e,
        };
        let expected: &[ErrorClass] = match kind {
            HostileKind::Huge => &[ErrorClass::TooLarge],
            HostileKind::Malformed => &[ErrorClass::NoContent],
            HostileKind::InvalidUtf8 => &[ErrorClass::Decode, ErrorClass::NoContent],
            HostileKind::RedirectLoop => &[ErrorClass::Redirect],
            HostileKind::SlowDrip => &[ErrorClass::Timeout],
            HostileKind::ErrorPage | HostileKind::Empty => &[ErrorClass::NoContent],
        };
        assert!(expected.contains(&err.class), "{kind:?}: {err}");
    }
}

const THROTTLED: &str = r#"
name = "throttled"
[[phase]]
name = "only"
duration_s = 600
[phase.search]
latency_ms = { p50 = 2, p99 = 8 }
rate_limit_rps = 1
max_concurrency = 1
"#;

#[tokio::test]
async fn rate_limited_searches_are_retried_after_retry_after() {
    let knobs = Knobs::default()
        .apply_patch(&[Change::new("search.retry.max_attempts", 5)])
        .unwrap();
    let h = harness(THROTTLED, knobs).await;
    let stage = SearchStage::new(h.provider.clone(), h.live.clone());
    let started = Instant::now();
    let (a, b) = tokio::join!(stage.search("heat pumps"), stage.search("vector databases"));
    a.expect("first search succeeds");
    b.expect("second search succeeds after a 429");
    let stats = h.sim.stats();
    assert!(stats.endpoints["search"].status_429 >= 1, "{stats:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the retry waited for Retry-After: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn knob_changes_apply_to_the_next_request_and_lose_nothing() {
    let h = harness(FAST, Knobs::default()).await;
    let port = h.sim.addr().port();
    let urls = h.sim.corpus().article_urls(port, 120);
    let extract = Arc::new(h.extract);

    // The render mode switches between two requests.
    extract.extract(&urls[0]).await.expect("http");
    h.live
        .patch(&[Change::new("extract.render_mode", "remote")], None)
        .unwrap();
    let page = extract.extract(&urls[1]).await.expect("remote");
    assert_eq!(page.render_mode, RenderMode::Remote);
    assert_eq!(h.sim.stats().endpoints["render"].requests, 1);
    h.live
        .patch(&[Change::new("extract.render_mode", "http")], None)
        .unwrap();

    // Many swaps of slots and timeouts during a concurrent run: every page
    // comes back exactly once, and concurrency follows the slot knob.
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let live = h.live.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let slots = 1 + swaps % 12;
                live.patch(
                    &[
                        Change::new("extract.slots", slots),
                        Change::new("extract.timeout_ms", 5_000 + swaps % 7 * 100),
                    ],
                    None,
                )
                .unwrap();
                swaps += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            swaps
        })
    };
    let results = futures::future::join_all(urls[2..].iter().map(|u| {
        let extract = extract.clone();
        let done = done.clone();
        async move {
            let page = extract.extract(u).await;
            done.fetch_add(1, Ordering::SeqCst);
            page.map(|p| p.url)
        }
    }))
    .await;
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.await.unwrap();
    let mut got: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("no page lost"))
        .collect();
    got.sort();
    let mut want: Vec<String> = urls[2..].to_vec();
    want.sort();
    assert_eq!(got, want, "every page exactly once");
    assert!(swaps > 5, "swaps happened during the run: {swaps}");
    assert_eq!(extract.slots().in_use(), 0);
    let stats = h.sim.stats();
    assert_eq!(
        stats.endpoints["page"].requests,
        urls.len() as u64 - 1,
        "no page fetched twice: {stats:?}"
    );
}

#[tokio::test]
async fn gzip_pages_are_decompressed() {
    let h = harness(FAST, Knobs::default()).await;
    let port = h.sim.addr().port();
    // Every fourth simulated site compresses when asked to.
    let url = h
        .sim
        .corpus()
        .article_urls(port, 24)
        .into_iter()
        .find(|u| u.contains(&h.sim.corpus().domains()[1]))
        .expect("an article on the second domain");
    let raw = reqwest::Client::builder()
        .no_gzip()
        .resolve(
            url::Url::parse(&url).unwrap().host_str().unwrap(),
            h.sim.addr(),
        )
        .build()
        .unwrap()
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-encoding"], "gzip");
    let bytes = raw.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip stream on the wire");
    let page = h
        .extract
        .extract(&url)
        .await
        .expect("decompressed and extracted");
    let truth = h
        .sim
        .corpus()
        .page(&url::Url::parse(&url).unwrap())
        .unwrap();
    let f1 = quality::token_f1(
        &quality::markdown_text(&page.markdown).0,
        &truth.article_text,
    );
    assert!(f1 > 0.95, "F1 {f1}");
}
