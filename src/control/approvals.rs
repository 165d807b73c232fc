//! The approval queue (docs/ARCHITECTURE.md §4): a policy's change of a
//! knob whose guardrail says `approval = true` waits here for a person.
//!
//! - **Queued**: the guard's verdict is `awaiting_approval` (every other
//!   rule passed, steps clamped as usual); the controller records the
//!   proposal, then an `approval_queued` record whose sequence number is the
//!   approval's id, and remembers the decision as awaiting approval. One
//!   entry per knob at a time and at most [`MAX_PENDING`] entries: a policy
//!   that keeps proposing the same change (an LLM can) gets a refusal that
//!   names the waiting entry instead of filling the queue.
//! - **Approved** (`POST /v1/approvals/{id}/approve`, `freshet approvals
//!   approve ID --operator NAME`): the changes are checked again against the
//!   knobs in force now ([`Guard::check_approved`]: bounds, steps, cooldown;
//!   the approval rule is what the person satisfies) and must pass as they
//!   were queued, else the answer says why and the entry stays. Then they
//!   are applied like any change (audit record first, then the swap), with
//!   the operator as the actor and the proposing policy named in it, and
//!   handed to the controller, which bakes and judges them like its own
//!   changes (commit, ineffective or roll back).
//! - **Rejected** (`…/reject`, with the person's reason) and **expired**
//!   (after `[global] approval_expiry_s` of the guardrails) entries leave
//!   the queue with an `approval_rejected` / `approval_expired` record.
//!
//! Every change of the queue happens under the control state's change
//! lock, so an approval and an expiry (or two approvals) never both act on
//! one entry. The queue lives in memory: a restart of the service ends it
//! (the `started` record says the knobs begin again from the settings).

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Value};

use crate::control::audit::{AuditError, AuditLog, Event, EventKind, Record};
use crate::control::guard::{Guard, Verdict};
use crate::control::rollout::{self, ApplyError};
use crate::knobs::{Change, KnobDiff};
use crate::live::{LiveConfig, Snapshot, Swapped};

/// Entries the queue holds at most.
pub const MAX_PENDING: usize = 16;

/// One proposal waiting for a person.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// The id: the sequence number of its `approval_queued` record.
    pub id: u64,
    /// The sequence number of the proposal record it came from.
    pub proposal_seq: Option<u64>,
    /// When it was queued (Unix ms).
    pub queued_at_ms: u64,
    /// When it expires (Unix ms).
    pub expires_at_ms: u64,
    /// The knob version it was proposed on.
    pub from_version: u64,
    /// The policy that proposed it.
    pub policy: String,
    /// Who proposed it, as the audit log names actors.
    pub actor: Value,
    /// The changes, with the values the guard allowed.
    pub changes: Vec<Change>,
    /// The changes against the knobs they were proposed on.
    pub diff: Vec<KnobDiff>,
    /// The policy's rationale.
    pub rationale: String,
    /// The policy's expected relative goodput gain.
    pub expected_gain: Option<f64>,
    /// The observation summary the proposal was based on.
    #[serde(skip)]
    pub observation: Value,
}

/// What [`Approvals::queue`] needs to know about a proposal.
#[derive(Debug, Clone)]
pub struct Proposed<'a> {
    /// The snapshot it was proposed on.
    pub current: &'a Snapshot,
    /// Who proposed it.
    pub actor: &'a Value,
    /// The policy's name.
    pub policy: &'a str,
    /// The changes awaiting approval.
    pub changes: Vec<Change>,
    /// The policy's rationale.
    pub rationale: &'a str,
    /// The policy's expected gain.
    pub expected_gain: Option<f64>,
    /// The observation summary.
    pub observation: Value,
    /// The proposal record's sequence number.
    pub proposal_seq: Option<u64>,
    /// Now (Unix ms).
    pub now_ms: u64,
    /// Seconds until it expires.
    pub expiry_s: u64,
}

