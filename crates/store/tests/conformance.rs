//! The store's conformance suite: each mutation's rule, the batch and the log, at the store's own
//! API (no TLS, no gRPC), run the same on SQLite and on PostgreSQL. The end-to-end suite tests the
//! gateway; this holds the store to what `Mutation`'s documentation promises, so a backend change
//! (driver, statements, batching) cannot alter behaviour unnoticed.

use std::collections::BTreeSet;
use std::sync::Arc;

use signaalpoort_core::access_log::tree::Frontier;
use signaalpoort_core::access_log::{DecisionCode, RecordDraft};
use signaalpoort_core::consent::{ConsentGiver, ConsentRecord};
use signaalpoort_core::{Category, ContactPoint, Oin, Purpose, Role, SubjectPseudonym};
use signaalpoort_store::{
    Committed, Effect, HouseholdMember, Idempotency, Mutation, NotificationKind, Rejection, Store,
    StoreOptions, WriteRequest, NO_TRANSPORT_STATUS,
};
use time::{Duration, OffsetDateTime};

/// Now, to the microsecond the store keeps.
fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .expect("valid nanosecond")
}

fn agency(a: u8) -> Oin {
    Oin::parse(&format!("{:020}", 100 + u64::from(a))).expect("oin")
}

fn person(p: u8) -> SubjectPseudonym {
    SubjectPseudonym::from_bytes([p; 32])
}

fn draft(action: &str, by: &Oin) -> RecordDraft {
    RecordDraft {
        time: OffsetDateTime::now_utc(),
        agency_oin: by.to_string(),
        role: Some(Role::Wij),
        actor_id: "tester".into(),
        action: action.into(),
        subjects: vec![],
        household_id: String::new(),
        purpose: None,
        basis: None,
        decision: DecisionCode::Allow,
        reason: "TEST".into(),
        status_code: 0,
        request_id: String::new(),
        cert_fingerprint: String::new(),
        justification: String::new(),
        flagged_for_review: false,
        trace_id: String::new(),
        span_id: String::new(),
        object_id: String::new(),
    }
}

fn write(mutation: Mutation, by: &Oin) -> WriteRequest {
    WriteRequest {
        mutation,
        idempotency: None,
        record: draft("Test", by),
        alerts: vec![],
    }
}

fn register(id: &str, by: &Oin, who: SubjectPseudonym, now: OffsetDateTime) -> Mutation {
    Mutation::RegisterSignal {
        new_id: id.into(),
        agency: by.clone(),
        subject: who,
        category: Category::Parenting,
        contact: ContactPoint {
            team: format!("team of {id}"),
            phone: "050 123 4567".into(),
            email: None,
        },
        expires_at: now + Duration::days(365),
        now,
    }
}

async fn exec(store: &Store, mutation: Mutation, by: &Oin) -> Committed {
    store.execute(write(mutation, by)).await.expect("committed")
}

/// The recipient's pending notifications as (kind, recipient signal, other signal).
async fn pending(store: &Store, to: &Oin) -> BTreeSet<(String, String, Option<String>)> {
    store
        .read()
        .pending_notifications(to, 0, 1000)
        .await
        .expect("pending")
        .into_iter()
        .map(|n| {
            (
                format!("{:?}", n.kind),
                n.recipient_signal_id,
                n.other.map(|o| o.signal_id),
            )
        })
        .collect()
}

fn set(
    items: &[(NotificationKind, &str, Option<&str>)],
) -> BTreeSet<(String, String, Option<String>)> {
    items
        .iter()
        .map(|(k, a, b)| (format!("{k:?}"), (*a).to_owned(), b.map(str::to_owned)))
        .collect()
}

/// The log read back is one chain (contiguous seqs, each linked to the one before) and the stored
/// tree's head is the Merkle root over exactly those records.
async fn assert_log_whole(store: &Store, expected_records: u64) {
    let records = store
        .read()
        .export_log(1, u64::MAX, u32::MAX)
        .await
        .expect("export");
    assert_eq!(records.len() as u64, expected_records, "records in the log");
    let mut frontier = Frontier::new();
    let mut prev = signaalpoort_core::access_log::GENESIS_HASH;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "seqs are contiguous");
        assert_eq!(
            r.prev_hash, prev,
            "record {} links to the one before",
            r.seq
        );
        prev = r.hash;
        frontier.append(&r.hash);
    }
    let (size, root) = store.tree_head().await.expect("tree head");
    assert_eq!(size, expected_records, "tree size");
    assert_eq!(root, frontier.root(), "tree root over the records");
}

