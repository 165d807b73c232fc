//! The answer: the JSON schema requested from the model, and the strict
//! parsing of what it answers (see the parent module's docs: values pass
//! through unjudged; judging them is the guard's job).

use serde::Deserialize;
use serde_json::{json, Value};

use super::MAX_CHANGES;
use crate::control::policy::{PolicyError, Proposal};
use crate::knobs::{Change, RenderMode};

/// The JSON schema every answer must follow.
///
/// `value` is a number (counts, milliseconds, shares), a string (a render
/// mode) or an object (the domain -> render mode map). Every object lists
/// all its properties as required and forbids others, as strict structured
/// output requires; `maxItems` and the like are left out because strict
/// mode does not support them everywhere; [`parse_answer`] checks them.
pub fn answer_schema() -> Value {
    let modes: Vec<&str> = RenderMode::ALL.iter().map(|m| m.as_str()).collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["changes", "rationale", "expected_gain"],
        "properties": {
            "changes": {
                "type": "array",
                "description": "Knob changes, most important first; empty to change nothing.",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["knob", "value", "reason"],
                    "properties": {
                        "knob": {"type": "string", "description": "A knob path from knob_specs, e.g. extract.slots"},
                        "value": {
                            "description": "The new value: a number, a render mode name, or an object of domain -> render mode",
                            "anyOf": [
                                {"type": "number"},
                                {"type": "string"},
                                {"type": "object", "additionalProperties": {"type": "string", "enum": modes}}
                            ]
                        },
                        "reason": {"type": "string", "description": "The numbers that justify this change"}
                    }
                }
            },
            "rationale": {"type": "string", "description": "Why, as a whole, in one or two sentences"},
            "expected_gain": {"type": "number", "description": "Expected relative goodput gain, e.g. 0.1 for +10 %; 0 when changing nothing"}
        }
    })
}

/// The answer as the schema states it; any other field is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    changes: Vec<AnswerChange>,
    rationale: String,
    expected_gain: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerChange {
    knob: String,
    value: Value,
    reason: String,
}

/// Whether every number in `v` is finite.
fn all_finite(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::Array(a) => a.iter().all(all_finite),
        Value::Object(m) => m.values().all(all_finite),
        _ => true,
    }
}

