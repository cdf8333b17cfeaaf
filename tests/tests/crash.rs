//! kill -9 of the real binary during a burst of writes: every call that got OK has its record and
//! its state after a restart, and the chain verifies.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use signaalpoort_api::v1 as pb;
use signaalpoort_tests::*;

async fn kill9_mid_burst_loses_no_acknowledged_call(backend: Backend) {
    let env = Env::new(backend).await;
    let config = env.write_config("");
    let gw = Process::serve(&config, &env.pki()).await;
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for worker in 0..8u32 {
        let mut client = gw.client(WIJ).await;
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000u32 {
                let request = pb::RegisterSignalRequest {
                    bsn: bsn(10_000 + worker * 10_000 + i),
                    category: pb::Category::Parenting as i32,
                    contact: contact("Team"),
                    ..Default::default()
                };
                match client.signals.register_signal(request).await {
                    Ok(r) => {
                        let id = r.into_inner().signal.expect("signal").signal_id;
                        acknowledged.lock().expect("lock").insert(id);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a good number of calls were acknowledged: mid-burst, by construction.
    loop {
        if acknowledged.lock().expect("lock").len() >= 300 {
            break;
        }
        tokio::task::yield_now().await;
    }
    gw.kill9().await;
    for t in tasks {
        let _ = t.await;
    }
    let acknowledged: HashSet<String> = acknowledged.lock().expect("lock").clone();

    let gw = Process::serve(&config, &env.pki()).await;
    let mut wij = gw.client(WIJ).await;
    let mut stored = HashSet::new();
    let mut token = String::new();
    loop {
        let page = wij
            .signals
            .list_signals(pb::ListSignalsRequest {
                page_size: 500,
                page_token: token.clone(),
            })
            .await
            .expect("list")
            .into_inner();
        stored.extend(page.signals.into_iter().map(|s| s.signal_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged signals lost after kill -9, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let status = gw.terminate().await;
    assert!(status.success(), "graceful exit: {status:?}");

    let report = verify_stored_chain(&env.database_url, &env.data()).await;
    assert!(
        report.is_ok(),
        "chain after kill -9: {:?}",
        report.first_problem
    );
    // Every acknowledged registration has its record (plus list calls and deliveries).
    let store = signaalpoort_store::Store::open(
        &env.database_url,
        signaalpoort_store::StoreOptions::default(),
    )
    .await
    .unwrap();
    let mut with_record = HashSet::new();
    let mut from = 1;
    loop {
        let page = store.read().export_log(from, u64::MAX, 5000).await.unwrap();
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        for r in page {
            if r.draft.action == "RegisterSignal" && r.draft.status_code == 0 {
                with_record.insert(r.draft.object_id);
            }
        }
        from = last + 1;
    }
    let unlogged: Vec<_> = acknowledged.difference(&with_record).collect();
    assert!(
        unlogged.is_empty(),
        "{} acknowledged calls without a record",
        unlogged.len()
    );
}

both_backends!(kill9_mid_burst_loses_no_acknowledged_call);
