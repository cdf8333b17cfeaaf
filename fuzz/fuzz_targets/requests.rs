//! Every request type through its real handler (validation, identity, policy, the store) on a
//! live gateway, as tonic calls it after decoding: no panic, never INTERNAL or UNKNOWN, and
//! INVALID_ARGUMENT always names its fields.
//!
//! Input: `[method, agency, actor, protobuf body...]` (see `signaalpoort_fuzz::Input`); the seed
//! corpus in `fuzz/corpus/requests` holds a well-formed request per method and agency, which
//! libFuzzer then mutates. `SIGNAALPOORT_FUZZ_WRITE_SEEDS=<dir>` writes that corpus and exits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaalpoort_fuzz::{check, dispatch, harness, seeds, Input};

fn write_seeds_if_asked() {
    if let Ok(dir) = std::env::var("SIGNAALPOORT_FUZZ_WRITE_SEEDS") {
        std::fs::create_dir_all(&dir).expect("seed dir");
        for (name, bytes) in seeds() {
            std::fs::write(std::path::Path::new(&dir).join(name), bytes).expect("write seed");
        }
        std::process::exit(0);
    }
}

fuzz_target!(init: write_seeds_if_asked(), |data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let h = harness();
    if let Some(Err(status)) = h.runtime.block_on(dispatch(&h.gateway, &input)) {
        check(&status);
    }
});
