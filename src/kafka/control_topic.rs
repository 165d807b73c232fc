//! The control topic's Kafka side: the compacted one-partition topic, a
//! producer for its records, a reader that reads it from the beginning, and
//! the member of the group `<group_id>.control` whose holder of partition 0
//! runs the controller. What the records mean (knob snapshots, audit
//! mirror, start markers) is `service::cluster`'s business; this module
//! only moves keys and values.
//!
//! **Leadership.** The leader flag is set while this instance holds
//! partition 0 of the control group. Revocation clears it before the
//! partition moves, and [`ControlRunning::stop`] leaves the group at once,
//! so a survivor takes over within a rebalance (a crashed instance: within
//! the session timeout).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset};

use super::{
    assign_all, client_config, ensure_topic, log_error, log_line, IfNoPartitions, KafkaError,
    LogContext,
};
use crate::metrics;
use crate::settings::KafkaSettings;

/// How long a knob snapshot may wait in the producer's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The control topic, connected but not yet read.
pub struct ControlTopic {
    topic: String,
    producer: FutureProducer<LogContext>,
    reader: BaseConsumer<LogContext>,
    member: BaseConsumer<LeaderCtx>,
    leader: Arc<AtomicBool>,
}

impl std::fmt::Debug for ControlTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlTopic")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Sends records to the control topic; cheap to clone.
#[derive(Clone)]
pub struct ControlPublisher {
    topic: String,
    producer: FutureProducer<LogContext>,
}

impl std::fmt::Debug for ControlPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ControlPublisher {
    /// Queues one record (`None`: a tombstone); a failure is logged.
    pub fn publish(&self, key: &str, value: Option<&[u8]>) {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Err((e, _)) = self.producer.send_result(record) {
            tracing::warn!(error = %e, key, "cannot publish to the control topic");
        }
    }

    /// Sends one record and waits for the broker's acknowledgement.
    pub async fn send(&self, key: &str, value: &[u8]) -> Result<(), KafkaError> {
        let record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&self.topic).key(key).payload(value);
        self.producer
            .send(record, SEND_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(source, _)| KafkaError::Produce {
                topic: self.topic.clone(),
                source,
            })
    }

    /// Waits up to 5 s for queued records to reach the broker.
    pub async fn flush(&self) {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
    }
}

/// The reading thread of a running control topic.
#[derive(Debug)]
pub struct ControlRunning {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlRunning {
    /// Leaves the control group (leadership moves at once) and stops reading.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl ControlTopic {
    /// Creates `k.control_topic` if missing (compacted, one partition),
    /// clears `leader`, and connects a producer, a reader and a member of
    /// the control group for `instance`.
    pub async fn open(
        k: &KafkaSettings,
        instance: &str,
        leader: Arc<AtomicBool>,
    ) -> Result<ControlTopic, KafkaError> {
        let topic = k.control_topic.clone();
        ensure_topic(k, &topic, 1, true).await?;
        set_leader(&leader, false);
        let client = |what: &'static str| {
            move |source| KafkaError::Client {
                what,
                brokers: k.brokers.clone(),
                source,
            }
        };
        let producer: FutureProducer<LogContext> = client_config(k, &format!("{instance}-control"))
            .set("acks", "all")
            .set("linger.ms", "0")
            // Few records; one per batch keeps tansu 0.6 (which mishandles
            // reads that start inside a multi-record batch) reading them all.
            .set("batch.num.messages", "1")
            .create_with_context(LogContext)
            .map_err(client("control topic producer"))?;
        let mut reader_config = client_config(k, &format!("{instance}-control-reader"));
        reader_config
            .set("group.id", format!("{}.control-reader", k.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50");
        let reader: BaseConsumer<LogContext> = reader_config
            .create_with_context(LogContext)
            .map_err(client("control topic reader"))?;
        let mut member_config = client_config(k, &format!("{instance}-control-member"));
        member_config
            .set("group.id", format!("{}.control", k.group_id))
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", k.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (k.session_timeout_ms / 3).max(100).to_string(),
            );
        if k.static_membership {
            // Static membership, as for the input topics: a restarted
            // instance takes its place (and its leadership) back at once.
            member_config.set("group.instance.id", format!("{}.control", k.instance_id));
        }
        let member: BaseConsumer<LeaderCtx> = member_config
            .create_with_context(LeaderCtx {
                leader: leader.clone(),
            })
            .map_err(client("control group member"))?;
        Ok(ControlTopic {
            topic,
            producer,
            reader,
            member,
            leader,
        })
    }

