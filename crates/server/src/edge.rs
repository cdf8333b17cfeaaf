//! The edge of every `signaalpoort.v1` call, as a tower layer inside tonic's transport: what
//! happens before a handler can run or after it could not answer in time.
//!
//! - A body that does not decode (the codec marks it, see `signaalpoort_api::codec`) is
//!   INVALID_ARGUMENT with ErrorInfo `MALFORMED_REQUEST`; a body over `limits.max_message_bytes`
//!   (tonic refuses it as OUT_OF_RANGE before reading it) is RESOURCE_EXHAUSTED with ErrorInfo
//!   `REQUEST_TOO_LARGE` naming the limit. Both are refusals like any other: the caller is
//!   identified from the certificate and `x-actor-id`, and one access-log record is written
//!   (caller, method, reason) before the answer leaves.
//! - The deadline (the client's `grpc-timeout`, at most `limits.request_timeout_secs`) is answered
//!   as DEADLINE_EXCEEDED — tonic's own timer answers CANCELLED. The call itself is spawned (see
//!   [`crate::call`]) and still completes and is logged; the proto tells clients to repeat it with
//!   the same `request_id` to learn its outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use signaalpoort_core::policy::Action;
use signaalpoort_tls::TlsConnectInfo;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{ApiError, ERROR_DOMAIN};
use crate::gateway::Gateway;

/// How much earlier than the deadline the gateway answers, at most: tonic's transport runs its
/// own timer for `grpc-timeout` and would answer CANCELLED at the deadline itself.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// The layer; see the module docs.
#[derive(Clone)]
pub struct EdgeLayer {
    gw: Arc<Gateway>,
}

impl EdgeLayer {
    pub fn new(gw: Arc<Gateway>) -> EdgeLayer {
        EdgeLayer { gw }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            gw: self.gw.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    gw: Arc<Gateway>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Edge<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was made ready is the one that serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(action) = action_for_path(request.uri().path()) else {
            // Health, reflection: not ours to log.
            return Box::pin(inner.call(request));
        };
        let gw = self.gw.clone();
        let started = Instant::now();
        let server_limit = Duration::from_secs(gw.config.limits.request_timeout_secs);
        let deadline =
            grpc_timeout(request.headers()).map_or(server_limit, |client| client.min(server_limit));
        let meta = MetadataMap::from_headers(request.headers().clone());
        let mut ext = http::Extensions::new();
        if let Some(info) = request.extensions().get::<TlsConnectInfo>() {
            ext.insert(info.clone());
        }
        Box::pin(async move {
            let answer_by = deadline.saturating_sub(DEADLINE_MARGIN.min(deadline / 10));
            let response = match tokio::time::timeout(answer_by, inner.call(request)).await {
                Ok(response) => response?,
                Err(_) => {
                    gw.metrics.observe_call(
                        action.name(),
                        Code::DeadlineExceeded,
                        started.elapsed(),
                    );
                    return Ok(deadline_exceeded(deadline).into_http());
                }
            };
            let refusal = match trailers_only_code(&response) {
                Some(Code::InvalidArgument) => {
                    match response
                        .headers()
                        .get(signaalpoort_api::codec::MALFORMED_MARKER)
                    {
                        Some(what) => ApiError::MalformedRequest(
                            what.to_str().unwrap_or("undecodable").to_owned(),
                        ),
                        None => return Ok(response),
                    }
                }
                // The handlers never answer OUT_OF_RANGE: this is tonic's message size limit.
                Some(Code::OutOfRange) => ApiError::RequestTooLarge {
                    limit: gw.config.limits.max_message_bytes,
                },
                _ => return Ok(response),
            };
            let status = gw.refuse(action, &meta, &ext, refusal, started).await;
            Ok(status.into_http())
        })
    }
}

