//! One call's life: who is calling (from the verified certificate and the registry), what the
//! policy decided, and its single access-log record. [`Gateway::unary`] runs every RPC through
//! here, so no handler can forget the record or write two.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use signaalpoort_core::access_log::{DecisionCode, RecordDraft};
use signaalpoort_core::consent::ConsentState;
use signaalpoort_core::policy::{self, Action, Decision, Permit, PolicyRequest};
use signaalpoort_core::{
    ActorId, Agency, Justification, Oin, Purpose, RequestId, SubjectPseudonym,
};
use signaalpoort_store::{AlertDraft, Effect, Idempotency, Mutation, WriteRequest};
use signaalpoort_tls::TlsConnectInfo;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::gateway::Gateway;

pub const ACTOR_HEADER: &str = "x-actor-id";

/// The verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub agency: Agency,
    pub actor: ActorId,
}

/// A call in progress; clones share the record.
#[derive(Clone)]
pub struct Call {
    gw: Arc<Gateway>,
    state: Arc<Mutex<CallState>>,
    action: Action,
    cert_serial: Option<String>,
}

struct CallState {
    draft: RecordDraft,
    logged: bool,
    /// The seq of the call's access record, once committed.
    record_seq: Option<u64>,
}

impl Call {
    fn new(gw: Arc<Gateway>, action: Action, meta: &MetadataMap, ext: &http::Extensions) -> Call {
        let peer = ext.get::<TlsConnectInfo>().and_then(|c| c.peer.clone());
        let (trace_id, span_id) = trace_ids(meta);
        // Microseconds, as stored: an idempotent replay then answers exactly what the first did.
        let now = gw.clock.now();
        let now = now
            .replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now);
        let draft = RecordDraft {
            time: now,
            agency_oin: peer
                .as_ref()
                .and_then(|p| p.oin.clone())
                .unwrap_or_default(),
            role: None,
            actor_id: meta
                .get(ACTOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| ActorId::parse(s).ok())
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            action: action.name().to_owned(),
            subjects: Vec::new(),
            household_id: String::new(),
            purpose: None,
            basis: None,
            decision: DecisionCode::Deny,
            reason: String::new(),
            status_code: 0,
            request_id: String::new(),
            cert_fingerprint: peer
                .as_ref()
                .map(|p| p.fingerprint_hex())
                .unwrap_or_default(),
            justification: String::new(),
            flagged_for_review: false,
            trace_id,
            span_id,
            object_id: String::new(),
        };
        Call {
            gw,
            state: Arc::new(Mutex::new(CallState {
                draft,
                logged: false,
                record_seq: None,
            })),
            action,
            cert_serial: peer.map(|p| p.serial_hex.clone()),
        }
    }

    fn with_draft<R>(&self, f: impl FnOnce(&mut RecordDraft) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state.draft)
    }

    /// Identity: certificate OIN → registry → role; then the actor header. Nothing in the request
    /// can change the agency or its role.
    fn identify(&self, meta: &MetadataMap) -> Result<Caller, ApiError> {
        if let (Some(serial), Some(tls)) = (&self.cert_serial, &self.gw.tls) {
            if tls.is_revoked(serial) {
                return Err(ApiError::denied(
                    signaalpoort_core::DenyReason::CertificateRevoked,
                ));
            }
        }
        let oin = self.with_draft(|d| d.agency_oin.clone());
        let agency = Oin::parse(&oin)
            .ok()
            .and_then(|oin| self.gw.registry.get(&oin).cloned())
            .ok_or_else(|| ApiError::denied(signaalpoort_core::DenyReason::UnknownAgency))?;
        self.with_draft(|d| d.role = Some(agency.role));
        let actor = match meta.get(ACTOR_HEADER).map(|v| v.to_str()) {
            None => return Err(ApiError::field(&format!("metadata.{ACTOR_HEADER}"), "is required: the pseudonymous id of the professional on whose behalf the call is made")),
            Some(Err(_)) => return Err(ApiError::field(&format!("metadata.{ACTOR_HEADER}"), "must be ASCII")),
            Some(Ok(s)) => ActorId::parse(s).map_err(|e| ApiError::field(&format!("metadata.{ACTOR_HEADER}"), e.to_string()))?,
        };
        self.gw.limiter.check(&agency.oin)?;
        Ok(Caller { agency, actor })
    }

    pub fn action(&self) -> Action {
        self.action
    }

    pub fn now(&self) -> time::OffsetDateTime {
        self.with_draft(|d| d.time)
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    pub fn set_subjects(&self, subjects: &[SubjectPseudonym]) {
        let mut hex: Vec<String> = subjects.iter().map(|s| s.to_hex()).collect();
        hex.sort();
        hex.dedup();
        self.with_draft(|d| d.subjects = hex);
    }

    pub fn set_object(&self, id: &str) {
        self.with_draft(|d| d.object_id = id.to_owned());
    }

    pub fn set_household(&self, id: &str) {
        self.with_draft(|d| d.household_id = id.to_owned());
    }

    pub fn set_request_id(&self, id: &str) {
        self.with_draft(|d| d.request_id = id.to_owned());
    }

    /// The allowing rule, for calls whose per-item decisions happen later (streams).
    pub fn set_reason(&self, rule: &str) {
        self.with_draft(|d| d.reason = rule.to_owned());
    }

    pub fn set_purpose(&self, purpose: Option<Purpose>) {
        self.with_draft(|d| d.purpose = purpose);
    }

    /// Asks the policy table; records the verdict either way.
    pub fn decide(
        &self,
        caller: &Caller,
        purpose: Option<Purpose>,
        involved: bool,
        consent: &ConsentState,
        justification: Option<&Justification>,
    ) -> Result<Permit, ApiError> {
        let decision = policy::decide(&PolicyRequest {
            role: caller.agency.role,
            action: self.action,
            purpose,
            involved,
            consent,
            justification,
        });
        self.with_draft(|d| {
            d.purpose = purpose;
            match &decision {
                Decision::Allow(permit) => {
                    d.basis = Some(permit.basis());
                    d.reason = permit.rule().to_owned();
                    d.decision = DecisionCode::Allow;
                    d.flagged_for_review = permit.flagged_for_review();
                    if permit.safety_holds() {
                        d.justification = justification
                            .map(|j| j.as_str().to_owned())
                            .unwrap_or_default();
                    }
                    if let Some(c) = permit.consent_id() {
                        if d.object_id.is_empty() {
                            d.object_id = format!("consent:{c}");
                        }
                    }
                }
                Decision::Deny(reason) => {
                    d.decision = DecisionCode::Deny;
                    d.reason = reason.error_reason();
                }
            }
        });
        match decision {
            Decision::Allow(permit) => Ok(permit),
            Decision::Deny(reason) => Err(ApiError::denied(reason)),
        }
    }

    /// Binds a request id to this RPC and the request's content (AIP-155) and puts it on the record.
    /// `content` is the request as the handler validated it, with every BSN replaced by its
    /// pseudonym and the request id cleared, so the digest stored beside the key reveals no BSN.
    pub fn idempotency<M: prost::Message>(
        &self,
        caller: &Caller,
        request_id: Option<&RequestId>,
        content: &M,
    ) -> Option<Idempotency> {
        let request_id = request_id?;
        self.set_request_id(request_id.as_str());
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(self.action.name().as_bytes());
        digest.update(&[0]);
        digest.update(&content.encode_to_vec());
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.finish().as_ref());
        Some(Idempotency {
            agency: caller.agency.oin.clone(),
            request_id: request_id.as_str().to_owned(),
            action: self.action.name(),
            fingerprint,
        })
    }

    /// Refuses, inside the call (so the record says so), a response larger than the gateway may
    /// send: tonic would otherwise fail it after the record said OK.
    pub fn fits<M: prost::Message>(&self, response: M) -> Result<M, ApiError> {
        let limit = self.gw.config.limits.max_message_bytes;
        let size = response.encoded_len();
        if size > limit {
            return Err(ApiError::ResponseTooLarge { size, limit });
        }
        Ok(response)
    }

    /// Applies a state change together with this call's record, and waits for the commit.
    pub async fn execute(
        &self,
        mutation: Mutation,
        idempotency: Option<Idempotency>,
    ) -> Result<Effect, ApiError> {
        let (record, alerts) = self.prepare_record(Ok(()));
        self.mark_logged();
        let submitted = Instant::now();
        let committed = self
            .gw
            .store
            .execute(WriteRequest {
                mutation,
                idempotency,
                record,
                alerts,
            })
            .await?;
        self.gw.metrics.log_appended();
        self.gw.metrics.observe_append_latency(submitted.elapsed());
        self.set_record_seq(committed.seq);
        committed.outcome.map_err(ApiError::from)
    }

    fn set_record_seq(&self, seq: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.record_seq = Some(seq);
    }

    /// The seq of this call's access record, once it is committed.
    pub fn record_seq(&self) -> Option<u64> {
        self.state.lock().ok().and_then(|s| s.record_seq)
    }

    fn mark_logged(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.logged = true;
    }

    fn prepare_record(&self, result: Result<(), &ApiError>) -> (RecordDraft, Vec<AlertDraft>) {
        let mut draft = self.with_draft(|d| d.clone());
        match result {
            Ok(()) => {
                draft.decision = DecisionCode::Allow;
                draft.status_code = 0;
                if draft.reason.is_empty() {
                    draft.reason = "OK".to_owned();
                }
            }
            Err(e) => {
                draft.decision = DecisionCode::Deny;
                draft.status_code = e.code() as i32;
                draft.reason = e.log_reason();
            }
        }
        self.gw.metrics.observe_decision(&draft.reason);
        let alerts = self.gw.volume.observe(&draft).into_iter().collect();
        (draft, alerts)
    }

    /// Writes the record if the handler did not (read calls, refusals). Fails closed.
    async fn finish<T>(&self, result: Result<T, ApiError>) -> Result<T, Status> {
        let already = self.state.lock().map(|s| s.logged).unwrap_or(true);
        if already || matches!(result, Err(ApiError::Store(_))) {
            return result.map_err(ApiError::into_status);
        }
        let (record, alerts) = self.prepare_record(result.as_ref().map(|_| ()));
        self.mark_logged();
        let submitted = Instant::now();
        match self.gw.store.log_only(record, alerts).await {
            Ok(seq) => {
                self.set_record_seq(seq);
                self.gw.metrics.log_appended();
                self.gw.metrics.observe_append_latency(submitted.elapsed());
                result.map_err(ApiError::into_status)
            }
            Err(e) => Err(ApiError::Store(e).into_status()),
        }
    }

    /// One log line per call, joinable to its access-log record by trace and span id (and the
    /// request id when the caller sent one). Never a BSN: the draft holds only pseudonyms, and
    /// those are left out too.
    fn log_outcome(&self, code: tonic::Code, elapsed: std::time::Duration) {
        self.with_draft(|d| {
            tracing::info!(
                method = d.action.as_str(),
                code = ?code,
                agency = d.agency_oin.as_str(),
                trace_id = d.trace_id.as_str(),
                span_id = d.span_id.as_str(),
                request_id = d.request_id.as_str(),
                elapsed_us = elapsed.as_micros() as u64,
                "call"
            )
        });
    }

    fn traceparent(&self) -> String {
        self.with_draft(|d| format!("00-{}-{}-01", d.trace_id, d.span_id))
    }
}

