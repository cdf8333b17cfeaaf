//! ConsentService: record, withdraw and list consents, with the Dutch age rules.

use std::sync::Arc;

use signaalpoort_api::v1 as pb;
use signaalpoort_api::v1::consent_service_server::ConsentService;
use signaalpoort_core::consent::{
    check_age_rule, givers_cover, ConsentGiver, ConsentRecord, ConsentState,
};
use signaalpoort_core::policy::Action;
use signaalpoort_core::signal::MAX_SIGNAL_LIFETIME;
use signaalpoort_core::{parse_reference, Bsn, DenyReason, Oin, Purpose, RequestId};
use signaalpoort_store::{Effect, Mutation};
use tonic::{Request, Response, Status};

use crate::convert::*;
use crate::error::{ApiError, Violations};
use crate::gateway::Gateway;

pub struct Consents(pub Arc<Gateway>);

#[tonic::async_trait]
impl ConsentService for Consents {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::RecordConsentResponse>, Status> {
        self.0
            .unary(
                Action::RecordConsent,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let now = call.now();
                    let mut v = Violations::default();
                    let request_id = v
                        .check("request_id", RequestId::parse_optional(&req.request_id))
                        .flatten();
                    let bsn = v.check("bsn", Bsn::parse(&req.bsn));
                    let mut givers = Vec::new();
                    for (i, g) in req.givers.iter().enumerate() {
                        match pb::ConsentGiver::try_from(*g) {
                            Ok(pb::ConsentGiver::Subject) => givers.push(ConsentGiver::Subject),
                            Ok(pb::ConsentGiver::ParentOrGuardian) => {
                                givers.push(ConsentGiver::ParentOrGuardian)
                            }
                            _ => v.add(
                                format!("givers[{i}]"),
                                "must be CONSENT_GIVER_SUBJECT or CONSENT_GIVER_PARENT_OR_GUARDIAN",
                            ),
                        }
                    }
                    if req.givers.is_empty() || req.givers.len() > 2 {
                        v.add("givers", "must name one or two givers");
                    }
                    let mut purposes = Vec::new();
                    for (i, p) in req.purposes.iter().enumerate() {
                        match purpose_from_pb(*p) {
                            Some(Purpose::Audit) | None => v.add(
                                format!("purposes[{i}]"),
                                "must be a care purpose (not audit, not unspecified)",
                            ),
                            Some(p) if !purposes.contains(&p) => purposes.push(p),
                            Some(_) => {}
                        }
                    }
                    if req.purposes.is_empty() {
                        v.add("purposes", "must name at least one purpose");
                    }
                    let mut roles = Vec::new();
                    for (i, r) in req.roles.iter().enumerate() {
                        match role_from_pb(*r) {
                            Some(signaalpoort_core::Role::Auditor) | None => {
                                v.add(format!("roles[{i}]"), "must be a care role")
                            }
                            Some(r) if !roles.contains(&r) => roles.push(r),
                            Some(_) => {}
                        }
                    }
                    let mut agencies = Vec::new();
                    for (i, o) in req.agency_oins.iter().enumerate() {
                        if let Some(oin) = v.check(&format!("agency_oins[{i}]"), Oin::parse(o)) {
                            agencies.push(oin);
                        }
                    }
                    if req.roles.is_empty() && req.agency_oins.is_empty() {
                        v.add(
                            "roles",
                            "name at least one role or agency that may exchange",
                        );
                    }
                    if req.roles.len() + req.agency_oins.len() > 50 {
                        v.add("agency_oins", "at most 50 roles and agencies together");
                    }
                    let valid_until = match req.valid_until.as_ref().map(from_ts) {
                        None => {
                            v.add("valid_until", "is required");
                            None
                        }
                        Some(Err(e)) => {
                            v.add("valid_until", e);
                            None
                        }
                        Some(Ok(t)) if t <= now => {
                            v.add("valid_until", "must be in the future");
                            None
                        }
                        Some(Ok(t)) if t > now + MAX_SIGNAL_LIFETIME => {
                            v.add("valid_until", "must be at most two years ahead");
                            None
                        }
                        Some(Ok(t)) => Some(t),
                    };
                    let evidence_ref = v.check(
                        "evidence_ref",
                        parse_reference(&req.evidence_ref, 100, b"._:/-"),
                    );
                    let subject = bsn.map(|b| gw.pseudonyms.pseudonymise(b));
                    if let Some(s) = &subject {
                        call.set_subjects(&[*s]);
                    }
                    let idempotency = call.idempotency(
                        &caller,
                        request_id.as_ref(),
                        &pb::RecordConsentRequest {
                            request_id: String::new(),
                            bsn: subject.map(|s| s.to_hex()).unwrap_or_default(),
                            ..req.clone()
                        },
                    );
                    v.finish()?;
                    let (Some(subject), Some(valid_until), Some(evidence_ref)) =
                        (subject, valid_until, evidence_ref)
                    else {
                        return Err(ApiError::Internal("validated fields missing".into()));
                    };
                    let involved = gw
                        .store
                        .read()
                        .is_involved(&caller.agency.oin, &subject, now)
                        .await?;
                    call.decide(&caller, None, involved, &ConsentState::None, None)?;
                    // The age comes from the municipality's declaration; unknown: strictest rule.
                    let born = gw.store.read().birth_date(&subject).await?;
                    let renew_by = check_age_rule(born, now.date(), &givers, valid_until.date())
                        .map_err(|violation| {
                            call_deny_detail(DenyReason::AgeRuleNotMet, violation.to_string())
                        });
                    let renew_by = match renew_by {
                        Ok(r) => r,
                        Err(e) => return Err(e),
                    };
                    let consent = ConsentRecord {
                        id: uuid::Uuid::new_v4().to_string(),
                        recorded_by: caller.agency.oin.clone(),
                        subject,
                        include_household: req.include_household,
                        givers,
                        purposes,
                        roles,
                        agencies,
                        recorded_at: now,
                        valid_until,
                        renew_by,
                        withdrawn_at: None,
                        evidence_ref,
                    };
                    call.set_object(&format!("consent:{}", consent.id));
                    match call
                        .execute(Mutation::RecordConsent(consent), idempotency)
                        .await?
                    {
                        Effect::ConsentRecorded { consent } => Ok(pb::RecordConsentResponse {
                            consent: Some(consent_to_pb(&gw, &consent)),
                        }),
                        other => Err(ApiError::Internal(format!("unexpected effect {other:?}"))),
                    }
                },
            )
            .await
    }

    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        self.0
            .unary(
                Action::WithdrawConsent,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let now = call.now();
                    let mut v = Violations::default();
                    let request_id = v
                        .check("request_id", RequestId::parse_optional(&req.request_id))
                        .flatten();
                    let consent_id = required_id(&mut v, "consent_id", &req.consent_id);
                    v.finish()?;
                    let Some(consent_id) = consent_id else {
                        return Err(ApiError::Internal("validated fields missing".into()));
                    };
                    call.set_object(&format!("consent:{consent_id}"));
                    let idempotency = call.idempotency(
                        &caller,
                        request_id.as_ref(),
                        &pb::WithdrawConsentRequest {
                            request_id: String::new(),
                            ..req.clone()
                        },
                    );
                    // Unknown and not-yours look the same, so a consent's existence is not revealed.
                    let not_found = || {
                        ApiError::NotFound(
                            "no active consent with that id that this agency may withdraw".into(),
                        )
                    };
                    let consent = gw
                        .store
                        .read()
                        .consent(&consent_id)
                        .await?
                        .filter(|c| c.withdrawn_at.is_none());
                    // On the family's behalf: an agency the consent names, involved with a person it
                    // is about (its subject, or a housemate it is in scope for).
                    let may = match &consent {
                        Some(c) if c.recorded_by == caller.agency.oin => true,
                        Some(c) if c.names(&caller.agency) => {
                            involved_in_scope(&gw, &caller.agency.oin, c, now).await?
                        }
                        _ => false,
                    };
                    if !may {
                        return Err(not_found());
                    }
                    if let Some(c) = &consent {
                        call.set_subjects(&[c.subject]);
                    }
                    call.decide(&caller, None, true, &ConsentState::None, None)?;
                    let mutation = Mutation::WithdrawConsent { consent_id, now };
                    match call.execute(mutation, idempotency).await? {
                        Effect::ConsentWithdrawn { at } => Ok(pb::WithdrawConsentResponse {
                            withdrawn_at: Some(ts(at)),
                        }),
                        other => Err(ApiError::Internal(format!("unexpected effect {other:?}"))),
                    }
                },
            )
            .await
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        self.0
            .unary(
                Action::ListConsents,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let now = call.now();
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    let store = gw.store.read();
                    let consents = store
                        .consents_for_agency(&caller.agency.oin, now, req.include_inactive)
                        .await?;
                    // Only the family's consents that name the caller; the recorder is shown only
                    // while the consent covers its person and names the recorder.
                    let mut out = Vec::new();
                    let mut disclosed = Vec::new();
                    for c in consents.iter().filter(|c| c.names(&caller.agency)) {
                        let recorder = gw.registry.get(&c.recorded_by);
                        let shown = match recorder {
                            Some(r) if r.oin == caller.agency.oin => true,
                            Some(r) if c.is_active(now) && c.names(r) => {
                                let born = store.birth_date(&c.subject).await?;
                                givers_cover(c, &c.subject, born, now.date())
                            }
                            _ => false,
                        };
                        if shown && c.recorded_by != caller.agency.oin {
                            disclosed.push(c.subject);
                        }
                        let mut consent = consent_to_pb(&gw, c);
                        if !shown {
                            consent.recorded_by = Some(withheld_agency());
                        }
                        out.push(consent);
                    }
                    // The record names the persons about whom another agency's part was shown.
                    call.set_subjects(&disclosed);
                    call.set_object(&format!("consents:{}", out.len()));
                    call.fits(pb::ListConsentsResponse { consents: out })
                },
            )
            .await
    }
}

