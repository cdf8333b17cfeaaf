//! Shared by the fuzz targets: a real gateway (dev PKI, SQLite in a temporary directory) whose
//! service handlers the `requests` target calls directly, as tonic would after decoding.

use std::sync::{Arc, OnceLock};

use prost::Message;
use signaalpoort_api::v1 as pb;
use signaalpoort_api::v1::audit_service_server::AuditService;
use signaalpoort_api::v1::consent_service_server::ConsentService;
use signaalpoort_api::v1::coordination_service_server::CoordinationService;
use signaalpoort_api::v1::household_service_server::HouseholdService;
use signaalpoort_api::v1::notification_service_server::NotificationService;
use signaalpoort_api::v1::signal_service_server::SignalService;
use signaalpoort_server::services::{
    audit, consent, coordination, households, notifications, signals,
};
use signaalpoort_server::{Gateway, RunningGateway};
use signaalpoort_tls::{PeerCertificate, TlsConnectInfo};
use tonic::{Code, Request, Status};

/// The example agencies (one per role), as in the dev PKI.
pub const AGENCIES: &[(&str, &str)] = &[
    ("00000099001234560001", "gemeente"),
    ("00000099001234560002", "wij"),
    ("00000099001234560003", "ggd"),
    ("00000099001234560004", "veilig_thuis"),
    ("00000099001234560005", "jeugdhulp"),
    ("00000099001234560006", "auditor"),
];

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub gateway: Arc<Gateway>,
    _running: RunningGateway,
    _dir: tempfile::TempDir,
}

/// One gateway per fuzzing process; the database lives on /dev/shm when it exists, so a commit's
/// fsync costs little.
pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let pki = base.path().join("pki");
        let agencies = signaalpoort_tls::devpki::default_dev_agencies();
        signaalpoort_tls::devpki::generate_dev_pki(&pki, &agencies, &["localhost".to_owned()])
            .expect("dev pki");
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n\n\
             [tls]\ncert = \"{pki}/server.pem\"\nkey = \"{pki}/server.key\"\nclient_ca = \"{pki}/ca.pem\"\n\n\
             [limits]\ncalls_per_second_per_agency = 1000000\nburst_per_agency = 1000000\n\n\
             [audit]\nunusual_volume_threshold = 1000000\n\n",
            data = base.path().join("data").display(),
            pki = pki.display(),
        );
        for (oin, role) in AGENCIES {
            toml.push_str(&format!(
                "[[agency]]\noin = \"{oin}\"\nname = \"Agency {role}\"\nrole = \"{role}\"\n\n"
            ));
        }
        let path = base.path().join("signaalpoort.toml");
        std::fs::write(&path, toml).expect("write config");
        let config = signaalpoort_server::Config::load(&path).expect("config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let running = runtime
            .block_on(signaalpoort_server::start(
                config,
                Arc::new(signaalpoort_server::SystemClock),
            ))
            .expect("gateway starts");
        Harness {
            runtime,
            gateway: running.gateway.clone(),
            _running: running,
            _dir: base,
        }
    })
}

/// What one fuzz input asks: `[method, agency, actor, body...]`, the body a protobuf message.
/// A fixed header rather than `arbitrary` so the seed corpus is plain encoded requests.
pub struct Input<'a> {
    pub method: u8,
    pub agency: u8,
    pub actor: u8,
    pub body: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        match data {
            [method, agency, actor, body @ ..] => Some(Input {
                method: *method,
                agency: *agency,
                actor: *actor,
                body,
            }),
            _ => None,
        }
    }

    pub fn encode(method: u8, agency: u8, actor: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![method, agency, actor];
        out.extend_from_slice(body);
        out
    }
}