async fn signals_match_and_end(store: &Store) {
    let now = now();
    let (a, b, c) = (agency(1), agency(2), agency(3));
    let p = person(1);
    exec(store, register("sig-a", &a, p, now), &a).await;
    assert!(pending(store, &a).await.is_empty(), "alone: no match");
    let second = exec(store, register("sig-b", &b, p, now), &b).await;
    assert!(matches!(
        second.outcome,
        Ok(Effect::SignalRegistered {
            refreshed: false,
            ..
        })
    ));
    // A new signal notifies both sides of every match, once.
    assert_eq!(
        pending(store, &a).await,
        set(&[(NotificationKind::Match, "sig-a", Some("sig-b"))])
    );
    assert_eq!(
        pending(store, &b).await,
        set(&[(NotificationKind::Match, "sig-b", Some("sig-a"))])
    );

    // The same agency, person and category again: a refresh of the same signal, no new match.
    let again = exec(store, register("sig-b2", &b, p, now), &b).await;
    match again.outcome {
        Ok(Effect::SignalRegistered { signal, refreshed }) => {
            assert!(refreshed);
            assert_eq!(signal.id, "sig-b");
            assert_eq!(signal.contact.team, "team of sig-b2");
        }
        other => panic!("expected a refresh, got {other:?}"),
    }
    assert_eq!(pending(store, &a).await.len(), 1);

    // Another agency cannot withdraw it, and learns nothing: NotFound as for a missing id.
    let foreign = exec(
        store,
        Mutation::WithdrawSignal {
            agency: c.clone(),
            signal_id: "sig-b".into(),
            now,
        },
        &c,
    )
    .await;
    assert!(matches!(foreign.outcome, Err(Rejection::NotFound(_))));
    // The refusal is in its record; the status code is the transport's to name (none here).
    let record = store
        .read()
        .export_log(foreign.seq, foreign.seq, 1)
        .await
        .expect("record")
        .remove(0);
    assert_eq!(record.draft.decision, DecisionCode::Deny);
    assert_eq!(record.draft.reason, "NOT_FOUND");
    assert_eq!(record.draft.status_code, NO_TRANSPORT_STATUS);
    let withdrawn = exec(
        store,
        Mutation::WithdrawSignal {
            agency: b.clone(),
            signal_id: "sig-b".into(),
            now,
        },
        &b,
    )
    .await;
    assert!(matches!(
        withdrawn.outcome,
        Ok(Effect::SignalWithdrawn { .. })
    ));
    assert_eq!(
        pending(store, &a).await,
        set(&[
            (NotificationKind::Match, "sig-a", Some("sig-b")),
            (NotificationKind::MatchEnded, "sig-a", Some("sig-b")),
        ])
    );
    let twice = exec(
        store,
        Mutation::WithdrawSignal {
            agency: b.clone(),
            signal_id: "sig-b".into(),
            now,
        },
        &b,
    )
    .await;
    assert!(matches!(twice.outcome, Err(Rejection::NotFound(_))));
    assert_log_whole(store, 6).await;
}

async fn households_match_at_household_level(store: &Store) {
    let now = now();
    let (a, b, m) = (agency(1), agency(2), agency(9));
    let (parent, child, hidden) = (person(10), person(11), person(12));
    exec(store, register("h-a", &a, parent, now), &a).await;
    exec(store, register("h-b", &b, child, now), &b).await;
    exec(store, register("h-x", &b, hidden, now), &b).await;
    assert!(pending(store, &a).await.is_empty());
    let declared = exec(
        store,
        Mutation::DeclareHousehold {
            agency: m.clone(),
            household_ref: "ref-1".into(),
            new_id: "hh-1".into(),
            members: vec![
                HouseholdMember {
                    subject: parent,
                    protected: false,
                    birth_date: None,
                },
                HouseholdMember {
                    subject: child,
                    protected: false,
                    birth_date: Some(time::macros::date!(2015 - 03 - 01)),
                },
                // A protected member (e.g. an address kept secret) is never matched.
                HouseholdMember {
                    subject: hidden,
                    protected: true,
                    birth_date: None,
                },
            ],
            now,
        },
        &m,
    )
    .await;
    match &declared.outcome {
        Ok(Effect::HouseholdDeclared {
            household_id,
            replaced,
            member_count,
            ..
        }) => {
            assert_eq!(household_id, "hh-1");
            assert!(!replaced);
            assert_eq!(*member_count, 3);
        }
        other => panic!("expected a declaration, got {other:?}"),
    }
    assert_eq!(
        pending(store, &a).await,
        set(&[(NotificationKind::Match, "h-a", Some("h-b"))])
    );
    assert_eq!(
        pending(store, &b).await,
        set(&[(NotificationKind::Match, "h-b", Some("h-a"))])
    );
    assert_eq!(
        store.read().birth_date(&child).await.expect("birth date"),
        Some(time::macros::date!(2015 - 03 - 01))
    );
    // Declared again under the same reference: replaced, same id, no new match.
    let again = exec(
        store,
        Mutation::DeclareHousehold {
            agency: m.clone(),
            household_ref: "ref-1".into(),
            new_id: "hh-other".into(),
            members: vec![
                HouseholdMember {
                    subject: parent,
                    protected: false,
                    birth_date: None,
                },
                HouseholdMember {
                    subject: child,
                    protected: false,
                    birth_date: None,
                },
            ],
            now,
        },
        &m,
    )
    .await;
    assert!(matches!(
        again.outcome,
        Ok(Effect::HouseholdDeclared { ref household_id, replaced: true, .. }) if household_id == "hh-1"
    ));
    assert_eq!(pending(store, &a).await.len(), 1);
    let dissolved = exec(
        store,
        Mutation::DissolveHousehold {
            agency: m.clone(),
            household_ref: "ref-1".into(),
            now,
        },
        &m,
    )
    .await;
    assert!(matches!(
        dissolved.outcome,
        Ok(Effect::HouseholdDissolved { .. })
    ));
    assert_eq!(
        pending(store, &a).await,
        set(&[
            (NotificationKind::Match, "h-a", Some("h-b")),
            (NotificationKind::MatchEnded, "h-a", Some("h-b")),
        ])
    );
    let gone = exec(
        store,
        Mutation::DissolveHousehold {
            agency: m.clone(),
            household_ref: "ref-1".into(),
            now,
        },
        &m,
    )
    .await;
    assert!(matches!(gone.outcome, Err(Rejection::NotFound(_))));
    assert_log_whole(store, 7).await;
}

