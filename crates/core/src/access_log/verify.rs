//! Verification of the access log, offline (an export) or live (the store feeds its rows): recompute
//! every hash, check every link, rebuild the Merkle tree and compare its root with every signed
//! (and witnessed) checkpoint; names the first bad record, or the range a rewrite hides in. Reads the fixed-position fields (`seq`,
//! `prev`) without a JSON parser, so verifying costs little more than hashing.

use super::note::{CheckpointVerdict, SignedCheckpoint, TrustPolicy};
use super::record::chain_hash;
use super::tree::{leaf_hash, Frontier, NodeHash};
use super::GENESIS_HASH;

const PREFIX: &[u8] = b"{\"record\":{\"v\":1,\"seq\":";
const PREV_KEY: &[u8] = b",\"prev\":\"";
const SUFFIX_LEN: usize = b",\"hash\":\"".len() + 64 + b"\"}".len();

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The line is not an export line.
    Malformed,
    /// The record's fields no longer match its hash (edited).
    HashMismatch,
    /// `seq` is not the next number (a record deleted, inserted or moved).
    SequenceGap { expected: u64, found: u64 },
    /// `prev` is not the previous record's hash (reordered, inserted, or the chain rewritten).
    BrokenLink,
    /// The stored Merkle tree's leaf for this record is not the record's leaf (live database).
    LeafMismatch,
    /// A checkpoint is not signed by the log's key (re-signed with another key, or altered).
    BadCheckpointSignature { tree_size: u64 },
    /// A configured witness's cosignature on a checkpoint does not verify.
    BadCosignature { tree_size: u64, witness: String },
    /// A checkpoint names another log.
    WrongOrigin { tree_size: u64 },
    /// Two validly signed checkpoints of the same size with different roots: a split view.
    ConflictingCheckpoints { tree_size: u64 },
    /// The tree over the records differs from a signed checkpoint's root: some record in
    /// `after + 1 ..= tree_size` was changed, inserted or removed and the hashes recomputed.
    CheckpointMismatch { tree_size: u64, after: u64 },
    /// A signed checkpoint covers more records than there are (records cut off the end).
    Truncated { checkpoint_size: u64, records: u64 },
    /// The stored tree holds more records than the log (live database): records removed from
    /// the end after the tree was written.
    TailRemoved { tree_size: u64, records: u64 },
    /// There is no valid signed checkpoint at all: nothing vouches for the records.
    NoCheckpoints,
    /// Witnesses are required but no checkpoint has the cosignatures the policy asks for.
    NotWitnessed,
    /// The chain starts after record 1 and no retention statement in the log covers the cut.
    HeadRemoved { first_seq: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the export (0 when the problem is not at a line).
    pub line: u64,
    /// The record's sequence number, when the problem is one record.
    pub seq: Option<u64>,
    pub kind: ProblemKind,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = match self.seq {
            Some(seq) => format!("record {seq} (line {})", self.line),
            None => format!("line {}", self.line),
        };
        match &self.kind {
            ProblemKind::Malformed => write!(f, "{at}: not a valid export line"),
            ProblemKind::HashMismatch => write!(f, "{at}: content does not match its hash (record altered)"),
            ProblemKind::SequenceGap { expected, found } => write!(f, "{at}: expected record {expected}, found {found} (record deleted, inserted or moved)"),
            ProblemKind::BrokenLink => write!(f, "{at}: does not link to the previous record's hash (reordered or inserted)"),
            ProblemKind::LeafMismatch => write!(f, "{at}: the stored Merkle tree holds another leaf for this record (record replaced)"),
            ProblemKind::BadCheckpointSignature { tree_size } => write!(f, "checkpoint at {tree_size} is not signed by the log's key (re-signed or altered)"),
            ProblemKind::BadCosignature { tree_size, witness } => write!(f, "checkpoint at {tree_size}: the cosignature of witness {witness} does not verify"),
            ProblemKind::WrongOrigin { tree_size } => write!(f, "checkpoint at {tree_size} names another log"),
            ProblemKind::ConflictingCheckpoints { tree_size } => write!(f, "two signed checkpoints at {tree_size} with different roots (split view)"),
            ProblemKind::CheckpointMismatch { tree_size, after } => write!(f, "the records differ from the signed checkpoint at {tree_size}: the first changed record is among records {}..={tree_size} (history rewritten)", after + 1),
            ProblemKind::Truncated { checkpoint_size, records } => write!(f, "the log ends at record {records} but a signed checkpoint covers {checkpoint_size}: records {}..={checkpoint_size} were removed from the end", records + 1),
            ProblemKind::TailRemoved { tree_size, records } => write!(f, "the log ends at record {records} but its Merkle tree holds {tree_size}: records {}..={tree_size} were removed from the end", records + 1),
            ProblemKind::NoCheckpoints => write!(f, "no valid signed checkpoint: nothing vouches for these records"),
            ProblemKind::NotWitnessed => write!(f, "no checkpoint has the witness cosignatures the policy requires"),
            ProblemKind::HeadRemoved { first_seq } => write!(f, "the log starts at record {first_seq} and no retention statement covers the removal of the records before it"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The seq of the last record verified.
    pub records: u64,
    pub head_hash: [u8; 32],
    /// The Merkle root over records `1..=records`.
    pub root: NodeHash,
    /// Checkpoints whose root was recomputed and matched.
    pub checkpoints_checked: usize,
    /// The largest size of a matching log-signed checkpoint (0: none).
    pub signed_through: u64,
    /// The largest size of a matching checkpoint with the policy's witness cosignatures.
    pub witnessed_through: u64,
    /// Whether the policy requires witnesses (then only witnessed checkpoints cover records).
    pub witnesses_required: bool,
    /// The first problem found; record problems stop verification there.
    pub first_problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_problem.is_none()
    }

    /// The size up to which a checkpoint the policy accepts vouches for the records.
    pub fn covered_through(&self) -> u64 {
        if self.witnesses_required {
            self.witnessed_through
        } else {
            self.signed_through
        }
    }

    /// Records after the newest accepted checkpoint: intact as far as the chain shows, but
    /// not yet vouched for by anyone outside the database.
    pub fn uncovered(&self) -> u64 {
        self.records.saturating_sub(self.covered_through())
    }
}

/// The lines of an export, split with a vectorised newline search: splitting byte by byte would
/// cost about as much as hashing the records.
pub fn export_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', data);
    std::iter::from_fn(move || {
        if start > data.len() {
            return None;
        }
        let end = ends.next().unwrap_or(data.len());
        let line = &data[start..end];
        start = end + 1;
        Some(line)
    })
}

