//! A witness (c2sp.org/tlog-witness `add-checkpoint`), as pure logic: parse the request, check
//! the log's signature, the old size against what this witness last cosigned, the consistency
//! proof, and answer with a `cosignature/v1` line. Persisting the new state atomically with the
//! check, and the HTTP around it, are the caller's (`signaalpoort witness`).

use std::collections::BTreeMap;

use base64::Engine;

use super::note::{Cosigner, SignedCheckpoint, TrustPolicy};
use super::tree::{self, NodeHash};

/// At most this many consistency-proof lines (c2sp.org/tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;
/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A parsed `add-checkpoint` request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<NodeHash>,
    pub checkpoint: SignedCheckpoint,
}

impl AddCheckpoint {
    /// The request body: `old N`, proof lines, a blank line, the signed note.
    pub fn to_body(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(h)
                    .as_bytes(),
            );
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(self.checkpoint.to_bytes());
        out
    }

    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let bad = |why: &str| Refusal::BadRequest(why.to_owned());
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad("request too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
        let (control, note) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = control.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or_else(|| bad("first line must be `old <size>`"))?;
        let old_size: u64 = old.parse().map_err(|_| bad("bad old size"))?;
        if old_size.to_string() != old {
            return Err(bad("old size must be decimal without leading zeros"));
        }
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 proof lines"));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| bad("proof line is not base64"))?;
            proof.push(
                raw.try_into()
                    .map_err(|_| bad("proof line is not a 32-byte hash"))?,
            );
        }
        let checkpoint = SignedCheckpoint::parse(note.as_bytes())
            .map_err(|e| bad(&format!("checkpoint: {e}")))?;
        Ok(AddCheckpoint {
            old_size,
            proof,
            checkpoint,
        })
    }
}

/// Why a witness refuses; each maps to the HTTP status the protocol prescribes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unknown log origin {0:?}")]
    UnknownLog(String),
    #[error("no valid signature from the log's key")]
    NotSignedByLog,
    /// The old size is not what this witness last cosigned (a rollback, or a log that skipped
    /// ahead without a proof from what the witness saw); the body names the witness's size.
    #[error("old size {claimed} is not the size {latest} this witness last cosigned")]
    OldSizeMismatch { claimed: u64, latest: u64 },
    /// Same size as the latest cosigned, different root: a split view.
    #[error("split view: another tree of size {size} was cosigned before")]
    SplitView { size: u64 },
    /// The checkpoint is smaller than what was cosigned (a rollback).
    #[error("rollback: checkpoint size {size} is below the cosigned {latest}")]
    Rollback { size: u64, latest: u64 },
    #[error("the consistency proof from {old} to {size} does not verify")]
    Inconsistent { old: u64, size: u64 },
}

impl Refusal {
    /// The HTTP status of c2sp.org/tlog-witness.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::NotSignedByLog => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::OldSizeMismatch { .. }
            | Refusal::Rollback { .. }
            | Refusal::SplitView { .. } => 409,
            Refusal::Inconsistent { .. } => 422,
        }
    }

    /// The response body (`text/x.tlog.size` for a 409 on the old size).
    pub fn body(&self) -> String {
        match self {
            Refusal::OldSizeMismatch { latest, .. } | Refusal::Rollback { latest, .. } => {
                format!("{latest}\n")
            }
            other => format!("{other}\n"),
        }
    }
}

/// The logs a witness follows: origin → the log's policy (its key; no witnesses of its own).
#[derive(Debug, Clone, Default)]
pub struct WitnessedLogs(pub BTreeMap<String, TrustPolicy>);

impl WitnessedLogs {
    pub fn add(&mut self, log_key: &str) -> Result<(), super::NoteError> {
        let policy = TrustPolicy {
            log_key: log_key.trim().to_owned(),
            witnesses: Vec::new(),
            quorum: 0,
        };
        policy.log_verifier()?;
        self.0.insert(policy.origin().to_owned(), policy);
        Ok(())
    }
}

/// What a witness remembers: per origin, the newest checkpoint it cosigned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessState {
    pub latest: BTreeMap<String, SignedCheckpoint>,
}

impl WitnessState {
    /// Checks a request against the state; on success returns the cosignature line and updates
    /// the state (which the caller persists before answering).
    pub fn add_checkpoint(
        &mut self,
        logs: &WitnessedLogs,
        cosigner: &Cosigner,
        request: &AddCheckpoint,
        now_unix: u64,
    ) -> Result<String, Refusal> {
        let cp = &request.checkpoint;
        let policy = logs
            .0
            .get(&cp.origin)
            .ok_or_else(|| Refusal::UnknownLog(cp.origin.clone()))?;
        if !policy.log_signed(cp) {
            return Err(Refusal::NotSignedByLog);
        }
        if request.old_size > cp.tree_size {
            return Err(Refusal::BadRequest(format!(
                "old size {} is above the checkpoint size {}",
                request.old_size, cp.tree_size
            )));
        }
        let latest = self.latest.get(&cp.origin);
        let latest_size = latest.map_or(0, |l| l.tree_size);
        if let Some(l) = latest {
            if cp.tree_size < l.tree_size {
                return Err(Refusal::Rollback {
                    size: cp.tree_size,
                    latest: l.tree_size,
                });
            }
            if cp.tree_size == l.tree_size && cp.root != l.root {
                return Err(Refusal::SplitView { size: cp.tree_size });
            }
        }
        if request.old_size != latest_size {
            return Err(Refusal::OldSizeMismatch {
                claimed: request.old_size,
                latest: latest_size,
            });
        }
        if let Some(l) = latest {
            tree::check_consistency(&request.proof, cp.tree_size, &cp.root, l.tree_size, &l.root)
                .map_err(|_| Refusal::Inconsistent {
                old: l.tree_size,
                size: cp.tree_size,
            })?;
        } else if !request.proof.is_empty() {
            return Err(Refusal::Inconsistent {
                old: 0,
                size: cp.tree_size,
            });
        }
        let line = cosigner.cosign(cp, now_unix);
        let mut kept = cp.clone();
        kept.add_signature_lines(line.as_bytes())
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        self.latest.insert(cp.origin.clone(), kept);
        Ok(line)
    }

