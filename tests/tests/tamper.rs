//! Tampering with the access log in the database — editing a field, deleting, reordering,
//! truncating, inserting — is found by verification, which names the first bad record.

use signaalpoort_api::v1 as pb;
use signaalpoort_core::access_log::ProblemKind;
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;
use sqlx::Connection;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

/// Eight records, then a clean shutdown whose final checkpoint covers all of them.
async fn logged_env(backend: Backend) -> Env {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    for n in 0..4 {
        register(&mut wij, &bsn(300 + n), pb::Category::Parenting).await;
        register(&mut ggd, &bsn(300 + n), pb::Category::Health).await;
    }
    assert_eq!(gw.log_len().await, 8);
    gw.stop().await;
    let report = verify_stored_chain(&env.database_url, &env.data()).await;
    assert!(report.is_ok(), "{:?}", report.first_problem);
    env
}

async fn tamper(env: &Env, statements: &[&str]) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&env.database_url)
        .await
        .expect("connect");
    for sql in statements {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    conn.close().await.expect("close");
}

async fn first_problem(env: &Env) -> (Option<u64>, ProblemKind) {
    let report = verify_stored_chain(&env.database_url, &env.data()).await;
    let problem = report.first_problem.expect("tampering must be detected");
    (problem.seq, problem.kind)
}

async fn an_edited_field_is_detected(backend: Backend) {
    let env = logged_env(backend).await;
    tamper(
        &env,
        &["UPDATE access_log SET actor_id = 'someone-else' WHERE seq = 3"],
    )
    .await;
    assert_eq!(
        first_problem(&env).await,
        (Some(3), ProblemKind::HashMismatch)
    );
}

async fn a_deleted_record_is_detected(backend: Backend) {
    let env = logged_env(backend).await;
    tamper(&env, &["DELETE FROM access_log WHERE seq = 5"]).await;
    assert_eq!(
        first_problem(&env).await,
        (
            Some(6),
            ProblemKind::SequenceGap {
                expected: 5,
                found: 6
            }
        )
    );
}

async fn reordered_records_are_detected(backend: Backend) {
    let env = logged_env(backend).await;
    // Swap records 2 and 3, renumbering them so the sequence itself looks intact.
    tamper(
        &env,
        &[
            "UPDATE access_log SET seq = 1000 WHERE seq = 2",
            "UPDATE access_log SET seq = 2 WHERE seq = 3",
            "UPDATE access_log SET seq = 3 WHERE seq = 1000",
        ],
    )
    .await;
    let (seq, _) = first_problem(&env).await;
    assert_eq!(seq, Some(2));
}

async fn a_truncated_log_is_detected(backend: Backend) {
    let env = logged_env(backend).await;
    tamper(&env, &["DELETE FROM access_log WHERE seq > 6"]).await;
    let (_, kind) = first_problem(&env).await;
    assert_eq!(
        kind,
        ProblemKind::Truncated {
            checkpoint_size: 8,
            records: 6
        }
    );
}

async fn an_inserted_record_is_detected(backend: Backend) {
    let env = logged_env(backend).await;
    // Make room after record 4 and copy record 4 into the gap, hashes and all.
    tamper(
        &env,
        &[
            "UPDATE access_log SET seq = seq + 100 WHERE seq > 4",
            "UPDATE access_log SET seq = seq - 99 WHERE seq > 100",
            "INSERT INTO access_log SELECT 5, time, agency_oin, role, actor_id, action, subjects, household_id, purpose, basis, \
             decision, reason, status_code, request_id, cert_fingerprint, justification, flagged, trace_id, span_id, object_id, \
             prev_hash, hash FROM access_log WHERE seq = 4",
        ],
    )
    .await;
    let (seq, _) = first_problem(&env).await;
    assert_eq!(seq, Some(5));
}

both_backends!(
    an_edited_field_is_detected,
    a_deleted_record_is_detected,
    reordered_records_are_detected,
    a_truncated_log_is_detected,
    an_inserted_record_is_detected,
);