/// Where the chain being verified starts. Retention removes the oldest records; what remains
/// starts after an anchor: the last removed record's seq and hash, and the tree's frontier there
/// (retention keeps leaf hashes, so the tree goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStart {
    /// Record 1, after the genesis hash.
    Genesis,
    /// After a known anchor (the store keeps it when retention removes records).
    After {
        seq: u64,
        hash: [u8; 32],
        frontier: Frontier,
    },
}

/// The action of the record a retention purge writes, and the object id naming its cut.
pub const RETENTION_ACTION: &str = "PurgeAccessLog";
pub fn retention_object_id(anchor_seq: u64) -> String {
    format!("access-log-anchor:{anchor_seq}")
}

/// What the verifier trusts and starts from.
#[derive(Debug, Clone)]
pub struct VerifyInput<'a> {
    pub policy: &'a TrustPolicy,
    pub checkpoints: &'a [SignedCheckpoint],
    /// A checkpoint known from elsewhere (a witness's state): the log must reach at least it.
    pub trusted: Option<&'a SignedCheckpoint>,
    pub start: ChainStart,
}

struct Expected {
    size: u64,
    root: NodeHash,
    witnessed: bool,
}

/// Streaming verification: feed lines in order, then [`LogVerifier::finish`].
pub struct LogVerifier {
    report: VerifyReport,
    frontier: Frontier,
    expected: std::collections::VecDeque<Expected>,
    checkpoint_problem: Option<Problem>,
    valid_checkpoints: usize,
    any_witnessed: bool,
    retention_pending: Option<u64>,
    line_no: u64,
    done: bool,
}

