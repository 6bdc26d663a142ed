//! Tower layers that speak the status-code contract of the Xbox Live
//! Multiplayer Session Directory (MPSD).

pub mod backoff;
pub mod classify;
pub mod identity;
pub mod outcome;
pub mod rate_limit;
pub mod response;
pub mod retry_after;
pub mod target;

#[cfg(feature = "sim")]
pub mod sim;

/// The boxed error type of bodies and services this crate wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
