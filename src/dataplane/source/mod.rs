//! Sources: where tasks come from.
//!
//! - [`embedded`]: an in-process queue fed by JSON Lines files, stdin, the
//!   demo's built-in stream, or `POST /v1/ingest`.
//! - [`kafka`]: a consumer group over task topics and Debezium topics
//!   ([`cdc`] turns change events into tasks), committing offsets only over
//!   finished work.
//!
//! Every message is registered with the [`AckTracker`] before it enters the
//! pipeline, so `source.max_in_flight` bounds the unfinished work and commit
//! watermarks advance only over finished messages.
//!
//! Every source implements [`Source`], which is all the service needs to
//! run one: the runtime keeps one list of them and drains them together
//! (stop intake, drain the pipeline, finish). A new kind of source starts
//! with its own constructor (it knows its settings) and then implements the
//! trait.

pub mod cdc;
pub mod embedded;
#[cfg(feature = "kafka")]
pub mod kafka;

use std::collections::BTreeMap;

use crate::dataplane::ack::AckTracker;

/// A running source of tasks, as the runtime drives it.
///
/// Drain order: [`stop_intake`](Source::stop_intake) on every source, then
/// the pipeline drains (its input closes once every sender is gone), then
/// [`finish`](Source::finish) on every source.
#[async_trait::async_trait]
pub trait Source: Send + Sync + std::fmt::Debug {
    /// A short name for logs and look-ups: `embedded`, `kafka`.
    fn name(&self) -> &'static str;

    /// The tracker of this source's messages (counts, commit watermarks).
    fn tracker(&self) -> &AckTracker;

    /// Stops handing new messages to the pipeline and lets go of its
    /// sender once nothing more comes. A source whose senders are held by
    /// its callers (the embedded queue's handles) stops when they are
    /// dropped; for it this does nothing.
    fn stop_intake(&self);

    /// After the pipeline drained: commits what finished and releases the
    /// connections (Kafka: leaves the group). Idempotent.
    async fn finish(&self);

    /// Partitions assigned now, as (topic, partition); empty for a source
    /// that has no notion of them.
    fn assignment(&self) -> Vec<(String, i32)> {
        Vec::new()
    }

    /// The last computed lag (messages not yet finished) per partition.
    fn lag(&self) -> BTreeMap<(String, i32), i64> {
        BTreeMap::new()
    }

    /// Messages this source dead-lettered itself (input that is not a task).
    fn dead_lettered(&self) -> u64;
}
