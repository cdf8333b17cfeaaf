//! CoordinationService: case coordination (casusregie), the involvement history in counts and the
//! chronicity indicator. Every call names one of the caller's own active signals and a purpose;
//! the household is that signal's person's household, and the policy decides as everywhere else.

use std::collections::{BTreeMap, BTreeSet};

use signaalpoort_api::v1 as pb;
use signaalpoort_core::chronicity::{chronicity, ChronicityThresholds, Quarter, QuarterCounts};
use signaalpoort_core::coordination::{reconcile, Command, CoordinationState};
use signaalpoort_core::policy::{Action, Permit};
use signaalpoort_core::{
    Category, ContactPoint, DenyReason, Justification, Oin, Purpose, RequestId, Role,
    SubjectPseudonym,
};
use signaalpoort_store::{Effect, Idempotency, Mutation, SignalRow};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use crate::basis::{decide_on_own_signal, Facts};
use crate::call::{Call, Caller};
use crate::convert::*;
use crate::error::{ApiError, Violations};
use crate::gateway::Gateway;

pub struct Coordination(pub std::sync::Arc<Gateway>);

/// The household a call is about, established with the caller's permission.
struct Case {
    household_id: String,
    permit: Permit,
    /// Live signals on the household's members: who is involved.
    signals: Vec<SignalRow>,
    /// The agencies the caller's basis lets it know of (the one rule, person by person), itself
    /// included: only they are shown, proposed or asked.
    known: BTreeSet<Oin>,
}

/// Validates a `CaseRef`, finds the household through the caller's own signal and asks the policy.
/// Permission comes before anything about the household is read, as in QueryInvolvement.
async fn open_case(
    call: &Call,
    caller: &Caller,
    v: &mut Violations,
    case: Option<&pb::CaseRef>,
) -> Result<Case, ApiError> {
    let gw = call.gateway().clone();
    let now = call.now();
    let default = pb::CaseRef::default();
    let case = case.unwrap_or(&default);
    let signal_id = required_id(v, "case.your_signal_id", &case.your_signal_id);
    let purpose = required_purpose(v, "case.purpose", case.purpose);
    let justification = v
        .check(
            "case.safety_justification",
            Justification::parse_optional(&case.safety_justification),
        )
        .flatten();
    call.set_purpose(purpose);
    std::mem::take(v).finish()?;
    let (Some(signal_id), Some(purpose)) = (signal_id, purpose) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    call.set_object(&signal_id);
    let store = gw.store.read();
    let mut facts = Facts::new(store);
    let (own, permit) = decide_on_own_signal(
        call,
        caller,
        &mut facts,
        &signal_id,
        purpose,
        justification.as_ref(),
    )
    .await?;
    let Some(household_id) = gw
        .store
        .read()
        .households_of(&own.subject)
        .await?
        .into_iter()
        .next()
    else {
        return Err(ApiError::FailedPrecondition(
            "the person of this signal is not in a declared household; coordination is per household".into(),
        ));
    };
    call.set_household(&household_id);
    let signals = gw
        .store
        .read()
        .household_signals(&household_id, now)
        .await?;
    let mut known: BTreeSet<Oin> = [caller.agency.oin.clone()].into();
    for s in &signals {
        if known.contains(&s.agency) {
            continue;
        }
        let Some(agency) = gw.registry.get(&s.agency) else {
            continue;
        };
        if facts
            .basis_for(&permit, &caller.agency, &s.subject, agency, now)
            .await?
            .is_some()
        {
            known.insert(s.agency.clone());
        }
    }
    Ok(Case {
        household_id,
        permit,
        signals,
        known,
    })
}

fn involved(signals: &[SignalRow]) -> BTreeSet<Oin> {
    signals.iter().map(|s| s.agency.clone()).collect()
}

fn agency_ref(gw: &Gateway, oin: &Oin) -> pb::AgencyRef {
    match gw.registry.get(oin) {
        Some(a) => agency_to_pb(a),
        None => pb::AgencyRef {
            oin: oin.to_string(),
            name: String::new(),
            role: pb::Role::Unspecified as i32,
        },
    }
}

