//! Offline verification of an export against signed checkpoints: recompute every hash, check every
//! link, check every checkpoint's signature and head. Reads the fixed-position fields (`seq`,
//! `prev`) without a JSON parser, so verifying costs little more than hashing.

use super::record::chain_hash;
use super::{SignedCheckpoint, GENESIS_HASH};

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
    /// A checkpoint's signature does not verify with the given key.
    BadCheckpointSignature { tree_size: u64 },
    /// The chain head at a checkpoint's size differs from what was signed (history rewritten).
    CheckpointMismatch { tree_size: u64 },
    /// A signed checkpoint covers more records than the export holds (records cut off the end).
    Truncated { checkpoint_size: u64, records: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the export.
    pub line: u64,
    /// The record's sequence number, when it could be read.
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
            ProblemKind::BadCheckpointSignature { tree_size } => write!(f, "{at}: checkpoint at {tree_size} has an invalid signature"),
            ProblemKind::CheckpointMismatch { tree_size } => write!(f, "{at}: chain head differs from the signed checkpoint at {tree_size} (history rewritten)"),
            ProblemKind::Truncated { checkpoint_size, records } => write!(f, "the export ends at record {records} but a signed checkpoint covers {checkpoint_size} (records removed from the end)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub head_hash: [u8; 32],
    pub checkpoints_checked: usize,
    /// The first problem found; verification stops there.
    pub first_problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_problem.is_none()
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
/// starts after an anchor: the sequence number and hash of the last removed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStart {
    /// Record 1, after the genesis hash.
    Genesis,
    /// After a known anchor (the store keeps it when retention removes records).
    After { seq: u64, hash: [u8; 32] },
    /// After whatever the first line links to (an export taken after retention). The records are
    /// then authenticated by the signed checkpoints after that point, not by the anchor itself.
    FirstLine,
}

/// Verifies export lines (from record 1 on) against checkpoints signed with `public_key`.
pub fn verify_export<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    checkpoints: &[SignedCheckpoint],
    public_key: &[u8],
) -> VerifyReport {
    verify_export_from(lines, checkpoints, public_key, ChainStart::Genesis)
}

/// Verifies export lines that continue the chain from `start`. Checkpoints over records that were
/// removed before `start` cannot be checked and are skipped (still signature-checked).
pub fn verify_export_from<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    checkpoints: &[SignedCheckpoint],
    public_key: &[u8],
    start: ChainStart,
) -> VerifyReport {
    let mut cps: Vec<&SignedCheckpoint> = checkpoints.iter().collect();
    cps.sort_by_key(|c| c.body.tree_size);
    let (start_seq, start_hash) = match start {
        ChainStart::After { seq, hash } => (seq, hash),
        ChainStart::Genesis | ChainStart::FirstLine => (0, GENESIS_HASH),
    };
    let mut report = VerifyReport {
        records: start_seq,
        head_hash: start_hash,
        checkpoints_checked: 0,
        first_problem: None,
    };
    let mut anchor_pending = start == ChainStart::FirstLine;
    for cp in &cps {
        if !cp.verify(public_key) {
            report.first_problem = Some(Problem {
                line: 0,
                seq: None,
                kind: ProblemKind::BadCheckpointSignature {
                    tree_size: cp.body.tree_size,
                },
            });
            return report;
        }
    }
    let mut next_cp = cps.iter().peekable();
    // A checkpoint at size 0 says nothing, nor one over records removed before the start.
    let skip_through =
        |next_cp: &mut std::iter::Peekable<std::slice::Iter<'_, &SignedCheckpoint>>, seq: u64| {
            while next_cp.next_if(|c| c.body.tree_size <= seq).is_some() {}
        };
    skip_through(&mut next_cp, start_seq);
    let mut line_no = 0u64;
    for line in lines {
        line_no += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let fail = |seq, kind| Problem {
            line: line_no,
            seq,
            kind,
        };
        let Some(parts) = split_line(line) else {
            report.first_problem = Some(fail(None, ProblemKind::Malformed));
            return report;
        };
        if std::mem::take(&mut anchor_pending) && parts.seq > 1 {
            report.records = parts.seq - 1;
            report.head_hash = parts.prev;
            skip_through(&mut next_cp, report.records);
        }
        if chain_hash(parts.record) != parts.hash {
            report.first_problem = Some(fail(Some(parts.seq), ProblemKind::HashMismatch));
            return report;
        }
        let expected = report.records + 1;
        if parts.seq != expected {
            report.first_problem = Some(fail(
                Some(parts.seq),
                ProblemKind::SequenceGap {
                    expected,
                    found: parts.seq,
                },
            ));
            return report;
        }
        if parts.prev != report.head_hash {
            report.first_problem = Some(fail(Some(parts.seq), ProblemKind::BrokenLink));
            return report;
        }
        report.records = parts.seq;
        report.head_hash = parts.hash;
        while let Some(cp) = next_cp.next_if(|c| c.body.tree_size == parts.seq) {
            report.checkpoints_checked += 1;
            if cp.body.head_hash != parts.hash {
                report.first_problem = Some(fail(
                    Some(parts.seq),
                    ProblemKind::CheckpointMismatch {
                        tree_size: cp.body.tree_size,
                    },
                ));
                return report;
            }
        }
    }
    if let Some(cp) = next_cp.next() {
        report.first_problem = Some(Problem {
            line: line_no,
            seq: None,
            kind: ProblemKind::Truncated {
                checkpoint_size: cp.body.tree_size,
                records: report.records,
            },
        });
    }
    report
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
