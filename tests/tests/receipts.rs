//! Issue 14: every answer names its access record (`x-access-record-seq`); an agency proves its
//! own records are in the log against a witnessed checkpoint, offline with the public keys alone,
//! and can never fetch another agency's record. A tail cut after the checkpoint its receipt was
//! proved against is then seen by that agency: the record is gone or no longer proves.

use signaalpoort_api::v1 as pb;
use signaalpoort_core::access_log::{verify_inclusion, SignedCheckpoint};
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

fn seq_of<T>(r: &tonic::Response<T>) -> u64 {
    r.metadata()
        .get("x-access-record-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("x-access-record-seq")
}

async fn an_agency_proves_its_own_records_and_no_one_elses(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let mut seqs = Vec::new();
    for n in 0..6 {
        let resp = wij
            .signals
            .register_signal(pb::RegisterSignalRequest {
                bsn: bsn(800 + n),
                category: pb::Category::Parenting as i32,
                contact: contact("Team"),
                ..Default::default()
            })
            .await
            .unwrap();
        seqs.push(seq_of(&resp));
    }
    register(&mut ggd, &bsn(810), pb::Category::Health).await;
    // Refusals name their record too.
    let refused = ggd
        .audit
        .query_access_log(pb::QueryAccessLogRequest::default())
        .await
        .unwrap_err();
    let refused_seq: u64 = refused
        .metadata()
        .get("x-access-record-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("the refusal names its record");
    assert!(refused_seq > seqs[5]);
    assert_eq!(seqs, (seqs[0]..seqs[0] + 6).collect::<Vec<_>>());

    // Not yet covered by a checkpoint: ask again later.
    let early = wij
        .audit
        .prove_access_record(pb::ProveAccessRecordRequest {
            seq: seqs[2],
            old_tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(early.code(), tonic::Code::FailedPrecondition);
    assert!(gw.running.gateway.write_checkpoint().await.unwrap());

    let policy = own_policy(&env.data());
    let mut first_checkpoint = None;
    for &seq in &seqs {
        let proof = wij
            .audit
            .prove_access_record(pb::ProveAccessRecordRequest {
                seq,
                old_tree_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let cp = SignedCheckpoint::parse(proof.checkpoint.as_bytes()).unwrap();
        let path: Vec<[u8; 32]> = proof
            .inclusion_proof
            .iter()
            .map(|h| h.as_slice().try_into().unwrap())
            .collect();
        assert_eq!(
            verify_inclusion(proof.record_line.as_bytes(), &cp, &path, &policy),
            Ok(seq)
        );
        // A proof for one record does not prove another.
        if seq != seqs[0] {
            assert!(
                verify_inclusion(proof.record_line.as_bytes(), &cp, &[[0; 32]; 3], &policy)
                    .is_err()
            );
        }
        first_checkpoint.get_or_insert(cp);
    }
    let first_checkpoint = first_checkpoint.unwrap();

    // GGD asking for WIJ's record gets the same answer as for a record that does not exist.
    for seq in [seqs[0], 1_000_000] {
        let err = ggd
            .audit
            .prove_access_record(pb::ProveAccessRecordRequest {
                seq,
                old_tree_size: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{seq}");
        assert_eq!(err.message(), "no such access record of yours");
    }

    // Later: a consistency proof links the checkpoint WIJ saw to the newest one.
    register(&mut wij, &bsn(820), pb::Category::Parenting).await;
    assert!(gw.running.gateway.write_checkpoint().await.unwrap());
    let later = wij
        .audit
        .prove_access_record(pb::ProveAccessRecordRequest {
            seq: seqs[0],
            old_tree_size: first_checkpoint.tree_size,
        })
        .await
        .unwrap()
        .into_inner();
    let newest = SignedCheckpoint::parse(later.checkpoint.as_bytes()).unwrap();
    assert!(newest.tree_size > first_checkpoint.tree_size);
    let consistency: Vec<[u8; 32]> = later
        .consistency_proof
        .iter()
        .map(|h| h.as_slice().try_into().unwrap())
        .collect();
    signaalpoort_core::access_log::tree::check_consistency(
        &consistency,
        newest.tree_size,
        &newest.root,
        first_checkpoint.tree_size,
        &first_checkpoint.root,
    )
    .expect("the newer checkpoint extends the one WIJ saw");
    gw.stop().await;
}

both_backends!(an_agency_proves_its_own_records_and_no_one_elses);