impl LogVerifier {
    pub fn new(input: &VerifyInput<'_>) -> Self {
        let (start_seq, start_hash, frontier) = match &input.start {
            ChainStart::Genesis => (0, GENESIS_HASH, Frontier::new()),
            ChainStart::After {
                seq,
                hash,
                frontier,
            } => (*seq, *hash, frontier.clone()),
        };
        let mut checkpoint_problem = None;
        let mut note = |p: ProblemKind| {
            if checkpoint_problem.is_none() {
                checkpoint_problem = Some(Problem {
                    line: 0,
                    seq: None,
                    kind: p,
                });
            }
        };
        let mut valid: std::collections::BTreeMap<u64, Expected> = Default::default();
        let mut any_witnessed = false;
        let all = input.checkpoints.iter().chain(input.trusted);
        for cp in all {
            let size = cp.tree_size;
            let verdict = input.policy.check(cp);
            let witnessed = input.policy.is_witnessed(&verdict);
            match verdict {
                CheckpointVerdict::Valid { .. } => {}
                CheckpointVerdict::BadLogSignature => {
                    note(ProblemKind::BadCheckpointSignature { tree_size: size });
                    continue;
                }
                CheckpointVerdict::BadCosignature { witness } => {
                    note(ProblemKind::BadCosignature {
                        tree_size: size,
                        witness,
                    });
                    continue;
                }
                CheckpointVerdict::WrongOrigin => {
                    note(ProblemKind::WrongOrigin { tree_size: size });
                    continue;
                }
            }
            any_witnessed |= witnessed;
            match valid.get_mut(&size) {
                Some(e) if e.root != cp.root => {
                    note(ProblemKind::ConflictingCheckpoints { tree_size: size })
                }
                Some(e) => e.witnessed |= witnessed,
                None => {
                    valid.insert(
                        size,
                        Expected {
                            size,
                            root: cp.root,
                            witnessed,
                        },
                    );
                }
            }
        }
        let valid_checkpoints = valid.len();
        let mut report = VerifyReport {
            records: start_seq,
            head_hash: start_hash,
            root: frontier.root(),
            checkpoints_checked: 0,
            signed_through: 0,
            witnessed_through: 0,
            witnesses_required: input.policy.quorum > 0,
            first_problem: None,
        };
        // Checkpoints over removed records cannot be recomputed, except one exactly at the anchor.
        let mut expected = std::collections::VecDeque::new();
        for (size, e) in valid {
            if size < start_seq || size == 0 {
                continue;
            }
            if size == start_seq {
                if e.root != report.root {
                    report.first_problem = Some(Problem {
                        line: 0,
                        seq: None,
                        kind: ProblemKind::CheckpointMismatch {
                            tree_size: size,
                            after: 0,
                        },
                    });
                }
                continue;
            }
            expected.push_back(e);
        }
        LogVerifier {
            done: report.first_problem.is_some(),
            report,
            frontier,
            expected,
            checkpoint_problem,
            valid_checkpoints,
            any_witnessed,
            retention_pending: (start_seq > 0).then_some(start_seq),
            line_no: 0,
        }
    }

    /// Feeds the next export line; `stored_leaf` is the live tree's leaf for it, when known.
    /// Returns false once a problem stopped verification.
    pub fn push_line(&mut self, line: &[u8], stored_leaf: Option<&NodeHash>) -> bool {
        if self.done {
            return false;
        }
        self.line_no += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return true;
        }
        let line_no = self.line_no;
        let fail = |seq, kind| {
            Some(Problem {
                line: line_no,
                seq,
                kind,
            })
        };
        let Some(parts) = split_line(line) else {
            return self.stop(fail(None, ProblemKind::Malformed));
        };
        if chain_hash(parts.record) != parts.hash {
            return self.stop(fail(Some(parts.seq), ProblemKind::HashMismatch));
        }
        let expected = self.report.records + 1;
        if parts.seq != expected {
            return self.stop(fail(
                Some(parts.seq),
                ProblemKind::SequenceGap {
                    expected,
                    found: parts.seq,
                },
            ));
        }
        if parts.prev != self.report.head_hash {
            return self.stop(fail(Some(parts.seq), ProblemKind::BrokenLink));
        }
        let leaf = leaf_hash(&parts.hash);
        if stored_leaf.is_some_and(|s| *s != leaf) {
            return self.stop(fail(Some(parts.seq), ProblemKind::LeafMismatch));
        }
        if let Some(anchor) = self.retention_pending {
            // The purge's own record, in the tree after the cut, names the anchor it kept.
            let action = format!("\"action\":\"{RETENTION_ACTION}\"");
            let object = format!("\"object_id\":\"{}\"", retention_object_id(anchor));
            if memchr::memmem::find(parts.record, action.as_bytes()).is_some()
                && memchr::memmem::find(parts.record, object.as_bytes()).is_some()
            {
                self.retention_pending = None;
            }
        }
        self.frontier.push_leaf(leaf);
        self.report.records = parts.seq;
        self.report.head_hash = parts.hash;
        while self.expected.front().is_some_and(|e| e.size == parts.seq) {
            let Some(e) = self.expected.pop_front() else {
                break;
            };
            let root = self.frontier.root();
            if root != e.root {
                let after = self.report.signed_through;
                return self.stop(fail(
                    None,
                    ProblemKind::CheckpointMismatch {
                        tree_size: e.size,
                        after,
                    },
                ));
            }
            self.report.checkpoints_checked += 1;
            self.report.signed_through = e.size;
            if e.witnessed {
                self.report.witnessed_through = e.size;
            }
        }
        true
    }

    fn stop(&mut self, problem: Option<Problem>) -> bool {
        self.report.first_problem = problem;
        self.done = true;
        false
    }

    pub fn finish(mut self) -> VerifyReport {
        self.report.root = self.frontier.root();
        if self.report.first_problem.is_some() {
            return self.report;
        }
        let problem = |kind| {
            Some(Problem {
                line: 0,
                seq: None,
                kind,
            })
        };
        self.report.first_problem = if let Some(e) = self.expected.front() {
            problem(ProblemKind::Truncated {
                checkpoint_size: e.size,
                records: self.report.records,
            })
        } else if let Some(p) = self.checkpoint_problem.take() {
            Some(p)
        } else if let Some(anchor) = self.retention_pending {
            problem(ProblemKind::HeadRemoved {
                first_seq: anchor + 1,
            })
        } else if self.valid_checkpoints == 0 && self.report.records > 0 {
            problem(ProblemKind::NoCheckpoints)
        } else if self.report.witnesses_required && !self.any_witnessed && self.report.records > 0 {
            problem(ProblemKind::NotWitnessed)
        } else {
            None
        };
        self.report
    }
}

