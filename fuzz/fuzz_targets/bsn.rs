//! `Bsn::parse` (the elfproef) and `complete_bsn`: never panic, and agree with each other.
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaalpoort_core::{complete_bsn, Bsn};

fuzz_target!(|input: &str| {
    let parsed = Bsn::parse(input);
    if parsed.is_ok() {
        assert!(input.len() == 9 && input.bytes().all(|b| b.is_ascii_digit()));
        // The check digit of a valid BSN is the one complete_bsn computes.
        assert_eq!(complete_bsn(&input[..8]).as_deref(), Some(input));
    }
    if let Some(full) = complete_bsn(input) {
        assert!(
            Bsn::parse(&full).is_ok(),
            "complete_bsn made an invalid BSN"
        );
        assert_eq!(&full[..8], input);
    }
});
