//! Issue 14: the gateway submits each new checkpoint to a `signaalpoort witness` (another
//! party's process, its own key and state, spoken to over c2sp.org/tlog-witness HTTP); the
//! witness cosigns growth and refuses a rolled-back log, and the gateway alerts the auditors.

use signaalpoort_api::v1 as pb;
use signaalpoort_core::access_log::tree::leaf_index;
use signaalpoort_core::access_log::witness::WitnessState;
use signaalpoort_core::access_log::{ProblemKind, TrustPolicy};
use signaalpoort_server::ManualClock;
use signaalpoort_store::{AlertKind, Store, StoreOptions};
use signaalpoort_tests::*;
use sqlx::Connection;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

struct RunningWitness {
    url: String,
    key: String,
    state: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn witness_for(env: &Env) -> RunningWitness {
    let dir = tempfile::tempdir().unwrap();
    let args = signaalpoort_cli::WitnessArgs {
        name: "fg.example/witness".into(),
        key: dir.path().join("witness.pk8"),
        state: dir.path().join("state.json"),
        logs: vec![log_key(&env.data())],
        listen: "127.0.0.1:0".parse().unwrap(),
        print_key: false,
    };
    let options = signaalpoort_cli::witness_options(&args).unwrap();
    let key = options.cosigner.public().verifier_key();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (addr, _task) = signaalpoort_server::witness::serve(options, rx)
        .await
        .unwrap();
    RunningWitness {
        url: format!("http://{addr}"),
        key,
        state: args.state,
        stop,
        _dir: dir,
    }
}

impl RunningWitness {
    fn config(&self) -> String {
        format!(
            "[[audit.witnesses]]\nurl = \"{}\"\nkey = \"{}\"\n",
            self.url, self.key
        )
    }

    fn state(&self) -> WitnessState {
        WitnessState::from_json(&std::fs::read_to_string(&self.state).unwrap()).unwrap()
    }
}

async fn read_only(env: &Env) -> Store {
    Store::open(
        &env.database_url,
        StoreOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn a_witness_cosigns_growth_and_refuses_a_rolled_back_log(backend: Backend) {
    let env = Env::new(backend).await;
    let witness = witness_for(&env).await;
    let policy = TrustPolicy {
        witnesses: vec![signaalpoort_core::access_log::WitnessKey::parse(&witness.key).unwrap()],
        quorum: 1,
        ..own_policy(&env.data())
    };
    let gw = env.start_with(&clock(), &witness.config()).await;
    let mut wij = gw.client(WIJ).await;
    for n in 0..5 {
        register(&mut wij, &bsn(700 + n), pb::Category::Parenting).await;
    }
    assert!(gw.running.gateway.write_checkpoint().await.unwrap());
    for n in 5..10 {
        register(&mut wij, &bsn(700 + n), pb::Category::Parenting).await;
    }
    // The second submission carries a consistency proof from the size the witness saw.
    assert!(gw.running.gateway.write_checkpoint().await.unwrap());
    let report = gw
        .running
        .gateway
        .store
        .verify_log(&policy, None)
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.witnessed_through, 10);
    // The witness remembers 10, in its own file; as an officer's trusted checkpoint it agrees.
    let state = witness.state();
    let remembered = &state.latest["signaalpoort.local/access-log"];
    assert_eq!(remembered.tree_size, 10);
    let with_state = gw
        .running
        .gateway
        .store
        .verify_log(&policy, Some(remembered))
        .await
        .unwrap();
    assert!(with_state.is_ok(), "{:?}", with_state.first_problem);
    gw.stop().await;

    // The database goes back to an older state (a backup at 5) behind everyone's back.
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&env.database_url)
        .await
        .unwrap();
    for sql in [
        "DELETE FROM access_log_subjects WHERE seq > 5".to_owned(),
        "DELETE FROM access_log WHERE seq > 5".to_owned(),
        format!("DELETE FROM log_tree WHERE idx >= {}", leaf_index(5)),
        "DELETE FROM log_checkpoints WHERE tree_size > 5".to_owned(),
    ] {
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    }
    if env.database_url.starts_with("postgres") {
        sqlx::query("UPDATE log_head SET seq = 5, hash = (SELECT hash FROM access_log WHERE seq = 5) WHERE id = 1")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();

    // The gateway itself sees a consistent, older log and signs on; the witness refuses.
    let gw = env.start_with(&clock(), &witness.config()).await;
    assert!(gw.running.gateway.log_fault().is_none());
    let mut wij = gw.client(WIJ).await;
    register(&mut wij, &bsn(720), pb::Category::Parenting).await;
    assert!(gw.running.gateway.write_checkpoint().await.unwrap());
    let alerts = gw
        .running
        .gateway
        .store
        .read()
        .alerts_after(0, 100)
        .await
        .unwrap();
    let refused: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::WitnessRefused)
        .collect();
    assert_eq!(refused.len(), 1, "{alerts:?}");
    assert!(
        refused[0].detail.contains("rolled back"),
        "{}",
        refused[0].detail
    );
    gw.stop().await;
    // The witness still holds 10; the officer with its state sees the cut.
    assert_eq!(
        witness.state().latest["signaalpoort.local/access-log"].tree_size,
        10
    );
    let store = read_only(&env).await;
    let report = store.verify_log(&policy, Some(remembered)).await.unwrap();
    store.close().await;
    let problem = report.first_problem.expect("detected");
    assert!(
        matches!(
            problem.kind,
            ProblemKind::CheckpointMismatch { tree_size: 10, .. }
                | ProblemKind::Truncated {
                    checkpoint_size: 10,
                    ..
                }
        ),
        "{problem}"
    );
    let _ = witness.stop.send(true);
}

both_backends!(a_witness_cosigns_growth_and_refuses_a_rolled_back_log);
