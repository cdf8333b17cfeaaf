//! The access log: one record per call, chained by SHA-256, with Ed25519-signed checkpoints over the
//! chain head. Pure: records in, hashes and verdicts out; storage and clocks are the caller's.

mod checkpoint;
pub mod ldv;
mod record;
mod verify;

pub use checkpoint::{CheckpointBody, CheckpointError, CheckpointSigner, SignedCheckpoint};
pub use record::{chain_hash, AccessRecord, DecisionCode, RecordDraft, RecordError, GENESIS_HASH};
pub use verify::{
    export_lines, verify_export, verify_export_from, ChainStart, Problem, ProblemKind, VerifyReport,
};