/// The access-log action of a `signaalpoort.v1` method path, as its handler names it.
pub fn action_for_path(path: &str) -> Option<Action> {
    let (service, method) = path.strip_prefix("/signaalpoort.v1.")?.split_once('/')?;
    let action = match (service, method) {
        ("SignalService", "RegisterSignal") => Action::RegisterSignal,
        ("SignalService", "WithdrawSignal") => Action::WithdrawSignal,
        ("SignalService", "ListSignals") => Action::ListSignals,
        ("SignalService", "QueryInvolvement") => Action::QueryInvolvement,
        ("HouseholdService", "DeclareHousehold") => Action::DeclareHousehold,
        ("HouseholdService", "DissolveHousehold") => Action::DissolveHousehold,
        ("NotificationService", "ListNotifications" | "WatchNotifications") => {
            Action::ReceiveNotifications
        }
        ("ConsentService", "RecordConsent") => Action::RecordConsent,
        ("ConsentService", "WithdrawConsent") => Action::WithdrawConsent,
        ("ConsentService", "ListConsents") => Action::ListConsents,
        ("AuditService", "QueryAccessLog") => Action::QueryAccessLog,
        ("AuditService", "ExportAccessLog") => Action::ExportAccessLog,
        ("AuditService", "ListCheckpoints" | "GetPublicKey") => Action::ReadCheckpoints,
        ("AuditService", "WatchAlerts") => Action::WatchAlerts,
        ("AuditService", "CitizenReport") => Action::CitizenReport,
        ("CoordinationService", "ProposeCoordinator") => Action::ProposeCoordinator,
        ("CoordinationService", "RespondToProposal") => Action::RespondToProposal,
        ("CoordinationService", "HandOver") => Action::HandOver,
        ("CoordinationService", "StepDown") => Action::StepDown,
        ("CoordinationService", "GetCoordination") => Action::GetCoordination,
        ("CoordinationService", "GetHistory") => Action::GetHistory,
        ("CoordinationService", "GetChronicity") => Action::GetChronicity,
        _ => return None,
    };
    Some(action)
}

/// The status code of a trailers-only response (tonic's answer when no handler ran, and a
/// handler's error); `None` for a response that streams a body.
fn trailers_only_code(response: &http::Response<Body>) -> Option<Code> {
    let value = response.headers().get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a unit), or `None` when absent or
/// malformed (then only the server's own limit applies).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn deadline_exceeded(deadline: Duration) -> Status {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("deadline_ms".to_owned(), deadline.as_millis().to_string());
    Status::with_error_details(
        Code::DeadlineExceeded,
        "the deadline passed before the answer was ready; the call may still have been carried \
         out: repeat it with the same request_id to learn its outcome",
        ErrorDetails::with_error_info("DEADLINE_EXCEEDED", ERROR_DOMAIN, metadata),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_contract_has_its_action() {
        for (service, methods) in [
            (
                "SignalService",
                &[
                    "RegisterSignal",
                    "WithdrawSignal",
                    "ListSignals",
                    "QueryInvolvement",
                ][..],
            ),
            (
                "HouseholdService",
                &["DeclareHousehold", "DissolveHousehold"],
            ),
            (
                "NotificationService",
                &["ListNotifications", "WatchNotifications"],
            ),
            (
                "ConsentService",
                &["RecordConsent", "WithdrawConsent", "ListConsents"],
            ),
            (
                "AuditService",
                &[
                    "QueryAccessLog",
                    "ExportAccessLog",
                    "ListCheckpoints",
                    "GetPublicKey",
                    "WatchAlerts",
                    "CitizenReport",
                ],
            ),
            (
                "CoordinationService",
                &[
                    "ProposeCoordinator",
                    "RespondToProposal",
                    "HandOver",
                    "StepDown",
                    "GetCoordination",
                    "GetHistory",
                    "GetChronicity",
                ],
            ),
        ] {
            for m in methods {
                assert!(
                    action_for_path(&format!("/signaalpoort.v1.{service}/{m}")).is_some(),
                    "{service}/{m}"
                );
            }
        }
        assert_eq!(action_for_path("/grpc.health.v1.Health/Check"), None);
        assert_eq!(action_for_path("/signaalpoort.v1.SignalService/Nope"), None);
    }

    #[test]
    fn grpc_timeout_units() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("250m"), Some(Duration::from_millis(250)));
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("123456789m"), None);
        assert_eq!(h("m"), None);
        assert_eq!(h("12x"), None);
    }
}
