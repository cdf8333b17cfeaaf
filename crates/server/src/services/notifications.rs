//! NotificationService: match notifications, streamed or polled. Each notification is checked
//! against the policy when it is delivered, and each delivery on a stream is written to the access
//! log before it is sent.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use signaalpoort_api::v1 as pb;
use signaalpoort_api::v1::notification_service_server::NotificationService;
use signaalpoort_core::access_log::{DecisionCode, RecordDraft};
use signaalpoort_core::consent::consent_state;
use signaalpoort_core::involvement::{disclose, OtherInvolvement};
use signaalpoort_core::policy::{self, Action, Decision, PolicyRequest};
use signaalpoort_core::{Justification, Purpose, SubjectPseudonym};
use signaalpoort_store::{
    Effect, Mutation, NotificationKind, NotificationRow, StoreError, WriteRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::basis::Facts;
use crate::call::Caller;
use crate::convert::*;
use crate::error::{ApiError, Violations};
use crate::gateway::{Gateway, StreamCounter};

pub struct Notifications(pub Arc<Gateway>);

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchNotificationsResponse, Status>> + Send>>;

const PAGE: u32 = 100;

/// What the receiver asked for, fixed for the life of a stream.
#[derive(Clone)]
struct Receiver {
    caller: Caller,
    purpose: Purpose,
    justification: Option<Justification>,
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    type WatchNotificationsStream = WatchStream;

    async fn watch_notifications(
        &self,
        request: Request<pb::WatchNotificationsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.0
            .unary(
                Action::ReceiveNotifications,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let receiver =
                        validate(&call, &caller, req.purpose, &req.safety_justification)?;
                    let slot = StreamCounter::acquire(&gw, &caller.agency.oin)?;
                    let trace = (call.now(), req.after_cursor);
                    let (tx, rx) = mpsc::channel(16);
                    tokio::spawn(async move {
                        let _slot = slot;
                        let _gauge = gw.metrics.stream_opened();
                        if let Err(status) = run_stream(&gw, &receiver, trace.1, &tx).await {
                            let _ = tx.send(Err(status)).await;
                        }
                    });
                    Ok(Box::pin(ReceiverStream::new(rx)) as WatchStream)
                },
            )
            .await
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        self.0
            .unary(
                Action::ReceiveNotifications,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let receiver =
                        validate(&call, &caller, req.purpose, &req.safety_justification)?;
                    let limit = match req.page_size {
                        0 => PAGE,
                        n if n > 500 => {
                            return Err(ApiError::field("page_size", "must be at most 500"))
                        }
                        n => n,
                    };
                    let _turn = gw.deliveries.lock(&caller.agency.oin).await;
                    let batch = collect(&gw, &receiver, req.after_cursor, limit).await?;
                    let mut subjects = Vec::new();
                    let mut flagged = false;
                    for d in batch.delivered.iter().chain(&batch.to_number) {
                        subjects.extend(d.subjects.iter().copied());
                        flagged |= d.flagged;
                    }
                    call.set_subjects(&subjects);
                    if flagged {
                        // One safety-basis delivery makes the whole call a safety-basis call.
                        call.decide(
                            &caller,
                            Some(receiver.purpose),
                            true,
                            &signaalpoort_core::consent::ConsentState::None,
                            receiver.justification.as_ref(),
                        )?;
                    }
                    let mut cursor = batch.cursor;
                    let mut out: Vec<pb::Notification> = batch
                        .delivered
                        .into_iter()
                        .map(|d| d.notification)
                        .collect();
                    if !batch.to_number.is_empty() {
                        // Numbered in the same transaction as this call's record.
                        let ids = batch.to_number.iter().map(|d| d.id).collect();
                        let mutation = Mutation::DeliverNotifications {
                            recipient: caller.agency.oin.clone(),
                            ids,
                        };
                        let (numbered, previous_last) = match call.execute(mutation, None).await? {
                            Effect::NotificationsDelivered {
                                numbered,
                                previous_last,
                            } => (numbered, previous_last),
                            other => {
                                return Err(ApiError::Internal(format!(
                                    "unexpected effect {other:?}"
                                )))
                            }
                        };
                        // Another replica numbered some in between: send none of the new ones now
                        // (the next read returns all in order), so no cursor is ever skipped.
                        if previous_last == batch.last_numbered {
                            for (mut d, (_, seq)) in batch.to_number.into_iter().zip(numbered) {
                                cursor = cursor.max(seq);
                                d.notification.cursor = seq;
                                out.push(d.notification);
                            }
                        }
                    }
                    call.fits(pb::ListNotificationsResponse {
                        notifications: out,
                        cursor,
                    })
                },
            )
            .await
    }
}

