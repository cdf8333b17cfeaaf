//! The per-person rule, fed from the store: what core decides (`consent_state`, `basis_for`,
//! `disclose`) needs, for each person, the consents in scope for that person and the birth date the
//! municipality declared. Every path that discloses another agency's involvement — queries,
//! notifications, coordination — gets its facts here, so none can ask the wrong person.

use std::collections::HashMap;

use signaalpoort_core::consent::{ConsentRecord, Person};
use signaalpoort_core::involvement::basis_for;
use signaalpoort_core::policy::Permit;
use signaalpoort_core::{Agency, Basis, SubjectPseudonym};
use signaalpoort_store::{Reader, StoreError};
use time::OffsetDateTime;

/// What the rules know about one person: the birth date from the declarations and the consents in
/// scope for them (about them, or household consents about a housemate).
#[derive(Debug, Clone)]
pub struct PersonFacts {
    pub person: Person,
    pub consents: Vec<ConsentRecord>,
}

impl PersonFacts {
    pub async fn read(
        store: &dyn Reader,
        subject: &SubjectPseudonym,
    ) -> Result<PersonFacts, StoreError> {
        Ok(PersonFacts {
            person: Person {
                subject: *subject,
                born: store.birth_date(subject).await?,
            },
            consents: store.consents_concerning(subject).await?,
        })
    }
}

/// Facts read once per person for one call (a household has at most 20 members).
pub struct Facts<'a> {
    store: &'a dyn Reader,
    cache: HashMap<SubjectPseudonym, PersonFacts>,
}

impl<'a> Facts<'a> {
    pub fn new(store: &'a dyn Reader) -> Facts<'a> {
        Facts {
            store,
            cache: HashMap::new(),
        }
    }

    pub async fn of(&mut self, subject: &SubjectPseudonym) -> Result<&PersonFacts, StoreError> {
        if !self.cache.contains_key(subject) {
            let facts = PersonFacts::read(self.store, subject).await?;
            self.cache.insert(*subject, facts);
        }
        self.cache
            .get(subject)
            .ok_or_else(|| StoreError::Corrupt("person facts vanished".into()))
    }

    /// The basis for `viewer` to learn that `other` is involved with `subject`, if any.
    pub async fn basis_for(
        &mut self,
        permit: &Permit,
        viewer: &Agency,
        subject: &SubjectPseudonym,
        other: &Agency,
        now: OffsetDateTime,
    ) -> Result<Option<(Basis, Option<String>)>, StoreError> {
        let facts = self.of(subject).await?;
        Ok(basis_for(
            permit,
            viewer,
            &facts.person,
            &facts.consents,
            other,
            now,
        ))
    }
}

/// The call-level decision on one of the caller's own signals (QueryInvolvement, coordination,
/// notifications): NOT_INVOLVED unless it is the caller's active signal — the same for one that
/// does not exist or is another agency's — then a consent that covers the signal's own person and
/// names the caller, or the safety basis. Permission before anything about others is read.
pub async fn decide_on_own_signal(
    call: &crate::call::Call,
    caller: &crate::call::Caller,
    facts: &mut Facts<'_>,
    signal_id: &str,
    purpose: signaalpoort_core::Purpose,
    justification: Option<&signaalpoort_core::Justification>,
) -> Result<(signaalpoort_store::SignalRow, Permit), crate::error::ApiError> {
    let now = call.now();
    let own = facts
        .store
        .signal(signal_id)
        .await?
        .filter(|s| s.agency == caller.agency.oin && s.is_active(now));
    let state = match &own {
        Some(s) => {
            call.set_subjects(&[s.subject]);
            let f = facts.of(&s.subject).await?;
            signaalpoort_core::consent::consent_state(
                &f.consents,
                &f.person,
                &caller.agency,
                purpose,
                now,
            )
        }
        None => signaalpoort_core::consent::ConsentState::None,
    };
    let permit = call.decide(caller, Some(purpose), own.is_some(), &state, justification)?;
    let own =
        own.ok_or_else(|| crate::error::ApiError::Internal("permit without involvement".into()))?;
    Ok((own, permit))
}
