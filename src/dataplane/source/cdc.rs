//! Debezium change events -> tasks.
//!
//! A table's Debezium topic carries the standard change-event envelope, with
//! or without the JSON converter's schema wrapper (`{"schema": …, "payload":
//! {…}}`):
//!
//! | `op` | meaning | task |
//! | --- | --- | --- |
//! | `c` create, `u` update, `r` snapshot read | the row as it is now (`after`) | `document` (replaces the row's old chunks) |
//! | `d` delete | the row as it was (`before`, or the message key) | `delete` |
//! | tombstone (null value) | log compaction marker after a delete | `delete` (by the message key) |
//!
//! A [`TableMapping`] names the id column (also read from the message key,
//! which is all a tombstone carries), the text columns (joined by blank
//! lines, in order), an optional title and URL column, and the payload
//! columns copied into every chunk's `metadata`. The document id is
//! `<prefix><id>` (prefix `<table>:` by default) so that ids of different
//! tables never collide. A row whose text columns are all null has nothing
//! to index: it becomes a delete of the row's earlier chunks.
//!
//! Freshness is measured from the envelope's `ts_ms` (else `source.ts_ms`).
//!
//! Anything that does not fit (not JSON, not an envelope, an op other than
//! c/u/r/d, an event of another table, a missing id, a text column holding
//! an object) is a [`CdcError`] whose message says what and where; the
//! source dead-letters it. Truncates (`t`) and logical messages (`m`) are
//! refused the same way: deleting a whole table's documents is left to a
//! person.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::dataplane::task::Task;
use crate::settings::TableMapping;

/// Why an event could not be turned into a task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CdcError {
    /// The value is not (UTF-8) JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The value is JSON but not a Debezium change event of this table.
    #[error("not a Debezium change event for table `{table}`: {why}")]
    WrongSchema {
        /// The mapped table.
        table: String,
        /// What does not fit.
        why: String,
    },
    /// An `op` freshet does not handle.
    #[error("unsupported Debezium op `{op}` for table `{table}`: {why}")]
    UnknownOp {
        /// The op as sent.
        op: String,
        /// The mapped table.
        table: String,
        /// What freshet handles instead.
        why: String,
    },
    /// The row does not fit the table mapping.
    #[error("row of table `{table}` does not fit its mapping: {why}")]
    Row {
        /// The mapped table.
        table: String,
        /// What is wrong.
        why: String,
    },
}

impl CdcError {
    /// The `error_type` of the dead letter: `parse` for bytes that are not
    /// JSON, `invalid` for everything else.
    pub fn class(&self) -> &'static str {
        match self {
            CdcError::NotJson(_) => "parse",
            _ => "invalid",
        }
    }
}

/// One mapped table, ready to decode its topic's events.
#[derive(Debug, Clone)]
pub struct CdcTable {
    table: String,
    prefix: String,
    mapping: TableMapping,
}

/// Unwraps the JSON converter's schema wrapper, if there is one.
fn unwrap_schema(value: Value) -> Value {
    match value {
        Value::Object(mut map)
            if map.contains_key("payload") && map.contains_key("schema") && map.len() == 2 =>
        {
            map.remove("payload").unwrap_or(Value::Null)
        }
        other => other,
    }
}

