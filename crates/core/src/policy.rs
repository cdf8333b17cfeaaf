//! The policy table: role × action × purpose × basis → allow or deny, with a named reason.
//!
//! Deny by default: an action is allowed only where a row of [`POLICY_TABLE`] allows it. The table
//! is data, printed verbatim into POLICY.md by `signaalpoort policy`, so a privacy officer reads the
//! same rules the code runs. Code that discloses takes a [`Permit`], which only [`decide`] creates.

use serde::Serialize;

use crate::consent::ConsentState;
use crate::{Basis, DenyReason, Justification, Purpose, Role};

/// Every action a caller can take; one per RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    RegisterSignal,
    WithdrawSignal,
    ListSignals,
    QueryInvolvement,
    ReceiveNotifications,
    DeclareHousehold,
    DissolveHousehold,
    RecordConsent,
    WithdrawConsent,
    ListConsents,
    QueryAccessLog,
    ExportAccessLog,
    ReadCheckpoints,
    WatchAlerts,
    CitizenReport,
    ProposeCoordinator,
    RespondToProposal,
    HandOver,
    StepDown,
    GetCoordination,
    GetHistory,
    GetChronicity,
    ProveAccessRecord,
}

impl Action {
    /// The name used in the access log (the RPC name).
    pub fn name(self) -> &'static str {
        match self {
            Action::RegisterSignal => "RegisterSignal",
            Action::WithdrawSignal => "WithdrawSignal",
            Action::ListSignals => "ListSignals",
            Action::QueryInvolvement => "QueryInvolvement",
            Action::ReceiveNotifications => "ReceiveNotifications",
            Action::DeclareHousehold => "DeclareHousehold",
            Action::DissolveHousehold => "DissolveHousehold",
            Action::RecordConsent => "RecordConsent",
            Action::WithdrawConsent => "WithdrawConsent",
            Action::ListConsents => "ListConsents",
            Action::QueryAccessLog => "QueryAccessLog",
            Action::ExportAccessLog => "ExportAccessLog",
            Action::ReadCheckpoints => "ReadCheckpoints",
            Action::WatchAlerts => "WatchAlerts",
            Action::CitizenReport => "CitizenReport",
            Action::ProposeCoordinator => "ProposeCoordinator",
            Action::RespondToProposal => "RespondToProposal",
            Action::HandOver => "HandOver",
            Action::StepDown => "StepDown",
            Action::GetCoordination => "GetCoordination",
            Action::GetHistory => "GetHistory",
            Action::GetChronicity => "GetChronicity",
            Action::ProveAccessRecord => "ProveAccessRecord",
        }
    }
}

/// What a row demands beyond the caller's role and purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Needs {
    /// The role is enough (own data, or no personal data disclosed).
    RoleOnly,
    /// The caller must have an active signal on the person or household concerned.
    Involvement,
    /// Involvement, and a valid consent for the purpose.
    Consent,
    /// Involvement, and a valid consent for the purpose — or, without one, the safety basis with a
    /// written justification (flagged for review, alerted to auditors).
    ConsentOrSafetyBasis,
}

/// One row of the policy table.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    /// Stable name, written to the access log as the allowing reason.
    pub name: &'static str,
    pub action: Action,
    pub roles: &'static [Role],
    /// Purposes the row applies to; empty means the call carries no purpose.
    pub purposes: &'static [Purpose],
    pub needs: Needs,
}

use Action::*;
use Purpose::*;
use Role::*;

const CARE: &[Role] = Role::CARE;
/// Roles that may invoke the safety basis (meldcode professionals and Veilig Thuis); the
/// municipality as administrator may not.
const SAFETY_ROLES: &[Role] = &[VeiligThuis, Wij, Ggd, Jeugdhulp];
const SHARING: &[Purpose] = &[CareCoordination, CaseCoordination];
const NO_PURPOSE: &[Purpose] = &[];

