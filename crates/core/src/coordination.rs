//! Case coordination (casusregie): at most one coordinator per household, chosen by the involved
//! agencies together. A pure state machine: the state and the set of involved agencies in, the new
//! state and the events to notify out. "One family, one plan, one coordinator."

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{ContactPoint, Oin};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CoordinationState {
    pub coordinator: Option<Coordinator>,
    pub open_proposal: Option<Proposal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinator {
    pub agency: Oin,
    pub contact: ContactPoint,
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub since: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    pub proposed_by: Oin,
    pub proposed: Oin,
    /// The proposed agency's contact point, once it is known (given by the proposer when it
    /// proposes itself, or by the proposed agency when it accepts).
    pub contact: Option<ContactPoint>,
    pub is_hand_over: bool,
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub at: OffsetDateTime,
    pub accepted_by: BTreeSet<Oin>,
    /// Who was asked to answer: the agencies the proposer's basis covered when it proposed (never
    /// one outside it, so nobody waits for an agency that cannot answer). `None` for proposals
    /// stored before this was kept: every involved agency, as then.
    #[serde(default)]
    pub asked: Option<BTreeSet<Oin>>,
}

impl Proposal {
    /// Who still has to answer: the agencies asked that are still involved, but the proposer; only
    /// the receiver for a hand-over.
    pub fn awaiting(&self, involved: &BTreeSet<Oin>) -> BTreeSet<Oin> {
        if self.is_hand_over {
            return [self.proposed.clone()]
                .into_iter()
                .filter(|o| !self.accepted_by.contains(o))
                .collect();
        }
        let asked = self.asked.as_ref().unwrap_or(involved);
        involved
            .iter()
            .filter(|o| asked.contains(*o))
            .filter(|o| **o != self.proposed_by && !self.accepted_by.contains(*o))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `eligible`: the agencies the proposer's basis lets it know of (itself included); only they
    /// can be proposed and asked.
    Propose {
        by: Oin,
        coordinator: Oin,
        contact: Option<ContactPoint>,
        proposal_id: String,
        eligible: BTreeSet<Oin>,
    },
    Respond {
        by: Oin,
        proposal_id: String,
        accept: bool,
        contact: Option<ContactPoint>,
    },
    HandOver {
        by: Oin,
        to: Oin,
        proposal_id: String,
        eligible: BTreeSet<Oin>,
    },
    StepDown {
        by: Oin,
    },
}

/// What happened, for notifications to the involved agencies (fixed codes, no free text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Proposed,
    Accepted,
    Declined,
    HandOverProposed,
    HandedOver,
    SteppedDown,
    /// The coordinator is no longer involved (its signal ended).
    Lapsed,
}

impl Event {
    pub fn code(self) -> &'static str {
        match self {
            Event::Proposed => "PROPOSED",
            Event::Accepted => "ACCEPTED",
            Event::Declined => "DECLINED",
            Event::HandOverProposed => "HAND_OVER_PROPOSED",
            Event::HandedOver => "HANDED_OVER",
            Event::SteppedDown => "STEPPED_DOWN",
            Event::Lapsed => "LAPSED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinationError {
    #[error("a coordination needs a match: at least two agencies involved with the household")]
    NoMatch,
    #[error("{0} is not involved with this household")]
    NotInvolved(&'static str),
    #[error("a coordinator is in place; the coordinator can hand over")]
    CoordinatorInPlace,
    #[error("a proposal is already open; answer it first")]
    ProposalOpen,
    #[error("there is no open proposal with that id")]
    NoSuchProposal,
    #[error("the proposer does not answer its own proposal")]
    OwnProposal,
    #[error("only the coordinator can do this")]
    NotCoordinator,
    #[error("the coordinator's contact point is required")]
    ContactRequired,
    #[error("nobody coordinates this household")]
    NoCoordinator,
    #[error("this agency was not asked to answer")]
    NotAsked,
    /// One answer for "involved outside the basis", "not involved" and "unknown": which of them it
    /// is must not leak.
    #[error("the named agency is not one your basis lets you coordinate with")]
    NotEligible,
}

/// Applies one command. `involved` are the agencies with an active signal on a household member;
/// a proposal or hand-over is limited to those of them its `eligible` set names.
pub fn apply(
    state: &CoordinationState,
    involved: &BTreeSet<Oin>,
    command: Command,
    now: OffsetDateTime,
) -> Result<(CoordinationState, Event), CoordinationError> {
    let mut next = reconcile(state, involved).0;
    match command {
        Command::Propose {
            by,
            coordinator,
            contact,
            proposal_id,
            eligible,
        } => {
            let eligible: BTreeSet<Oin> = eligible.intersection(involved).cloned().collect();
            if !involved.contains(&by) {
                return Err(CoordinationError::NotInvolved("the caller"));
            }
            // A match the proposer may know of: counting agencies outside its basis would say they exist.
            if eligible.len() < 2 {
                return Err(CoordinationError::NoMatch);
            }
            if !eligible.contains(&coordinator) {
                return Err(CoordinationError::NotEligible);
            }
            if next.coordinator.is_some() {
                return Err(CoordinationError::CoordinatorInPlace);
            }
            if next.open_proposal.is_some() {
                return Err(CoordinationError::ProposalOpen);
            }
            if coordinator == by && contact.is_none() {
                return Err(CoordinationError::ContactRequired);
            }
            next.open_proposal = Some(Proposal {
                id: proposal_id,
                proposed_by: by,
                proposed: coordinator,
                contact,
                is_hand_over: false,
                at: now,
                accepted_by: BTreeSet::new(),
                asked: Some(eligible),
            });
            Ok((next, Event::Proposed))
        }
        Command::Respond {
            by,
            proposal_id,
            accept,
            contact,
        } => {
            let Some(mut proposal) = next.open_proposal.clone().filter(|p| p.id == proposal_id)
            else {
                return Err(CoordinationError::NoSuchProposal);
            };
            if !involved.contains(&by) {
                return Err(CoordinationError::NotInvolved("the caller"));
            }
            if by == proposal.proposed_by {
                return Err(CoordinationError::OwnProposal);
            }
            if !proposal.awaiting(involved).contains(&by) {
                return Err(CoordinationError::NotAsked);
            }
            if !accept {
                next.open_proposal = None;
                return Ok((next, Event::Declined));
            }
            if by == proposal.proposed {
                match contact {
                    Some(c) => proposal.contact = Some(c),
                    None if proposal.contact.is_none() => {
                        return Err(CoordinationError::ContactRequired)
                    }
                    None => {}
                }
            }
            proposal.accepted_by.insert(by);
            if proposal.awaiting(involved).is_empty() {
                let Some(contact) = proposal.contact.clone() else {
                    return Err(CoordinationError::ContactRequired);
                };
                next.coordinator = Some(Coordinator {
                    agency: proposal.proposed.clone(),
                    contact,
                    since: now,
                });
                next.open_proposal = None;
                let event = if proposal.is_hand_over {
                    Event::HandedOver
                } else {
                    Event::Accepted
                };
                return Ok((next, event));
            }
            next.open_proposal = Some(proposal);
            Ok((next, Event::Proposed))
        }
        Command::HandOver {
            by,
            to,
            proposal_id,
            eligible,
        } => {
            let Some(current) = &next.coordinator else {
                return Err(CoordinationError::NoCoordinator);
            };
            if current.agency != by {
                return Err(CoordinationError::NotCoordinator);
            }
            if !(involved.contains(&to) && eligible.contains(&to)) || to == by {
                return Err(CoordinationError::NotEligible);
            }
            if next.open_proposal.is_some() {
                return Err(CoordinationError::ProposalOpen);
            }
            next.open_proposal = Some(Proposal {
                id: proposal_id,
                proposed_by: by,
                proposed: to.clone(),
                contact: None,
                is_hand_over: true,
                at: now,
                accepted_by: BTreeSet::new(),
                asked: Some([to].into_iter().collect()),
            });
            Ok((next, Event::HandOverProposed))
        }
        Command::StepDown { by } => {
            match &next.coordinator {
                Some(c) if c.agency == by => {}
                Some(_) => return Err(CoordinationError::NotCoordinator),
                None => return Err(CoordinationError::NoCoordinator),
            }
            next.coordinator = None;
            next.open_proposal = None;
            Ok((next, Event::SteppedDown))
        }
    }
}

/// Brings a stored state in line with who is involved now: a coordinator whose involvement ended
/// lapses, and a proposal involving an agency that left is dropped.
pub fn reconcile(
    state: &CoordinationState,
    involved: &BTreeSet<Oin>,
) -> (CoordinationState, Option<Event>) {
    let mut next = state.clone();
    let mut event = None;
    if next
        .coordinator
        .as_ref()
        .is_some_and(|c| !involved.contains(&c.agency))
    {
        next.coordinator = None;
        event = Some(Event::Lapsed);
    }
    if next
        .open_proposal
        .as_ref()
        .is_some_and(|p| !involved.contains(&p.proposed) || !involved.contains(&p.proposed_by))
    {
        next.open_proposal = None;
    }
    (next, event)
}

/// Reminder thresholds (configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReminderRule {
    pub after: Duration,
    /// Shorter when a Veilig Thuis or safety signal is part of the match.
    pub after_with_safety_signal: Duration,
}

/// Whether a household whose match began at `match_since` and has no coordinator is due a
/// reminder at `now`, given when the last reminder went out.
pub fn reminder_due(
    rule: ReminderRule,
    match_since: OffsetDateTime,
    has_coordinator: bool,
    safety_signal: bool,
    last_reminder: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> bool {
    if has_coordinator {
        return false;
    }
    let wait = if safety_signal {
        rule.after_with_safety_signal
    } else {
        rule.after
    };
    let since = last_reminder.unwrap_or(match_since);
    now - since >= wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn oin(n: u8) -> Oin {
        Oin::parse(&format!("000000990000000000{n:02}")).unwrap()
    }
    fn contact() -> Option<ContactPoint> {
        Some(ContactPoint {
            team: "Team".into(),
            phone: "050 123 4567".into(),
            email: None,
        })
    }
    const NOW: OffsetDateTime = datetime!(2026-03-01 9:00 UTC);

    #[test]
    fn propose_accept_hand_over_step_down() {
        let involved: BTreeSet<Oin> = [oin(1), oin(2), oin(3)].into();
        let s0 = CoordinationState::default();
        let (s1, e) = apply(
            &s0,
            &involved,
            Command::Propose {
                eligible: involved.clone(),
                by: oin(1),
                coordinator: oin(2),
                contact: None,
                proposal_id: "p1".into(),
            },
            NOW,
        )
        .unwrap();
        assert_eq!(e, Event::Proposed);
        assert_eq!(
            s1.open_proposal.as_ref().unwrap().awaiting(&involved),
            [oin(2), oin(3)].into()
        );
        // The proposed agency must give its contact point when it accepts.
        assert_eq!(
            apply(
                &s1,
                &involved,
                Command::Respond {
                    by: oin(2),
                    proposal_id: "p1".into(),
                    accept: true,
                    contact: None
                },
                NOW
            )
            .unwrap_err(),
            CoordinationError::ContactRequired
        );
        let (s2, e) = apply(
            &s1,
            &involved,
            Command::Respond {
                by: oin(2),
                proposal_id: "p1".into(),
                accept: true,
                contact: contact(),
            },
            NOW,
        )
        .unwrap();
        assert_eq!(e, Event::Proposed);
        assert!(s2.coordinator.is_none());
        let (s3, e) = apply(
            &s2,
            &involved,
            Command::Respond {
                by: oin(3),
                proposal_id: "p1".into(),
                accept: true,
                contact: None,
            },
            NOW,
        )
        .unwrap();
        assert_eq!(e, Event::Accepted);
        assert_eq!(s3.coordinator.as_ref().unwrap().agency, oin(2));
        // A second proposal while a coordinator is in place is refused.
        assert_eq!(
            apply(
                &s3,
                &involved,
                Command::Propose {
                    eligible: involved.clone(),
                    by: oin(3),
                    coordinator: oin(3),
                    contact: contact(),
                    proposal_id: "p2".into()
                },
                NOW
            )
            .unwrap_err(),
            CoordinationError::CoordinatorInPlace
        );
        // Only the coordinator hands over; the receiver alone accepts.
        assert_eq!(
            apply(
                &s3,
                &involved,
                Command::HandOver {
                    eligible: involved.clone(),
                    by: oin(1),
                    to: oin(3),
                    proposal_id: "h1".into()
                },
                NOW
            )
            .unwrap_err(),
            CoordinationError::NotCoordinator
        );
        let (s4, _) = apply(
            &s3,
            &involved,
            Command::HandOver {
                eligible: involved.clone(),
                by: oin(2),
                to: oin(3),
                proposal_id: "h1".into(),
            },
            NOW,
        )
        .unwrap();
        assert_eq!(
            apply(
                &s4,
                &involved,
                Command::Respond {
                    by: oin(1),
                    proposal_id: "h1".into(),
                    accept: true,
                    contact: None
                },
                NOW
            )
            .unwrap_err(),
            CoordinationError::NotAsked
        );
        let (s5, e) = apply(
            &s4,
            &involved,
            Command::Respond {
                by: oin(3),
                proposal_id: "h1".into(),
                accept: true,
                contact: contact(),
            },
            NOW,
        )
        .unwrap();
        assert_eq!(e, Event::HandedOver);
        assert_eq!(s5.coordinator.as_ref().unwrap().agency, oin(3));
        let (s6, e) = apply(&s5, &involved, Command::StepDown { by: oin(3) }, NOW).unwrap();
        assert_eq!(e, Event::SteppedDown);
        assert_eq!(s6, CoordinationState::default());
    }

    #[test]
    fn decline_conflict_and_lapse() {
        let involved: BTreeSet<Oin> = [oin(1), oin(2)].into();
        let (s1, _) = apply(
            &CoordinationState::default(),
            &involved,
            Command::Propose {
                eligible: involved.clone(),
                by: oin(1),
                coordinator: oin(1),
                contact: contact(),
                proposal_id: "p1".into(),
            },
            NOW,
        )
        .unwrap();
        // A conflicting proposal waits until the open one is answered.
        assert_eq!(
            apply(
                &s1,
                &involved,
                Command::Propose {
                    eligible: involved.clone(),
                    by: oin(2),
                    coordinator: oin(2),
                    contact: contact(),
                    proposal_id: "p2".into()
                },
                NOW
            )
            .unwrap_err(),
            CoordinationError::ProposalOpen
        );
        assert_eq!(
            apply(
                &s1,
                &involved,
                Command::Respond {
                    by: oin(1),
                    proposal_id: "p1".into(),
                    accept: true,
                    contact: None
                },
                NOW
            )
            .unwrap_err(),
            CoordinationError::OwnProposal
        );
        let (s2, e) = apply(
            &s1,
            &involved,
            Command::Respond {
                by: oin(2),
                proposal_id: "p1".into(),
                accept: false,
                contact: None,
            },
            NOW,
        )
        .unwrap();
        assert_eq!(e, Event::Declined);
        assert!(s2.open_proposal.is_none());
        let (s3, e) = apply(
            &s1,
            &involved,
            Command::Respond {
                by: oin(2),
                proposal_id: "p1".into(),
                accept: true,
                contact: None,
            },
            NOW,
        )
        .unwrap();
        assert_eq!(e, Event::Accepted);
        // The coordinator's signal expires: it is no longer involved, and the coordination lapses.
        let (s4, e) = reconcile(&s3, &[oin(2)].into());
        assert_eq!(e, Some(Event::Lapsed));
        assert!(s4.coordinator.is_none());
        // No match, no coordination.
        assert_eq!(
            apply(
                &CoordinationState::default(),
                &[oin(1)].into(),
                Command::Propose {
                    eligible: involved.clone(),
                    by: oin(1),
                    coordinator: oin(1),
                    contact: contact(),
                    proposal_id: "x".into()
                },
                NOW
            )
            .unwrap_err(),
            CoordinationError::NoMatch
        );
    }

    #[test]
    fn reminders() {
        let rule = ReminderRule {
            after: Duration::days(28),
            after_with_safety_signal: Duration::days(7),
        };
        let since = NOW;
        assert!(!reminder_due(
            rule,
            since,
            false,
            false,
            None,
            NOW + Duration::days(27)
        ));
        assert!(reminder_due(
            rule,
            since,
            false,
            false,
            None,
            NOW + Duration::days(28)
        ));
        assert!(reminder_due(
            rule,
            since,
            false,
            true,
            None,
            NOW + Duration::days(7)
        ));
        assert!(!reminder_due(
            rule,
            since,
            true,
            true,
            None,
            NOW + Duration::days(70)
        ));
        assert!(!reminder_due(
            rule,
            since,
            false,
            false,
            Some(NOW + Duration::days(28)),
            NOW + Duration::days(40)
        ));
    }
}