/// Checks an agency's receipt offline: the record line is intact, its leaf is in the checkpoint's
/// tree by the inclusion proof, and the checkpoint is one the policy accepts (witnessed when it
/// requires witnesses). Returns the record's seq.
pub fn verify_inclusion(
    line: &[u8],
    checkpoint: &SignedCheckpoint,
    proof: &[NodeHash],
    policy: &TrustPolicy,
) -> Result<u64, String> {
    let parts = split_line(line).ok_or("not an export line")?;
    if chain_hash(parts.record) != parts.hash {
        return Err(format!(
            "record {}: content does not match its hash",
            parts.seq
        ));
    }
    let verdict = policy.check(checkpoint);
    if !matches!(verdict, CheckpointVerdict::Valid { .. }) {
        return Err(format!(
            "checkpoint at {}: {verdict:?}",
            checkpoint.tree_size
        ));
    }
    if !policy.is_witnessed(&verdict) {
        return Err(format!(
            "checkpoint at {} lacks the witness cosignatures the policy requires",
            checkpoint.tree_size
        ));
    }
    let index = parts.seq.checked_sub(1).ok_or("record 0 does not exist")?;
    super::tree::check_inclusion(
        proof,
        checkpoint.tree_size,
        &checkpoint.root,
        index,
        &leaf_hash(&parts.hash),
    )
    .map_err(|_| {
        format!(
            "record {} is not in the tree of checkpoint {}",
            parts.seq, checkpoint.tree_size
        )
    })?;
    Ok(parts.seq)
}

/// Verifies export lines against the checkpoints under a trust policy.
pub fn verify_export<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    input: &VerifyInput<'_>,
) -> VerifyReport {
    let mut v = LogVerifier::new(input);
    for line in lines {
        if !v.push_line(line, None) {
            break;
        }
    }
    v.finish()
}

struct LineParts<'a> {
    record: &'a [u8],
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
}

fn split_line(line: &[u8]) -> Option<LineParts<'_>> {
    let outer_prefix = b"{\"record\":".len();
    if line.len() < PREFIX.len() + SUFFIX_LEN || !line.starts_with(PREFIX) {
        return None;
    }
    let (head, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    if !suffix.starts_with(b",\"hash\":\"") || !suffix.ends_with(b"\"}") {
        return None;
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&suffix[9..9 + 64], &mut hash).ok()?;
    let record = &head[outer_prefix..];
    let rest = &line[PREFIX.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(PREV_KEY)?;
    let mut prev = [0u8; 32];
    hex::decode_to_slice(rest.get(..64)?, &mut prev).ok()?;
    Some(LineParts {
        record,
        seq,
        prev,
        hash,
    })
}
