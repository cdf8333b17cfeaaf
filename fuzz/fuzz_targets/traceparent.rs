//! The W3C `traceparent` header parser: a trace id comes out only as 32 lowercase hex digits, not
//! all zero; anything else starts a new trace.
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaalpoort_server::call::parse_traceparent;

fuzz_target!(|input: &str| {
    if let Some(id) = parse_traceparent(input) {
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(id, "0".repeat(32));
    }
});
