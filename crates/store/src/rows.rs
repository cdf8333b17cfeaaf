//! Rows as stored: the column lists, the one decoder per row type (for the write thread's rows
//! and the read pool's alike, through [`Cols`]) and the value conversions both paths share.

use std::collections::BTreeMap;

use signaalpoort_core::access_log::{AccessRecord, DecisionCode, RecordDraft};
use signaalpoort_core::consent::ConsentRecord;
use signaalpoort_core::involvement::MatchLevel;
use signaalpoort_core::{Basis, Category, ContactPoint, Oin, Purpose, Role, SubjectPseudonym};
use time::OffsetDateTime;

use crate::tx::Cols;
use crate::{AlertKind, AlertRow, MatchRow, SignalRow, StoreError};

pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

pub(crate) fn from_micros(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

pub(crate) fn hash32(v: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| corrupt(format!("{what} is not 32 bytes")))
}

pub(crate) fn subject(v: Vec<u8>) -> Result<SubjectPseudonym, StoreError> {
    Ok(SubjectPseudonym::from_bytes(hash32(v, "subject")?))
}

pub(crate) fn oin(s: String) -> Result<Oin, StoreError> {
    Oin::parse(&s).map_err(|_| corrupt(format!("bad OIN {s:?}")))
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(e.to_string()))
}

pub(crate) const SIGNAL_COLUMNS: &str = "id, agency_oin, subject, category, contact_team, contact_phone, contact_email, registered_at, refreshed_at, expires_at, withdrawn_at";

pub(crate) fn signal_row<R: Cols>(r: &R) -> Result<SignalRow, StoreError> {
    Ok(SignalRow {
        id: r.text(0)?,
        agency: oin(r.text(1)?)?,
        subject: subject(r.blob(2)?)?,
        category: Category::from_code(&r.text(3)?).ok_or_else(|| corrupt("category"))?,
        contact: ContactPoint {
            team: r.text(4)?,
            phone: r.text(5)?,
            email: r.opt_text(6)?,
        },
        registered_at: from_micros(r.int(7)?),
        refreshed_at: from_micros(r.int(8)?),
        expires_at: from_micros(r.int(9)?),
        withdrawn_at: r.opt_int(10)?.map(from_micros),
    })
}

/// Other agencies' active signals matching a signal of `agency` on `subject`, at `now`: same
/// subject (level 1), or another unprotected member of a live household in which the subject is an
/// unprotected member (level 2).
pub(crate) const MATCHES_SQL: &str = "
SELECT s.id, s.agency_oin, s.subject, s.category, s.contact_team, s.contact_phone, s.contact_email, s.registered_at, 1 AS level
  FROM signals s
 WHERE s.subject = $1 AND s.agency_oin <> $2 AND s.withdrawn_at IS NULL AND s.expires_at > $3
UNION
SELECT s.id, s.agency_oin, s.subject, s.category, s.contact_team, s.contact_phone, s.contact_email, s.registered_at, 2 AS level
  FROM household_members m1
  JOIN households h ON h.id = m1.household_id AND h.dissolved_at IS NULL
  JOIN household_members m2 ON m2.household_id = m1.household_id AND m2.subject <> m1.subject AND m2.protected = FALSE
  JOIN signals s ON s.subject = m2.subject
 WHERE m1.subject = $1 AND m1.protected = FALSE AND s.agency_oin <> $2 AND s.withdrawn_at IS NULL AND s.expires_at > $3";

pub(crate) fn match_rows<R: Cols>(rows: &[R]) -> Result<Vec<MatchRow>, StoreError> {
    // A signal reachable at both levels, or through two households, appears once at its closest.
    let mut by_id: BTreeMap<String, MatchRow> = BTreeMap::new();
    for r in rows {
        let level = if r.int(8)? == 1 {
            MatchLevel::Subject
        } else {
            MatchLevel::Household
        };
        let m = MatchRow {
            signal_id: r.text(0)?,
            agency: oin(r.text(1)?)?,
            subject: subject(r.blob(2)?)?,
            category: Category::from_code(&r.text(3)?).ok_or_else(|| corrupt("category"))?,
            contact: ContactPoint {
                team: r.text(4)?,
                phone: r.text(5)?,
                email: r.opt_text(6)?,
            },
            since: from_micros(r.int(7)?),
            level,
        };
        match by_id.get(&m.signal_id) {
            Some(existing) if existing.level <= m.level => {}
            _ => {
                by_id.insert(m.signal_id.clone(), m);
            }
        }
    }
    let mut out: Vec<MatchRow> = by_id.into_values().collect();
    out.sort_by(|a, b| (a.since, &a.signal_id).cmp(&(b.since, &b.signal_id)));
    Ok(out)
}

