//! The errors of a logical request that the retry layer adds, and the pure
//! rules that decide them: which URIs can be sent, which errors are the
//! caller's mistake, and which errors carry the attempt history.

use std::error::Error;
use std::{fmt, io};

use http::Uri;

use crate::logical::AttemptHistory;
use crate::BoxError;

/// A request was refused before anything was sent: its URI has no
/// authority, or a scheme other than `http` or `https`
/// (`/serviceconfigs/…` or `htp://…` instead of
/// `https://sessiondirectory.xboxlive.com/serviceconfigs/…`).
///
/// No client can send it (hyper-util's fails with `UserAbsoluteUriRequired`,
/// its connectors with "unsupported scheme"), and the cooldowns are keyed
/// by the authority, so retrying it would only wait out the deadline. It is
/// checked once, when the [logical request](crate::logical) is parsed, and
/// refused by the retry layer. A layer that completes relative URIs goes
/// outside the retry layer.
#[derive(Clone, PartialEq, Eq)]
pub struct InvalidUri {
    uri: Uri,
}

/// Written by hand, as `Display`: the path only, since the user-info and
/// query may hold secrets (`?` in `main` prints `Debug`).
impl fmt::Debug for InvalidUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidUri")
            .field("scheme", &self.uri.scheme_str())
            .field("host", &self.uri.host())
            .field("path", &self.uri.path())
            .finish()
    }
}

impl InvalidUri {
    /// `Err` when `uri` lacks an authority, or its scheme is not `http` or
    /// `https`.
    pub(crate) fn check(uri: &Uri) -> Result<(), Self> {
        let http = matches!(uri.scheme_str(), Some("http" | "https"));
        if http && uri.authority().is_some() {
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
        // The path only: a query is the caller's to show.
        let path = self.uri.path();
        let needed = "an absolute URI (https://host/path) is needed";
        match (self.uri.scheme_str(), self.uri.authority()) {
            (None, None) => write!(
                f,
                "request URI {path:?} lacks a scheme and an authority: {needed}"
            ),
            (None, Some(_)) => write!(f, "request URI {path:?} lacks a scheme: {needed}"),
            (Some(scheme @ ("http" | "https")), None) => write!(
                f,
                "request URI {path:?} lacks an authority after {scheme}: {needed}"
            ),
            // A scheme is short and names no secret; shown to say which.
            (Some(scheme), _) => write!(
                f,
                "request URI {path:?} has scheme {scheme:?}: only http and https can be sent"
            ),
        }
    }
}

impl Error for InvalidUri {}

/// What an error of the inner service says about its request: the one
/// reading of the error that the retry layer acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No attempt can succeed: the caller's mistake or the client's
    /// configuration. Handed back at once.
    Permanent,
    /// The server said it did not process the request (see
    /// [`never_processed`]): sent again at once, whatever the method.
    Unprocessed,
    /// No connection was established: nothing was sent, so it may be sent
    /// again whatever the method, after a backoff.
    NotConnected,
    /// It may have reached the server: retried only when safe to repeat.
    Unknown,
}

/// Reads `error`'s source chain, outermost first:
///
/// - **Permanent**: an [`InvalidUri`]; a [`hyper::Error`] with
///   [`is_user()`](hyper::Error::is_user) (the request body failed, a
///   header is not allowed); one of hyper-util's legacy client errors
///   that is neither a connect nor a send failure (its `User…` kinds, such
///   as an unsupported HTTP version, are the only ones without a source);
///   or a connect failure that carries no `io::Error` of an OS kind (see
///   below).
/// - **Not connected**: a connect failure of hyper-util's legacy client
///   ([`is_connect()`](hyper_util::client::legacy::Error::is_connect),
///   also what reqwest wraps) with an [`io::Error`] in its chain whose
///   kind is not [`Other`](io::ErrorKind::Other): the socket or the
///   resolver failed (refused, unreachable, DNS, connect timeout, a TLS
///   handshake cut off), before any byte of the request was written; a
///   certificate refused in the handshake is permanent.
/// - **Unprocessed**: see [`never_processed`].
/// - **Unknown**: anything else, as before this reading existed.
///
/// Why the `io::Error` kind tells a failed connection from a refused
/// configuration: every socket and resolver failure comes from the OS or
/// the standard library, which never use `ErrorKind::Other`; a connector
/// that refuses the URI itself, before touching the network, carries
/// either no `io::Error` at all (hyper-util's `HttpConnector` given an
/// `https` URI: "invalid URL, scheme is not http") or one it made with
/// `io::Error::other` (hyper-rustls's `https_only()` given `http`:
/// "unsupported scheme http"; rustls refusing a host that is no DNS name
/// carries none). The limit of the rule: a connector's own timeout that
/// carries no `io::Error` (reqwest's `connect_timeout` gives its own
/// `TimedOut`) reads as permanent, and is handed back at once.
///
/// reqwest's builder errors (`is_builder()`) carry only reqwest's own
/// types, which this crate does not depend on: they read as unknown.
pub(crate) fn failure(error: &(dyn Error + 'static)) -> Failure {
    let mut connect = false;
    let mut os_io = false;
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<InvalidUri>()
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_user)
        {
            return Failure::Permanent;
        }
        if e.is::<h2::Error>() {
            return if never_processed(e) {
                Failure::Unprocessed
            } else {
                Failure::Unknown
            };
        }
        if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if client.is_connect() {
                connect = true;
            } else if client.source().is_none() {
                return Failure::Permanent;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            os_io |= from_the_os(io);
        }
        next = e.source();
    }
    match (connect, os_io) {
        (true, true) => Failure::NotConnected,
        (true, false) => Failure::Permanent,
        (false, _) => Failure::Unknown,
    }
}

