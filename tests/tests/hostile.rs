//! Hostile input at the edge: bodies that do not decode, bodies over the message limit, and calls
//! whose deadline passes while they are being committed — through the front door, over real mTLS.

use std::time::Duration;

use signaalpoort_api::v1 as pb;
use signaalpoort_core::access_log::AccessRecord;
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

const REGISTER: &str = "/signaalpoort.v1.SignalService/RegisterSignal";
const WATCH: &str = "/signaalpoort.v1.NotificationService/WatchNotifications";
const WIJ_OIN: &str = "00000099001234560002";

async fn last_record(gw: &Gateway) -> AccessRecord {
    let n = gw.log_len().await;
    let mut records = gw.store().read().export_log(n, n, 1).await.expect("export");
    records.pop().expect("a record")
}

/// The ErrorInfo of a status, which must be in the signaalpoort.nl domain.
fn error_info(status: &tonic::Status) -> tonic_types::ErrorInfo {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "signaalpoort.nl");
    info
}

async fn undecodable_bodies_are_invalid_argument_and_logged(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let wij = gw.client(WIJ).await;
    let cases: [(&str, Vec<u8>); 3] = [
        // Not protobuf at all: a field number of 0 after an overlong varint.
        (
            "garbage",
            vec![
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ),
        // Field 2 (bsn, a string) with bytes that are not UTF-8.
        ("invalid utf-8", vec![0x12, 0x02, 0xff, 0xfe]),
        // A length that runs past the end of the body.
        ("truncated", vec![0x12, 0x7f, b'1']),
    ];
    for (what, body) in cases {
        let before = gw.log_len().await;
        let status = raw::unary(&wij.channel, REGISTER, "wij-worker-7", body)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(error_info(&status).reason, "MALFORMED_REQUEST", "{what}");
        assert!(
            status
                .metadata()
                .get(signaalpoort_api::codec::MALFORMED_MARKER)
                .is_none(),
            "the internal marker leaked: {status:?}"
        );
        // One record, like any refusal: who, which method, why.
        assert_eq!(gw.log_len().await, before + 1, "{what}");
        let record = last_record(&gw).await;
        assert_eq!(record.draft.action, "RegisterSignal");
        assert_eq!(record.draft.agency_oin, WIJ_OIN);
        assert_eq!(record.draft.actor_id, "wij-worker-7");
        assert_eq!(record.draft.reason, "MALFORMED_REQUEST");
        assert_eq!(record.draft.status_code, Code::InvalidArgument as i32);
        assert!(record.draft.subjects.is_empty());
    }
    // A streaming method refuses the same way, before any stream opens.
    let before = gw.log_len().await;
    let status = raw::open_stream(&wij.channel, WATCH, "wij-worker-7", vec![0x08, 0xff])
        .await
        .expect_err("truncated varint");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_info(&status).reason, "MALFORMED_REQUEST");
    assert_eq!(gw.log_len().await, before + 1);
    assert_eq!(last_record(&gw).await.draft.action, "ReceiveNotifications");

    // Nothing else changed: the agency has no signal.
    let mut wij = wij;
    let listed = wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.signals.is_empty());
    // And the gateway still answers a well-formed call.
    register(&mut wij, &bsn(1), pb::Category::Parenting).await;
    gw.stop().await;
}

async fn an_oversized_body_is_resource_exhausted_naming_the_limit_and_logged(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let limit = gw.running.gateway.config.limits.max_message_bytes;
    let wij = gw.client(WIJ).await;
    // 10 MB: a valid RegisterSignal whose contact team is huge.
    let body = prost::Message::encode_to_vec(&pb::RegisterSignalRequest {
        bsn: bsn(2),
        category: pb::Category::Parenting as i32,
        contact: Some(pb::ContactPoint {
            team: "x".repeat(10 * 1024 * 1024),
            phone: "050 123 4567".into(),
            email: String::new(),
        }),
        ..Default::default()
    });
    let before = gw.log_len().await;
    let status = raw::unary(&wij.channel, REGISTER, "wij-worker-8", body)
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(&limit.to_string()),
        "the message names the limit: {status:?}"
    );
    let info = error_info(&status);
    assert_eq!(info.reason, "REQUEST_TOO_LARGE");
    assert_eq!(info.metadata.get("limit_bytes"), Some(&limit.to_string()));
    assert_eq!(gw.log_len().await, before + 1);
    let record = last_record(&gw).await;
    assert_eq!(record.draft.action, "RegisterSignal");
    assert_eq!(record.draft.agency_oin, WIJ_OIN);
    assert_eq!(record.draft.actor_id, "wij-worker-8");
    assert_eq!(record.draft.reason, "REQUEST_TOO_LARGE");
    assert_eq!(record.draft.status_code, Code::ResourceExhausted as i32);
    let mut wij = wij;
    assert!(wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .signals
        .is_empty());
    gw.stop().await;
}

