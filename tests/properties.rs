//! Property tests of every parser of untrusted input: tasks (ingest lines,
//! Kafka messages), Debezium change events, the LLM's answer, guardrails and
//! settings files, and the HTML path of extraction. Each parser, fed random
//! and adversarial input, returns a value or a classified error and never
//! panics; deeply nested HTML neither overflows the stack nor stalls the
//! parse (extraction caps the nesting depth first).
//!
//! Case counts are bounded (`PROPTEST_CASES` overrides the 128 default), so
//! the suite stays fast on two cores.

use proptest::prelude::*;
use serde_json::{json, Value};

use freshet::control::guard::Guard;
use freshet::control::policy::llm::answer::parse_answer;
use freshet::control::policy::PolicyError;
use freshet::dataplane::source::cdc::{CdcError, CdcTable};
use freshet::dataplane::task::Task;
use freshet::settings::{Settings, TableMapping};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A JSON value of bounded depth and size, biased towards the shapes the
/// parsers look for (objects with the keys they know).
fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,40}".prop_map(Value::from),
        prop::sample::select(keys).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(keys).prop_map(String::from),
                    "[a-z_]{1,12}"
                ],
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const TASK_KEYS: &[&str] = &[
    "type",
    "url",
    "keyword",
    "document",
    "delete",
    "id",
    "text",
    "title",
    "metadata",
    "ts_ms",
    "max_results",
    "version",
];

/// An object that looks like a task: a known or unknown `type` and any of the
/// task fields with values of any JSON type.
fn task_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["url", "keyword", "document", "delete", "Url", "", "other"][..]),
        prop::collection::btree_map(
            prop::sample::select(TASK_KEYS).prop_map(String::from),
            json_value(TASK_KEYS),
            0..6,
        ),
    )
        .prop_map(|(kind, fields)| {
            let mut object: serde_json::Map<String, Value> = fields.into_iter().collect();
            object.insert("type".into(), Value::from(kind));
            Value::Object(object)
        })
}

fn check_task(line: &str) {
    match Task::parse(line) {
        Ok(task) => {
            // What parses is valid and survives its own round trip (the
            // dead-letter file stores tasks as JSON and replays them).
            task.validate().expect("a parsed task is valid");
            let again = serde_json::to_string(&task).expect("a task serializes");
            assert_eq!(Task::parse(&again).expect("the round trip parses"), task);
        }
        Err(why) => assert!(!why.is_empty(), "an error says why"),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_as_a_task_is_a_task_or_an_error(line in "\\PC{0,200}") {
        check_task(&line);
    }

    #[test]
    fn task_shaped_json_is_a_task_or_an_error(value in task_like()) {
        check_task(&value.to_string());
    }

    #[test]
    fn any_bytes_as_a_change_event_decode_or_fail_classified(
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        value in prop::option::of(prop::collection::vec(any::<u8>(), 0..256)),
    ) {
        let table = cdc_table();
        match table.decode(key.as_deref(), value.as_deref()) {
            Ok(task) => task.validate().expect("a decoded task is valid"),
            Err(e) => prop_assert!(matches!(e.class(), "parse" | "invalid")),
        }
    }

    #[test]
    fn debezium_shaped_events_decode_or_fail_classified(
        op in prop::sample::select(&["c", "u", "d", "r", "t", "x", ""][..]),
        before in json_value(ROW_KEYS),
        after in json_value(ROW_KEYS),
        key in json_value(ROW_KEYS),
        wrapped in any::<bool>(),
    ) {
        let payload = json!({"op": op, "before": before, "after": after, "ts_ms": 1_700_000_000_000u64});
        let value = if wrapped { json!({"schema": {}, "payload": payload}) } else { payload };
        let (key, value) = (key.to_string(), value.to_string());
        let table = cdc_table();
        match table.decode(Some(key.as_bytes()), Some(value.as_bytes())) {
            Ok(task) => task.validate().expect("a decoded task is valid"),
            Err(e) => {
                prop_assert!(matches!(e.class(), "parse" | "invalid"));
                prop_assert!(!matches!(e, CdcError::NotJson(_)), "the event was JSON: {e}");
            }
        }
    }

    #[test]
    fn any_llm_answer_parses_or_is_malformed(text in "\\PC{0,300}") {
        check_answer(&text);
    }

    #[test]
    fn answer_shaped_json_parses_or_is_malformed(value in json_value(ANSWER_KEYS), fenced in any::<bool>()) {
        let text = if fenced { format!("Here you go:\n```json\n{value}\n```\n") } else { value.to_string() };
        check_answer(&text);
    }

    #[test]
    fn any_guardrails_text_loads_or_fails(text in "\\PC{0,300}") {
        let _ = Guard::from_toml(&text, "proptest");
    }

    #[test]
    fn guardrails_shaped_toml_loads_or_fails(table in toml_table(GUARD_KEYS)) {
        if let Ok(guard) = Guard::from_toml(&table, "proptest") {
            // A loaded guard answers for any moment.
            let _ = guard.frozen_at(u64::MAX);
            let _ = guard.frozen_at(0);
        }
    }

    #[test]
    fn any_settings_text_loads_or_fails(text in "\\PC{0,300}") {
        let _ = Settings::from_toml(&text, "proptest", std::iter::empty());
    }

    #[test]
    fn settings_shaped_toml_loads_or_fails(table in toml_table(SETTINGS_KEYS)) {
        let _ = Settings::from_toml(&table, "proptest", std::iter::empty());
    }

    #[test]
    fn tag_soup_extracts_without_panicking(html in tag_soup()) {
        let page = freshet::dataplane::extract::extract_html(&html, "https://example.test/page");
        prop_assert!(page.quality.score.is_finite() && (0.0..=1.0).contains(&page.quality.score));
    }
}

const ROW_KEYS: &[&str] = &[
    "id", "title", "body", "url", "tags", "payload", "before", "after",
];

fn cdc_table() -> CdcTable {
    let mapping = TableMapping {
        topic: "db.public.articles".into(),
        id_field: "id".into(),
        title_field: "title".into(),
        text_fields: vec!["body".into()],
        url_field: "url".into(),
        payload_fields: vec!["tags".into()],
        ..TableMapping::default()
    };
    CdcTable::new("public.articles", &mapping)
}

const ANSWER_KEYS: &[&str] = &[
    "changes",
    "knob",
    "value",
    "reason",
    "rationale",
    "confidence",
    "extract.slots",
    "embed.batch_size",
    "render.mode",
    "noop",
];

fn check_answer(text: &str) {
    match parse_answer(text) {
        Ok(_) => {}
        Err(PolicyError::Malformed(why)) => assert!(!why.is_empty()),
        Err(other) => panic!("parsing an answer can only find it malformed, got {other:?}"),
    }
}

const GUARD_KEYS: &[&str] = &[
    "global",
    "knobs",
    "min",
    "max",
    "max_step_ratio",
    "max_step_abs",
    "cooldown_s",
    "frozen",
    "approval",
    "approval_expiry_s",
    "allowed",
    "freeze_windows",
    "start",
    "end",
    "max_changes_per_decision",
    "extract.slots",
];

const SETTINGS_KEYS: &[&str] = &[
    "service",
    "source",
    "extract",
    "transform",
    "embed",
    "index",
    "kafka",
    "knobs",
    "controller",
    "provider",
    "data_dir",
    "listen",
    "kind",
    "backend",
    "dimensions",
    "slots",
    "batch_size",
    "allow_private",
    "resolve",
    "brokers",
    "properties",
    "tables",
    "mode",
];

/// A TOML document of tables and keys from `keys`, values of any TOML type.
fn toml_table(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(toml::Value::from),
        any::<f64>().prop_map(toml::Value::from),
        any::<bool>().prop_map(toml::Value::from),
        "\\PC{0,20}".prop_map(toml::Value::from),
        prop::sample::select(keys).prop_map(toml::Value::from),
    ];
    let value = leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map(
                prop::sample::select(keys).prop_map(String::from),
                inner,
                0..5
            )
            .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(
        prop::sample::select(keys).prop_map(String::from),
        value,
        0..6,
    )
    .prop_map(|m| toml::to_string(&toml::Table::from_iter(m)).unwrap_or_default())
}

