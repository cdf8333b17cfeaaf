//! The signal exchange core, end to end over mutual TLS, on both backends.

use signaalpoort_api::v1 as pb;
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;
use tokio_stream::StreamExt;
use tonic::Code;

const CARE: pb::Purpose = pb::Purpose::CareCoordination;
const ROLES: &[pb::Role] = &[
    pb::Role::Wij,
    pb::Role::Ggd,
    pb::Role::Jeugdhulp,
    pb::Role::Gemeente,
];

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

async fn household_match_across_members(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let (mother, daughter, son) = (bsn(1), bsn(2), bsn(3));
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let mut accare = gw.client(JEUGDHULP).await;
    let wij_sig = register(&mut wij, &mother, pb::Category::Finances).await;
    let ggd_sig = register(&mut ggd, &daughter, pb::Category::Health).await;
    register(&mut accare, &son, pb::Category::MentalHealth).await;
    consent(&mut wij, &mother, ROLES, &[CARE]).await;

    // Before the household is declared the signals concern different persons: no match.
    assert!(involvement(&mut wij, &wij_sig.signal_id, CARE)
        .await
        .unwrap()
        .involvements
        .is_empty());

    // The children are under 12: the mother's consent as parent covers them.
    declare_aged(
        &mut gw.client(GEMEENTE).await,
        "hh-1",
        time::OffsetDateTime::now_utc().date(),
        &[(&mother, 38), (&daughter, 8), (&son, 10)],
    )
    .await;
    let answer = involvement(&mut wij, &wij_sig.signal_id, CARE)
        .await
        .unwrap();
    assert_eq!(names(&answer), ["Accare Jeugdhulp", "GGD Groningen"]);
    assert!(answer
        .involvements
        .iter()
        .all(|i| i.level == pb::MatchLevel::Household as i32));
    assert_eq!(answer.basis, pb::Basis::Consent as i32);
    let ggd_view = answer
        .involvements
        .iter()
        .find(|i| i.agency.as_ref().unwrap().name == "GGD Groningen")
        .unwrap();
    assert_eq!(ggd_view.category, pb::Category::Health as i32);
    assert_eq!(ggd_view.contact.as_ref().unwrap().team, "Team");
    // The other direction, from the daughter's signal, via the same household-wide consent.
    let answer = involvement(&mut ggd, &ggd_sig.signal_id, CARE)
        .await
        .unwrap();
    assert_eq!(names(&answer), ["Accare Jeugdhulp", "WIJ Groningen"]);
    gw.stop().await;
}

async fn one_agency_alone_has_no_match(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let (a, b) = (bsn(11), bsn(12));
    let mut wij = gw.client(WIJ).await;
    let s1 = register(&mut wij, &a, pb::Category::Finances).await;
    register(&mut wij, &b, pb::Category::Housing).await;
    register(&mut wij, &a, pb::Category::Parenting).await;
    declare(&mut gw.client(GEMEENTE).await, "hh-2", &[&a, &b]).await;
    consent(&mut wij, &a, ROLES, &[CARE]).await;
    let answer = involvement(&mut wij, &s1.signal_id, CARE).await.unwrap();
    assert!(
        answer.involvements.is_empty(),
        "an agency never matches itself: {answer:?}"
    );
    let reg = wij
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: a.clone(),
            category: pb::Category::Finances as i32,
            contact: contact("Team"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Registering again refreshes the caller's own signal; the answer is that signal only, and
    // says nothing of whether anyone else is involved (there is no count to read).
    assert!(reg.refreshed);
    assert_eq!(reg.signal.unwrap().signal_id, s1.signal_id);
    gw.stop().await;
}

async fn register_again_refreshes_without_duplicate(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut ggd = gw.client(GGD).await;
    let first = register(&mut ggd, &bsn(21), pb::Category::Health).await;
    let again = ggd
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn(21),
            category: pb::Category::Health as i32,
            contact: Some(pb::ContactPoint {
                team: "JGZ Noord".into(),
                phone: "050 999 0000".into(),
                email: "jgz@ggd.example".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.refreshed);
    let again = again.signal.unwrap();
    assert_eq!(again.signal_id, first.signal_id);
    assert_eq!(again.contact.unwrap().team, "JGZ Noord");
    let list = ggd
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.signals.len(), 1);
    gw.stop().await;
}

async fn withdraw_and_expiry_end_a_match(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = clock();
    let gw = env.start(&clock).await;
    let child = bsn(31);
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let mut accare = gw.client(JEUGDHULP).await;
    let wij_sig = register(&mut wij, &child, pb::Category::Parenting).await;
    let ggd_sig = register(&mut ggd, &child, pb::Category::Health).await;
    accare
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: child.clone(),
            category: pb::Category::YouthCare as i32,
            contact: contact("Accare"),
            expires_at: future(10),
            ..Default::default()
        })
        .await
        .unwrap();
    consent(&mut wij, &child, ROLES, &[CARE]).await;
    let answer = involvement(&mut wij, &wij_sig.signal_id, CARE)
        .await
        .unwrap();
    assert_eq!(names(&answer), ["Accare Jeugdhulp", "GGD Groningen"]);
    assert!(answer
        .involvements
        .iter()
        .all(|i| i.level == pb::MatchLevel::Subject as i32));

    ggd.signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            signal_id: ggd_sig.signal_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        names(
            &involvement(&mut wij, &wij_sig.signal_id, CARE)
                .await
                .unwrap()
        ),
        ["Accare Jeugdhulp"]
    );
    // Withdrawing again, or another agency's signal, is NOT_FOUND.
    let again = ggd
        .signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            signal_id: ggd_sig.signal_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let foreign = ggd
        .signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            signal_id: wij_sig.signal_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);

    clock.advance(time::Duration::days(11));
    assert!(involvement(&mut wij, &wij_sig.signal_id, CARE)
        .await
        .unwrap()
        .involvements
        .is_empty());
    gw.stop().await;
}

