//! The stores' matching SQL held to the reference definition in core
//! (`core::involvement::reference_matches`): for generated signals (active, withdrawn, expired) of a
//! few agencies on a few persons, and households with protected members, every active signal's
//! matches from `Backend::matches` are exactly the reference's — same signals, same level — on
//! SQLite and on PostgreSQL.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use signaalpoort_core::involvement::{reference_matches, ActiveSignal, MatchLevel, Membership};
use signaalpoort_core::{Category, ContactPoint, Oin, SubjectPseudonym};
use signaalpoort_store::{HouseholdMember, SignalRow, Store, StoreOptions};
use time::{Duration, OffsetDateTime};

const PERSONS: u8 = 7;
const AGENCIES: u8 = 4;

#[derive(Debug, Clone, Copy)]
enum State {
    Active,
    Withdrawn,
    Expired,
}

#[derive(Debug, Clone)]
struct World {
    /// (agency, person, state)
    signals: Vec<(u8, u8, State)>,
    /// Households: members as (person, protected).
    households: Vec<Vec<(u8, bool)>>,
}

fn world() -> impl Strategy<Value = World> {
    let signal = (
        0..AGENCIES,
        0..PERSONS,
        prop_oneof![
            6 => Just(State::Active),
            1 => Just(State::Withdrawn),
            1 => Just(State::Expired)
        ],
    );
    let household = prop::collection::btree_map(0..PERSONS, prop::bool::weighted(0.2), 1..5)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    (
        prop::collection::vec(signal, 0..14),
        prop::collection::vec(household, 0..4),
    )
        .prop_map(|(signals, households)| World {
            signals,
            households,
        })
}

fn person(p: u8) -> SubjectPseudonym {
    SubjectPseudonym::from_bytes([p + 1; 32])
}

fn agency(a: u8) -> Oin {
    Oin::parse(&format!("{:020}", 100 + u64::from(a))).expect("oin")
}

async fn check(url: &str, w: &World) -> Result<(), TestCaseError> {
    let store = Store::open(url, StoreOptions::default())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let now = OffsetDateTime::now_utc();
    // One open signal per agency, person and category (the schema's rule): each signal of the same
    // agency on the same person gets the next category.
    let mut used: BTreeMap<(u8, u8), usize> = BTreeMap::new();
    let rows: Vec<SignalRow> = w
        .signals
        .iter()
        .enumerate()
        .filter_map(|(i, (a, p, state))| {
            let n = used.entry((*a, *p)).or_default();
            let category = *Category::ALL.get(*n)?;
            *n += 1;
            Some((i, a, p, state, category))
        })
        .map(|(i, a, p, state, category)| SignalRow {
            id: format!("s{i}"),
            agency: agency(*a),
            subject: person(*p),
            category,
            contact: ContactPoint {
                team: format!("team {i}"),
                phone: "050 123 4567".into(),
                email: None,
            },
            registered_at: now - Duration::days(30),
            refreshed_at: now - Duration::days(30),
            expires_at: match state {
                State::Expired => now - Duration::days(1),
                _ => now + Duration::days(300),
            },
            withdrawn_at: matches!(state, State::Withdrawn).then(|| now - Duration::days(2)),
        })
        .collect();
    let households: Vec<(String, String, Oin, Vec<HouseholdMember>)> = w
        .households
        .iter()
        .enumerate()
        .map(|(i, members)| {
            (
                format!("hh{i}"),
                format!("ref-{i}"),
                agency(9),
                members
                    .iter()
                    .map(|(p, protected)| HouseholdMember {
                        subject: person(*p),
                        protected: *protected,
                        birth_date: None,
                    })
                    .collect(),
            )
        })
        .collect();
    store
        .bulk_load(&households, &rows)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;

    let active: Vec<ActiveSignal> = rows
        .iter()
        .filter(|s| s.is_active(now))
        .map(|s| ActiveSignal {
            id: s.id.clone(),
            agency: s.agency.clone(),
            subject: s.subject,
        })
        .collect();
    let memberships: Vec<Membership> = households
        .iter()
        .flat_map(|(id, _, _, members)| {
            members.iter().map(move |m| Membership {
                household: id.clone(),
                subject: m.subject,
                protected: m.protected,
            })
        })
        .collect();
    let mut result = Ok(());
    for signal in rows.iter().filter(|s| s.is_active(now)) {
        let of = ActiveSignal {
            id: signal.id.clone(),
            agency: signal.agency.clone(),
            subject: signal.subject,
        };
        let expected = reference_matches(&of, &active, &memberships);
        let got: BTreeMap<String, MatchLevel> = store
            .read()
            .matches(signal, now)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .into_iter()
            .map(|m| (m.signal_id, m.level))
            .collect();
        if got != expected {
            result = Err(TestCaseError::fail(format!(
                "matches of {} on {}: store {got:?}, reference {expected:?}",
                signal.id,
                store.kind()
            )));
            break;
        }
    }
    store.close().await;
    result
}

fn run(cases: u32, url: impl Fn() -> Option<(String, Option<tempfile::TempDir>)>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&world(), |w| {
        let Some((url, _dir)) = url() else {
            return Ok(());
        };
        rt.block_on(check(&url, &w))
    });
    if let Err(e) = outcome {
        panic!("the store's matcher disagrees with the reference definition:\n{e}");
    }
}

#[test]
fn sqlite_matcher_is_the_reference_definition() {
    run(96, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        Some((url, Some(dir)))
    });
}

#[test]
fn postgres_matcher_is_the_reference_definition() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if rt
        .block_on(signaalpoort_store::testing::fresh_postgres_url())
        .is_none()
    {
        return;
    }
    drop(rt);
    run(32, || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(signaalpoort_store::testing::fresh_postgres_url())
            .map(|u| (u, None))
    });
}