/// What one read can give a receiver: notifications delivered before (numbered, cursor above the
/// read's) that are still deliverable, in cursor order, and pending ones deliverable now, to be
/// numbered. `cursor` is the highest numbered one looked at (skipped ones included).
struct Batch {
    delivered: Vec<Delivery>,
    to_number: Vec<Delivery>,
    cursor: u64,
    /// The receiver's last numbered cursor when the read began.
    last_numbered: u64,
}

/// How many pending rows one read looks at, at most, to find deliverable ones.
const PENDING_SCAN: u32 = 2_000;

async fn collect(
    gw: &Gateway,
    receiver: &Receiver,
    after: u64,
    limit: u32,
) -> Result<Batch, StoreError> {
    let store = gw.store.read();
    let mut facts = Facts::new(store);
    let recipient = &receiver.caller.agency.oin;
    let mut batch = Batch {
        delivered: Vec::new(),
        to_number: Vec::new(),
        cursor: after,
        last_numbered: store.last_notification_cursor(recipient).await?,
    };
    for row in store
        .numbered_notifications(recipient, after, limit)
        .await?
    {
        batch.cursor = batch.cursor.max(row.seq.unwrap_or_default());
        if let Some(d) = deliverable(gw, &mut facts, receiver, &row).await? {
            batch.delivered.push(d);
        }
    }
    let full = |b: &Batch| (b.delivered.len() + b.to_number.len()) as u32 >= limit;
    let mut after_id = 0;
    let mut scanned = 0;
    // Matches numbered in this pass: their MATCH_ENDED, held behind them, goes out right after.
    let mut matched_now: std::collections::HashSet<(String, String)> = Default::default();
    while !full(&batch) && scanned < PENDING_SCAN {
        let rows = store
            .pending_notifications(recipient, after_id, PAGE)
            .await?;
        let Some(last) = rows.last() else { break };
        after_id = last.id;
        scanned += rows.len() as u32;
        for mut row in rows {
            if full(&batch) {
                break;
            }
            let pair = row
                .other
                .as_ref()
                .map(|m| (row.recipient_signal_id.clone(), m.signal_id.clone()));
            if row.kind == NotificationKind::MatchEnded
                && pair.as_ref().is_some_and(|p| matched_now.contains(p))
            {
                row.match_delivered = true;
            }
            if let Some(d) = deliverable(gw, &mut facts, receiver, &row).await? {
                if row.kind == NotificationKind::Match {
                    matched_now.extend(pair);
                }
                batch.to_number.push(d);
            }
        }
    }
    Ok(batch)
}

/// Stream-level checks: fields, and that the role may receive notifications for the purpose at all.
fn validate(
    call: &crate::call::Call,
    caller: &Caller,
    purpose: i32,
    justification: &str,
) -> Result<Receiver, ApiError> {
    let mut v = Violations::default();
    let purpose = required_purpose(&mut v, "purpose", purpose);
    let justification = v
        .check(
            "safety_justification",
            Justification::parse_optional(justification),
        )
        .flatten();
    call.set_purpose(purpose);
    v.finish()?;
    let Some(purpose) = purpose else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    // Each notification is decided when delivered; refuse at once what none could ever pass.
    let rule = policy::rule_for(
        caller.agency.role,
        Action::ReceiveNotifications,
        Some(purpose),
    )
    .map_err(ApiError::denied)?;
    call.set_reason(rule.name);
    Ok(Receiver {
        caller: caller.clone(),
        purpose,
        justification,
    })
}

struct Delivery {
    /// The stored notification's id (not shown): what gets numbered.
    id: u64,
    notification: pb::Notification,
    subjects: Vec<SubjectPseudonym>,
    basis: signaalpoort_core::Basis,
    rule: &'static str,
    flagged: bool,
}

