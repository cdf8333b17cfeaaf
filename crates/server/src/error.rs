//! Every error a caller can see, mapped to a gRPC status in exactly one place, with the google.rpc
//! richer error model: BadRequest field violations, ErrorInfo with a reason from a closed set.

use std::collections::HashMap;
use std::time::Duration;

use signaalpoort_core::DenyReason;
use signaalpoort_store::{Rejection, StoreError};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

pub const ERROR_DOMAIN: &str = "signaalpoort.nl";

#[derive(Debug)]
pub enum ApiError {
    InvalidArgument(Vec<FieldViolation>),
    PermissionDenied {
        reason: DenyReason,
        detail: Option<String>,
    },
    NotFound(String),
    FailedPrecondition(String),
    ResourceExhausted {
        retry_after: Duration,
        what: String,
    },
    /// The store could not write; the call fails closed and nothing is returned.
    Store(StoreError),
    /// A bug: an invariant of the gateway itself did not hold.
    Internal(String),
    /// A statement of this call failed in the database; the call changed nothing (its record says
    /// so) and the other calls of its batch were carried out.
    NotStored,
    /// The request id was used before for another RPC or other content (AIP-155).
    RequestIdReused,
    /// The agency named to coordinate is not one the caller's basis covers.
    CoordinatorNotEligible,
    /// The answer would exceed the message size limit; the caller should page or narrow.
    ResponseTooLarge {
        size: usize,
        limit: usize,
    },
    /// The request body is not a valid encoding of the method's request message (bad wire
    /// format, invalid UTF-8 in a string field); what prost found wrong.
    MalformedRequest(String),
    /// The request message is larger than `limits.max_message_bytes`.
    RequestTooLarge {
        limit: usize,
    },
}