async fn an_unknown_agency_with_a_malformed_body_is_told_only_that_it_is_unknown(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let neg = env.pki().join("negative");
    let stranger = gw
        .client_with(
            &neg.join("unknown-oin-client.pem"),
            &neg.join("unknown-oin-client.key"),
            "x",
        )
        .await
        .expect("connects: the CA is ours");
    let status = raw::unary(&stranger.channel, REGISTER, "x", vec![0xff, 0xff])
        .await
        .expect_err("refused");
    assert_eq!(deny_reason(&status), "UNKNOWN_AGENCY");
    assert_eq!(gw.log_len().await, 1);
    assert_eq!(last_record(&gw).await.draft.reason, "UNKNOWN_AGENCY");
    gw.stop().await;
}

/// Holds the store's write lock from outside the gateway (another connection), so a call can be
/// kept waiting in its commit for as long as the test needs.
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(env: &Env) -> WriteLock {
        use sqlx::{Connection, Executor};
        match env.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&env.database_url)
                    .await
                    .expect("sqlite connect");
                c.execute("BEGIN IMMEDIATE").await.expect("write lock");
                WriteLock::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&env.database_url)
                    .await
                    .expect("postgres connect");
                c.execute("BEGIN").await.expect("begin");
                c.execute("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE")
                    .await
                    .expect("chain head lock");
                WriteLock::Postgres(c)
            }
        }
    }

    async fn release(self) {
        use sqlx::Executor;
        match self {
            WriteLock::Sqlite(mut c) => c.execute("ROLLBACK").await.map(|_| ()),
            WriteLock::Postgres(mut c) => c.execute("ROLLBACK").await.map(|_| ()),
        }
        .expect("release");
    }
}

async fn a_committed_call_past_its_deadline_is_found_again_by_its_request_id(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut wij = gw.client(WIJ).await;
    let request = pb::RegisterSignalRequest {
        request_id: "late-1".into(),
        bsn: bsn(3),
        category: pb::Category::Parenting as i32,
        contact: contact("Team"),
        ..Default::default()
    };
    let lock = WriteLock::take(&env).await;
    let mut late = tonic::Request::new(request.clone());
    late.set_timeout(Duration::from_millis(400));
    let status = wij
        .signals
        .register_signal(late)
        .await
        .expect_err("the commit waits for the lock past the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(error_info(&status).reason, "DEADLINE_EXCEEDED");
    assert!(status.message().contains("request_id"), "{status:?}");
    lock.release().await;

    // The client does as the contract says: the same request, the same request_id.
    let again = wij
        .signals
        .register_signal(request)
        .await
        .expect("the repeat answers")
        .into_inner()
        .signal
        .expect("signal");
    let listed = wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .signals;
    assert_eq!(listed.len(), 1, "registered once, not twice");
    assert_eq!(listed[0].signal_id, again.signal_id);
    // Both calls are in the access log, both carried out (the first while its client had gone).
    let n = gw.log_len().await;
    let records = gw
        .store()
        .read()
        .export_log(1, n, 100)
        .await
        .expect("export");
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r.draft.request_id == "late-1")
        .collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(mine
        .iter()
        .all(|r| r.draft.status_code == 0 && r.draft.action == "RegisterSignal"));
    gw.stop().await;
}

both_backends!(
    undecodable_bodies_are_invalid_argument_and_logged,
    an_oversized_body_is_resource_exhausted_naming_the_limit_and_logged,
    an_unknown_agency_with_a_malformed_body_is_told_only_that_it_is_unknown,
    a_committed_call_past_its_deadline_is_found_again_by_its_request_id,
);
