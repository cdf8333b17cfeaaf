//! Test harness: a real gateway (in-process, or the real binary) with a fresh dev PKI, a fresh
//! database (SQLite file or a new PostgreSQL database) and ephemeral ports; clients per agency over
//! real mutual TLS.

pub mod model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use signaalpoort_api::v1 as pb;
use signaalpoort_cli::client::{AgencyClient, ClientIdentity};
use signaalpoort_server::{ManualClock, RunningGateway};
use tonic::Code;
use tonic_types::StatusExt;

pub use signaalpoort_core::complete_bsn;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates an async test body `fn(Backend)` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Sqlite).await }) +
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::postgres_available().await { super::$name($crate::Backend::Postgres).await }
            }) +
        }
    };
}

/// Whether the PostgreSQL suite runs; says so when it does not.
pub async fn postgres_available() -> bool {
    if std::env::var("SIGNAALPOORT_TEST_DATABASE_URL").is_ok() {
        return true;
    }
    if std::env::var("SIGNAALPOORT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("SIGNAALPOORT_REQUIRE_POSTGRES=1 but SIGNAALPOORT_TEST_DATABASE_URL is not set");
    }
    eprintln!("postgres suite skipped: set SIGNAALPOORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres");
    false
}

/// A fresh PKI + data directory; survives gateway restarts within one test.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub database_url: String,
}

impl Env {
    pub async fn new(backend: Backend) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        signaalpoort_cli::dev::init_pki(&dir.path().join("pki"), false).expect("dev pki");
        let database_url = match backend {
            Backend::Sqlite => format!(
                "sqlite://{}",
                dir.path().join("data").join("signaalpoort.db").display()
            ),
            Backend::Postgres => signaalpoort_store::testing::fresh_postgres_url()
                .await
                .expect("SIGNAALPOORT_TEST_DATABASE_URL set but no database could be created"),
        };
        Env {
            dir,
            backend,
            database_url,
        }
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes a config with ephemeral ports; `extra` is appended TOML (e.g. `[audit]` tweaks).
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let toml = signaalpoort_cli::dev::dev_config_toml(
            &self.pki(),
            &self.data(),
            "127.0.0.1:0".parse().expect("addr"),
            Some("127.0.0.1:0".parse().expect("addr")),
        )
        .expect("config");
        let toml = toml.replacen(
            "[server]\n",
            &format!("[server]\ndatabase_url = \"{}\"\n", self.database_url),
            1,
        );
        let path = self.dir.path().join("signaalpoort.toml");
        std::fs::write(&path, format!("{toml}\n{extra}")).expect("write config");
        path
    }

    /// Starts the gateway in-process on a manual clock.
    pub async fn start(&self, clock: &ManualClock) -> Gateway {
        self.start_with(clock, "").await
    }

    pub async fn start_with(&self, clock: &ManualClock, extra: &str) -> Gateway {
        self.start_with_server(clock, "", extra).await
    }

    /// Starts with `server` lines added to the `[server]` section and `extra` appended.
    pub async fn start_with_server(
        &self,
        clock: &ManualClock,
        server: &str,
        extra: &str,
    ) -> Gateway {
        let path = self.write_config(extra);
        let text = std::fs::read_to_string(&path)
            .expect("read config")
            .replacen("[server]\n", &format!("[server]\n{server}\n"), 1);
        std::fs::write(&path, text).expect("write config");
        let config = signaalpoort_server::Config::load(&path).expect("config loads");
        let running = signaalpoort_server::start(config, Arc::new(clock.clone()))
            .await
            .expect("gateway starts");
        Gateway {
            endpoint: format!("https://{}", running.grpc_addr),
            pki: self.pki(),
            running,
        }
    }
}

pub struct Gateway {
    pub endpoint: String,
    pub pki: PathBuf,
    pub running: RunningGateway,
}

impl Gateway {
    pub async fn client(&self, slug: &str) -> AgencyClient {
        self.client_as(slug, &format!("{slug}-worker-1")).await
    }

    pub async fn client_as(&self, slug: &str, actor: &str) -> AgencyClient {
        AgencyClient::connect(&self.endpoint, &ClientIdentity::dev(&self.pki, slug), actor)
            .await
            .expect("client connects")
    }