/// Whether `io` is, or wraps, a failure of the socket or the resolver.
/// hyper-rustls wraps every handshake failure in `io::Error::other`, and
/// `io::Error::source()` skips the error it wraps, so a connection reset
/// during the handshake is found only by looking inside. A handshake the
/// peer's answers made fail (a certificate refused, an alert) is
/// `InvalidData` (tokio-rustls's kind for a `rustls::Error`), which no
/// socket or resolver gives: it stays permanent.
fn from_the_os(io: &io::Error) -> bool {
    match io.kind() {
        io::ErrorKind::Other => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<io::Error>())
            .is_some_and(from_the_os),
        io::ErrorKind::InvalidData => false,
        _ => true,
    }
}

/// Whether `error`, an [`h2::Error`] (the first one in a source chain),
/// proves the server did not process the request: it was received from the
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
fn never_processed(error: &(dyn Error + 'static)) -> bool {
    let Some(h2) = error.downcast_ref::<h2::Error>() else {
        return false;
    };
    let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
    let drained = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
    h2.is_remote() && (refused || drained)
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
/// `Display` is one line, the attempt count and the root cause (the last
/// error of the [`source`](Error::source) chain): `mpsd request failed
/// after 5 attempts: Connection refused (os error 111)`. `Debug` shows the
/// whole chain and history; neither shows the request's `Authorization`
/// or a body, which are not kept here.
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
        let mut root: &(dyn Error + 'static) = &*self.source;
        while let Some(next) = root.source() {
            root = next;
        }
        write!(f, "mpsd request failed after {n} attempt{s}: {root}")
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
            assert_eq!(failure(&*local), Failure::Unknown);
        }
        let io: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert_eq!(failure(&*io), Failure::Unknown);
        // The received cases are tested over a real HTTP/2 connection in
        // tests/tls.rs: h2 makes remote resets and GOAWAYs only from frames.
    }

    #[test]
    fn only_absolute_uris_pass() {
        for ok in [
            "http://mpsd.test/handles/h1",
            "https://a:8443/",
            "HTTPS://a/",
        ] {
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
        assert_eq!(
            refused("htp://mpsd.test/handles/h1").to_string(),
            "request URI \"/handles/h1\" has scheme \"htp\": only http and https can be sent"
        );
        assert_eq!(
            refused("ftp://mpsd.test/").to_string(),
            "request URI \"/\" has scheme \"ftp\": only http and https can be sent"
        );
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
        assert_eq!(failure(&*invalid), Failure::Permanent);
        let nested: BoxError = Box::new(Outer(Box::new(Outer(invalid))));
        assert_eq!(failure(&*nested), Failure::Permanent);
        // Without a connect failure of the client, an error may have been
        // sent, whatever its io::Error: the connect cases need hyper-util's
        // own errors, made over real sockets in tests/errors.rs.
        for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::Other] {
            let io: BoxError = Box::new(Outer(Box::new(io::Error::from(kind))));
            assert_eq!(failure(&*io), Failure::Unknown, "{kind:?}");
        }
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
        assert_eq!(
            failed.to_string(),
            "mpsd request failed after 2 attempts: connection refused",
            "one line, with the root cause"
        );
        let deep = RequestFailed::wrap(Box::new(Outer(Box::new(Outer("the root".into())))), || {
            history(1)
        });
        assert_eq!(
            deep.to_string(),
            "mpsd request failed after 1 attempt: the root"
        );
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
