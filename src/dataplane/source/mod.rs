//! Sources: where tasks come from.
//!
//! - [`embedded`]: an in-process queue fed by JSON Lines files, stdin, the
//!   demo's built-in stream, or `POST /v1/ingest`.
//!
//! Every message is registered with the [`AckTracker`](super::ack::AckTracker)
//! before it enters the pipeline, so `source.max_in_flight` bounds the
//! unfinished work and commit watermarks advance only over finished messages.

pub mod embedded;