/// The whole policy. Rows are tried in order; the first row whose action, role and purpose match
/// decides. No row: denied.
pub const POLICY_TABLE: &[Rule] = &[
    // Own signals: registering, withdrawing and listing discloses nothing about others.
    Rule {
        name: "OWN_SIGNAL",
        action: RegisterSignal,
        roles: CARE,
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    Rule {
        name: "OWN_SIGNAL",
        action: WithdrawSignal,
        roles: CARE,
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    Rule {
        name: "OWN_SIGNAL",
        action: ListSignals,
        roles: CARE,
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    // Households come from the municipality (BRP), the authoritative source.
    Rule {
        name: "HOUSEHOLD_SOURCE",
        action: DeclareHousehold,
        roles: &[Gemeente],
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    Rule {
        name: "HOUSEHOLD_SOURCE",
        action: DissolveHousehold,
        roles: &[Gemeente],
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    // Consent is recorded and withdrawn by agencies that work with the family.
    Rule {
        name: "INVOLVED_RECORDS_CONSENT",
        action: RecordConsent,
        roles: CARE,
        purposes: NO_PURPOSE,
        needs: Needs::Involvement,
    },
    Rule {
        name: "INVOLVED_WITHDRAWS_CONSENT",
        action: WithdrawConsent,
        roles: CARE,
        purposes: NO_PURPOSE,
        needs: Needs::Involvement,
    },
    Rule {
        name: "INVOLVED_LISTS_CONSENT",
        action: ListConsents,
        roles: CARE,
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    // Learning about other agencies' involvement: consent for a sharing purpose ...
    Rule {
        name: "CONSENT_SHARING",
        action: QueryInvolvement,
        roles: CARE,
        purposes: SHARING,
        needs: Needs::Consent,
    },
    Rule {
        name: "CONSENT_SHARING",
        action: ReceiveNotifications,
        roles: CARE,
        purposes: SHARING,
        needs: Needs::Consent,
    },
    // ... or, for a child's safety, consent or the safety basis.
    Rule {
        name: "CHILD_SAFETY",
        action: QueryInvolvement,
        roles: SAFETY_ROLES,
        purposes: &[ChildSafety],
        needs: Needs::ConsentOrSafetyBasis,
    },
    Rule {
        name: "CHILD_SAFETY",
        action: ReceiveNotifications,
        roles: SAFETY_ROLES,
        purposes: &[ChildSafety],
        needs: Needs::ConsentOrSafetyBasis,
    },
    // Case coordination (casusregie): involved agencies, with consent for case coordination, or
    // Veilig Thuis and meldcode professionals on the safety basis.
    Rule {
        name: "CASE_COORDINATION",
        action: ProposeCoordinator,
        roles: CARE,
        purposes: &[CaseCoordination],
        needs: Needs::Consent,
    },
    Rule {
        name: "CASE_COORDINATION",
        action: RespondToProposal,
        roles: CARE,
        purposes: &[CaseCoordination],
        needs: Needs::Consent,
    },
    Rule {
        name: "CASE_COORDINATION",
        action: HandOver,
        roles: CARE,
        purposes: &[CaseCoordination],
        needs: Needs::Consent,
    },
    Rule {
        name: "CASE_COORDINATION",
        action: StepDown,
        roles: CARE,
        purposes: &[CaseCoordination, ChildSafety],
        needs: Needs::Involvement,
    },
    Rule {
        name: "CASE_COORDINATION",
        action: GetCoordination,
        roles: CARE,
        purposes: &[CaseCoordination],
        needs: Needs::Consent,
    },
    Rule {
        name: "CASE_COORDINATION",
        action: GetHistory,
        roles: CARE,
        purposes: &[CaseCoordination],
        needs: Needs::Consent,
    },
    Rule {
        name: "CASE_COORDINATION",
        action: GetChronicity,
        roles: CARE,
        purposes: &[CaseCoordination],
        needs: Needs::Consent,
    },
    Rule {
        name: "CHILD_SAFETY",
        action: ProposeCoordinator,
        roles: SAFETY_ROLES,
        purposes: &[ChildSafety],
        needs: Needs::ConsentOrSafetyBasis,
    },
    Rule {
        name: "CHILD_SAFETY",
        action: RespondToProposal,
        roles: SAFETY_ROLES,
        purposes: &[ChildSafety],
        needs: Needs::ConsentOrSafetyBasis,
    },
    Rule {
        name: "CHILD_SAFETY",
        action: GetCoordination,
        roles: SAFETY_ROLES,
        purposes: &[ChildSafety],
        needs: Needs::ConsentOrSafetyBasis,
    },
    Rule {
        name: "CHILD_SAFETY",
        action: GetHistory,
        roles: &[VeiligThuis],
        purposes: &[ChildSafety],
        needs: Needs::ConsentOrSafetyBasis,
    },
    Rule {
        name: "CHILD_SAFETY",
        action: GetChronicity,
        roles: &[VeiligThuis],
        purposes: &[ChildSafety],
        needs: Needs::ConsentOrSafetyBasis,
    },
    // Supervision: auditors read the access log and nothing else.
    Rule {
        name: "SUPERVISION",
        action: QueryAccessLog,
        roles: &[Auditor],
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    Rule {
        name: "SUPERVISION",
        action: ExportAccessLog,
        roles: &[Auditor],
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    Rule {
        name: "SUPERVISION",
        action: ReadCheckpoints,
        roles: &[Auditor],
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    Rule {
        name: "SUPERVISION",
        action: WatchAlerts,
        roles: &[Auditor],
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    Rule {
        name: "SUPERVISION",
        action: CitizenReport,
        roles: &[Auditor],
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
    // Every agency can prove its own calls are in the log (issue 14): an inclusion proof of its
    // own records against a signed checkpoint; the handler refuses anyone else's record.
    // Auditors verify the whole log instead (ExportAccessLog, `audit verify`).
    Rule {
        name: "OWN_RECORDS",
        action: ProveAccessRecord,
        roles: CARE,
        purposes: NO_PURPOSE,
        needs: Needs::RoleOnly,
    },
];

/// What the caller asks, with the facts the table needs. Built by the server from verified
/// identity and the store's state; the policy itself reads nothing.
#[derive(Debug)]
pub struct PolicyRequest<'a> {
    pub role: Role,
    pub action: Action,
    pub purpose: Option<Purpose>,
    /// Whether the caller has an active signal on the person or household concerned.
    pub involved: bool,
    pub consent: &'a ConsentState,
    pub justification: Option<&'a Justification>,
}

/// Proof that the policy allowed something, naming the basis. Fields are private: only [`decide`]
/// makes one, so code that needs a permit cannot disclose without a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    basis: Basis,
    rule: &'static str,
    purpose: Option<Purpose>,
    consent_id: Option<String>,
    /// The caller gave a safety justification on a row that allows the safety basis: it then holds
    /// for every person the call touches, whether or not a consent also covers the caller's own.
    safety: bool,
}

impl Permit {
    pub fn basis(&self) -> Basis {
        self.basis
    }
    pub fn rule(&self) -> &'static str {
        self.rule
    }
    pub fn purpose(&self) -> Option<Purpose> {
        self.purpose
    }
    pub fn consent_id(&self) -> Option<&str> {
        self.consent_id.as_deref()
    }
    /// Whether the safety basis holds for this call (invoked with a justification). A consent on
    /// the caller's own person may still be the call's basis; persons it does not cover are then
    /// disclosed on the safety basis.
    pub fn safety_holds(&self) -> bool {
        self.safety
    }
    /// Calls on which the safety basis holds are flagged for after-the-fact review and alerted:
    /// whoever invokes it answers for it, whatever a consent also covered.
    pub fn flagged_for_review(&self) -> bool {
        self.safety
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Permit),
    Deny(DenyReason),
}

impl Decision {
    pub fn permit(&self) -> Option<&Permit> {
        match self {
            Decision::Allow(p) => Some(p),
            Decision::Deny(_) => None,
        }
    }
}

/// Decides a request against [`POLICY_TABLE`]. Pure; permission is decided before anything about
/// other agencies is looked at, so a denial reveals nothing.
pub fn decide(req: &PolicyRequest<'_>) -> Decision {
    let row = match rule_for(req.role, req.action, req.purpose) {
        Ok(row) => row,
        Err(reason) => return Decision::Deny(reason),
    };
    let safety = row.needs == Needs::ConsentOrSafetyBasis && req.justification.is_some();
    let allow = |basis, consent_id| {
        Decision::Allow(Permit {
            basis,
            rule: row.name,
            purpose: req.purpose,
            consent_id,
            safety: basis == Basis::Safety || safety,
        })
    };
    match row.needs {
        Needs::RoleOnly => allow(Basis::RoleRule, None),
        _ if !req.involved => Decision::Deny(DenyReason::NotInvolved),
        Needs::Involvement => allow(Basis::RoleRule, None),
        Needs::Consent | Needs::ConsentOrSafetyBasis => {
            if let ConsentState::Valid { consent_id } = req.consent {
                return allow(Basis::Consent, Some(consent_id.clone()));
            }
            if row.needs == Needs::ConsentOrSafetyBasis {
                return match req.justification {
                    Some(_) => allow(Basis::Safety, None),
                    None => Decision::Deny(DenyReason::JustificationRequired),
                };
            }
            Decision::Deny(match req.consent {
                ConsentState::WrongPurpose => DenyReason::ConsentWrongPurpose,
                ConsentState::Expired => DenyReason::ConsentExpired,
                ConsentState::Withdrawn => DenyReason::ConsentWithdrawn,
                ConsentState::AgeRuleNotMet => DenyReason::AgeRuleNotMet,
                ConsentState::None | ConsentState::Valid { .. } => DenyReason::ConsentMissing,
            })
        }
    }
}

/// The row that governs a role's action for a purpose, before any per-person fact is known. Streams
/// use this to refuse at once what no notification could ever pass.
pub fn rule_for(
    role: Role,
    action: Action,
    purpose: Option<Purpose>,
) -> Result<&'static Rule, DenyReason> {
    let mut for_role = POLICY_TABLE
        .iter()
        .filter(|r| r.action == action && r.roles.contains(&role))
        .peekable();
    if for_role.peek().is_none() {
        return Err(DenyReason::RoleNotPermitted);
    }
    for_role
        .find(|r| match purpose {
            None => r.purposes.is_empty(),
            Some(p) => r.purposes.contains(&p),
        })
        .ok_or(DenyReason::PurposeNotAllowed)
}

/// The table as Markdown, for POLICY.md and `signaalpoort policy`.
pub fn policy_table_markdown() -> String {
    let mut out = String::from(
        "| # | action | roles | purposes | needs | rule |\n|---|---|---|---|---|---|\n",
    );
    for (i, r) in POLICY_TABLE.iter().enumerate() {
        let roles: Vec<_> = r.roles.iter().map(|r| r.code()).collect();
        let purposes = if r.purposes.is_empty() {
            "(none)".to_owned()
        } else {
            r.purposes
                .iter()
                .map(|p| p.code())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let needs = match r.needs {
            Needs::RoleOnly => "role only",
            Needs::Involvement => "own active signal",
            Needs::Consent => "own active signal + valid consent",
            Needs::ConsentOrSafetyBasis => {
                "own active signal + valid consent, or safety basis with justification"
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            r.action.name(),
            roles.join(", "),
            purposes,
            needs,
            r.name
        ));
    }
    out
}
