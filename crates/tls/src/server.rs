//! The server side of mutual TLS, served over our own acceptor rather than tonic's built-in TLS:
//! that gives CRLs, hot reload, TCP_NODELAY, concurrent handshakes with a timeout, and the peer
//! certificate for the identity layer.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use x509_parser::prelude::*;

use crate::identity::{parse_peer_certificate, PeerCertificate};
use crate::refusal::HandshakeRefusal;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("tls configuration: {0}")]
    Config(String),
    #[error("cannot watch certificate files: {0}")]
    Watch(String),
}

/// Where the server's TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (leaf first, then intermediates), PEM.
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    /// CA certificate(s) client certificates must chain to, PEM.
    pub client_ca: PathBuf,
    /// Certificate revocation lists, PEM.
    pub crls: Vec<PathBuf>,
}

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

struct Loaded {
    config: Arc<ServerConfig>,
    revoked: HashSet<String>,
    server_not_after: i64,
    ca_not_after: i64,
}

/// The current TLS configuration, swapped atomically on reload.
pub struct ReloadableTls {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ReloadableTls {
    pub fn load(files: TlsFiles) -> Result<ReloadableTls, TlsError> {
        let loaded = load(&files)?;
        Ok(ReloadableTls {
            files,
            current: RwLock::new(Arc::new(loaded)),
            generation: watch::channel(0).0,
        })
    }

    /// Re-reads every file and validates it fully; keeps the old configuration on any error.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn current_config(&self) -> Arc<ServerConfig> {
        self.loaded().config.clone()
    }

    /// Whether a certificate serial (hex) is on the current CRLs — checked per call, so a CRL
    /// update also affects connections opened before it.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        self.loaded().revoked.contains(serial_hex)
    }

    pub fn server_cert_not_after_unix(&self) -> i64 {
        self.loaded().server_not_after
    }

    pub fn client_ca_not_after_unix(&self) -> i64 {
        self.loaded().ca_not_after
    }

    /// Bumped on every successful reload; tests wait on it instead of sleeping.
    pub fn reload_events(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "contains no certificate"));
    }
    Ok(certs)
}

fn not_after(path: &Path, der: &CertificateDer<'_>) -> Result<i64, TlsError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| invalid(path, format!("unparseable certificate: {e}")))?;
    Ok(cert.validity().not_after.timestamp())
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert_chain)?;
    let server_not_after = not_after(&files.cert_chain, &chain[0])?;
    let key_pem = read(&files.private_key)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| invalid(&files.private_key, format!("not a PEM private key: {e}")))?
        .ok_or_else(|| invalid(&files.private_key, "contains no private key"))?;

    let ca_certs = certs(&files.client_ca)?;
    let ca_not_after = ca_certs
        .iter()
        .map(|c| not_after(&files.client_ca, c))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .min()
        .unwrap_or(0);
    let mut roots = RootCertStore::empty();
    for ca in ca_certs {
        roots.add(ca).map_err(|e| {
            invalid(
                &files.client_ca,
                format!("not a usable CA certificate: {e}"),
            )
        })?;
    }

    let mut crls = Vec::new();
    let mut revoked = HashSet::new();
    for path in &files.crls {
        let pem = read(path)?;
        for crl in rustls_pemfile::crls(&mut pem.as_slice()) {
            let crl: CertificateRevocationListDer<'static> =
                crl.map_err(|e| invalid(path, format!("not a PEM CRL: {e}")))?;
            let (_, parsed) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(&crl)
                    .map_err(|e| invalid(path, format!("unparseable CRL: {e}")))?;
            revoked.extend(
                parsed
                    .iter_revoked_certificates()
                    .map(|r| hex::encode(r.raw_serial())),
            );
            crls.push(crl);
        }
    }

    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crls.is_empty() {
        // An expired CRL is an error, not silently accepted (rustls accepts it by default).
        verifier = verifier.with_crls(crls).enforce_revocation_expiration();
    }
    let verifier = verifier
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            invalid(
                &files.private_key,
                format!("does not match the certificate or is unusable: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        revoked,
        server_not_after,
        ca_not_after,
    })
}

/// Who is on the other end of a connection; tonic puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote_addr: Option<std::net::SocketAddr>,
    pub peer: Option<Arc<PeerCertificate>>,
}

/// A TLS connection whose handshake has completed.
pub struct TlsConnection {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;
    fn connect_info(&self) -> TlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Told of every refused handshake (for metrics); called on the handshake's own task.
pub type RefusalHook = Arc<dyn Fn(HandshakeRefusal) + Send + Sync>;

/// [`tls_incoming_observed`] without anyone counting the refusals.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    handshake_timeout: Duration,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    tls_incoming_observed(listener, tls, handshake_timeout, Arc::new(|_| {}))
}

/// Accepts TCP connections and completes TLS handshakes concurrently (one silent client cannot
/// stall the others), each within `handshake_timeout`, with the configuration current at accept
/// time. Failed handshakes are logged, handed to `on_refused` with their reason, and dropped,
/// never yielded, so they cannot end the server.
pub fn tls_incoming_observed(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    handshake_timeout: Duration,
    on_refused: RefusalHook,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small RPCs otherwise wait on Nagle's algorithm (~40 ms).
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current_config());
            let tx = tx.clone();
            let on_refused = on_refused.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|der| parse_peer_certificate(der).ok())
                            .map(Arc::new);
                        let info = TlsConnectInfo {
                            remote_addr: Some(addr),
                            peer,
                        };
                        let _ = tx
                            .send(Ok(TlsConnection {
                                inner: stream,
                                info,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => {
                        let refusal = HandshakeRefusal::of(&e);
                        tracing::debug!(%addr, error = %e, reason = refusal.reason(), "tls handshake refused");
                        on_refused(refusal);
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "tls handshake timed out");
                        on_refused(HandshakeRefusal::Timeout);
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Reloads the TLS material when a file in its directories changes (Kubernetes swaps a `..data`
/// symlink, so directories are watched, not files) or on SIGHUP. Changes are debounced; a new set
/// that fails validation is logged and the old one kept.
pub fn spawn_reload_watcher(
    tls: Arc<ReloadableTls>,
    files: &TlsFiles,
    debounce: Duration,
) -> Result<tokio::task::JoinHandle<()>, TlsError> {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| TlsError::Watch(e.to_string()))?;
    let mut dirs: Vec<PathBuf> = [&files.cert_chain, &files.private_key, &files.client_ca]
        .into_iter()
        .chain(files.crls.iter())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| TlsError::Watch(format!("{}: {e}", dir.display())))?;
    }
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let trigger = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let trigger = std::future::pending::<Option<()>>();
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = trigger => {}
            }
            tokio::time::sleep(debounce).await;
            while rx.try_recv().is_ok() {}
            match tls.reload() {
                Ok(()) => tracing::info!("tls certificates and crls reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "tls reload failed; keeping the previous certificates")
                }
            }
        }
    }))
}
