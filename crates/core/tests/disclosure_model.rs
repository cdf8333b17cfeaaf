//! Core's pure consent and disclosure functions held to the reference model of issue 12 (who may
//! learn what, `tests/src/model.rs`, written from SPEC-12.md without reusing this crate), on
//! generated consents, birth dates, days, agencies and purposes.

#[path = "../../../tests/src/model.rs"]
#[allow(dead_code)]
mod model;

use model::{Agency as MAgency, Consent, Givers, Member, Model, Purpose as MPurpose};
use proptest::prelude::*;
use signaalpoort_core::consent::{
    check_age_rule, consent_covering, consent_state, givers_cover, ConsentGiver, ConsentRecord,
    ConsentState, Person,
};
use signaalpoort_core::{Agency, Oin, Purpose, Role, SubjectPseudonym};
use time::macros::datetime;
use time::{Date, Duration, OffsetDateTime};

const AGENCIES: [MAgency; 4] = [
    MAgency::Wij,
    MAgency::Ggd,
    MAgency::VeiligThuis,
    MAgency::Jeugdhulp,
];
const PURPOSES: [MPurpose; 3] = [
    MPurpose::CareCoordination,
    MPurpose::ChildSafety,
    MPurpose::CaseCoordination,
];

fn role(a: MAgency) -> Role {
    match a {
        MAgency::Gemeente => Role::Gemeente,
        MAgency::Wij => Role::Wij,
        MAgency::Ggd => Role::Ggd,
        MAgency::VeiligThuis => Role::VeiligThuis,
        MAgency::Jeugdhulp => Role::Jeugdhulp,
    }
}

fn oin(a: MAgency) -> Oin {
    Oin::parse(&format!("0000009900123456000{}", a as u8 + 1)).expect("oin")
}

fn agency(a: MAgency) -> Agency {
    Agency {
        oin: oin(a),
        name: format!("{a:?}"),
        role: role(a),
    }
}

fn purpose(p: MPurpose) -> Purpose {
    match p {
        MPurpose::CareCoordination => Purpose::CareCoordination,
        MPurpose::ChildSafety => Purpose::ChildSafety,
        MPurpose::CaseCoordination => Purpose::CaseCoordination,
    }
}

fn subject(p: usize) -> SubjectPseudonym {
    SubjectPseudonym::from_bytes([p as u8 + 1; 32])
}

/// One generated consent: about the person (0) or a housemate (1, then household-wide), givers,
/// purposes, named agencies (by role or OIN), and its state at the moment asked.
#[derive(Debug, Clone)]
struct Gen {
    about_housemate: bool,
    givers: u8,
    purposes: u8,
    named: u8,
    by_oin: bool,
    /// 0 active, 1 expired, 2 withdrawn.
    state: u8,
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        any::<bool>(),
        1..=3u8,
        1..8u8,
        1..16u8,
        any::<bool>(),
        0..3u8,
    )
        .prop_map(
            |(about_housemate, givers, purposes, named, by_oin, state)| Gen {
                about_housemate,
                givers,
                purposes,
                named,
                by_oin,
                state,
            },
        )
}

const NOW: OffsetDateTime = datetime!(2026-06-01 10:00 UTC);

fn pick<T: Copy>(all: &[T], bits: u8) -> Vec<T> {
    all.iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, x)| *x)
        .collect()
}

/// The generated consents in both worlds: the model's, and core's records.
fn build(gens: &[Gen], born: Option<Date>) -> (Model, Vec<ConsentRecord>) {
    let mut m = Model::new(NOW);
    m.declare(
        "hh",
        vec![
            Member {
                person: 0,
                protected: false,
                birth: born,
            },
            Member {
                person: 1,
                protected: false,
                birth: Some(Date::from_calendar_date(1980, time::Month::May, 5).expect("date")),
            },
        ],
    );
    let mut records = Vec::new();
    for (i, g) in gens.iter().enumerate() {
        let named = pick(&AGENCIES, g.named);
        let purposes = pick(&PURPOSES, g.purposes);
        let givers = Givers {
            subject: g.givers & 1 != 0,
            parent: g.givers & 2 != 0,
        };
        let valid_until = if g.state == 1 {
            NOW - Duration::days(1)
        } else {
            NOW + Duration::days(100)
        };
        let withdrawn = (g.state == 2).then_some(NOW - Duration::hours(1));
        let about = usize::from(g.about_housemate);
        m.consents.push(Consent {
            recorder: MAgency::Wij,
            subject: about,
            include_household: g.about_housemate,
            givers,
            purposes: purposes.iter().copied().collect(),
            roles: if g.by_oin {
                Default::default()
            } else {
                named.iter().copied().collect()
            },
            oins: if g.by_oin {
                named.iter().copied().collect()
            } else {
                Default::default()
            },
            recorded: NOW - Duration::days(10),
            valid_until,
            withdrawn,
        });
        let mut core_givers = Vec::new();
        if givers.subject {
            core_givers.push(ConsentGiver::Subject);
        }
        if givers.parent {
            core_givers.push(ConsentGiver::ParentOrGuardian);
        }
        records.push(ConsentRecord {
            id: format!("c{i}"),
            recorded_by: oin(MAgency::Wij),
            subject: subject(about),
            include_household: g.about_housemate,
            givers: core_givers,
            purposes: purposes.iter().map(|p| purpose(*p)).collect(),
            roles: if g.by_oin {
                vec![]
            } else {
                named.iter().map(|a| role(*a)).collect()
            },
            agencies: if g.by_oin {
                named.iter().map(|a| oin(*a)).collect()
            } else {
                vec![]
            },
            recorded_at: NOW - Duration::days(10),
            valid_until,
            renew_by: None,
            withdrawn_at: withdrawn,
            evidence_ref: "e".into(),
        });
    }
    (m, records)
}

