//! AuditService: the access log for security and privacy officers. Auditors only; their own calls
//! are logged like any other.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::Stream;
use signaalpoort_api::v1 as pb;
use signaalpoort_api::v1::audit_service_server::AuditService;
use signaalpoort_core::access_log::{AccessRecord, DecisionCode};
use signaalpoort_core::consent::ConsentState;
use signaalpoort_core::policy::Action;
use signaalpoort_core::{Bsn, Oin};
use signaalpoort_store::{AlertKind, LogFilter};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::*;
use crate::error::{ApiError, Violations};
use crate::gateway::{Gateway, StreamCounter};
use crate::report;

pub struct Audit(pub Arc<Gateway>);

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportAccessLogResponse, Status>> + Send>>;
type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::WatchAlertsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for Audit {
    type ExportAccessLogStream = ExportStream;
    type WatchAlertsStream = AlertStream;

    async fn query_access_log(
        &self,
        request: Request<pb::QueryAccessLogRequest>,
    ) -> Result<Response<pb::QueryAccessLogResponse>, Status> {
        self.0
            .unary(
                Action::QueryAccessLog,
                request,
                |call, caller, req| async move {
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    let gw = call.gateway().clone();
                    let mut v = Violations::default();
                    let mut filter = LogFilter::default();
                    if !req.bsn.is_empty() {
                        if let Some(bsn) = v.check("bsn", Bsn::parse(&req.bsn)) {
                            let subject = gw.pseudonyms.pseudonymise(bsn);
                            call.set_subjects(&[subject]);
                            filter.subject = Some(subject);
                        }
                    }
                    filter.household_id = non_empty(&req.household_id);
                    if !req.agency_oin.is_empty() {
                        filter.agency_oin = v
                            .check("agency_oin", Oin::parse(&req.agency_oin))
                            .map(|o| o.to_string());
                    }
                    filter.actor_id = non_empty(&req.actor_id);
                    filter.action = non_empty(&req.action);
                    filter.reason = non_empty(&req.reason);
                    filter.decision = match pb::Decision::try_from(req.decision) {
                        Ok(pb::Decision::Allow) => Some(DecisionCode::Allow),
                        Ok(pb::Decision::Deny) => Some(DecisionCode::Deny),
                        Ok(pb::Decision::Unspecified) => None,
                        Err(_) => {
                            v.add("decision", "is not a Decision value");
                            None
                        }
                    };
                    if let Some(range) = &req.time {
                        filter.from = range
                            .start
                            .as_ref()
                            .and_then(|t| v.check("time.start", from_ts(t)));
                        filter.until = range
                            .end
                            .as_ref()
                            .and_then(|t| v.check("time.end", from_ts(t)));
                    }
                    filter.flagged_only = req.flagged_only;
                    let limit = match req.page_size {
                        0 => 100,
                        n if n > 1000 => {
                            v.add("page_size", "must be at most 1000");
                            1000
                        }
                        n => n,
                    };
                    let after = if req.page_token.is_empty() {
                        0
                    } else {
                        v.check(
                            "page_token",
                            req.page_token
                                .parse::<u64>()
                                .map_err(|_| "is not a token from a previous response"),
                        )
                        .unwrap_or(0)
                    };
                    v.finish()?;
                    let rows = gw.store.read().query_log(&filter, after, limit + 1).await?;
                    // A page holds as many records as fit the message limit (with room for the
                    // token); the rest follow on the next page, so a documented page size never fails.
                    let budget = gw.config.limits.max_message_bytes.saturating_sub(256);
                    let mut records = Vec::new();
                    let mut size = 0;
                    for row in rows.iter().take(limit as usize) {
                        let record = record_to_pb(row);
                        let len = prost::Message::encoded_len(&record) + 8;
                        if !records.is_empty() && size + len > budget {
                            break;
                        }
                        size += len;
                        records.push(record);
                    }
                    let more = rows.len() > records.len();
                    let last_seq = records.last().map(|r| r.seq);
                    call.fits(pb::QueryAccessLogResponse {
                        records,
                        next_page_token: match (more, last_seq) {
                            (true, Some(seq)) => seq.to_string(),
                            _ => String::new(),
                        },
                    })
                },
            )
            .await
    }

    async fn export_access_log(
        &self,
        request: Request<pb::ExportAccessLogRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        self.0
            .unary(
                Action::ExportAccessLog,
                request,
                |call, caller, req| async move {
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    let gw = call.gateway().clone();
                    let from = req.from_seq.max(1);
                    // A fixed range: the head as it was when the call came in.
                    let (head, _) = gw.store.read().head().await?;
                    let to = if req.to_seq == 0 {
                        head
                    } else {
                        req.to_seq.min(head)
                    };
                    call.set_object(&format!("seq:{from}-{to}"));
                    let (tx, rx) = mpsc::channel(4);
                    tokio::spawn(async move {
                        let mut next = from;
                        while next <= to {
                            let page = match gw.store.read().export_log(next, to, 2000).await {
                                Ok(p) => p,
                                Err(e) => {
                                    let _ = tx.send(Err(ApiError::Store(e).into_status())).await;
                                    return;
                                }
                            };
                            let Some(last) = page.last().map(|r| r.seq) else {
                                break;
                            };
                            for record in page {
                                let line = match record.export_line() {
                                    Ok(l) => l,
                                    Err(e) => {
                                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                                        return;
                                    }
                                };
                                if tx
                                    .send(Ok(pb::ExportAccessLogResponse { line }))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            next = last + 1;
                        }
                    });
                    Ok(Box::pin(ReceiverStream::new(rx)) as ExportStream)
                },
            )
            .await
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        self.0
            .unary(
                Action::ReadCheckpoints,
                request,
                |call, caller, req| async move {
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    let gw = call.gateway().clone();
                    let limit = match req.limit {
                        0 => 100,
                        n => n.min(1000),
                    };
                    let cps = gw.store.read().checkpoints(limit).await?;
                    Ok(pb::ListCheckpointsResponse {
                        checkpoints: cps
                            .iter()
                            .map(|c| pb::Checkpoint {
                                tree_size: c.tree_size,
                                head_hash: hex::encode(c.root),
                                time: None,
                                signature: c
                                    .signature_lines()
                                    .into_iter()
                                    .find(|l| l.starts_with(&format!("\u{2014} {} ", c.origin)))
                                    .unwrap_or_default(),
                                note: c.to_text(),
                            })
                            .collect(),
                    })
                },
            )
            .await
    }

    async fn prove_access_record(
        &self,
        request: Request<pb::ProveAccessRecordRequest>,
    ) -> Result<Response<pb::ProveAccessRecordResponse>, Status> {
        self.0
            .unary(
                Action::ProveAccessRecord,
                request,
                |call, caller, req| async move {
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    let gw = call.gateway().clone();
                    call.set_object(&format!("seq:{}", req.seq));
                    // Permission before existence: another agency's record reads as absent.
                    let not_yours = || ApiError::NotFound("no such access record of yours".into());
                    let record = gw
                        .store
                        .read()
                        .export_log(req.seq.max(1), req.seq.max(1), 1)
                        .await?
                        .into_iter()
                        .next()
                        .filter(|r| r.seq == req.seq)
                        .ok_or_else(not_yours)?;
                    if record.draft.agency_oin != caller.agency.oin.to_string() {
                        return Err(not_yours());
                    }
                    let checkpoint = gw
                        .store
                        .read()
                        .checkpoints(1)
                        .await?
                        .into_iter()
                        .next()
                        .filter(|c| c.tree_size >= req.seq)
                        .ok_or_else(|| {
                            ApiError::FailedPrecondition(
                                "no checkpoint covers this record yet; ask again after the next one"
                                    .into(),
                            )
                        })?;
                    if req.old_tree_size > checkpoint.tree_size {
                        return Err(ApiError::field(
                            "old_tree_size",
                            "larger than the newest checkpoint",
                        ));
                    }
                    let inclusion = gw
                        .store
                        .inclusion_proof(checkpoint.tree_size, req.seq)
                        .await?;
                    let consistency = gw
                        .store
                        .consistency_proof(checkpoint.tree_size, req.old_tree_size)
                        .await?;
                    call.fits(pb::ProveAccessRecordResponse {
                        record_line: record
                            .export_line()
                            .map_err(|e| ApiError::Internal(format!("record encoding: {e}")))?,
                        checkpoint: checkpoint.to_text(),
                        inclusion_proof: inclusion.iter().map(|h| h.to_vec()).collect(),
                        consistency_proof: consistency.iter().map(|h| h.to_vec()).collect(),
                    })
                },
            )
            .await
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        self.0
            .unary(
                Action::ReadCheckpoints,
                request,
                |call, caller, _req| async move {
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    let gw = call.gateway().clone();
                    Ok(pb::GetPublicKeyResponse {
                        ed25519_public_key: base64::engine::general_purpose::STANDARD
                            .encode(gw.signer.public_key()),
                        key_id: format!("{:08x}", gw.signer.key_id()),
                        verifier_key: gw.signer.verifier_key(),
                    })
                },
            )
            .await
    }

    async fn watch_alerts(
        &self,
        request: Request<pb::WatchAlertsRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        self.0
            .unary(
                Action::WatchAlerts,
                request,
                |call, caller, req| async move {
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    let gw = call.gateway().clone();
                    let slot = StreamCounter::acquire(&gw, &caller.agency.oin)?;
                    let (tx, rx) = mpsc::channel(16);
                    tokio::spawn(async move {
                        let _slot = slot;
                        let _gauge = gw.metrics.stream_opened();
                        if let Err(status) = alert_loop(&gw, req.after_cursor, &tx).await {
                            let _ = tx.send(Err(status)).await;
                        }
                    });
                    Ok(Box::pin(ReceiverStream::new(rx)) as AlertStream)
                },
            )
            .await
    }

    async fn citizen_report(
        &self,
        request: Request<pb::CitizenReportRequest>,
    ) -> Result<Response<pb::CitizenReportResponse>, Status> {
        self.0
            .unary(
                Action::CitizenReport,
                request,
                |call, caller, req| async move {
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    let gw = call.gateway().clone();
                    let mut v = Violations::default();
                    let bsn = v.check("bsn", Bsn::parse(&req.bsn));
                    let (mut from, mut until) = (None, None);
                    if let Some(range) = &req.time {
                        from = range
                            .start
                            .as_ref()
                            .and_then(|t| v.check("time.start", from_ts(t)));
                        until = range
                            .end
                            .as_ref()
                            .and_then(|t| v.check("time.end", from_ts(t)));
                    }
                    let html = match pb::ReportFormat::try_from(req.format) {
                        Ok(pb::ReportFormat::Html) => true,
                        Ok(_) => false,
                        Err(_) => {
                            v.add("format", "is not a ReportFormat value");
                            false
                        }
                    };
                    v.finish()?;
                    let Some(bsn) = bsn else {
                        return Err(ApiError::Internal("validated fields missing".into()));
                    };
                    let subject = gw.pseudonyms.pseudonymise(bsn);
                    call.set_subjects(&[subject]);
                    let mut filters = vec![LogFilter {
                        subject: Some(subject),
                        from,
                        until,
                        ..Default::default()
                    }];
                    if req.include_household {
                        for h in gw.store.read().households_of(&subject).await? {
                            filters.push(LogFilter {
                                household_id: Some(h),
                                from,
                                until,
                                ..Default::default()
                            });
                        }
                    }
                    let mut records: Vec<AccessRecord> = Vec::new();
                    for f in &filters {
                        let mut after = 0;
                        loop {
                            let page = gw.store.read().query_log(f, after, 1000).await?;
                            let Some(last) = page.last().map(|r| r.seq) else {
                                break;
                            };
                            after = last;
                            records.extend(page);
                        }
                    }
                    records.sort_by_key(|r| r.seq);
                    records.dedup_by_key(|r| r.seq);
                    // The report is about care organisations; the auditors' own supervision calls
                    // (including this one) are not part of it.
                    records.retain(|r| r.draft.role != Some(signaalpoort_core::Role::Auditor));
                    let entries = report::entries(&records, |oin| {
                        Oin::parse(oin)
                            .ok()
                            .and_then(|o| gw.registry.get(&o).map(|a| a.name.clone()))
                            .unwrap_or_else(|| "onbekende organisatie".to_owned())
                    });
                    let now = call.now();
                    let (content, content_type) = if html {
                        (
                            report::render_html(&entries, now),
                            "text/html; charset=utf-8",
                        )
                    } else {
                        (
                            report::render_text(&entries, now),
                            "text/plain; charset=utf-8",
                        )
                    };
                    Ok(pb::CitizenReportResponse {
                        content,
                        content_type: content_type.to_owned(),
                        entry_count: entries.len() as u32,
                    })
                },
            )
            .await
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

async fn alert_loop(
    gw: &Arc<Gateway>,
    mut cursor: u64,
    tx: &mpsc::Sender<Result<pb::WatchAlertsResponse, Status>>,
) -> Result<(), Status> {
    let mut changes = gw.store.changes();
    let mut shutdown = gw.shutdown.clone();
    let mut heartbeat =
        tokio::time::interval(Duration::from_secs(gw.config.limits.watch_heartbeat_secs));
    heartbeat.reset();
    loop {
        changes.borrow_and_update();
        loop {
            let rows = gw
                .store
                .read()
                .alerts_after(cursor, 100)
                .await
                .map_err(|e| ApiError::Store(e).into_status())?;
            let full = rows.len() == 100;
            for a in rows {
                cursor = a.cursor;
                let alert = pb::Alert {
                    cursor: a.cursor,
                    kind: match a.kind {
                        AlertKind::SafetyBasisUsed => pb::AlertKind::SafetyBasisUsed,
                        AlertKind::UnusualVolume => pb::AlertKind::UnusualVolume,
                        AlertKind::AccessLogFault => pb::AlertKind::AccessLogFault,
                        AlertKind::WitnessRefused => pb::AlertKind::WitnessRefused,
                    } as i32,
                    time: Some(ts(a.time)),
                    agency_oin: a.agency_oin,
                    actor_id: a.actor_id,
                    record_seq: a.record_seq,
                    detail: a.detail,
                };
                if tx
                    .send(Ok(pb::WatchAlertsResponse {
                        alert: Some(alert),
                        cursor,
                    }))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Err(Status::unavailable("shutting down")); },
            _ = heartbeat.tick() => {
                if tx.send(Ok(pb::WatchAlertsResponse { alert: None, cursor })).await.is_err() { return Ok(()); }
            }
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => return Err(Status::unavailable(format!("the gateway is shutting down; reconnect with after_cursor={cursor}"))),
            () = tx.closed() => return Ok(()),
        }
    }
}

pub fn record_to_pb(r: &AccessRecord) -> pb::AccessRecord {
    let d = &r.draft;
    pb::AccessRecord {
        seq: r.seq,
        time: Some(ts(d.time)),
        agency_oin: d.agency_oin.clone(),
        role: d.role.map_or(pb::Role::Unspecified, role_to_pb) as i32,
        actor_id: d.actor_id.clone(),
        action: d.action.clone(),
        subjects: d.subjects.clone(),
        household_id: d.household_id.clone(),
        purpose: d.purpose.map_or(pb::Purpose::Unspecified, purpose_to_pb) as i32,
        basis: d.basis.map_or(pb::Basis::Unspecified, basis_to_pb) as i32,
        decision: match d.decision {
            DecisionCode::Allow => pb::Decision::Allow,
            DecisionCode::Deny => pb::Decision::Deny,
        } as i32,
        reason: d.reason.clone(),
        status_code: d.status_code,
        request_id: d.request_id.clone(),
        cert_fingerprint: d.cert_fingerprint.clone(),
        justification: d.justification.clone(),
        flagged_for_review: d.flagged_for_review,
        trace_id: d.trace_id.clone(),
        span_id: d.span_id.clone(),
        prev_hash: hex::encode(r.prev_hash),
        hash: hex::encode(r.hash),
        object_id: d.object_id.clone(),
    }
}
