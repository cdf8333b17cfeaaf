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
    #[error("at least one consent giver is required")]
    NoGiver,
}

/// Checks the givers against the person's age on `today`. On success returns the date by which the
/// consent must be renewed because the age regime changes (the 12th or 16th birthday), if that falls
/// before `valid_until`.
pub fn check_age_rule(
    born: Date,
    today: Date,
    givers: &[ConsentGiver],
    valid_until: Date,
) -> Result<Option<Date>, AgeRuleViolation> {
    let subject = givers.contains(&ConsentGiver::Subject);
    let parent = givers.contains(&ConsentGiver::ParentOrGuardian);
    if !subject && !parent {
        return Err(AgeRuleViolation::NoGiver);
    }
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

/// The state of consent for one agency, purpose and moment, as input to the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentState {
    /// A consent covers it; the id is named in the permit and the log.
    Valid {
        consent_id: String,
    },
    WrongPurpose,
    Expired,
    Withdrawn,
    None,
}

/// Finds the consent that lets `caller` exchange for `purpose` at `now`, among the consents that
/// concern the person (the caller's store query supplies those about the person and, with
/// `include_household`, about the person's households). When none is valid, reports the most
/// actionable reason: wrong purpose, then expired, then withdrawn.
pub fn consent_state(
    consents: &[ConsentRecord],
    caller: &Agency,
    purpose: Purpose,
    now: OffsetDateTime,
) -> ConsentState {
    let naming_caller = consents.iter().filter(|c| c.names(caller));
    let mut best = ConsentState::None;
    for c in naming_caller {
        let covers_purpose = c.purposes.contains(&purpose);
        let withdrawn = c.withdrawn_at.is_some_and(|w| w <= now);
        let expired = c.valid_until <= now;
        let state = match (covers_purpose, withdrawn, expired) {
            (true, false, false) => {
                return ConsentState::Valid {
                    consent_id: c.id.clone(),
                }
            }
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
        ConsentState::Valid { .. } => 4,
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
            check_age_rule(date!(2018 - 01 - 01), today, &[Subject], until),
            Err(AgeRuleViolation::UnderTwelveNeedsParent)
        );
        assert_eq!(
            check_age_rule(date!(2018 - 01 - 01), today, &[ParentOrGuardian], until),
            Ok(None)
        );
        assert_eq!(
            check_age_rule(date!(2015 - 01 - 01), today, &[ParentOrGuardian], until),
            Ok(Some(date!(2027 - 01 - 01)))
        );
        // 13: both.
        assert_eq!(
            check_age_rule(date!(2013 - 01 - 01), today, &[ParentOrGuardian], until),
            Err(AgeRuleViolation::TwelveToFifteenNeedsBoth)
        );
        assert_eq!(
            check_age_rule(date!(2013 - 01 - 01), today, &[Subject], until),
            Err(AgeRuleViolation::TwelveToFifteenNeedsBoth)
        );
        assert_eq!(
            check_age_rule(
                date!(2013 - 01 - 01),
                today,
                &[Subject, ParentOrGuardian],
                until
            ),
            Ok(None)
        );
        // 16 boundary exactly on the birthday.
        assert_eq!(
            check_age_rule(date!(2010 - 06 - 01), today, &[ParentOrGuardian], until),
            Err(AgeRuleViolation::SixteenPlusNeedsSubject)
        );
        assert_eq!(
            check_age_rule(date!(2010 - 06 - 01), today, &[Subject], until),
            Ok(None)
        );
        assert_eq!(
            check_age_rule(
                date!(2010 - 06 - 02),
                today,
                &[Subject, ParentOrGuardian],
                until
            ),
            Ok(Some(date!(2026 - 06 - 02)))
        );
        assert_eq!(
            check_age_rule(date!(2000 - 01 - 01), today, &[], until),
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
            consent_state(&[expired], &wij, Purpose::CareCoordination, now),
            ConsentState::Expired
        );
        let withdrawn = consent(
            vec![Purpose::CareCoordination],
            vec![Role::Wij],
            later,
            Some(earlier),
        );
        assert_eq!(
            consent_state(&[withdrawn], &wij, Purpose::CareCoordination, now),
            ConsentState::Withdrawn
        );
        let other_role = consent(
            vec![Purpose::CareCoordination],
            vec![Role::Ggd],
            later,
            None,
        );
        assert_eq!(
            consent_state(&[other_role], &wij, Purpose::CareCoordination, now),
            ConsentState::None
        );
        assert_eq!(
            consent_state(&[], &wij, Purpose::CareCoordination, now),
            ConsentState::None
        );
    }
}