async fn watch_resumes_without_loss_or_duplicates(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let child = bsn(41);
    let mut wij = gw.client(WIJ).await;
    register(&mut wij, &child, pb::Category::Parenting).await;
    consent(&mut wij, &child, ROLES, &[CARE]).await;
    let mut others = [
        gw.client(GGD).await,
        gw.client(JEUGDHULP).await,
        gw.client(GEMEENTE).await,
    ];

    let mut stream = wij
        .notifications
        .watch_notifications(pb::WatchNotificationsRequest {
            after_cursor: 0,
            purpose: CARE as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    register(&mut others[0], &child, pb::Category::Health).await;
    let first = next_notification(&mut stream).await;
    assert_eq!(first.kind, pb::NotificationKind::Match as i32);
    assert_eq!(
        first.other.as_ref().unwrap().agency.as_ref().unwrap().name,
        "GGD Groningen"
    );
    let cursor = first.cursor;
    drop(stream);

    // While disconnected, two more agencies become involved.
    register(&mut others[1], &child, pb::Category::YouthCare).await;
    register(&mut others[2], &child, pb::Category::Finances).await;
    let mut stream = wij
        .notifications
        .watch_notifications(pb::WatchNotificationsRequest {
            after_cursor: cursor,
            purpose: CARE as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let a = next_notification(&mut stream).await;
    let b = next_notification(&mut stream).await;
    let mut seen = vec![
        a.other.unwrap().agency.unwrap().name,
        b.other.unwrap().agency.unwrap().name,
    ];
    seen.sort();
    assert_eq!(seen, ["Accare Jeugdhulp", "Gemeente Groningen"]);
    assert!(a.cursor > cursor && b.cursor > a.cursor);
    // The polling call agrees: exactly three notifications in all, no duplicates.
    let polled = wij
        .notifications
        .list_notifications(pb::ListNotificationsRequest {
            purpose: CARE as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(polled.notifications.len(), 3);
    gw.stop().await;
}

async fn next_notification(
    stream: &mut tonic::Streaming<pb::WatchNotificationsResponse>,
) -> pb::Notification {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .expect("a notification within 20 s")
            .expect("stream open")
            .expect("no error");
        if let Some(n) = msg.notification {
            return n;
        }
    }
}

async fn bad_input_is_rejected_with_field_violations_and_stores_nothing(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut wij = gw.client(WIJ).await;
    let before = gw.log_len().await;
    let cases: Vec<(pb::RegisterSignalRequest, &[&str])> = vec![
        (
            pb::RegisterSignalRequest {
                bsn: "123456789".into(),
                category: 1,
                contact: contact("T"),
                ..Default::default()
            },
            &["bsn"],
        ),
        (
            pb::RegisterSignalRequest {
                bsn: "12345".into(),
                category: 1,
                contact: contact("T"),
                ..Default::default()
            },
            &["bsn"],
        ),
        (
            pb::RegisterSignalRequest {
                bsn: bsn(51),
                category: 0,
                contact: contact("T"),
                ..Default::default()
            },
            &["category"],
        ),
        (
            pb::RegisterSignalRequest {
                bsn: bsn(51),
                category: 99,
                contact: contact("T"),
                ..Default::default()
            },
            &["category"],
        ),
        (
            pb::RegisterSignalRequest {
                bsn: bsn(51),
                category: 1,
                contact: None,
                ..Default::default()
            },
            &["contact"],
        ),
        (
            pb::RegisterSignalRequest {
                bsn: bsn(51),
                category: 1,
                contact: Some(pb::ContactPoint {
                    team: "x".repeat(101),
                    phone: "abc".into(),
                    email: "nope".into(),
                }),
                ..Default::default()
            },
            &["contact.team", "contact.phone", "contact.email"],
        ),
        (
            pb::RegisterSignalRequest {
                bsn: bsn(51),
                category: 1,
                contact: contact("T"),
                expires_at: future(800),
                ..Default::default()
            },
            &["expires_at"],
        ),
        (
            pb::RegisterSignalRequest {
                bsn: bsn(51),
                category: 1,
                contact: Some(pb::ContactPoint {
                    team: "Team bsn 123 456 782".into(),
                    phone: "050 367 0000".into(),
                    email: String::new(),
                }),
                ..Default::default()
            },
            &["contact.team"],
        ),
        (
            pb::RegisterSignalRequest {
                bsn: bsn(51),
                category: 1,
                contact: contact("T"),
                request_id: "has spaces".into(),
                ..Default::default()
            },
            &["request_id"],
        ),
    ];
    let n = cases.len() as u64;
    for (req, fields) in cases {
        let status = wij.signals.register_signal(req).await.unwrap_err();
        let mut got = bad_fields(&status);
        got.sort();
        let mut want: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{status:?}");
    }
    // Missing actor metadata.
    let channel = wij.channel.clone();
    let mut bare = signaalpoort_api::v1::signal_service_client::SignalServiceClient::new(channel);
    let status = bare
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn(51),
            category: 1,
            contact: contact("T"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["metadata.x-actor-id"]);
    // Nothing stored, but every refusal is in the access log.
    assert!(wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .signals
        .is_empty());
    assert_eq!(gw.log_len().await, before + n + 1 + 1);
    gw.stop().await;
}

async fn oversized_message_is_refused(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env
        .start_with(&clock(), "[limits]\nmax_message_bytes = 4096\n")
        .await;
    let mut wij = gw.client(WIJ).await;
    let status = wij
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn(52),
            category: 1,
            contact: contact(&"x".repeat(10_000)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // RESOURCE_EXHAUSTED naming the configured limit (issue 16; tonic's own answer is OUT_OF_RANGE).
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("4096"), "{status:?}");
    assert!(wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .signals
        .is_empty());
    gw.stop().await;
}

async fn unknown_oin_is_denied_and_logged(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let neg = env.pki().join("negative");
    let mut stranger = gw
        .client_with(
            &neg.join("unknown-oin-client.pem"),
            &neg.join("unknown-oin-client.key"),
            "x-1",
        )
        .await
        .unwrap();
    let before = gw.log_len().await;
    let status = stranger
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn(61),
            category: 1,
            contact: contact("T"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&status), "UNKNOWN_AGENCY");
    assert_eq!(gw.log_len().await, before + 1);
    let (_, records) = (
        0,
        gw.store()
            .read()
            .export_log(before + 1, before + 1, 10)
            .await
            .unwrap(),
    );
    assert_eq!(records[0].draft.agency_oin, "00000099999999999999");
    assert_eq!(records[0].draft.reason, "UNKNOWN_AGENCY");
    gw.stop().await;
}

async fn foreign_ca_and_missing_certificate_fail_the_handshake(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let neg = env.pki().join("negative");
    let foreign = gw
        .client_with(
            &neg.join("foreign-client.pem"),
            &neg.join("foreign-client.key"),
            "x",
        )
        .await;
    match foreign {
        Err(_) => {}
        Ok(mut c) => {
            let status = c
                .signals
                .list_signals(pb::ListSignalsRequest::default())
                .await
                .unwrap_err();
            assert_refused_by_transport(&status);
        }
    }
    let expired = gw
        .client_with(
            &neg.join("expired-client.pem"),
            &neg.join("expired-client.key"),
            "x",
        )
        .await;
    if let Ok(mut c) = expired {
        let status = c
            .signals
            .list_signals(pb::ListSignalsRequest::default())
            .await
            .unwrap_err();
        assert_refused_by_transport(&status);
    }
    // No client certificate at all.
    let ca = std::fs::read(env.pki().join("ca.pem")).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(gw.endpoint.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = channel {
        let mut c = signaalpoort_api::v1::signal_service_client::SignalServiceClient::new(channel);
        let status = c
            .list_signals(pb::ListSignalsRequest::default())
            .await
            .unwrap_err();
        assert_refused_by_transport(&status);
    }
    // None of them reached the service layer.
    assert_eq!(gw.log_len().await, 0);
    gw.stop().await;
}

async fn state_survives_a_restart(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = clock();
    let gw = env.start(&clock).await;
    let child = bsn(71);
    let mut wij = gw.client(WIJ).await;
    let sig = register(&mut wij, &child, pb::Category::Parenting).await;
    register(&mut gw.client(GGD).await, &child, pb::Category::Health).await;
    consent(&mut wij, &child, ROLES, &[CARE]).await;
    let before = gw.log_len().await;
    gw.stop().await;

    let gw = env.start(&clock).await;
    let mut wij = gw.client(WIJ).await;
    let answer = involvement(&mut wij, &sig.signal_id, CARE).await.unwrap();
    assert_eq!(names(&answer), ["GGD Groningen"]);
    assert_eq!(gw.log_len().await, before + 1);
    gw.stop().await;
}

async fn no_bsn_in_data_directory_or_logs(backend: Backend) {
    let env = Env::new(backend).await;
    // The real binary, logging at debug level, so its whole log can be searched too.
    let gw = Process::serve_logging(&env.write_config(""), &env.pki(), "debug", true).await;
    let used: Vec<String> = (81..86).map(bsn).collect();
    let mut wij = gw.client(WIJ).await;
    for b in &used {
        register(&mut wij, b, pb::Category::Parenting).await;
    }
    declare(
        &mut gw.client(GEMEENTE).await,
        "hh-81",
        &[&used[0], &used[1]],
    )
    .await;
    consent(&mut wij, &used[0], ROLES, &[CARE]).await;
    // A call with a W3C trace context: its log line carries the ids its access-log record has.
    let mut traced = tonic::Request::new(pb::ListSignalsRequest::default());
    traced.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    wij.signals.list_signals(traced).await.unwrap();
    // A refused call with a BSN in it.
    let bad = wij
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: used[3].clone(),
            category: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut auditor = gw.client(AUDITOR).await;
    auditor
        .audit
        .query_access_log(pb::QueryAccessLogRequest {
            bsn: used[2].clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let log = gw.log.clone();
    assert!(gw.terminate().await.success());
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains("signaalpoort listening"),
        "the log was captured:\n{log}"
    );
    for b in &used {
        assert!(!log.contains(b.as_str()), "BSN found in the gateway's log");
    }
    // Logs are JSON lines, and the traced call's line names the trace the caller sent.
    let traced_line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
        .unwrap_or_else(|| panic!("no JSON log line carries the trace id:\n{log}"));
    assert_eq!(traced_line["fields"]["method"], "ListSignals");
    assert_eq!(traced_line["fields"]["code"], "Ok");
    assert!(!traced_line["fields"]["span_id"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    for entry in walk(&env.data()) {
        let bytes = std::fs::read(&entry).unwrap();
        for b in &used {
            assert!(
                !contains(&bytes, b.as_bytes()),
                "BSN found in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn health_and_reflection_are_served(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let wij = gw.client(WIJ).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(wij.channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Every service answers for itself, as standard probes and load balancers ask.
    for service in signaalpoort_server::SERVICES {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service}: {e:?}"))
            .into_inner();
        assert_eq!(
            resp.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    assert_eq!(signaalpoort_server::SERVICES.len(), 6);

    // Reflection answers both versions (grpcurl before 1.9 and stock clients ask v1alpha).
    use tonic_reflection::pb::{v1, v1alpha};
    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(wij.channel.clone());
    let mut answers = alpha
        .server_reflection_info(tokio_stream::iter(vec![v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        }]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let listed = match answers
        .message()
        .await
        .expect("answer")
        .and_then(|a| a.message_response)
    {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected v1alpha answer: {other:?}"),
    };
    for service in signaalpoort_server::SERVICES {
        assert!(
            listed.iter().any(|l| l == service),
            "{service} in {listed:?}"
        );
    }
    let mut v1client =
        v1::server_reflection_client::ServerReflectionClient::new(wij.channel.clone());
    let mut answers = v1client
        .server_reflection_info(tokio_stream::iter(vec![v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .expect("v1 reflection")
        .into_inner();
    assert!(matches!(
        answers
            .message()
            .await
            .expect("answer")
            .and_then(|a| a.message_response),
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));
    gw.stop().await;
}

both_backends!(
    household_match_across_members,
    one_agency_alone_has_no_match,
    register_again_refreshes_without_duplicate,
    withdraw_and_expiry_end_a_match,
    watch_resumes_without_loss_or_duplicates,
    bad_input_is_rejected_with_field_violations_and_stores_nothing,
    oversized_message_is_refused,
    unknown_oin_is_denied_and_logged,
    foreign_ca_and_missing_certificate_fail_the_handshake,
    state_survives_a_restart,
    no_bsn_in_data_directory_or_logs,
    health_and_reflection_are_served,
);

/// A refused handshake surfaces as a transport error on the client (UNAVAILABLE, UNKNOWN or
/// CANCELLED, depending on when TLS 1.3 let the client notice), never as an answer from a service.
fn assert_refused_by_transport(status: &tonic::Status) {
    use std::error::Error;
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{status:?}"
    );
    let from_transport = status
        .source()
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    assert!(from_transport, "{status:?}");
}