/// Decides one stored notification for the receiver, now: its own signal active, the call-level
/// basis on that signal's person, and for MATCH and MATCH_ENDED the other involvement disclosed by
/// the one rule for its own person (a MATCH only while the other signal is active, a MATCH_ENDED
/// only after its MATCH was delivered). `None`: not delivered, and the receiver learns nothing.
async fn deliverable(
    gw: &Gateway,
    facts: &mut Facts<'_>,
    receiver: &Receiver,
    row: &NotificationRow,
) -> Result<Option<Delivery>, StoreError> {
    let now = gw.now();
    let store = gw.store.read();
    let involved = match store.signal(&row.recipient_signal_id).await? {
        Some(s) => s.agency == receiver.caller.agency.oin && s.is_active(now),
        None => false,
    };
    if !involved {
        return Ok(None);
    }
    let own = facts.of(&row.recipient_subject).await?;
    let state = consent_state(
        &own.consents,
        &own.person,
        &receiver.caller.agency,
        receiver.purpose,
        now,
    );
    let decision = policy::decide(&PolicyRequest {
        role: receiver.caller.agency.role,
        action: Action::ReceiveNotifications,
        purpose: Some(receiver.purpose),
        involved,
        consent: &state,
        justification: receiver.justification.as_ref(),
    });
    let Decision::Allow(permit) = decision else {
        return Ok(None);
    };
    let kind = match row.kind {
        NotificationKind::Match => pb::NotificationKind::Match,
        NotificationKind::MatchEnded => pb::NotificationKind::MatchEnded,
        NotificationKind::Coordination => pb::NotificationKind::Coordination,
        NotificationKind::CoordinationReminder => pb::NotificationKind::CoordinationReminder,
    };
    let mut subjects = vec![row.recipient_subject];
    let mut basis = (permit.basis(), permit.consent_id().map(str::to_owned));
    let other = match (&row.other, row.kind) {
        (Some(m), NotificationKind::Match | NotificationKind::MatchEnded) => {
            let still_active = match row.kind {
                NotificationKind::Match => store
                    .signal(&m.signal_id)
                    .await?
                    .is_some_and(|s| s.is_active(now)),
                _ => row.match_delivered,
            };
            if !still_active {
                return Ok(None);
            }
            let Some(agency) = gw.registry.get(&m.agency).cloned() else {
                return Ok(None);
            };
            let other = OtherInvolvement {
                signal_id: m.signal_id.clone(),
                agency,
                contact: m.contact.clone(),
                category: m.category,
                since: m.since,
                level: m.level,
            };
            let f = facts.of(&m.subject).await?;
            let Some(d) = disclose(
                &permit,
                &receiver.caller.agency,
                &f.person,
                &f.consents,
                &other,
                now,
            ) else {
                return Ok(None);
            };
            basis = (d.basis, d.consent_id.clone());
            subjects.push(m.subject);
            Some(disclosure_to_pb(&d))
        }
        (None, NotificationKind::Match | NotificationKind::MatchEnded) => return Ok(None),
        _ => None,
    };
    Ok(Some(Delivery {
        id: row.id,
        notification: pb::Notification {
            cursor: row.seq.unwrap_or_default(),
            kind: kind as i32,
            your_signal_id: row.recipient_signal_id.clone(),
            other,
            occurred_at: Some(ts(row.occurred_at)),
            basis: basis_to_pb(basis.0) as i32,
            coordination_event: row.coordination_event.clone().unwrap_or_default(),
            household_id: row.household_id.clone().unwrap_or_default(),
        },
        subjects,
        basis: basis.0,
        rule: permit.rule(),
        flagged: permit.flagged_for_review(),
    }))
}