fn request<T>(message: T, input: &Input<'_>) -> Request<T> {
    let mut req = Request::new(message);
    let (oin, _) = AGENCIES[usize::from(input.agency) % AGENCIES.len()];
    // The actor header: usually valid, sometimes missing or odd (its validation is fuzzed too).
    let actor = match input.actor % 4 {
        0 | 1 => Some(format!("worker-{}", input.actor)),
        2 => Some(format!("{}\u{7f}x", input.actor)),
        _ => None,
    };
    if let Some(actor) = actor.and_then(|a| a.parse().ok()) {
        req.metadata_mut().insert("x-actor-id", actor);
    }
    let mut fingerprint_sha256 = [0u8; 32];
    fingerprint_sha256[0] = input.agency;
    req.extensions_mut().insert(TlsConnectInfo {
        remote_addr: None,
        peer: Some(Arc::new(PeerCertificate {
            oin: Some(oin.to_owned()),
            fingerprint_sha256,
            serial_hex: format!("{:02x}", 0x10 + input.agency % 6),
            not_after_unix: i64::MAX,
            subject: format!("CN=fuzz,serialNumber={oin}"),
        })),
    });
    req
}

/// The invariant every handler keeps: a refusal is a deliberate status, never an internal error,
/// and INVALID_ARGUMENT says which fields.
pub fn check(status: &Status) {
    use tonic_types::StatusExt;
    assert!(
        !matches!(status.code(), Code::Internal | Code::Unknown),
        "handler answered {status:?}"
    );
    if status.code() == Code::InvalidArgument {
        let bad = status
            .get_details_bad_request()
            .expect("INVALID_ARGUMENT carries BadRequest");
        assert!(
            !bad.field_violations.is_empty(),
            "BadRequest without a field: {status:?}"
        );
    }
}

macro_rules! methods {
    ($( $n:literal => $svc:expr, $method:ident, $req:ty, stream = $stream:literal; )+) => {
        /// Calls the handler that `input.method` selects with the decoded body; None when the body
        /// does not decode (that is the codec's business, tested end to end).
        pub async fn dispatch(gw: &Arc<Gateway>, input: &Input<'_>) -> Option<Result<(), Status>> {
            let n = input.method % METHODS;
            $(
                if n == $n {
                    let message = <$req>::decode(input.body).ok()?;
                    let svc = $svc(gw.clone());
                    return Some(svc.$method(request(message, input)).await.map(|_| ()));
                }
            )+
            None
        }
        pub const METHODS: u8 = [$($n),+].len() as u8;
    };
}

methods! {
    0 => signals::Signals, register_signal, pb::RegisterSignalRequest, stream = false;
    1 => signals::Signals, withdraw_signal, pb::WithdrawSignalRequest, stream = false;
    2 => signals::Signals, list_signals, pb::ListSignalsRequest, stream = false;
    3 => signals::Signals, query_involvement, pb::QueryInvolvementRequest, stream = false;
    4 => households::Households, declare_household, pb::DeclareHouseholdRequest, stream = false;
    5 => households::Households, dissolve_household, pb::DissolveHouseholdRequest, stream = false;
    6 => notifications::Notifications, list_notifications, pb::ListNotificationsRequest, stream = false;
    7 => consent::Consents, record_consent, pb::RecordConsentRequest, stream = false;
    8 => consent::Consents, withdraw_consent, pb::WithdrawConsentRequest, stream = false;
    9 => consent::Consents, list_consents, pb::ListConsentsRequest, stream = false;
    10 => audit::Audit, query_access_log, pb::QueryAccessLogRequest, stream = false;
    11 => audit::Audit, list_checkpoints, pb::ListCheckpointsRequest, stream = false;
    12 => audit::Audit, get_public_key, pb::GetPublicKeyRequest, stream = false;
    13 => audit::Audit, citizen_report, pb::CitizenReportRequest, stream = false;
    14 => coordination::Coordination, propose_coordinator, pb::ProposeCoordinatorRequest, stream = false;
    15 => coordination::Coordination, respond_to_proposal, pb::RespondToProposalRequest, stream = false;
    16 => coordination::Coordination, hand_over, pb::HandOverRequest, stream = false;
    17 => coordination::Coordination, step_down, pb::StepDownRequest, stream = false;
    18 => coordination::Coordination, get_coordination, pb::GetCoordinationRequest, stream = false;
    19 => coordination::Coordination, get_history, pb::GetHistoryRequest, stream = false;
    20 => coordination::Coordination, get_chronicity, pb::GetChronicityRequest, stream = false;
    21 => audit::Audit, export_access_log, pb::ExportAccessLogRequest, stream = true;
    22 => notifications::Notifications, watch_notifications, pb::WatchNotificationsRequest, stream = true;
    23 => audit::Audit, watch_alerts, pb::WatchAlertsRequest, stream = true;
}