    /// A sender of records to the topic.
    pub fn publisher(&self) -> ControlPublisher {
        ControlPublisher {
            topic: self.topic.clone(),
            producer: self.producer.clone(),
        }
    }

    /// Reads the topic from its beginning: publishes `marker` (key, value)
    /// once the reader is assigned, then hands every record to `handle`
    /// until it returns true (it has read what it waited for, usually the
    /// marker) or `timeout` passes. Returns whether `handle` finished.
    pub async fn catch_up<F>(
        self,
        marker: (String, Vec<u8>),
        timeout: Duration,
        mut handle: F,
    ) -> Result<(ControlTopic, bool), KafkaError>
    where
        F: FnMut(&str, Option<&[u8]>) -> bool + Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            assign_all(
                &self.reader,
                &self.topic,
                Offset::Beginning,
                IfNoPartitions::AssignPartitionZero,
            )?;
            self.publisher().publish(&marker.0, Some(&marker.1));
            let deadline = Instant::now() + timeout;
            let mut done = false;
            while !done && Instant::now() < deadline {
                if let Some(Ok(m)) = self.reader.poll(Duration::from_millis(100)) {
                    done = handle(&key_of(&m), m.payload());
                }
            }
            Ok((self, done))
        })
        .await
        .map_err(|e| KafkaError::Thread(std::io::Error::other(e)))?
    }

    /// Joins the control group and reads on in a thread, handing every
    /// record to `handle`, until [`ControlRunning::stop`].
    pub fn run<F>(self, mut handle: F) -> Result<ControlRunning, KafkaError>
    where
        F: FnMut(&str, Option<&[u8]>) + Send + 'static,
    {
        self.member
            .subscribe(&[&self.topic])
            .map_err(|source| KafkaError::Subscribe {
                topics: format!("[{:?}]", self.topic),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("freshet-control".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    // Group membership: serves the rebalance callbacks.
                    let _ = self.member.poll(Duration::ZERO);
                    match self.reader.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => handle(&key_of(&m), m.payload()),
                        Some(Err(e)) => metrics::record_error(
                            "source",
                            "upstream",
                            &format_args!("control topic: {e}"),
                        ),
                        None => {}
                    }
                }
                set_leader(&self.leader, false);
                self.member.unsubscribe();
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    let _ = self.member.poll(Duration::from_millis(50));
                    if self
                        .member
                        .assignment()
                        .map(|a| a.count() == 0)
                        .unwrap_or(true)
                    {
                        break;
                    }
                }
            })
            .map_err(KafkaError::Thread)?;
        Ok(ControlRunning {
            stop,
            thread: Some(thread),
        })
    }
}

fn key_of(m: &impl Message) -> String {
    m.key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default()
}

/// The control group member's context: keeps the leader flag.
struct LeaderCtx {
    leader: Arc<AtomicBool>,
}

impl ClientContext for LeaderCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_error(&error, reason);
    }
}

fn set_leader(flag: &AtomicBool, on: bool) {
    let was = flag.swap(on, Ordering::AcqRel);
    metrics::gauge!(metrics::CONTROLLER_LEADER).set(if on { 1.0 } else { 0.0 });
    if was != on {
        tracing::info!(leader = on, "controller leadership changed");
    }
}

impl ConsumerContext for LeaderCtx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) if tpl.elements().iter().any(|e| e.partition() == 0) => {
                set_leader(&self.leader, false)
            }
            Rebalance::Error(_) => set_leader(&self.leader, false),
            _ => {}
        }
    }
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Membership is all this consumer is for: read nothing.
            let _ = consumer.pause(tpl);
            if tpl.elements().iter().any(|e| e.partition() == 0) {
                set_leader(&self.leader, true);
            }
        }
    }
}
