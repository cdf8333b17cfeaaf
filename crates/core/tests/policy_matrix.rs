//! The policy over its whole matrix — every role × action × purpose × consent state × involvement ×
//! justification — checked against hand-written expectations and against the invariants of
//! DESIGN.md, plus a property test that no sequence of consent changes and queries discloses
//! another agency's involvement without a valid basis at that moment.

use proptest::prelude::*;
use signaalpoort_core::consent::{
    consent_state, ConsentGiver, ConsentRecord, ConsentState, Person,
};
use signaalpoort_core::involvement::{disclose, MatchLevel, OtherInvolvement};
use signaalpoort_core::policy::{decide, Action, Decision, PolicyRequest, POLICY_TABLE};
use signaalpoort_core::{
    Agency, Basis, Category, ContactPoint, DenyReason, Justification, Oin, Purpose, Role,
    SubjectPseudonym,
};
use time::Duration;

const ACTIONS: &[Action] = &[
    Action::RegisterSignal,
    Action::WithdrawSignal,
    Action::ListSignals,
    Action::QueryInvolvement,
    Action::ReceiveNotifications,
    Action::DeclareHousehold,
    Action::DissolveHousehold,
    Action::RecordConsent,
    Action::WithdrawConsent,
    Action::ListConsents,
    Action::QueryAccessLog,
    Action::ExportAccessLog,
    Action::ReadCheckpoints,
    Action::WatchAlerts,
    Action::CitizenReport,
    Action::ProposeCoordinator,
    Action::RespondToProposal,
    Action::HandOver,
    Action::StepDown,
    Action::GetCoordination,
    Action::GetHistory,
    Action::GetChronicity,
    Action::ProveAccessRecord,
];

/// Actions that tell the caller something about another agency's involvement.
const DISCLOSING: &[Action] = &[
    Action::QueryInvolvement,
    Action::ReceiveNotifications,
    Action::GetCoordination,
    Action::GetHistory,
    Action::GetChronicity,
];

const AUDIT_ACTIONS: &[Action] = &[
    Action::QueryAccessLog,
    Action::ExportAccessLog,
    Action::ReadCheckpoints,
    Action::WatchAlerts,
    Action::CitizenReport,
];

fn consent_states() -> Vec<ConsentState> {
    vec![
        ConsentState::None,
        ConsentState::Valid {
            consent_id: "c-1".into(),
        },
        ConsentState::Expired,
        ConsentState::Withdrawn,
        ConsentState::WrongPurpose,
        ConsentState::AgeRuleNotMet,
    ]
}

fn justification() -> Justification {
    Justification::parse_optional("melding over onveilige thuissituatie, triage vandaag")
        .unwrap()
        .unwrap()
}

fn purposes() -> Vec<Option<Purpose>> {
    std::iter::once(None)
        .chain(Purpose::ALL.iter().copied().map(Some))
        .collect()
}

/// (role, action, purpose, consent state, involved, justified, decision)
type Cell = (
    Role,
    Action,
    Option<Purpose>,
    ConsentState,
    bool,
    bool,
    Decision,
);
/// (role, action, purpose, consent state, involved, justified, expected basis or reason)
type Case = (
    Role,
    Action,
    Option<Purpose>,
    ConsentState,
    bool,
    bool,
    Result<Basis, DenyReason>,
);

