//! The access log in the shape of the Logboek Dataverwerkingen standard (Logius, LDV): one entry per
//! record and data subject, with the W3C trace and span ids the call carried, so an agency can join
//! the gateway's records to its own processing log by `trace_id`. The data subject is the
//! pseudonym, never a BSN (`dpl.core.data_subject_id` is meant to be protected anyway).

use serde_json::{json, Value};

use super::AccessRecord;

/// How the subject id is to be read: an HMAC-SHA256 pseudonym of the BSN under the gateway's key.
pub const SUBJECT_ID_TYPE: &str = "urn:signaalpoort:subject-pseudonym:hmac-sha256";

/// LDV `status_code`: ERROR only for server-side failures (as HTTP 5xx); refusals and bad input
/// are client-side and stay UNSET, as the standard prescribes; success is marked OK.
fn status_code(grpc_code: i32) -> &'static str {
    match grpc_code {
        0 => "STATUS_CODE_OK",
        // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
        2 | 4 | 12 | 13 | 14 | 15 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

/// The LDV entries of one record: one per subject, or one without a subject.
pub fn ldv_entries(record: &AccessRecord, service_version: &str) -> Vec<Value> {
    let d = &record.draft;
    let millis = (d.time.unix_timestamp_nanos() / 1_000_000) as i64;
    let activity = match d.purpose {
        Some(p) => format!("urn:signaalpoort:processing-activity:{}", p.code()),
        None => format!("urn:signaalpoort:processing-activity:{}", d.action),
    };
    let entry = |subject: Option<&str>| {
        let mut attributes = json!({
            "dpl.core.processing_activity_id": activity,
            "dpl.signaalpoort.seq": record.seq,
            "dpl.signaalpoort.record_hash": hex::encode(record.hash),
            "dpl.signaalpoort.agency_oin": d.agency_oin,
            "dpl.signaalpoort.actor_id": d.actor_id,
            "dpl.signaalpoort.decision": d.decision.code(),
            "dpl.signaalpoort.reason": d.reason,
            "dpl.signaalpoort.grpc_status": d.status_code,
        });
        if let (Some(s), Some(map)) = (subject, attributes.as_object_mut()) {
            map.insert("dpl.core.data_subject_id".into(), json!(s));
            map.insert(
                "dpl.core.data_subject_id_type".into(),
                json!(SUBJECT_ID_TYPE),
            );
        }
        json!({
            "trace_id": d.trace_id,
            "span_id": d.span_id,
            "name": d.action,
            "status_code": status_code(d.status_code),
            "start_time": millis,
            "end_time": millis,
            "resource": {"attributes": {"service.name": "signaalpoort", "service.version": service_version}},
            "attributes": attributes,
        })
    };
    if d.subjects.is_empty() {
        vec![entry(None)]
    } else {
        d.subjects.iter().map(|s| entry(Some(s))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::{DecisionCode, RecordDraft, GENESIS_HASH};
    use crate::Purpose;

    #[test]
    fn one_entry_per_subject_with_trace_context_and_no_bsn() {
        let draft = RecordDraft {
            time: time::macros::datetime!(2026-02-03 04:05:06.789 UTC),
            agency_oin: "00000099001234560002".into(),
            role: None,
            actor_id: "wij-1".into(),
            action: "QueryInvolvement".into(),
            subjects: vec!["aa".repeat(32), "bb".repeat(32)],
            household_id: String::new(),
            purpose: Some(Purpose::CareCoordination),
            basis: None,
            decision: DecisionCode::Deny,
            reason: "CONSENT_MISSING".into(),
            status_code: 7,
            request_id: String::new(),
            cert_fingerprint: String::new(),
            justification: String::new(),
            flagged_for_review: false,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            object_id: String::new(),
        };
        let record = AccessRecord::chain(9, GENESIS_HASH, draft).unwrap();
        // The export line parses back into the same record (the CSV and Logboek exports rely on it).
        let line = record.export_line().unwrap();
        assert_eq!(AccessRecord::from_export_line(&line), Some(record.clone()));
        let entries = ldv_entries(&record, "0.1.0");
        assert_eq!(entries.len(), 2);
        let e = &entries[1];
        assert_eq!(e["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(e["span_id"], "00f067aa0ba902b7");
        assert_eq!(e["name"], "QueryInvolvement");
        // A refusal is a client-side outcome: UNSET, not ERROR.
        assert_eq!(e["status_code"], "STATUS_CODE_UNSET");
        assert_eq!(e["start_time"], 1_770_091_506_789i64);
        assert_eq!(e["attributes"]["dpl.core.data_subject_id"], "bb".repeat(32));
        assert_eq!(
            e["attributes"]["dpl.core.data_subject_id_type"],
            SUBJECT_ID_TYPE
        );
        assert_eq!(
            e["attributes"]["dpl.core.processing_activity_id"],
            "urn:signaalpoort:processing-activity:care_coordination"
        );
        assert_eq!(e["attributes"]["dpl.signaalpoort.seq"], 9);
    }
}
