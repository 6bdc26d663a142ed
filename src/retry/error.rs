//! The errors of a logical request that the retry layer adds, and the pure
//! rules that decide them: which URIs can be sent, which errors are the
//! caller's mistake, and which errors carry the attempt history.

use std::error::Error;
use std::fmt;

use http::Uri;

use crate::logical::AttemptHistory;
use crate::BoxError;

/// A request was refused before anything was sent: its URI has no scheme
/// or no authority (`/serviceconfigs/…` instead of
/// `https://sessiondirectory.xboxlive.com/serviceconfigs/…`).
///
/// No client can send it (hyper-util's fails with `UserAbsoluteUriRequired`),
/// and the cooldowns are keyed by the authority, so retrying it would only
/// wait out the deadline. A layer that completes relative URIs goes outside
/// the retry layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUri {
    uri: Uri,
}

impl InvalidUri {
    /// `Err` when `uri` lacks a scheme or an authority.
    pub(crate) fn check(uri: &Uri) -> Result<(), Self> {
        if uri.scheme().is_some() && uri.authority().is_some() {
            Ok(())
        } else {
            Err(Self { uri: uri.clone() })
        }
    }

    /// The URI refused.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

impl fmt::Display for InvalidUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let missing = match (self.uri.scheme(), self.uri.authority()) {
            (None, None) => "a scheme and an authority",
            (None, Some(_)) => "a scheme",
            _ => "an authority",
        };
        // The path only: a query is the caller's to show.
        write!(
            f,
            "request URI {:?} lacks {missing}: an absolute URI (https://host/path) is needed",
            self.uri.path()
        )
    }
}

impl Error for InvalidUri {}

/// Whether `error` is the caller's mistake, which no retry can mend: a
/// [`hyper::Error`] anywhere in its source chain with
/// [`is_user()`](hyper::Error::is_user) (the request body failed, a header
/// is not allowed, the connection task is gone), or an [`InvalidUri`].
///
/// hyper-util's legacy client reports some mistakes in its own error kinds
/// (`UserUnsupportedVersion`, `UserUnsupportedRequestMethod`), which it
/// does not expose; they are retried like any other error.
pub(crate) fn callers_mistake(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
            || e.is::<InvalidUri>()
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether `error` proves the server did not process the request: an
/// [`h2::Error`] anywhere in its source chain that was received from the
/// server ([`is_remote`](h2::Error::is_remote)) and is either
///
/// - a `RST_STREAM` with `REFUSED_STREAM` (RFC 9113 §8.7: "the stream was
///   closed prior to any processing"), or
/// - a `GOAWAY` with `NO_ERROR` (RFC 9113 §8.7: streams above the `GOAWAY`'s
///   last stream id "were not processed").
///
/// hyper 1 reports either as a `hyper::Error` whose source is that
/// `h2::Error`; hyper-util's legacy client wraps that in its own error
/// (`SendRequest`) and does not send it again itself.
///
/// Why a remote `GOAWAY` error names only excluded requests (h2 0.4):
/// on a `GOAWAY`, h2 fails each of its streams above the last stream id
/// with `Error::remote_go_away(reason)`, and keeps that error to refuse new
/// streams (`Streams::recv_go_away`), which never reach the server either.
/// The streams it includes run on; if the connection ends before they are
/// answered they fail with an I/O error (`BrokenPipe` from `recv_eof`, or
/// the read's own error), never a `GOAWAY` one.
///
/// Why only `NO_ERROR`: a `GOAWAY` with an error code has a second use in
/// h2, as the whole connection's result (`Connection::take_error` turns
/// the peer's code into `remote_go_away` too), and that one speaks for the
/// included streams as well. hyper 1.12 only logs it, but a client that
/// handed it to the requests still open would make a processed write look
/// excluded; `NO_ERROR` is never a connection's error (`take_error` gives
/// `Ok` for it), so it keeps its one meaning. A server sends `NO_ERROR`
/// when it drains or closes an idle connection, the case worth resending;
/// a request cut off by an error-coded `GOAWAY` keeps the method rules.
/// (With hyper 1.12 an included request gets `BrokenPipe` whatever the
/// code, as `tests/tls.rs` checks: leaving the codes out costs only the
/// resend of requests a failing server excluded.)
///
/// One narrow window is hyper's: its HTTP/2 client task checks the
/// connection right after handing a request to h2 (`ClientTask::poll`),
/// and gives that request the `GOAWAY`'s error if one came in between,
/// whatever its stream id. To have been processed, the request must have
/// been written, reached the server and been answered by that `GOAWAY`
/// between those two calls; one with a body cannot, since hyper starts
/// sending the body only after the check (and cancels the stream instead).
///
/// (Requests hyper had not yet handed to h2 when the `GOAWAY` came are
/// given back to hyper-util's legacy client, which sends them again on a
/// new connection by itself when the old one had been used before.)
pub(crate) fn never_processed(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            let drained = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
            return h2.is_remote() && (refused || drained);
        }
        next = e.source();
    }
    false
}

