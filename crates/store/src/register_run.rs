//! A batch's consecutive new-signal registrations applied as a set: a few statements for the whole
//! run instead of several per call — what makes a batch cheap on PostgreSQL, where every statement
//! is a round trip inside the locked transaction.
//!
//! The result is exactly what applying the run one request at a time (`mutate.rs`) gives: each new
//! signal matches the active signals present before it — earlier signals of the run included,
//! later ones not — and notifies both sides in the same order. Whenever a request is not the plain
//! case (an open signal of the same agency, person and category exists — a refresh or an expiry;
//! an idempotency key already used or repeated in the run; the same signal twice), nothing has been
//! written yet and the run is left to the one-at-a-time rules. If a set statement fails, the batch
//! is applied again one at a time, so a failing request is found and fails alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use signaalpoort_core::involvement::MatchLevel;
use signaalpoort_core::{Category, ContactPoint, Oin, SubjectPseudonym};
use time::OffsetDateTime;

use crate::rows::{from_micros, json, micros, oin, subject, SIGNAL_COLUMNS};
use crate::tx::{Cols, Tx, Value};
use crate::{
    Effect, MatchRow, Mutation, NotificationKind, Outcome, SignalRow, StoreError, WriteRequest,
};

/// The requests of a run, as the plain case needs them.
struct New<'a> {
    req: &'a WriteRequest,
    id: &'a str,
    agency: &'a Oin,
    subject: SubjectPseudonym,
    category: Category,
    contact: &'a ContactPoint,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
}

/// Whether a request can be part of a run.
pub(crate) fn is_new_signal(req: &WriteRequest) -> bool {
    matches!(req.mutation, Mutation::RegisterSignal { .. })
}

fn as_new(req: &WriteRequest) -> Option<New<'_>> {
    match &req.mutation {
        Mutation::RegisterSignal {
            new_id,
            agency,
            subject,
            category,
            contact,
            expires_at,
            now,
        } => Some(New {
            req,
            id: new_id,
            agency,
            subject: *subject,
            category: *category,
            contact,
            expires_at: *expires_at,
            now: *now,
        }),
        _ => None,
    }
}