/// The coordination as `known` lets a viewer see it: an agency it may not know of is withheld ("een
/// betrokken professional", with the contact point), and left out of the lists.
fn coordination_to_pb(
    gw: &Gateway,
    household_id: &str,
    state: &CoordinationState,
    involved: &BTreeSet<Oin>,
    known: &BTreeSet<Oin>,
) -> pb::Coordination {
    let shown = |oin: &Oin| {
        if known.contains(oin) {
            agency_ref(gw, oin)
        } else {
            withheld_agency()
        }
    };
    let listed = |oins: &BTreeSet<Oin>| {
        oins.iter()
            .filter(|o| known.contains(*o))
            .map(Oin::to_string)
            .collect()
    };
    pb::Coordination {
        household_id: household_id.to_owned(),
        coordinator: state.coordinator.as_ref().map(|c| shown(&c.agency)),
        coordinator_contact: state
            .coordinator
            .as_ref()
            .map(|c| contact_to_pb(&c.contact)),
        coordinating_since: state.coordinator.as_ref().map(|c| ts(c.since)),
        open_proposal: state.open_proposal.as_ref().map(|p| pb::Proposal {
            proposal_id: p.id.clone(),
            proposed_by: Some(shown(&p.proposed_by)),
            proposed: Some(shown(&p.proposed)),
            is_hand_over: p.is_hand_over,
            proposed_at: Some(ts(p.at)),
            accepted_by: listed(&p.accepted_by),
            awaiting: listed(&p.awaiting(involved)),
        }),
    }
}

fn optional_oin(v: &mut Violations, field: &str, value: &str) -> Option<Oin> {
    if value.is_empty() {
        return None;
    }
    v.check(field, Oin::parse(value))
}

fn optional_contact(
    v: &mut Violations,
    field: &str,
    c: Option<&pb::ContactPoint>,
) -> Option<ContactPoint> {
    c.and_then(|c| contact_from_pb(v, field, Some(c)))
}

impl Coordination {
    /// Runs a command through the store (which re-reads who is involved inside the transaction).
    async fn command(
        call: &Call,
        case: &Case,
        command: Command,
        idempotency: Option<Idempotency>,
    ) -> Result<pb::Coordination, ApiError> {
        let gw = call.gateway().clone();
        let mutation = Mutation::Coordinate {
            household_id: case.household_id.clone(),
            command,
            now: call.now(),
        };
        match call.execute(mutation, idempotency).await? {
            Effect::Coordinated { state, .. } => Ok(coordination_to_pb(
                &gw,
                &case.household_id,
                &state,
                &involved(&case.signals),
                &case.known,
            )),
            other => Err(ApiError::Internal(format!("unexpected effect {other:?}"))),
        }
    }
}

#[tonic::async_trait]
impl pb::coordination_service_server::CoordinationService for Coordination {
    async fn propose_coordinator(
        &self,
        request: Request<pb::ProposeCoordinatorRequest>,
    ) -> Result<Response<pb::ProposeCoordinatorResponse>, Status> {
        self.0
            .unary(
                Action::ProposeCoordinator,
                request,
                |call, caller, req| async move {
                    let mut v = Violations::default();
                    let request_id = v
                        .check("request_id", RequestId::parse_optional(&req.request_id))
                        .flatten();
                    let coordinator = optional_oin(&mut v, "coordinator_oin", &req.coordinator_oin);
                    let contact = optional_contact(&mut v, "contact", req.contact.as_ref());
                    let idempotency = call.idempotency(
                        &caller,
                        request_id.as_ref(),
                        &pb::ProposeCoordinatorRequest {
                            request_id: String::new(),
                            ..req.clone()
                        },
                    );
                    let case = open_case(&call, &caller, &mut v, req.case.as_ref()).await?;
                    let command = Command::Propose {
                        by: caller.agency.oin.clone(),
                        coordinator: coordinator.unwrap_or_else(|| caller.agency.oin.clone()),
                        contact,
                        proposal_id: uuid::Uuid::new_v4().to_string(),
                        eligible: case.known.clone(),
                    };
                    let coordination = Self::command(&call, &case, command, idempotency).await?;
                    Ok(pb::ProposeCoordinatorResponse {
                        coordination: Some(coordination),
                    })
                },
            )
            .await
    }

    async fn respond_to_proposal(
        &self,
        request: Request<pb::RespondToProposalRequest>,
    ) -> Result<Response<pb::RespondToProposalResponse>, Status> {
        self.0
            .unary(
                Action::RespondToProposal,
                request,
                |call, caller, req| async move {
                    let mut v = Violations::default();
                    let request_id = v
                        .check("request_id", RequestId::parse_optional(&req.request_id))
                        .flatten();
                    let proposal_id = required_id(&mut v, "proposal_id", &req.proposal_id);
                    let contact = optional_contact(&mut v, "contact", req.contact.as_ref());
                    let idempotency = call.idempotency(
                        &caller,
                        request_id.as_ref(),
                        &pb::RespondToProposalRequest {
                            request_id: String::new(),
                            ..req.clone()
                        },
                    );
                    let case = open_case(&call, &caller, &mut v, req.case.as_ref()).await?;
                    let command = Command::Respond {
                        by: caller.agency.oin.clone(),
                        proposal_id: proposal_id.unwrap_or_default(),
                        accept: req.accept,
                        contact,
                    };
                    let coordination = Self::command(&call, &case, command, idempotency).await?;
                    Ok(pb::RespondToProposalResponse {
                        coordination: Some(coordination),
                    })
                },
            )
            .await
    }

