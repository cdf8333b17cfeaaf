//! The state-change rules: one function per [`Mutation`], run inside the write transaction on the
//! write thread, over [`Tx`] — so SQLite and PostgreSQL run the same rule and the same statements.
//! A rule either changes state and returns its [`Effect`], or refuses and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use signaalpoort_core::chronicity::Quarter;
use signaalpoort_core::coordination::{self, CoordinationError, CoordinationState};
use signaalpoort_core::involvement::MatchLevel;
use signaalpoort_core::{Oin, SubjectPseudonym};
use time::OffsetDateTime;

use crate::rows::{
    cursor, from_json, json, match_rows, micros, signal_row, subject, MATCHES_SQL, SIGNAL_COLUMNS,
};
use crate::tx::{Cols, Tx, Value};
use crate::{
    CoordinationRow, Effect, MatchRow, Mutation, NotificationKind, Outcome, Rejection, SignalRow,
    StoreError, WriteRequest,
};

/// How long ended signals and dissolved households stay (so watchers can still be told a match
/// ended) before the purge deletes them.
pub(crate) const ENDED_GRACE: time::Duration = time::Duration::days(7);

/// Live signals on the unprotected members of a household (also read by the read pool).
pub(crate) const HOUSEHOLD_SIGNALS_SQL: &str = "SELECT s.id, s.agency_oin, s.subject, s.category, s.contact_team, s.contact_phone, s.contact_email, s.registered_at, s.refreshed_at, s.expires_at, s.withdrawn_at \
     FROM signals s JOIN household_members m ON m.subject = s.subject \
     JOIN households h ON h.id = m.household_id \
     WHERE m.household_id = $1 AND m.protected = FALSE AND h.dissolved_at IS NULL \
     AND s.withdrawn_at IS NULL AND s.expires_at > $2 ORDER BY s.registered_at, s.id";

pub(crate) const COORDINATION_SQL: &str =
    "SELECT state, last_reminder FROM coordinations WHERE household_id = $1";

pub(crate) fn coordination_from_json(state: &str) -> Result<CoordinationState, StoreError> {
    serde_json::from_str(state).map_err(|e| StoreError::Corrupt(format!("coordination state: {e}")))
}

pub(crate) fn coordination_row<R: Cols>(row: Option<&R>) -> Result<CoordinationRow, StoreError> {
    match row {
        Some(row) => Ok(CoordinationRow {
            state: coordination_from_json(&row.text(0)?)?,
            last_reminder: row.opt_int(1)?.map(crate::rows::from_micros),
        }),
        None => Ok(CoordinationRow::default()),
    }
}

fn matches(
    tx: &mut dyn Tx,
    agency: &Oin,
    subj: &SubjectPseudonym,
    now: OffsetDateTime,
) -> Result<Vec<MatchRow>, StoreError> {
    let rows = tx.query(
        MATCHES_SQL,
        &[
            subj.as_bytes().to_vec().into(),
            agency.to_string().into(),
            micros(now).into(),
        ],
    )?;
    match_rows(&rows)
}

fn household_signals(
    tx: &mut dyn Tx,
    household_id: &str,
    now: OffsetDateTime,
) -> Result<Vec<SignalRow>, StoreError> {
    tx.query(
        HOUSEHOLD_SIGNALS_SQL,
        &[household_id.into(), micros(now).into()],
    )?
    .iter()
    .map(signal_row)
    .collect()
}

fn coordination_of(tx: &mut dyn Tx, household_id: &str) -> Result<CoordinationRow, StoreError> {
    let row = tx.query_opt(COORDINATION_SQL, &[household_id.into()])?;
    coordination_row(row.as_ref())
}

fn save_coordination(
    tx: &mut dyn Tx,
    household_id: &str,
    state: &CoordinationState,
    last_reminder: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO coordinations (household_id, state, last_reminder, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (household_id) DO UPDATE SET state = excluded.state, last_reminder = excluded.last_reminder, updated_at = excluded.updated_at",
        &[
            household_id.into(),
            json(state)?.into(),
            last_reminder.map(micros).into(),
            micros(now).into(),
        ],
    )?;
    Ok(())
}

