//! Export lines: `AccessRecord::from_export_line` (display and CSV) and the verifier
//! `verify_export` (chain, Merkle tree, checkpoints) over arbitrary export files. Never panic; a
//! parsed record survives a round trip through its own export line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaalpoort_core::access_log::{
    export_lines, verify_export, AccessRecord, ChainStart, TrustPolicy, VerifyInput,
};

fuzz_target!(|data: &[u8]| {
    let policy = TrustPolicy {
        log_key: "example.com/log+5f3c2b1a+AXKlIlPGAkJSxnVKkqIMnwSmAZvXmYI2wVtwwG4DHsEz".into(),
        witnesses: Vec::new(),
        quorum: 0,
    };
    let report = verify_export(
        export_lines(data),
        &VerifyInput {
            policy: &policy,
            checkpoints: &[],
            trusted: None,
            start: ChainStart::Genesis,
        },
    );
    // Nothing vouches for records without a checkpoint.
    if report.records > 0 {
        assert!(!report.is_ok());
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Some(record) = AccessRecord::from_export_line(line) {
            if let Ok(again) = record.export_line() {
                let back = AccessRecord::from_export_line(&again).expect("own export line parses");
                assert_eq!(back.seq, record.seq);
                assert_eq!(back.hash, record.hash);
                assert_eq!(back.prev_hash, record.prev_hash);
                assert_eq!(back.export_line().ok(), Some(again));
            }
        }
    }
});
