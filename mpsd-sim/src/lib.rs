//! An embedded MPSD simulator: a real hyper 1.x server on loopback that
//! speaks the status-code contract of the Multiplayer Session Directory,
//! for tests, demos and benches of `tower-mpsd`, as `tower-test` is for
//! `tower`.
//!
//! It is a test double, so it shares no code with the crate it tests: it
//! routes URIs and reads users and ETags with its own code, written from
//! MPSD's public documentation. A misparse in `tower-mpsd` would otherwise
//! be mirrored here, and every test would still pass.
//!
//! It keeps sessions in memory, merges PUT deltas the way MPSD does, hands
//! out ETags, enforces per-user rate limits, can shed load, and answers
//! scripted faults on demand. Every request is logged with the time it
//! arrived (from `tokio::time`, so paused-time tests see virtual times) and
//! the status answered.
//!
//! # Example
//!
//! ```
//! use http::{header::AUTHORIZATION, Request, StatusCode};
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use mpsd_sim::Simulator;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Simulator::start().await?;
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
//!
//! let uri = sim.session_uri("00000000-0000-0000-0000-00007a3c1d5e", "LobbySession", "lobby");
//! let get = Request::get(uri)
//!     .header(AUTHORIZATION, "XBL3.0 x=1234567890;token")
//!     .body(Full::default())?;
//! let response = client.request(get).await?;
//!
//! // No such session yet: MPSD answers a GET of a missing session with 204.
//! assert_eq!(response.status(), StatusCode::NO_CONTENT);
//! assert_eq!(sim.log()[0].user.as_deref(), Some("1234567890"));
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # HTTPS and HTTP/2
//!
//! [`SimBuilder::https`] serves TLS instead of plain HTTP, with a
//! self-signed certificate made at start (trusted through
//! [`SimHandle::root_store`] or [`SimHandle::certificate_der`]) and ALPN
//! offering `h2` then `http/1.1`: a client offering both speaks HTTP/2,
//! every request multiplexed on one connection. The log records each
//! request's [`version`](LogEntry::version) and
//! [`connection`](LogEntry::connection).
//!
//! # Each request, in order
//!
//! 1. **Scripted faults** ([`SimHandle::script`]): the first queued
//!    [`Fault`] that matches answers, and nothing below runs. A fault can
//!    also hold its answer back ([`Fault::delay`]), close the connection
//!    instead of answering ([`Fault::reset`]) or cut its body short
//!    ([`Fault::truncate`]), refuse an HTTP/2 stream
//!    ([`Fault::refuse_stream`]) or send a `GOAWAY` ([`Fault::go_away`]).
//!    A [`GoAway`] ([`SimHandle::script_go_away`]) takes a whole `h2`
//!    connection instead: its first request gets a `GOAWAY` that excludes
//!    or includes it, and nothing on it is processed.
//! 2. **Overload** ([`SimBuilder::overload`]): fixed windows counted from
//!    the server's start; the first `capacity` requests of a window are
//!    served, the rest get 503 `text/plain`, no body, and `Retry-After` =
//!    seconds until the window ends (rounded up, at least 1).
//! 3. **Authorization**: without an `Authorization: XBL3.0 x=<userhash>;<token>`
//!    header, 403 `text/plain`. The user hash is the caller's identity.
//!    With [`SimBuilder::check_tokens`], a token the simulator did not
//!    issue ([`SimHandle::issue_token`]) to that user, or one that
//!    expired, gets 401 `text/plain` with `WWW-Authenticate: XBL3.0`.
//! 4. **Rate limits** ([`RateLimits`]), per user hash, over a burst and a
//!    sustain window at once, both sliding (a request counts while it is
//!    strictly younger than the period). Default: MPSD's 30 per 15 s and
//!    300 per 300 s. Throttled requests count too, as at MPSD, so a client
//!    that keeps sending stays throttled. A throttled request gets 429
//!    `application/json` with `Retry-After` = seconds until one more request
//!    would pass (rounded up, at least 1; when both windows are tripped, the
//!    longer wait) and the documented body for the tripped window (burst if
//!    both): `{"version":1,"currentRequests":N,"maxRequests":M,
//!    "periodInSeconds":P,"limitType":"Rate"}`. Memory is bounded: four
//!    windows' worth of entries per user, and idle users are forgotten.
//! 5. **The body** is read up to [`SimBuilder::max_body_bytes`] (413
//!    `text/plain` beyond), then the request is **routed**.
//!
//! # Sessions
//!
//! `/serviceconfigs/{scid}/sessionTemplates/{template}/sessions/{name}`,
//! segments matched case-insensitively, the template's name too; unknown
//! templates ([`SimBuilder::templates`]) are 404. A document looks like
//!
//! ```json
//! {"contractVersion":107,"correlationId":"<32 hex>","changeNumber":1,
//!  "branch":"<GUID>","startTime":"2023-11-14T22:13:20.0000000Z",
//!  "constants":{"system":{},"custom":{}},"properties":{"system":{},"custom":{}},
//!  "members":{"0":{"constants":{"system":{"xuid":"<userhash>","index":0},"custom":{}},
//!                  "properties":{"system":{},"custom":{}},
//!                  "gamertag":"Player<last 4>","joinTime":"<RFC 3339>",
//!                  "activeTitleId":"1234567890","deviceToken":"<32 hex>",
//!                  "nat":"open","turn":false,"next":1}},
//!  "membersInfo":{"first":0,"next":1,"count":1,"accepted":1,"active":0},
//!  "hostCandidates":["<deviceToken>"],"servers":{}}
//! ```
//!
//! Members are keyed by index (from `membersInfo.next`, never reused); a
//! member's identity is its `constants.system.xuid`, the caller's user hash.
//!
//! - **PUT** merges a delta holding only `constants`, `properties`,
//!   `members`, `servers` and `roleTypes` (anything else: 400). Constants
//!   are set once (another value: 409); properties, servers and role types
//!   merge as RFC 7396 JSON merge-patch (`null` removes). In `members`:
//!   - `"me"`: an object adds the caller if absent (or takes the seat
//!     reserved for it) and merges its `constants`, `properties` and
//!     `roles`; `null` removes the caller.
//!   - `"reserve_0"`, `"reserve_1"`, ...: each reserves a seat for
//!     `constants.system.xuid` (a string, else 400): a member at the next
//!     index with `"reserved": true`, counted in `membersInfo.count` but
//!     not in `accepted`. The caller is added first, then reservations in
//!     numeric order. Reserving a user who is already a member (or already
//!     reserved) changes nothing. When that user writes `"me"` it takes the
//!     seat: same index, no `reserved`, and it is stamped as joining then.
//!     A reservation may carry `constants`, `properties` and `roles`.
//!   - A member's `constants.custom` and `properties.custom` may be any
//!     JSON value, not only an object. A non-object constant is one value
//!     set once (it may replace only the empty default `{}`); a non-object
//!     property replaces the bag, and `null` empties it to `{}` (a choice).
//!     The session's own `custom` bags stay objects.
//!   - `roles` (`{"roleTypeName": "roleName"}`) is stored on the member and
//!     merged as merge-patch. *Choice:* roles are not checked against
//!     `roleTypes` (the simulator has no template to declare them).
//!   - *Choice:* the service owns `constants.system.index`: a written one is
//!     ignored (neither stored nor a conflict), so a client that echoes a
//!     member it read keeps working.
//!
//!   A result without members deletes the session (or stores nothing) and
//!   answers 204; otherwise 201 (created) or 200 (updated) with the whole
//!   session and its new `ETag`. Every PUT that stores bumps `changeNumber`
//!   and the `ETag`, even when nothing changed.
//! - **Service-filled fields**, recomputed after every write:
//!   - per member, stamped when it joins (a reserved seat has none of these
//!     until it is taken, a choice): `joinTime`, `activeTitleId` (the fixed
//!     title id `"1234567890"`), `deviceToken` (32 hex, stable for the
//!     member), `nat` (`"open"`) and `turn` (`false`); from the start,
//!     `gamertag` (*choice:* `"Player"` and the xuid's last four
//!     characters: there is no profile service) and `constants.system`
//!     `xuid` and `index` (`initialize` is kept as written);
//!   - per member `next`: the index of the next member in index order, the
//!     last one's being `membersInfo.next`;
//!   - `membersInfo`: `first`, `next`, `count`, `accepted` (members not
//!     reserved) and `active` (members whose `properties.system.active` is
//!     `true`);
//!   - `startTime` (creation) and `branch` (a GUID), fixed at creation;
//!   - `hostCandidates`: the device tokens of the accepted members, in
//!     index order (*choice:* MPSD ranks them by connection quality, which
//!     the simulator does not measure);
//!   - `initializing`, only while some member has
//!     `constants.system.initialize: true`:
//!     `{"stage":"joining","stageStartTime":..,"episode":1}` from the write
//!     that brought the first such member (*choice:* no QoS is measured, so
//!     the episode never moves on to later stages);
//!   - `roleTypes` when set, with each declared role's `count` filled from
//!     the members holding it (*choice*; roles no role type declares are
//!     counted nowhere);
//!   - no `nextTimer`: the simulator runs no timers (reservations,
//!     inactivity and readiness never time out), so there is never one due.
//!
//!   Times are RFC 3339 UTC with seven fractional digits, as MPSD writes
//!   them. The server's clock is the wall time at its start plus the
//!   `tokio::time` elapsed since, so on a paused clock times move with
//!   virtual time and differences between them are exact.
//! - **`?nocommit=true`** answers 200 with what the merge would store, and
//!   stores nothing: the `ETag` is the current one (or, for a session that
//!   does not exist, a fresh one that matches nothing).
//! - **ETags** are quoted hex strings, unique for the simulator's lifetime,
//!   even across delete and re-create. `If-Match`/`If-None-Match` take `*` or
//!   a list of ETags, compared exactly. `If-Match` on a missing session is
//!   412 without a body; a stale `If-Match` is 412 with the whole current
//!   session and its `ETag`; `If-None-Match` naming an existing session
//!   (`*` for create-only writes) is 412 without a body. A GET whose
//!   `If-None-Match` names the current `ETag` is 304.
//! - **Elements**: `members/me`, `members/{index}`, `servers/{name}` and
//!   `properties`. GET: 404 when the session is missing, 204 when the element
//!   is, else 200 with the element and the session's `ETag`. PUT takes the
//!   element's part of a delta (`members/me` the `"me"` object,
//!   `properties` the properties delta, `servers/{name}` the server) and
//!   answers 200 with the whole session, or 204 if the session lost its last
//!   member; PUT of `members/{index}` is 405. DELETE of `members/me`,
//!   `servers/{name}` or the caller's own `members/{index}` answers 204
//!   (deleting an element that is not there changes nothing); another
//!   member's index is 403 `text/plain`.
//! - **Read-only sessions** (a simulator marker, not an MPSD field): when
//!   `constants.system.writeRestriction` is `"members"`, a caller who is not
//!   a member gets 403 `application/json` with the whole session and its
//!   `ETag` for any PUT or DELETE of the session or its elements: it can
//!   read the session but not update it.
//! - Other verbs (POST, PATCH, DELETE of a whole session) are 405
//!   `text/plain` with an `Allow` header.
//!
//! # Handles
//!
//! - `POST /handles` with `{"type":..,"sessionRef":{"scid","templateName","name"}}`:
//!   201 with the handle and `Location: /handles/{id}` (404 if the session
//!   does not exist). A handle has a GUID `id`, `type`, `version`,
//!   `sessionRef`, `ownerXuid` (the caller), `createTime` and `titleId`.
//!   An invite (`"type":"invite"`) also has `invitedXuid` (from the
//!   request; 400 if missing), `inviteAttributes` (as sent, default `{}`),
//!   `senderXuid` (the caller) and `expiration`: its creation plus one hour
//!   (*choice:* the docs do not give the lifetime). A transfer
//!   (`"type":"transfer"`, a lobby's members moved to the game session of
//!   `sessionRef`) must carry `originSessionRef`, the session they come
//!   from (400 without it; *choice:* it need not exist any more), and has
//!   it. A search handle (`"type":"search"`) has `searchAttributes` (an
//!   object, as sent, default `{}`). Handles never expire or vanish on
//!   their own.
//! - `GET /handles/{id}` (200 or 404), `DELETE /handles/{id}` (204 or 404).
//! - `/handles/{id}/session` is the session the handle points at, read and
//!   written as through the session's own URI: GET answers 200 with the
//!   session and its `ETag`, 304 for a matching `If-None-Match`, and 204
//!   when the session no longer exists; PUT is the same merge with the same
//!   preconditions and statuses (a stale `If-Match` is 412 with the current
//!   session, `If-None-Match: *` on an existing session 412 empty, a PUT
//!   that removes the last member 204; like a session PUT, it re-creates a
//!   session that is gone). Every answer once the handle is found carries
//!   `Content-Location` with the session's own URI path,
//!   `/serviceconfigs/{scid}/sessionTemplates/{template}/sessions/{name}`,
//!   spelled as the handle's `sessionRef`. An unknown handle is 404; other
//!   verbs 405.
//! - `POST /handles/query?include=relatedInfo,customProperties,roleInfo`:
//!   200 `{"results":[..]}`, the handles whose `type`, `sessionRef.scid`
//!   and `ownerXuid` match the body's `type`, `scid` and `owners.xuids`,
//!   when given (*choice:* `owners.people` and anything else in the body
//!   are ignored, the simulator having no social graph; an empty body
//!   filters nothing; a body that is not a JSON object is 400). Each
//!   result is the handle plus, only when `include` names them (case
//!   aside; the comma may be `%2C`) and the session still exists:
//!   `relatedInfo` `{"visibility","joinRestriction","closed",
//!   "maxMembersCount","membersCount"}` read from the session (defaults
//!   `"open"`, `"none"`, `false`, `100`), `customProperties` (the session's
//!   `properties.custom`) and `roleInfo` (`{"roleTypes":..}`).
//!
//! # Other resources
//!
//! - `GET /serviceconfigs/{scid}/sessions` and
//!   `.../sessionTemplates/{template}/sessions`: 200
//!   `{"results":[{"sessionRef":{"scid","templateName","name"}}]}`
//!   (filters are ignored).
//! - `POST .../batch`: 200 `{"results":{}}`.
//! - `POST /serviceconfigs/{scid}/hoppers/{hopper}` (submit a matchmaking
//!   ticket): 201 `{"ticketId":"<GUID>","waitTime":30}`, the shape
//!   Microsoft's SDK reads (the wait is the hopper's, below). The
//!   simulator only counts tickets and matches nobody, so
//!   `.../hoppers/{hopper}/tickets/{id}` is always 404. No route answers
//!   202 by itself: script it with a [`Fault`].
//! - `GET .../hoppers/{hopper}/stats`: 200 with the hopper's name, as
//!   `name` and `hopperName`, its wait time in seconds, as `waitTime` and
//!   `estimatedWaitTime` (*choice:* a fixed 30, the docs' sample value:
//!   nobody is ever matched, so there is no measured average), and
//!   `population`, the tickets submitted to that hopper of that SCID (all
//!   still waiting).
//! - Anything else is 404 `text/plain`.
//!
//! Error bodies (400, 403, 404, 405, 409, 413) are short `text/plain`
//! messages.

mod auth;
mod faults;
#[cfg(any(test, fuzzing))]
pub mod fuzz_checks;
mod go_away;
mod limits;
mod route;
mod server;
mod store;
mod tls;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use faults::Fault;
pub use go_away::{GoAway, GoAwaySent};
pub use limits::{Overload, RateLimits, Window};
pub use server::{LogEntry, SimBuilder, SimHandle, Simulator};

/// The boxed error of the simulator's response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
