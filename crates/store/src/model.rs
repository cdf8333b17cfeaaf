//! The store's vocabulary: mutations in, outcomes and rows out. Core types where they exist; agency
//! names and roles are not stored (the registry in configuration is their source), only OINs.

use serde::{Deserialize, Serialize};
use signaalpoort_core::consent::ConsentRecord;
use signaalpoort_core::involvement::MatchLevel;
use signaalpoort_core::{Category, ContactPoint, DenyReason, Oin, SubjectPseudonym};
use time::OffsetDateTime;

/// A state change. `None` is a call that only reads: it still gets its record.
#[derive(Debug, Clone)]
pub enum Mutation {
    None,
    /// Registers a signal, or refreshes the agency's active signal of the same category on the same
    /// subject (new contact point and expiry, same id). A new signal notifies both sides of every
    /// match.
    RegisterSignal {
        new_id: String,
        agency: Oin,
        subject: SubjectPseudonym,
        category: Category,
        contact: ContactPoint,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    },
    /// Withdraws the agency's own active signal; `NotFound` otherwise (also for another agency's
    /// signal, so existence is not revealed). Notifies the ends of its matches.
    WithdrawSignal {
        agency: Oin,
        signal_id: String,
        now: OffsetDateTime,
    },
    /// Declares (or replaces) the household the agency knows as `household_ref`. Notifies newly
    /// formed household-level matches, and the end of those that no longer hold.
    DeclareHousehold {
        agency: Oin,
        household_ref: String,
        new_id: String,
        members: Vec<HouseholdMember>,
        now: OffsetDateTime,
    },
    DissolveHousehold {
        agency: Oin,
        household_ref: String,
        now: OffsetDateTime,
    },
    RecordConsent(ConsentRecord),
    /// Withdraws a consent. The server has checked that `by` may (recorder, or involved with a
    /// covered person); the store checks existence.
    WithdrawConsent {
        consent_id: String,
        now: OffsetDateTime,
    },
    /// Deletes signals that expired or were withdrawn before `now`, their notifications, and
    /// dissolved households; notifies the ends of matches of signals that expired.
    PurgeExpired {
        now: OffsetDateTime,
    },
    /// A case-coordination command on a household; the involved agencies are read inside the
    /// transaction, so the state machine sees who is involved at commit time.
    Coordinate {
        household_id: String,
        command: signaalpoort_core::coordination::Command,
        now: OffsetDateTime,
    },
    /// Reminds agencies that a match has no coordinator: only `recipients` (those whose basis lets
    /// them know of another agency involved), and only those still involved at commit.
    RemindCoordination {
        household_id: String,
        recipients: std::collections::BTreeSet<Oin>,
        now: OffsetDateTime,
    },
    /// Numbers notifications for their recipient at first delivery (the recipient's next cursors,
    /// in the order given); ones numbered already keep their number.
    DeliverNotifications {
        recipient: Oin,
        ids: Vec<u64>,
    },
    /// Removes access-log records older than `before` (retention), keeping the hash of the last
    /// removed record as the anchor the remaining chain is verified from.
    PurgeAccessLog {
        before: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdMember {
    pub subject: SubjectPseudonym,
    pub protected: bool,
    /// From the municipality's declaration (BRP): the age rules' only source of a person's age.
    #[serde(default)]
    pub birth_date: Option<time::Date>,
}

/// What a mutation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    None,
    SignalRegistered {
        signal: SignalRow,
        refreshed: bool,
    },
    SignalWithdrawn {
        #[serde(with = "time::serde::timestamp::microseconds")]
        at: OffsetDateTime,
    },
    HouseholdDeclared {
        household_id: String,
        replaced: bool,
        member_count: u32,
        #[serde(with = "time::serde::timestamp::microseconds")]
        at: OffsetDateTime,
    },
    HouseholdDissolved {
        #[serde(with = "time::serde::timestamp::microseconds")]
        at: OffsetDateTime,
    },
    ConsentRecorded {
        consent: ConsentRecord,
    },
    ConsentWithdrawn {
        #[serde(with = "time::serde::timestamp::microseconds")]
        at: OffsetDateTime,
    },
    Purged {
        signals: u64,
        households: u64,
    },
    Coordinated {
        state: signaalpoort_core::coordination::CoordinationState,
        event: signaalpoort_core::coordination::Event,
    },
    Reminded {
        recipients: u32,
    },
    /// Notifications numbered for their recipient: (notification id, the recipient's cursor), in
    /// the order asked. One already numbered (by a concurrent read) keeps its number.
    NotificationsDelivered {
        numbered: Vec<(u64, u64)>,
        /// The recipient's last cursor before these: a reader that saw another value raced with
        /// another replica and must re-read before sending, so no cursor is skipped.
        previous_last: u64,
    },
    LogPurged {
        /// Records removed by this purge.
        records: u64,
        /// The chain now starts after this record.
        anchor_seq: u64,
    },
}

/// Why a mutation was refused by the state it met. Changes nothing; the call's record says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NotFound(String),
    FailedPrecondition(String),
    PermissionDenied(DenyReason),
    /// The request id was used before for another RPC or other content (AIP-155).
    RequestIdReused,
    /// The agency named to coordinate is not one the caller's basis covers (whatever the reason:
    /// the answer must not say whether it is involved).
    CoordinatorNotEligible,
    /// A statement of this request failed (a bug or a constraint the rules did not foresee): this
    /// request changed nothing; the others in its batch were applied without it.
    StatementFailed(String),
}

