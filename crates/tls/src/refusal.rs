//! Why a TLS handshake was refused, as a small closed set an operator can count and alert on
//! (`signaalpoort_tls_handshake_refusals_total{reason}`): the certificate problems mutual TLS
//! exists to catch, old protocol versions and weak suites, and the rest.

use std::io;

use rustls::{CertificateError, PeerIncompatible};

/// The reason of one refused handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeRefusal {
    /// The client sent no certificate.
    NoClientCertificate,
    /// The certificate does not chain to the configured client CA (a foreign CA, self-signed).
    UnknownIssuer,
    Expired,
    NotYetValid,
    /// The certificate is not for client authentication (extended key usage).
    WrongKeyUsage,
    /// On a configured CRL.
    Revoked,
    /// Any other certificate problem (bad encoding, bad signature, CRL problems).
    BadCertificate,
    /// TLS 1.1 or older.
    ProtocolVersion,
    /// Only suites the gateway does not accept (CBC, NULL, RSA key exchange, ...).
    NoCommonCipherSuite,
    /// Other incompatibilities (groups, signature schemes, extensions).
    Incompatible,
    /// Not TLS at all, or a malformed handshake message.
    Malformed,
    /// The handshake did not finish within `server.handshake_timeout_secs`.
    Timeout,
    /// The connection failed (reset, closed) or anything else.
    Other,
}

impl HandshakeRefusal {
    /// Every reason, for metrics that show zeroes rather than absent series.
    pub const ALL: [HandshakeRefusal; 13] = [
        HandshakeRefusal::NoClientCertificate,
        HandshakeRefusal::UnknownIssuer,
        HandshakeRefusal::Expired,
        HandshakeRefusal::NotYetValid,
        HandshakeRefusal::WrongKeyUsage,
        HandshakeRefusal::Revoked,
        HandshakeRefusal::BadCertificate,
        HandshakeRefusal::ProtocolVersion,
        HandshakeRefusal::NoCommonCipherSuite,
        HandshakeRefusal::Incompatible,
        HandshakeRefusal::Malformed,
        HandshakeRefusal::Timeout,
        HandshakeRefusal::Other,
    ];

    /// The label value.
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeRefusal::NoClientCertificate => "no_client_certificate",
            HandshakeRefusal::UnknownIssuer => "unknown_issuer",
            HandshakeRefusal::Expired => "expired",
            HandshakeRefusal::NotYetValid => "not_yet_valid",
            HandshakeRefusal::WrongKeyUsage => "wrong_key_usage",
            HandshakeRefusal::Revoked => "revoked",
            HandshakeRefusal::BadCertificate => "bad_certificate",
            HandshakeRefusal::ProtocolVersion => "protocol_version",
            HandshakeRefusal::NoCommonCipherSuite => "no_common_cipher_suite",
            HandshakeRefusal::Incompatible => "incompatible",
            HandshakeRefusal::Malformed => "malformed",
            HandshakeRefusal::Timeout => "timeout",
            HandshakeRefusal::Other => "other",
        }
    }

    /// Classifies the error tokio-rustls returns from a failed accept.
    pub fn of(error: &io::Error) -> HandshakeRefusal {
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return HandshakeRefusal::Other;
        };
        match tls {
            rustls::Error::NoCertificatesPresented => HandshakeRefusal::NoClientCertificate,
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => HandshakeRefusal::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    HandshakeRefusal::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    HandshakeRefusal::NotYetValid
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => HandshakeRefusal::WrongKeyUsage,
                CertificateError::Revoked => HandshakeRefusal::Revoked,
                _ => HandshakeRefusal::BadCertificate,
            },
            rustls::Error::PeerIncompatible(p) => match p {
                PeerIncompatible::NoCipherSuitesInCommon => HandshakeRefusal::NoCommonCipherSuite,
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::ServerDoesNotSupportTls12Or13 => {
                    HandshakeRefusal::ProtocolVersion
                }
                _ => HandshakeRefusal::Incompatible,
            },
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::InappropriateMessage { .. } => HandshakeRefusal::Malformed,
            _ => HandshakeRefusal::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn rustls_errors_map_to_their_reasons() {
        let cases = [
            (
                rustls::Error::NoCertificatesPresented,
                "no_client_certificate",
            ),
            (CertificateError::UnknownIssuer.into(), "unknown_issuer"),
            (CertificateError::Expired.into(), "expired"),
            (CertificateError::NotValidYet.into(), "not_yet_valid"),
            (CertificateError::InvalidPurpose.into(), "wrong_key_usage"),
            (CertificateError::Revoked.into(), "revoked"),
            (CertificateError::BadSignature.into(), "bad_certificate"),
            (PeerIncompatible::Tls12NotOffered.into(), "protocol_version"),
            (
                PeerIncompatible::NoCipherSuitesInCommon.into(),
                "no_common_cipher_suite",
            ),
            (PeerIncompatible::NoKxGroupsInCommon.into(), "incompatible"),
        ];
        for (error, reason) in cases {
            assert_eq!(HandshakeRefusal::of(&wrap(error)).reason(), reason);
        }
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(HandshakeRefusal::of(&reset), HandshakeRefusal::Other);
        let mut seen = std::collections::HashSet::new();
        assert!(HandshakeRefusal::ALL
            .iter()
            .all(|r| seen.insert(r.reason())));
    }
}
