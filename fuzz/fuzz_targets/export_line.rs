//! Export lines: `AccessRecord::from_export_line` (display and CSV) and the offline verifier
//! `verify_export_from` over arbitrary export files. Never panic; a parsed record survives a
//! round trip through its own export line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaalpoort_core::access_log::{export_lines, verify_export_from, AccessRecord, ChainStart};

fuzz_target!(|data: &[u8]| {
    for start in [ChainStart::Genesis, ChainStart::FirstLine] {
        let report = verify_export_from(export_lines(data), &[], &[0u8; 32], start);
        if report.is_ok() {
            assert!(report.first_problem.is_none());
        }
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
