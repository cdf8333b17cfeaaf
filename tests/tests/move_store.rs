//! `signaalpoort move-to-postgres`: a SQLite deployment moves to PostgreSQL with one command, access
//! log included; the chain still verifies and the gateway carries on where it stopped.

use signaalpoort_api::v1 as pb;
use signaalpoort_server::{Clock, ManualClock};
use signaalpoort_tests::*;

const CARE: pb::Purpose = pb::Purpose::CareCoordination;

/// `signaalpoort move-to-postgres --config <config> --to <target>`, as an operator runs it.
async fn move_to_postgres(config: &std::path::Path, target: &str) -> std::process::Output {
    tokio::process::Command::new(under_test_binary())
        .arg("move-to-postgres")
        .arg("--config")
        .arg(config)
        .arg("--to")
        .arg(target)
        .output()
        .await
        .expect("run move-to-postgres")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_deployment_moves_to_postgres_with_its_log() {
    if !postgres_available().await {
        return;
    }
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let mut env = Env::new(Backend::Sqlite).await;
    let gw = env.start(&clock).await;
    let child = bsn(401);
    let mut wij = gw.client(WIJ).await;
    let sig = register(&mut wij, &child, pb::Category::Parenting).await;
    register(&mut gw.client(GGD).await, &child, pb::Category::Health).await;
    consent(&mut wij, &child, &[pb::Role::Wij, pb::Role::Ggd], &[CARE]).await;
    assert_eq!(
        names(&involvement(&mut wij, &sig.signal_id, CARE).await.unwrap()),
        ["GGD Groningen"]
    );
    let records = gw.log_len().await;
    gw.stop().await;

    let sqlite_config = env.write_config("");
    let target = signaalpoort_store::testing::fresh_postgres_url()
        .await
        .expect("postgres database");
    let output = move_to_postgres(&sqlite_config, &target).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("access log of {records} records verifies")),
        "{stdout}"
    );

    // A second move into the now non-empty database is refused.
    let again = move_to_postgres(&sqlite_config, &target).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds data"));

    // The gateway on PostgreSQL: same answers, and the log continues the same chain.
    env.database_url = target;
    let gw = env.start(&clock).await;
    let mut wij = gw.client(WIJ).await;
    assert_eq!(
        names(&involvement(&mut wij, &sig.signal_id, CARE).await.unwrap()),
        ["GGD Groningen"]
    );
    assert_eq!(gw.log_len().await, records + 1);
    gw.stop().await;
    let report = verify_stored_chain(&env.database_url, &env.data()).await;
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.records, records + 1);
}

/// Row counts per table in a SQLite database, read directly (every table, SQLite's own left out).
async fn sqlite_counts(url: &str) -> std::collections::BTreeMap<String, u64> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .expect("open sqlite");
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' \
         AND name NOT IN ('_sqlx_migrations', 'log_head')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables")
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    let mut counts = std::collections::BTreeMap::new();
    for t in tables {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {t}"))
            .fetch_one(&mut conn)
            .await
            .expect("count")
            .get(0);
        counts.insert(t, n as u64);
    }
    counts
}