/// A valid BSN (passes the elfproef) for seeds.
const BSN: &str = "111222333";

fn contact() -> Option<pb::ContactPoint> {
    Some(pb::ContactPoint {
        team: "Team".into(),
        phone: "050 123 4567".into(),
        email: String::new(),
    })
}

fn case() -> Option<pb::CaseRef> {
    Some(pb::CaseRef {
        your_signal_id: "00000000-0000-4000-8000-000000000000".into(),
        purpose: 1,
        ..Default::default()
    })
}

/// The seed corpus of the `requests` target: one valid-looking request per method, from each
/// agency (so the role decides the path), as `(file name, bytes)`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let bodies: Vec<(u8, Vec<u8>)> = vec![
        (
            0,
            pb::RegisterSignalRequest {
                request_id: "req-1".into(),
                bsn: BSN.into(),
                category: 1,
                contact: contact(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            1,
            pb::WithdrawSignalRequest {
                signal_id: "00000000-0000-4000-8000-000000000000".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            2,
            pb::ListSignalsRequest {
                page_size: 10,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            3,
            pb::QueryInvolvementRequest {
                signal_id: "00000000-0000-4000-8000-000000000000".into(),
                purpose: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            4,
            pb::DeclareHouseholdRequest {
                household_ref: "hh-1".into(),
                members: vec![pb::HouseholdMember {
                    bsn: BSN.into(),
                    protected: false,
                    birth_date: "2015-01-01".into(),
                }],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            5,
            pb::DissolveHouseholdRequest {
                household_ref: "hh-1".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            6,
            pb::ListNotificationsRequest {
                purpose: 1,
                page_size: 10,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            7,
            pb::RecordConsentRequest {
                bsn: BSN.into(),
                include_household: true,
                givers: vec![1],
                purposes: vec![1],
                roles: vec![1, 2],
                evidence_ref: "doc-1".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            8,
            pb::WithdrawConsentRequest {
                consent_id: "00000000-0000-4000-8000-000000000000".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            9,
            pb::ListConsentsRequest {
                include_inactive: true,
            }
            .encode_to_vec(),
        ),
        (
            10,
            pb::QueryAccessLogRequest {
                bsn: BSN.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (11, pb::ListCheckpointsRequest { limit: 5 }.encode_to_vec()),
        (12, pb::GetPublicKeyRequest {}.encode_to_vec()),
        (
            13,
            pb::CitizenReportRequest {
                bsn: BSN.into(),
                include_household: true,
                format: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            14,
            pb::ProposeCoordinatorRequest {
                case: case(),
                coordinator_oin: "00000099001234560002".into(),
                contact: contact(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            15,
            pb::RespondToProposalRequest {
                case: case(),
                proposal_id: "p-1".into(),
                accept: true,
                contact: contact(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            16,
            pb::HandOverRequest {
                case: case(),
                to_oin: "00000099001234560003".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            17,
            pb::StepDownRequest {
                case: case(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            18,
            pb::GetCoordinationRequest { case: case() }.encode_to_vec(),
        ),
        (19, pb::GetHistoryRequest { case: case() }.encode_to_vec()),
        (
            20,
            pb::GetChronicityRequest { case: case() }.encode_to_vec(),
        ),
        (
            21,
            pb::ExportAccessLogRequest {
                from_seq: 1,
                to_seq: 10,
            }
            .encode_to_vec(),
        ),
        (
            22,
            pb::WatchNotificationsRequest {
                purpose: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            23,
            pb::WatchAlertsRequest { after_cursor: 0 }.encode_to_vec(),
        ),
    ];
    let mut out = Vec::new();
    for (method, body) in bodies {
        for agency in 0..AGENCIES.len() as u8 {
            out.push((
                format!("m{method:02}-a{agency}"),
                Input::encode(method, agency, 0, &body),
            ));
        }
    }
    out
}