/// An approved change, applied and waiting for the controller to bake it.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The approval's id.
    pub id: u64,
    /// The sequence number of the `applied` record.
    pub applied_seq: u64,
    /// The snapshot before (what a rollback restores).
    pub before: Arc<Snapshot>,
    /// The version the change created.
    pub version: u64,
    /// The changes applied.
    pub changes: Vec<Change>,
    /// The policy that proposed them.
    pub policy: String,
    /// Its expected gain.
    pub expected_gain: Option<f64>,
    /// Every change reduces load ([`rollout::protective`]).
    pub protective: bool,
}

/// How an entry left the queue, for the controller's decision history.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Approved and applied: the controller bakes it.
    Approved(Adopted),
    /// A person said no.
    Rejected {
        /// The approval's id.
        id: u64,
    },
    /// Nobody decided in time.
    Expired {
        /// The approval's id.
        id: u64,
    },
}

/// Why an approval or a rejection was not done.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No such entry (any more).
    #[error("no pending approval #{0}: it was approved, rejected or expired, or never queued (`freshet audit tail` shows which)")]
    NotFound(u64),
    /// The guard no longer passes the changes as they were queued.
    #[error("approval #{id} no longer passes the guard as queued: {reason}; reject it, and the controller may propose again")]
    Refused {
        /// The approval's id.
        id: u64,
        /// Why.
        reason: String,
        /// The guard's verdicts now.
        verdicts: Vec<Verdict>,
    },
    /// Applying failed (audit log, conflict, invalid knobs).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The audit log could not be written.
    #[error("not done: the audit log cannot be written ({0})")]
    Audit(#[from] AuditError),
}

/// The queue (see the module docs).
#[derive(Debug, Default)]
pub struct Approvals {
    pending: Mutex<Vec<Pending>>,
    resolved: Mutex<Vec<Resolution>>,
}

impl Approvals {
    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resolve(&self, r: Resolution) {
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }

    /// The entries waiting, oldest first.
    pub fn list(&self) -> Vec<Pending> {
        self.pending().clone()
    }

    /// The id of the entry that holds a change of `knob`, if any.
    pub fn waiting_for(&self, knob: &str) -> Option<u64> {
        self.pending()
            .iter()
            .find(|p| p.changes.iter().any(|c| c.knob == knob))
            .map(|p| p.id)
    }

    /// Whether the queue has room for another entry.
    pub fn has_room(&self) -> bool {
        self.pending().len() < MAX_PENDING
    }

    /// Records and queues a proposal's changes; returns its id. The caller
    /// holds the change lock.
    pub fn queue(&self, audit: &AuditLog, p: Proposed<'_>) -> Result<u64, AuditError> {
        let proposed = p.current.knobs.apply_patch(&p.changes).ok();
        let diff = proposed
            .map(|k| p.current.knobs.diff(&k))
            .unwrap_or_default();
        let expires_at_ms = p.now_ms.saturating_add(p.expiry_s.saturating_mul(1000));
        let record = audit.append(
            EventKind::ApprovalQueued,
            Event {
                from_version: Some(p.current.version),
                actor: p.actor.clone(),
                observation: p.observation.clone(),
                verdict: json!({
                    "changes": p.changes,
                    "diff": diff,
                    "proposal_seq": p.proposal_seq,
                    "expires_at_ms": expires_at_ms,
                    "expected_gain": p.expected_gain,
                }),
                detail: p.rationale.to_string(),
                ..Default::default()
            },
        )?;
        self.pending().push(Pending {
            id: record.seq,
            proposal_seq: p.proposal_seq,
            queued_at_ms: p.now_ms,
            expires_at_ms,
            from_version: p.current.version,
            policy: p.policy.to_string(),
            actor: p.actor.clone(),
            changes: p.changes,
            diff,
            rationale: p.rationale.to_string(),
            expected_gain: p.expected_gain,
            observation: p.observation,
        });
        Ok(record.seq)
    }