    async fn hand_over(
        &self,
        request: Request<pb::HandOverRequest>,
    ) -> Result<Response<pb::HandOverResponse>, Status> {
        self.0
            .unary(Action::HandOver, request, |call, caller, req| async move {
                let mut v = Violations::default();
                let request_id = v
                    .check("request_id", RequestId::parse_optional(&req.request_id))
                    .flatten();
                let to = v.check("to_oin", Oin::parse(&req.to_oin));
                let idempotency = call.idempotency(
                    &caller,
                    request_id.as_ref(),
                    &pb::HandOverRequest {
                        request_id: String::new(),
                        ..req.clone()
                    },
                );
                let case = open_case(&call, &caller, &mut v, req.case.as_ref()).await?;
                let Some(to) = to else {
                    return Err(ApiError::Internal("validated fields missing".into()));
                };
                let command = Command::HandOver {
                    by: caller.agency.oin.clone(),
                    to,
                    proposal_id: uuid::Uuid::new_v4().to_string(),
                    eligible: case.known.clone(),
                };
                let coordination = Self::command(&call, &case, command, idempotency).await?;
                Ok(pb::HandOverResponse {
                    coordination: Some(coordination),
                })
            })
            .await
    }

    async fn step_down(
        &self,
        request: Request<pb::StepDownRequest>,
    ) -> Result<Response<pb::StepDownResponse>, Status> {
        self.0
            .unary(Action::StepDown, request, |call, caller, req| async move {
                let mut v = Violations::default();
                let request_id = v
                    .check("request_id", RequestId::parse_optional(&req.request_id))
                    .flatten();
                let idempotency = call.idempotency(
                    &caller,
                    request_id.as_ref(),
                    &pb::StepDownRequest {
                        request_id: String::new(),
                        ..req.clone()
                    },
                );
                let case = open_case(&call, &caller, &mut v, req.case.as_ref()).await?;
                let command = Command::StepDown {
                    by: caller.agency.oin.clone(),
                };
                let coordination = Self::command(&call, &case, command, idempotency).await?;
                Ok(pb::StepDownResponse {
                    coordination: Some(coordination),
                })
            })
            .await
    }

    async fn get_coordination(
        &self,
        request: Request<pb::GetCoordinationRequest>,
    ) -> Result<Response<pb::GetCoordinationResponse>, Status> {
        self.0
            .unary(
                Action::GetCoordination,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let mut v = Violations::default();
                    let case = open_case(&call, &caller, &mut v, req.case.as_ref()).await?;
                    let involved = involved(&case.signals);
                    let stored = gw.store.read().coordination(&case.household_id).await?;
                    // A coordinator whose signal ended has lapsed, whether or not a write noticed yet.
                    let (state, _) = reconcile(&stored.state, &involved);
                    Ok(pb::GetCoordinationResponse {
                        coordination: Some(coordination_to_pb(
                            &gw,
                            &case.household_id,
                            &state,
                            &involved,
                            &case.known,
                        )),
                    })
                },
            )
            .await
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        self.0
            .unary(
                Action::GetHistory,
                request,
                |call, caller, req| async move {
                    let mut v = Violations::default();
                    let case = open_case(&call, &caller, &mut v, req.case.as_ref()).await?;
                    let (history, first_at) = history_of(&call, &caller, &case).await?;
                    let now = call.now();
                    let periods = history
                        .iter()
                        .map(|(q, c)| pb::HistoryPeriod {
                            period: q.label(),
                            distinct_agencies: c.agencies,
                            categories: c
                                .categories
                                .iter()
                                .map(|c| category_to_pb(*c) as i32)
                                .collect(),
                            signals_registered: c.registered,
                            signals_ended: c.ended,
                        })
                        .collect();
                    let involvement_days =
                        first_at.map_or(0, |f| (now - f).whole_days().max(0) as u32);
                    Ok(pb::GetHistoryResponse {
                        periods,
                        involvement_days,
                    })
                },
            )
            .await
    }

    async fn get_chronicity(
        &self,
        request: Request<pb::GetChronicityRequest>,
    ) -> Result<Response<pb::GetChronicityResponse>, Status> {
        self.0
            .unary(
                Action::GetChronicity,
                request,
                |call, caller, req| async move {
                    let gw = call.gateway().clone();
                    let mut v = Violations::default();
                    let case = open_case(&call, &caller, &mut v, req.case.as_ref()).await?;
                    let (history, _) = history_of(&call, &caller, &case).await?;
                    let c = &gw.config.coordination;
                    let thresholds = ChronicityThresholds {
                        min_agencies: c.chronicity_min_agencies,
                        min_quarters: c.chronicity_min_quarters,
                        window_quarters: c.chronicity_window_quarters,
                        repeated_safety_signals: c.chronicity_repeated_safety_signals,
                    };
                    let indicator =
                        chronicity(&history, Quarter::of(call.now().date()), thresholds);
                    Ok(pb::GetChronicityResponse {
                        indicated: indicator.indicated,
                        triggered_by: indicator.triggered_by,
                    })
                },
            )
            .await
    }
}

