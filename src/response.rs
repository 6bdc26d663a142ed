//! Turning an MPSD response into a `Result`: the typed success (the body,
//! its kind and the session's `ETag`) or a typed error (the outcome, the
//! message or the whole session), reading the body under a size cap.
//!
//! The [`Outcome`] comes from the response's extensions
//! ([`Classified`]), where
//! [`ClassifyLayer`](crate::classify::ClassifyLayer) (and every stack this
//! crate builds) puts it. Without it the response is classified from its
//! status and headers alone, which cannot tell the four 204s apart
//! (they all read as [`Outcome::NoContent`]).
//!
//! The response's [`AttemptHistory`] (what the layers did: every send, the
//! waits, why they gave up) is taken out of its extensions before the body
//! is read, and kept in the success ([`MpsdSuccess::history`]) or the
//! error ([`MpsdError::history`]), so reading loses nothing.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Response, StatusCode};
//! use http_body_util::Full;
//! use tower_mpsd::classify::Outcome;
//! use tower_mpsd::response::{read_response, MpsdError, Payload};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let res = Response::builder()
//!     .status(StatusCode::CONFLICT)
//!     .header("content-type", "text/plain")
//!     .body(Full::new(Bytes::from("constants conflict")))
//!     .unwrap();
//! match read_response(res, 64 * 1024).await {
//!     Err(MpsdError::Status { outcome: Outcome::Conflict, payload: Payload::Message(m), .. }) => {
//!         assert_eq!(m, "constants conflict")
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # }
//! ```

use std::fmt;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Response};
use http_body::Body;

use crate::body::{read_within, Read};
use crate::classify::{classify, BodyKind, Call, Classified, Outcome};
use crate::logical::AttemptHistory;
use crate::rules::target::TargetKind;
use crate::BoxError;

/// A body, by what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// A whole session document.
    Session(Bytes),
    /// Other JSON: an element, query results, a handle, a 429's fields.
    Json(Bytes),
    /// A human-readable message (invalid UTF-8 replaced).
    Message(String),
    /// No body.
    Empty,
}

impl Payload {
    fn new(kind: BodyKind, bytes: Bytes) -> Self {
        if bytes.is_empty() {
            return Self::Empty;
        }
        match kind {
            BodyKind::Session => Self::Session(bytes),
            BodyKind::Element | BodyKind::Json | BodyKind::RateLimit => Self::Json(bytes),
            // A body where none was expected is kept, as text: nothing is lost.
            _ => Self::Message(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// Parses a session or JSON payload; `None` for messages and empty bodies.
    pub fn json(&self) -> Option<Result<serde_json::Value, serde_json::Error>> {
        match self {
            Self::Session(bytes) | Self::Json(bytes) => Some(serde_json::from_slice(bytes)),
            _ => None,
        }
    }
}

/// A successful MPSD call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpsdSuccess {
    /// What the response means.
    pub outcome: Outcome,
    /// The session's `ETag`, when the response carried one.
    pub etag: Option<HeaderValue>,
    /// The body.
    pub payload: Payload,
    /// What the layers did to get it, taken from the response's
    /// extensions; `None` when the response came through none of this
    /// crate's stacks.
    pub history: Option<AttemptHistory>,
}

/// Why an MPSD call did not succeed.
///
/// `Display` shows the outcome and, for a plain-text answer, the server's
/// message (trimmed, at most 200 characters, control characters replaced):
/// `mpsd answered 403 forbidden: "not allowed"`. A session or other JSON
/// body is never shown: it may hold more than a message (other members and
/// their properties); match [`MpsdError::Status`] for it.
#[derive(Debug)]
#[non_exhaustive]
pub enum MpsdError {
    /// The service answered with an outcome that is not a success.
    Status {
        /// What the response means.
        outcome: Outcome,
        /// The session's `ETag` (with 412 and 403 JSON bodies).
        etag: Option<HeaderValue>,
        /// The message or the whole session.
        payload: Payload,
        /// What the layers did; see [`MpsdError::history`].
        history: Option<AttemptHistory>,
    },
    /// The body is larger than the cap; it was not read.
    BodyTooLarge {
        /// What the response means.
        outcome: Outcome,
        /// The cap in bytes.
        limit: usize,
        /// What the layers did; see [`MpsdError::history`].
        history: Option<AttemptHistory>,
    },
    /// Reading the body failed.
    Body {
        /// What the response means.
        outcome: Outcome,
        /// The body's error.
        source: BoxError,
        /// What the layers did; see [`MpsdError::history`].
        history: Option<AttemptHistory>,
    },
}

impl MpsdError {
    /// The outcome of the response this error comes from.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Status { outcome, .. }
            | Self::BodyTooLarge { outcome, .. }
            | Self::Body { outcome, .. } => *outcome,
        }
    }

