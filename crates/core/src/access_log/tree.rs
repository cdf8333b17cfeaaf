//! The access log as an RFC 6962 Merkle tree. The Merkle math is `tlog_tiles`' (a port of Go's
//! sumdb/tlog); this module only decides what a leaf is and keeps the tree's right edge.
//!
//! Leaf `i` (0-based) is the record with `seq = i + 1`; its leaf input is the record's 32-byte
//! SHA-256 hash (which covers the record's canonical bytes and the previous record's hash), so a
//! leaf is `SHA-256(0x00 || record.hash)`. Retention can remove a record's body and keep its leaf.
//!
//! Hashes are kept in tlog's *stored hash* layout: one dense index per tree node that is complete
//! (`tlog_tiles::stored_hash_index`); appending record `n` stores its leaf plus every subtree it
//! completes. The store keeps those rows; a [`Frontier`] keeps only the roots of the complete
//! subtrees on the right edge (at most 64), which is all that appending and the root need.

use std::cell::RefCell;
use std::collections::BTreeMap;

use tlog_tiles::{Hash, HashReader};

/// A hash in the tree (leaf or node), raw bytes.
pub type NodeHash = [u8; 32];

/// The hash of the empty tree (SHA-256 of nothing).
pub const EMPTY_ROOT: NodeHash = tlog_tiles::EMPTY_HASH.0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("tree hash {0} is missing")]
    MissingHash(u64),
    #[error("invalid proof")]
    InvalidProof,
    #[error("bad tree sizes: {0}")]
    BadSizes(String),
}

/// The leaf of a record, from the record's own hash: SHA-256(0x00 || hash) (RFC 6962).
pub fn leaf_hash(record_hash: &[u8; 32]) -> NodeHash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[0x00]);
    ctx.update(record_hash);
    digest32(ctx)
}

/// An interior node: SHA-256(0x01 || left || right) (RFC 6962).
pub fn node_hash(left: &NodeHash, right: &NodeHash) -> NodeHash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    digest32(ctx)
}

fn digest32(ctx: ring::digest::Context) -> NodeHash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The stored-hash indexes the root of a tree of `size` leaves is computed from (its frontier).
pub fn frontier_indexes(size: u64) -> Vec<u64> {
    tlog_tiles::sub_tree_index(0, size, Vec::new())
}

/// The stored-hash index of leaf `index` (0-based).
pub fn leaf_index(index: u64) -> u64 {
    tlog_tiles::stored_hash_index(0, index)
}

/// The number of leaves of a stored tree whose highest stored-hash index is `max`: that node
/// was the top node added with the last leaf `n` (level `m`, index `n >> m`, `n` ending in `m`
/// one-bits).
pub fn size_from_max_index(max: u64) -> u64 {
    let (level, index) = tlog_tiles::split_stored_hash_index(max);
    ((index << level) | ((1u64 << level) - 1)) + 1
}

/// The roots of the complete subtrees on the tree's right edge, largest (leftmost) first:
/// enough to append and to compute the root, without the rest of the tree. Appending costs one
/// hash per completed subtree and allocates nothing ([`Frontier::push_leaf`]), so verifying a long
/// log costs little more than hashing its records. Its roots and stored hashes are checked
/// against `tlog_tiles` and against RFC 6962's definition in the tests below.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<NodeHash>,
}

struct MapReader<'a>(&'a BTreeMap<u64, NodeHash>);

