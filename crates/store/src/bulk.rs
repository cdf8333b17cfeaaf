//! The benchmark's loader: many households and signals in one transaction, straight into the
//! tables (no rules, no records). Only `signaalpoort-bench` and the matcher test use it.

use sqlx::{AnyConnection, Connection};

use crate::rows::{micros, SIGNAL_COLUMNS};
use crate::{HouseholdMember, SignalRow, StoreError};
use signaalpoort_core::Oin;
use time::OffsetDateTime;

pub(crate) async fn load(
    conn: &mut AnyConnection,
    households: &[(String, String, Oin, Vec<HouseholdMember>)],
    signals: &[SignalRow],
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    for chunk in households.chunks(500) {
        let mut sql = String::from("INSERT INTO households (id, agency_oin, household_ref, declared_at, dissolved_at) VALUES ");
        for i in 0..chunk.len() {
            let b = i * 4;
            sql.push_str(&format!(
                "{}(${}, ${}, ${}, ${}, NULL)",
                if i > 0 { ", " } else { "" },
                b + 1,
                b + 2,
                b + 3,
                b + 4
            ));
        }
        let mut q = sqlx::query(&sql);
        for (id, reference, agency, _) in chunk {
            q = q
                .bind(id.clone())
                .bind(agency.to_string())
                .bind(reference.clone())
                .bind(micros(OffsetDateTime::now_utc()));
        }
        q.execute(&mut *tx).await?;
        let members: Vec<(&String, &HouseholdMember)> = chunk
            .iter()
            .flat_map(|(id, _, _, ms)| ms.iter().map(move |m| (id, m)))
            .collect();
        for part in members.chunks(1000) {
            let mut sql = String::from(
                "INSERT INTO household_members (household_id, subject, protected) VALUES ",
            );
            for i in 0..part.len() {
                let b = i * 3;
                sql.push_str(&format!(
                    "{}(${}, ${}, ${})",
                    if i > 0 { ", " } else { "" },
                    b + 1,
                    b + 2,
                    b + 3
                ));
            }
            let mut q = sqlx::query(&sql);
            for (id, m) in part {
                q = q
                    .bind((*id).clone())
                    .bind(m.subject.as_bytes().to_vec())
                    .bind(m.protected);
            }
            q.execute(&mut *tx).await?;
        }
    }
    for chunk in signals.chunks(500) {
        let mut sql = format!("INSERT INTO signals ({SIGNAL_COLUMNS}) VALUES ");
        for i in 0..chunk.len() {
            let b = i * 11;
            let ps: Vec<String> = (1..=11).map(|k| format!("${}", b + k)).collect();
            sql.push_str(&format!(
                "{}({})",
                if i > 0 { ", " } else { "" },
                ps.join(", ")
            ));
        }
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q
                .bind(s.id.clone())
                .bind(s.agency.to_string())
                .bind(s.subject.as_bytes().to_vec())
                .bind(s.category.code())
                .bind(s.contact.team.clone())
                .bind(s.contact.phone.clone())
                .bind(s.contact.email.clone())
                .bind(micros(s.registered_at))
                .bind(micros(s.refreshed_at))
                .bind(micros(s.expires_at))
                .bind(s.withdrawn_at.map(micros));
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
