//! The rule every layer that may wait before it sends keeps: no readiness
//! held across a wait (see the crate docs, "Readiness").

use std::task::{ready, Context, Poll};

use tower::Service;

/// The inner service of a future that may wait before it sends.
///
/// It starts either as the service the caller made ready ([`take`]), which
/// a send with no wait uses at once, or as a clone not yet ready
/// ([`release`]). Before any wait, [`Held::release`] drops a ready one (a
/// clone takes its place), letting go of what its readiness reserved (a
/// `ConcurrencyLimit` permit, a `Buffer` slot); [`Held::poll_ready`]
/// drives the service to readiness again when the send is about to go.
pub(crate) struct Held<S> {
    svc: S,
    ready: bool,
}

/// The service the caller made ready, for a future that calls it at once
/// unless it has to wait; a clone takes its place in `svc`.
pub(crate) fn take<S: Clone>(svc: &mut S) -> Held<S> {
    let clone = svc.clone();
    Held {
        svc: std::mem::replace(svc, clone),
        ready: true,
    }
}

/// For a future that waits before it sends: the readiness the caller
/// drove into `svc` is let go (the ready service is dropped and a clone
/// takes its place), and the future gets a clone, driven to readiness
/// once its wait is over.
pub(crate) fn release<S: Clone>(svc: &mut S) -> Held<S> {
    *svc = svc.clone();
    Held {
        svc: svc.clone(),
        ready: false,
    }
}

impl<S> Held<S> {
    /// Before a wait: drops the ready service, if this is it, for a clone.
    pub(crate) fn release(&mut self)
    where
        S: Clone,
    {
        if std::mem::take(&mut self.ready) {
            self.svc = self.svc.clone();
        }
    }

    /// Ready to call: at once when the service is still the ready one.
    pub(crate) fn poll_ready<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
    {
        if !self.ready {
            ready!(self.svc.poll_ready(cx))?;
            self.ready = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Calls the service, which [`poll_ready`](Self::poll_ready) made
    /// ready; the next call needs readiness again.
    pub(crate) fn call<Req>(&mut self, req: Req) -> S::Future
    where
        S: Service<Req>,
    {
        debug_assert!(self.ready, "called before it was ready");
        self.ready = false;
        self.svc.call(req)
    }
}

/// What the readiness tests of every waiting layer share: an upstream
/// that logs who sent what when, and the users' requests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use tokio::time::Instant;
    use tower::{service_fn, Service};

    use crate::BoxError;

    /// `(virtual time since the start, user, path)` of each request the
    /// upstream got.
    pub(crate) type Log = Arc<Mutex<Vec<(Duration, String, String)>>>;

    /// An upstream answering 200 with a JSON object and an `ETag`, after
    /// the `x-delay-ms` the request asks for (none by default).
    pub(crate) fn upstream<B: Send + 'static>(
        t0: Instant,
    ) -> (
        impl Service<
                Request<B>,
                Response = Response<Full<Bytes>>,
                Error = BoxError,
                Future = impl Send,
            > + Clone,
        Log,
    ) {
        let log = Log::default();
        let l = log.clone();
        let svc = service_fn(move |req: Request<B>| {
            let header = |name| {
                let value = req.headers().get(name);
                value.and_then(|v| v.to_str().ok()).unwrap_or_default()
            };
            let user = header("authorization");
            let user = user.split(';').next().unwrap_or_default().to_owned();
            let delay = Duration::from_millis(header("x-delay-ms").parse().unwrap_or(0));
            let path = req.uri().path().to_owned();
            let l = l.clone();
            async move {
                l.lock().unwrap().push((t0.elapsed(), user, path));
                tokio::time::sleep(delay).await;
                let res = Response::builder()
                    .header("etag", "\"e1\"")
                    .header("content-type", "application/json")
                    .body(Full::from("{}"))?;
                Ok::<_, BoxError>(res)
            }
        });
        (svc, log)
    }

    /// A request of `method` to `path` by `user`, asking the upstream to
    /// take `delay_ms` to answer.
    pub(crate) fn request(
        method: &str,
        path: &str,
        user: &str,
        delay_ms: u64,
    ) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(format!("http://mpsd.test{path}"))
            .header("authorization", format!("XBL3.0 x={user};token"))
            .header("x-delay-ms", delay_ms.to_string())
            .body(Full::from("{}"))
            .unwrap()
    }

    /// The log as `(virtual time, user)`, the user as `x=<hash>`.
    pub(crate) fn when(log: &Log) -> Vec<(Duration, String)> {
        let log = log.lock().unwrap();
        let user = |u: &str| u.trim_start_matches("XBL3.0 ").to_owned();
        log.iter().map(|(t, u, _)| (*t, user(u))).collect()
    }

    /// `(seconds, user)` pairs, to compare with [`when`].
    pub(crate) fn at(expected: &[(u64, &str)]) -> Vec<(Duration, String)> {
        let at = |&(s, u): &(u64, &str)| (Duration::from_secs(s), format!("x={u}"));
        expected.iter().map(at).collect()
    }
}
