//! `signaalpoort move-to-postgres`: a SQLite deployment moves to PostgreSQL with one command, access
//! log included; the chain still verifies and the gateway carries on where it stopped.

use signaalpoort_api::v1 as pb;
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;

const CARE: pb::Purpose = pb::Purpose::CareCoordination;

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
    let output = tokio::process::Command::new(under_test_binary())
        .arg("move-to-postgres")
        .arg("--config")
        .arg(&sqlite_config)
        .arg("--to")
        .arg(&target)
        .output()
        .await
        .expect("run move-to-postgres");
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
    let again = tokio::process::Command::new(under_test_binary())
        .args(["move-to-postgres", "--config"])
        .arg(&sqlite_config)
        .arg("--to")
        .arg(&target)
        .output()
        .await
        .expect("run move-to-postgres");
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
