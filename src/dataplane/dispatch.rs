//! Take a slot, spawn, reap: the one dispatch loop of the slotted stages
//! (search, extract, embed, index), with supervision.
//!
//! A stage waits for one of its slots **before** it spawns the work, so the
//! number of tasks is bounded and waiting for a slot pushes back on the
//! channel before it. Finished workers are reaped while the stage waits for
//! input ([`Dispatch::next`]), not only at shutdown.
//!
//! Supervision: a worker that panics takes only its own items down. The
//! stage keeps serving; the panic is counted (`freshet_stage_panics_total`
//! by stage) and logged (rate-limited), and every item the worker held is
//! dead-lettered with error type `panic`, so nothing disappears silently.
//! The worker's acknowledgement shares were dropped while it unwound, which
//! leaves their messages unfinished: a durable source delivers them again
//! after a restart (at-least-once, as for any crash), and the dead letter
//! says why.

use std::collections::HashMap;
use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinSet};

use super::events::{InternalEvent, LetterClass, SlotsSet, StagePanicked};
use super::flow::{DeadLetters, Letter};
use super::Stage;
use crate::live::{SlotPermit, Slots};

/// The running workers of one stage.
#[derive(Debug)]
pub(crate) struct Dispatch {
    stage: Stage,
    letters: DeadLetters,
    running: JoinSet<()>,
    held: HashMap<Id, Vec<Letter>>,
}

impl Dispatch {
    /// No worker running yet; panicked workers' items go to `letters`.
    pub fn new(stage: Stage, letters: DeadLetters) -> Dispatch {
        Dispatch {
            stage,
            letters,
            running: JoinSet::new(),
            held: HashMap::new(),
        }
    }

    /// The next input item, reaping workers that finish meanwhile; `None`
    /// when the input is closed.
    pub async fn next<T>(&mut self, rx: &mut mpsc::Receiver<T>) -> Option<T> {
        loop {
            tokio::select! {
                biased;
                Some(done) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    self.settle(done).await;
                }
                item = rx.recv() => return item,
            }
        }
    }

    /// Waits for one of `slots`, then runs `work` with the slot; `held` is
    /// what to dead-letter if the worker panics.
    pub async fn spawn<F, Fut>(&mut self, slots: &Slots, held: Vec<Letter>, work: F)
    where
        F: FnOnce(SlotPermit) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let permit = slots.acquire().await;
        let handle = self.running.spawn(work(permit));
        self.held.insert(handle.id(), held);
        while let Some(done) = self.running.try_join_next_with_id() {
            self.settle(done).await;
        }
    }

    /// Waits for every worker (the input is closed).
    pub async fn drain(mut self) {
        while let Some(done) = self.running.join_next_with_id().await {
            self.settle(done).await;
        }
    }

    async fn settle(&mut self, done: Result<(Id, ()), JoinError>) {
        let error = match done {
            Ok((id, ())) => {
                self.held.remove(&id);
                return;
            }
            Err(e) => e,
        };
        let held = self.held.remove(&error.id()).unwrap_or_default();
        if !error.is_panic() {
            // Cancelled (shutdown): the items' shares were dropped undone,
            // so their messages are redelivered.
            return;
        }
        let message = panic_message(error.into_panic());
        StagePanicked {
            stage: self.stage,
            message: &message,
            items: held.len(),
        }
        .emit();
        for letter in held {
            let why = format!("{} worker panicked: {message}", self.stage.as_str());
            self.letters
                .write(self.stage, LetterClass::Panic, why, letter)
                .await;
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Marks one unit of `stage`'s work as in flight (until the guard drops)
/// and reports the stage's current slot limit: what every stage does once
/// it holds a slot.
pub fn occupy(stage: Stage, slots: &Slots) -> crate::metrics::InFlight {
    SlotsSet {
        stage,
        limit: slots.limit(),
    }
    .emit();
    crate::metrics::InFlight::new(stage.as_str())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dataplane::dlq::Dlq;
    use crate::dataplane::events::Counters;
    use crate::metrics::{Labels, TapRecorder};

    fn letter(n: u32) -> Letter {
        Letter {
            task: Arc::new(serde_json::json!({"type": "url", "url": format!("http://t/{n}")})),
            source: format!("test:0:{n}"),
        }
    }

    #[test]
    fn a_panicking_worker_is_counted_dead_lettered_and_the_stage_keeps_serving() {
        let dir = std::env::temp_dir().join(format!(
            "freshet-dispatch-{}-{}",
            std::process::id(),
            crate::dataplane::task::now_ms()
        ));
        let dlq = Arc::new(Dlq::open(&dir).unwrap());
        let counters = Arc::new(Counters::default());
        let letters = DeadLetters {
            dlq: dlq.clone(),
            counters: counters.clone(),
        };
        let recorder = TapRecorder::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let served = ::metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let slots = Slots::new(2);
                let (tx, mut rx) = mpsc::channel(8);
                let (out_tx, mut out_rx) = mpsc::channel(8);
                for n in 1..=4u32 {
                    tx.send(n).await.unwrap();
                }
                drop(tx);
                let mut dispatch = Dispatch::new(Stage::Embed, letters);
                while let Some(n) = dispatch.next(&mut rx).await {
                    let out_tx = out_tx.clone();
                    dispatch
                        .spawn(&slots, vec![letter(n)], move |_permit| async move {
                            assert_ne!(n, 2, "worker {n} fails");
                            out_tx.send(n).await.unwrap();
                        })
                        .await;
                }
                dispatch.drain().await;
                drop(out_tx);
                let mut served = Vec::new();
                while let Some(n) = out_rx.recv().await {
                    served.push(n);
                }
                served.sort_unstable();
                served
            })
        });
        assert_eq!(served, vec![1, 3, 4], "the stage served on after the panic");
        let (records, _) = Dlq::read_all(&dir.join("dlq.jsonl")).unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].stage, "embed");
        assert_eq!(records[0].error_type, "panic");
        assert_eq!(records[0].source, "test:0:2");
        assert!(
            records[0].message.contains("worker 2 fails"),
            "{}",
            records[0].message
        );
        assert_eq!(Counters::get(&counters.dead_letters), 1);
        let labels: Labels = [
            ("stage".to_string(), "embed".to_string()),
            ("error_type".to_string(), "panic".to_string()),
        ]
        .into();
        let snap = recorder.0.snapshot();
        assert_eq!(
            snap.counters
                .get(&(crate::metrics::STAGE_PANICS_TOTAL.to_string(), labels)),
            Some(&1)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
