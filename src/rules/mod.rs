//! The pure rules the layers apply, with no I/O: what a URI names
//! ([`target`]), who is calling ([`identity`]), what `Retry-After` says
//! ([`retry_after`]), what a 429's body says ([`rate_limit`]), and how long
//! to wait before a retry ([`backoff`]). Each is tested exhaustively in its
//! own module; time and randomness are passed in.

pub mod backoff;
pub mod identity;
pub mod rate_limit;
pub mod retry_after;
pub mod target;
