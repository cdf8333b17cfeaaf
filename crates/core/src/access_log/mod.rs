//! The access log: one record per call, chained by SHA-256, and the leaves of an RFC 6962 Merkle
//! tree whose checkpoints are signed notes (c2sp.org/tlog-checkpoint) cosigned by independent
//! witnesses (c2sp.org/tlog-cosignature). Pure: records in, hashes and verdicts out; storage,
//! clocks and the network are the caller's.

pub mod ldv;
mod note;
mod record;
pub mod tree;
mod verify;
pub mod witness;

pub use note::{
    CheckpointSigner, CheckpointVerdict, Cosigner, Ed25519FileSigner, NoteError, SignedCheckpoint,
    TrustPolicy, WitnessKey,
};
pub use record::{chain_hash, AccessRecord, DecisionCode, RecordDraft, RecordError, GENESIS_HASH};
pub use verify::{
    export_lines, retention_object_id, verify_export, verify_inclusion, ChainStart, LogVerifier,
    Problem, ProblemKind, VerifyInput, VerifyReport, RETENTION_ACTION,
};