const NOTIFY_SQL: &str = "INSERT INTO notifications (recipient_oin, kind, recipient_signal_id, other_signal_id, level, household_id, coordination_event, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// One coordination notification to every involved agency, on one of its signals in the household.
fn notify_involved(
    tx: &mut dyn Tx,
    signals: &[SignalRow],
    kind: NotificationKind,
    household_id: &str,
    event: &str,
    now: OffsetDateTime,
) -> Result<u32, StoreError> {
    let mut first_signal: BTreeMap<String, &SignalRow> = BTreeMap::new();
    for s in signals {
        first_signal.entry(s.agency.to_string()).or_insert(s);
    }
    for (agency, sig) in &first_signal {
        tx.execute(
            NOTIFY_SQL,
            &[
                agency.into(),
                kind.code().into(),
                (&sig.id).into(),
                Value::Text(None),
                Value::Int(None),
                household_id.into(),
                event.into(),
                micros(now).into(),
            ],
        )?;
    }
    Ok(first_signal.len() as u32)
}

fn notify(
    tx: &mut dyn Tx,
    recipient: &Oin,
    kind: NotificationKind,
    recipient_signal: &str,
    other: Option<(&str, MatchLevel)>,
    household: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    tx.execute(
        NOTIFY_SQL,
        &[
            recipient.to_string().into(),
            kind.code().into(),
            recipient_signal.into(),
            other.map(|(id, _)| id.to_owned()).into(),
            other
                .map(|(_, l)| if l == MatchLevel::Subject { 1i64 } else { 2 })
                .into(),
            household.map(str::to_owned).into(),
            Value::Text(None),
            micros(now).into(),
        ],
    )?;
    Ok(())
}