/// Every table moves, each with its own row count — an open coordinator proposal and the
/// involvement history included — and the gateway on PostgreSQL shows the same coordination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_moves_and_its_rows_are_counted() {
    if !postgres_available().await {
        return;
    }
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let mut env = Env::new(Backend::Sqlite).await;
    let gw = env.start(&clock).await;
    let (mother, child) = (bsn(411), bsn(412));
    declare_aged(
        &mut gw.client(GEMEENTE).await,
        "hh-move",
        clock.now().date(),
        &[(&mother, 35), (&child, 1)],
    )
    .await;
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let wij_sig = register(&mut wij, &mother, pb::Category::Finances).await;
    let ggd_sig = register(&mut ggd, &child, pb::Category::Health).await;
    let ended = register(&mut ggd, &mother, pb::Category::Health).await;
    wij.consents
        .record_consent(pb::RecordConsentRequest {
            bsn: mother.clone(),
            include_household: true,
            givers: vec![
                pb::ConsentGiver::Subject as i32,
                pb::ConsentGiver::ParentOrGuardian as i32,
            ],
            purposes: vec![pb::Purpose::CaseCoordination as i32, CARE as i32],
            roles: vec![pb::Role::Wij as i32, pb::Role::Ggd as i32],
            valid_until: future(300),
            evidence_ref: "dossier-411/toestemming".into(),
            ..Default::default()
        })
        .await
        .expect("consent");
    let case = |sig: &str| {
        Some(pb::CaseRef {
            your_signal_id: sig.to_owned(),
            purpose: pb::Purpose::CaseCoordination as i32,
            safety_justification: String::new(),
        })
    };
    let proposed = wij
        .coordination
        .propose_coordinator(pb::ProposeCoordinatorRequest {
            case: case(&wij_sig.signal_id),
            contact: contact("WIJ Oost, casusregisseur"),
            ..Default::default()
        })
        .await
        .expect("propose")
        .into_inner()
        .coordination
        .expect("coordination");
    let proposal = proposed.open_proposal.expect("open proposal");
    // An ended involvement leaves a history row.
    ggd.signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            signal_id: ended.signal_id.clone(),
            ..Default::default()
        })
        .await
        .expect("withdraw");
    gw.stop().await;

    let source = sqlite_counts(&env.database_url).await;
    for table in [
        "coordinations",
        "involvement_history",
        "consents",
        "notifications",
        "log_checkpoints",
        "log_tree",
        "access_log",
        "household_members",
    ] {
        assert!(
            source.get(table).copied().unwrap_or(0) > 0,
            "the scenario must fill {table}: {source:?}"
        );
    }

    let target = signaalpoort_store::testing::fresh_postgres_url()
        .await
        .expect("postgres database");
    let output = move_to_postgres(&env.write_config(""), &target).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The report names every table of the source with its count.
    let reported: std::collections::BTreeMap<String, u64> = stdout
        .lines()
        .filter(|l| l.ends_with(" rows"))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(reported, source, "{stdout}");

    env.database_url = target;
    let gw = env.start(&clock).await;
    let mut ggd = gw.client(GGD).await;
    let seen = ggd
        .coordination
        .get_coordination(pb::GetCoordinationRequest {
            case: case(&ggd_sig.signal_id),
        })
        .await
        .expect("get coordination")
        .into_inner()
        .coordination
        .expect("coordination");
    assert_eq!(
        seen.open_proposal.map(|p| p.proposal_id),
        Some(proposal.proposal_id)
    );
    gw.stop().await;
}

/// A table the source has and the target's schema lacks (a migration written for one database
/// only) stops the move before anything is written, naming the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_the_target_lacks_stops_the_move() {
    use sqlx::Connection;
    if !postgres_available().await {
        return;
    }
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let env = Env::new(Backend::Sqlite).await;
    let gw = env.start(&clock).await;
    register(
        &mut gw.client(WIJ).await,
        &bsn(421),
        pb::Category::Parenting,
    )
    .await;
    gw.stop().await;
    let mut conn = sqlx::SqliteConnection::connect(&env.database_url)
        .await
        .expect("open sqlite");
    sqlx::query("CREATE TABLE family_notes (id INTEGER PRIMARY KEY, note TEXT)")
        .execute(&mut conn)
        .await
        .expect("create");
    sqlx::query("INSERT INTO family_notes (note) VALUES ('x')")
        .execute(&mut conn)
        .await
        .expect("insert");
    conn.close().await.expect("close");

    let target = signaalpoort_store::testing::fresh_postgres_url()
        .await
        .expect("postgres database");
    let output = move_to_postgres(&env.write_config(""), &target).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("family_notes") && stderr.contains("not in the target"),
        "{stderr}"
    );
    // Nothing was written: the target's tables are empty.
    let store = signaalpoort_store::Store::open(&target, Default::default())
        .await
        .expect("open target");
    assert_eq!(store.read().head().await.expect("head").0, 0);
    store.close().await;
}