pub(crate) const CONSENT_COLUMNS: &str = "c.id, c.recorded_by, c.subject, CASE WHEN c.include_household THEN 1 ELSE 0 END, c.givers, c.purposes, c.roles, c.agencies, c.recorded_at, c.valid_until, c.renew_by, c.withdrawn_at, c.evidence_ref";

pub(crate) fn consent_row<R: Cols>(r: &R) -> Result<ConsentRecord, StoreError> {
    let renew_by: Option<String> = r.opt_text(10)?;
    Ok(ConsentRecord {
        id: r.text(0)?,
        recorded_by: oin(r.text(1)?)?,
        subject: subject(r.blob(2)?)?,
        include_household: r.int(3)? != 0,
        givers: from_json(&r.text(4)?)?,
        purposes: from_json(&r.text(5)?)?,
        roles: from_json(&r.text(6)?)?,
        agencies: from_json(&r.text(7)?)?,
        recorded_at: from_micros(r.int(8)?),
        valid_until: from_micros(r.int(9)?),
        renew_by: match renew_by {
            Some(s) => Some(
                time::Date::parse(&s, &time::format_description::well_known::Iso8601::DATE)
                    .map_err(|_| corrupt("renew_by"))?,
            ),
            None => None,
        },
        withdrawn_at: r.opt_int(11)?.map(from_micros),
        evidence_ref: r.text(12)?,
    })
}

pub(crate) const RECORD_COLUMNS: &str = "seq, time, agency_oin, role, actor_id, action, subjects, household_id, purpose, basis, decision, reason, status_code, request_id, cert_fingerprint, justification, CASE WHEN flagged THEN 1 ELSE 0 END, trace_id, span_id, object_id, prev_hash, hash";

pub(crate) fn record_row<R: Cols>(r: &R) -> Result<AccessRecord, StoreError> {
    let code = |i: usize| -> Result<Option<String>, StoreError> { r.opt_text(i) };
    let draft = RecordDraft {
        time: from_micros(r.int(1)?),
        agency_oin: r.text(2)?,
        role: code(3)?
            .map(|c| Role::from_code(&c).ok_or_else(|| corrupt("role")))
            .transpose()?,
        actor_id: r.text(4)?,
        action: r.text(5)?,
        subjects: from_json(&r.text(6)?)?,
        household_id: r.text(7)?,
        purpose: code(8)?
            .map(|c| Purpose::from_code(&c).ok_or_else(|| corrupt("purpose")))
            .transpose()?,
        basis: code(9)?
            .map(|c| Basis::from_code(&c).ok_or_else(|| corrupt("basis")))
            .transpose()?,
        decision: DecisionCode::from_code(&r.text(10)?).ok_or_else(|| corrupt("decision"))?,
        reason: r.text(11)?,
        status_code: r.int(12)? as i32,
        request_id: r.text(13)?,
        cert_fingerprint: r.text(14)?,
        justification: r.text(15)?,
        flagged_for_review: r.int(16)? != 0,
        trace_id: r.text(17)?,
        span_id: r.text(18)?,
        object_id: r.text(19)?,
    };
    Ok(AccessRecord {
        seq: r.int(0)? as u64,
        prev_hash: hash32(r.blob(20)?, "prev_hash")?,
        draft,
        hash: hash32(r.blob(21)?, "hash")?,
    })
}

pub(crate) fn alert_row<R: Cols>(r: &R) -> Result<AlertRow, StoreError> {
    Ok(AlertRow {
        cursor: r.int(0)? as u64,
        kind: AlertKind::from_code(&r.text(1)?).ok_or_else(|| corrupt("alert kind"))?,
        time: from_micros(r.int(2)?),
        agency_oin: r.text(3)?,
        actor_id: r.text(4)?,
        record_seq: r.int(5)? as u64,
        detail: r.text(6)?,
    })
}

/// Clamps a client-supplied cursor into the database's signed range.
pub(crate) fn cursor(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