/// The stream loop: deliver from the cursor, then wait for changes, heartbeats, the maximum age or
/// shutdown. Ends with UNAVAILABLE (clients reconnect with their last cursor). The cursor — also on
/// heartbeats — moves only with deliveries.
async fn run_stream(
    gw: &Arc<Gateway>,
    receiver: &Receiver,
    mut cursor: u64,
    tx: &mpsc::Sender<Result<pb::WatchNotificationsResponse, Status>>,
) -> Result<(), Status> {
    let limits = &gw.config.limits;
    let mut changes = gw.store.changes();
    let mut shutdown = gw.shutdown.clone();
    let max_age = tokio::time::sleep(Duration::from_secs(limits.watch_max_age_secs));
    tokio::pin!(max_age);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(limits.watch_heartbeat_secs));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    let store_failed = |e: StoreError| ApiError::Store(e).into_status();
    loop {
        // Mark the current change generation as seen before reading, so a commit that lands
        // during the read wakes us again.
        changes.borrow_and_update();
        loop {
            let turn = gw.deliveries.lock(&receiver.caller.agency.oin).await;
            let batch = collect(gw, receiver, cursor, PAGE)
                .await
                .map_err(store_failed)?;
            let more = (batch.delivered.len() + batch.to_number.len()) as u32 >= PAGE;
            let mut gap = false;
            for d in batch.delivered {
                // Logged before it is sent: a disclosure without a record never leaves.
                gw.store
                    .log_only(delivery_record(gw, receiver, &d), Vec::new())
                    .await
                    .map_err(store_failed)?;
                gw.metrics.log_appended();
                cursor = d.notification.cursor;
                if !send(tx, d.notification, cursor).await {
                    return Ok(());
                }
            }
            cursor = cursor.max(batch.cursor);
            let mut last_numbered = batch.last_numbered;
            for mut d in batch.to_number {
                let committed = gw
                    .store
                    .execute(WriteRequest {
                        mutation: Mutation::DeliverNotifications {
                            recipient: receiver.caller.agency.oin.clone(),
                            ids: vec![d.id],
                        },
                        idempotency: None,
                        record: delivery_record(gw, receiver, &d),
                        alerts: Vec::new(),
                    })
                    .await
                    .map_err(store_failed)?;
                gw.metrics.log_appended();
                let seq = match committed.outcome {
                    Ok(Effect::NotificationsDelivered {
                        numbered,
                        previous_last,
                    }) if previous_last == last_numbered => numbered.first().map(|(_, seq)| *seq),
                    _ => None,
                };
                // Numbered out of turn by another replica: re-read, so the cursor never skips.
                let Some(seq) = seq else {
                    gap = true;
                    break;
                };
                last_numbered = seq;
                cursor = seq;
                d.notification.cursor = seq;
                if !send(tx, d.notification, cursor).await {
                    return Ok(());
                }
            }
            drop(turn);
            if !(more || gap) {
                break;
            }
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("the gateway is shutting down; reconnect with your last cursor"));
                }
            }
            _ = heartbeat.tick() => {
                if tx.send(Ok(pb::WatchNotificationsResponse { notification: None, cursor })).await.is_err() {
                    return Ok(());
                }
            }
            () = &mut max_age => {
                return Err(Status::unavailable(format!("the stream reached its maximum age; reconnect with after_cursor={cursor}")));
            }
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                return Err(Status::unavailable(format!("the gateway is shutting down; reconnect with after_cursor={cursor}")));
            }
            () = tx.closed() => return Ok(()),
        }
    }
}

async fn send(
    tx: &mpsc::Sender<Result<pb::WatchNotificationsResponse, Status>>,
    notification: pb::Notification,
    cursor: u64,
) -> bool {
    tx.send(Ok(pb::WatchNotificationsResponse {
        notification: Some(notification),
        cursor,
    }))
    .await
    .is_ok()
}

fn delivery_record(gw: &Gateway, receiver: &Receiver, d: &Delivery) -> RecordDraft {
    let mut subjects: Vec<String> = d.subjects.iter().map(|s| s.to_hex()).collect();
    subjects.sort();
    subjects.dedup();
    RecordDraft {
        time: gw.now(),
        agency_oin: receiver.caller.agency.oin.to_string(),
        role: Some(receiver.caller.agency.role),
        actor_id: receiver.caller.actor.as_str().to_owned(),
        action: "DeliverNotification".to_owned(),
        subjects,
        household_id: d.notification.household_id.clone(),
        purpose: Some(receiver.purpose),
        basis: Some(d.basis),
        decision: DecisionCode::Allow,
        reason: d.rule.to_owned(),
        status_code: 0,
        request_id: String::new(),
        cert_fingerprint: String::new(),
        justification: if d.flagged {
            receiver
                .justification
                .as_ref()
                .map(|j| j.as_str().to_owned())
                .unwrap_or_default()
        } else {
            String::new()
        },
        flagged_for_review: d.flagged,
        trace_id: String::new(),
        span_id: String::new(),
        object_id: format!("notification:{}", d.id),
    }
}
