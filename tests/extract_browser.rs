//! The `browser` and `auto` render modes with a real headless Chromium,
//! against the simulator's JavaScript apps and a loopback server of hostile
//! pages. Needs Chromium (`scripts/test` installs Debian's `chromium`);
//! without one the tests say so and pass, unless `FRESHET_TEST_SUITE` is set
//! (the full suite must run them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use freshet::dataplane::extract::{browser, fetch::Fetcher, quality, ExtractStage};
use freshet::dataplane::retry::ErrorClass;
use freshet::dataplane::search::serppost::SerpPost;
use freshet::knobs::{Knobs, RenderMode};
use freshet::live::LiveConfig;
use freshet::settings::Settings;
use freshet::sim::{PageKind, Scenario, SimOptions, SimServer};

mod common;
use common::FAST;

fn have_browser() -> bool {
    match browser::find_executable(None) {
        Ok(_) => true,
        Err(why) if std::env::var_os("FRESHET_TEST_SUITE").is_some() => {
            panic!("the full suite needs a headless browser: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

fn stage(settings_toml: &str, knobs: Knobs) -> (ExtractStage, Arc<LiveConfig>) {
    let settings =
        Settings::from_toml(settings_toml, "test", std::iter::empty()).expect("settings");
    let live = LiveConfig::new(knobs).expect("knobs");
    let fetcher = Fetcher::new(&settings.extract, &settings.resolve).expect("fetcher");
    let provider = Arc::new(SerpPost::new(&settings.provider).expect("provider"));
    (ExtractStage::new(fetcher, provider, live.clone()), live)
}

async fn sim(js_share: f64) -> (SimServer, ExtractStage) {
    let scenario = FAST.replace("js_share = 0.0", &format!("js_share = {js_share}"));
    let sim = SimServer::start(SimOptions::new(
        Scenario::from_toml_str(&scenario).expect("scenario"),
        7,
    ))
    .await
    .expect("sim starts");
    let toml = format!(
        "[provider]\nbase_url = \"{}\"\napi_key = \"sim-key\"\n[extract.resolve]\n\"sim.test\" = \"127.0.0.1\"\n",
        sim.base_url()
    );
    let (stage, _) = stage(&toml, Knobs::default());
    (sim, stage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_runs_js_apps_that_http_sees_empty() {
    if !have_browser() {
        return;
    }
    let (sim, stage) = sim(1.0).await;
    let urls = sim.corpus().article_urls(sim.addr().port(), 6);
    let mut total = 0.0;
    for url in &urls {
        let served = sim.page_now(&url::Url::parse(url).unwrap()).unwrap();
        assert_eq!(served.kind, PageKind::JsShell, "{url}");
        let err = stage
            .extract_with(url, RenderMode::Http)
            .await
            .expect_err("http sees an empty shell");
        assert_eq!(err.class, ErrorClass::NoContent, "{url}: {err}");
        let page = stage
            .extract_with(url, RenderMode::Browser)
            .await
            .unwrap_or_else(|e| panic!("{url}: browser: {e}"));
        assert_eq!(page.render_mode, RenderMode::Browser);
        let f1 = quality::token_f1(
            &quality::markdown_text(&page.markdown).0,
            &served.article_text,
        );
        assert!(page.quality.score >= 0.5, "{url}: {:?}", page.quality);
        total += f1;
    }
    let mean = total / urls.len() as f64;
    assert!(mean >= 0.9, "mean F1 {mean:.3} of browser-rendered shells");
    assert_eq!(
        stage.browser().launches(),
        1,
        "one browser serves every page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_escalates_shells_only() {
    if !have_browser() {
        return;
    }
    let (sim, stage) = sim(0.5).await;
    let urls = sim.corpus().article_urls(sim.addr().port(), 16);
    let (mut shells, mut plain) = (0, 0);
    for url in &urls {
        let served = sim.page_now(&url::Url::parse(url).unwrap()).unwrap();
        let page = stage
            .extract_with(url, RenderMode::Auto)
            .await
            .unwrap_or_else(|e| panic!("{url}: auto: {e}"));
        if served.kind == PageKind::JsShell {
            shells += 1;
            assert_eq!(page.render_mode, RenderMode::Browser, "{url}");
        } else {
            plain += 1;
            assert_eq!(page.render_mode, RenderMode::Http, "{url}");
        }
        assert!(page.quality.score >= 0.5, "{url}: {:?}", page.quality);
    }
    assert!(
        shells > 0 && plain > 0,
        "{shells} shells, {plain} plain pages"
    );
}

fn html(body: String) -> axum::response::Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!DOCTYPE html><html><head><title>Hostile page test</title></head><body>{body}</body></html>"),
    )
        .into_response()
}

/// A loopback site of hostile pages (`evil.test`, resolved to it by the
/// operator's `[extract.resolve]`), and how often its secret was read.
async fn hostile_site() -> (u16, Arc<AtomicUsize>) {
    let secret_reads = Arc::new(AtomicUsize::new(0));
    let reads = secret_reads.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let article: String = [
        "The river rose two metres overnight and the town council met at dawn to plan the response.",
        "Volunteers filled sandbags along the east bank while the fire brigade pumped out cellars.",
        "Schools in the lower districts stayed closed, and buses were rerouted over the northern bridge.",
        "Forecasters expect the water to peak on Thursday afternoon before falling slowly over the weekend.",
        "The mayor asked residents near the harbour to move cars and valuables to higher ground.",
        "Insurance adjusters will visit damaged homes from Monday, the regional office said.",
    ]
    .iter()
    .map(|s| format!("<p>{s}</p>"))
    .collect();
    let app = {
        let article = article.clone();
        let article2 = article.clone();
        Router::new()
            // Its script reads an internal address (a literal loopback IP the
            // guard refuses), opens a dialog and navigates away.
            .route(
                "/sneaky",
                get(move || {
                    let article = article.clone();
                    async move {
                        html(format!(
                            "<div id=root></div><script>\
                             fetch('http://127.0.0.1:{port}/secret').catch(function(){{}});\
                             alert('hello');\
                             document.getElementById('root').innerHTML='<article><h1>River floods</h1>{article}</article>';\
                             setTimeout(function(){{location.href='http://evil.test:{port}/elsewhere'}},50);\
                             </script>"
                        ))
                    }
                }),
            )
            .route(
                "/secret",
                get(move || {
                    reads.fetch_add(1, Ordering::SeqCst);
                    async { "internal secret" }
                }),
            )
            .route(
                "/elsewhere",
                get(|| async { html("<p>Somewhere else entirely.</p>".into()) }),
            )
            .route(
                "/spin",
                get(|| async { html("<script>for(;;){}</script>".into()) }),
            )
            .route(
                "/hog",
                get(|| async {
                    html("<script>var a=[];for(;;){a.push(new Array(1e6).fill(Math.random()))}</script>".into())
                }),
            )
            .route(
                "/huge",
                get(|| async {
                    html("<div id=r></div><script>var s='<p>'+'x'.repeat(1000)+'</p>';document.getElementById('r').innerHTML=s.repeat(8000)</script>".into())
                }),
            )
            .route(
                "/download",
                get(|| async {
                    ([(header::CONTENT_TYPE, "application/zip")], vec![0u8; 4096]).into_response()
                }),
            )
            .route(
                "/fine",
                get(move || {
                    let article = article2.clone();
                    async move { html(format!("<article><h1>River floods</h1>{article}</article>")) }
                }),
            )
    };
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    (port, secret_reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pages_end_classified_and_the_browser_survives() {
    if !have_browser() {
        return;
    }
    let (port, secret_reads) = hostile_site().await;
    let toml = "[extract.resolve]\n\"evil.test\" = \"127.0.0.1\"\n";
    let mut knobs = Knobs::default();
    knobs.extract.timeout_ms = 8_000;
    knobs.extract.retry.max_attempts = 1;
    let (stage, _live) = stage(toml, knobs);
    let url = |path: &str| format!("http://evil.test:{port}{path}");

    // The page's own content is kept; its request to an internal address
    // never left, its dialog did not block it, it did not navigate away.
    let page = stage
        .extract_with(&url("/sneaky"), RenderMode::Browser)
        .await
        .expect("sneaky page renders");
    assert!(page.markdown.contains("river rose"), "{}", page.markdown);
    assert!(!page.markdown.contains("Somewhere else"));
    assert_eq!(
        secret_reads.load(Ordering::SeqCst),
        0,
        "the guard let a request through"
    );

    for (path, class) in [
        ("/spin", ErrorClass::Timeout),
        ("/hog", ErrorClass::NoContent),
        ("/huge", ErrorClass::TooLarge),
        ("/download", ErrorClass::NotHtml),
    ] {
        let started = Instant::now();
        let err = stage
            .extract_with(&url(path), RenderMode::Browser)
            .await
            .expect_err(path);
        assert!(
            err.class == class || (path == "/hog" && err.class == ErrorClass::Timeout),
            "{path}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{path} took {:?}",
            started.elapsed()
        );
        // Whatever the last page did, the next one renders.
        let fine = stage
            .extract_with(&url("/fine"), RenderMode::Browser)
            .await
            .unwrap_or_else(|e| panic!("after {path}: {e}"));
        assert!(fine.markdown.contains("river rose"));
    }
    assert_eq!(secret_reads.load(Ordering::SeqCst), 0);
}