/// Random HTML: known and unknown tags, attributes, text, entities,
/// comments, scripts, unclosed and stray tags, nested to random depth.
fn tag_soup() -> impl Strategy<Value = String> {
    let tag = prop::sample::select(
        &[
            "div", "p", "article", "main", "nav", "span", "a", "h1", "h2", "ul", "li", "table",
            "tr", "td", "pre", "code", "script", "style", "noscript", "template", "svg", "math",
            "br", "img", "x-widget", "body", "html", "head", "title",
        ][..],
    );
    let text = "\\PC{0,60}".prop_map(|t| t.replace(['<', '>'], " "));
    let leaf = prop_oneof![
        text.clone(),
        Just("&amp;&lt;&#x1F600;&#0;&bogus;".to_string()),
        Just("<!-- comment -->".to_string()),
        Just("</p></div>".to_string()),
        Just("<p".to_string()),
    ];
    leaf.prop_recursive(8, 256, 6, move |inner| {
        (
            tag.clone(),
            "[a-z\\-]{0,8}",
            "\\PC{0,12}",
            prop::collection::vec(inner, 0..6),
            any::<bool>(),
        )
            .prop_map(|(tag, attr, value, children, close)| {
                let value = value.replace('"', "'");
                let mut out = format!("<{tag} {attr}=\"{value}\">");
                for c in children {
                    out.push_str(&c);
                }
                if close {
                    out.push_str(&format!("</{tag}>"));
                }
                out
            })
    })
}

/// 100,000 nested elements (a page built to exhaust a recursive parser or
/// walker, or to make the tree builder's scope checks quadratic) extract on
/// a thread with the default 2 MiB stack of a tokio worker, and the deep
/// text survives. Includes the shapes that keep elements open without
/// nesting tags: self-closing HTML tags and formatting elements the builder
/// reopens after their block closes.
#[test]
fn deeply_nested_html_does_not_overflow_the_stack() {
    let depth = 100_000;
    let nested = |open: &str, close: &str| {
        let mut html = String::with_capacity(depth * (open.len() + close.len()) + 64);
        html.push_str("<html><body>");
        html.push_str(&open.repeat(depth));
        html.push_str("deep text that is the whole of the article");
        html.push_str(&close.repeat(depth));
        html.push_str("</body></html>");
        html
    };
    let reopened: String = (0..depth)
        .map(|n| format!("<div><b id=b{n}></div>x"))
        .collect::<String>()
        + "deep text that is the whole of the article";
    for html in [
        nested("<div>", "</div>"),
        nested("<span><b>", "</b></span>"),
        nested("<ul><li>", "</li></ul>"),
        nested("<div/>", ""),
        reopened,
    ] {
        let markdown = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                freshet::dataplane::extract::extract_html(&html, "https://example.test/deep")
                    .markdown
            })
            .unwrap()
            .join()
            .expect("extraction of deeply nested HTML returned");
        assert!(
            markdown.contains("deep text"),
            "{}",
            &markdown[..markdown.len().min(200)]
        );
    }
}
