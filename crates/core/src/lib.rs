//! The Signaalpoort domain, without I/O: no async, no database, no network, no clock reads (time is
//! always a parameter). A raw BSN exists here only between [`Bsn::parse`] and
//! [`PseudonymKey::pseudonymise`].
//!
//! Where to start: [`policy`] (the rules), [`involvement`] (matching and what a caller may see),
//! [`consent`] (age rules and consent state), [`access_log`] (records, chain, checkpoints, verify).

pub mod access_log;
mod bsn;
pub mod chronicity;
pub mod consent;
pub mod coordination;
pub mod involvement;
pub mod policy;
mod pseudonym;
pub mod signal;
mod vocabulary;

pub use bsn::{complete_bsn, reads_as_bsn, Bsn, BsnError};
pub use pseudonym::{PseudonymKey, SubjectPseudonym, PSEUDONYM_KEY_LEN};
pub use vocabulary::{
    parse_reference, ActorId, Agency, Basis, Category, ContactError, ContactPoint, DenyReason,
    InvalidValue, Justification, Oin, Purpose, RequestId, Role,
};
