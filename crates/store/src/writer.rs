//! Group commit. One task owns all writes: it takes every request waiting at the moment (up to
//! `max_batch`), commits them in one transaction and only then answers each caller. Durability is
//! never traded away — a caller hears "committed" only after the database said so — but many calls
//! share one fsync.
//!
//! A failed COMMIT whose outcome is unknown (an fsync error, a connection lost during COMMIT)
//! poisons the writer: nobody knows what is on disk, so the gateway refuses all further writes (and
//! reads, which need a log record), `/livez` fails and the orchestrator restarts the process. A
//! database that cannot take writes for now (disk full) fails the batch as unavailable and the next
//! batch tries again; a statement failing for one request fails that request alone (the backend
//! applies the rest of the batch without it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signaalpoort_core::access_log::{DecisionCode, RecordDraft};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    Backend, ChangeCursor, Committed, Effect, Mutation, Outcome, StoreError, WriteRequest,
};

struct Job {
    request: WriteRequest,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

#[derive(Clone)]
pub(crate) struct WriterHandle {
    jobs: mpsc::Sender<Job>,
    poisoned: Arc<AtomicBool>,
}

impl WriterHandle {
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(crate) async fn submit(&self, request: WriteRequest) -> Result<Committed, StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::WriterPoisoned);
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        // Once sent, the writer commits the job whether or not this future is still polled.
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

pub(crate) fn spawn(
    backend: Arc<dyn Backend>,
    max_batch: usize,
    changes: watch::Sender<ChangeCursor>,
) -> WriterHandle {
    let (jobs, mut queue) = mpsc::channel::<Job>(max_batch.max(1) * 8);
    let poisoned = Arc::new(AtomicBool::new(false));
    let poison = poisoned.clone();
    tokio::spawn(async move {
        let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
        while queue.recv_many(&mut batch, max_batch.max(1)).await > 0 {
            let (requests, replies): (Vec<_>, Vec<_>) =
                batch.drain(..).map(|j| (j.request, j.reply)).unzip();
            let touched = touched_streams(&requests);
            match backend.commit_batch(requests).await {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                    if touched != (false, false) {
                        changes.send_modify(|c| {
                            c.notification += u64::from(touched.0);
                            c.alert += u64::from(touched.1);
                        });
                    }
                }
                Err(err) => {
                    let fatal = matches!(err, StoreError::CommitFailed(_));
                    tracing::error!(error = %err, batch = replies.len(), fatal, "write batch failed; failing its calls");
                    for reply in replies {
                        let _ = reply.send(Err(match &err {
                            StoreError::CommitFailed(_) => StoreError::WriterPoisoned,
                            StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
                            other => StoreError::Corrupt(other.to_string()),
                        }));
                    }
                    if fatal {
                        poison.store(true, Ordering::Release);
                        // Fail everything still queued, then stop.
                        queue.close();
                        while let Some(job) = queue.recv().await {
                            let _ = job.reply.send(Err(StoreError::WriterPoisoned));
                        }
                        return;
                    }
                }
            }
        }
    });
    WriterHandle { jobs, poisoned }
}

/// Whether a batch may have created notifications or alerts, to wake the right watchers.
fn touched_streams(requests: &[WriteRequest]) -> (bool, bool) {
    // A recorded consent can make pending notifications deliverable: watchers re-read too.
    let notifications = requests.iter().any(|r| {
        !matches!(
            r.mutation,
            Mutation::None | Mutation::DeliverNotifications { .. }
        )
    });
    let alerts = requests
        .iter()
        .any(|r| !r.alerts.is_empty() || r.record.flagged_for_review);
    (notifications, alerts)
}

/// The record as it is committed: the server's draft, corrected by what the state change found.
/// Shared by both backends so the log reads the same on either.
pub fn finalise_record(
    draft: &RecordDraft,
    outcome: &Outcome,
    replayed: bool,
    status_of: crate::StatusOf,
) -> RecordDraft {
    let mut record = draft.clone();
    match outcome {
        Err(rejection) => {
            // Every refused call is a denial in the log, whatever its code (NOT_FOUND included).
            record.decision = DecisionCode::Deny;
            record.status_code = status_of(rejection);
            record.reason = rejection.log_reason();
        }
        Ok(Effect::SignalRegistered { signal, .. }) => {
            record.object_id = signal.id.clone();
        }
        Ok(Effect::HouseholdDeclared { household_id, .. }) => {
            record.household_id = household_id.clone();
        }
        // The retention statement: the purge's own record names the cut, and the tree's
        // checkpoints then vouch for it (a head removed without one is reported by verify).
        Ok(Effect::LogPurged { anchor_seq, .. }) if *anchor_seq > 0 => {
            record.object_id = signaalpoort_core::access_log::retention_object_id(*anchor_seq);
        }
        Ok(_) => {}
    }
    if replayed {
        record.reason = format!("{}+IDEMPOTENT_REPLAY", record.reason);
    }
    record
}
