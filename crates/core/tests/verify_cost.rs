//! Issue 14's cost bound for verification: `audit verify` (chain, Merkle tree, checkpoint) over
//! many records stays at ≥ 50% of raw SHA-256 over the same canonical bytes. A measurement, so
//! it runs only when asked, in release:
//! `cargo test --release -p signaalpoort-core --test verify_cost -- --ignored --nocapture`

use std::time::Instant;

use signaalpoort_core::access_log::tree::Frontier;
use signaalpoort_core::access_log::{
    export_lines, verify_export, AccessRecord, ChainStart, CheckpointSigner, DecisionCode,
    Ed25519FileSigner, RecordDraft, TrustPolicy, VerifyInput, GENESIS_HASH,
};

#[test]
#[ignore = "a measurement; run in release"]
fn verify_keeps_half_the_speed_of_raw_sha256() {
    let records = 300_000u64;
    let mut prev = GENESIS_HASH;
    let mut lines = Vec::new();
    let mut canonical = Vec::new();
    let mut tree = Frontier::new();
    for seq in 1..=records {
        let draft = RecordDraft {
            time: time::OffsetDateTime::from_unix_timestamp(1_770_000_000 + seq as i64).unwrap(),
            agency_oin: "00000099000000000002".into(),
            role: Some(signaalpoort_core::Role::Wij),
            actor_id: "wij-oost-042".into(),
            action: "QueryInvolvement".into(),
            subjects: vec![format!("{:064x}", seq), format!("{:064x}", seq * 7)],
            household_id: String::new(),
            purpose: Some(signaalpoort_core::Purpose::CareCoordination),
            basis: Some(signaalpoort_core::Basis::Consent),
            decision: DecisionCode::Allow,
            reason: "CONSENT_SHARING".into(),
            status_code: 0,
            request_id: String::new(),
            cert_fingerprint: format!("{:064x}", seq * 13),
            justification: String::new(),
            flagged_for_review: false,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            object_id: "3f2c1a8e-5d7b-4c1e-9a0b-1d2e3f4a5b6c".into(),
        };
        let r = AccessRecord::chain(seq, prev, draft).unwrap();
        prev = r.hash;
        tree.append(&r.hash);
        canonical.push(r.canonical_bytes().unwrap());
        lines.extend_from_slice(r.export_line().unwrap().as_bytes());
        lines.push(b'\n');
    }
    let signer = Ed25519FileSigner::from_pkcs8(
        "bench.example/log",
        &Ed25519FileSigner::generate_pkcs8().unwrap(),
    )
    .unwrap();
    let signer: &dyn CheckpointSigner = &signer;
    let checkpoint = signer.sign_checkpoint(tree.size(), &tree.root()).unwrap();
    let policy = TrustPolicy {
        log_key: signer.verifier_key(),
        witnesses: Vec::new(),
        quorum: 0,
    };
    let t0 = Instant::now();
    let mut sink = 0u8;
    for c in &canonical {
        sink ^= ring::digest::digest(&ring::digest::SHA256, c).as_ref()[0];
    }
    let raw = t0.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    let t0 = Instant::now();
    let report = verify_export(
        export_lines(&lines),
        &VerifyInput {
            policy: &policy,
            checkpoints: std::slice::from_ref(&checkpoint),
            trusted: None,
            start: ChainStart::Genesis,
        },
    );
    let verify = t0.elapsed().as_secs_f64();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.covered_through(), records);
    let ratio = raw / verify;
    println!(
        "{records} records, {} bytes: raw SHA-256 {:.0} records/s, verify {:.0} records/s, ratio {ratio:.2}",
        lines.len(),
        records as f64 / raw,
        records as f64 / verify
    );
    assert!(ratio >= 0.5, "verify is {ratio:.2} of raw SHA-256");
}