fn in_list(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies the run as a set; `Ok(None)` when it is not the plain case (nothing was written).
pub(crate) fn apply_run(
    tx: &mut dyn Tx,
    run: &[WriteRequest],
) -> Result<Option<Vec<Outcome>>, StoreError> {
    let news: Vec<New<'_>> = run.iter().filter_map(as_new).collect();
    if news.len() != run.len() || news.is_empty() {
        return Ok(None);
    }
    // The same signal, or the same key, twice in the run: one at a time.
    let mut seen = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for n in &news {
        if !seen.insert((n.agency.to_string(), n.subject, n.category.code())) {
            return Ok(None);
        }
        if let Some(k) = &n.req.idempotency {
            if !keys.insert((k.agency.to_string(), k.request_id.clone())) {
                return Ok(None);
            }
        }
    }
    let subjects: Vec<SubjectPseudonym> = news
        .iter()
        .map(|n| n.subject)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let subject_params: Vec<Value> = subjects
        .iter()
        .map(|s| Value::from(s.as_bytes().to_vec()))
        .collect();

    // An open signal of the same agency, person and category: a refresh or an expiry.
    let open = tx.query(
        &format!(
            "SELECT agency_oin, subject, category FROM signals WHERE subject IN ({}) AND withdrawn_at IS NULL",
            in_list(1, subjects.len())
        ),
        &subject_params,
    )?;
    for row in &open {
        let key = (row.text(0)?, subject(row.blob(1)?)?, row.text(2)?);
        if news.iter().any(|n| {
            (
                n.agency.to_string(),
                n.subject,
                n.category.code().to_owned(),
            ) == key
        }) {
            return Ok(None);
        }
    }
    // A key used before: a replay or a reuse.
    if !keys.is_empty() {
        let ids: Vec<Value> = keys.iter().map(|(_, r)| Value::from(r.clone())).collect();
        let used = tx.query(
            &format!(
                "SELECT agency_oin, request_id FROM idempotency WHERE request_id IN ({})",
                in_list(1, ids.len())
            ),
            &ids,
        )?;
        for row in &used {
            if keys.contains(&(row.text(0)?, row.text(1)?)) {
                return Ok(None);
            }
        }
    }

    // The plain case: insert every signal.
    let mut params: Vec<Value> = Vec::with_capacity(news.len() * 11);
    for n in &news {
        params.extend([
            n.id.into(),
            n.agency.to_string().into(),
            n.subject.as_bytes().to_vec().into(),
            n.category.code().into(),
            (&n.contact.team).into(),
            (&n.contact.phone).into(),
            n.contact.email.clone().into(),
            micros(n.now).into(),
            micros(n.now).into(),
            micros(n.expires_at).into(),
            Value::Int(None),
        ]);
    }
    tx.insert_rows(
        &format!("INSERT INTO signals ({SIGNAL_COLUMNS})"),
        "",
        11,
        &params,
    )?;

    // Every candidate match of the run's persons, at the earliest `now` of the run (each request
    // then keeps those active at its own `now`).
    let earliest = news.iter().map(|n| n.now).min().unwrap_or(news[0].now);
    let k = subjects.len();
    let list = in_list(1, k);
    let at = k + 1;
    let sql = format!(
        "SELECT s.id, s.agency_oin, s.subject, s.category, s.contact_team, s.contact_phone, s.contact_email, s.registered_at, 1 AS level, s.subject AS of_subject, s.expires_at
           FROM signals s
          WHERE s.subject IN ({list}) AND s.withdrawn_at IS NULL AND s.expires_at > ${at}
         UNION ALL
         SELECT s.id, s.agency_oin, s.subject, s.category, s.contact_team, s.contact_phone, s.contact_email, s.registered_at, 2 AS level, m1.subject AS of_subject, s.expires_at
           FROM household_members m1
           JOIN households h ON h.id = m1.household_id AND h.dissolved_at IS NULL
           JOIN household_members m2 ON m2.household_id = m1.household_id AND m2.subject <> m1.subject AND m2.protected = FALSE
           JOIN signals s ON s.subject = m2.subject
          WHERE m1.subject IN ({list}) AND m1.protected = FALSE AND s.withdrawn_at IS NULL AND s.expires_at > ${at}"
    );
    let mut params = subject_params;
    params.push(micros(earliest).into());
    let mut candidates: HashMap<SubjectPseudonym, Vec<(MatchRow, OffsetDateTime)>> = HashMap::new();
    for r in tx.query(&sql, &params)? {
        let m = MatchRow {
            signal_id: r.text(0)?,
            agency: oin(r.text(1)?)?,
            subject: subject(r.blob(2)?)?,
            category: Category::from_code(&r.text(3)?)
                .ok_or_else(|| StoreError::Corrupt("category".into()))?,
            contact: ContactPoint {
                team: r.text(4)?,
                phone: r.text(5)?,
                email: r.opt_text(6)?,
            },
            since: from_micros(r.int(7)?),
            level: if r.int(8)? == 1 {
                MatchLevel::Subject
            } else {
                MatchLevel::Household
            },
        };
        candidates
            .entry(subject(r.blob(9)?)?)
            .or_default()
            .push((m, from_micros(r.int(10)?)));
    }

    // Each request's matches, as one-at-a-time application finds them.
    let position: HashMap<&str, usize> = news.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut notifications: Vec<[Value; 8]> = Vec::new();
    for (i, n) in news.iter().enumerate() {
        let mut by_id: BTreeMap<&str, &MatchRow> = BTreeMap::new();
        for (m, expires_at) in candidates.get(&n.subject).into_iter().flatten() {
            let later = position.get(m.signal_id.as_str()).is_some_and(|p| *p >= i);
            if later || m.agency == *n.agency || *expires_at <= n.now {
                continue;
            }
            match by_id.get(m.signal_id.as_str()) {
                Some(existing) if existing.level <= m.level => {}
                _ => {
                    by_id.insert(&m.signal_id, m);
                }
            }
        }
        let mut found: Vec<&MatchRow> = by_id.into_values().collect();
        found.sort_by(|a, b| (a.since, &a.signal_id).cmp(&(b.since, &b.signal_id)));
        for m in found {
            let level = if m.level == MatchLevel::Subject {
                1i64
            } else {
                2
            };
            notifications.push(notification(&m.agency, &m.signal_id, n.id, level, n.now));
            notifications.push(notification(n.agency, n.id, &m.signal_id, level, n.now));
        }
    }
    let params: Vec<Value> = notifications.into_iter().flatten().collect();
    tx.insert_rows(
        "INSERT INTO notifications (recipient_oin, kind, recipient_signal_id, other_signal_id, level, household_id, coordination_event, occurred_at)",
        "",
        8,
        &params,
    )?;

    let outcomes: Vec<Outcome> = news
        .iter()
        .map(|n| {
            Ok(Effect::SignalRegistered {
                signal: SignalRow {
                    id: n.id.to_owned(),
                    agency: n.agency.clone(),
                    subject: n.subject,
                    category: n.category,
                    contact: n.contact.clone(),
                    registered_at: n.now,
                    refreshed_at: n.now,
                    expires_at: n.expires_at,
                    withdrawn_at: None,
                },
                refreshed: false,
            })
        })
        .collect();

    // The keys, with the outcomes they replay.
    let keyed: Vec<(&New<'_>, &Outcome)> = news
        .iter()
        .zip(&outcomes)
        .filter(|(n, _)| n.req.idempotency.is_some())
        .collect();
    let mut params: Vec<Value> = Vec::with_capacity(keyed.len() * 5);
    for (n, outcome) in keyed {
        let Some(key) = &n.req.idempotency else {
            continue;
        };
        params.extend([
            key.agency.to_string().into(),
            (&key.request_id).into(),
            json(outcome)?.into(),
            key.action.into(),
            key.fingerprint.to_vec().into(),
        ]);
    }
    tx.insert_rows(
        "INSERT INTO idempotency (agency_oin, request_id, outcome, action, fingerprint)",
        "",
        5,
        &params,
    )?;
    Ok(Some(outcomes))
}

fn notification(
    recipient: &Oin,
    recipient_signal: &str,
    other: &str,
    level: i64,
    now: OffsetDateTime,
) -> [Value; 8] {
    [
        recipient.to_string().into(),
        NotificationKind::Match.code().into(),
        recipient_signal.into(),
        other.into(),
        level.into(),
        Value::Text(None),
        Value::Text(None),
        micros(now).into(),
    ]
}