    /// The state file: JSON `{"<origin>": "<signed note with our cosignature>"}`.
    pub fn to_json(&self) -> String {
        let map: BTreeMap<&str, String> = self
            .latest
            .iter()
            .map(|(o, cp)| (o.as_str(), cp.to_text()))
            .collect();
        serde_json::to_string_pretty(&map).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn from_json(s: &str) -> Result<Self, super::NoteError> {
        let map: BTreeMap<String, String> = serde_json::from_str(s)
            .map_err(|e| super::NoteError::Malformed(format!("witness state: {e}")))?;
        let mut latest = BTreeMap::new();
        for (origin, note) in map {
            latest.insert(origin, SignedCheckpoint::parse(note.as_bytes())?);
        }
        Ok(WitnessState { latest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::tree::Frontier;
    use crate::access_log::{CheckpointSigner, Ed25519FileSigner};

    fn key() -> Vec<u8> {
        Ed25519FileSigner::generate_pkcs8().unwrap()
    }

    #[test]
    fn a_witness_cosigns_growth_and_refuses_rollback_split_view_and_bad_proofs() {
        let log = Ed25519FileSigner::from_pkcs8("example.com/log", &key()).unwrap();
        let log: &dyn CheckpointSigner = &log;
        let w = Cosigner::from_pkcs8("witness.example/w", &key()).unwrap();
        let mut logs = WitnessedLogs::default();
        logs.add(&log.verifier_key()).unwrap();
        let mut stored = BTreeMap::new();
        let mut f = Frontier::new();
        let mut roots = vec![f.root()];
        for i in 0..20u8 {
            stored.extend(f.append(&[i; 32]));
            roots.push(f.root());
        }
        let cp = |size: u64| log.sign_checkpoint(size, &roots[size as usize]).unwrap();
        let req = |old: u64, size: u64| AddCheckpoint {
            old_size: old,
            proof: tree::consistency_proof(size, old, &stored).unwrap(),
            checkpoint: cp(size),
        };
        let mut state = WitnessState::default();
        // The body round-trips through the wire format.
        let first = req(0, 5);
        assert_eq!(AddCheckpoint::parse(&first.to_body()).unwrap(), first);
        let line = state.add_checkpoint(&logs, &w, &first, 100).unwrap();
        let policy = TrustPolicy {
            log_key: log.verifier_key(),
            witnesses: vec![w.public()],
            quorum: 1,
        };
        let mut cosigned = cp(5);
        cosigned.add_signature_lines(line.as_bytes()).unwrap();
        assert!(policy.is_witnessed(&policy.check(&cosigned)));
        // Growth with a proof from what it saw.
        state.add_checkpoint(&logs, &w, &req(5, 12), 101).unwrap();
        // A stale old size: 409 with the witness's size.
        let stale = state
            .add_checkpoint(&logs, &w, &req(5, 15), 102)
            .unwrap_err();
        assert_eq!(stale.http_status(), 409);
        assert_eq!(stale.body(), "12\n");
        // A rollback.
        let rollback = state
            .add_checkpoint(&logs, &w, &req(5, 8), 103)
            .unwrap_err();
        assert_eq!(
            rollback,
            Refusal::Rollback {
                size: 8,
                latest: 12
            }
        );
        // A split view: another tree of size 12.
        let other = AddCheckpoint {
            old_size: 12,
            proof: vec![],
            checkpoint: log.sign_checkpoint(12, &[9; 32]).unwrap(),
        };
        assert_eq!(
            state.add_checkpoint(&logs, &w, &other, 104).unwrap_err(),
            Refusal::SplitView { size: 12 }
        );
        // A tree that does not extend the cosigned one.
        let forked = AddCheckpoint {
            old_size: 12,
            proof: tree::consistency_proof(15, 12, &stored).unwrap(),
            checkpoint: log.sign_checkpoint(15, &[7; 32]).unwrap(),
        };
        assert_eq!(
            state
                .add_checkpoint(&logs, &w, &forked, 105)
                .unwrap_err()
                .http_status(),
            422
        );
        // Another key for the same origin.
        let forger = Ed25519FileSigner::from_pkcs8("example.com/log", &key()).unwrap();
        let forged = AddCheckpoint {
            checkpoint: (&forger as &dyn CheckpointSigner)
                .sign_checkpoint(15, &roots[15])
                .unwrap(),
            ..req(12, 15)
        };
        assert_eq!(
            state.add_checkpoint(&logs, &w, &forged, 106).unwrap_err(),
            Refusal::NotSignedByLog
        );
        // The state survives its file.
        let again = WitnessState::from_json(&state.to_json()).unwrap();
        assert_eq!(again, state);
        assert_eq!(again.latest["example.com/log"].tree_size, 12);
        state.add_checkpoint(&logs, &w, &req(12, 20), 107).unwrap();
    }
}
