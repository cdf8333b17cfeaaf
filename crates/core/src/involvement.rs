//! Matching and disclosure: which other agencies are involved with a person, and how much of that
//! the policy lets a caller see.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::consent::{consent_covering, ConsentRecord, Person};
use crate::policy::Permit;
use crate::{Agency, Basis, Category, ContactPoint, Oin, Purpose, Role, SubjectPseudonym};

/// How another signal relates to the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchLevel {
    /// Same person.
    Subject,
    /// Another member of a household the person belongs to.
    Household,
}

/// Another agency's active signal that matches, as the store finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherInvolvement {
    pub signal_id: String,
    pub agency: Agency,
    pub contact: ContactPoint,
    pub category: Category,
    pub since: OffsetDateTime,
    pub level: MatchLevel,
}

impl OtherInvolvement {
    /// Involvement of Veilig Thuis, or any safety signal, is sensitive: shown in full only to roles
    /// that need it for safety.
    pub fn is_sensitive(&self) -> bool {
        self.agency.role == Role::VeiligThuis || self.category == Category::Safety
    }
}

/// What the caller may see of one other involvement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclosure {
    /// `None` when withheld as sensitive: the caller learns that a professional is involved and
    /// whom to contact, not which agency or why.
    pub agency: Option<Agency>,
    pub contact: ContactPoint,
    pub category: Option<Category>,
    pub since: OffsetDateTime,
    pub level: MatchLevel,
    /// The basis for disclosing this involvement, for its own person.
    pub basis: Basis,
    /// The consent that covers the person, when `basis` is consent.
    pub consent_id: Option<String>,
}

impl Disclosure {
    pub fn withheld(&self) -> bool {
        self.agency.is_none()
    }
}

/// The one disclosure rule: that `other` is involved with `person` reaches `viewer` only on a basis
/// for that person — a consent in scope for the person (`consents`: about the person, or household
/// consents about a housemate) that covers the person today under the age rules and names the
/// viewer, the other agency and the permit's purpose; failing that, the safety basis when the call
/// invoked it with a justification. Returns the basis and the consent id.
pub fn basis_for(
    permit: &Permit,
    viewer: &Agency,
    person: &Person,
    consents: &[ConsentRecord],
    other: &Agency,
    now: OffsetDateTime,
) -> Option<(Basis, Option<String>)> {
    let purpose = permit.purpose()?;
    match permit.basis() {
        Basis::Safety => Some((Basis::Safety, None)),
        Basis::Consent => consent_covering(consents, person, viewer, Some(other), purpose, now)
            .map(|c| (Basis::Consent, Some(c.id.clone())))
            .or_else(|| permit.safety_holds().then_some((Basis::Safety, None))),
        Basis::RoleRule => None,
    }
}

/// Shapes one other involvement for a viewer holding `permit`. `consents` are those in scope for the
/// other signal's person. Returns `None` when there is no basis for that person ([`basis_for`]): it
/// is then left out silently, and nothing — no count, no error — says it exists.
pub fn disclose(
    permit: &Permit,
    viewer: &Agency,
    person: &Person,
    consents: &[ConsentRecord],
    other: &OtherInvolvement,
    now: OffsetDateTime,
) -> Option<Disclosure> {
    let (basis, consent_id) = basis_for(permit, viewer, person, consents, &other.agency, now)?;
    let purpose = permit.purpose()?;
    let sees_sensitive = viewer.role == Role::VeiligThuis || purpose == Purpose::ChildSafety;
    let full = !other.is_sensitive() || sees_sensitive;
    Some(Disclosure {
        agency: full.then(|| other.agency.clone()),
        contact: other.contact.clone(),
        category: full.then_some(other.category),
        since: other.since,
        level: other.level,
        basis,
        consent_id,
    })
}

/// A signal, as the reference matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSignal {
    pub id: String,
    pub agency: Oin,
    pub subject: SubjectPseudonym,
}

/// A household membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub household: String,
    pub subject: SubjectPseudonym,
    /// A member at a protected address is never linked to the others.
    pub protected: bool,
}

/// The reference definition of matching, used to test the stores' SQL against: the signals of other
/// agencies on the same person, or on another unprotected member of a household in which the
/// person is an unprotected member. A signal appears once, at its closest level.
pub fn reference_matches(
    of: &ActiveSignal,
    signals: &[ActiveSignal],
    memberships: &[Membership],
) -> BTreeMap<String, MatchLevel> {
    let linked_households: BTreeSet<&str> = memberships
        .iter()
        .filter(|m| m.subject == of.subject && !m.protected)
        .map(|m| m.household.as_str())
        .collect();
    let housemates: BTreeSet<SubjectPseudonym> = memberships
        .iter()
        .filter(|m| !m.protected && linked_households.contains(m.household.as_str()))
        .map(|m| m.subject)
        .filter(|s| *s != of.subject)
        .collect();
    signals
        .iter()
        .filter(|s| s.agency != of.agency)
        .filter_map(|s| {
            if s.subject == of.subject {
                Some((s.id.clone(), MatchLevel::Subject))
            } else if housemates.contains(&s.subject) {
                Some((s.id.clone(), MatchLevel::Household))
            } else {
                None
            }
        })
        .collect()
}
