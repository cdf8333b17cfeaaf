//! Issue 14: an attacker with write access to the database (and to the gateway's own key) tries
//! each move of the table. For each, who detects it: the officer's verifier on the live
//! database with the log key alone, the verifier given a witness's state (the newest checkpoint
//! the witness cosigned), the verifier on an export, and the gateway at its next start. None may
//! pass everyone, and where a single record is to blame it is named.

use signaalpoort_api::v1 as pb;
use signaalpoort_core::access_log::tree::leaf_index;
use signaalpoort_core::access_log::{
    export_lines, verify_export, AccessRecord, ChainStart, CheckpointSigner, Cosigner,
    Ed25519FileSigner, Problem, ProblemKind, SignedCheckpoint, TrustPolicy, VerifyInput,
    VerifyReport, GENESIS_HASH,
};
use signaalpoort_server::ManualClock;
use signaalpoort_store::{Store, StoreOptions};
use signaalpoort_tests::*;
use sqlx::Connection;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

struct Scene {
    env: Env,
    witness: Cosigner,
    /// The witness's state: the newest checkpoint it cosigned (size 12).
    witness_state: SignedCheckpoint,
}

/// Twelve records; checkpoints at 8 and 12, both cosigned by the witness (its state: 12).
async fn scene(backend: Backend) -> Scene {
    let env = Env::new(backend).await;
    let witness = Cosigner::from_pkcs8(
        "witness.example/fg",
        &Ed25519FileSigner::generate_pkcs8().unwrap(),
    )
    .unwrap();
    let gw = env.start(&clock()).await;
    let mut wij = gw.client(WIJ).await;
    let gateway = gw.running.gateway.clone();
    for n in 0..8 {
        register(&mut wij, &bsn(600 + n), pb::Category::Parenting).await;
    }
    assert!(gateway.write_checkpoint().await.unwrap());
    for n in 8..12 {
        register(&mut wij, &bsn(600 + n), pb::Category::Parenting).await;
    }
    assert!(gateway.write_checkpoint().await.unwrap());
    assert_eq!(gw.log_len().await, 12);
    let mut witness_state = None;
    for mut cp in gateway.store.read().checkpoints(10).await.unwrap() {
        cp.add_signature_lines(witness.cosign(&cp, 1_700_000_000).as_bytes())
            .unwrap();
        gateway.store.store_cosignatures(&cp, 1).await.unwrap();
        if cp.tree_size == 12 {
            witness_state = Some(cp);
        }
    }
    gw.stop().await;
    Scene {
        env,
        witness,
        witness_state: witness_state.expect("checkpoint at 12"),
    }
}

impl Scene {
    fn policy(&self) -> TrustPolicy {
        TrustPolicy {
            witnesses: vec![self.witness.public()],
            quorum: 1,
            ..own_policy(&self.env.data())
        }
    }

    async fn sql(&self, statements: &[String]) {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.env.database_url)
            .await
            .unwrap();
        for s in statements {
            sqlx::query(s)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        conn.close().await.unwrap();
    }

