//! HouseholdService: the municipality declares who belongs together.

use std::collections::HashSet;
use std::sync::Arc;

use signaalpoort_api::v1 as pb;
use signaalpoort_api::v1::household_service_server::HouseholdService;
use signaalpoort_core::consent::ConsentState;
use signaalpoort_core::policy::Action;
use signaalpoort_core::signal::parse_birth_date;
use signaalpoort_core::{parse_reference, Bsn, RequestId};
use signaalpoort_store::{Effect, HouseholdMember, Mutation};
use tonic::{Request, Response, Status};

use crate::convert::ts;
use crate::error::{ApiError, Violations};
use crate::gateway::Gateway;

pub struct Households(pub Arc<Gateway>);

const MAX_MEMBERS: usize = 20;

#[tonic::async_trait]
impl HouseholdService for Households {
    async fn declare_household(
        &self,
        request: Request<pb::DeclareHouseholdRequest>,
    ) -> Result<Response<pb::DeclareHouseholdResponse>, Status> {
        self.0
            .unary(
                Action::DeclareHousehold,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let mut v = Violations::default();
                    let request_id = v
                        .check("request_id", RequestId::parse_optional(&req.request_id))
                        .flatten();
                    let household_ref = v.check(
                        "household_ref",
                        parse_reference(&req.household_ref, 64, b"._-"),
                    );
                    // One member is a person's birth date declared alone (the age rules need it).
                    if !(1..=MAX_MEMBERS).contains(&req.members.len()) {
                        v.add("members", format!("must list 1 to {MAX_MEMBERS} members"));
                    }
                    let today = call.now().date();
                    let mut members = Vec::new();
                    let mut seen = HashSet::new();
                    let mut canonical = pb::DeclareHouseholdRequest {
                        request_id: String::new(),
                        ..req.clone()
                    };
                    for (i, m) in req.members.iter().take(MAX_MEMBERS).enumerate() {
                        let birth_date = if m.birth_date.is_empty() {
                            None
                        } else {
                            v.check(
                                &format!("members[{i}].birth_date"),
                                parse_birth_date(&m.birth_date, today),
                            )
                        };
                        if let Some(bsn) = v.check(&format!("members[{i}].bsn"), Bsn::parse(&m.bsn))
                        {
                            let subject = gw.pseudonyms.pseudonymise(bsn);
                            if !seen.insert(subject) {
                                v.add(format!("members[{i}].bsn"), "is listed twice");
                            }
                            canonical.members[i].bsn = subject.to_hex();
                            members.push(HouseholdMember {
                                subject,
                                protected: m.protected,
                                birth_date,
                            });
                        }
                    }
                    let subjects: Vec<_> = members.iter().map(|m| m.subject).collect();
                    call.set_subjects(&subjects);
                    let idempotency = call.idempotency(&caller, request_id.as_ref(), &canonical);
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    v.finish()?;
                    let Some(household_ref) = household_ref else {
                        return Err(ApiError::Internal("validated fields missing".into()));
                    };
                    let mutation = Mutation::DeclareHousehold {
                        agency: caller.agency.oin.clone(),
                        household_ref,
                        new_id: uuid::Uuid::new_v4().to_string(),
                        members,
                        now: call.now(),
                    };
                    match call.execute(mutation, idempotency).await? {
                        Effect::HouseholdDeclared {
                            household_id,
                            replaced,
                            member_count,
                            at,
                        } => Ok(pb::DeclareHouseholdResponse {
                            household_id,
                            member_count,
                            replaced,
                            declared_at: Some(ts(at)),
                        }),
                        other => Err(ApiError::Internal(format!("unexpected effect {other:?}"))),
                    }
                },
            )
            .await
    }

    async fn dissolve_household(
        &self,
        request: Request<pb::DissolveHouseholdRequest>,
    ) -> Result<Response<pb::DissolveHouseholdResponse>, Status> {
        self.0
            .unary(
                Action::DissolveHousehold,
                request,
                |call, caller, req| async move {
                    let mut v = Violations::default();
                    let request_id = v
                        .check("request_id", RequestId::parse_optional(&req.request_id))
                        .flatten();
                    let household_ref = v.check(
                        "household_ref",
                        parse_reference(&req.household_ref, 64, b"._-"),
                    );
                    let idempotency = call.idempotency(
                        &caller,
                        request_id.as_ref(),
                        &pb::DissolveHouseholdRequest {
                            request_id: String::new(),
                            ..req.clone()
                        },
                    );
                    call.decide(&caller, None, false, &ConsentState::None, None)?;
                    v.finish()?;
                    let Some(household_ref) = household_ref else {
                        return Err(ApiError::Internal("validated fields missing".into()));
                    };
                    call.set_object(&household_ref);
                    let mutation = Mutation::DissolveHousehold {
                        agency: caller.agency.oin.clone(),
                        household_ref,
                        now: call.now(),
                    };
                    match call.execute(mutation, idempotency).await? {
                        Effect::HouseholdDissolved { at } => Ok(pb::DissolveHouseholdResponse {
                            dissolved_at: Some(ts(at)),
                        }),
                        other => Err(ApiError::Internal(format!("unexpected effect {other:?}"))),
                    }
                },
            )
            .await
    }
}