    /// A client with an arbitrary certificate and key from the PKI directory.
    pub async fn client_with(
        &self,
        cert: &Path,
        key: &Path,
        actor: &str,
    ) -> anyhow::Result<AgencyClient> {
        let id = ClientIdentity {
            ca: self.pki.join("ca.pem"),
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        AgencyClient::connect(&self.endpoint, &id, actor).await
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }

    pub fn store(&self) -> &signaalpoort_store::Store {
        &self.running.gateway.store
    }

    /// Number of access-log records so far.
    pub async fn log_len(&self) -> u64 {
        self.store().read().head().await.expect("head").0
    }
}

pub const GEMEENTE: &str = "gemeente-groningen";
pub const WIJ: &str = "wij-groningen";
pub const GGD: &str = "ggd-groningen";
pub const VEILIG_THUIS: &str = "veilig-thuis-groningen";
pub const JEUGDHULP: &str = "jeugdhulp-accare";
pub const AUDITOR: &str = "auditor";

/// A valid BSN derived from a small number, distinct per number.
pub fn bsn(n: u32) -> String {
    let mut k = 0;
    loop {
        if let Some(b) = complete_bsn(&format!("{:08}", 20_000_000 + n * 10 + k)) {
            return b;
        }
        k += 1;
    }
}

pub fn contact(team: &str) -> Option<pb::ContactPoint> {
    Some(pb::ContactPoint {
        team: team.to_owned(),
        phone: "050 123 4567".to_owned(),
        email: String::new(),
    })
}

pub fn future(days: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: time::OffsetDateTime::now_utc().unix_timestamp() + days * 86400,
        nanos: 0,
    })
}

pub async fn register(c: &mut AgencyClient, bsn: &str, category: pb::Category) -> pb::Signal {
    c.signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn.to_owned(),
            category: category as i32,
            contact: contact("Team"),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .signal
        .expect("signal")
}