/// Adds an ended signal to the involvement history of each household its person is in: one count
/// row per quarter it was active. Nothing in the row points back to the signal.
fn record_history(
    tx: &mut dyn Tx,
    sig: &SignalRow,
    ended_at: OffsetDateTime,
) -> Result<(), StoreError> {
    let households = tx
        .query(
            "SELECT m.household_id FROM household_members m JOIN households h ON h.id = m.household_id WHERE m.subject = $1 AND m.protected = FALSE AND h.dissolved_at IS NULL",
            &[sig.subject.as_bytes().to_vec().into()],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<Vec<_>, _>>()?;
    let first = Quarter::of(sig.registered_at.date());
    let last = Quarter::of(ended_at.date());
    for household in &households {
        let mut q = first;
        loop {
            tx.execute(
                "INSERT INTO involvement_history (household_id, subject, quarter, agency_oin, category, registered, ended, first_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (household_id, subject, quarter, agency_oin, category) DO UPDATE SET registered = involvement_history.registered + excluded.registered, \
                 ended = involvement_history.ended + excluded.ended, first_at = CASE WHEN excluded.first_at < involvement_history.first_at THEN excluded.first_at ELSE involvement_history.first_at END",
                &[
                    household.into(),
                    sig.subject.as_bytes().to_vec().into(),
                    q.label().into(),
                    sig.agency.to_string().into(),
                    sig.category.code().into(),
                    i64::from(q == first).into(),
                    i64::from(q == last).into(),
                    micros(sig.registered_at).into(),
                ],
            )?;
            if q >= last {
                break;
            }
            q = q.next();
        }
    }
    Ok(())
}

fn signal_by_id(tx: &mut dyn Tx, id: &str) -> Result<Option<SignalRow>, StoreError> {
    tx.query_opt(
        &format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE id = $1"),
        &[id.into()],
    )?
    .as_ref()
    .map(signal_row)
    .transpose()
}

type Pairs = BTreeMap<(String, String), (Oin, MatchLevel)>;

/// Directed match pairs (signal, other signal, level) among the active signals of `subjects`.
fn pairs(
    tx: &mut dyn Tx,
    subjects: &BTreeSet<SubjectPseudonym>,
    now: OffsetDateTime,
) -> Result<Pairs, StoreError> {
    let mut out = BTreeMap::new();
    let sql = format!(
        "SELECT {SIGNAL_COLUMNS} FROM signals WHERE subject = $1 AND withdrawn_at IS NULL AND expires_at > $2"
    );
    for s in subjects {
        let rows = tx.query(&sql, &[s.as_bytes().to_vec().into(), micros(now).into()])?;
        for row in rows {
            let sig = signal_row(&row)?;
            for m in matches(tx, &sig.agency, &sig.subject, now)? {
                out.insert((sig.id.clone(), m.signal_id), (sig.agency.clone(), m.level));
            }
        }
    }
    Ok(out)
}

fn household_subjects(
    tx: &mut dyn Tx,
    household_id: &str,
) -> Result<BTreeSet<SubjectPseudonym>, StoreError> {
    tx.query(
        "SELECT subject FROM household_members WHERE household_id = $1",
        &[household_id.into()],
    )?
    .iter()
    .map(|r| subject(r.blob(0)?))
    .collect()
}

/// Notifies pairs that formed (Match) and pairs that ended (MatchEnded) between two snapshots.
fn notify_diff(
    tx: &mut dyn Tx,
    before: &Pairs,
    after: &Pairs,
    household: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    for ((sig, other), (agency, level)) in after {
        if !before.contains_key(&(sig.clone(), other.clone())) {
            notify(
                tx,
                agency,
                NotificationKind::Match,
                sig,
                Some((other, *level)),
                Some(household),
                now,
            )?;
        }
    }
    for ((sig, other), (agency, level)) in before {
        if !after.contains_key(&(sig.clone(), other.clone())) {
            notify(
                tx,
                agency,
                NotificationKind::MatchEnded,
                sig,
                Some((other, *level)),
                Some(household),
                now,
            )?;
        }
    }
    Ok(())
}

fn live_household_of(
    tx: &mut dyn Tx,
    agency: &Oin,
    household_ref: &str,
) -> Result<Option<String>, StoreError> {
    tx.query_opt(
        "SELECT id FROM households WHERE agency_oin = $1 AND household_ref = $2 AND dissolved_at IS NULL",
        &[agency.to_string().into(), household_ref.into()],
    )?
    .map(|r| r.text(0))
    .transpose()
}

/// Applies one mutation inside the open transaction. Refusals change nothing.
fn apply(tx: &mut dyn Tx, mutation: &Mutation) -> Result<Outcome, StoreError> {
    match mutation {
        Mutation::None => Ok(Ok(Effect::None)),
        Mutation::RegisterSignal {
            new_id,
            agency,
            subject: subj,
            category,
            contact,
            expires_at,
            now,
        } => {
            let open = tx
                .query_opt(
                    &format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE agency_oin = $1 AND subject = $2 AND category = $3 AND withdrawn_at IS NULL"),
                    &[
                        agency.to_string().into(),
                        subj.as_bytes().to_vec().into(),
                        category.code().into(),
                    ],
                )?
                .as_ref()
                .map(signal_row)
                .transpose()?;
            if let Some(existing) = open {
                if existing.expires_at > *now {
                    tx.execute(
                        "UPDATE signals SET contact_team = $1, contact_phone = $2, contact_email = $3, refreshed_at = $4, expires_at = $5 WHERE id = $6",
                        &[
                            (&contact.team).into(),
                            (&contact.phone).into(),
                            contact.email.clone().into(),
                            micros(*now).into(),
                            micros(*expires_at).into(),
                            (&existing.id).into(),
                        ],
                    )?;
                    let signal = SignalRow {
                        contact: contact.clone(),
                        refreshed_at: *now,
                        expires_at: *expires_at,
                        ..existing
                    };
                    return Ok(Ok(Effect::SignalRegistered {
                        signal,
                        refreshed: true,
                    }));
                }
                // Expired but not yet purged: it ended at its expiry; tell its matches, then start anew.
                end_by_expiry(tx, &existing)?;
            }
            tx.execute(
                &format!("INSERT INTO signals ({SIGNAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
                &[
                    new_id.into(),
                    agency.to_string().into(),
                    subj.as_bytes().to_vec().into(),
                    category.code().into(),
                    (&contact.team).into(),
                    (&contact.phone).into(),
                    contact.email.clone().into(),
                    micros(*now).into(),
                    micros(*now).into(),
                    micros(*expires_at).into(),
                    Value::Int(None),
                ],
            )?;
            for m in &matches(tx, agency, subj, *now)? {
                notify(
                    tx,
                    &m.agency,
                    NotificationKind::Match,
                    &m.signal_id,
                    Some((new_id, m.level)),
                    None,
                    *now,
                )?;
                notify(
                    tx,
                    agency,
                    NotificationKind::Match,
                    new_id,
                    Some((&m.signal_id, m.level)),
                    None,
                    *now,
                )?;
            }
            let signal = SignalRow {
                id: new_id.clone(),
                agency: agency.clone(),
                subject: *subj,
                category: *category,
                contact: contact.clone(),
                registered_at: *now,
                refreshed_at: *now,
                expires_at: *expires_at,
                withdrawn_at: None,
            };
            Ok(Ok(Effect::SignalRegistered {
                signal,
                refreshed: false,
            }))
        }
        Mutation::WithdrawSignal {
            agency,
            signal_id,
            now,
        } => {
            let own =
                signal_by_id(tx, signal_id)?.filter(|s| s.agency == *agency && s.is_active(*now));
            let Some(sig) = own else {
                return Ok(Err(Rejection::NotFound(
                    "no active signal of this agency with that id".into(),
                )));
            };
            let found = matches(tx, agency, &sig.subject, *now)?;
            record_history(tx, &sig, *now)?;
            tx.execute(
                "UPDATE signals SET withdrawn_at = $1 WHERE id = $2",
                &[micros(*now).into(), (&sig.id).into()],
            )?;
            for m in &found {
                notify(
                    tx,
                    &m.agency,
                    NotificationKind::MatchEnded,
                    &m.signal_id,
                    Some((&sig.id, m.level)),
                    None,
                    *now,
                )?;
            }
            Ok(Ok(Effect::SignalWithdrawn { at: *now }))
        }
        Mutation::DeclareHousehold {
            agency,
            household_ref,
            new_id,
            members,
            now,
        } => {
            let existing = live_household_of(tx, agency, household_ref)?;
            let id = existing.clone().unwrap_or_else(|| new_id.clone());
            let mut affected: BTreeSet<SubjectPseudonym> =
                members.iter().map(|m| m.subject).collect();
            if let Some(old) = &existing {
                affected.extend(household_subjects(tx, old)?);
            }
            let before = pairs(tx, &affected, *now)?;
            match &existing {
                Some(old) => {
                    tx.execute(
                        "DELETE FROM household_members WHERE household_id = $1",
                        &[old.into()],
                    )?;
                }
                None => {
                    tx.execute(
                        "INSERT INTO households (id, agency_oin, household_ref, declared_at, dissolved_at) VALUES ($1, $2, $3, $4, $5)",
                        &[
                            (&id).into(),
                            agency.to_string().into(),
                            household_ref.into(),
                            micros(*now).into(),
                            Value::Int(None),
                        ],
                    )?;
                }
            }
            for m in members {
                tx.execute(
                    "INSERT INTO household_members (household_id, subject, protected, birth_date, declared_at) VALUES ($1, $2, $3, $4, $5)",
                    &[
                        (&id).into(),
                        m.subject.as_bytes().to_vec().into(),
                        m.protected.into(),
                        m.birth_date.map(|d| d.to_string()).into(),
                        micros(*now).into(),
                    ],
                )?;
            }
            let after = pairs(tx, &affected, *now)?;
            notify_diff(tx, &before, &after, &id, *now)?;
            Ok(Ok(Effect::HouseholdDeclared {
                household_id: id,
                replaced: existing.is_some(),
                member_count: members.len() as u32,
                at: *now,
            }))
        }
        Mutation::DissolveHousehold {
            agency,
            household_ref,
            now,
        } => {
            let Some(id) = live_household_of(tx, agency, household_ref)? else {
                return Ok(Err(Rejection::NotFound(
                    "no live household with that reference declared by this agency".into(),
                )));
            };
            let affected = household_subjects(tx, &id)?;
            let before = pairs(tx, &affected, *now)?;
            tx.execute(
                "UPDATE households SET dissolved_at = $1 WHERE id = $2",
                &[micros(*now).into(), (&id).into()],
            )?;
            let after = pairs(tx, &affected, *now)?;
            notify_diff(tx, &before, &after, &id, *now)?;
            Ok(Ok(Effect::HouseholdDissolved { at: *now }))
        }
        Mutation::RecordConsent(c) => {
            tx.execute(
                "INSERT INTO consents (id, recorded_by, subject, include_household, givers, purposes, roles, agencies, recorded_at, valid_until, renew_by, withdrawn_at, evidence_ref) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    (&c.id).into(),
                    c.recorded_by.to_string().into(),
                    c.subject.as_bytes().to_vec().into(),
                    c.include_household.into(),
                    json(&c.givers)?.into(),
                    json(&c.purposes)?.into(),
                    json(&c.roles)?.into(),
                    json(&c.agencies)?.into(),
                    micros(c.recorded_at).into(),
                    micros(c.valid_until).into(),
                    c.renew_by.map(|d| d.to_string()).into(),
                    c.withdrawn_at.map(micros).into(),
                    (&c.evidence_ref).into(),
                ],
            )?;
            Ok(Ok(Effect::ConsentRecorded { consent: c.clone() }))
        }
        Mutation::WithdrawConsent { consent_id, now } => {
            let done = tx.execute(
                "UPDATE consents SET withdrawn_at = $1 WHERE id = $2 AND withdrawn_at IS NULL",
                &[micros(*now).into(), consent_id.into()],
            )?;
            if done == 0 {
                return Ok(Err(Rejection::NotFound(
                    "no active consent with that id".into(),
                )));
            }
            Ok(Ok(Effect::ConsentWithdrawn { at: *now }))
        }
        Mutation::Coordinate {
            household_id,
            command,
            now,
        } => {
            let signals = household_signals(tx, household_id, *now)?;
            let involved: BTreeSet<Oin> = signals.iter().map(|s| s.agency.clone()).collect();
            let stored = coordination_of(tx, household_id)?;
            match coordination::apply(&stored.state, &involved, command.clone(), *now) {
                Ok((state, event)) => {
                    save_coordination(tx, household_id, &state, stored.last_reminder, *now)?;
                    notify_involved(
                        tx,
                        &signals,
                        NotificationKind::Coordination,
                        household_id,
                        event.code(),
                        *now,
                    )?;
                    Ok(Ok(Effect::Coordinated { state, event }))
                }
                Err(e) => Ok(Err(match e {
                    CoordinationError::NotCoordinator => {
                        Rejection::PermissionDenied(signaalpoort_core::DenyReason::NotCoordinator)
                    }
                    CoordinationError::NoSuchProposal => Rejection::NotFound(e.to_string()),
                    CoordinationError::NotEligible => Rejection::CoordinatorNotEligible,
                    other => Rejection::FailedPrecondition(other.to_string()),
                })),
            }
        }
        Mutation::RemindCoordination {
            household_id,
            recipients,
            now,
        } => {
            let mut signals = household_signals(tx, household_id, *now)?;
            signals.retain(|s| recipients.contains(&s.agency));
            let stored = coordination_of(tx, household_id)?;
            let recipients = notify_involved(
                tx,
                &signals,
                NotificationKind::CoordinationReminder,
                household_id,
                "NO_COORDINATOR",
                *now,
            )?;
            save_coordination(tx, household_id, &stored.state, Some(*now), *now)?;
            Ok(Ok(Effect::Reminded { recipients }))
        }
        Mutation::DeliverNotifications { recipient, ids } => {
            let recipient_oin = recipient.to_string();
            let mut last: i64 = tx
                .query_opt(
                    "SELECT last_seq FROM notification_cursors WHERE recipient_oin = $1",
                    &[(&recipient_oin).into()],
                )?
                .map(|r| r.int(0))
                .transpose()?
                .unwrap_or(0);
            let start = last;
            let mut numbered = Vec::with_capacity(ids.len());
            for id in ids {
                let row = tx.query_opt(
                    "SELECT recipient_seq FROM notifications WHERE cursor = $1 AND recipient_oin = $2",
                    &[cursor(*id).into(), (&recipient_oin).into()],
                )?;
                let Some(row) = row else { continue };
                let seq = match row.opt_int(0)? {
                    Some(seq) => seq,
                    None => {
                        last += 1;
                        tx.execute(
                            "UPDATE notifications SET recipient_seq = $1 WHERE cursor = $2",
                            &[last.into(), cursor(*id).into()],
                        )?;
                        last
                    }
                };
                numbered.push((*id, seq as u64));
            }
            if last != start {
                tx.execute(
                    "INSERT INTO notification_cursors (recipient_oin, last_seq) VALUES ($1, $2) ON CONFLICT (recipient_oin) DO UPDATE SET last_seq = excluded.last_seq",
                    &[(&recipient_oin).into(), last.into()],
                )?;
            }
            Ok(Ok(Effect::NotificationsDelivered {
                numbered,
                previous_last: start as u64,
            }))
        }
        Mutation::PurgeAccessLog { before } => {
            let last = tx
                .query_one(
                    "SELECT MAX(seq) FROM access_log WHERE time < $1",
                    &[micros(*before).into()],
                )?
                .opt_int(0)?;
            let Some(last) = last else {
                return Ok(Ok(Effect::LogPurged {
                    records: 0,
                    anchor_seq: 0,
                }));
            };
            let hash = tx
                .query_one("SELECT hash FROM access_log WHERE seq = $1", &[last.into()])?
                .blob(0)?;
            tx.execute(
                "INSERT INTO log_anchor (id, seq, hash) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                &[last.into(), hash.into()],
            )?;
            tx.execute(
                "DELETE FROM access_log_subjects WHERE seq <= $1",
                &[last.into()],
            )?;
            let records = tx.execute("DELETE FROM access_log WHERE seq <= $1", &[last.into()])?;
            Ok(Ok(Effect::LogPurged {
                records,
                anchor_seq: last as u64,
            }))
        }
        Mutation::PurgeExpired { now } => {
            let expired = tx.query(
                &format!("SELECT {SIGNAL_COLUMNS} FROM signals WHERE withdrawn_at IS NULL AND expires_at <= $1"),
                &[micros(*now).into()],
            )?;
            for row in &expired {
                end_by_expiry(tx, &signal_row(row)?)?;
            }
            let cutoff: Value = micros(*now - ENDED_GRACE).into();
            let cutoff = std::slice::from_ref(&cutoff);
            tx.execute("DELETE FROM notifications WHERE recipient_signal_id IN (SELECT id FROM signals WHERE withdrawn_at <= $1) OR other_signal_id IN (SELECT id FROM signals WHERE withdrawn_at <= $1)", cutoff)?;
            let signals = tx.execute("DELETE FROM signals WHERE withdrawn_at <= $1", cutoff)?;
            tx.execute("DELETE FROM household_members WHERE household_id IN (SELECT id FROM households WHERE dissolved_at <= $1)", cutoff)?;
            // A dissolved household's coordination and history go with it.
            tx.execute("DELETE FROM coordinations WHERE household_id IN (SELECT id FROM households WHERE dissolved_at <= $1)", cutoff)?;
            tx.execute("DELETE FROM involvement_history WHERE household_id IN (SELECT id FROM households WHERE dissolved_at <= $1)", cutoff)?;
            let households =
                tx.execute("DELETE FROM households WHERE dissolved_at <= $1", cutoff)?;
            Ok(Ok(Effect::Purged {
                signals,
                households,
            }))
        }
    }
}

/// One request's own statements: replay by its idempotency key, or apply its mutation and keep
/// the key. An error here belongs to this request alone.
pub(crate) fn apply_request(
    tx: &mut dyn Tx,
    req: &WriteRequest,
) -> Result<(Outcome, bool), StoreError> {
    let replay = match &req.idempotency {
        Some(key) => tx
            .query_opt(
                "SELECT outcome, action, fingerprint FROM idempotency WHERE agency_oin = $1 AND request_id = $2",
                &[key.agency.to_string().into(), (&key.request_id).into()],
            )?
            .map(|r| -> Result<_, StoreError> {
                let stored = r.text(0)?;
                let action = r.text(1)?;
                let fingerprint = r.opt_blob(2)?;
                // Rows from before fingerprints were kept match on the RPC alone.
                let same = (action.is_empty() || action == key.action)
                    && fingerprint.is_none_or(|f| f == key.fingerprint);
                Ok(if same {
                    Ok(from_json::<Outcome>(&stored)?)
                } else {
                    Err(Rejection::RequestIdReused)
                })
            })
            .transpose()?,
        None => None,
    };
    Ok(match replay {
        Some(Ok(stored)) => (stored, true),
        Some(Err(reused)) => (Err(reused), false),
        None => {
            let outcome = apply(tx, &req.mutation)?;
            if let Some(key) = &req.idempotency {
                tx.execute(
                    "INSERT INTO idempotency (agency_oin, request_id, outcome, action, fingerprint) VALUES ($1, $2, $3, $4, $5)",
                    &[
                        key.agency.to_string().into(),
                        (&key.request_id).into(),
                        json(&outcome)?.into(),
                        key.action.into(),
                        key.fingerprint.to_vec().into(),
                    ],
                )?;
            }
            (outcome, false)
        }
    })
}

/// Marks an expired signal as ended at its expiry and tells the agencies it matched.
fn end_by_expiry(tx: &mut dyn Tx, sig: &SignalRow) -> Result<(), StoreError> {
    let just_before = sig.expires_at - time::Duration::microseconds(1);
    for m in matches(tx, &sig.agency, &sig.subject, just_before)? {
        notify(
            tx,
            &m.agency,
            NotificationKind::MatchEnded,
            &m.signal_id,
            Some((&sig.id, m.level)),
            None,
            sig.expires_at,
        )?;
    }
    record_history(tx, sig, sig.expires_at)?;
    tx.execute(
        "UPDATE signals SET withdrawn_at = expires_at WHERE id = $1",
        &[(&sig.id).into()],
    )?;
    Ok(())
}