impl ApiError {
    pub fn field(field: &str, description: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn denied(reason: DenyReason) -> ApiError {
        ApiError::PermissionDenied {
            reason,
            detail: None,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::PermissionDenied { .. } => Code::PermissionDenied,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::Store(_) => Code::Unavailable,
            ApiError::Internal(_) | ApiError::NotStored => Code::Internal,
            ApiError::RequestIdReused => Code::InvalidArgument,
            ApiError::CoordinatorNotEligible => Code::FailedPrecondition,
            ApiError::ResponseTooLarge { .. } => Code::ResourceExhausted,
            ApiError::MalformedRequest(_) => Code::InvalidArgument,
            ApiError::RequestTooLarge { .. } => Code::ResourceExhausted,
        }
    }

    /// The reason written to the access log.
    pub fn log_reason(&self) -> String {
        match self {
            ApiError::PermissionDenied { reason, .. } => reason.error_reason(),
            ApiError::InvalidArgument(_) => "INVALID_ARGUMENT".into(),
            ApiError::NotFound(_) => "NOT_FOUND".into(),
            ApiError::FailedPrecondition(_) => "FAILED_PRECONDITION".into(),
            ApiError::ResourceExhausted { .. } => "RESOURCE_EXHAUSTED".into(),
            ApiError::Store(_) => "STORE_UNAVAILABLE".into(),
            ApiError::Internal(_) => "INTERNAL".into(),
            ApiError::NotStored => "STORE_STATEMENT_FAILED".into(),
            ApiError::RequestIdReused => "REQUEST_ID_REUSED".into(),
            ApiError::CoordinatorNotEligible => "COORDINATOR_NOT_ELIGIBLE".into(),
            ApiError::ResponseTooLarge { .. } => "RESPONSE_TOO_LARGE".into(),
            ApiError::MalformedRequest(_) => "MALFORMED_REQUEST".into(),
            ApiError::RequestTooLarge { .. } => "REQUEST_TOO_LARGE".into(),
        }
    }

    pub fn into_status(self) -> Status {
        match self {
            ApiError::InvalidArgument(violations) => {
                let summary = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                let details = ErrorDetails::with_bad_request(violations);
                Status::with_error_details(Code::InvalidArgument, summary, details)
            }
            ApiError::PermissionDenied { reason, detail } => {
                let message = match &detail {
                    Some(d) => format!("{}: {d}", reason.explanation()),
                    None => reason.explanation().to_owned(),
                };
                let mut metadata = HashMap::new();
                metadata.insert("explanation".to_owned(), reason.explanation().to_owned());
                if let Some(d) = detail {
                    metadata.insert("detail".to_owned(), d);
                }
                let details =
                    ErrorDetails::with_error_info(reason.error_reason(), ERROR_DOMAIN, metadata);
                Status::with_error_details(Code::PermissionDenied, message, details)
            }
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::ResourceExhausted { retry_after, what } => {
                let details = ErrorDetails::with_retry_info(Some(retry_after));
                Status::with_error_details(Code::ResourceExhausted, what, details)
            }
            ApiError::Internal(m) => {
                tracing::error!(detail = %m, "internal error");
                Status::internal("internal error")
            }
            ApiError::NotStored => Status::with_error_details(
                Code::Internal,
                "the change could not be stored; nothing was changed (the call is in the access log)",
                ErrorDetails::with_error_info(
                    "STORE_STATEMENT_FAILED",
                    ERROR_DOMAIN,
                    HashMap::new(),
                ),
            ),
            ApiError::RequestIdReused => {
                let message =
                    "request_id: was used before for another RPC or other request content";
                let mut details = ErrorDetails::with_bad_request(vec![FieldViolation::new(
                    "request_id",
                    "was used before for another RPC or other request content; use a new id",
                )]);
                details.set_error_info("REQUEST_ID_REUSED", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::CoordinatorNotEligible => {
                let message = "the named agency is not one your basis lets you coordinate with";
                let details = ErrorDetails::with_error_info(
                    "COORDINATOR_NOT_ELIGIBLE",
                    ERROR_DOMAIN,
                    HashMap::new(),
                );
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            ApiError::ResponseTooLarge { size, limit } => {
                let message = format!(
                    "the answer ({size} bytes) exceeds the message limit ({limit} bytes); ask for a smaller page or narrow the filter"
                );
                let mut metadata = HashMap::new();
                metadata.insert("limit_bytes".to_owned(), limit.to_string());
                let details =
                    ErrorDetails::with_error_info("RESPONSE_TOO_LARGE", ERROR_DOMAIN, metadata);
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::MalformedRequest(what) => {
                let mut metadata = HashMap::new();
                metadata.insert("problem".to_owned(), what.clone());
                let details =
                    ErrorDetails::with_error_info("MALFORMED_REQUEST", ERROR_DOMAIN, metadata);
                let message = format!(
                    "the request body is not a valid protobuf encoding of this method's request message ({what}); nothing was done"
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::RequestTooLarge { limit } => {
                let mut metadata = HashMap::new();
                metadata.insert("limit_bytes".to_owned(), limit.to_string());
                let details =
                    ErrorDetails::with_error_info("REQUEST_TOO_LARGE", ERROR_DOMAIN, metadata);
                let message = format!(
                    "the request message exceeds the message limit ({limit} bytes, limits.max_message_bytes); nothing was done"
                );
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store failure; call failed closed");
                let message = match &e {
                    StoreError::Unavailable(_) => "the database cannot take writes right now; the call was not carried out and changed nothing — retry later",
                    StoreError::WriterPoisoned => "the gateway stopped writing after a failed commit and is restarting; retry later",
                    _ => "the access log could not be written; the call was not carried out",
                };
                // The cause stays in the gateway's log; the caller learns only the kind.
                let kind = match &e {
                    StoreError::Unavailable(_) => "cannot_write_now",
                    StoreError::WriterPoisoned => "writer_stopped",
                    _ => "log_write_failed",
                };
                let mut metadata = HashMap::new();
                metadata.insert("store".to_owned(), kind.to_owned());
                let details =
                    ErrorDetails::with_error_info("STORE_UNAVAILABLE", ERROR_DOMAIN, metadata);
                Status::with_error_details(Code::Unavailable, message, details)
            }
        }
    }
}

impl ApiError {
    fn of_rejection(r: &Rejection) -> ApiError {
        match r {
            Rejection::NotFound(m) => ApiError::NotFound(m.clone()),
            Rejection::FailedPrecondition(m) => ApiError::FailedPrecondition(m.clone()),
            Rejection::PermissionDenied(reason) => ApiError::denied(*reason),
            Rejection::RequestIdReused => ApiError::RequestIdReused,
            Rejection::CoordinatorNotEligible => ApiError::CoordinatorNotEligible,
            Rejection::StatementFailed(_) => ApiError::NotStored,
        }
    }
}

/// The gRPC code a call the store refused ends with: what its access-log record says. Given to
/// the store at open (`StoreOptions::status_of`), so the record and the answer cannot differ.
pub fn rejection_status(r: &Rejection) -> i32 {
    ApiError::of_rejection(r).code() as i32
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        if let Rejection::StatementFailed(m) = &r {
            tracing::error!(error = %m, "a statement failed; this call changed nothing");
        }
        ApiError::of_rejection(&r)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

/// Collects field violations so a request reports every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the error of a parse and returns its value, if any.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }
}
