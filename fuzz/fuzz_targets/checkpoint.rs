//! Checkpoint parsing as `audit verify` and a witness read it: a c2sp.org/tlog-checkpoint in a
//! signed note, witness keys, and cosignature lines added to a note. Never panic; what parses
//! re-serialises to a note that parses to the same checkpoint, and checking it under a policy
//! is an answer, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaalpoort_core::access_log::{SignedCheckpoint, TrustPolicy, WitnessKey};

fuzz_target!(|input: &[u8]| {
    if let Ok(cp) = SignedCheckpoint::parse(input) {
        let again = SignedCheckpoint::parse(cp.to_bytes()).expect("own note parses");
        assert_eq!(again, cp);
        let policy = TrustPolicy {
            log_key: "example.com/log+5f3c2b1a+AXKlIlPGAkJSxnVKkqIMnwSmAZvXmYI2wVtwwG4DHsEz".into(),
            witnesses: Vec::new(),
            quorum: 0,
        };
        let _ = policy.check(&cp);
        let mut more = cp.clone();
        // The input's own signature lines, added again, leave a parseable note.
        let lines = cp.signature_lines().join("\n");
        if more.add_signature_lines(lines.as_bytes()).is_ok() {
            SignedCheckpoint::parse(more.to_bytes()).expect("note with added lines parses");
        }
    }
    if let Ok(text) = std::str::from_utf8(input) {
        if let Ok(key) = WitnessKey::parse(text) {
            assert_eq!(WitnessKey::parse(&key.verifier_key()).ok(), Some(key));
        }
    }
});
