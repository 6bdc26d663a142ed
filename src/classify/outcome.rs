//! The status table as a pure function of the call and the response head.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::uri::PathAndQuery;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};

use crate::logical::AttemptHistory;
use crate::rules::rate_limit::RateLimitInfo;
use crate::rules::retry_after;
use crate::rules::target::{Target, TargetKind};

/// What a request asked for, as far as classification needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The request method.
    pub method: Method,
    /// The kind of resource the URI names.
    pub target: TargetKind,
}

impl Call {
    /// A call of `method` on a target of kind `target`.
    pub fn new(method: Method, target: TargetKind) -> Self {
        Self { method, target }
    }

    /// The call a request makes.
    pub fn of<B>(request: &Request<B>) -> Self {
        Self::new(
            request.method().clone(),
            Target::parse(request.uri().path()).kind(),
        )
    }
}

/// A request's [`Call`], its path parsed only the first time it is asked
/// for: every answer is classified, but only a 204's outcome depends on
/// the path, so an answer nobody asks about is classified without
/// parsing it.
#[derive(Clone)]
pub(crate) struct LazyCall {
    method: Method,
    /// Shared with the request (no copy of its bytes).
    path: Option<PathAndQuery>,
    parsed: OnceLock<Call>,
}

impl LazyCall {
    /// The call `request` makes, not yet parsed.
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            path: request.uri().path_and_query().cloned(),
            parsed: OnceLock::new(),
        }
    }

    /// A call already known.
    pub(crate) fn known(call: Call) -> Self {
        Self {
            method: call.method.clone(),
            path: None,
            parsed: OnceLock::from(call),
        }
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// The request's path and query, if it was made from a request.
    pub(crate) fn path(&self) -> Option<&PathAndQuery> {
        self.path.as_ref()
    }

    /// The call, parsed now if it was not yet.
    pub(crate) fn get(&self) -> &Call {
        self.parsed.get_or_init(|| {
            let path = self.path.as_ref().map_or("", PathAndQuery::path);
            Call::new(self.method.clone(), Target::parse(path).kind())
        })
    }
}

/// Shows the call only if it was parsed: `Debug` parses nothing, and the
/// path may hold secrets in its query.
impl fmt::Debug for LazyCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parsed.get() {
            Some(call) => call.fmt(f),
            None => f.debug_tuple("Unparsed").field(&self.method).finish(),
        }
    }
}

impl PartialEq for LazyCall {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for LazyCall {}

/// What an answer's extensions say about it: its [`Outcome`] and the
/// [`Call`] it answers, put there by [`ClassifyLayer`](super::ClassifyLayer)
/// (or by the first layer of this crate that classified it), and, in the
/// final answer of a logical request, its
/// [`AttemptHistory`](crate::logical::AttemptHistory) (read it with
/// [`AttemptHistory::of`](crate::logical::AttemptHistory::of)): one entry,
/// so that the answer's extensions cost one allocation for all three.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Classified {
    /// What the answer means.
    pub outcome: Outcome,
    /// What the request asked; see [`call`](Self::call()).
    pub(crate) call: LazyCall,
    /// The body of a 429 was read, and `outcome` already says what it
    /// says.
    pub(crate) body_read: bool,
    /// Put here by the layer that made the logical request, once it is
    /// over.
    pub(crate) history: Option<AttemptHistory>,
}

impl Classified {
    #[cfg(test)]
    pub(crate) fn new(outcome: Outcome, call: Call) -> Self {
        Self::lazily(outcome, LazyCall::known(call))
    }

    pub(crate) fn lazily(outcome: Outcome, call: LazyCall) -> Self {
        Self {
            outcome,
            call,
            body_read: false,
            history: None,
        }
    }

    /// What the request asked, by which the outcome (and what the body
    /// holds, [`Outcome::body_kind`]) was told: parsed from the request's
    /// path the first time it is asked for.
    pub fn call(&self) -> &Call {
        self.call.get()
    }
}

