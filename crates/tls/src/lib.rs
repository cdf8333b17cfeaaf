//! Transport identity for Signaalpoort: mutual TLS with rustls, reloadable certificates and CRLs,
//! the peer certificate turned into an OIN, and the development PKI. No gRPC service logic and no
//! database here; the gateway reads [`TlsConnectInfo`] from each request's extensions.

pub mod devpki;
pub mod identity;
pub mod refusal;
pub mod server;

pub use identity::{parse_peer_certificate, IdentityError, PeerCertificate};
pub use refusal::HandshakeRefusal;
pub use server::{
    install_crypto_provider, spawn_reload_watcher, tls_incoming, tls_incoming_observed,
    RefusalHook, ReloadableTls, TlsConnectInfo, TlsConnection, TlsError, TlsFiles,
};
