//! Consent: who may exchange signals about a person, for which purposes, until when — and the
//! Dutch age rules for who must give it (Jeugdwet 7.3.5).

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::signal::{age_on, birthday};
use crate::{Agency, Oin, Purpose, Role, SubjectPseudonym};

/// Who gave a consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentGiver {
    Subject,
    ParentOrGuardian,
}

/// Why a consent does not satisfy the age rules; the message says which giver is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AgeRuleViolation {
    #[error(
        "under 12 a parent or guardian gives consent; the child's own consent alone is not enough"
    )]
    UnderTwelveNeedsParent,
    #[error("from 12 to 15 both the young person and a parent or guardian must consent")]
    TwelveToFifteenNeedsBoth,
    #[error("from 16 the young person consents alone; a parent's consent does not count")]
    SixteenPlusNeedsSubject,
    #[error(
        "the municipality has declared no birth date for this person, so the strictest rule applies: \
         both the person and a parent or guardian must consent"
    )]
    BirthDateUnknownNeedsBoth,
    #[error("at least one consent giver is required")]
    NoGiver,
}

/// Who must have given consent for a person of this age (Jeugdwet 7.3.5): `(own, parent)`.
/// Unknown age: both, the strictest rule, so a missing birth date never widens disclosure.
fn required_givers(born: Option<Date>, day: Date) -> (bool, bool) {
    match born.map(|b| age_on(b, day)) {
        Some(a) if a < 12 => (false, true),
        Some(a) if a < 16 => (true, true),
        Some(_) => (true, false),
        None => (true, true),
    }
}

/// Whether the consent's givers may consent for `person` on `day`: the person's own consent counts
/// only when the consent is about that person; a parent's or guardian's counts for every minor in
/// scope. Scope (the person is the consent's subject or, with `include_household`, a housemate) is
/// the caller's to establish.
pub fn givers_cover(
    consent: &ConsentRecord,
    person: &SubjectPseudonym,
    born: Option<Date>,
    day: Date,
) -> bool {
    let own = consent.subject == *person && consent.givers.contains(&ConsentGiver::Subject);
    let parent = consent.givers.contains(&ConsentGiver::ParentOrGuardian);
    let (need_own, need_parent) = required_givers(born, day);
    (own || !need_own) && (parent || !need_parent)
}

/// Checks, when a consent is recorded, that it covers its own subject on `today`. On success returns
/// the date by which it must be renewed because the age regime changes (the 12th or 16th birthday),
/// if that falls before `valid_until`.
pub fn check_age_rule(
    born: Option<Date>,
    today: Date,
    givers: &[ConsentGiver],
    valid_until: Date,
) -> Result<Option<Date>, AgeRuleViolation> {
    let subject = givers.contains(&ConsentGiver::Subject);
    let parent = givers.contains(&ConsentGiver::ParentOrGuardian);
    if !subject && !parent {
        return Err(AgeRuleViolation::NoGiver);
    }
    let Some(born) = born else {
        return if subject && parent {
            Ok(None)
        } else {
            Err(AgeRuleViolation::BirthDateUnknownNeedsBoth)
        };
    };
    let age = age_on(born, today);
    let next_boundary = match age {
        a if a < 12 => {
            if !parent {
                return Err(AgeRuleViolation::UnderTwelveNeedsParent);
            }
            Some(birthday(born, 12))
        }
        a if a < 16 => {
            if !(subject && parent) {
                return Err(AgeRuleViolation::TwelveToFifteenNeedsBoth);
            }
            Some(birthday(born, 16))
        }
        _ => {
            if !subject {
                return Err(AgeRuleViolation::SixteenPlusNeedsSubject);
            }
            None
        }
    };
    Ok(next_boundary.filter(|d| *d < valid_until))
}

/// A recorded consent, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub id: String,
    pub recorded_by: Oin,
    /// The person the consent is about.
    pub subject: SubjectPseudonym,
    /// Whether it also covers the person's household.
    pub include_household: bool,
    pub givers: Vec<ConsentGiver>,
    pub purposes: Vec<Purpose>,
    pub roles: Vec<Role>,
    pub agencies: Vec<Oin>,
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub recorded_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub valid_until: OffsetDateTime,
    pub renew_by: Option<Date>,
    #[serde(with = "time::serde::timestamp::microseconds::option")]
    pub withdrawn_at: Option<OffsetDateTime>,
    pub evidence_ref: String,
}

impl ConsentRecord {
    /// Whether the consent names this agency, by role or by OIN.
    pub fn names(&self, agency: &Agency) -> bool {
        self.roles.contains(&agency.role) || self.agencies.contains(&agency.oin)
    }

    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.withdrawn_at.is_none_or(|w| w > now) && self.valid_until > now
    }
}

/// The state of consent for one agency, person, purpose and moment, as input to the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentState {
    /// A consent covers it; the id is named in the permit and the log.
    Valid {
        consent_id: String,
    },
    WrongPurpose,
    Expired,
    Withdrawn,
    /// A consent for the purpose names the agency and is active, but its givers may not consent
    /// for this person at this age.
    AgeRuleNotMet,
    None,
}