    /// What the layers did to get the response (every send, the waits,
    /// why they gave up: a 503 past the deadline says
    /// [`GaveUp::Deadline`](crate::logical::GaveUp::Deadline)), taken from
    /// its extensions; `None` when it came through none of this crate's
    /// stacks.
    pub fn history(&self) -> Option<&AttemptHistory> {
        match self {
            Self::Status { history, .. }
            | Self::BodyTooLarge { history, .. }
            | Self::Body { history, .. } => history.as_ref(),
        }
    }
}

/// The most characters of a server's message that [`MpsdError`]'s
/// `Display` shows: a sentence or two, enough to say why, short enough for
/// one log line.
const SHOWN_MESSAGE_CHARS: usize = 200;

/// Writes `message` for a log line: trimmed, at most `max` characters (cut
/// with "…"), line breaks and tabs as spaces, other control and bidi
/// characters (which could forge or reorder log lines) as U+FFFD.
fn write_message(f: &mut fmt::Formatter<'_>, message: &str, max: usize) -> fmt::Result {
    use fmt::Write;
    let mut chars = message.trim().chars();
    for c in chars.by_ref().take(max) {
        f.write_char(match c {
            '\n' | '\r' | '\t' => ' ',
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })?;
    }
    if chars.next().is_some() {
        f.write_char('…')?;
    }
    Ok(())
}

/// Whether the status table gives `outcome` a human-readable message.
fn says_in_words(outcome: &Outcome) -> bool {
    // The call matters only to a success's body, which is never an error's.
    let any = Call::new(Method::GET, TargetKind::Other);
    outcome.body_kind(&any) == BodyKind::Message
}

impl fmt::Display for MpsdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Only a body the status table says is a message is shown: a
            // body where none was expected, kept as text, could be anything,
            // a session included.
            Self::Status {
                outcome,
                payload: Payload::Message(message),
                ..
            } if !message.trim().is_empty() && says_in_words(outcome) => {
                write!(f, "mpsd answered {outcome}: \"")?;
                write_message(f, message, SHOWN_MESSAGE_CHARS)?;
                f.write_str("\"")
            }
            Self::Status { outcome, .. } => write!(f, "mpsd answered {outcome}"),
            Self::BodyTooLarge { outcome, limit, .. } => {
                write!(f, "mpsd answered {outcome} with a body over {limit} bytes")
            }
            Self::Body { outcome, .. } => write!(f, "mpsd answered {outcome} but its body failed"),
        }
    }
}

impl std::error::Error for MpsdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Body { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Reads `response` (its body up to `limit` bytes) into a typed result,
/// which keeps the response's [`AttemptHistory`].
///
/// A body announced or found to be larger than `limit` is
/// [`MpsdError::BodyTooLarge`], whatever the status: at most `limit` bytes
/// (plus one frame) are ever buffered.
pub async fn read_response<B>(
    mut response: Response<B>,
    limit: usize,
) -> Result<MpsdSuccess, MpsdError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    // Without the request, the four 204s cannot be told apart.
    let unknown = Call::new(Method::GET, TargetKind::Other);
    let classified = response.extensions().get::<Classified>();
    let outcome = classified.map_or_else(
        || classify(&unknown, response.status(), response.headers()),
        |c| c.outcome,
    );
    let learnt = classified.is_some_and(|c| c.body_read);
    let kind = outcome.body_kind(classified.map_or(&unknown, Classified::call));
    let etag = response.headers().get(header::ETAG).cloned();
    let history = response
        .extensions_mut()
        .get_mut::<Classified>()
        .and_then(|classified| classified.history.take());
    let bytes = match read_capped(response, limit).await {
        Ok(bytes) => bytes,
        Err(failure) => return Err(failure.into_error(outcome, limit, history)),
    };
    // Parsed here only if `ClassifyLayer` has not already.
    let outcome = if learnt {
        outcome
    } else {
        outcome.with_body(&bytes)
    };
    let payload = Payload::new(kind, bytes);
    if outcome.is_success() {
        Ok(MpsdSuccess {
            outcome,
            etag,
            payload,
            history,
        })
    } else {
        Err(MpsdError::Status {
            outcome,
            etag,
            payload,
            history,
        })
    }
}

/// Why a capped read failed.
pub(crate) enum ReadFailure {
    TooLarge,
    Body(BoxError),
}