/// The meaning of an MPSD response, one variant per row (and split) of the
/// service's status table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// 200: read (GET) or updated (PUT).
    Ok,
    /// 201: created.
    Created,
    /// 202: accepted but not completed; never retried automatically.
    Accepted,
    /// 204 on GET of a session: the session does not exist.
    SessionMissing,
    /// 204 on GET of an element: the session exists, the element does not.
    ElementMissing,
    /// 204 on PUT of a session: the PUT deleted the session (e.g. the last
    /// member left).
    SessionDeleted,
    /// 204 on PUT or DELETE of an element: the session existed when the
    /// operation began, but the session or the element no longer exists.
    ElementGone,
    /// 204 in a context the table does not describe.
    NoContent,
    /// 304 on GET with `If-None-Match`: the session has not changed.
    NotModified,
    /// 400: malformed request; the body is a message.
    BadRequest,
    /// 403 `text/plain`: not allowed at all; the body is a message.
    Forbidden,
    /// 403 `application/json`: the session is readable but this caller may
    /// not update it; the body is the whole session.
    ReadOnly,
    /// 404: the URI, handle, SCID, template, hopper or session is not found.
    NotFound,
    /// 405: the URI is plausible, the verb is wrong.
    MethodNotAllowed,
    /// 409: the request is incompatible with the session (e.g. constants).
    Conflict,
    /// 412 without a body: `If-None-Match` on a write hit an existing
    /// session, or there is nothing to return (the session is gone).
    PreconditionFailed,
    /// 412 `application/json`: an `If-Match` write lost a race; the body is
    /// the whole current session and `ETag` its current version.
    SessionChanged,
    /// 429: throttled by fine-grained rate limiting.
    TooManyRequests {
        /// The server's `Retry-After`, when well-formed.
        retry_after: Option<Duration>,
        /// The body's fields, once read ([`Outcome::with_body`]).
        rate_limit: Option<RateLimitInfo>,
    },
    /// 503: the service is overloaded.
    ServiceUnavailable {
        /// The server's `Retry-After`, when well-formed.
        retry_after: Option<Duration>,
    },
    /// 401, not in the table: the token was refused.
    Unauthorized,
    /// 408, 500, 502 or 504, not in the table: a transient failure that is
    /// safe to retry only when the request is safe to repeat.
    Transient {
        /// The status received.
        status: StatusCode,
    },
    /// Any other status the table does not list.
    Unexpected {
        /// The status received.
        status: StatusCode,
    },
}

/// What the body of a response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyKind {
    /// A whole session document (with its `ETag`).
    Session,
    /// One element of a session (a member, server or properties).
    Element,
    /// Other JSON: query results, a handle, a batch answer.
    Json,
    /// The rate-limit JSON of a 429.
    RateLimit,
    /// A human-readable message.
    Message,
    /// Nothing.
    Empty,
}

/// Whether, and why, an outcome may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retryable {
    /// Never retried: it succeeded, or repeating cannot help.
    No,
    /// 429: retry any method (the request was refused, not applied), not
    /// before `after` when given.
    Throttled {
        /// The server's `Retry-After`.
        after: Option<Duration>,
    },
    /// 503: retry any method (the request was refused, not applied), not
    /// before `after` when given.
    Overloaded {
        /// The server's `Retry-After`.
        after: Option<Duration>,
    },
    /// 408, 500, 502, 504: the server may have applied the request, so
    /// retry it only if it is safe to repeat (by default: GET, HEAD and
    /// OPTIONS; an MPSD PUT is a merge, not idempotent in effect).
    IfSafeToRepeat,
    /// 412: retry only after re-reading the session and rebasing the write.
    AfterRebase,
}

/// Classifies a response head, reading date forms of `Retry-After` against
/// the system clock.
pub fn classify(call: &Call, status: StatusCode, headers: &HeaderMap) -> Outcome {
    // The clock is read only for the two rows that may carry a date.
    classify_when(|| call, status, headers, SystemTime::now)
}

