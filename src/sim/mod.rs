//! The embedded MPSD simulator.

mod faults;
mod limits;
mod server;
mod store;

pub use faults::Fault;
pub use limits::{Overload, RateLimits, Window};
pub use server::{LogEntry, SimBuilder, SimHandle, Simulator};