async fn consents_and_idempotency(store: &Store) {
    let now = now();
    let a = agency(1);
    let consent = ConsentRecord {
        id: "c-1".into(),
        recorded_by: a.clone(),
        subject: person(20),
        include_household: false,
        givers: vec![ConsentGiver::Subject],
        purposes: vec![Purpose::CareCoordination],
        roles: vec![Role::Wij],
        agencies: vec![a.clone(), agency(2)],
        recorded_at: now,
        valid_until: now + Duration::days(30),
        renew_by: None,
        withdrawn_at: None,
        evidence_ref: "doc-1".into(),
    };
    exec(store, Mutation::RecordConsent(consent.clone()), &a).await;
    assert_eq!(
        store.read().consent("c-1").await.expect("read"),
        Some(consent)
    );
    let withdraw = || Mutation::WithdrawConsent {
        consent_id: "c-1".into(),
        now,
    };
    assert!(matches!(
        exec(store, withdraw(), &a).await.outcome,
        Ok(Effect::ConsentWithdrawn { .. })
    ));
    assert!(matches!(
        exec(store, withdraw(), &a).await.outcome,
        Err(Rejection::NotFound(_))
    ));

    // A retry with the same key replays the first outcome (and is logged again); the same key
    // with other content is refused and changes nothing.
    let keyed = |fingerprint: u8, id: &str| WriteRequest {
        idempotency: Some(Idempotency {
            agency: a.clone(),
            request_id: "req-1".into(),
            action: "RegisterSignal",
            fingerprint: [fingerprint; 32],
        }),
        ..write(register(id, &a, person(21), now), &a)
    };
    let first = store.execute(keyed(1, "k-1")).await.expect("first");
    let retry = store.execute(keyed(1, "k-2")).await.expect("retry");
    assert!(!first.replayed);
    assert!(retry.replayed);
    assert_eq!(first.outcome, retry.outcome);
    assert_ne!(first.seq, retry.seq, "each call has its own record");
    let reused = store.execute(keyed(2, "k-3")).await.expect("reused");
    assert_eq!(reused.outcome, Err(Rejection::RequestIdReused));
    assert!(store.read().signal("k-2").await.expect("read").is_none());
    assert!(store.read().signal("k-3").await.expect("read").is_none());
    assert_log_whole(store, 6).await;
}