/// A logical request ended in an error of the inner service (a connection
/// refused or reset, a body the client could not send), after the attempts
/// in [`history`](Self::history).
///
/// The retry layer wraps every such error in this one type, so that the
/// history is there whatever the client; [`Error::source`] is the inner
/// service's error, and [`into_parts`](Self::into_parts) gives it back
/// owned. This crate's own errors ([`Refused`](crate::error::Refused), [`AttemptTimedOut`](super::AttemptTimedOut),
/// [`InvalidUri`], [`RebaseError`](crate::rebase::RebaseError)) are not wrapped: they
/// say what happened themselves, and downcast directly.
///
/// `Display` does not repeat the source's message: walk
/// [`source`](Error::source) (or print with `anyhow`'s `{:#}`) for it.
#[derive(Debug)]
pub struct RequestFailed {
    source: BoxError,
    history: AttemptHistory,
}

impl RequestFailed {
    /// Every attempt of the logical request, and why the layers stopped if
    /// they gave up.
    pub fn history(&self) -> &AttemptHistory {
        &self.history
    }

    /// The inner service's error and the history.
    pub fn into_parts(self) -> (BoxError, AttemptHistory) {
        (self.source, self.history)
    }

    /// Wraps `error` with `history`, unless it is one of this crate's own
    /// errors; an error already wrapped (by a retry layer further in) takes
    /// the newer history.
    pub(crate) fn wrap(error: BoxError, history: impl FnOnce() -> AttemptHistory) -> BoxError {
        if crate::error::is_own(&error) {
            return error;
        }
        let source = match error.downcast::<Self>() {
            Ok(wrapped) => wrapped.source,
            Err(error) => error,
        };
        Box::new(Self {
            source,
            history: history(),
        })
    }
}

impl fmt::Display for RequestFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.history.attempts().len();
        let s = if n == 1 { "" } else { "s" };
        write!(f, "mpsd request failed after {n} attempt{s}")
    }
}

impl Error for RequestFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::{Refused, RefusedBy};
    use crate::logical::{Attempt, Purpose};

    #[test]
    fn only_errors_received_from_the_server_prove_nothing_was_processed() {
        // Made here, not received from the server: no proof.
        for reason in [h2::Reason::REFUSED_STREAM, h2::Reason::NO_ERROR] {
            let local: BoxError = h2::Error::from(reason).into();
            assert!(!never_processed(&*local));
        }
        let io: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert!(!never_processed(&*io));
        // The received cases are tested over a real HTTP/2 connection in
        // tests/tls.rs: h2 makes remote resets and GOAWAYs only from frames.
    }

    #[test]
    fn only_absolute_uris_pass() {
        for ok in ["http://mpsd.test/handles/h1", "https://a:8443/"] {
            assert_eq!(InvalidUri::check(&ok.parse().unwrap()), Ok(()), "{ok}");
        }
        let refused = |uri: &str| InvalidUri::check(&uri.parse().unwrap()).unwrap_err();
        let relative = refused("/serviceconfigs/scid/sessionTemplates/t/sessions/s?secret=1");
        assert_eq!(
            relative.to_string(),
            "request URI \"/serviceconfigs/scid/sessionTemplates/t/sessions/s\" lacks a scheme \
             and an authority: an absolute URI (https://host/path) is needed"
        );
        assert_eq!(relative.uri().query(), Some("secret=1"));
        assert!(refused("mpsd.test:80")
            .to_string()
            .contains("lacks a scheme:"));
        assert!(refused("*")
            .to_string()
            .contains("lacks a scheme and an authority"));
    }

    #[derive(Debug)]
    struct Outer(BoxError);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_callers_mistake_is_found_anywhere_in_the_chain() {
        let invalid: BoxError = InvalidUri::check(&"/x".parse().unwrap())
            .unwrap_err()
            .into();
        assert!(callers_mistake(&*invalid));
        let nested: BoxError = Box::new(Outer(Box::new(Outer(invalid))));
        assert!(callers_mistake(&*nested));
        let reset: BoxError = Box::new(Outer(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        ))));
        assert!(!callers_mistake(&*reset));
    }

    fn history(n: usize) -> AttemptHistory {
        let mut history = AttemptHistory::default();
        let attempt = Attempt {
            purpose: Purpose::First,
            sent_after: Duration::ZERO,
            waited: Duration::ZERO,
            queued: Duration::ZERO,
            outcome: None,
        };
        for _ in 0..n {
            history.push(attempt.clone());
        }
        history
    }

    #[test]
    fn foreign_errors_are_wrapped_once_and_own_errors_not_at_all() {
        let io: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        let once = RequestFailed::wrap(io, || history(1));
        let twice = RequestFailed::wrap(once, || history(2));
        let failed = twice.downcast_ref::<RequestFailed>().unwrap();
        assert_eq!(failed.history().attempts().len(), 2, "the newer history");
        assert_eq!(failed.to_string(), "mpsd request failed after 2 attempts");
        let source = failed.source().unwrap();
        assert!(
            source.is::<std::io::Error>(),
            "the inner error, unwrapped once: {source:?}"
        );

        let cooling: BoxError = Refused::new(RefusedBy::Cooldown, Duration::from_secs(1), 0).into();
        let kept = RequestFailed::wrap(cooling, || unreachable!("own errors are not wrapped"));
        assert!(kept.is::<Refused>());
        let paced: BoxError = Refused::new(RefusedBy::Pace, Duration::from_secs(1), 0).into();
        assert!(RequestFailed::wrap(paced, || history(1)).is::<Refused>());
    }
}