impl HashReader for MapReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .map(|h| Hash(*h))
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// A tree of `size` leaves from its frontier hashes, in [`frontier_indexes`] order.
    pub fn from_hashes(size: u64, hashes: &[NodeHash]) -> Result<Self, TreeError> {
        let wanted = frontier_indexes(size).len();
        if wanted != hashes.len() {
            return Err(TreeError::BadSizes(format!(
                "a tree of {size} needs {wanted} frontier hashes, got {}",
                hashes.len()
            )));
        }
        Ok(Frontier {
            size,
            nodes: hashes.to_vec(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes in [`frontier_indexes`] order (what [`Frontier::from_hashes`] takes).
    pub fn hashes(&self) -> Vec<NodeHash> {
        self.nodes.clone()
    }

    /// Appends the record with this hash; returns the stored hashes it adds, `(index, hash)`.
    pub fn append(&mut self, record_hash: &[u8; 32]) -> Vec<(u64, NodeHash)> {
        self.append_leaf(leaf_hash(record_hash))
    }

    /// Appends a leaf hash; returns the stored hashes it adds, `(index, hash)`: the leaf at
    /// `stored_hash_index(0, n)` and each subtree it completes at the next indexes.
    pub fn append_leaf(&mut self, leaf: NodeHash) -> Vec<(u64, NodeHash)> {
        let base = tlog_tiles::stored_hash_index(0, self.size);
        let mut out = vec![(base, leaf)];
        let mut h = leaf;
        let mut k = self.size;
        while k & 1 == 1 {
            let Some(left) = self.nodes.pop() else { break };
            h = node_hash(&left, &h);
            out.push((base + out.len() as u64, h));
            k >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
        out
    }

    /// Appends a leaf hash without reporting the stored hashes (the verifier's path).
    pub fn push_leaf(&mut self, leaf: NodeHash) {
        let mut h = leaf;
        let mut k = self.size;
        while k & 1 == 1 {
            let Some(left) = self.nodes.pop() else { break };
            h = node_hash(&left, &h);
            k >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The root hash of the tree (RFC 6962 MTH).
    pub fn root(&self) -> NodeHash {
        let mut iter = self.nodes.iter().rev();
        let Some(last) = iter.next() else {
            return EMPTY_ROOT;
        };
        iter.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// A hash reader as a function (what [`indexes_read`] hands a tlog computation).
type ReadFn<'a> = dyn Fn(&[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> + 'a;

/// The stored-hash indexes a tlog computation reads, found by running it once against a reader
/// that only records. Every tlog prover reads in one call, so a store can fetch exactly those rows
/// and run the real computation over them.
fn indexes_read<T>(run: impl Fn(&ReadFn<'_>) -> T) -> Vec<u64> {
    let seen = RefCell::new(Vec::new());
    let _ = run(&|indexes: &[u64]| {
        seen.borrow_mut().extend_from_slice(indexes);
        Err(tlog_tiles::Error::IndexesNotInTree)
    });
    seen.into_inner()
}

struct FnReader<'a, 'b>(&'a ReadFn<'b>);

impl HashReader for FnReader<'_, '_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        (self.0)(indexes)
    }
}

/// The indexes an inclusion proof of leaf `index` in a tree of `size` reads.
pub fn inclusion_proof_indexes(size: u64, index: u64) -> Vec<u64> {
    indexes_read(|r| tlog_tiles::prove_record(size, index, &FnReader(r)))
}

/// The indexes a consistency proof from `old` to `size` reads.
pub fn consistency_proof_indexes(size: u64, old: u64) -> Vec<u64> {
    indexes_read(|r| tlog_tiles::prove_tree(size, old, &FnReader(r)))
}

/// The indexes the root of a tree of `size` reads.
pub fn root_indexes(size: u64) -> Vec<u64> {
    frontier_indexes(size)
}

/// An inclusion proof (RFC 6962 audit path) from stored hashes.
pub fn inclusion_proof(
    size: u64,
    index: u64,
    hashes: &BTreeMap<u64, NodeHash>,
) -> Result<Vec<NodeHash>, TreeError> {
    if index >= size {
        return Err(TreeError::BadSizes(format!(
            "leaf {index} is not in a tree of {size}"
        )));
    }
    tlog_tiles::prove_record(size, index, &MapReader(hashes))
        .map(|p| p.into_iter().map(|h| h.0).collect())
        .map_err(|_| TreeError::MissingHash(0))
}

/// A consistency proof (RFC 6962) from `old` to `size` from stored hashes. Empty for `old == 0`.
pub fn consistency_proof(
    size: u64,
    old: u64,
    hashes: &BTreeMap<u64, NodeHash>,
) -> Result<Vec<NodeHash>, TreeError> {
    if old == 0 {
        return Ok(Vec::new());
    }
    if old > size {
        return Err(TreeError::BadSizes(format!("{old} > {size}")));
    }
    tlog_tiles::prove_tree(size, old, &MapReader(hashes))
        .map(|p| p.into_iter().map(|h| h.0).collect())
        .map_err(|_| TreeError::MissingHash(0))
}

/// The root of a tree of `size` from stored hashes.
pub fn root_from(size: u64, hashes: &BTreeMap<u64, NodeHash>) -> Result<NodeHash, TreeError> {
    tlog_tiles::tree_hash(size, &MapReader(hashes))
        .map(|h| h.0)
        .map_err(|_| TreeError::MissingHash(0))
}

/// Checks that leaf `index` with hash `leaf` is in the tree of `size` with root `root`.
pub fn check_inclusion(
    proof: &[NodeHash],
    size: u64,
    root: &NodeHash,
    index: u64,
    leaf: &NodeHash,
) -> Result<(), TreeError> {
    if index >= size || proof.len() > 64 {
        return Err(TreeError::InvalidProof);
    }
    let p: Vec<Hash> = proof.iter().map(|h| Hash(*h)).collect();
    tlog_tiles::check_record(&p, size, Hash(*root), index, Hash(*leaf))
        .map_err(|_| TreeError::InvalidProof)
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of the tree of `size`
/// leaves with root `root`.
pub fn check_consistency(
    proof: &[NodeHash],
    size: u64,
    root: &NodeHash,
    old: u64,
    old_root: &NodeHash,
) -> Result<(), TreeError> {
    if old > size || proof.len() > 64 {
        return Err(TreeError::InvalidProof);
    }
    if old == 0 {
        // The empty tree is a prefix of every tree; the proof must be empty (c2sp tlog-witness).
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(TreeError::InvalidProof)
        };
    }
    if old == size {
        return if proof.is_empty() && old_root == root {
            Ok(())
        } else {
            Err(TreeError::InvalidProof)
        };
    }
    let p: Vec<Hash> = proof.iter().map(|h| Hash(*h)).collect();
    tlog_tiles::check_tree(&p, size, Hash(*root), old, Hash(*old_root))
        .map_err(|_| TreeError::InvalidProof)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 MTH written out directly, independent of tlog_tiles.
    fn mth(leaves: &[NodeHash]) -> NodeHash {
        use ring::digest::{digest, SHA256};
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                let mut buf = vec![1u8];
                buf.extend_from_slice(&mth(&leaves[..k]));
                buf.extend_from_slice(&mth(&leaves[k..]));
                let mut out = [0u8; 32];
                out.copy_from_slice(digest(&SHA256, &buf).as_ref());
                out
            }
        }
    }

    #[test]
    fn frontier_root_matches_the_rfc_definition_and_the_stored_tree() {
        let mut f = Frontier::new();
        let mut leaves = Vec::new();
        let mut stored = BTreeMap::new();
        assert_eq!(f.root(), EMPTY_ROOT);
        for i in 0..70u8 {
            let record = [i; 32];
            // Our hashing is tlog's (RFC 6962).
            assert_eq!(leaf_hash(&record), tlog_tiles::record_hash(&record).0);
            assert_eq!(
                node_hash(&record, &[1; 32]),
                tlog_tiles::node_hash(Hash(record), Hash([1; 32])).0
            );
            leaves.push(leaf_hash(&record));
            stored.extend(f.append(&record));
            assert_eq!(
                size_from_max_index(*stored.keys().last().unwrap()),
                f.size()
            );
            assert_eq!(f.root(), mth(&leaves), "size {}", i + 1);
            assert_eq!(root_from(f.size(), &stored).unwrap(), f.root());
            let again = Frontier::from_hashes(
                f.size(),
                &frontier_indexes(f.size())
                    .iter()
                    .map(|i| stored[i])
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            assert_eq!(again, f);
        }
        for size in 1..=70u64 {
            let root = root_from(size, &stored).unwrap();
            for index in 0..size {
                let p = inclusion_proof(size, index, &stored).unwrap();
                let wanted = inclusion_proof_indexes(size, index);
                let only: BTreeMap<u64, NodeHash> =
                    wanted.iter().map(|i| (*i, stored[i])).collect();
                assert_eq!(inclusion_proof(size, index, &only).unwrap(), p);
                check_inclusion(&p, size, &root, index, &leaves[index as usize]).unwrap();
                assert!(check_inclusion(&p, size, &root, index, &[9; 32]).is_err());
            }
            for old in 1..=size {
                let p = consistency_proof(size, old, &stored).unwrap();
                let old_root = root_from(old, &stored).unwrap();
                check_consistency(&p, size, &root, old, &old_root).unwrap();
                if old < size {
                    assert!(check_consistency(&p, size, &root, old, &[7; 32]).is_err());
                }
            }
        }
    }
}