    async fn read_only(&self) -> Store {
        Store::open(
            &self.env.database_url,
            StoreOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    async fn records(&self) -> Vec<AccessRecord> {
        let store = self.read_only().await;
        let r = store.read().export_log(1, u64::MAX, 1000).await.unwrap();
        store.close().await;
        r
    }

    /// The attacker's "recompute the hashes": rechains every record as it now stands.
    async fn recompute_chain(&self) {
        let mut prev = GENESIS_HASH;
        let mut statements = Vec::new();
        for r in self.records().await {
            let again = AccessRecord::chain(r.seq, prev, r.draft).unwrap();
            prev = again.hash;
            statements.push(format!(
                "UPDATE access_log SET prev_hash = {}, hash = {} WHERE seq = {}",
                blob(&again.prev_hash, &self.env.database_url),
                blob(&again.hash, &self.env.database_url),
                r.seq
            ));
        }
        self.sql(&statements).await;
    }

    /// The attacker's "recompute the tree": drops it from record `from` on; the next writable
    /// open (the gateway's start) rebuilds it from the records as they now are.
    async fn recompute_tree_from(&self, from: u64) {
        self.sql(&[format!(
            "DELETE FROM log_tree WHERE idx >= {}",
            leaf_index(from - 1)
        )])
        .await;
        Store::open(&self.env.database_url, StoreOptions::default())
            .await
            .unwrap()
            .close()
            .await;
    }

    async fn live(&self, trusted: bool) -> VerifyReport {
        let store = self.read_only().await;
        let policy = if trusted {
            self.policy()
        } else {
            own_policy(&self.env.data())
        };
        let report = store
            .verify_log(&policy, trusted.then_some(&self.witness_state))
            .await
            .unwrap();
        store.close().await;
        report
    }

    async fn export(&self) -> VerifyReport {
        let store = self.read_only().await;
        let cps = store.read().checkpoints(100).await.unwrap();
        store.close().await;
        let mut data = Vec::new();
        for r in self.records().await {
            data.extend_from_slice(r.export_line().unwrap().as_bytes());
            data.push(b'\n');
        }
        let policy = self.policy();
        verify_export(
            export_lines(&data),
            &VerifyInput {
                policy: &policy,
                checkpoints: &cps,
                trusted: Some(&self.witness_state),
                start: ChainStart::Genesis,
            },
        )
    }

    /// Starts the gateway on the tampered database: the fault it refuses to sign over, if any.
    async fn gateway_start(&self) -> Option<String> {
        let gw = self.env.start(&clock()).await;
        let fault = gw.running.gateway.log_fault();
        if fault.is_some() {
            // It stays not ready and says why.
            let why = signaalpoort_server::admin::readiness(&gw.running.gateway)
                .await
                .unwrap_err();
            assert!(why.contains("access log cannot be vouched for"), "{why}");
            assert!(!gw.running.gateway.write_checkpoint().await.unwrap_or(false));
        }
        gw.stop().await;
        fault
    }

    /// Re-signs the checkpoint at `size` over the tree as it now is, with the gateway's own key
    /// (an operator holding the key file can).
    async fn resign_with_gateway_key(&self, size: u64) {
        let signer = signaalpoort_server::keys::load_or_create_checkpoint_key(
            &signaalpoort_server::keys::checkpoint_key_path(&self.env.data()),
            "signaalpoort.local/access-log",
        )
        .unwrap();
        let store = self.read_only().await;
        let (tree_size, root) = store.tree_head().await.unwrap();
        store.close().await;
        assert_eq!(tree_size, size);
        let cp = (&signer as &dyn CheckpointSigner)
            .sign_checkpoint(size, &root)
            .unwrap();
        self.sql(&[format!(
            "DELETE FROM log_checkpoints WHERE tree_size >= {size}"
        )])
        .await;
        let store = Store::open(&self.env.database_url, StoreOptions::default())
            .await
            .unwrap();
        store
            .insert_checkpoint(&cp, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
        store.close().await;
    }
}

fn blob(h: &[u8; 32], url: &str) -> String {
    if url.starts_with("sqlite") {
        format!("X'{}'", hex::encode(h))
    } else {
        format!("'\\x{}'::bytea", hex::encode(h))
    }
}

fn kind(r: &VerifyReport) -> Option<(Option<u64>, ProblemKind)> {
    r.first_problem
        .clone()
        .map(|Problem { seq, kind, .. }| (seq, kind))
}

async fn editing_a_record_is_named(backend: Backend) {
    let s = scene(backend).await;
    s.sql(&["UPDATE access_log SET actor_id = 'x' WHERE seq = 3".into()])
        .await;
    assert_eq!(
        kind(&s.live(false).await),
        Some((Some(3), ProblemKind::HashMismatch))
    );
    assert_eq!(
        kind(&s.export().await),
        Some((Some(3), ProblemKind::HashMismatch))
    );
    assert!(s.gateway_start().await.is_some());
}

async fn editing_and_recomputing_the_chain_is_named_by_the_tree(backend: Backend) {
    let s = scene(backend).await;
    s.sql(&["UPDATE access_log SET actor_id = 'x' WHERE seq = 3".into()])
        .await;
    s.recompute_chain().await;
    // The stored tree still holds record 3's old leaf.
    assert_eq!(
        kind(&s.live(false).await),
        Some((Some(3), ProblemKind::LeafMismatch))
    );
    // The export has no tree rows: the signed root at 8 no longer matches.
    assert_eq!(
        kind(&s.export().await),
        Some((
            None,
            ProblemKind::CheckpointMismatch {
                tree_size: 8,
                after: 0
            }
        ))
    );
    let fault = s
        .gateway_start()
        .await
        .expect("the gateway refuses to sign");
    assert!(fault.contains("record 3"), "{fault}");
}

async fn editing_and_recomputing_chain_and_tree_breaks_the_signed_root(backend: Backend) {
    let s = scene(backend).await;
    s.sql(&["UPDATE access_log SET actor_id = 'x' WHERE seq = 3".into()])
        .await;
    s.recompute_chain().await;
    s.recompute_tree_from(3).await;
    let expected = Some((
        None,
        ProblemKind::CheckpointMismatch {
            tree_size: 8,
            after: 0,
        },
    ));
    assert_eq!(kind(&s.live(false).await), expected);
    assert_eq!(kind(&s.export().await), expected);
    assert!(s.gateway_start().await.is_some());
}

async fn deleting_a_record_is_named(backend: Backend) {
    let s = scene(backend).await;
    s.sql(&["DELETE FROM access_log WHERE seq = 5".into()])
        .await;
    let gap = Some((
        Some(6),
        ProblemKind::SequenceGap {
            expected: 5,
            found: 6,
        },
    ));
    assert_eq!(kind(&s.live(false).await), gap);
    assert_eq!(kind(&s.export().await), gap);
}

async fn inserting_a_record_with_recomputed_hashes_is_named(backend: Backend) {
    let s = scene(backend).await;
    s.sql(&[
        "UPDATE access_log SET seq = seq + 100 WHERE seq > 4".into(),
        "UPDATE access_log SET seq = seq - 99 WHERE seq > 100".into(),
        "INSERT INTO access_log SELECT 5, time, agency_oin, role, actor_id, action, subjects, household_id, purpose, basis, \
         decision, reason, status_code, request_id, cert_fingerprint, justification, flagged, trace_id, span_id, object_id, \
         prev_hash, hash FROM access_log WHERE seq = 4".into(),
    ])
    .await;
    s.recompute_chain().await;
    assert_eq!(
        kind(&s.live(false).await),
        Some((Some(5), ProblemKind::LeafMismatch))
    );
    assert_eq!(
        kind(&s.export().await),
        Some((
            None,
            ProblemKind::CheckpointMismatch {
                tree_size: 8,
                after: 0
            }
        ))
    );
    assert!(s.gateway_start().await.is_some());
}

async fn appending_a_forged_record_is_found(backend: Backend) {
    let s = scene(backend).await;
    let records = s.records().await;
    let last = records.last().unwrap();
    let forged = AccessRecord::chain(13, last.hash, last.draft.clone()).unwrap();
    s.sql(&[format!(
        "INSERT INTO access_log SELECT 13, time, agency_oin, role, actor_id, action, subjects, household_id, purpose, basis, \
         decision, reason, status_code, request_id, cert_fingerprint, justification, flagged, trace_id, span_id, object_id, \
         {}, {} FROM access_log WHERE seq = 12",
        blob(&forged.prev_hash, &s.env.database_url),
        blob(&forged.hash, &s.env.database_url)
    )])
    .await;
    // Without a tree leaf: named at once.
    assert_eq!(
        kind(&s.live(false).await),
        Some((Some(13), ProblemKind::LeafMismatch))
    );
    // An export cannot tell, but no accepted checkpoint vouches for it.
    let export = s.export().await;
    assert!(export.is_ok());
    assert_eq!((export.covered_through(), export.uncovered()), (12, 1));
    // With a leaf added too, the live verifier also counts it as not yet covered.
    s.recompute_tree_from(13).await;
    let live = s.live(true).await;
    assert!(live.is_ok(), "{:?}", live.first_problem);
    assert_eq!(live.uncovered(), 1);
}

async fn truncating_the_tail_is_found_by_the_tree_and_the_witness(backend: Backend) {
    let s = scene(backend).await;
    s.sql(&[
        "DELETE FROM access_log_subjects WHERE seq > 10".into(),
        "DELETE FROM access_log WHERE seq > 10".into(),
        "DELETE FROM log_checkpoints WHERE tree_size > 8".into(),
    ])
    .await;
    assert_eq!(
        kind(&s.live(false).await),
        Some((
            None,
            ProblemKind::TailRemoved {
                tree_size: 12,
                records: 10
            }
        ))
    );
    // The tree cut too: only the witness's state still knows there were 12.
    s.sql(&[format!(
        "DELETE FROM log_tree WHERE idx >= {}",
        leaf_index(10)
    )])
    .await;
    let own = s.live(false).await;
    assert!(own.is_ok(), "{:?}", own.first_problem);
    assert_eq!(own.uncovered(), 2);
    let truncated = Some((
        None,
        ProblemKind::Truncated {
            checkpoint_size: 12,
            records: 10,
        },
    ));
    assert_eq!(kind(&s.live(true).await), truncated);
    assert_eq!(kind(&s.export().await), truncated);
}

async fn deleting_the_head_and_all_checkpoints_is_found(backend: Backend) {
    let s = scene(backend).await;
    s.sql(&[
        "DELETE FROM access_log WHERE seq = 12".into(),
        format!("DELETE FROM log_tree WHERE idx >= {}", leaf_index(11)),
        "DELETE FROM log_checkpoints".into(),
    ])
    .await;
    assert_eq!(
        kind(&s.live(false).await),
        Some((None, ProblemKind::NoCheckpoints))
    );
    assert_eq!(
        kind(&s.live(true).await),
        Some((
            None,
            ProblemKind::Truncated {
                checkpoint_size: 12,
                records: 11
            }
        ))
    );
}

async fn rewriting_after_the_last_witnessed_checkpoint_is_found_by_the_witness(backend: Backend) {
    let s = scene(backend).await;
    // Everything after 8 rewritten, chain and tree recomputed, checkpoint 12 re-signed with the
    // gateway's own key: the database and the key agree with each other.
    s.sql(&["UPDATE access_log SET actor_id = 'x' WHERE seq > 8".into()])
        .await;
    s.recompute_chain().await;
    s.recompute_tree_from(9).await;
    s.resign_with_gateway_key(12).await;
    let own = s.live(false).await;
    assert!(
        own.is_ok(),
        "the operator's own key vouches: {:?}",
        own.first_problem
    );
    assert!(s.gateway_start().await.is_none());
    // The witness remembers another tree of size 12: a split view.
    let split = Some((None, ProblemKind::ConflictingCheckpoints { tree_size: 12 }));
    assert_eq!(kind(&s.live(true).await), split);
}

async fn deleting_all_checkpoints_is_refused(backend: Backend) {
    let s = scene(backend).await;
    s.sql(&["DELETE FROM log_checkpoints".into()]).await;
    assert_eq!(
        kind(&s.live(false).await),
        Some((None, ProblemKind::NoCheckpoints))
    );
}

async fn checkpoints_resigned_with_another_key_are_refused(backend: Backend) {
    let s = scene(backend).await;
    let forger = Ed25519FileSigner::from_pkcs8(
        "signaalpoort.local/access-log",
        &Ed25519FileSigner::generate_pkcs8().unwrap(),
    )
    .unwrap();
    let store = s.read_only().await;
    let (size, root) = store.tree_head().await.unwrap();
    store.close().await;
    let forged = (&forger as &dyn CheckpointSigner)
        .sign_checkpoint(size, &root)
        .unwrap();
    s.sql(&[format!(
        "UPDATE log_checkpoints SET note = '{}' WHERE tree_size = 12",
        forged.to_text()
    )])
    .await;
    let p = kind(&s.live(false).await);
    assert_eq!(
        p,
        Some((None, ProblemKind::BadCheckpointSignature { tree_size: 12 }))
    );
}

async fn an_older_backup_is_found_by_the_witness(backend: Backend) {
    let s = scene(backend).await;
    // The state at 8, as a backup taken then holds it.
    s.sql(&[
        "DELETE FROM access_log_subjects WHERE seq > 8".into(),
        "DELETE FROM access_log WHERE seq > 8".into(),
        format!("DELETE FROM log_tree WHERE idx >= {}", leaf_index(8)),
        "DELETE FROM log_checkpoints WHERE tree_size > 8".into(),
    ])
    .await;
    assert!(s.live(false).await.is_ok());
    assert!(s.gateway_start().await.is_none());
    assert_eq!(
        kind(&s.live(true).await),
        Some((
            None,
            ProblemKind::Truncated {
                checkpoint_size: 12,
                records: 8
            }
        ))
    );
}

both_backends!(
    editing_a_record_is_named,
    editing_and_recomputing_the_chain_is_named_by_the_tree,
    editing_and_recomputing_chain_and_tree_breaks_the_signed_root,
    deleting_a_record_is_named,
    inserting_a_record_with_recomputed_hashes_is_named,
    appending_a_forged_record_is_found,
    truncating_the_tail_is_found_by_the_tree_and_the_witness,
    deleting_the_head_and_all_checkpoints_is_found,
    rewriting_after_the_last_witnessed_checkpoint_is_found_by_the_witness,
    deleting_all_checkpoints_is_refused,
    checkpoints_resigned_with_another_key_are_refused,
    an_older_backup_is_found_by_the_witness,
);
