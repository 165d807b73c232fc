//! Sources: where tasks come from.
//!
//! - [`embedded`]: an in-process queue fed by JSON Lines files, stdin, the
//!   demo's built-in stream, or `POST /v1/ingest`.
//! - [`kafka`]: a consumer group over task topics and Debezium topics
//!   ([`cdc`] turns change events into tasks), committing offsets only over
//!   finished work.
//!
//! Every message is registered with the [`AckTracker`](super::ack::AckTracker)
//! before it enters the pipeline, so `source.max_in_flight` bounds the
//! unfinished work and commit watermarks advance only over finished messages.

pub mod cdc;
pub mod embedded;
pub mod kafka;
