//! One module per gRPC service of the contract.

pub mod audit;
pub mod consent;
pub mod coordination;
pub mod households;
pub mod notifications;
pub mod signals;