/// What the rules need to know about one person: who they are and, from the municipality's
/// declaration, when they were born (unknown: the strictest rule applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Person {
    pub subject: SubjectPseudonym,
    pub born: Option<Date>,
}

/// The basis for disclosing something about `person` between two agencies: a consent in scope for
/// the person (the store supplies only those: about the person, or household consents about a
/// housemate) that is active at `now`, covers `purpose`, names `viewer` and `other`, and whose givers
/// may consent for the person on that day. `other = None` asks only about the viewer (its own
/// exchange about the person).
pub fn consent_covering<'a>(
    consents: &'a [ConsentRecord],
    person: &Person,
    viewer: &Agency,
    other: Option<&Agency>,
    purpose: Purpose,
    now: OffsetDateTime,
) -> Option<&'a ConsentRecord> {
    consents.iter().find(|c| {
        c.is_active(now)
            && c.purposes.contains(&purpose)
            && c.names(viewer)
            && other.is_none_or(|o| c.names(o))
            && givers_cover(c, &person.subject, person.born, now.date())
    })
}

/// Finds the consent that lets `caller` exchange about `person` for `purpose` at `now`, among the
/// consents in scope for the person. When none covers it, reports the most actionable reason among
/// those naming the caller: age rule not met, then expired, then withdrawn, then wrong purpose.
/// Consents that do not name the caller are never reported on: their existence is not the caller's
/// to learn.
pub fn consent_state(
    consents: &[ConsentRecord],
    person: &Person,
    caller: &Agency,
    purpose: Purpose,
    now: OffsetDateTime,
) -> ConsentState {
    if let Some(c) = consent_covering(consents, person, caller, None, purpose, now) {
        return ConsentState::Valid {
            consent_id: c.id.clone(),
        };
    }
    let mut best = ConsentState::None;
    for c in consents.iter().filter(|c| c.names(caller)) {
        let covers_purpose = c.purposes.contains(&purpose);
        let withdrawn = c.withdrawn_at.is_some_and(|w| w <= now);
        let expired = c.valid_until <= now;
        let state = match (covers_purpose, withdrawn, expired) {
            (true, false, false) => ConsentState::AgeRuleNotMet,
            (false, false, false) => ConsentState::WrongPurpose,
            (true, false, true) => ConsentState::Expired,
            (true, true, _) => ConsentState::Withdrawn,
            (false, _, _) => continue,
        };
        if rank(&state) > rank(&best) {
            best = state;
        }
    }
    best
}