impl CdcTable {
    /// The decoder for `table` (the `[kafka.tables.<table>]` key).
    pub fn new(table: &str, mapping: &TableMapping) -> CdcTable {
        CdcTable {
            table: table.to_string(),
            prefix: mapping.prefix(table),
            mapping: mapping.clone(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The topic the table's events arrive on.
    pub fn topic(&self) -> &str {
        &self.mapping.topic
    }

    fn schema_error(&self, why: impl Into<String>) -> CdcError {
        CdcError::WrongSchema {
            table: self.table.clone(),
            why: why.into(),
        }
    }

    fn row_error(&self, why: impl Into<String>) -> CdcError {
        CdcError::Row {
            table: self.table.clone(),
            why: why.into(),
        }
    }

    /// Turns one message (key and value; `None` value = tombstone) into a task.
    pub fn decode(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Task, CdcError> {
        let Some(bytes) = value else {
            return self.delete_by_key(key, None, "a tombstone");
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| CdcError::NotJson(format!("the value is not UTF-8 ({e})")))?;
        if text.trim().is_empty() {
            return Err(CdcError::NotJson(
                "the value is empty (a tombstone has a null value, not an empty one)".into(),
            ));
        }
        let parsed: Value =
            serde_json::from_str(text).map_err(|e| CdcError::NotJson(e.to_string()))?;
        let envelope = match unwrap_schema(parsed) {
            Value::Null => return self.delete_by_key(key, None, "a tombstone"),
            Value::Object(map) => map,
            other => {
                return Err(self.schema_error(format!(
                    "the value is a {}, not an object with `op`, `before`, `after`",
                    kind(&other)
                )))
            }
        };
        let op = match envelope.get("op") {
            Some(Value::String(op)) => op.clone(),
            Some(other) => {
                return Err(self.schema_error(format!("`op` is a {}, not a string", kind(other))))
            }
            None => {
                let mut keys: Vec<&str> = envelope.keys().map(String::as_str).collect();
                keys.truncate(8);
                return Err(self.schema_error(format!(
                    "no `op` field (fields: {}); is the topic written by Debezium without an unwrapping transform?",
                    keys.join(", ")
                )));
            }
        };
        self.check_source(&envelope)?;
        let ts_ms = ts_ms(&envelope);
        match op.as_str() {
            "c" | "u" | "r" => {
                let row = match envelope.get("after") {
                    Some(Value::Object(row)) => row,
                    Some(Value::Null) | None => {
                        return Err(self.schema_error(format!("op `{op}` without an `after` row")))
                    }
                    Some(other) => {
                        return Err(self.schema_error(format!(
                            "`after` is a {}, not an object",
                            kind(other)
                        )))
                    }
                };
                self.document(row, ts_ms)
            }
            "d" => match envelope.get("before") {
                Some(Value::Object(row)) if row.contains_key(&self.mapping.id_field) => {
                    Ok(Task::Delete {
                        id: format!("{}{}", self.prefix, self.id_of(row, "`before`")?),
                        ts_ms,
                    })
                }
                Some(Value::Object(_)) | Some(Value::Null) | None => {
                    self.delete_by_key(key, ts_ms, "a delete without the id in `before`")
                }
                Some(other) => Err(self.schema_error(format!(
                    "`before` is a {}, not an object",
                    kind(other)
                ))),
            },
            "t" => Err(CdcError::UnknownOp {
                op,
                table: self.table.clone(),
                why: "a truncate would delete every document of the table; freshet leaves that to a person (delete the documents, or re-snapshot)".into(),
            }),
            _ => Err(CdcError::UnknownOp {
                op,
                table: self.table.clone(),
                why: "freshet handles c, u, r (upsert) and d (delete)".into(),
            }),
        }
    }

    /// The event's `source` block must name this table when it names one.
    fn check_source(&self, envelope: &Map<String, Value>) -> Result<(), CdcError> {
        let Some(Value::Object(source)) = envelope.get("source") else {
            return Ok(());
        };
        let Some(Value::String(table)) = source.get("table") else {
            return Ok(());
        };
        let str_of = |k: &str| source.get(k).and_then(Value::as_str);
        let mut names = vec![table.clone()];
        if let Some(schema) = str_of("schema") {
            names.push(format!("{schema}.{table}"));
        }
        if let Some(db) = str_of("db") {
            names.push(format!("{db}.{table}"));
            if let Some(schema) = str_of("schema") {
                names.push(format!("{db}.{schema}.{table}"));
            }
        }
        if names.iter().any(|n| n == &self.table) {
            Ok(())
        } else {
            Err(self.schema_error(format!(
                "the event is for table `{}` but topic `{}` is mapped to `{}`",
                names.last().cloned().unwrap_or_default(),
                self.mapping.topic,
                self.table
            )))
        }
    }

    fn delete_by_key(
        &self,
        key: Option<&[u8]>,
        ts_ms: Option<u64>,
        what: &str,
    ) -> Result<Task, CdcError> {
        let id = self.id_from_key(key).map_err(|why| {
            self.row_error(format!("{what} must carry the row id in its key: {why}"))
        })?;
        Ok(Task::Delete {
            id: format!("{}{id}", self.prefix),
            ts_ms,
        })
    }

    /// The id in a message key: a JSON object (optionally schema-wrapped)
    /// holding the id column, a bare JSON string/number, or raw text.
    fn id_from_key(&self, key: Option<&[u8]>) -> Result<String, String> {
        let key = key.filter(|k| !k.is_empty()).ok_or("the key is empty")?;
        let text = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_string())?;
        match serde_json::from_str::<Value>(text).map(unwrap_schema) {
            Ok(Value::Object(map)) => self.id_of(&map, "the key").map_err(|e| e.to_string()),
            Ok(Value::String(s)) if !s.is_empty() => Ok(s),
            Ok(Value::Number(n)) => Ok(n.to_string()),
            Ok(other) => Err(format!("the key is a {}", kind(&other))),
            Err(_) => Ok(text.to_string()),
        }
    }

    fn id_of(&self, row: &Map<String, Value>, whence: &str) -> Result<String, CdcError> {
        let field = &self.mapping.id_field;
        match row.get(field) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::String(_)) => Err(self.row_error(format!(
                "id column `{field}` in {whence} is empty or longer than 512 bytes"
            ))),
            Some(other) => Err(self.row_error(format!(
                "id column `{field}` in {whence} is a {}, expected a string or number",
                kind(other)
            ))),
            None => Err(self.row_error(format!("id column `{field}` is not in {whence}"))),
        }
    }

    /// A text column's value: strings as they are, numbers and booleans as
    /// text, null as nothing; a missing column or a nested value is an error.
    fn text_of(&self, row: &Map<String, Value>, field: &str) -> Result<Option<String>, CdcError> {
        match row.get(field) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(Value::Null) => Ok(None),
            Some(other) => Err(self.row_error(format!(
                "column `{field}` holds a {}, expected text",
                kind(other)
            ))),
            None => Err(self.row_error(format!(
                "column `{field}` is not in the row (columns: {})",
                row.keys().take(12).cloned().collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    fn document(&self, row: &Map<String, Value>, ts_ms: Option<u64>) -> Result<Task, CdcError> {
        let id = format!("{}{}", self.prefix, self.id_of(row, "`after`")?);
        let mut parts = Vec::new();
        for field in &self.mapping.text_fields {
            if let Some(text) = self.text_of(row, field)? {
                if !text.trim().is_empty() {
                    parts.push(text);
                }
            }
        }
        if parts.is_empty() {
            // Nothing left to index: the row's earlier chunks must go.
            return Ok(Task::Delete { id, ts_ms });
        }
        let optional = |field: &str| -> Result<String, CdcError> {
            if field.is_empty() {
                return Ok(String::new());
            }
            Ok(self.text_of(row, field)?.unwrap_or_default())
        };
        let title = optional(&self.mapping.title_field)?;
        let url = optional(&self.mapping.url_field)?;
        let mut metadata = BTreeMap::new();
        for field in &self.mapping.payload_fields {
            match row.get(field) {
                Some(v) => {
                    metadata.insert(field.clone(), v.clone());
                }
                None => {
                    return Err(
                        self.row_error(format!("payload column `{field}` is not in the row"))
                    )
                }
            }
        }
        let task = Task::Document {
            id,
            text: parts.join("\n\n"),
            title,
            url,
            ts_ms,
            metadata,
        };
        // The same bounds as a task written by hand (text and metadata size,
        // id length): a row is untrusted input too.
        task.validate().map_err(|why| self.row_error(why))?;
        Ok(task)
    }
}

fn ts_ms(envelope: &Map<String, Value>) -> Option<u64> {
    envelope.get("ts_ms").and_then(Value::as_u64).or_else(|| {
        envelope
            .get("source")
            .and_then(|s| s.get("ts_ms"))
            .and_then(Value::as_u64)
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "JSON null",
        Value::Bool(_) => "JSON boolean",
        Value::Number(_) => "JSON number",
        Value::String(_) => "JSON string",
        Value::Array(_) => "JSON array",
        Value::Object(_) => "JSON object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> CdcTable {
        CdcTable::new(
            "public.articles",
            &TableMapping {
                topic: "pg.public.articles".into(),
                id_field: "id".into(),
                id_prefix: None,
                title_field: "title".into(),
                text_fields: vec!["title".into(), "body".into()],
                url_field: "url".into(),
                payload_fields: vec!["author".into()],
            },
        )
    }

    fn row(id: i64, body: Value) -> Value {
        json!({"id": id, "title": "Hello", "body": body, "url": null, "author": "ann"})
    }

    fn event(op: &str, before: Value, after: Value) -> Vec<u8> {
        json!({"op": op, "before": before, "after": after, "ts_ms": 1700000000123u64,
               "source": {"db": "shop", "schema": "public", "table": "articles", "ts_ms": 1700000000000u64}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn creates_updates_and_reads_become_documents() {
        let t = table();
        for op in ["c", "u", "r"] {
            let task = t
                .decode(
                    Some(b"{\"id\":7}"),
                    Some(&event(op, Value::Null, row(7, json!("Body text.")))),
                )
                .unwrap();
            assert_eq!(
                task,
                Task::Document {
                    id: "public.articles:7".into(),
                    text: "Hello\n\nBody text.".into(),
                    title: "Hello".into(),
                    url: String::new(),
                    ts_ms: Some(1700000000123),
                    metadata: [("author".to_string(), json!("ann"))].into_iter().collect(),
                },
                "op {op}"
            );
        }
    }

    #[test]
    fn a_row_over_the_task_bounds_is_refused_like_a_task() {
        let t = table();
        // 60 KiB in a payload column: every chunk would carry it.
        let mut big = row(7, json!("Body text."));
        big["author"] = json!("a".repeat(60 * 1024));
        let err = t
            .decode(None, Some(&event("c", Value::Null, big)))
            .unwrap_err();
        assert!(matches!(err, CdcError::Row { .. }), "{err}");
        assert!(err.to_string().contains("metadata is larger"), "{err}");
        let huge = row(8, json!("word ".repeat(3 * 1024 * 1024)));
        let err = t
            .decode(None, Some(&event("c", Value::Null, huge)))
            .unwrap_err();
        assert!(err.to_string().contains("text is larger"), "{err}");
    }

    #[test]
    fn schema_wrapped_events_and_keys_are_unwrapped() {
        let t = table();
        let wrapped = json!({"schema": {"type": "struct"}, "payload": serde_json::from_slice::<Value>(&event("d", row(9, json!("x")), Value::Null)).unwrap()});
        let task = t
            .decode(None, Some(wrapped.to_string().as_bytes()))
            .unwrap();
        assert_eq!(
            task,
            Task::Delete {
                id: "public.articles:9".into(),
                ts_ms: Some(1700000000123)
            }
        );
        let key = json!({"schema": {"type": "struct"}, "payload": {"id": 9}}).to_string();
        assert_eq!(
            t.decode(Some(key.as_bytes()), None).unwrap(),
            Task::Delete {
                id: "public.articles:9".into(),
                ts_ms: None
            },
            "a tombstone deletes by its key"
        );
        assert_eq!(
            t.decode(Some(b"\"abc\""), None).unwrap(),
            Task::Delete {
                id: "public.articles:abc".into(),
                ts_ms: None
            }
        );
        let no_before = event("d", Value::Null, Value::Null);
        assert_eq!(
            t.decode(Some(b"{\"id\": 3}"), Some(&no_before)).unwrap(),
            Task::Delete {
                id: "public.articles:3".into(),
                ts_ms: Some(1700000000123)
            }
        );
    }

    #[test]
    fn a_row_without_text_deletes_its_document() {
        let t = table();
        let mut r = row(4, Value::Null);
        r["title"] = Value::Null;
        assert_eq!(
            t.decode(None, Some(&event("u", Value::Null, r))).unwrap(),
            Task::Delete {
                id: "public.articles:4".into(),
                ts_ms: Some(1700000000123)
            }
        );
    }

    #[test]
    fn bad_events_say_why() {
        let t = table();
        let err = |v: &[u8]| t.decode(Some(b"{\"id\":1}"), Some(v)).unwrap_err();
        assert!(matches!(err(b"{not json"), CdcError::NotJson(_)));
        assert_eq!(err(b"{not json").class(), "parse");
        assert!(err(b"{\"id\": 1, \"name\": \"x\"}")
            .to_string()
            .contains("no `op` field"));
        assert!(err(b"[1,2]").to_string().contains("JSON array"));
        let e = err(&event("x", Value::Null, row(1, json!("b"))));
        assert!(matches!(e, CdcError::UnknownOp { .. }), "{e}");
        assert_eq!(e.class(), "invalid");
        assert!(err(&event("t", Value::Null, Value::Null))
            .to_string()
            .contains("truncate"));
        assert!(err(&event("c", Value::Null, Value::Null))
            .to_string()
            .contains("without an `after`"));
        assert!(
            err(&event("c", Value::Null, row(1, json!({"nested": true}))))
                .to_string()
                .contains("holds a JSON object")
        );
        let mut no_id = row(1, json!("b"));
        no_id.as_object_mut().unwrap().remove("id");
        assert!(err(&event("c", Value::Null, no_id))
            .to_string()
            .contains("id column `id` is not in"));
        let mut no_body = row(1, json!("b"));
        no_body.as_object_mut().unwrap().remove("body");
        assert!(err(&event("c", Value::Null, no_body))
            .to_string()
            .contains("column `body` is not in the row"));
        let other_table = json!({"op": "c", "after": row(1, json!("b")), "source": {"schema": "public", "table": "users"}});
        assert!(err(other_table.to_string().as_bytes())
            .to_string()
            .contains("mapped to `public.articles`"));
        let tomb = t.decode(None, None).unwrap_err();
        assert!(tomb.to_string().contains("key is empty"), "{tomb}");
        assert!(t.decode(Some(b"{\"id\":1}"), Some(b"")).is_err());
        assert!(t.decode(Some(b"{\"id\":1}"), Some(&[0xff, 0xfe])).is_err());
    }
}
