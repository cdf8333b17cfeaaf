//! Checkpoint parsing as `audit verify` reads it: the signed note and its JSON envelope. Never
//! panic; what parses re-serialises to a note that parses to the same checkpoint.
//! (This is today's note format; the C2SP signed-note parsers get targets of their own.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaalpoort_core::access_log::{CheckpointBody, SignedCheckpoint};

fuzz_target!(|input: &str| {
    if let Ok(body) = CheckpointBody::parse_note(input) {
        let again = CheckpointBody::parse_note(&body.note()).expect("own note parses");
        assert_eq!(again, body);
    }
    if let Ok(signed) = SignedCheckpoint::from_json(input) {
        let again = SignedCheckpoint::from_json(&signed.to_json()).expect("own json parses");
        assert_eq!(again, signed);
        // Verification of arbitrary keys and signatures is an answer, never a panic.
        let _ = signed.verify(&[7u8; 32]);
        let _ = signed.verify(&signed.signature);
    }
});
