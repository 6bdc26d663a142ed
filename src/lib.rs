//! Tower layers that speak the status-code contract of the Xbox Live
//! Multiplayer Session Directory (MPSD).

pub mod identity;
pub mod target;

#[cfg(feature = "sim")]
pub mod sim;