pub async fn declare(
    c: &mut AgencyClient,
    reference: &str,
    members: &[&str],
) -> pb::DeclareHouseholdResponse {
    c.households
        .declare_household(pb::DeclareHouseholdRequest {
            household_ref: reference.to_owned(),
            members: members
                .iter()
                .map(|b| pb::HouseholdMember {
                    bsn: (*b).to_owned(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .expect("declare")
        .into_inner()
}

/// Declares a household with the members' birth dates (the age rules' only source), each given as
/// an age in whole years on `today` (the gateway's clock), well away from a birthday.
pub async fn declare_aged(
    c: &mut AgencyClient,
    reference: &str,
    today: time::Date,
    members: &[(&str, i32)],
) -> pb::DeclareHouseholdResponse {
    c.households
        .declare_household(pb::DeclareHouseholdRequest {
            household_ref: reference.to_owned(),
            members: members
                .iter()
                .map(|(b, years)| pb::HouseholdMember {
                    bsn: (*b).to_owned(),
                    birth_date: born_years_before(today, *years),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .expect("declare")
        .into_inner()
}

/// A birth date (YYYY-MM-DD) of someone who is `years` old on `today` and not near a birthday.
pub fn born_years_before(today: time::Date, years: i32) -> String {
    let d = today - time::Duration::days(40);
    format!(
        "{:04}-{:02}-{:02}",
        d.year() - years,
        u8::from(d.month()),
        d.day().min(28)
    )
}

/// Consent given by the person and a parent or guardian together, household-wide, for the given
/// roles and purposes: it covers its own person whatever the age, and the household's members the
/// municipality declared under 12 (a parent's consent speaks for them), nobody else.
pub async fn consent(
    c: &mut AgencyClient,
    bsn: &str,
    roles: &[pb::Role],
    purposes: &[pb::Purpose],
) -> pb::Consent {
    c.consents
        .record_consent(pb::RecordConsentRequest {
            bsn: bsn.to_owned(),
            include_household: true,
            givers: vec![
                pb::ConsentGiver::Subject as i32,
                pb::ConsentGiver::ParentOrGuardian as i32,
            ],
            purposes: purposes.iter().map(|p| *p as i32).collect(),
            roles: roles.iter().map(|r| *r as i32).collect(),
            valid_until: future(180),
            evidence_ref: "doc-1".into(),
            ..Default::default()
        })
        .await
        .expect("consent")
        .into_inner()
        .consent
        .expect("consent")
}

pub async fn involvement(
    c: &mut AgencyClient,
    signal_id: &str,
    purpose: pb::Purpose,
) -> Result<pb::QueryInvolvementResponse, tonic::Status> {
    c.signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: signal_id.to_owned(),
            purpose: purpose as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The ErrorInfo reason of a PERMISSION_DENIED status.
pub fn deny_reason(status: &tonic::Status) -> String {
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "expected PERMISSION_DENIED, got {status:?}"
    );
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// The fields named in an INVALID_ARGUMENT's BadRequest.
pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "expected INVALID_ARGUMENT, got {status:?}"
    );
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

pub fn names(resp: &pb::QueryInvolvementResponse) -> Vec<String> {
    let mut v: Vec<String> = resp
        .involvements
        .iter()
        .map(|i| i.agency.clone().unwrap_or_default().name)
        .collect();
    v.sort();
    v
}

/// The gateway binary built from this crate: cargo builds a package's binaries before its
/// integration tests, next to the `deps/` folder the test executable runs from.
pub fn under_test_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join(format!(
        "signaalpoort-under-test{}",
        std::env::consts::EXE_SUFFIX
    ))
}

/// The real binary as a separate process (for kill -9 and multi-replica tests).
pub struct Process {
    pub child: tokio::process::Child,
    pub endpoint: String,
    pub pki: PathBuf,
    /// Everything the gateway wrote to stderr (its log), line by line.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

/// The gRPC address from the "listening" line, in plain (`grpc_addr=…`) or JSON
/// (`"grpc_addr":"…"`) log format.
fn listening_address(line: &str) -> Option<String> {
    if let Some(rest) = line.split("\"grpc_addr\":\"").nth(1) {
        return rest.split('"').next().map(str::to_owned);
    }
    line.split("grpc_addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
}

impl Process {
    /// Starts `signaalpoort serve --config <config>` and waits until it listens.
    pub async fn serve(config: &Path, pki: &Path) -> Process {
        Self::serve_logging(config, pki, "info", false).await
    }

    /// As [`Process::serve`], with a `SIGNAALPOORT_LOG` filter (e.g. `debug`), JSON logs if asked.
    pub async fn serve_logging(config: &Path, pki: &Path, filter: &str, json: bool) -> Process {
        use tokio::io::AsyncBufReadExt;
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut child = tokio::process::Command::new(under_test_binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("SIGNAALPOORT_LOG", filter)
            .env(
                "SIGNAALPOORT_SERVER_LOG_JSON",
                if json { "true" } else { "false" },
            )
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn gateway");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let keep = log.clone();
        let addr = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let addr = listening_address(&line);
                keep.lock().expect("log").push(line);
                if addr.is_some() {
                    return addr;
                }
            }
            None
        })
        .await
        .expect("gateway listens within 60 s")
        .expect("gateway printed its address");
        // Keep draining stderr so the child never blocks on a full pipe.
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep.lock().expect("log").push(line);
            }
        });
        Process {
            child,
            endpoint: format!("https://{addr}"),
            pki: pki.to_owned(),
            log,
        }
    }

    pub async fn client(&self, slug: &str) -> AgencyClient {
        AgencyClient::connect(
            &self.endpoint,
            &ClientIdentity::dev(&self.pki, slug),
            &format!("{slug}-worker-1"),
        )
        .await
        .expect("client connects")
    }

    /// SIGKILL: no shutdown, no final checkpoint.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9");
    }

    /// SIGTERM and wait for a graceful exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .expect("kill -TERM");
        }
        tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .expect("exits in time")
            .expect("exit status")
    }
}

/// Verifies the whole stored chain and its checkpoints with the gateway's own public key.
pub async fn verify_stored_chain(
    database_url: &str,
    data_dir: &Path,
) -> signaalpoort_core::access_log::VerifyReport {
    // Read-only, as an officer's verifier opens it: a writable open would rebuild a cut tree.
    let store = signaalpoort_store::Store::open(
        database_url,
        signaalpoort_store::StoreOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .expect("store opens");
    let report = store
        .verify_log(&own_policy(data_dir), None)
        .await
        .expect("log readable");
    store.close().await;
    report
}

/// The gateway's checkpoint key under the default origin, as an officer would configure it.
pub fn log_key(data_dir: &Path) -> String {
    let signer = signaalpoort_server::keys::load_or_create_checkpoint_key(
        &signaalpoort_server::keys::checkpoint_key_path(data_dir),
        "signaalpoort.local/access-log",
    )
    .expect("checkpoint key");
    (&signer as &dyn signaalpoort_core::access_log::CheckpointSigner).verifier_key()
}

/// Trust in the gateway's own key alone (no witnesses).
pub fn own_policy(data_dir: &Path) -> signaalpoort_core::access_log::TrustPolicy {
    signaalpoort_core::access_log::TrustPolicy {
        log_key: log_key(data_dir),
        witnesses: Vec::new(),
        quorum: 0,
    }
}

/// Calls with a raw request body, as a client that does not speak the contract (or an attacker)
/// would send them: any bytes on any method, over the agency's real mTLS channel.
pub mod raw {
    use prost::bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;
    use tonic::Status;

    /// Bytes in, bytes out.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct RawCodec;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawCodec;
        type Decoder = RawCodec;
        fn encoder(&mut self) -> RawCodec {
            RawCodec
        }
        fn decoder(&mut self) -> RawCodec {
            RawCodec
        }
    }

    impl Encoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }

    fn request(actor: &str, body: Vec<u8>) -> tonic::Request<Vec<u8>> {
        let mut req = tonic::Request::new(body);
        req.metadata_mut()
            .insert("x-actor-id", actor.parse().expect("ascii actor"));
        req
    }

    /// A unary call with `body` as the request message; the answer's raw bytes.
    pub async fn unary(
        channel: &Channel,
        path: &'static str,
        actor: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        grpc.unary(
            request(actor, body),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
        .map(|r| r.into_inner())
    }

    /// Opens a server-streaming call with `body`; Ok once the stream is open.
    pub async fn open_stream(
        channel: &Channel,
        path: &'static str,
        actor: &str,
        body: Vec<u8>,
    ) -> Result<(), Status> {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        grpc.server_streaming(
            request(actor, body),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
        .map(|_| ())
    }
}

/// GET on the plaintext admin listener: (status, the whole response).
pub async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("read");
    let status = body
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body)
}
