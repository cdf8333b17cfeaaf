//! The public contract, `signaalpoort.v1`, as Rust types. Generated from `proto/` at build time;
//! the only crate in the workspace that knows protobuf.

pub mod codec;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("signaalpoort.v1");
}

/// Encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("signaalpoort_descriptor");
