//! Several gateway replicas on one PostgreSQL: notifications cross replicas, concurrent writes keep
//! one verifiable log, matches are neither lost nor duplicated. PostgreSQL only (SQLite is one node).

use std::time::Duration;

use signaalpoort_api::v1 as pb;
use signaalpoort_tests::*;
use tokio_stream::StreamExt;

const CARE: pb::Purpose = pb::Purpose::CareCoordination;

async fn two_replicas() -> Option<(Env, Process, Process)> {
    if !postgres_available().await {
        return None;
    }
    let env = Env::new(Backend::Postgres).await;
    let config = env.write_config("");
    let a = Process::serve(&config, &env.pki()).await;
    let b = Process::serve(&config, &env.pki()).await;
    Some((env, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_caused_on_one_replica_reaches_a_watcher_on_the_other() {
    let Some((_env, a, b)) = two_replicas().await else {
        return;
    };
    let child = bsn(301);
    let mut wij_a = a.client(WIJ).await;
    register(&mut wij_a, &child, pb::Category::Parenting).await;
    consent(&mut wij_a, &child, &[pb::Role::Wij, pb::Role::Ggd], &[CARE]).await;
    let mut stream = wij_a
        .notifications
        .watch_notifications(pb::WatchNotificationsRequest {
            purpose: CARE as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ggd_b = b.client(GGD).await;
    register(&mut ggd_b, &child, pb::Category::Health).await;
    let n = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("prompt")
            .unwrap()
            .unwrap();
        if let Some(n) = m.notification {
            break n;
        }
    };
    assert_eq!(n.other.unwrap().agency.unwrap().name, "GGD Groningen");
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_both_replicas_keep_one_log_and_exact_matches() {
    let Some((env, a, b)) = two_replicas().await else {
        return;
    };
    let members: Vec<String> = (0..4).map(|i| bsn(310 + i)).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    declare(&mut a.client(GEMEENTE).await, "hh-310", &refs).await;
    let slugs = [WIJ, GGD, JEUGDHULP, VEILIG_THUIS];
    let mut tasks = Vec::new();
    for (i, slug) in slugs.iter().enumerate() {
        for (r, replica) in [&a, &b].into_iter().enumerate() {
            let mut c = replica.client(slug).await;
            let members = members.clone();
            tasks.push(tokio::spawn(async move {
                // Each agency registers on two members, half through each replica, all at once.
                let bsn = &members[(i + r) % members.len()];
                register(&mut c, bsn, pb::Category::Parenting).await;
                for n in 0..50 {
                    c.signals
                        .list_signals(pb::ListSignalsRequest {
                            page_size: 1 + n % 3,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 4 agencies × 2 signals on one household: each signal matches the other agencies' 6 signals.
    let store = signaalpoort_store::Store::open(
        &env.database_url,
        signaalpoort_store::StoreOptions::default(),
    )
    .await
    .unwrap();
    let mut total_match_notes = 0;
    for slug in slugs {
        let oin = signaalpoort_tls::devpki::default_dev_agencies()
            .into_iter()
            .find(|d| d.slug == slug)
            .unwrap()
            .oin;
        let oin = signaalpoort_core::Oin::parse(&oin).unwrap();
        // Nobody read them and no consent covers anyone: all are stored, none delivered yet.
        assert!(store
            .read()
            .numbered_notifications(&oin, 0, 1000)
            .await
            .unwrap()
            .is_empty());
        let notes = store
            .read()
            .pending_notifications(&oin, 0, 1000)
            .await
            .unwrap();
        let mut pairs: Vec<(String, String)> = notes
            .iter()
            .filter(|n| n.kind == signaalpoort_store::NotificationKind::Match)
            .map(|n| {
                (
                    n.recipient_signal_id.clone(),
                    n.other.as_ref().unwrap().signal_id.clone(),
                )
            })
            .collect();
        let len = pairs.len();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), len, "{slug}: duplicate match notifications");
        assert_eq!(len, 2 * 6, "{slug}: every pair notified exactly once");
        total_match_notes += len;
    }
    assert_eq!(total_match_notes, 48);
    a.terminate().await;
    b.terminate().await;
    let report = verify_stored_chain(&env.database_url, &env.data()).await;
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert!(
        report.checkpoints_checked >= 1,
        "final checkpoints written by both replicas verify"
    );
}
