//! The access log, end to end: one record per call, tamper evidence, the audit service, the citizen
//! report, fail-closed behaviour.

use signaalpoort_api::v1 as pb;
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;
use tokio_stream::StreamExt;
use tonic::Code;

const CARE: pb::Purpose = pb::Purpose::CareCoordination;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

/// Runs `f` and asserts it added exactly one record.
macro_rules! one_record {
    ($gw:expr, $what:expr, $call:expr) => {{
        let before = $gw.log_len().await;
        let result = $call;
        let after = $gw.log_len().await;
        assert_eq!(
            after,
            before + 1,
            "{} wrote {} records",
            $what,
            after - before
        );
        result
    }};
}

async fn every_rpc_writes_exactly_one_record(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let (mother, child) = (bsn(201), bsn(202));
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let mut gem = gw.client(GEMEENTE).await;
    let mut auditor = gw.client(AUDITOR).await;

    let sig = one_record!(
        gw,
        "RegisterSignal",
        register(&mut wij, &mother, pb::Category::Finances).await
    );
    one_record!(
        gw,
        "RegisterSignal (other agency)",
        register(&mut ggd, &child, pb::Category::Health).await
    );
    one_record!(
        gw,
        "RegisterSignal denied",
        wij.signals
            .register_signal(pb::RegisterSignalRequest::default())
            .await
            .unwrap_err()
    );
    one_record!(
        gw,
        "DeclareHousehold",
        declare_aged(
            &mut gem,
            "hh-201",
            time::OffsetDateTime::now_utc().date(),
            &[(&mother, 35), (&child, 6)]
        )
        .await
    );
    one_record!(
        gw,
        "QueryInvolvement denied",
        involvement(&mut wij, &sig.signal_id, CARE)
            .await
            .unwrap_err()
    );
    let c = one_record!(
        gw,
        "RecordConsent",
        consent(&mut wij, &mother, &[pb::Role::Wij, pb::Role::Ggd], &[CARE]).await
    );
    one_record!(
        gw,
        "QueryInvolvement",
        involvement(&mut wij, &sig.signal_id, CARE).await.unwrap()
    );
    one_record!(
        gw,
        "ListSignals",
        wij.signals
            .list_signals(pb::ListSignalsRequest::default())
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "ListConsents",
        wij.consents
            .list_consents(pb::ListConsentsRequest::default())
            .await
            .unwrap()
    );
    // The poll delivers one notification (GGD's signal matched via the household): still one record.
    one_record!(
        gw,
        "ListNotifications",
        wij.notifications
            .list_notifications(pb::ListNotificationsRequest {
                purpose: CARE as i32,
                ..Default::default()
            })
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "WithdrawConsent",
        wij.consents
            .withdraw_consent(pb::WithdrawConsentRequest {
                consent_id: c.consent_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "WithdrawConsent not found",
        wij.consents
            .withdraw_consent(pb::WithdrawConsentRequest {
                consent_id: c.consent_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err()
    );
    one_record!(
        gw,
        "WithdrawSignal",
        wij.signals
            .withdraw_signal(pb::WithdrawSignalRequest {
                signal_id: sig.signal_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "DissolveHousehold",
        gem.households
            .dissolve_household(pb::DissolveHouseholdRequest {
                household_ref: "hh-201".into(),
                ..Default::default()
            })
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "QueryAccessLog",
        auditor
            .audit
            .query_access_log(pb::QueryAccessLogRequest::default())
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "QueryAccessLog denied",
        wij.audit
            .query_access_log(pb::QueryAccessLogRequest::default())
            .await
            .unwrap_err()
    );
    one_record!(
        gw,
        "ListCheckpoints",
        auditor
            .audit
            .list_checkpoints(pb::ListCheckpointsRequest::default())
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "GetPublicKey",
        auditor
            .audit
            .get_public_key(pb::GetPublicKeyRequest {})
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "ProveAccessRecord",
        wij.audit
            .prove_access_record(pb::ProveAccessRecordRequest {
                seq: 1,
                old_tree_size: 0,
            })
            .await
            .unwrap_err()
    );
    one_record!(
        gw,
        "CitizenReport",
        auditor
            .audit
            .citizen_report(pb::CitizenReportRequest {
                bsn: mother.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
    );
    let export = one_record!(
        gw,
        "ExportAccessLog",
        auditor
            .audit
            .export_access_log(pb::ExportAccessLogRequest::default())
            .await
            .unwrap()
    );
    let lines: Vec<_> = export.into_inner().collect::<Vec<_>>().await;
    assert!(lines.iter().all(|l| l.is_ok()));
    one_record!(
        gw,
        "WatchAlerts",
        auditor
            .audit
            .watch_alerts(pb::WatchAlertsRequest::default())
            .await
            .unwrap()
    );
    one_record!(
        gw,
        "WatchNotifications",
        ggd.notifications
            .watch_notifications(pb::WatchNotificationsRequest {
                purpose: pb::Purpose::CaseCoordination as i32,
                after_cursor: u64::MAX / 2,
                ..Default::default()
            })
            .await
            .unwrap()
    );
    gw.stop().await;
}

async fn records_carry_nen7513_fields_and_trace_context(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut wij = gw.client_as(WIJ, "wij-medewerker-77").await;
    let mut req = tonic::Request::new(pb::RegisterSignalRequest {
        request_id: "req-0001".into(),
        bsn: bsn(210),
        category: pb::Category::Parenting as i32,
        contact: contact("Team"),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let resp = wij.signals.register_signal(req).await.unwrap();
    let returned = resp
        .metadata()
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        returned.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{returned}"
    );
    let mut auditor = gw.client(AUDITOR).await;
    let records = auditor
        .audit
        .query_access_log(pb::QueryAccessLogRequest {
            actor_id: "wij-medewerker-77".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.action, "RegisterSignal");
    assert_eq!(r.role, pb::Role::Wij as i32);
    assert_eq!(r.agency_oin.len(), 20);
    assert_eq!(r.request_id, "req-0001");
    assert_eq!(r.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r.span_id.len(), 16);
    assert_eq!(r.cert_fingerprint.len(), 64);
    assert_eq!(r.subjects.len(), 1);
    assert_eq!(r.subjects[0].len(), 64, "a pseudonym, not a BSN");
    assert_eq!(r.decision, pb::Decision::Allow as i32);
    assert_eq!(r.status_code, 0);
    // Query by BSN finds it (pseudonymised on the fly).
    let by_bsn = auditor
        .audit
        .query_access_log(pb::QueryAccessLogRequest {
            bsn: bsn(210),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_bsn.records.len(), 1);
    gw.stop().await;
}

async fn citizen_report_lists_exactly_the_accesses(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let child = bsn(220);
    let other = bsn(221);
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let s = register(&mut wij, &child, pb::Category::Parenting).await;
    register(&mut ggd, &other, pb::Category::Health).await;
    consent(&mut wij, &child, &[pb::Role::Wij, pb::Role::Ggd], &[CARE]).await;
    involvement(&mut wij, &s.signal_id, CARE).await.unwrap();
    // Refused calls are not accesses; they do not appear.
    let mut accare = gw.client(JEUGDHULP).await;
    involvement(&mut accare, &s.signal_id, CARE)
        .await
        .unwrap_err();
    let mut auditor = gw.client(AUDITOR).await;
    let report = auditor
        .audit
        .citizen_report(pb::CitizenReportRequest {
            bsn: child.clone(),
            format: pb::ReportFormat::Text as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.entry_count, 3, "{}", report.content);
    assert!(report.content.contains("WIJ Groningen"));
    assert!(report.content.contains("signaal vastgelegd"));
    assert!(report.content.contains("toestemming vastgelegd"));
    assert!(report
        .content
        .contains("betrokkenheid van anderen opgevraagd"));
    assert!(report.content.contains("afstemming van zorg"));
    assert!(!report.content.contains("GGD"));
    assert!(
        !report.content.contains("wij-groningen-worker"),
        "no employee ids"
    );
    let html = auditor
        .audit
        .citizen_report(pb::CitizenReportRequest {
            bsn: child,
            format: pb::ReportFormat::Html as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(html.content.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.entry_count, 3);
    gw.stop().await;
}

async fn export_verifies_offline_and_checkpoints_are_signed(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut wij = gw.client(WIJ).await;
    for i in 0..20 {
        register(&mut wij, &bsn(230 + i), pb::Category::Parenting).await;
    }
    assert!(gw.running.gateway.write_checkpoint().await.unwrap());
    register(&mut wij, &bsn(260), pb::Category::Parenting).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("log.jsonl");
    let args = signaalpoort_cli::audit::AuditCommand::Export {
        conn: signaalpoort_cli::audit::Connection {
            endpoint: gw.endpoint.clone(),
            pki: env.pki(),
            identity: AUDITOR.into(),
            actor: "fg-1".into(),
        },
        out: out.clone(),
        format: signaalpoort_cli::audit::ExportFormat::Jsonl,
    };
    signaalpoort_cli::audit::run(args).await.unwrap();
    // The export's own key file names the same key the officer configures.
    assert_eq!(
        std::fs::read_to_string(out.with_extension("pubkey"))
            .unwrap()
            .trim(),
        log_key(&env.data())
    );
    let args = signaalpoort_cli::audit::VerifyArgs {
        export: Some(out.clone()),
        checkpoints: Some(out.with_extension("checkpoints.jsonl")),
        log_key: log_key(&env.data()),
        ..Default::default()
    };
    // The record after the checkpoint is intact but not yet covered: exit 3, not 0.
    let code = signaalpoort_cli::audit::verify(&args).await.unwrap();
    assert_eq!(code, std::process::ExitCode::from(3));
    let policy = own_policy(&env.data());
    let checkpoints =
        signaalpoort_cli::audit::read_checkpoints(&out.with_extension("checkpoints.jsonl"))
            .unwrap();
    let data = std::fs::read(&out).unwrap();
    let input = signaalpoort_core::access_log::VerifyInput {
        policy: &policy,
        checkpoints: &checkpoints,
        trusted: None,
        start: signaalpoort_core::access_log::ChainStart::Genesis,
    };
    let report = signaalpoort_core::access_log::verify_export(
        signaalpoort_core::access_log::export_lines(&data),
        &input,
    );
    assert!(report.is_ok(), "{:?}", report.first_problem);
    // The checkpoint covers the 20 registrations; what came after is intact and counted.
    assert_eq!(report.covered_through(), 20);
    assert!(report.records >= 21);
    assert_eq!(report.uncovered(), report.records - 20);
    // Altering one byte of one exported record is caught and named.
    let text = std::fs::read_to_string(&out).unwrap();
    let tampered = text.replacen(
        "\"action\":\"RegisterSignal\"",
        "\"action\":\"ListSignals\"",
        3,
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, tampered).unwrap();
    let report = signaalpoort_core::access_log::verify_export(
        std::fs::read(&bad)
            .unwrap()
            .split(|b| *b == b'\n')
            .collect::<Vec<_>>(),
        &input,
    );
    let problem = report.first_problem.expect("tampering detected");
    assert_eq!(problem.seq, Some(1));
    assert_eq!(
        problem.kind,
        signaalpoort_core::access_log::ProblemKind::HashMismatch
    );

    // The Logboek Dataverwerkingen shape: one entry per record and subject, joinable by trace id.
    let ldv = dir.path().join("ldv.jsonl");
    signaalpoort_cli::audit::run(signaalpoort_cli::audit::AuditCommand::Export {
        conn: signaalpoort_cli::audit::Connection {
            endpoint: gw.endpoint.clone(),
            pki: env.pki(),
            identity: AUDITOR.into(),
            actor: "fg-1".into(),
        },
        out: ldv.clone(),
        format: signaalpoort_cli::audit::ExportFormat::Logboek,
    })
    .await
    .unwrap();
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(&ldv)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let registrations: Vec<_> = entries
        .iter()
        .filter(|e| e["name"] == "RegisterSignal")
        .collect();
    assert_eq!(registrations.len(), 21);
    for e in registrations {
        assert_eq!(e["status_code"], "STATUS_CODE_OK");
        assert_eq!(e["trace_id"].as_str().map(str::len), Some(32));
        assert_eq!(e["span_id"].as_str().map(str::len), Some(16));
        let subject = e["attributes"]["dpl.core.data_subject_id"]
            .as_str()
            .unwrap();
        assert_eq!(subject.len(), 64, "a pseudonym, never a BSN");
    }
    let text = std::fs::read_to_string(&ldv).unwrap();
    for i in 0..20 {
        assert!(!text.contains(&bsn(230 + i)));
    }
    gw.stop().await;
}

both_backends!(
    every_rpc_writes_exactly_one_record,
    records_carry_nen7513_fields_and_trace_context,
    citizen_report_lists_exactly_the_accesses,
    export_verifies_offline_and_checkpoints_are_signed,
);

// Reading the response of a failed call must yield no data: a trigger makes every access-log
// insert fail, as a full disk or a broken database would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_fails_the_call_closed() {
    let env = Env::new(Backend::Sqlite).await;
    let gw = env.start(&clock()).await;
    let child = bsn(270);
    let mut wij = gw.client(WIJ).await;
    let s = register(&mut wij, &child, pb::Category::Parenting).await;
    register(&mut gw.client(GGD).await, &child, pb::Category::Health).await;
    consent(&mut wij, &child, &[pb::Role::Wij, pb::Role::Ggd], &[CARE]).await;
    assert_eq!(
        involvement(&mut wij, &s.signal_id, CARE)
            .await
            .unwrap()
            .involvements
            .len(),
        1
    );

    let url = env.database_url.clone();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TRIGGER forced_failure BEFORE INSERT ON access_log BEGIN SELECT RAISE(ABORT, 'forced failure'); END")
        .execute(&pool)
        .await
        .unwrap();
    let status = involvement(&mut wij, &s.signal_id, CARE).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = wij
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn(271),
            category: 1,
            contact: contact("T"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    sqlx::query("DROP TRIGGER forced_failure")
        .execute(&pool)
        .await
        .unwrap();
    // The refused registration left nothing behind.
    let list = wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.signals.len(), 1);
    gw.stop().await;
}