    /// Expires the entries whose time is up at `now_ms`, each with an
    /// `approval_expired` record; returns how many. An entry whose record
    /// cannot be written stays (and is tried again next time). The caller
    /// holds the change lock.
    pub fn expire(&self, audit: &AuditLog, now_ms: u64) -> usize {
        let due: Vec<Pending> = self
            .pending()
            .iter()
            .filter(|p| p.expires_at_ms <= now_ms)
            .cloned()
            .collect();
        let mut expired = 0;
        for p in due {
            let written = audit.append(
                EventKind::ApprovalExpired,
                Event {
                    from_version: Some(p.from_version),
                    actor: json!({"approvals": "expiry"}),
                    verdict: json!({"approval": p.id, "changes": p.changes, "diff": p.diff}),
                    detail: format!(
                        "nobody approved or rejected it within {} s",
                        p.expires_at_ms.saturating_sub(p.queued_at_ms) / 1000
                    ),
                    ..Default::default()
                },
            );
            match written {
                Ok(_) => {
                    self.pending().retain(|q| q.id != p.id);
                    self.resolve(Resolution::Expired { id: p.id });
                    expired += 1;
                }
                Err(e) => crate::metrics::record_error("controller", "audit", &e),
            }
        }
        expired
    }

    /// Applies entry `id` for `operator`: checked again against the knobs
    /// in force, recorded (`applied`, the operator as actor), swapped in,
    /// and handed to the controller to bake. The caller holds the change
    /// lock and starts the knobs' cooldowns from the returned swap.
    pub fn approve(
        &self,
        live: &LiveConfig,
        audit: &AuditLog,
        guard: &Guard,
        since_change: impl Fn(&str) -> Option<u64>,
        id: u64,
        operator: &str,
    ) -> Result<(Record, Swapped), ApprovalError> {
        let p = self
            .pending()
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or(ApprovalError::NotFound(id))?;
        let current = live.load();
        let verdicts = guard.check_approved(&p.changes, &current.knobs, since_change);
        let refusal = verdicts.iter().zip(&p.changes).find_map(|(v, c)| match v {
            Verdict::Accepted { value, .. } if *value == c.value => None,
            Verdict::Accepted { value, .. } | Verdict::Clamped { value, .. } => Some(format!(
                "{} would now be {value}, not the {} that was queued (the knobs moved since)",
                c.knob, c.value
            )),
            Verdict::Rejected { reason, .. } | Verdict::AwaitingApproval { reason, .. } => {
                Some(format!("{}: {reason}", c.knob))
            }
        });
        if let Some(reason) = refusal {
            return Err(ApprovalError::Refused {
                id,
                reason,
                verdicts,
            });
        }
        let knobs = current
            .knobs
            .apply_patch(&p.changes)
            .map_err(ApplyError::from)?;
        let protective = rollout::protective(&p.changes, &current.knobs);
        let (record, swapped) = rollout::apply(
            live,
            audit,
            &current,
            knobs,
            EventKind::Applied,
            Event {
                actor: json!({"operator": operator, "approval": id, "proposed_by": p.actor}),
                observation: p.observation.clone(),
                verdict: json!({"approval": id, "proposal_seq": p.proposal_seq, "verdicts": verdicts}),
                detail: format!("approved #{id}: {}", p.rationale),
                ..Default::default()
            },
        )?;
        self.pending().retain(|q| q.id != id);
        self.resolve(Resolution::Approved(Adopted {
            id,
            applied_seq: record.seq,
            before: current,
            version: swapped.new.version,
            changes: p.changes,
            policy: p.policy,
            expected_gain: p.expected_gain,
            protective,
        }));
        Ok((record, swapped))
    }

    /// Drops entry `id` with `operator`'s `reason` (an `approval_rejected`
    /// record). The caller holds the change lock.
    pub fn reject(
        &self,
        audit: &AuditLog,
        id: u64,
        operator: &str,
        reason: &str,
    ) -> Result<Record, ApprovalError> {
        let p = self
            .pending()
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or(ApprovalError::NotFound(id))?;
        let record = audit.append(
            EventKind::ApprovalRejected,
            Event {
                from_version: Some(p.from_version),
                actor: json!({"operator": operator}),
                verdict: json!({"approval": id, "changes": p.changes, "diff": p.diff}),
                detail: reason.to_string(),
                ..Default::default()
            },
        )?;
        self.pending().retain(|q| q.id != id);
        self.resolve(Resolution::Rejected { id });
        Ok(record)
    }

    /// How entries left the queue since the last call, in order (the
    /// controller's history and bakes follow them).
    pub fn take_resolved(&self) -> Vec<Resolution> {
        std::mem::take(&mut *self.resolved.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