/// Response metadata naming the seq of the call's access record.
pub const RECORD_SEQ_HEADER: &str = "x-access-record-seq";

impl Gateway {
    /// Runs one RPC: identifies the caller, runs `body`, writes the one record, maps errors. The work
    /// is spawned, so it completes and is logged even if the client goes away mid-call.
    pub async fn unary<Req, Resp, F, Fut>(
        self: &Arc<Self>,
        action: Action,
        request: Request<Req>,
        body: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Call, Caller, Req) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, ApiError>> + Send + 'static,
    {
        let gw = self.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let (meta, ext, message) = request.into_parts();
            let call = Call::new(gw, action, &meta, &ext);
            let result = match call.identify(&meta) {
                Ok(caller) => body(call.clone(), caller, message).await,
                Err(e) => Err(e),
            };
            let traceparent = call.traceparent();
            let result = call.finish(result).await;
            call.log_outcome(
                result.as_ref().err().map_or(tonic::Code::Ok, |s| s.code()),
                started.elapsed(),
            );
            (result, traceparent, call.record_seq())
        });
        let (result, traceparent, record_seq) = task
            .await
            .map_err(|_| Status::internal("the call was aborted"))?;
        self.metrics.observe_call(
            action.name(),
            result.as_ref().err().map_or(tonic::Code::Ok, |s| s.code()),
            started.elapsed(),
        );
        // Every answer names its access record, so the caller can later prove it is in the log
        // (ProveAccessRecord) — and notice if it ever disappears.
        let seq = record_seq.and_then(|s| s.to_string().parse().ok());
        match result {
            Ok(resp) => {
                let mut response = Response::new(resp);
                if let Ok(v) = traceparent.parse() {
                    response.metadata_mut().insert("traceparent", v);
                }
                if let Some(seq) = seq {
                    response.metadata_mut().insert(RECORD_SEQ_HEADER, seq);
                }
                Ok(response)
            }
            Err(mut status) => {
                if let Some(seq) = seq {
                    status.metadata_mut().insert(RECORD_SEQ_HEADER, seq);
                }
                Err(status)
            }
        }
    }
}

