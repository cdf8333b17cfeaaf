//! SignalService: register, withdraw, list own signals; who else is involved.

use std::sync::Arc;

use signaalpoort_api::v1 as pb;
use signaalpoort_api::v1::signal_service_server::SignalService;
use signaalpoort_core::consent::ConsentState;
use signaalpoort_core::involvement::{disclose, OtherInvolvement};
use signaalpoort_core::policy::Action;
use signaalpoort_core::signal::signal_expiry;
use signaalpoort_core::{Bsn, Justification, RequestId};
use signaalpoort_store::{Effect, Mutation};
use tonic::{Request, Response, Status};

use crate::basis::{decide_on_own_signal, Facts};
use crate::convert::*;
use crate::error::{ApiError, Violations};
use crate::gateway::Gateway;

pub struct Signals(pub Arc<Gateway>);

#[tonic::async_trait]
impl SignalService for Signals {
    async fn register_signal(
        &self,
        request: Request<pb::RegisterSignalRequest>,
    ) -> Result<Response<pb::RegisterSignalResponse>, Status> {
        self.0
            .unary(
                Action::RegisterSignal,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let now = call.now();
                    let mut v = Violations::default();
                    let request_id = v
                        .check("request_id", RequestId::parse_optional(&req.request_id))
                        .flatten();
                    let bsn = v.check("bsn", Bsn::parse(&req.bsn));
                    let category = category_from_pb(req.category);
                    if category.is_none() {
                        v.add("category", "is required: one of the CATEGORY_ values");
                    }
                    let contact = contact_from_pb(&mut v, "contact", req.contact.as_ref());
                    let requested = match req.expires_at.as_ref().map(from_ts) {
                        Some(Err(e)) => {
                            v.add("expires_at", e);
                            None
                        }
                        Some(Ok(t)) => Some(t),
                        None => None,
                    };
                    // Pseudonymise at once; from here on only the pseudonym exists.
                    let subject = bsn.map(|b| gw.pseudonyms.pseudonymise(b));
                    if let Some(s) = &subject {
                        call.set_subjects(&[*s]);
                    }
                    // The digest binds the id to this content, with the pseudonym in the BSN's place.
                    let idempotency = call.idempotency(
                        &caller,
                        request_id.as_ref(),
                        &pb::RegisterSignalRequest {
                            request_id: String::new(),
                            bsn: subject.map(|s| s.to_hex()).unwrap_or_default(),
                            ..req.clone()
                        },
                    );
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    // The 23rd birthday from the municipality's declaration, never from the caller.
                    let birth_date = match &subject {
                        Some(s) => gw.store.read().birth_date(s).await?,
                        None => None,
                    };
                    let lifetime =
                        time::Duration::days(i64::from(gw.config.signals.default_lifetime_days));
                    let expires_at = v.check(
                        "expires_at",
                        signal_expiry(now, requested, lifetime, birth_date),
                    );
                    v.finish()?;
                    let (Some(subject), Some(category), Some(contact), Some(expires_at)) =
                        (subject, category, contact, expires_at)
                    else {
                        return Err(ApiError::Internal("validated fields missing".into()));
                    };
                    let mutation = Mutation::RegisterSignal {
                        new_id: uuid::Uuid::new_v4().to_string(),
                        agency: caller.agency.oin.clone(),
                        subject,
                        category,
                        contact,
                        expires_at,
                        now,
                    };
                    match call.execute(mutation, idempotency).await? {
                        Effect::SignalRegistered { signal, refreshed } => {
                            Ok(pb::RegisterSignalResponse {
                                signal: Some(signal_to_pb(&signal)),
                                refreshed,
                            })
                        }
                        other => Err(ApiError::Internal(format!("unexpected effect {other:?}"))),
                    }
                },
            )
            .await
    }

    async fn withdraw_signal(
        &self,
        request: Request<pb::WithdrawSignalRequest>,
    ) -> Result<Response<pb::WithdrawSignalResponse>, Status> {
        self.0
            .unary(
                Action::WithdrawSignal,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let mut v = Violations::default();
                    let request_id = v
                        .check("request_id", RequestId::parse_optional(&req.request_id))
                        .flatten();
                    let signal_id = required_id(&mut v, "signal_id", &req.signal_id);
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    v.finish()?;
                    let Some(signal_id) = signal_id else {
                        return Err(ApiError::Internal("validated fields missing".into()));
                    };
                    call.set_object(&signal_id);
                    let idempotency = call.idempotency(
                        &caller,
                        request_id.as_ref(),
                        &pb::WithdrawSignalRequest {
                            request_id: String::new(),
                            ..req.clone()
                        },
                    );
                    // The subject goes into the record only when the signal is the caller's own.
                    if let Some(s) = gw.store.read().signal(&signal_id).await? {
                        if s.agency == caller.agency.oin {
                            call.set_subjects(&[s.subject]);
                        }
                    }
                    let mutation = Mutation::WithdrawSignal {
                        agency: caller.agency.oin.clone(),
                        signal_id,
                        now: call.now(),
                    };
                    match call.execute(mutation, idempotency).await? {
                        Effect::SignalWithdrawn { at } => Ok(pb::WithdrawSignalResponse {
                            withdrawn_at: Some(ts(at)),
                        }),
                        other => Err(ApiError::Internal(format!("unexpected effect {other:?}"))),
                    }
                },
            )
            .await
    }

    async fn list_signals(
        &self,
        request: Request<pb::ListSignalsRequest>,
    ) -> Result<Response<pb::ListSignalsResponse>, Status> {
        self.0
            .unary(
                Action::ListSignals,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let mut v = Violations::default();
                    let limit = page_size(&mut v, req.page_size, 500);
                    let after = if req.page_token.is_empty() {
                        None
                    } else {
                        v.check("page_token", decode_page_token(&req.page_token))
                    };
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    v.finish()?;
                    let now = call.now();
                    let rows = gw
                        .store
                        .read()
                        .list_signals(&caller.agency.oin, now, after, limit + 1)
                        .await?;
                    let more = rows.len() > limit as usize;
                    let rows = &rows[..rows.len().min(limit as usize)];
                    // The caller's own signals: nothing about anyone is disclosed to anyone, so
                    // the record names no person (a family's report is not flooded by listings).
                    call.set_object(&format!("own_signals:{}", rows.len()));
                    call.fits(pb::ListSignalsResponse {
                        signals: rows.iter().map(signal_to_pb).collect(),
                        next_page_token: match (more, rows.last()) {
                            (true, Some(last)) => encode_page_token(last.registered_at, &last.id),
                            _ => String::new(),
                        },
                    })
                },
            )
            .await
    }

    async fn query_involvement(
        &self,
        request: Request<pb::QueryInvolvementRequest>,
    ) -> Result<Response<pb::QueryInvolvementResponse>, Status> {
        self.0
            .unary(
                Action::QueryInvolvement,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let now = call.now();
                    let mut v = Violations::default();
                    let signal_id = required_id(&mut v, "signal_id", &req.signal_id);
                    let purpose = required_purpose(&mut v, "purpose", req.purpose);
                    let justification = v
                        .check(
                            "safety_justification",
                            Justification::parse_optional(&req.safety_justification),
                        )
                        .flatten();
                    call.set_purpose(purpose);
                    v.finish()?;
                    let (Some(signal_id), Some(purpose)) = (signal_id, purpose) else {
                        return Err(ApiError::Internal("validated fields missing".into()));
                    };
                    call.set_object(&signal_id);
                    // Permission first: involvement and basis are established before anything about
                    // other agencies is read, so a denial reveals nothing.
                    let store = gw.store.read();
                    let mut facts = Facts::new(store);
                    let (own, permit) = decide_on_own_signal(
                        &call,
                        &caller,
                        &mut facts,
                        &signal_id,
                        purpose,
                        justification.as_ref(),
                    )
                    .await?;
                    let mut subjects = vec![own.subject];
                    let mut involvements = Vec::new();
                    for m in store.matches(&own, now).await? {
                        let Some(agency) = gw.registry.get(&m.agency).cloned() else {
                            continue;
                        };
                        let other = OtherInvolvement {
                            signal_id: m.signal_id,
                            agency,
                            contact: m.contact,
                            category: m.category,
                            since: m.since,
                            level: m.level,
                        };
                        // The one rule: a basis for the other signal's own person.
                        let f = facts.of(&m.subject).await?;
                        if let Some(d) =
                            disclose(&permit, &caller.agency, &f.person, &f.consents, &other, now)
                        {
                            subjects.push(m.subject);
                            involvements.push(disclosure_to_pb(&d));
                        }
                    }
                    call.set_subjects(&subjects);
                    Ok(pb::QueryInvolvementResponse {
                        involvements,
                        basis: basis_to_pb(permit.basis()) as i32,
                        consent_id: permit.consent_id().unwrap_or_default().to_owned(),
                    })
                },
            )
            .await
    }
}

/// 0 means 100; above `max` is an error.
pub fn page_size(v: &mut Violations, requested: u32, max: u32) -> u32 {
    match requested {
        0 => 100,
        n if n > max => {
            v.add("page_size", format!("must be at most {max}"));
            max
        }
        n => n,
    }
}

fn encode_page_token(at: time::OffsetDateTime, id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}|{id}", at.unix_timestamp_nanos() / 1000))
}

fn decode_page_token(token: &str) -> Result<(time::OffsetDateTime, String), &'static str> {
    use base64::Engine;
    let bad = "is not a token from a previous response";
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad)?;
    let raw = String::from_utf8(raw).map_err(|_| bad)?;
    let (micros, id) = raw.split_once('|').ok_or(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad)?;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|_| bad)?;
    Ok((at, id.to_owned()))
}
