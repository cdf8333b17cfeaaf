//! The configuration file (TOML, then the gateway's own validation), through `Config::load` as
//! `serve` calls it. Never panic; a configuration that loads has passed validation.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signaalpoort_server::Config;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
}

fuzz_target!(|input: &[u8]| {
    let path = dir().path().join("signaalpoort.toml");
    std::fs::write(&path, input).expect("write config");
    if let Ok(config) = Config::load(&path) {
        config.validate().expect("a loaded configuration is valid");
        // Relative paths were resolved against the file's directory.
        assert!(config.server.data_dir.is_absolute());
    }
});
