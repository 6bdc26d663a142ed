//! Scripted faults: canned responses that the simulator sends instead of
//! its own, for the next few requests that match.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};

/// A scripted fault: the status, headers and body to answer the next
/// matching request(s) with, before anything else the simulator does
/// (overload, authorization, rate limits and sessions are all skipped).
///
/// Built with [`Fault::status`] and consuming setters; queue it with
/// [`SimHandle::script`](super::SimHandle::script). Faults are checked in
/// the order they were scripted; the first that matches answers and uses up
/// one of its [`times`](Fault::times). No `Content-Type` is sent unless one
/// is added with [`header`](Fault::header).
///
/// ```
/// use http::{header::RETRY_AFTER, HeaderValue, Method, StatusCode};
/// use mpsd_sim::Fault;
///
/// // The next two GETs of any session answer 503 with `Retry-After: 2`.
/// let fault = Fault::status(StatusCode::SERVICE_UNAVAILABLE)
///     .times(2)
///     .method(Method::GET)
///     .path_contains("/sessions/")
///     .header(RETRY_AFTER, HeaderValue::from_static("2"));
/// # let _ = fault;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Fault {
    status: StatusCode,
    times: usize,
    method: Option<Method>,
    path_contains: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    delay: Duration,
    breakage: Option<Breakage>,
}

/// How a fault breaks the connection instead of answering cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breakage {
    /// Close the connection without an answer.
    Reset,
    /// Announce the whole body, send this many bytes of it, then close.
    Truncate(usize),
    /// HTTP/2: reset the stream with `REFUSED_STREAM` (not processed).
    Refuse,
    /// Answer, then shut the connection down gracefully (HTTP/2: `GOAWAY`).
    GoAway,
}

impl Fault {
    /// A fault answering `status`, with no headers and an empty body, for the
    /// next request (any method, any path).
    pub fn status(status: StatusCode) -> Self {
        Self {
            status,
            times: 1,
            method: None,
            path_contains: None,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
            breakage: None,
        }
    }

    /// Answers the next `n` matching requests instead of one (0: none).
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    /// Matches only requests with this method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Matches only requests whose path (with its query) contains `s`.
    pub fn path_contains(mut self, s: impl Into<String>) -> Self {
        self.path_contains = Some(s.into());
        self
    }

    /// Adds a response header; repeat for several. Any bytes are allowed, so
    /// malformed values (`HeaderValue::from_bytes(b"\xff")`) can be tested.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The response body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Holds the answer back this long (on `tokio::time`), as a slow
    /// server would: the request is in flight meanwhile.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Closes the connection instead of answering, as a server that crashed
    /// or reset the connection would. The log records the fault's status
    /// with `broken` set.
    pub fn reset(mut self) -> Self {
        self.breakage = Some(Breakage::Reset);
        self
    }

    /// Sends the headers (with a `Content-Length` announcing the whole
    /// body), then only the first `n` bytes of the body, then closes the
    /// connection. With `n` at or past the body's length, the whole body
    /// goes out and the connection is still closed after it.
    pub fn truncate(mut self, n: usize) -> Self {
        self.breakage = Some(Breakage::Truncate(n));
        self
    }

    /// HTTP/2: resets the request's stream with `REFUSED_STREAM`, which
    /// tells the client the request was not processed, so that it may send
    /// it again, even a write. The status is only logged, with `broken`
    /// set. Over HTTP/1.1, which has no such answer, the connection is
    /// closed as with [`reset`](Self::reset).
    pub fn refuse_stream(mut self) -> Self {
        self.breakage = Some(Breakage::Refuse);
        self
    }

    /// Answers, then shuts the connection down gracefully, as a server
    /// being drained or redeployed does: over HTTP/2 a `GOAWAY` (hyper's:
    /// first with the highest stream id, then, a round trip later, with
    /// the last stream it processed), after which the client opens a new
    /// connection; over HTTP/1.1 the connection closes after this answer.
    pub fn go_away(mut self) -> Self {
        self.breakage = Some(Breakage::GoAway);
        self
    }

    pub(crate) fn breakage(&self) -> Option<Breakage> {
        self.breakage
    }

    pub(crate) fn delay_time(&self) -> Duration {
        self.delay
    }

    pub(crate) fn status_code(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    pub(crate) fn body_bytes(&self) -> &Bytes {
        &self.body
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().map_or(true, |m| m == method)
            && self
                .path_contains
                .as_deref()
                .map_or(true, |s| path.contains(s))
    }
}

/// The queue of scripted faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    queue: VecDeque<Fault>,
}

impl Faults {
    pub(crate) fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.queue.push_back(fault);
        }
    }

    /// The first fault matching this request, using up one of its times.
    pub(crate) fn take(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let index = self.queue.iter().position(|f| f.matches(method, path))?;
        let fault = &mut self.queue[index];
        fault.times -= 1;
        let answer = fault.clone();
        if fault.times == 0 {
            self.queue.remove(index);
        }
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_by_default_then_gone() {
        let mut faults = Faults::default();
        faults.push(Fault::status(StatusCode::BAD_GATEWAY));
        let f = faults.take(&Method::GET, "/x").unwrap();
        assert_eq!(f.status_code(), StatusCode::BAD_GATEWAY);
        assert!(faults.take(&Method::GET, "/x").is_none());
    }

    #[test]
    fn times_method_and_path_filter_in_script_order() {
        let mut faults = Faults::default();
        faults.push(Fault::status(StatusCode::CONFLICT).times(0));
        faults.push(
            Fault::status(StatusCode::SERVICE_UNAVAILABLE)
                .times(2)
                .method(Method::PUT)
                .path_contains("/sessions/a"),
        );
        faults.push(Fault::status(StatusCode::INTERNAL_SERVER_ERROR).body("boom"));
        let take = |faults: &mut Faults, m: Method, p: &str| {
            faults.take(&m, p).map(|f| f.status_code().as_u16())
        };
        assert_eq!(take(&mut faults, Method::PUT, "/sessions/a"), Some(503));
        // A GET skips the PUT-only fault and takes the catch-all one.
        assert_eq!(take(&mut faults, Method::GET, "/sessions/a"), Some(500));
        assert_eq!(take(&mut faults, Method::PUT, "/sessions/b"), None);
        assert_eq!(take(&mut faults, Method::PUT, "/sessions/a?x=1"), Some(503));
        assert_eq!(take(&mut faults, Method::PUT, "/sessions/a"), None);
    }

    #[test]
    fn headers_and_body_are_kept() {
        let f = Fault::status(StatusCode::TOO_MANY_REQUESTS)
            .header(
                http::header::RETRY_AFTER,
                HeaderValue::from_bytes(b"\xff").unwrap(),
            )
            .body(&b"{}"[..]);
        assert_eq!(f.headers().len(), 1);
        assert_eq!(f.headers()[0].1.as_bytes(), b"\xff");
        assert_eq!(f.body_bytes(), &Bytes::from_static(b"{}"));
    }
}