/// Which state to report when several consents name the caller: one for this purpose (expired or
/// withdrawn) tells the back-end more than one for another purpose.
fn rank(state: &ConsentState) -> u8 {
    match state {
        ConsentState::None => 0,
        ConsentState::WrongPurpose => 1,
        ConsentState::Withdrawn => 2,
        ConsentState::Expired => 3,
        ConsentState::AgeRuleNotMet => 4,
        ConsentState::Valid { .. } => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};
    use ConsentGiver::*;

    #[test]
    fn age_rules() {
        let today = date!(2026 - 06 - 01);
        let until = date!(2028 - 06 - 01);
        // 8 years old: parent needed; renew at 12 only if before valid_until.
        assert_eq!(
            check_age_rule(Some(date!(2018 - 01 - 01)), today, &[Subject], until),
            Err(AgeRuleViolation::UnderTwelveNeedsParent)
        );
        assert_eq!(
            check_age_rule(
                Some(date!(2018 - 01 - 01)),
                today,
                &[ParentOrGuardian],
                until
            ),
            Ok(None)
        );
        assert_eq!(
            check_age_rule(
                Some(date!(2015 - 01 - 01)),
                today,
                &[ParentOrGuardian],
                until
            ),
            Ok(Some(date!(2027 - 01 - 01)))
        );
        // 13: both.
        assert_eq!(
            check_age_rule(
                Some(date!(2013 - 01 - 01)),
                today,
                &[ParentOrGuardian],
                until
            ),
            Err(AgeRuleViolation::TwelveToFifteenNeedsBoth)
        );
        assert_eq!(
            check_age_rule(Some(date!(2013 - 01 - 01)), today, &[Subject], until),
            Err(AgeRuleViolation::TwelveToFifteenNeedsBoth)
        );
        assert_eq!(
            check_age_rule(
                Some(date!(2013 - 01 - 01)),
                today,
                &[Subject, ParentOrGuardian],
                until
            ),
            Ok(None)
        );
        // 16 boundary exactly on the birthday.
        assert_eq!(
            check_age_rule(
                Some(date!(2010 - 06 - 01)),
                today,
                &[ParentOrGuardian],
                until
            ),
            Err(AgeRuleViolation::SixteenPlusNeedsSubject)
        );
        assert_eq!(
            check_age_rule(Some(date!(2010 - 06 - 01)), today, &[Subject], until),
            Ok(None)
        );
        assert_eq!(
            check_age_rule(
                Some(date!(2010 - 06 - 02)),
                today,
                &[Subject, ParentOrGuardian],
                until
            ),
            Ok(Some(date!(2026 - 06 - 02)))
        );
        assert_eq!(
            check_age_rule(Some(date!(2000 - 01 - 01)), today, &[], until),
            Err(AgeRuleViolation::NoGiver)
        );
    }

    fn consent(
        purposes: Vec<Purpose>,
        roles: Vec<Role>,
        until: OffsetDateTime,
        withdrawn: Option<OffsetDateTime>,
    ) -> ConsentRecord {
        ConsentRecord {
            id: "c1".into(),
            recorded_by: Oin::parse("00000099000000000001").unwrap(),
            subject: SubjectPseudonym::from_bytes([7; 32]),
            include_household: false,
            givers: vec![ParentOrGuardian],
            purposes,
            roles,
            agencies: vec![],
            recorded_at: datetime!(2026-01-01 0:00 UTC),
            valid_until: until,
            renew_by: None,
            withdrawn_at: withdrawn,
            evidence_ref: "doc-1".into(),
        }
    }

    #[test]
    fn consent_state_picks_the_actionable_reason() {
        let now = datetime!(2026-06-01 0:00 UTC);
        let wij = Agency {
            oin: Oin::parse("00000099000000000002").unwrap(),
            name: "WIJ".into(),
            role: Role::Wij,
        };
        let later = datetime!(2027-01-01 0:00 UTC);
        let person = Person {
            subject: SubjectPseudonym::from_bytes([7; 32]),
            born: Some(date!(2020 - 01 - 01)),
        };
        let earlier = datetime!(2026-05-01 0:00 UTC);
        let valid = consent(
            vec![Purpose::CareCoordination],
            vec![Role::Wij],
            later,
            None,
        );
        assert_eq!(
            consent_state(
                std::slice::from_ref(&valid),
                &person,
                &wij,
                Purpose::CareCoordination,
                now
            ),
            ConsentState::Valid {
                consent_id: "c1".into()
            }
        );
        assert_eq!(
            consent_state(
                std::slice::from_ref(&valid),
                &person,
                &wij,
                Purpose::CaseCoordination,
                now
            ),
            ConsentState::WrongPurpose
        );
        let expired = consent(
            vec![Purpose::CareCoordination],
            vec![Role::Wij],
            earlier,
            None,
        );
        assert_eq!(
            consent_state(&[expired], &person, &wij, Purpose::CareCoordination, now),
            ConsentState::Expired
        );
        let withdrawn = consent(
            vec![Purpose::CareCoordination],
            vec![Role::Wij],
            later,
            Some(earlier),
        );
        assert_eq!(
            consent_state(&[withdrawn], &person, &wij, Purpose::CareCoordination, now),
            ConsentState::Withdrawn
        );
        let other_role = consent(
            vec![Purpose::CareCoordination],
            vec![Role::Ggd],
            later,
            None,
        );
        assert_eq!(
            consent_state(&[other_role], &person, &wij, Purpose::CareCoordination, now),
            ConsentState::None
        );
        assert_eq!(
            consent_state(&[], &person, &wij, Purpose::CareCoordination, now),
            ConsentState::None
        );
        // A parent's consent does not speak for a 17-year-old, nor for anyone of unknown age.
        for born in [Some(date!(2009 - 01 - 01)), None] {
            let older = Person { born, ..person };
            assert_eq!(
                consent_state(
                    std::slice::from_ref(&valid),
                    &older,
                    &wij,
                    Purpose::CareCoordination,
                    now
                ),
                ConsentState::AgeRuleNotMet
            );
        }
    }

    #[test]
    fn givers_cover_per_member() {
        let day = date!(2026 - 06 - 01);
        let mother = SubjectPseudonym::from_bytes([1; 32]);
        let child = SubjectPseudonym::from_bytes([2; 32]);
        let mut c = consent(
            vec![Purpose::CareCoordination],
            vec![Role::Wij],
            datetime!(2027-01-01 0:00 UTC),
            None,
        );
        c.subject = mother;
        c.include_household = true;
        c.givers = vec![Subject];
        // Her own consent covers her, not her 10-year-old.
        assert!(givers_cover(&c, &mother, Some(date!(1990 - 01 - 01)), day));
        assert!(!givers_cover(&c, &child, Some(date!(2016 - 01 - 01)), day));
        // Given as a parent too, it covers the under-12s, not a 14- or 17-year-old.
        c.givers = vec![Subject, ParentOrGuardian];
        assert!(givers_cover(&c, &child, Some(date!(2016 - 01 - 01)), day));
        assert!(!givers_cover(&c, &child, Some(date!(2012 - 01 - 01)), day));
        assert!(!givers_cover(&c, &child, Some(date!(2009 - 01 - 01)), day));
        assert!(!givers_cover(&c, &child, None, day));
    }
}
