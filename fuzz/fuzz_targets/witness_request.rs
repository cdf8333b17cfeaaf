//! A witness's `add-checkpoint` request body (c2sp.org/tlog-witness) and the Merkle proof
//! checks on arbitrary sizes and hashes. Never panic; a parsed request round-trips through its
//! own body; a proof check is an answer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use signaalpoort_core::access_log::tree::{check_consistency, check_inclusion};
use signaalpoort_core::access_log::witness::AddCheckpoint;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = AddCheckpoint::parse(data) {
        let again = AddCheckpoint::parse(&req.to_body()).expect("own body parses");
        assert_eq!(again, req);
        let root = req.checkpoint.root;
        let _ = check_consistency(&req.proof, req.checkpoint.tree_size, &root, req.old_size, &[0; 32]);
        let _ = check_inclusion(&req.proof, req.checkpoint.tree_size, &root, req.old_size, &[0; 32]);
    }
    // Raw: two sizes and hashes from the bytes.
    if data.len() >= 16 + 64 {
        let size = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
        let index = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
        let a: [u8; 32] = data[16..48].try_into().unwrap_or_default();
        let b: [u8; 32] = data[48..80].try_into().unwrap_or_default();
        let proof: Vec<[u8; 32]> = data[80..]
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or_default())
            .collect();
        let _ = check_inclusion(&proof, size, &a, index, &b);
        let _ = check_consistency(&proof, size, &a, index, &b);
    }
});