/// Every cell of the matrix, with its decision.
fn matrix() -> Vec<Cell> {
    let j = justification();
    let mut out = Vec::new();
    for &role in Role::ALL {
        for &action in ACTIONS {
            for purpose in purposes() {
                for consent in consent_states() {
                    for involved in [false, true] {
                        for justified in [false, true] {
                            let d = decide(&PolicyRequest {
                                role,
                                action,
                                purpose,
                                involved,
                                consent: &consent,
                                justification: justified.then_some(&j),
                            });
                            out.push((
                                role,
                                action,
                                purpose,
                                consent.clone(),
                                involved,
                                justified,
                                d,
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_matrix_is_complete() {
    assert_eq!(
        matrix().len(),
        Role::ALL.len() * ACTIONS.len() * purposes().len() * consent_states().len() * 2 * 2
    );
}

#[test]
fn deny_by_default_what_the_table_does_not_name() {
    for (role, action, purpose, _, _, _, d) in matrix() {
        let listed = POLICY_TABLE.iter().any(|r| {
            r.action == action
                && r.roles.contains(&role)
                && match purpose {
                    None => r.purposes.is_empty(),
                    Some(p) => r.purposes.contains(&p),
                }
        });
        if !listed {
            assert!(
                matches!(
                    d,
                    Decision::Deny(DenyReason::RoleNotPermitted | DenyReason::PurposeNotAllowed)
                ),
                "{role:?} {action:?} {purpose:?} is not in the table but got {d:?}"
            );
        }
    }
}

#[test]
fn disclosure_needs_involvement_and_a_valid_consent_or_an_open_safety_basis() {
    for (role, action, purpose, consent, involved, justified, d) in matrix() {
        if !DISCLOSING.contains(&action) {
            continue;
        }
        let Decision::Allow(permit) = d else { continue };
        assert!(involved, "{role:?} {action:?} allowed without involvement");
        match permit.basis() {
            Basis::Consent => {
                assert!(
                    matches!(consent, ConsentState::Valid { .. }),
                    "{role:?} {action:?} consent basis with {consent:?}"
                );
                assert_eq!(permit.consent_id(), Some("c-1"));
                // A justified call on a row that allows the safety basis holds it too (for the
                // persons the consent does not cover), and is flagged for review like any other.
                assert_eq!(permit.flagged_for_review(), permit.safety_holds());
                if permit.safety_holds() {
                    assert!(
                        justified,
                        "{role:?} {action:?} safety without justification"
                    );
                    assert_eq!(purpose, Some(Purpose::ChildSafety));
                }
            }
            Basis::Safety => {
                assert!(
                    justified,
                    "{role:?} {action:?} safety basis without justification"
                );
                assert_eq!(
                    purpose,
                    Some(Purpose::ChildSafety),
                    "{role:?} {action:?} safety basis for {purpose:?}"
                );
                assert!(
                    permit.flagged_for_review(),
                    "every safety-basis use is flagged"
                );
                assert!(
                    !matches!(consent, ConsentState::Valid { .. }),
                    "consent is preferred over the safety basis"
                );
            }
            Basis::RoleRule => panic!("{role:?} {action:?} disclosed on a role rule"),
        }
    }
}

#[test]
fn auditors_only_audit_and_care_roles_never_audit() {
    for (role, action, _, _, _, _, d) in matrix() {
        let allowed = matches!(d, Decision::Allow(_));
        if role == Role::Auditor && allowed {
            assert!(
                AUDIT_ACTIONS.contains(&action),
                "auditor allowed {action:?}"
            );
        }
        if role != Role::Auditor && AUDIT_ACTIONS.contains(&action) {
            assert_eq!(
                d,
                Decision::Deny(DenyReason::RoleNotPermitted),
                "{role:?} {action:?}"
            );
        }
    }
}

#[test]
fn the_reason_names_the_missing_basis() {
    // Hand-computed: (role, action, purpose, consent, involved, justified) → expected outcome.
    use Action::*;
    use Purpose::*;
    use Role::*;
    let none = ConsentState::None;
    let valid = ConsentState::Valid {
        consent_id: "c-1".into(),
    };
    let cases: Vec<Case> = vec![
        (
            Wij,
            QueryInvolvement,
            Some(CareCoordination),
            valid.clone(),
            true,
            false,
            Ok(Basis::Consent),
        ),
        (
            Wij,
            QueryInvolvement,
            Some(CareCoordination),
            none.clone(),
            true,
            false,
            Err(DenyReason::ConsentMissing),
        ),
        (
            Wij,
            QueryInvolvement,
            Some(CareCoordination),
            ConsentState::Expired,
            true,
            false,
            Err(DenyReason::ConsentExpired),
        ),
        (
            Wij,
            QueryInvolvement,
            Some(CareCoordination),
            ConsentState::Withdrawn,
            true,
            false,
            Err(DenyReason::ConsentWithdrawn),
        ),
        (
            Wij,
            QueryInvolvement,
            Some(CareCoordination),
            ConsentState::AgeRuleNotMet,
            true,
            false,
            Err(DenyReason::AgeRuleNotMet),
        ),
        (
            Wij,
            QueryInvolvement,
            Some(CareCoordination),
            ConsentState::WrongPurpose,
            true,
            false,
            Err(DenyReason::ConsentWrongPurpose),
        ),
        (
            Wij,
            QueryInvolvement,
            Some(CareCoordination),
            valid.clone(),
            false,
            false,
            Err(DenyReason::NotInvolved),
        ),
        // A justification does not replace consent outside the child-safety purpose.
        (
            Ggd,
            QueryInvolvement,
            Some(CareCoordination),
            none.clone(),
            true,
            true,
            Err(DenyReason::ConsentMissing),
        ),
        (
            VeiligThuis,
            QueryInvolvement,
            Some(ChildSafety),
            none.clone(),
            true,
            true,
            Ok(Basis::Safety),
        ),
        (
            VeiligThuis,
            QueryInvolvement,
            Some(ChildSafety),
            none.clone(),
            true,
            false,
            Err(DenyReason::JustificationRequired),
        ),
        (
            VeiligThuis,
            QueryInvolvement,
            Some(ChildSafety),
            valid.clone(),
            true,
            true,
            Ok(Basis::Consent),
        ),
        (
            Ggd,
            QueryInvolvement,
            Some(ChildSafety),
            none.clone(),
            true,
            true,
            Ok(Basis::Safety),
        ),
        // The gemeente may ask with consent for care, but has no child-safety rule.
        (
            Gemeente,
            QueryInvolvement,
            Some(ChildSafety),
            none.clone(),
            true,
            true,
            Err(DenyReason::PurposeNotAllowed),
        ),
        (
            Wij,
            QueryInvolvement,
            None,
            valid.clone(),
            true,
            false,
            Err(DenyReason::PurposeNotAllowed),
        ),
        (
            Wij,
            QueryInvolvement,
            Some(Audit),
            valid.clone(),
            true,
            false,
            Err(DenyReason::PurposeNotAllowed),
        ),
        (
            Gemeente,
            DeclareHousehold,
            None,
            none.clone(),
            false,
            false,
            Ok(Basis::RoleRule),
        ),
        (
            Wij,
            DeclareHousehold,
            None,
            none.clone(),
            true,
            false,
            Err(DenyReason::RoleNotPermitted),
        ),
        (
            Auditor,
            RegisterSignal,
            None,
            none.clone(),
            false,
            false,
            Err(DenyReason::RoleNotPermitted),
        ),
        (
            Auditor,
            QueryAccessLog,
            None,
            none.clone(),
            false,
            false,
            Ok(Basis::RoleRule),
        ),
        (
            Wij,
            RecordConsent,
            None,
            none.clone(),
            false,
            false,
            Err(DenyReason::NotInvolved),
        ),
        (
            Wij,
            RecordConsent,
            None,
            none.clone(),
            true,
            false,
            Ok(Basis::RoleRule),
        ),
        (
            Ggd,
            GetHistory,
            Some(ChildSafety),
            none.clone(),
            true,
            true,
            Err(DenyReason::PurposeNotAllowed),
        ),
        (
            VeiligThuis,
            GetChronicity,
            Some(ChildSafety),
            none.clone(),
            true,
            true,
            Ok(Basis::Safety),
        ),
        (
            Jeugdhulp,
            ProposeCoordinator,
            Some(CaseCoordination),
            ConsentState::Expired,
            true,
            false,
            Err(DenyReason::ConsentExpired),
        ),
    ];
    let j = justification();
    for (role, action, purpose, consent, involved, justified, want) in cases {
        let got = match decide(&PolicyRequest {
            role,
            action,
            purpose,
            involved,
            consent: &consent,
            justification: justified.then_some(&j),
        }) {
            Decision::Allow(p) => Ok(p.basis()),
            Decision::Deny(r) => Err(r),
        };
        assert_eq!(
            got, want,
            "{role:?} {action:?} {purpose:?} {consent:?} involved={involved} justified={justified}"
        );
    }
}

// --- the property: no sequence of calls discloses without a valid basis ---

fn agency(n: u8, role: Role) -> Agency {
    Agency {
        oin: Oin::parse(&format!("000000990000000000{n:02}")).unwrap(),
        name: format!("agency {n}"),
        role,
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// A consent naming some roles for some purposes, valid for `days`.
    RecordConsent {
        roles: Vec<Role>,
        purposes: Vec<Purpose>,
        days: i64,
    },
    /// Withdraw the consent at this index (modulo the number recorded).
    Withdraw(usize),
    /// Time passes.
    Advance { days: i64 },
    /// The viewer (index into the care roles) asks about the other, for a purpose, maybe justified.
    Query {
        viewer: usize,
        purpose: Purpose,
        justified: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let role = prop::sample::select(Role::CARE.to_vec());
    let purpose = prop::sample::select(Purpose::ALL.to_vec());
    prop_oneof![
        (
            prop::collection::vec(role, 1..4),
            prop::collection::vec(purpose.clone(), 1..3),
            1i64..400
        )
            .prop_map(|(roles, purposes, days)| Step::RecordConsent {
                roles,
                purposes,
                days
            }),
        (0usize..8).prop_map(Step::Withdraw),
        (1i64..200).prop_map(|days| Step::Advance { days }),
        (0usize..5, purpose, any::<bool>()).prop_map(|(viewer, purpose, justified)| Step::Query {
            viewer,
            purpose,
            justified
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn no_sequence_of_calls_discloses_without_a_valid_basis(steps in prop::collection::vec(step(), 1..40)) {
        let subject = SubjectPseudonym::from_bytes([7; 32]);
        let start = time::macros::datetime!(2026-01-05 09:00 UTC);
        let mut now = start;
        let mut consents: Vec<ConsentRecord> = Vec::new();
        let other = OtherInvolvement {
            signal_id: "other".into(),
            agency: agency(50, Role::Ggd),
            contact: ContactPoint { team: "JGZ".into(), phone: "050 000 0000".into(), email: None },
            category: Category::Health,
            since: start,
            level: MatchLevel::Subject,
        };
        let j = justification();
        for step in steps {
            match step {
                Step::RecordConsent { roles, purposes, days } => consents.push(ConsentRecord {
                    id: format!("c-{}", consents.len()),
                    recorded_by: agency(1, Role::Wij).oin,
                    subject,
                    include_household: false,
                    givers: vec![ConsentGiver::Subject],
                    purposes,
                    roles,
                    agencies: Vec::new(),
                    recorded_at: now,
                    valid_until: now + Duration::days(days),
                    renew_by: None,
                    withdrawn_at: None,
                    evidence_ref: "doc".into(),
                }),
                Step::Withdraw(i) => {
                    let n = consents.len();
                    if n > 0 && consents[i % n].withdrawn_at.is_none() {
                        consents[i % n].withdrawn_at = Some(now);
                    }
                }
                Step::Advance { days } => now += Duration::days(days),
                Step::Query { viewer, purpose, justified } => {
                    let viewer = agency(10 + viewer as u8, Role::CARE[viewer % Role::CARE.len()]);
                    // An adult who consents for herself: the givers cover her.
                    let person = Person { subject, born: Some(time::macros::date!(1980 - 01 - 01)) };
                    let state = consent_state(&consents, &person, &viewer, purpose, now);
                    let decision = decide(&PolicyRequest {
                        role: viewer.role,
                        action: Action::QueryInvolvement,
                        purpose: Some(purpose),
                        involved: true,
                        consent: &state,
                        justification: justified.then_some(&j),
                    });
                    let Decision::Allow(permit) = decision else { continue };
                    if disclose(&permit, &viewer, &person, &consents, &other, now).is_none() {
                        continue;
                    }
                    // Disclosed: there must be a basis at this moment.
                    let by_consent = consents.iter().any(|c| {
                        c.withdrawn_at.is_none_or(|w| w > now)
                            && c.valid_until > now
                            && c.purposes.contains(&purpose)
                            && c.roles.contains(&viewer.role)
                            && c.roles.contains(&other.agency.role)
                    });
                    let by_safety = permit.safety_holds() && justified && purpose == Purpose::ChildSafety;
                    prop_assert!(by_consent || by_safety, "disclosed without basis: {permit:?} at {now} with {consents:?}");
                    prop_assert!(now >= start);
                }
            }
        }
    }
}
