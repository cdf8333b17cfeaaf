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
use signaalpoort_store::{NotificationKind, NotificationRow, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

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
                    let rows = gw
                        .store
                        .read()
                        .notifications_after(&caller.agency.oin, req.after_cursor, limit)
                        .await?;
                    let mut cursor = req.after_cursor;
                    let mut out = Vec::new();
                    let mut subjects = Vec::new();
                    let mut flagged = false;
                    for row in rows {
                        cursor = row.cursor;
                        if let Some(d) = deliverable(&gw, &receiver, &row).await? {
                            subjects.extend(d.subjects);
                            flagged |= d.flagged;
                            out.push(d.notification);
                        }
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
                    Ok(pb::ListNotificationsResponse {
                        notifications: out,
                        cursor,
                    })
                },
            )
            .await
    }
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
    notification: pb::Notification,
    subjects: Vec<SubjectPseudonym>,
    basis: signaalpoort_core::Basis,
    rule: &'static str,
    flagged: bool,
}

/// Decides one stored notification for the receiver, now. `None`: not delivered, and the receiver
/// learns nothing (no basis, or the basis does not cover the other agency).
async fn deliverable(
    gw: &Gateway,
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
    let consents = store.consents_concerning(&row.recipient_subject).await?;
    let state = consent_state(&consents, &receiver.caller.agency, receiver.purpose, now);
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
    let other = match &row.other {
        Some(m) => {
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
            let Some(d) = disclose(&permit, &receiver.caller.agency, &consents, &other, now) else {
                return Ok(None);
            };
            subjects.push(m.subject);
            Some(disclosure_to_pb(&d))
        }
        None => None,
    };
    Ok(Some(Delivery {
        notification: pb::Notification {
            cursor: row.cursor,
            kind: kind as i32,
            your_signal_id: row.recipient_signal_id.clone(),
            other,
            occurred_at: Some(ts(row.occurred_at)),
            basis: basis_to_pb(permit.basis()) as i32,
            coordination_event: row.coordination_event.clone().unwrap_or_default(),
            household_id: row.household_id.clone().unwrap_or_default(),
        },
        subjects,
        basis: permit.basis(),
        rule: permit.rule(),
        flagged: permit.flagged_for_review(),
    }))
}

/// The stream loop: deliver from the cursor, then wait for changes, heartbeats, the maximum age or
/// shutdown. Ends with UNAVAILABLE (clients reconnect with their last cursor).
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
    loop {
        // Mark the current change generation as seen before reading, so a commit that lands
        // during the read wakes us again.
        changes.borrow_and_update();
        loop {
            let rows = gw
                .store
                .read()
                .notifications_after(&receiver.caller.agency.oin, cursor, PAGE)
                .await
                .map_err(|e| ApiError::Store(e).into_status())?;
            let full = rows.len() == PAGE as usize;
            for row in rows {
                let delivery = deliverable(gw, receiver, &row)
                    .await
                    .map_err(|e| ApiError::Store(e).into_status())?;
                cursor = row.cursor;
                if let Some(d) = delivery {
                    // Logged before it is sent: a disclosure without a record never leaves.
                    let record = delivery_record(gw, receiver, &d);
                    gw.store
                        .log_only(record, Vec::new())
                        .await
                        .map_err(|e| ApiError::Store(e).into_status())?;
                    gw.metrics.log_appended();
                    let msg = pb::WatchNotificationsResponse {
                        notification: Some(d.notification),
                        cursor,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if !full {
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
        object_id: format!("notification:{}", d.notification.cursor),
    }
}