/// Classifies a response head, reading date forms of `Retry-After` against
/// `now`.
pub fn classify_at(
    call: &Call,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Outcome {
    classify_when(|| call, status, headers, || now)
}

/// [`classify`], with the call asked for only by the one row that
/// depends on it (204): a request's path is parsed only then.
pub(crate) fn classify_lazily(call: &LazyCall, status: StatusCode, headers: &HeaderMap) -> Outcome {
    classify_when(|| call.get(), status, headers, SystemTime::now)
}

fn classify_when<'c>(
    call: impl FnOnce() -> &'c Call,
    status: StatusCode,
    headers: &HeaderMap,
    now: impl FnOnce() -> SystemTime,
) -> Outcome {
    match status.as_u16() {
        200 => Outcome::Ok,
        201 => Outcome::Created,
        202 => Outcome::Accepted,
        204 => no_content(call()),
        304 => Outcome::NotModified,
        400 => Outcome::BadRequest,
        403 if carries_json(headers) => Outcome::ReadOnly,
        403 => Outcome::Forbidden,
        404 => Outcome::NotFound,
        405 => Outcome::MethodNotAllowed,
        409 => Outcome::Conflict,
        412 if carries_json(headers) => Outcome::SessionChanged,
        412 => Outcome::PreconditionFailed,
        429 => Outcome::TooManyRequests {
            retry_after: retry_after::delay(headers, now()),
            rate_limit: None,
        },
        503 => Outcome::ServiceUnavailable {
            retry_after: retry_after::delay(headers, now()),
        },
        401 => Outcome::Unauthorized,
        408 | 500 | 502 | 504 => Outcome::Transient { status },
        _ => Outcome::Unexpected { status },
    }
}

/// The four meanings of 204, by method and target.
fn no_content(call: &Call) -> Outcome {
    let target = call.target;
    match call.method {
        Method::GET if target == TargetKind::Session => Outcome::SessionMissing,
        Method::GET if target.is_element() => Outcome::ElementMissing,
        Method::PUT if target == TargetKind::Session => Outcome::SessionDeleted,
        Method::PUT | Method::DELETE if target.is_element() => Outcome::ElementGone,
        _ => Outcome::NoContent,
    }
}

/// Whether the head announces a JSON body that is not empty.
fn carries_json(headers: &HeaderMap) -> bool {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    let empty = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    json && !empty
}

impl Outcome {
    /// The outcome in `res`'s extensions ([`Classified`]), if a layer of
    /// this crate classified it.
    pub fn of<B>(res: &Response<B>) -> Option<Self> {
        res.extensions().get::<Classified>().map(|c| c.outcome)
    }

    /// The status code this outcome was classified from (for
    /// [`Unexpected`](Outcome::Unexpected), the one received).
    pub fn status(&self) -> StatusCode {
        let code = match self {
            Self::Ok => 200,
            Self::Created => 201,
            Self::Accepted => 202,
            Self::SessionMissing
            | Self::ElementMissing
            | Self::SessionDeleted
            | Self::ElementGone
            | Self::NoContent => 204,
            Self::NotModified => 304,
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::ReadOnly => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PreconditionFailed | Self::SessionChanged => 412,
            Self::TooManyRequests { .. } => 429,
            Self::ServiceUnavailable { .. } => 503,
            Self::Transient { status } | Self::Unexpected { status } => return *status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Whether the call did what was asked (2xx and 304). A 204 that says
    /// the session is missing is a success: the answer is "nothing there".
    pub fn is_success(&self) -> bool {
        let status = self.status();
        status.is_success() || status == StatusCode::NOT_MODIFIED
    }

    /// What the body holds, given the call that produced this outcome.
    pub fn body_kind(&self, call: &Call) -> BodyKind {
        match self {
            Self::Ok | Self::Created => success_body(call),
            Self::ReadOnly | Self::SessionChanged => BodyKind::Session,
            Self::TooManyRequests { .. } => BodyKind::RateLimit,
            Self::BadRequest
            | Self::Forbidden
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::Conflict
            | Self::Unauthorized
            | Self::Transient { .. }
            | Self::Unexpected { .. } => BodyKind::Message,
            Self::Accepted
            | Self::SessionMissing
            | Self::ElementMissing
            | Self::SessionDeleted
            | Self::ElementGone
            | Self::NoContent
            | Self::NotModified
            | Self::PreconditionFailed
            | Self::ServiceUnavailable { .. } => BodyKind::Empty,
        }
    }

    /// Whether, and why, the call may be retried.
    pub fn retryable(&self) -> Retryable {
        match *self {
            Self::TooManyRequests { retry_after, .. } => {
                Retryable::Throttled { after: retry_after }
            }
            Self::ServiceUnavailable { retry_after } => {
                Retryable::Overloaded { after: retry_after }
            }
            Self::Transient { .. } => Retryable::IfSafeToRepeat,
            Self::PreconditionFailed | Self::SessionChanged => Retryable::AfterRebase,
            _ => Retryable::No,
        }
    }

    /// The server's `Retry-After` delay, for 429 and 503.
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            Self::TooManyRequests { retry_after, .. }
            | Self::ServiceUnavailable { retry_after } => retry_after,
            _ => None,
        }
    }