/// The household's history per quarter (ended involvement from the aggregate table, live signals
/// counted on the fly), for the coordinator — or Veilig Thuis on the safety basis — only.
async fn history_of(
    call: &Call,
    caller: &Caller,
    case: &Case,
) -> Result<(BTreeMap<Quarter, QuarterCounts>, Option<OffsetDateTime>), ApiError> {
    let gw = call.gateway().clone();
    let now = call.now();
    if !case.permit.safety_holds() {
        let stored = gw.store.read().coordination(&case.household_id).await?;
        let (state, _) = reconcile(&stored.state, &involved(&case.signals));
        if state.coordinator.as_ref().map(|c| &c.agency) != Some(&caller.agency.oin) {
            return Err(ApiError::denied(DenyReason::NotCoordinator));
        }
    }
    // Counts only what the caller's basis covers, person by person; sensitive involvement (Veilig
    // Thuis, safety signals) only for Veilig Thuis or on the safety basis.
    let store = gw.store.read();
    let mut facts = Facts::new(store);
    let sees_sensitive = caller.agency.role == Role::VeiligThuis
        || case.permit.purpose() == Some(Purpose::ChildSafety);
    type Row = (
        Option<SubjectPseudonym>,
        Oin,
        Category,
        Quarter,
        u32,
        u32,
        OffsetDateTime,
    );
    let mut rows: Vec<Row> = Vec::new();
    for row in store.involvement_history(&case.household_id).await? {
        if let Some(q) = Quarter::parse(&row.quarter) {
            rows.push((
                row.subject,
                row.agency,
                row.category,
                q,
                row.registered,
                row.ended,
                row.first_at,
            ));
        }
    }
    let current = Quarter::of(now.date());
    for s in &case.signals {
        let mut q = Quarter::of(s.registered_at.date());
        let first = q;
        loop {
            rows.push((
                Some(s.subject),
                s.agency.clone(),
                s.category,
                q,
                u32::from(q == first),
                0,
                s.registered_at,
            ));
            if q >= current {
                break;
            }
            q = q.next();
        }
    }
    let mut visible = Vec::with_capacity(rows.len());
    for row in rows {
        let (subject, agency, category) = (&row.0, &row.1, row.2);
        let Some(other) = gw.registry.get(agency) else {
            continue;
        };
        let sensitive = other.role == Role::VeiligThuis || category == Category::Safety;
        if sensitive && !sees_sensitive {
            continue;
        }
        let covered = if *agency == caller.agency.oin {
            true
        } else {
            match subject {
                // Rows kept before persons were: only the safety basis sees them.
                None => case.permit.safety_holds(),
                Some(p) => facts
                    .basis_for(&case.permit, &caller.agency, p, other, now)
                    .await?
                    .is_some(),
            }
        };
        if covered {
            visible.push(row);
        }
    }
    let mut per_quarter: BTreeMap<Quarter, (BTreeSet<Oin>, QuarterCounts)> = BTreeMap::new();
    let mut first_at: Option<OffsetDateTime> = None;
    let mut add = |q: Quarter,
                   agency: &Oin,
                   category: Category,
                   registered: u32,
                   ended: u32,
                   since: OffsetDateTime| {
        let (agencies, counts) = per_quarter.entry(q).or_default();
        agencies.insert(agency.clone());
        counts.categories.insert(category);
        counts.registered += registered;
        counts.ended += ended;
        if category == Category::Safety {
            counts.safety_signals += registered;
        }
        first_at = Some(first_at.map_or(since, |f| f.min(since)));
    };
    for (_, agency, category, q, registered, ended, since) in &visible {
        add(*q, agency, *category, *registered, *ended, *since);
    }
    let history = per_quarter
        .into_iter()
        .map(|(q, (agencies, mut counts))| {
            counts.agencies = agencies.len() as u32;
            (q, counts)
        })
        .collect();
    Ok((history, first_at))
}
