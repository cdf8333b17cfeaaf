//! Witnessing over HTTP (c2sp.org/tlog-witness): the `signaalpoort witness` server that another
//! agency, the privacy officer or an inspectorate runs with its own key and state, and the
//! gateway's side that submits each new checkpoint to the configured witnesses and keeps their
//! cosignatures. The protocol logic is `core::access_log::witness`; this is its transport.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use signaalpoort_core::access_log::witness::{
    AddCheckpoint, Refusal, WitnessState, WitnessedLogs, MAX_REQUEST_BYTES,
};
use signaalpoort_core::access_log::{Cosigner, SignedCheckpoint, WitnessKey};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

use crate::gateway::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("witness state {path}: {why}")]
    State { path: PathBuf, why: String },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A witness: its key, the logs it follows, and the file its state lives in.
pub struct WitnessOptions {
    pub listen: SocketAddr,
    pub cosigner: Cosigner,
    pub logs: WitnessedLogs,
    pub state_path: PathBuf,
}

struct Witness {
    cosigner: Cosigner,
    logs: WitnessedLogs,
    state_path: PathBuf,
    /// Checking a request and persisting its new state happen under this one lock (the
    /// protocol's atomicity: no rollback by two racing requests).
    state: Mutex<WitnessState>,
}

/// Loads the state (empty when the file does not exist yet).
pub fn load_state(path: &std::path::Path) -> Result<WitnessState, WitnessError> {
    match std::fs::read_to_string(path) {
        Ok(text) => WitnessState::from_json(&text).map_err(|e| WitnessError::State {
            path: path.to_owned(),
            why: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WitnessState::default()),
        Err(source) => Err(WitnessError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the state durably: a temporary file, fsync, rename, fsync of the directory.
fn persist(path: &std::path::Path, state: &WitnessState) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(state.to_json().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Starts the witness; returns its address and the task serving it until `shutdown`.
pub async fn serve(
    options: WitnessOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), WitnessError> {
    let state = load_state(&options.state_path)?;
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| WitnessError::Listen {
                addr: options.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| WitnessError::Listen {
            addr: options.listen,
            source,
        })?;
    let witness = Arc::new(Witness {
        cosigner: options.cosigner,
        logs: options.logs,
        state_path: options.state_path,
        state: Mutex::new(state),
    });
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let witness = witness.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(witness.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

async fn respond(
    witness: Arc<Witness>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/add-checkpoint" {
        return Ok(reply(404, "text/plain", "not found\n".into()));
    }
    if req.method() != http::Method::POST {
        return Ok(reply(405, "text/plain", "POST only\n".into()));
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(400, "text/plain", "request too large\n".into())),
    };
    let request = match AddCheckpoint::parse(&body) {
        Ok(r) => r,
        Err(refusal) => return Ok(refused(&refusal)),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let mut state = witness.state.lock().await;
    let mut next = state.clone();
    match next.add_checkpoint(&witness.logs, &witness.cosigner, &request, now) {
        Ok(line) => {
            if let Err(e) = persist(&witness.state_path, &next) {
                tracing::error!(error = %e, "witness state not saved; not cosigning");
                return Ok(reply(500, "text/plain", "state not saved\n".into()));
            }
            *state = next;
            tracing::info!(
                origin = %request.checkpoint.origin,
                size = request.checkpoint.tree_size,
                "cosigned"
            );
            Ok(reply(200, "text/plain", line))
        }
        Err(refusal) => {
            tracing::warn!(origin = %request.checkpoint.origin, size = request.checkpoint.tree_size, reason = %refusal, "refused a checkpoint");
            Ok(refused(&refusal))
        }
    }
}

fn refused(refusal: &Refusal) -> Response<Full<Bytes>> {
    let content_type = match refusal {
        Refusal::OldSizeMismatch { .. } | Refusal::Rollback { .. } => "text/x.tlog.size",
        _ => "text/plain",
    };
    reply(refusal.http_status(), content_type, refusal.body())
}

// ---- the gateway's side ----

/// How long one submission to a witness may take; a witness that does not answer must not hold
/// up checkpointing or shutdown.
const WITNESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One POST, bounded by [`WITNESS_TIMEOUT`]; the status and body of the answer.
async fn post(url: &str, body: Vec<u8>) -> Result<(u16, String), String> {
    tokio::time::timeout(WITNESS_TIMEOUT, post_unbounded(url, body))
        .await
        .map_err(|_| format!("witness {url} did not answer within {WITNESS_TIMEOUT:?}"))?
}

async fn post_unbounded(url: &str, body: Vec<u8>) -> Result<(u16, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("bad witness url {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "witness url {url}: only http:// is supported (use a bastion or proxy for TLS)"
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("witness url {url} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot reach witness {url}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("witness {url}: {e}"))?;
    tokio::spawn(conn);
    let path = format!("{}/add-checkpoint", uri.path().trim_end_matches('/'));
    let req = Request::post(path)
        .header("host", host)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("witness {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| format!("witness {url}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A configured witness and what the gateway knows of it.
pub struct WitnessPeer {
    pub url: String,
    pub key: WitnessKey,
    /// The size this witness last cosigned for us (0 until known; a 409 tells).
    last_size: std::sync::Mutex<u64>,
}

impl WitnessPeer {
    pub fn new(url: String, key: WitnessKey) -> Self {
        WitnessPeer {
            url,
            key,
            last_size: std::sync::Mutex::new(0),
        }
    }

    fn last(&self) -> u64 {
        *self.last_size.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_last(&self, size: u64) {
        *self.last_size.lock().unwrap_or_else(|p| p.into_inner()) = size;
    }
}

/// Submits a new checkpoint to every configured witness, keeps the cosignatures that verify,
/// stores them with the checkpoint, and raises an alert for each witness that refused or could
/// not be reached. Returns how many witnesses cosigned.
pub async fn collect_cosignatures(gw: &Gateway, cp: &SignedCheckpoint) -> usize {
    let mut cosigned = cp.clone();
    let mut count = 0;
    for peer in &gw.witnesses {
        match submit(gw, peer, cp).await {
            Ok(line) => {
                let mut with = cosigned.clone();
                let policy = signaalpoort_core::access_log::TrustPolicy {
                    log_key: gw.signer.verifier_key(),
                    witnesses: vec![peer.key.clone()],
                    quorum: 1,
                };
                let ok = with.add_signature_lines(line.as_bytes()).is_ok()
                    && policy.is_witnessed(&policy.check(&with));
                if ok {
                    cosigned = with;
                    count += 1;
                    peer.set_last(cp.tree_size);
                } else {
                    gw.witness_alert(
                        &peer.key.name,
                        "returned a cosignature that does not verify",
                    )
                    .await;
                }
            }
            Err(why) => gw.witness_alert(&peer.key.name, &why).await,
        }
    }
    if count > 0 {
        if let Err(e) = gw.store.store_cosignatures(&cosigned, count).await {
            tracing::error!(error = %e, "cosignatures not stored");
        }
    }
    gw.metrics.checkpoint_cosigned(count as u64);
    count
}

async fn submit(gw: &Gateway, peer: &WitnessPeer, cp: &SignedCheckpoint) -> Result<String, String> {
    let mut old = peer.last();
    // At most one retry: a 409 names the size the witness holds.
    for _ in 0..2 {
        if old > cp.tree_size {
            return Err(format!(
                "holds a checkpoint of size {old}, larger than ours ({}): our log was rolled back or truncated",
                cp.tree_size
            ));
        }
        let proof = gw
            .store
            .consistency_proof(cp.tree_size, old)
            .await
            .map_err(|e| e.to_string())?;
        let body = AddCheckpoint {
            old_size: old,
            proof,
            checkpoint: cp.clone(),
        }
        .to_body();
        let (status, text) = post(&peer.url, body).await?;
        match status {
            200 => return Ok(text),
            409 => match text.trim().parse::<u64>() {
                Ok(size) if size != old => {
                    old = size;
                    peer.set_last(size);
                }
                _ => return Err(format!("refused (409): {}", text.trim())),
            },
            other => return Err(format!("refused ({other}): {}", text.trim())),
        }
    }
    Err("refused: the size it holds keeps changing".to_owned())
}
