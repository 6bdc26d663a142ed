//! The embedded MPSD simulator.
