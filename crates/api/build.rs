//! Compiles proto/ with protox (pure Rust), so no system protoc is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "signaalpoort/v1/common.proto",
        "signaalpoort/v1/signals.proto",
        "signaalpoort/v1/households.proto",
        "signaalpoort/v1/notifications.proto",
        "signaalpoort/v1/consent.proto",
        "signaalpoort/v1/audit.proto",
        "signaalpoort/v1/coordination.proto",
    ];
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let fds = protox::compile(files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("signaalpoort_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable request bodies are the caller's mistake (INVALID_ARGUMENT), not INTERNAL.
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