/// Parses the model's answer strictly against [`answer_schema`]: one JSON
/// object (whitespace around it allowed, nothing else), exactly the schema's
/// fields with their types, at most [`MAX_CHANGES`] changes, each value a
/// number, string or object, every number finite.
///
/// Values are *not* checked against the knobs: that is the guard's job, and
/// its verdicts are what the audit log records.
pub fn parse_answer(text: &str) -> Result<Proposal, PolicyError> {
    let malformed = |m: String| PolicyError::Malformed(m);
    let answer: Answer = serde_json::from_str(text.trim())
        .map_err(|e| malformed(format!("the answer does not follow the schema: {e}")))?;
    if answer.changes.len() > MAX_CHANGES {
        return Err(malformed(format!(
            "the answer has {} changes; at most {MAX_CHANGES} are accepted",
            answer.changes.len()
        )));
    }
    if !answer.expected_gain.is_finite() {
        return Err(malformed("expected_gain is not a finite number".into()));
    }
    let mut changes = Vec::with_capacity(answer.changes.len());
    for (i, c) in answer.changes.into_iter().enumerate() {
        let kind = match &c.value {
            Value::Number(_) | Value::String(_) | Value::Object(_) => None,
            Value::Null => Some("null"),
            Value::Bool(_) => Some("a boolean"),
            Value::Array(_) => Some("an array"),
        };
        if let Some(kind) = kind {
            return Err(malformed(format!(
                "change {i} (`{}`): value must be a number, a string or an object, got {kind}",
                c.knob
            )));
        }
        if !all_finite(&c.value) {
            return Err(malformed(format!(
                "change {i} (`{}`): value holds a non-finite number",
                c.knob
            )));
        }
        changes.push(Change {
            knob: c.knob,
            value: c.value,
            reason: c.reason,
        });
    }
    Ok(Proposal {
        changes,
        rationale: answer.rationale,
        expected_gain: Some(answer.expected_gain),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing_passes_values_through_and_refuses_off_schema_answers() {
        let p = parse_answer(
            r#" {"changes":[{"knob":"extract.slots","value":0,"reason":"r"},
                {"knob":"extract.render_mode","value":3,"reason":"r"},
                {"knob":"extract.render_overrides","value":{"a.sim.test":"remote"},"reason":"r"}],
               "rationale":"x","expected_gain":0.1} "#,
        )
        .unwrap();
        // Semantically wrong values come through untouched: the guard judges them.
        assert_eq!(p.changes[0].value, json!(0));
        assert_eq!(p.changes[1].value, json!(3));
        assert_eq!(p.expected_gain, Some(0.1));
        for (text, needle) in [
            ("", "EOF"),
            ("not json", "expected"),
            (
                r#"{"changes":[],"rationale":"x"}"#,
                "missing field `expected_gain`",
            ),
            (
                r#"{"changes":[],"rationale":"x","expected_gain":"0.1"}"#,
                "invalid type",
            ),
            (
                r#"{"changes":[],"rationale":"x","expected_gain":0,"guard":{}}"#,
                "unknown field `guard`",
            ),
            (
                r#"{"changes":[{"knob":"a","value":1,"reason":"r","force":true}],"rationale":"x","expected_gain":0}"#,
                "unknown field `force`",
            ),
            (
                r#"{"changes":[{"knob":"a","value":1}],"rationale":"x","expected_gain":0}"#,
                "missing field `reason`",
            ),
            (
                r#"{"changes":[{"knob":"a","value":[1],"reason":"r"}],"rationale":"x","expected_gain":0}"#,
                "an array",
            ),
            (
                r#"{"changes":[{"knob":"a","value":true,"reason":"r"}],"rationale":"x","expected_gain":0}"#,
                "a boolean",
            ),
            (
                r#"{"changes":[{"knob":"a","value":null,"reason":"r"}],"rationale":"x","expected_gain":0}"#,
                "null",
            ),
            (
                r#"{"changes":[{"knob":"a","value":1e400,"reason":"r"}],"rationale":"x","expected_gain":0}"#,
                "out of range",
            ),
            (
                r#"{"changes":[],"rationale":"x","expected_gain":0} trailing"#,
                "trailing",
            ),
            (
                r#"{"changes":[],"changes":[],"rationale":"x","expected_gain":0}"#,
                "duplicate field",
            ),
            (
                "```json\n{\"changes\":[],\"rationale\":\"x\",\"expected_gain\":0}\n```",
                "expected value",
            ),
        ] {
            match parse_answer(text) {
                Err(PolicyError::Malformed(m)) => assert!(m.contains(needle), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let many: Vec<Value> = (0..=MAX_CHANGES)
            .map(|i| json!({"knob": format!("k{i}"), "value": 1, "reason": ""}))
            .collect();
        let text = json!({"changes": many, "rationale": "", "expected_gain": 0}).to_string();
        assert!(
            matches!(parse_answer(&text), Err(PolicyError::Malformed(m)) if m.contains("at most 16"))
        );
    }

    #[test]
    fn the_schema_is_strict_shaped() {
        // Every object with properties forbids others and requires them all.
        fn walk(v: &Value) {
            if let Some(props) = v.get("properties").and_then(Value::as_object) {
                assert_eq!(v["additionalProperties"], json!(false), "{v}");
                let required: Vec<&str> = v["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                for k in props.keys() {
                    assert!(required.contains(&k.as_str()), "{k} not required");
                }
                props.values().for_each(walk);
            }
            if let Some(items) = v.get("items") {
                walk(items);
            }
        }
        walk(&answer_schema());
    }
}
