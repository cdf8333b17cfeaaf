use ring::digest;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Basis, Purpose, Role};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The policy's verdict as logged: `allow` when a rule allowed the call (even if it then failed,
/// e.g. NOT_FOUND), `deny` when the policy or input validation refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionCode {
    Allow,
    Deny,
}

impl DecisionCode {
    pub fn code(self) -> &'static str {
        match self {
            DecisionCode::Allow => "allow",
            DecisionCode::Deny => "deny",
        }
    }
    pub fn from_code(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(DecisionCode::Allow),
            "deny" => Some(DecisionCode::Deny),
            _ => None,
        }
    }
}

/// Everything the server knows about a call when it asks for it to be logged. Field names follow
/// NEN 7513: event (action), time, subject, user (actor) and responsible party (agency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordDraft {
    #[serde(with = "time::serde::timestamp::microseconds")]
    pub time: OffsetDateTime,
    /// OIN from the client certificate; empty when the certificate had none.
    pub agency_oin: String,
    /// Role from the registry; `None` for an unknown agency.
    pub role: Option<Role>,
    /// As sent in `x-actor-id`, when valid; empty otherwise.
    pub actor_id: String,
    /// The RPC name.
    pub action: String,
    /// Subject pseudonyms (hex), sorted, never a BSN.
    pub subjects: Vec<String>,
    pub household_id: String,
    pub purpose: Option<Purpose>,
    pub basis: Option<Basis>,
    pub decision: DecisionCode,
    /// The allowing rule, or the deny reason / error code (UPPER_SNAKE).
    pub reason: String,
    /// Final gRPC status code of the call.
    pub status_code: i32,
    pub request_id: String,
    /// SHA-256 of the client certificate, hex.
    pub cert_fingerprint: String,
    /// Only on safety-basis calls: the one free text of the system, kept only here.
    pub justification: String,
    pub flagged_for_review: bool,
    pub trace_id: String,
    pub span_id: String,
    /// Id of the object the call was about (signal, consent, household), when any.
    pub object_id: String,
}

/// A committed record: the draft, its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    pub seq: u64,
    pub prev_hash: [u8; 32],
    pub draft: RecordDraft,
    pub hash: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The canonical form: a JSON object with a fixed field order and no whitespace. `v`, `seq` and
/// `prev` come first so a verifier can read them at fixed offsets without a JSON parser.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u8,
    seq: u64,
    prev: String,
    #[serde(flatten)]
    draft: &'a RecordDraft,
}

impl AccessRecord {
    /// Places a draft after `prev` in the chain.
    pub fn chain(seq: u64, prev_hash: [u8; 32], draft: RecordDraft) -> Result<Self, RecordError> {
        let bytes = canonical_bytes(seq, &prev_hash, &draft)?;
        Ok(AccessRecord {
            seq,
            prev_hash,
            hash: chain_hash(&bytes),
            draft,
        })
    }

    /// The exact bytes that were hashed.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, RecordError> {
        canonical_bytes(self.seq, &self.prev_hash, &self.draft)
    }

    /// Whether the stored hash matches the fields as they are now.
    pub fn hash_is_intact(&self) -> bool {
        self.canonical_bytes()
            .map(|b| chain_hash(&b) == self.hash)
            .unwrap_or(false)
    }

    /// One line of an export: `{"record":<canonical>,"hash":"<64 hex>"}`.
    pub fn export_line(&self) -> Result<String, RecordError> {
        let body = String::from_utf8(self.canonical_bytes()?).unwrap_or_default();
        Ok(format!(
            "{{\"record\":{body},\"hash\":\"{}\"}}",
            hex::encode(self.hash)
        ))
    }

    /// Parses an export line back into a record (for display and the CSV export). Does not check
    /// the hash: that is [`super::verify_export`]'s job.
    pub fn from_export_line(line: &str) -> Option<Self> {
        // Not `#[serde(flatten)]`: flattening buffers numbers in a way that loses the i128 the
        // microsecond timestamps deserialize from.
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let hash_hex = value.get("hash")?.as_str()?;
        let mut record = value.get("record")?.as_object()?.clone();
        let seq = record.remove("seq")?.as_u64()?;
        let prev = record.remove("prev")?;
        record.remove("v");
        let draft: RecordDraft = serde_json::from_value(serde_json::Value::Object(record)).ok()?;
        let mut prev_hash = [0u8; 32];
        hex::decode_to_slice(prev.as_str()?, &mut prev_hash).ok()?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hash_hex, &mut hash).ok()?;
        Some(AccessRecord {
            seq,
            prev_hash,
            draft,
            hash,
        })
    }
}

fn canonical_bytes(seq: u64, prev: &[u8; 32], draft: &RecordDraft) -> Result<Vec<u8>, RecordError> {
    Ok(serde_json::to_vec(&Canonical {
        v: 1,
        seq,
        prev: hex::encode(prev),
        draft,
    })?)
}

/// SHA-256 of a record's canonical bytes (which include the previous hash).
pub fn chain_hash(canonical: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, canonical);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