async fn concurrent_calls_share_batches_and_one_chain(store: Arc<Store>) {
    let now = now();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let by = agency((i % 4) as u8 + 1);
            let who = person((i % 50) as u8 + 100);
            let mutation = if i % 5 == 0 {
                Mutation::None
            } else {
                register(&format!("c-{i}"), &by, who, now)
            };
            // Some calls carry an idempotency key (replayed below).
            let idempotency = (i % 3 == 0).then(|| Idempotency {
                agency: by.clone(),
                request_id: format!("key-{i}"),
                action: "RegisterSignal",
                fingerprint: [i as u8; 32],
            });
            store
                .execute(WriteRequest {
                    idempotency,
                    ..write(mutation, &by)
                })
                .await
                .expect("committed")
        }));
    }
    let mut seqs = BTreeSet::new();
    let mut first_outcomes = Vec::new();
    for t in tasks {
        let done = t.await.expect("task");
        seqs.insert(done.seq);
        first_outcomes.push(done.outcome);
    }
    assert_eq!(seqs.len(), 200, "every call has its own record");
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!(seqs.last(), Some(&200));
    // Every active signal's matches are notified to both sides exactly once, whatever batch the
    // two calls fell into: the notifications equal the matches the store reports now.
    let mut expected = BTreeSet::new();
    for a in 1..=4u8 {
        let signals = store
            .read()
            .list_signals(&agency(a), now, None, 1000)
            .await
            .expect("list");
        for s in &signals {
            for m in store.read().matches(s, now).await.expect("matches") {
                expected.insert((s.id.clone(), m.signal_id));
            }
        }
    }
    let mut notified = Vec::new();
    for a in 1..=4u8 {
        for n in store
            .read()
            .pending_notifications(&agency(a), 0, 10_000)
            .await
            .expect("pending")
        {
            assert_eq!(n.kind, NotificationKind::Match);
            notified.push((n.recipient_signal_id, n.other.expect("other").signal_id));
        }
    }
    let unique: BTreeSet<_> = notified.iter().cloned().collect();
    assert_eq!(unique.len(), notified.len(), "no notification twice");
    assert_eq!(unique, expected);
    // A keyed call replays its first outcome, whichever way its batch applied it.
    for i in [3u32, 6, 99] {
        let by = agency((i % 4) as u8 + 1);
        let retry = store
            .execute(WriteRequest {
                idempotency: Some(Idempotency {
                    agency: by.clone(),
                    request_id: format!("key-{i}"),
                    action: "RegisterSignal",
                    fingerprint: [i as u8; 32],
                }),
                ..write(
                    register(
                        &format!("again-{i}"),
                        &by,
                        person((i % 50) as u8 + 100),
                        now,
                    ),
                    &by,
                )
            })
            .await
            .expect("retry");
        assert!(retry.replayed, "call {i} replayed");
        assert_eq!(retry.outcome, first_outcomes[i as usize], "call {i}");
    }
    assert_log_whole(&store, 203).await;
}

async fn expiry_ends_matches_and_counts_history(store: &Store) {
    let now = now();
    let (a, b, m) = (agency(1), agency(2), agency(9));
    let p = person(30);
    exec(
        store,
        Mutation::DeclareHousehold {
            agency: m.clone(),
            household_ref: "ref-e".into(),
            new_id: "hh-e".into(),
            members: vec![HouseholdMember {
                subject: p,
                protected: false,
                birth_date: None,
            }],
            now,
        },
        &m,
    )
    .await;
    exec(store, register("e-a", &a, p, now), &a).await;
    let short = Mutation::RegisterSignal {
        new_id: "e-b".into(),
        agency: b.clone(),
        subject: p,
        category: Category::Parenting,
        contact: ContactPoint {
            team: "t".into(),
            phone: "050 123 4567".into(),
            email: None,
        },
        expires_at: now + Duration::seconds(1),
        now,
    };
    exec(store, short, &b).await;
    let later = now + Duration::seconds(2);
    assert!(store.read().purge_due(later).await.expect("due"));
    let purged = exec(store, Mutation::PurgeExpired { now: later }, &m).await;
    assert!(matches!(
        purged.outcome,
        Ok(Effect::Purged { signals: 0, .. })
    ));
    assert!(pending(store, &a).await.contains(&(
        format!("{:?}", NotificationKind::MatchEnded),
        "e-a".into(),
        Some("e-b".into())
    )));
    let history = store
        .read()
        .involvement_history("hh-e")
        .await
        .expect("history");
    assert!(
        history.iter().any(|h| h.agency == b && h.ended == 1),
        "the expired signal is counted as ended: {history:?}"
    );
    assert!(!store.read().purge_due(later).await.expect("due"));
}

/// Runs every case on a fresh store of its own; `url` makes one (`None`: PostgreSQL not set up).
async fn each(url: impl AsyncFn(usize) -> Option<String>) {
    for case in 0..5 {
        let Some(url) = url(case).await else {
            eprintln!("skipped: SIGNAALPOORT_TEST_DATABASE_URL is not set");
            return;
        };
        let store = Arc::new(
            Store::open(&url, StoreOptions::default())
                .await
                .expect("open"),
        );
        match case {
            0 => signals_match_and_end(&store).await,
            1 => households_match_at_household_level(&store).await,
            2 => consents_and_idempotency(&store).await,
            3 => concurrent_calls_share_batches_and_one_chain(store.clone()).await,
            _ => expiry_ends_matches_and_counts_history(&store).await,
        }
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    each(async |case| Some(format!("sqlite://{}/case-{case}.db", path.display()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    each(async |_| signaalpoort_store::testing::fresh_postgres_url().await).await;
}