impl Rejection {
    /// The reason written to the access log.
    pub fn log_reason(&self) -> String {
        match self {
            Rejection::NotFound(_) => "NOT_FOUND".to_owned(),
            Rejection::FailedPrecondition(_) => "FAILED_PRECONDITION".to_owned(),
            Rejection::RequestIdReused => "REQUEST_ID_REUSED".to_owned(),
            Rejection::CoordinatorNotEligible => "COORDINATOR_NOT_ELIGIBLE".to_owned(),
            Rejection::StatementFailed(_) => "STORE_STATEMENT_FAILED".to_owned(),
            Rejection::PermissionDenied(r) => r.error_reason(),
        }
    }
}

pub type Outcome = Result<Effect, Rejection>;

/// A signal as stored. The subject is a pseudonym; nothing else identifies the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRow {
    pub id: String,
    pub agency: Oin,
    pub subject: SubjectPseudonym,
    pub category: Category,
    pub contact: ContactPoint,
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub registered_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub refreshed_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::microseconds::option")]
    pub withdrawn_at: Option<OffsetDateTime>,
}

impl SignalRow {
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.withdrawn_at.is_none() && self.expires_at > now
    }
}

/// Another agency's active signal matching one of the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRow {
    pub signal_id: String,
    pub agency: Oin,
    pub subject: SubjectPseudonym,
    pub category: Category,
    pub contact: ContactPoint,
    pub since: OffsetDateTime,
    pub level: MatchLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Match,
    MatchEnded,
    Coordination,
    CoordinationReminder,
}

impl NotificationKind {
    pub fn code(self) -> &'static str {
        match self {
            NotificationKind::Match => "match",
            NotificationKind::MatchEnded => "match_ended",
            NotificationKind::Coordination => "coordination",
            NotificationKind::CoordinationReminder => "coordination_reminder",
        }
    }
    pub fn from_code(s: &str) -> Option<Self> {
        match s {
            "match" => Some(NotificationKind::Match),
            "match_ended" => Some(NotificationKind::MatchEnded),
            "coordination" => Some(NotificationKind::Coordination),
            "coordination_reminder" => Some(NotificationKind::CoordinationReminder),
            _ => None,
        }
    }
}

/// A stored notification for one agency, with the other signal as it is now (joined at read time,
/// so delivery can be re-checked against the policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    /// The row's own id (creation order); never shown to anyone.
    pub id: u64,
    /// The recipient's cursor, given when it was first delivered; `None` while pending.
    pub seq: Option<u64>,
    pub recipient: Oin,
    pub kind: NotificationKind,
    pub recipient_signal_id: String,
    /// The recipient's signal's subject: the policy checks consent on it at delivery.
    pub recipient_subject: SubjectPseudonym,
    /// The other signal, for match notifications (absent when it has been purged).
    pub other: Option<MatchRow>,
    pub household_id: Option<String>,
    pub coordination_event: Option<String>,
    pub occurred_at: OffsetDateTime,
    /// For a MATCH_ENDED: whether its MATCH (same two signals) was delivered to the recipient.
    pub match_delivered: bool,
}

/// An alert for auditors, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertDraft {
    pub kind: AlertKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    SafetyBasisUsed,
    UnusualVolume,
    /// The log is not consistent with the last signed checkpoint; nothing more is signed.
    AccessLogFault,
    /// A witness refused a checkpoint or could not be reached.
    WitnessRefused,
}

impl AlertKind {
    pub fn code(self) -> &'static str {
        match self {
            AlertKind::SafetyBasisUsed => "safety_basis_used",
            AlertKind::UnusualVolume => "unusual_volume",
            AlertKind::AccessLogFault => "access_log_fault",
            AlertKind::WitnessRefused => "witness_refused",
        }
    }
    pub fn from_code(s: &str) -> Option<Self> {
        match s {
            "safety_basis_used" => Some(AlertKind::SafetyBasisUsed),
            "unusual_volume" => Some(AlertKind::UnusualVolume),
            "access_log_fault" => Some(AlertKind::AccessLogFault),
            "witness_refused" => Some(AlertKind::WitnessRefused),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub cursor: u64,
    pub kind: AlertKind,
    pub time: OffsetDateTime,
    pub agency_oin: String,
    pub actor_id: String,
    pub record_seq: u64,
    pub detail: String,
}

/// Filter for access-log queries; all fields optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub subject: Option<SubjectPseudonym>,
    pub household_id: Option<String>,
    pub agency_oin: Option<String>,
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub decision: Option<signaalpoort_core::access_log::DecisionCode>,
    pub reason: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub flagged_only: bool,
}

/// Latest committed notification and alert cursors, published after each commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCursor {
    pub notification: u64,
    pub alert: u64,
}

/// One row of the involvement history: counts for a household, person, quarter, agency and
/// category. The person is kept (not the signal) so a viewer sees only what its basis covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// `None` for rows written before persons were kept.
    pub subject: Option<SubjectPseudonym>,
    /// e.g. "2026-Q1"
    pub quarter: String,
    pub agency: Oin,
    pub category: Category,
    pub registered: u32,
    pub ended: u32,
    pub first_at: OffsetDateTime,
}

/// The stored coordination of a household.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinationRow {
    pub state: signaalpoort_core::coordination::CoordinationState,
    pub last_reminder: Option<OffsetDateTime>,
}
