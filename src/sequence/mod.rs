//! Write sequencing: the conditional writes of one process to a session go
//! one at a time, and a write the process already knows to be stale is
//! rebased before it is sent.
//!
//! Writers of one process that race for a session lose to each other: the
//! stack saw the winner's answer (MPSD returns the whole session on 200,
//! 201 and 412), yet each loser pays a 412 and a rebased write. A
//! [`SessionBoard`] given to a [`RebaseLayer`](crate::rebase::RebaseLayer)
//! ([`RebaseLayer::sequence`](crate::rebase::RebaseLayer::sequence);
//! [`MpsdLayer::rebase`](crate::MpsdLayer::rebase) gives it one) removes
//! those 412s:
//!
//! - **One at a time, in order.** Conditional writes (`If-Match`, and
//!   create-only `If-None-Match: *`) to the same session (authority and
//!   session path; an element such as `.../members/me` counts as its
//!   session, and `/handles/{id}/session` as the handle's session, which
//!   the client cannot tell from the session's own URI) go one at a time, first come first served, through every
//!   clone of the stack and every stack given the same board. The next
//!   goes when the one before is done: a write that meets a 412 keeps its
//!   turn through its rebase rounds; a 200 or 201 with an `ETag` and an
//!   announced length within the rebase layer's session cap (1 MiB)
//!   releases it once its body (the session) has been read; any other
//!   answer, as soon as its head arrives (the board then forgets what it
//!   knew of the session). Writes to different sessions never wait for
//!   each other.
//! - **Rebased before sending.** The board keeps the latest session seen
//!   (from the answers to sequenced writes: 200, 201, and every 412,
//!   with the session it carried or a re-read found, whether the write
//!   is rebased on it or hands it back) and the `ETag`s it superseded. A write conditional on
//!   one of those is given to the rebase policy with the known session
//!   ([`LostRace::before_sending`](crate::rebase::policy::LostRace::before_sending))
//!   and goes out with the fresh `ETag`: no round trip of its own. So does
//!   a create-only write to a session known to exist. It costs no conflict
//!   round (`max_rounds` counts 412s); if the policy declines, the write
//!   goes as it came.
//! - **Bounds.** Waiting counts against the logical request's deadline: a
//!   write whose turn would come later is handed back unsent,
//!   [`Refused`](crate::error::Refused) by
//!   [`RefusedBy::Queue`](crate::error::RefusedBy::Queue); so is one that
//!   finds `max_waiting` writes already waiting. A caller that drops its
//!   future while waiting leaves the queue as it was, and the next writer
//!   goes at once when the write ahead is answered; a write whose answer
//!   never comes holds the queue only until its attempt is abandoned (the
//!   retry layer's [`AttemptTimedOut`](crate::retry::AttemptTimedOut) at the
//!   deadline, inside [`MpsdLayer`](crate::MpsdLayer)). Sessions are held
//!   in a map bounded by count and bytes, least recently used first out.
//!
//! What is **not** guaranteed: unconditional writes (no `If-Match`, or
//! `If-Match: *`) are sequenced only when they carry one of the two
//! headers, and never rebased (`If-Match: *` is sequenced but never
//! stale); reads are not sequenced and do not update the board (a read's
//! answer can arrive after a later write's, so its `ETag` is not known to
//! be the newer); ordering across processes not sharing a board through
//! Redis (below), or across stacks with separate boards, is the server's:
//! their writes still meet as 412s, rebased as without a board (16
//! conflict rounds by default, enough for 4 processes of 16 writers each
//! in `storm/contention_4x16`). An `ETag` the board never saw superseded
//! (read elsewhere, or older than the `max_waiting` kept) is sent as it
//! is, and a 412 is rebased as usual.
//!
//! # A fleet
//!
//! With the `redis` feature, boards built with
//! `SessionBoardBuilder::redis` share one write order and one latest
//! session per session across every process given a store of the same
//! Redis:
//!
//! - **One at a time, fleet-wide, first come first served.** A write whose
//!   turn came in its process's queue then takes a ticket in the session's
//!   queue in Redis (so each process has at most one ticket per session
//!   there). The turn goes with a lease of 5 s, renewed every third of it
//!   while the write lasts: a process that dies holding it stalls the
//!   session at most that long. The next ticket's process is told by
//!   Redis pub/sub the moment a turn is handed on (a waiter also asks every
//!   250 ms, should a message be lost or a lease run out).
//! - **Rebased before sending, fleet-wide.** Each turn ends by leaving in
//!   Redis what its answers said (the session and `ETag` of a 200, 201 or
//!   412, or that nothing usable is known), with the `ETag`s its writes
//!   superseded; the next turn is given them with no call of its own, so a
//!   write read in any process whose `If-Match` is superseded is rebased
//!   before it is sent. A document over 64 KiB is kept as nothing usable
//!   (the write then meets a 412 and is rebased as usual); a session's keys
//!   expire a minute after its last write (longer than any write waits by
//!   default: the 20 s deadline).
//! - **Bounds.** The wait for the fleet's turn counts against the logical
//!   request's deadline, as in one process: a write without its turn by
//!   then comes back unsent, [`Refused`](crate::error::Refused) by
//!   [`RefusedBy::Queue`](crate::error::RefusedBy::Queue); its ticket is
//!   given up, as is a dropped caller's.
//! - **Redis away.** A call to Redis that fails or times out gives the
//!   write its in-process turn alone at once (fail open): writes go on,
//!   ordered per process, and meet other processes' as 412s, rebased as
//!   usual. The store logs the first failure once, and the first success
//!   after (see the `fleet` module).
//!
//! Every key of one call shares the session's hash tag (Redis Cluster
//! slots), and the session is named by its path, so processes reaching
//! MPSD through different hosts share its queue. With the board in
//! Redis, every write in its process's queue waits for its fleet turn, so
//! [`SequenceStats::waited`] counts them all.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
//! use tower_mpsd::sequence::SessionBoard;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! // A session at ETag "1"; each write that matches makes it "2", "3", ...
//! let version = Arc::new(Mutex::new(1));
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let mpsd = service_fn({
//!     let (version, seen) = (version.clone(), seen.clone());
//!     move |req: Request<Full<Bytes>>| {
//!         let (version, seen) = (version.clone(), seen.clone());
//!         async move {
//!             let if_match = req.headers()["if-match"].to_str()?.to_owned();
//!             seen.lock().unwrap().push(if_match.clone());
//!             let mut v = version.lock().unwrap();
//!             let status = if if_match == format!("\"{v}\"") {
//!                 *v += 1;
//!                 StatusCode::OK
//!             } else {
//!                 StatusCode::PRECONDITION_FAILED
//!             };
//!             let res = Response::builder().status(status).header("etag", format!("\"{v}\""));
//!             Ok::<_, tower_mpsd::BoxError>(res.body(Full::from("{}"))?)
//!         }
//!     }
//! });
//! let board = SessionBoard::new();
//! let client = ServiceBuilder::new()
//!     .layer(RebaseLayer::new(ResendDelta).sequence(board.clone()))
//!     .service(mpsd);
//! let write = || {
//!     Request::put("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s")
//!         .header("if-match", "\"1\"")
//!         .body(Full::from(r#"{"properties":{"custom":{"ready":true}}}"#))
//! };
//! // Two writes read the session at "1". The second is rebased on the
//! // first one's answer before it is sent: no 412.
//! let (a, b) = tokio::join!(client.clone().oneshot(write()?), client.oneshot(write()?));
//! assert_eq!((a?.status(), b?.status()), (StatusCode::OK, StatusCode::OK));
//! assert_eq!(*seen.lock().unwrap(), ["\"1\"", "\"2\""]);
//! assert_eq!(board.stats().rebased_before_sending(), 1);
//! assert_eq!(board.stats().precondition_failed(), 0);
//! # Ok(())
//! # }
//! ```

mod board;

pub(crate) use board::{Count, Entry, Seen, Snapshot, Turn};
pub use board::{SequenceStats, SessionBoard, SessionBoardBuilder};
