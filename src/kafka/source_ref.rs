//! Where a message came from, as the `source` string of tasks, dead letters
//! and index payloads: `kafka:<topic>:<partition>:<offset>`.

/// The `source` string of a message: `kafka:<topic>:<partition>:<offset>`
/// (topic names cannot hold `:`).
pub fn source_ref(topic: &str, partition: i32, offset: i64) -> String {
    format!("kafka:{topic}:{partition}:{offset}")
}

/// Topic, partition and offset of a [`source_ref`] string.
pub fn parse_source_ref(source: &str) -> Option<(String, i32, i64)> {
    let rest = source.strip_prefix("kafka:")?;
    let mut parts = rest.rsplitn(3, ':');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    (!topic.is_empty()).then(|| (topic.to_string(), partition, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_refs_round_trip() {
        let s = source_ref("db.public.articles-v2", 3, 1042);
        assert_eq!(s, "kafka:db.public.articles-v2:3:1042");
        assert_eq!(
            parse_source_ref(&s),
            Some(("db.public.articles-v2".to_string(), 3, 1042))
        );
        assert_eq!(parse_source_ref("embedded:0:17"), None);
        assert_eq!(parse_source_ref("kafka::1:2"), None);
        assert_eq!(parse_source_ref("kafka:t:x:2"), None);
    }
}