fn born() -> impl Strategy<Value = Option<Date>> {
    prop::option::weighted(0.85, (0..25i32, 0..365i64)).prop_map(|o| {
        o.map(|(years, days)| model::birthday(NOW.date() - Duration::days(days), -years))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whether a consent's givers may speak for the person, on the day, as the model says.
    #[test]
    fn givers_cover_as_the_model(gens in prop::collection::vec(gen(), 1..4), born in born()) {
        let (m, records) = build(&gens, born);
        let person = subject(0);
        for (c, r) in m.consents.iter().zip(&records) {
            prop_assert_eq!(
                givers_cover(r, &person, born, NOW.date()),
                m.age_ok(c, 0, NOW),
                "{:?} born {:?}", c, born
            );
        }
    }

    /// The covering consent, and the denial reason when none covers, as the model says.
    #[test]
    fn consent_covering_and_state_as_the_model(
        gens in prop::collection::vec(gen(), 0..5),
        born in born(),
        viewer in prop::sample::select(AGENCIES.to_vec()),
        other in prop::sample::select(AGENCIES.to_vec()),
        p in prop::sample::select(PURPOSES.to_vec()),
    ) {
        let (m, records) = build(&gens, born);
        let person = Person { subject: subject(0), born };
        let covering = m.covering(0, p, viewer, other);
        let got = consent_covering(&records, &person, &agency(viewer), Some(&agency(other)), purpose(p), NOW);
        match got {
            Some(c) => prop_assert!(covering.contains(&c.id[1..].parse::<usize>().unwrap()), "{:?} not in {:?}", c.id, covering),
            None => prop_assert!(covering.is_empty(), "core found none, model {:?}", covering),
        }
        let state = consent_state(&records, &person, &agency(viewer), purpose(p), NOW);
        let ask = model::Ask { purpose: p, justified: false };
        let want = m.call_basis(viewer, 0, ask);
        let reason = match &state {
            ConsentState::Valid { consent_id } => {
                let ix: usize = consent_id[1..].parse().unwrap();
                prop_assert!(want.as_ref().is_ok_and(|b| b.consents.contains(&ix)), "{:?} vs {:?}", state, want);
                None
            }
            ConsentState::WrongPurpose => Some("CONSENT_WRONG_PURPOSE"),
            ConsentState::Expired => Some("CONSENT_EXPIRED"),
            ConsentState::Withdrawn => Some("CONSENT_WITHDRAWN"),
            ConsentState::AgeRuleNotMet => Some("AGE_RULE_NOT_MET"),
            ConsentState::None => Some("CONSENT_MISSING"),
        };
        if let Some(reason) = reason {
            match want {
                Err(f) if p != MPurpose::ChildSafety => prop_assert!(f.reasons.contains(reason), "{} not in {:?}", reason, f.reasons),
                Err(_) => {}
                Ok(b) => prop_assert!(false, "core denies ({}), model allows on {:?}", reason, b),
            }
        }
    }

    /// Recording: the consent must cover its own subject today; renew by the next 12th or 16th
    /// birthday before valid_until.
    #[test]
    fn recording_age_rule_as_the_model(givers in 1..=3u8, born in born(), days in 1..800i64) {
        let g = Givers { subject: givers & 1 != 0, parent: givers & 2 != 0 };
        let mut core_givers = Vec::new();
        if g.subject { core_givers.push(ConsentGiver::Subject); }
        if g.parent { core_givers.push(ConsentGiver::ParentOrGuardian); }
        let valid_until = NOW + Duration::days(days);
        let got = check_age_rule(born, NOW.date(), &core_givers, valid_until.date());
        let mut m = Model::new(NOW);
        m.declare("hh", vec![Member { person: 0, protected: false, birth: born }]);
        let age = born.map(|b| model::age(b, NOW.date()));
        let allowed = model::age_rule(age, g.subject, g.parent);
        prop_assert_eq!(got.is_ok(), allowed, "{:?} age {:?}", g, age);
        if let Ok(renew) = got {
            let want = born.and_then(|b| {
                [model::birthday(b, 12), model::birthday(b, 16)]
                    .into_iter()
                    .find(|d| *d > NOW.date() && *d < valid_until.date())
            });
            prop_assert_eq!(renew, want);
        }
    }
}