    /// Adds what the body says: for a 429, the rate-limit fields when the
    /// body parses. Other outcomes are returned unchanged.
    #[must_use]
    pub fn with_body(self, body: &[u8]) -> Self {
        match self {
            Self::TooManyRequests { retry_after, .. } => Self::TooManyRequests {
                retry_after,
                rate_limit: RateLimitInfo::parse(body),
            },
            other => other,
        }
    }

    /// A short stable name for logs and metrics, e.g. `session_changed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Created => "created",
            Self::Accepted => "accepted",
            Self::SessionMissing => "session_missing",
            Self::ElementMissing => "element_missing",
            Self::SessionDeleted => "session_deleted",
            Self::ElementGone => "element_gone",
            Self::NoContent => "no_content",
            Self::NotModified => "not_modified",
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::ReadOnly => "read_only",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition_failed",
            Self::SessionChanged => "session_changed",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::ServiceUnavailable { .. } => "service_unavailable",
            Self::Unauthorized => "unauthorized",
            Self::Transient { .. } => "transient",
            Self::Unexpected { .. } => "unexpected",
        }
    }
}

/// 200 and 201 carry a session, except where the URI named something else.
fn success_body(call: &Call) -> BodyKind {
    match call.target {
        TargetKind::Session => BodyKind::Session,
        // A write to an element answers with the whole session; a read
        // answers with the element.
        t if t.is_element() && call.method == Method::GET => BodyKind::Element,
        t if t.is_element() => BodyKind::Session,
        _ => BodyKind::Json,
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status().as_u16(), self.name())?;
        if let Some(after) = self.retry_after() {
            write!(f, " (retry after {after:?})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Only an outcome that depends on the path (a 204's) parses it, and
    /// `Debug` shows no path, nor its query, which may hold secrets.
    #[test]
    fn a_call_is_parsed_only_when_an_outcome_needs_it() {
        let req = Request::get("http://h/serviceconfigs/c/sessionTemplates/t/sessions/s?k=s3cret")
            .body(())
            .unwrap();
        let call = LazyCall::of(&req);
        let ok = classify_lazily(&call, StatusCode::OK, &HeaderMap::new());
        assert_eq!(ok, Outcome::Ok);
        assert!(call.parsed.get().is_none(), "a 200 needs no path");
        let shown = format!("{call:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("sessions"),
            "{shown}"
        );
        let gone = classify_lazily(&call, StatusCode::NO_CONTENT, &HeaderMap::new());
        assert_eq!(gone, Outcome::SessionMissing);
        assert_eq!(
            call.parsed.get().map(|c| c.target),
            Some(TargetKind::Session)
        );
    }

    fn heads(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_static(v)))
            .collect()
    }

    fn outcome(
        method: Method,
        target: TargetKind,
        status: u16,
        h: &[(&'static str, &'static str)],
    ) -> Outcome {
        let call = Call::new(method, target);
        classify(&call, StatusCode::from_u16(status).unwrap(), &heads(h))
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");
    const TEXT: (&str, &str) = ("content-type", "text/plain");

    #[test]
    fn the_four_204s() {
        use TargetKind::*;
        assert_eq!(
            outcome(Method::GET, Session, 204, &[]),
            Outcome::SessionMissing
        );
        for element in [Member, Server, Properties] {
            assert_eq!(
                outcome(Method::GET, element, 204, &[]),
                Outcome::ElementMissing
            );
            assert_eq!(
                outcome(Method::PUT, element, 204, &[]),
                Outcome::ElementGone
            );
            assert_eq!(
                outcome(Method::DELETE, element, 204, &[]),
                Outcome::ElementGone
            );
        }
        assert_eq!(
            outcome(Method::PUT, Session, 204, &[]),
            Outcome::SessionDeleted
        );
        assert_eq!(
            outcome(Method::DELETE, Session, 204, &[]),
            Outcome::NoContent
        );
        assert_eq!(outcome(Method::POST, Handle, 204, &[]), Outcome::NoContent);
    }

    #[test]
    fn content_type_splits() {
        use TargetKind::*;
        assert_eq!(
            outcome(Method::PUT, Session, 403, &[TEXT]),
            Outcome::Forbidden
        );
        assert_eq!(outcome(Method::PUT, Session, 403, &[]), Outcome::Forbidden);
        assert_eq!(
            outcome(Method::PUT, Member, 403, &[JSON]),
            Outcome::ReadOnly
        );
        assert_eq!(
            outcome(
                Method::PUT,
                Session,
                403,
                &[("content-type", "Application/JSON")]
            ),
            Outcome::ReadOnly
        );
        assert_eq!(
            outcome(Method::PUT, Session, 412, &[]),
            Outcome::PreconditionFailed
        );
        assert_eq!(
            outcome(Method::PUT, Session, 412, &[JSON, ("content-length", "0")]),
            Outcome::PreconditionFailed
        );
        assert_eq!(
            outcome(Method::PUT, Properties, 412, &[JSON]),
            Outcome::SessionChanged
        );
    }

    #[test]
    fn retry_after_rows() {
        let t = TargetKind::Session;
        assert_eq!(
            outcome(Method::PUT, t, 503, &[("retry-after", "7")]),
            Outcome::ServiceUnavailable {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            outcome(Method::PUT, t, 503, &[("retry-after", "soon")]),
            Outcome::ServiceUnavailable { retry_after: None }
        );
        let throttled = outcome(Method::GET, t, 429, &[("retry-after", "3"), JSON]);
        assert_eq!(
            throttled.retryable(),
            Retryable::Throttled {
                after: Some(Duration::from_secs(3))
            }
        );
        let with_body = throttled.with_body(br#"{"maxRequests":30,"limitType":"Rate"}"#);
        let Outcome::TooManyRequests {
            rate_limit: Some(info),
            ..
        } = with_body
        else {
            panic!("{with_body:?}")
        };
        assert_eq!(info.max_requests, Some(30));
        assert_eq!(throttled.with_body(b"garbage"), throttled);
    }

    #[test]
    fn every_status_lands_somewhere() {
        let call = Call::new(Method::GET, TargetKind::Other);
        for code in 100..=999 {
            let status = StatusCode::from_u16(code).unwrap();
            let o = classify(&call, status, &HeaderMap::new());
            assert_eq!(o.status(), status, "{o:?}");
            let _ = (o.body_kind(&call), o.retryable(), o.to_string());
        }
        assert_eq!(
            outcome(Method::GET, TargetKind::Other, 401, &[]),
            Outcome::Unauthorized
        );
        for code in [408, 500, 502, 504] {
            assert_eq!(
                outcome(Method::GET, TargetKind::Other, code, &[]).retryable(),
                Retryable::IfSafeToRepeat
            );
        }
        assert_eq!(
            outcome(Method::GET, TargetKind::Other, 418, &[]).retryable(),
            Retryable::No
        );
    }

    #[test]
    fn body_kinds() {
        use TargetKind::*;
        let get_member = Call::new(Method::GET, Member);
        let put_member = Call::new(Method::PUT, Member);
        assert_eq!(Outcome::Ok.body_kind(&get_member), BodyKind::Element);
        assert_eq!(Outcome::Ok.body_kind(&put_member), BodyKind::Session);
        assert_eq!(
            Outcome::Created.body_kind(&Call::new(Method::PUT, Session)),
            BodyKind::Session
        );
        assert_eq!(
            Outcome::Ok.body_kind(&Call::new(Method::POST, Query)),
            BodyKind::Json
        );
        assert_eq!(Outcome::ReadOnly.body_kind(&put_member), BodyKind::Session);
        assert_eq!(Outcome::Conflict.body_kind(&put_member), BodyKind::Message);
        assert_eq!(Outcome::Accepted.body_kind(&put_member), BodyKind::Empty);
        assert!(Outcome::SessionMissing.is_success());
        assert!(Outcome::NotModified.is_success());
        assert!(!Outcome::SessionChanged.is_success());
        assert_eq!(Outcome::Accepted.retryable(), Retryable::No);
    }
}
