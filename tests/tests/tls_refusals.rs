//! TLS refusals on the gateway as built: real mutual TLS on loopback with the dev configuration
//! (which uses the dev CA's CRL). Every bad client certificate, every old protocol version and every
//! weak suite is refused in the handshake — nothing reaches the service layer — and each refusal is
//! counted by reason in `signaalpoort_tls_handshake_refusals_total`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(path).expect("read cert");
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .expect("pem certs")
}

fn pem_key(path: &Path) -> PrivateKeyDer<'static> {
    let pem = std::fs::read(path).expect("read key");
    rustls_pemfile::private_key(&mut pem.as_slice())
        .expect("pem key")
        .expect("a key")
}

/// A TLS 1.2/1.3 client trusting the dev CA, presenting `cert` (or none). Whether the gateway
/// took the connection: it answers the HTTP/2 preface with its SETTINGS; a refused handshake
/// ends in an alert or a closed connection instead.
async fn accepted(gw: &Gateway, pki: &Path, cert: Option<(&Path, &Path)>) -> bool {
    signaalpoort_tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(&pki.join("ca.pem")) {
        roots.add(ca).expect("ca");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match cert {
        Some((c, k)) => builder
            .with_client_auth_cert(pem_certs(c), pem_key(k))
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(gw.running.grpc_addr)
        .await
        .expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("name");
    let probe = async {
        let mut tls = connector.connect(name, tcp).await.ok()?;
        tls.write_all(H2_PREFACE).await.ok()?;
        let mut buf = [0u8; 64];
        match tls.read(&mut buf).await {
            Ok(n) if n > 0 => Some(()),
            _ => None,
        }
    };
    tokio::time::timeout(Duration::from_secs(20), probe)
        .await
        .expect("the gateway answers or refuses within 20 s")
        .is_some()
}

fn push_extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend(kind.to_be_bytes());
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
}

/// A ClientHello as an old or badly configured client sends it: `version` as the offered
/// protocol version (no supported_versions extension, so no TLS 1.3), `suites` as offered.
fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(version.to_be_bytes());
    body.extend([7u8; 32]);
    body.push(0);
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]);
    let mut ext = Vec::new();
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend(((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    push_extension(&mut ext, 0x0000, &sni);
    // supported_groups: x25519, secp256r1; ec_point_formats: uncompressed.
    push_extension(&mut ext, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
    push_extension(&mut ext, 0x000b, &[1, 0]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256.
    push_extension(
        &mut ext,
        0x000d,
        &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    );
    // extended_master_secret.
    push_extension(&mut ext, 0x0017, &[]);
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut handshake = vec![1u8];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16];
    // The record layer says TLS 1.0, as real clients do for compatibility.
    record.extend(0x0301u16.to_be_bytes());
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// What the gateway sends back to a raw ClientHello: (record type, first bytes of the payload).
async fn answer_to(gw: &Gateway, hello: &[u8]) -> (u8, Vec<u8>) {
    let mut tcp = TcpStream::connect(gw.running.grpc_addr)
        .await
        .expect("tcp connect");
    tcp.write_all(hello).await.expect("send hello");
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 512];
        while buf.len() < 7 {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an answer within 20 s");
    assert!(buf.len() >= 7, "no TLS record came back: {buf:?}");
    (buf[0], buf[5..7].to_vec())
}

const ALERT: u8 = 0x15;
const HANDSHAKE: u8 = 0x16;
const ALERT_HANDSHAKE_FAILURE: u8 = 40;
const ALERT_PROTOCOL_VERSION: u8 = 70;

/// The refusal counters from /metrics: reason → count.
async fn refusals(gw: &Gateway) -> std::collections::BTreeMap<String, u64> {
    let addr = gw.running.admin_addr.expect("admin listener");
    let mut stream = TcpStream::connect(addr).await.expect("admin connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("read");
    body.lines()
        .filter_map(|l| l.strip_prefix("signaalpoort_tls_handshake_refusals_total{reason=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(reason, n)| (reason.to_owned(), n.trim().parse().expect("count")))
        .collect()
}

/// Waits until the refusal counted on the handshake's task shows (it is counted just after the
/// alert is sent, so the client can see the alert first).
async fn wait_for_count(gw: &Gateway, reason: &str, expected: u64) {
    let wait = async {
        loop {
            let counts = refusals(gw).await;
            if counts.get(reason) == Some(&expected) {
                return;
            }
            assert!(
                counts.get(reason).copied().unwrap_or(0) <= expected,
                "{reason}: more refusals than attempts: {counts:?}"
            );
            // Polling an endpoint for a condition, not waiting out a guess.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .is_err()
    {
        panic!(
            "{reason} not counted {expected} time(s): {:?}",
            refusals(gw).await
        );
    }
}

async fn every_bad_client_certificate_is_refused_in_the_handshake_and_counted(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let pki = env.pki();
    let neg = pki.join("negative");
    let before = refusals(&gw).await;
    assert!(
        before.values().all(|n| *n == 0) && before.len() >= 12,
        "every reason is exported from the start, at zero: {before:?}"
    );

    // The control: an agency's own certificate is taken.
    let own = (
        pki.join("agencies").join(format!("{WIJ}.pem")),
        pki.join("agencies").join(format!("{WIJ}.key")),
    );
    assert!(accepted(&gw, &pki, Some((&own.0, &own.1))).await);

    assert!(!accepted(&gw, &pki, None).await, "no client certificate");
    wait_for_count(&gw, "no_client_certificate", 1).await;
    for (fixture, reason) in [
        ("foreign-client", "unknown_issuer"),
        ("expired-client", "expired"),
        ("not-yet-valid-client", "not_yet_valid"),
        ("server-auth-only-client", "wrong_key_usage"),
        ("revoked-client", "revoked"),
    ] {
        let cert = neg.join(format!("{fixture}.pem"));
        let key = neg.join(format!("{fixture}.key"));
        assert!(
            !accepted(&gw, &pki, Some((&cert, &key))).await,
            "{fixture} was accepted"
        );
        wait_for_count(&gw, reason, 1).await;
    }
    // None of them reached the service layer.
    assert_eq!(gw.log_len().await, 0);
    gw.stop().await;
}

async fn old_protocol_versions_and_weak_suites_are_refused_and_counted(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    // The control: the same hand-made hello with a modern suite gets a ServerHello.
    const ECDHE_ECDSA_AES128_GCM_SHA256: u16 = 0xc02b;
    let (kind, _) = answer_to(&gw, &client_hello(0x0303, &[ECDHE_ECDSA_AES128_GCM_SHA256])).await;
    assert_eq!(
        kind, HANDSHAKE,
        "a modern TLS 1.2 hello is answered with a ServerHello"
    );

    let modern_and_old = [ECDHE_ECDSA_AES128_GCM_SHA256, 0xc02f, 0xc009, 0x002f];
    for (version, name) in [(0x0301u16, "TLS 1.0"), (0x0302, "TLS 1.1")] {
        let (kind, alert) = answer_to(&gw, &client_hello(version, &modern_and_old)).await;
        assert_eq!(kind, ALERT, "{name} is refused with an alert");
        assert_eq!(
            alert,
            vec![2, ALERT_PROTOCOL_VERSION],
            "{name}: fatal protocol_version"
        );
    }
    wait_for_count(&gw, "protocol_version", 2).await;

    // TLS 1.2 offering only what the gateway does not accept.
    let weak: &[(&str, &[u16])] = &[
        // CBC: RSA and ECDHE, SHA-1 and SHA-256 MACs, and 3DES.
        (
            "CBC",
            &[
                0x002f, 0x0035, 0x003c, 0xc009, 0xc00a, 0xc013, 0xc014, 0xc023, 0xc027, 0x000a,
            ],
        ),
        // NULL encryption.
        ("NULL", &[0x0001, 0x0002, 0x003b, 0xc006, 0xc010]),
        // RSA key exchange (no forward secrecy), even with GCM.
        ("RSA key exchange", &[0x009c, 0x009d]),
    ];
    for (what, suites) in weak {
        let (kind, alert) = answer_to(&gw, &client_hello(0x0303, suites)).await;
        assert_eq!(kind, ALERT, "{what} suites are refused with an alert");
        assert_eq!(
            alert,
            vec![2, ALERT_HANDSHAKE_FAILURE],
            "{what}: fatal handshake_failure"
        );
    }
    wait_for_count(&gw, "no_common_cipher_suite", 3).await;
    assert_eq!(gw.log_len().await, 0);
    gw.stop().await;
}

both_backends!(
    every_bad_client_certificate_is_refused_in_the_handshake_and_counted,
    old_protocol_versions_and_weak_suites_are_refused_and_counted,
);
