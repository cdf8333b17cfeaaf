//! Certificate → identity: the OIN from the subject `serialNumber` (as PKIoverheid does), the
//! SHA-256 fingerprint and the serial. Knows nothing about TLS.

use x509_parser::prelude::*;

/// What the gateway knows of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The OIN: the subject serialNumber when it is exactly 20 digits.
    pub oin: Option<String>,
    pub fingerprint_sha256: [u8; 32],
    /// Certificate serial, lowercase hex of its DER bytes.
    pub serial_hex: String,
    pub not_after_unix: i64,
    pub subject: String,
}

impl PeerCertificate {
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint_sha256)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("not a parseable X.509 certificate: {0}")]
    Parse(String),
}

/// The X.520 serialNumber attribute, where PKIoverheid puts the OIN.
const SERIAL_NUMBER_OID: &str = "2.5.4.5";

pub fn parse_peer_certificate(der: &[u8]) -> Result<PeerCertificate, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let oin = cert
        .subject()
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == SERIAL_NUMBER_OID)
        .and_then(|a| a.as_str().ok())
        .filter(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned);
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut fingerprint_sha256 = [0u8; 32];
    fingerprint_sha256.copy_from_slice(digest.as_ref());
    Ok(PeerCertificate {
        oin,
        fingerprint_sha256,
        serial_hex: hex::encode(cert.raw_serial()),
        not_after_unix: cert.validity().not_after.timestamp(),
        subject: cert.subject().to_string(),
    })
}