impl ReadFailure {
    fn into_error(
        self,
        outcome: Outcome,
        limit: usize,
        history: Option<AttemptHistory>,
    ) -> MpsdError {
        match self {
            Self::TooLarge => MpsdError::BodyTooLarge {
                outcome,
                limit,
                history,
            },
            Self::Body(source) => MpsdError::Body {
                outcome,
                source,
                history,
            },
        }
    }
}

/// Reads a response body, refusing one announced or found to exceed `limit`.
pub(crate) async fn read_capped<B>(
    response: Response<B>,
    limit: usize,
) -> Result<Bytes, ReadFailure>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if announced_over(response.headers(), limit) {
        return Err(ReadFailure::TooLarge);
    }
    collect_capped(response.into_body(), limit).await
}

/// Whether `headers` announce (by `Content-Length`) a body over `limit`.
pub(crate) fn announced_over(headers: &HeaderMap, limit: usize) -> bool {
    content_length(headers).is_some_and(|len| len > limit as u64)
}

/// The body's length as `headers` announce it, when they do.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a body, refusing one that exceeds `limit`.
pub(crate) async fn collect_capped<B>(body: B, limit: usize) -> Result<Bytes, ReadFailure>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    // A poll loop of our own, not http-body-util's `Limited` and
    // `collect()`: a future holding theirs cannot be proven `Send` when the
    // body's error is `BoxError` (rustc loses the lifetime of the
    // `Into<BoxError>` bound inside an async block), so a task that called
    // `read_response` on such a body could not be spawned.
    let mut body = std::pin::pin!(body);
    let mut read = BytesMut::new();
    match std::future::poll_fn(|cx| read_within(body.as_mut(), &mut read, limit, cx)).await {
        Ok(Read::Whole(_)) => Ok(read.freeze()),
        Ok(Read::OverCap) => Err(ReadFailure::TooLarge),
        Err(e) => Err(ReadFailure::Body(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::Full;

    /// A task that reads a body whose error is `BoxError` can be spawned
    /// (it could not while the read went through `Limited::collect`).
    #[tokio::test]
    async fn reading_a_boxed_body_can_be_spawned() {
        use http_body_util::{combinators::BoxBody, BodyExt};
        let body: BoxBody<Bytes, BoxError> =
            Full::from("not allowed").map_err(|e| match e {}).boxed();
        let res = Response::builder()
            .status(403)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body)
            .unwrap();
        let read = tokio::spawn(read_response(res, 1 << 10)).await.unwrap();
        assert_eq!(read.unwrap_err().outcome(), Outcome::Forbidden);
    }

    fn response(
        status: u16,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> Response<Full<Bytes>> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Full::new(Bytes::from_static(body))).unwrap()
    }

    #[tokio::test]
    async fn success_keeps_etag_and_body() {
        let mut res = response(
            200,
            &[("etag", "\"e1\""), ("content-type", "application/json")],
            b"{\"a\":1}",
        );
        res.extensions_mut().insert(Classified::new(
            Outcome::Ok,
            Call::new(Method::GET, TargetKind::Session),
        ));
        let ok = read_response(res, 1024).await.unwrap();
        assert_eq!(ok.etag.unwrap(), "\"e1\"");
        assert_eq!(
            ok.payload,
            Payload::Session(Bytes::from_static(b"{\"a\":1}"))
        );
        assert_eq!(ok.payload.json().unwrap().unwrap()["a"], 1);
    }

    #[tokio::test]
    async fn session_changed_carries_the_session() {
        let res = response(
            412,
            &[("etag", "\"e2\""), ("content-type", "application/json")],
            b"{}",
        );
        match read_response(res, 1024).await {
            Err(MpsdError::Status {
                outcome,
                etag,
                payload,
                history,
            }) => {
                assert_eq!(history, None, "no stack, no history");
                assert_eq!(outcome, Outcome::SessionChanged);
                assert_eq!(etag.unwrap(), "\"e2\"");
                assert_eq!(payload, Payload::Session(Bytes::from_static(b"{}")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn throttled_reads_rate_limit_fields() {
        let res = response(429, &[("retry-after", "2")], br#"{"maxRequests":30}"#);
        let err = read_response(res, 1024).await.unwrap_err();
        let Outcome::TooManyRequests {
            rate_limit: Some(info),
            ..
        } = err.outcome()
        else {
            panic!("{err:?}")
        };
        assert_eq!(info.max_requests, Some(30));
    }

    /// A body `ClassifyLayer` already read is not parsed again: its
    /// outcome already says what the body says.
    #[tokio::test]
    async fn a_429_body_learnt_below_is_not_parsed_again() {
        let mut res = response(429, &[], br#"{"maxRequests":30}"#);
        let learnt = Outcome::TooManyRequests {
            retry_after: None,
            rate_limit: None,
        };
        let mut classified = Classified::new(learnt, Call::new(Method::GET, TargetKind::Other));
        classified.body_read = true;
        res.extensions_mut().insert(classified);
        assert_eq!(
            read_response(res, 1024).await.unwrap_err().outcome(),
            learnt
        );
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let res = response(200, &[], &[b'x'; 100]);
        assert!(matches!(
            read_response(res, 99).await,
            Err(MpsdError::BodyTooLarge { limit: 99, .. })
        ));
        let announced = response(409, &[("content-length", "1000000000")], b"");
        assert!(matches!(
            read_response(announced, 99).await,
            Err(MpsdError::BodyTooLarge {
                outcome: Outcome::Conflict,
                ..
            })
        ));
        let exact = response(200, &[], &[b'x'; 99]);
        assert!(read_response(exact, 99).await.is_ok());
    }

    fn status_error(outcome: Outcome, payload: Payload) -> MpsdError {
        MpsdError::Status {
            outcome,
            etag: None,
            payload,
            history: None,
        }
    }

    #[test]
    fn display_shows_the_servers_message() {
        let err = status_error(Outcome::Forbidden, Payload::Message("not allowed\n".into()));
        assert_eq!(
            err.to_string(),
            "mpsd answered 403 forbidden: \"not allowed\""
        );
        let blank = status_error(Outcome::Forbidden, Payload::Message(" \r\n".into()));
        assert_eq!(blank.to_string(), "mpsd answered 403 forbidden");
    }

    #[test]
    fn display_never_shows_a_json_body() {
        let secret =
            Bytes::from_static(br#"{"members":{"me":{"properties":{"password":"hunter2"}}}}"#);
        for payload in [
            Payload::Session(secret.clone()),
            Payload::Json(secret),
            Payload::Empty,
        ] {
            let shown = status_error(Outcome::SessionChanged, payload).to_string();
            assert_eq!(shown, "mpsd answered 412 session_changed");
        }
    }

    /// A body where the table expects none is kept as text, but it could
    /// be anything: it is never shown.
    #[test]
    fn display_never_shows_a_body_the_table_does_not_call_a_message() {
        let unexpected = Payload::Message(r#"{"password":"hunter2"}"#.into());
        let shown = status_error(Outcome::PreconditionFailed, unexpected).to_string();
        assert_eq!(shown, "mpsd answered 412 precondition_failed");
    }

    #[test]
    fn display_bounds_a_long_message_on_a_char_boundary() {
        // 'é' is two bytes: a byte cut at 200 would split one.
        let long = "é".repeat(150) + &"x".repeat(150);
        let shown = status_error(Outcome::Conflict, Payload::Message(long)).to_string();
        let quoted = shown.split_once(": \"").unwrap().1;
        let quoted = quoted.strip_suffix('"').unwrap();
        assert_eq!(quoted.chars().count(), SHOWN_MESSAGE_CHARS + 1);
        assert_eq!(quoted, "é".repeat(150) + &"x".repeat(50) + "…");
        println!("long message shown as: {shown}");

        let exact = "y".repeat(SHOWN_MESSAGE_CHARS);
        let shown = status_error(Outcome::Conflict, Payload::Message(exact.clone())).to_string();
        assert!(
            shown.ends_with(&format!("\"{exact}\"")),
            "no ellipsis at the limit"
        );
    }

    #[test]
    fn display_replaces_control_characters() {
        let forged = "denied\r\nINFO admin logged in\u{1b}[2J\u{7f}\u{202e}txt.exe\0end";
        let shown = status_error(Outcome::Forbidden, Payload::Message(forged.into())).to_string();
        println!("control characters shown as: {shown}");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.ends_with(
            "\"denied  INFO admin logged in\u{fffd}[2J\u{fffd}\u{fffd}txt.exe\u{fffd}end\""
        ));
    }

    #[tokio::test]
    async fn display_of_a_read_403_shows_its_message() {
        let res = response(403, &[("content-type", "text/plain")], b"not allowed");
        let err = read_response(res, 1024).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "mpsd answered 403 forbidden: \"not allowed\""
        );
        println!("403: {err}");
    }

    #[tokio::test]
    async fn unexpected_bodies_are_kept() {
        let res = response(503, &[], b"busy");
        let err = read_response(res, 1024).await.unwrap_err();
        assert!(
            matches!(err, MpsdError::Status { payload: Payload::Message(ref m), .. } if m == "busy")
        );
        assert_eq!(StatusCode::SERVICE_UNAVAILABLE, err.outcome().status());
    }
}