/// Whether the agency has an active signal on a person the consent is about: its subject, or with
/// `include_household` a housemate of it.
async fn involved_in_scope(
    gw: &Gateway,
    agency: &Oin,
    consent: &ConsentRecord,
    now: time::OffsetDateTime,
) -> Result<bool, ApiError> {
    let store = gw.store.read();
    if store.is_involved(agency, &consent.subject, now).await? {
        return Ok(true);
    }
    if !consent.include_household {
        return Ok(false);
    }
    for household in store.households_of(&consent.subject).await? {
        for s in store.household_signals(&household, now).await? {
            if s.agency == *agency {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn call_deny_detail(reason: DenyReason, detail: String) -> ApiError {
    ApiError::PermissionDenied {
        reason,
        detail: Some(detail),
    }
}

fn consent_to_pb(gw: &Gateway, c: &ConsentRecord) -> pb::Consent {
    pb::Consent {
        consent_id: c.id.clone(),
        recorded_by: gw.registry.get(&c.recorded_by).map(agency_to_pb),
        include_household: c.include_household,
        givers: c
            .givers
            .iter()
            .map(|g| match g {
                ConsentGiver::Subject => pb::ConsentGiver::Subject as i32,
                ConsentGiver::ParentOrGuardian => pb::ConsentGiver::ParentOrGuardian as i32,
            })
            .collect(),
        purposes: c
            .purposes
            .iter()
            .map(|p| purpose_to_pb(*p) as i32)
            .collect(),
        roles: c.roles.iter().map(|r| role_to_pb(*r) as i32).collect(),
        agency_oins: c.agencies.iter().map(|o| o.to_string()).collect(),
        recorded_at: Some(ts(c.recorded_at)),
        valid_until: Some(ts(c.valid_until)),
        renew_by: c.renew_by.map(|d| ts(d.midnight().assume_utc())),
        withdrawn_at: c.withdrawn_at.map(ts),
        evidence_ref: c.evidence_ref.clone(),
    }
}