impl Gateway {
    /// A call refused before its handler could run (see [`crate::edge`]): identified and logged
    /// like any refusal — identity first, so an unknown agency is told only that — with one
    /// access-log record, then answered with `refusal`.
    pub async fn refuse(
        self: &Arc<Self>,
        action: Action,
        meta: &MetadataMap,
        ext: &http::Extensions,
        refusal: ApiError,
        started: Instant,
    ) -> Status {
        let call = Call::new(self.clone(), action, meta, ext);
        let result: Result<(), ApiError> = match call.identify(meta) {
            Ok(_) => Err(refusal),
            Err(e) => Err(e),
        };
        let status = match call.finish(result).await {
            Ok(()) => Status::internal("a refusal was not refused"),
            Err(status) => status,
        };
        call.log_outcome(status.code(), started.elapsed());
        self.metrics
            .observe_call(action.name(), status.code(), started.elapsed());
        status
    }
}

/// W3C traceparent: keeps the caller's trace id, and gives this call its own span id. A missing or
/// malformed header starts a new trace, as the spec says.
fn trace_ids(meta: &MetadataMap) -> (String, String) {
    let incoming = meta
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let trace_id = incoming.unwrap_or_else(|| hex::encode(uuid::Uuid::new_v4().as_bytes()));
    let span_id = hex::encode(&uuid::Uuid::new_v4().as_bytes()[..8]);
    (trace_id, span_id)
}

/// The trace id (32 lowercase hex digits, not all zero) of a W3C `traceparent` header value, or
/// `None` when the value is malformed. Public for the fuzz target.
pub fn parse_traceparent(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
        && parts[1] != "00000000000000000000000000000000";
    ok.then(|| parts[1].to_ascii_lowercase())
}
