//! Operations: metrics, certificate and CRL reload without restart, rate limits, the purge job,
//! graceful shutdown on SIGTERM.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signaalpoort_api::v1 as pb;
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

/// Starts the gateway with `[tls] crls = [crl]` in place of the dev CRL.
async fn start_with_crl(env: &Env, clock: &ManualClock, crl: &Path) -> Gateway {
    let path = env.write_config("");
    let text: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| {
            if line.starts_with("crls = ") {
                format!("crls = [{:?}]\n", crl.display().to_string())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert!(text.contains(&format!("crls = [{:?}]", crl.display().to_string())));
    std::fs::write(&path, text).unwrap();
    let config = signaalpoort_server::Config::load(&path).expect("config loads");
    let running = signaalpoort_server::start(config, Arc::new(clock.clone()))
        .await
        .expect("gateway starts");
    Gateway {
        endpoint: format!("https://{}", running.grpc_addr),
        pki: env.pki(),
        running,
    }
}

/// Waits for the next successful TLS reload (no sleeping: the reloader publishes a generation).
async fn next_reload(events: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(Duration::from_secs(30), events.changed())
        .await
        .expect("reload within 30 s")
        .expect("reloader alive");
}

async fn metrics_are_served_with_the_named_series(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut wij = gw.client(WIJ).await;
    register(&mut wij, &bsn(501), pb::Category::Parenting).await;
    let _ = involvement(
        &mut wij,
        "00000000-0000-0000-0000-000000000000",
        pb::Purpose::CareCoordination,
    )
    .await;
    let admin = gw.running.admin_addr.expect("admin listener");
    let (status, body) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    for series in [
        "signaalpoort_grpc_calls_total{",
        "signaalpoort_grpc_call_duration_seconds_bucket{",
        "signaalpoort_policy_decisions_total{",
        "signaalpoort_access_log_appends_total",
        "signaalpoort_access_log_append_duration_seconds_bucket",
        "signaalpoort_watch_streams_open",
        "signaalpoort_certificate_expiry_timestamp_seconds{",
        "signaalpoort_checkpoint_age_seconds",
    ] {
        assert!(
            body.contains(series),
            "{series} missing from /metrics:\n{body}"
        );
    }
    assert!(
        body.contains("NOT_INVOLVED"),
        "deny reasons are counted:\n{body}"
    );
    assert_eq!(admin_get(admin, "/livez").await.0, 200);
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
    gw.stop().await;
}

async fn a_replaced_server_certificate_is_served_without_restart(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let tls = gw.running.gateway.tls.clone().expect("tls");
    let mut events = tls.reload_events();
    let first = served_certificate(&gw).await;
    let mut wij = gw.client(WIJ).await;
    register(&mut wij, &bsn(511), pb::Category::Parenting).await;

    // The operator drops a new certificate (a different validity) over the old files.
    signaalpoort_tls::devpki::issue_server_cert(
        &env.pki(),
        &["localhost".to_owned(), "127.0.0.1".to_owned()],
        "server",
    )
    .expect("new server certificate");
    let on_disk = std::fs::read(env.pki().join("server.pem")).unwrap();
    let on_disk = rustls_pemfile::certs(&mut on_disk.as_slice())
        .next()
        .unwrap()
        .unwrap();
    // Reloads may also be triggered by the key file, written just after; wait until one took.
    while served_certificate(&gw).await != on_disk.as_ref() {
        next_reload(&mut events).await;
    }
    assert_ne!(
        first,
        on_disk.as_ref(),
        "a different certificate than at start"
    );
    // Old connections keep working, new ones too.
    register(&mut wij, &bsn(512), pb::Category::Parenting).await;
    register(&mut gw.client(GGD).await, &bsn(512), pb::Category::Health).await;
    gw.stop().await;
}

/// The leaf certificate a fresh connection is served, read with a bare rustls client.
async fn served_certificate(gw: &Gateway) -> Vec<u8> {
    let pem = |p: &str| std::fs::read(gw.pki.join(p)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem("ca.pem").as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = rustls_pemfile::certs(&mut pem("agencies/wij-groningen.pem").as_slice())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pemfile::private_key(&mut pem("agencies/wij-groningen.key").as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let addr = gw.endpoint.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

async fn a_revoked_certificate_is_refused_after_a_crl_update(backend: Backend) {
    let env = Env::new(backend).await;
    let neg = env.pki().join("negative");
    let crl = env.pki().join("crl.pem");
    std::fs::copy(neg.join("crl-empty.pem"), &crl).unwrap();
    let gw = start_with_crl(&env, &clock(), &crl).await;
    let tls = gw.running.gateway.tls.clone().expect("tls");
    let mut events = tls.reload_events();
    let (cert, key) = (
        neg.join("revoked-client.pem"),
        neg.join("revoked-client.key"),
    );
    let mut agency = gw
        .client_with(&cert, &key, "wij-worker-9")
        .await
        .expect("connects before revocation");
    agency
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .expect("allowed before revocation");

    // The CA publishes a CRL that revokes the certificate; a cron job writes it over the old one.
    let revoking = std::fs::read(neg.join("crl-revoking.pem")).unwrap();
    let tmp = env.pki().join("crl.pem.tmp");
    std::fs::write(&tmp, revoking).unwrap();
    std::fs::rename(&tmp, &crl).unwrap();
    let serial = {
        let pem = std::fs::read(&cert).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        signaalpoort_tls::parse_peer_certificate(der.as_ref())
            .unwrap()
            .serial_hex
    };
    while !tls.is_revoked(&serial) {
        next_reload(&mut events).await;
    }

    // A new call on the connection opened before the CRL changed: refused, and logged.
    let before = gw.log_len().await;
    let status = agency
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(deny_reason(&status), "CERTIFICATE_REVOKED");
    assert_eq!(gw.log_len().await, before + 1);
    // A new connection: refused at the handshake.
    if let Ok(mut fresh) = gw.client_with(&cert, &key, "wij-worker-9").await {
        let status = fresh
            .signals
            .list_signals(pb::ListSignalsRequest::default())
            .await
            .unwrap_err();
        assert_ne!(status.code(), Code::Ok);
        assert!(
            status.code() != Code::PermissionDenied
                || deny_reason(&status) == "CERTIFICATE_REVOKED",
            "{status:?}"
        );
    }
    // Other agencies are unaffected.
    gw.client(GGD)
        .await
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap();
    gw.stop().await;
}

async fn the_rate_limit_answers_resource_exhausted_with_retry_info(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env
        .start_with(
            &clock(),
            "[limits]\ncalls_per_second_per_agency = 1\nburst_per_agency = 3\n",
        )
        .await;
    let mut wij = gw.client(WIJ).await;
    let mut refused = None;
    for _ in 0..20 {
        if let Err(status) = wij
            .signals
            .list_signals(pb::ListSignalsRequest::default())
            .await
        {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("a burst of 20 calls at 1/s with burst 3 hits the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d > Duration::ZERO && d <= Duration::from_secs(2)),
        "{retry:?}"
    );
    // Other agencies have their own budget.
    gw.client(GGD)
        .await
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap();
    gw.stop().await;
}

async fn the_purge_removes_what_expired_and_nothing_else(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = clock();
    let gw = env.start(&clock).await;
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let short = wij
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn(521),
            category: pb::Category::Parenting as i32,
            contact: contact("Team"),
            expires_at: Some(prost_types::Timestamp {
                seconds: signaalpoort_server::Clock::now(&clock).unix_timestamp() + 86_400,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    let long = register(&mut wij, &bsn(522), pb::Category::Finances).await;
    let other = register(&mut ggd, &bsn(521), pb::Category::Health).await;
    let gateway = gw.running.gateway.clone();

    // Nothing has expired: the purge does nothing and writes nothing.
    let before = gw.log_len().await;
    assert_eq!(
        signaalpoort_server::purge_expired(&gateway).await.unwrap(),
        (0, 0)
    );
    assert_eq!(gw.log_len().await, before);

    // Past expiry and the grace period: exactly the short-lived signal goes, in one logged purge.
    clock.advance(time::Duration::days(10));
    let (signals, _) = signaalpoort_server::purge_expired(&gateway).await.unwrap();
    assert_eq!(signals, 1);
    assert!(gateway
        .store
        .read()
        .signal(&short.signal_id)
        .await
        .unwrap()
        .is_none());
    assert!(gateway
        .store
        .read()
        .signal(&long.signal_id)
        .await
        .unwrap()
        .is_some());
    assert!(gateway
        .store
        .read()
        .signal(&other.signal_id)
        .await
        .unwrap()
        .is_some());
    assert_eq!(gw.log_len().await, before + 1);
    let record = gateway
        .store
        .read()
        .export_log(before + 1, before + 1, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(record.draft.action, "PurgeExpired");
    let listed = wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .signals;
    assert_eq!(
        listed
            .iter()
            .map(|s| s.signal_id.clone())
            .collect::<Vec<_>>(),
        [long.signal_id]
    );
    gw.stop().await;
}

async fn sigterm_during_calls_loses_none_and_writes_the_final_checkpoint(backend: Backend) {
    let env = Env::new(backend).await;
    let config = env.write_config("");
    let gw = Process::serve(&config, &env.pki()).await;
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for worker in 0..4u32 {
        let mut client = gw.client(WIJ).await;
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000u32 {
                let request = pb::RegisterSignalRequest {
                    bsn: bsn(60_000 + worker * 10_000 + i),
                    category: pb::Category::Parenting as i32,
                    contact: contact("Team"),
                    ..Default::default()
                };
                match client.signals.register_signal(request).await {
                    Ok(r) => {
                        acknowledged
                            .lock()
                            .expect("lock")
                            .insert(r.into_inner().signal.expect("signal").signal_id);
                    }
                    Err(status) => return Some(status),
                }
            }
            None
        }));
    }
    while acknowledged.lock().expect("lock").len() < 200 {
        tokio::task::yield_now().await;
    }
    let exit = gw.terminate().await;
    assert!(exit.success(), "graceful exit: {exit:?}");
    for t in tasks {
        if let Some(status) = t.await.unwrap() {
            // Calls after the stop are refused, never half-done. A stream the client opened
            // just as the server's HTTP/2 GOAWAY (NO_ERROR) arrived was never processed; tonic
            // reports that refusal as INTERNAL "h2 protocol error" (hyperium/h2#741).
            let refused_by_goaway =
                status.code() == Code::Internal && format!("{status:?}").contains("GoAway");
            assert!(
                refused_by_goaway
                    || matches!(
                        status.code(),
                        Code::Unavailable | Code::Unknown | Code::Cancelled
                    ),
                "{status:?}"
            );
        }
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let store = signaalpoort_store::Store::open(
        &env.database_url,
        signaalpoort_store::StoreOptions::default(),
    )
    .await
    .unwrap();
    for id in &acknowledged {
        assert!(
            store.read().signal(id).await.unwrap().is_some(),
            "acknowledged signal {id} lost"
        );
    }
    let (records, _) = store.read().head().await.unwrap();
    let newest = store.read().checkpoints(1).await.unwrap().remove(0);
    assert_eq!(
        newest.tree_size, records,
        "the final checkpoint covers the whole log"
    );
    store.close().await;
    let report = verify_stored_chain(&env.database_url, &env.data()).await;
    assert!(report.is_ok(), "{:?}", report.first_problem);
}

async fn retention_removes_old_log_records_and_the_rest_still_verifies(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = clock();
    let gw = env.start(&clock).await;
    let mut wij = gw.client(WIJ).await;
    for n in 0..3 {
        register(&mut wij, &bsn(531 + n), pb::Category::Parenting).await;
    }
    let gateway = gw.running.gateway.clone();
    assert!(gateway.write_checkpoint().await.unwrap());
    // Within retention (default seven years) nothing goes.
    assert_eq!(
        signaalpoort_server::purge_access_log(&gateway)
            .await
            .unwrap(),
        0
    );
    clock.advance(time::Duration::days(7 * 365 + 10));
    register(&mut wij, &bsn(534), pb::Category::Parenting).await;
    register(&mut wij, &bsn(535), pb::Category::Parenting).await;
    assert_eq!(gw.log_len().await, 5);

    assert_eq!(
        signaalpoort_server::purge_access_log(&gateway)
            .await
            .unwrap(),
        3
    );
    let kept = gateway
        .store
        .read()
        .export_log(1, u64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(kept.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(kept[2].draft.action, "PurgeAccessLog");
    assert_eq!(
        gateway
            .store
            .read()
            .log_anchor()
            .await
            .unwrap()
            .map(|a| a.0),
        Some(3)
    );
    // Signals are untouched by log retention.
    assert_eq!(
        wij.signals
            .list_signals(pb::ListSignalsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .signals
            .len(),
        2
    );
    gw.stop().await;
    let report = verify_stored_chain(&env.database_url, &env.data()).await;
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(
        report.records, 7,
        "4, 5, the purge and the ListSignals after it"
    );

    // Removing a record after the anchor is still caught.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&env.database_url)
        .await
        .unwrap();
    sqlx::query("DELETE FROM access_log WHERE seq = 4")
        .execute(&mut conn)
        .await
        .unwrap();
    let report = verify_stored_chain(&env.database_url, &env.data()).await;
    let problem = report
        .first_problem
        .expect("deletion after the anchor detected");
    assert_eq!(
        problem.kind,
        signaalpoort_core::access_log::ProblemKind::SequenceGap {
            expected: 4,
            found: 5
        }
    );
}

both_backends!(
    retention_removes_old_log_records_and_the_rest_still_verifies,
    metrics_are_served_with_the_named_series,
    a_replaced_server_certificate_is_served_without_restart,
    a_revoked_certificate_is_refused_after_a_crl_update,
    the_rate_limit_answers_resource_exhausted_with_retry_info,
    the_purge_removes_what_expired_and_nothing_else,
    sigterm_during_calls_loses_none_and_writes_the_final_checkpoint,
);
