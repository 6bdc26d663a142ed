//! [`AuthLayer`] and its service: the token on every request, one refresh
//! on a 401.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{self, BoxFuture, FutureExt};
use http::{header, Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::token::{Token, TokenSource, TokenUnavailable};
use crate::macros::define_inner_service_accessors;
use crate::ready;
use crate::BoxError;

/// Sets `Authorization: XBL3.0 x=<userhash>;<token>` from a
/// [`TokenSource`] on every request (replacing any it had), and on a 401
/// refreshes the token once and sends the request again (a 401 was not
/// applied). See [the module](crate::auth) for where it goes.
///
/// Clones, and the services they make, share the source, the cached token
/// and the call of the source in flight: concurrent 401s cause one
/// refresh, and a failed call fails every request waiting for it at once.
#[derive(Clone)]
#[must_use]
pub struct AuthLayer {
    shared: Arc<Shared>,
    timeout: Duration,
}

/// The default [`AuthLayer::token_timeout`]: 20 s, the recommended
/// stack's deadline; a sign-in slower than that helps no request.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);

impl AuthLayer {
    /// Tokens from `source`, each fetch given at most 20 s.
    pub fn new(source: impl TokenSource) -> Self {
        Self {
            shared: Arc::new(Shared {
                source: Arc::new(source),
                cache: Mutex::new(Cache::default()),
            }),
            timeout: TOKEN_TIMEOUT,
        }
    }

    /// How long one call of the source may take before the requests
    /// waiting for it fail with [`TokenUnavailable`] (its source a
    /// `tokio::time::error::Elapsed`), and the longest a request waits for
    /// a token. Default 20 s: the recommended stack's deadline, past which
    /// a token helps no request.
    pub fn token_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            shared: Arc::clone(&self.shared),
            timeout: self.timeout,
        }
    }
}

/// The token source and the cached token, shared by every clone.
struct Shared {
    source: Arc<dyn TokenSource>,
    /// Never held across an `await`: a request needing a token takes the
    /// cached one, or joins (or starts) the one fetch in flight.
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    token: Option<Arc<Token>>,
    /// Bumped by every fetch: a 401 to an older token needs no new fetch.
    generation: u64,
    /// The call of the source in flight: the requests needing a token
    /// meanwhile wait for it, and its token or its failure reaches them
    /// all at once, instead of each asking the source in turn.
    fetching: Option<Fetching>,
}

/// The fetch in flight and when it gives up.
struct Fetching {
    fetch: Fetch,
    until: Instant,
}

/// A token and the generation it belongs to.
type Current = (Arc<Token>, u64);

/// One call of the source, awaited by every request needing its token.
type Fetch = future::Shared<BoxFuture<'static, Result<Current, TokenUnavailable>>>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        // The cache is whole between statements: a panic elsewhere
        // leaves nothing half-written.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached token, when there is one and it has not expired.
    fn cached(&self) -> Option<Current> {
        let cache = self.lock();
        let token = cache.token.as_ref()?;
        let fresh = !token.expired(Instant::now());
        fresh.then(|| (Arc::clone(token), cache.generation))
    }

    /// A fresh token, the cached one being gone or expired: the one a
    /// request fetched meanwhile, or one from the source.
    async fn fetched(self: &Arc<Self>, timeout: Duration) -> Result<Current, TokenUnavailable> {
        let fetch = {
            let mut cache = self.lock();
            match &cache.token {
                Some(token) if !token.expired(Instant::now()) => {
                    return Ok((Arc::clone(token), cache.generation));
                }
                stale => {
                    let refresh = stale.is_some();
                    self.fetch(&mut cache, refresh, timeout)
                }
            }
        };
        wait(fetch, timeout).await
    }

    /// A token newer than generation `refused`: the one another request
    /// fetched meanwhile, or a fresh one.
    async fn refresh(
        self: &Arc<Self>,
        refused: u64,
        timeout: Duration,
    ) -> Result<Current, TokenUnavailable> {
        let fetch = {
            let mut cache = self.lock();
            match &cache.token {
                Some(token) if cache.generation != refused => {
                    return Ok((Arc::clone(token), cache.generation));
                }
                // A fetch in flight gives a generation after `refused`.
                _ => self.fetch(&mut cache, true, timeout),
            }
        };
        wait(fetch, timeout).await
    }

    /// The fetch in flight, or a new one: the source asked until
    /// `timeout` from now, its token cached. A fetch whose deadline passed
    /// (all its requests gave up before it ended, so no one polled it) is
    /// not joined. The fetch holds the cache weakly: no cycle.
    fn fetch(self: &Arc<Self>, cache: &mut Cache, refresh: bool, timeout: Duration) -> Fetch {
        let now = Instant::now();
        if let Some(fetching) = cache.fetching.as_ref().filter(|f| now < f.until) {
            return fetching.fetch.clone();
        }
        let until = now + timeout;
        let source = Arc::clone(&self.source);
        let shared = Arc::downgrade(self);
        let fetch = async move {
            let fetched = tokio::time::timeout_at(until, source.token(refresh)).await;
            // Whoever awaits this holds the layer: it is there.
            let dropped = || TokenUnavailable::new("the auth layer was dropped".into());
            let shared = shared.upgrade().ok_or_else(dropped)?;
            let mut cache = shared.lock();
            if cache.fetching.as_ref().is_some_and(|f| f.until == until) {
                cache.fetching = None;
            }
            let fetched = fetched.map_err(|elapsed| TokenUnavailable::new(elapsed.into()))?;
            let token = Arc::new(fetched.map_err(TokenUnavailable::new)?);
            cache.generation += 1;
            cache.token = Some(Arc::clone(&token));
            tracing::debug!(user = token.user_hash(), refresh, "mpsd auth: new token");
            Ok((token, cache.generation))
        }
        .boxed()
        .shared();
        cache.fetching = Some(Fetching {
            fetch: fetch.clone(),
            until,
        });
        fetch
    }
}

/// What `fetch` gives, waited for at most `timeout`: a request joining a
/// fetch started by a layer with a longer timeout still fails in time.
async fn wait(fetch: Fetch, timeout: Duration) -> Result<Current, TokenUnavailable> {
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|elapsed| TokenUnavailable::new(elapsed.into()))?
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl<S> Auth<S> {
    define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The future of [`Auth`]. Boxed: it awaits the token source (a boxed
/// future already) and the inner service in turn, and an `async` block
/// says that in a few lines where a hand-written state machine would take
/// a screen.
pub struct ResponseFuture<R> {
    inner: Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>,
}

impl<R> fmt::Debug for ResponseFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<R> Future for ResponseFuture<R> {
    type Output = Result<R, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// `req` again, with `token`: the head cloned, the body cloned.
fn with_token<B: Clone>(head: &http::request::Parts, body: &B, token: &Token) -> Request<B> {
    let mut req = Request::new(body.clone());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    *req.extensions_mut() = head.extensions.clone();
    req.headers_mut()
        .insert(header::AUTHORIZATION, token.header().clone());
    req
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ReqBody: Clone + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // With the token cached, the request goes with the ready service;
        // one that waits for a token lets that readiness go meanwhile.
        let mut inner = ready::take(&mut self.inner);
        let shared = Arc::clone(&self.shared);
        let timeout = self.timeout;
        let (head, body) = req.into_parts();
        let future = async move {
            let (token, generation) = match shared.cached() {
                Some(current) => current,
                None => {
                    inner.release();
                    shared.fetched(timeout).await?
                }
            };
            let first = with_token(&head, &body, &token);
            future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let res = inner.call(first).await.map_err(Into::into)?;
            if res.status() != StatusCode::UNAUTHORIZED {
                return Ok(res);
            }
            let (fresh, _) = shared.refresh(generation, timeout).await?;
            if fresh.header() == token.header() {
                // The same token again (a fixed source): the 401 stands.
                return Ok(res);
            }
            drop(res);
            tracing::debug!(user = fresh.user_hash(), "mpsd auth: 401, sending again");
            let again = with_token(&head, &body, &fresh);
            future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            inner.call(again).await.map_err(Into::into)
        };
        ResponseFuture {
            inner: Box::pin(future),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::auth::TokenFuture;

    /// Token `t<n>` at the n-th call.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl TokenSource for Counting {
        fn token(&self, _refresh: bool) -> TokenFuture<'_> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::task::yield_now().await;
                Ok(Token::new("42", &format!("t{n}"))?)
            })
        }
    }

    #[tokio::test]
    async fn concurrent_401s_to_one_token_refresh_it_once() {
        let layer = AuthLayer::new(Counting::default());
        let sends = Arc::new(AtomicUsize::new(0));
        let sent = Arc::clone(&sends);
        // The first token is revoked; later ones pass. The 401s are
        // answered once all eight requests got one: they are concurrent.
        let all_sent = Arc::new(tokio::sync::Barrier::new(8));
        let mpsd = service_fn(move |req: Request<Full<Bytes>>| {
            sent.fetch_add(1, Ordering::SeqCst);
            let revoked = req.headers()[header::AUTHORIZATION] == "XBL3.0 x=42;t0";
            let status = if revoked { 401 } else { 200 };
            let all_sent = Arc::clone(&all_sent);
            async move {
                if revoked {
                    all_sent.wait().await;
                }
                Response::builder()
                    .status(status)
                    .body(Full::<Bytes>::default())
            }
        });
        let client = layer.layer(mpsd);
        let calls = (0..8).map(|_| {
            let req = Request::get("https://mpsd.test/handles/h").body(Full::default());
            client.clone().oneshot(req.unwrap())
        });
        for res in futures_util::future::join_all(calls).await {
            assert_eq!(res.unwrap().status(), StatusCode::OK);
        }
        let source_calls = layer.shared.lock().generation;
        assert_eq!(source_calls, 2, "one sign-in, one refresh");
        assert_eq!(sends.load(Ordering::SeqCst), 16, "each sent twice");
    }

    /// A sign-in that never answers.
    struct Hangs;

    impl TokenSource for Hangs {
        fn token(&self, _refresh: bool) -> TokenFuture<'_> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_that_hangs_fails_the_request_at_the_token_timeout() {
        let sends = Arc::new(AtomicUsize::new(0));
        let sent = Arc::clone(&sends);
        let mpsd = service_fn(move |_req: Request<Full<Bytes>>| {
            sent.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(Response::new(Full::<Bytes>::default())) }
        });
        let client = AuthLayer::new(Hangs)
            .token_timeout(Duration::from_secs(3))
            .layer(mpsd);
        let t0 = Instant::now();
        let req = Request::get("https://mpsd.test/handles/h").body(Full::default());
        let err = client.oneshot(req.unwrap()).await.unwrap_err();
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        let unavailable = err.downcast_ref::<TokenUnavailable>().unwrap();
        let source = std::error::Error::source(unavailable).unwrap();
        assert!(source.is::<tokio::time::error::Elapsed>());
        assert_eq!(sends.load(Ordering::SeqCst), 0, "nothing sent");
    }

    /// Counts its calls; each fails after `fails_after`, or never answers.
    struct Failing {
        calls: Arc<AtomicUsize>,
        /// `None`: never answers; `Some(d)`: fails after `d`.
        fails_after: Option<Duration>,
    }

    impl TokenSource for Failing {
        fn token(&self, _refresh: bool) -> TokenFuture<'_> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fails_after = self.fails_after;
            Box::pin(async move {
                match fails_after {
                    Some(after) => tokio::time::sleep(after).await,
                    None => std::future::pending().await,
                }
                Err("sign-in refused".into())
            })
        }
    }

    /// Eight requests at once to a layer whose source fails as `source`
    /// says: the instant each one failed, and how often the source was called.
    async fn eight_requests_to(fails_after: Option<Duration>) -> (Vec<Duration>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let source = Failing {
            calls: Arc::clone(&calls),
            fails_after,
        };
        let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, BoxError>(Response::new(Full::<Bytes>::default()))
        });
        let client = AuthLayer::new(source)
            .token_timeout(Duration::from_secs(3))
            .layer(mpsd);
        let t0 = Instant::now();
        let requests = (0..8).map(|_| {
            let req = Request::get("https://mpsd.test/handles/h").body(Full::default());
            let client = client.clone();
            async move {
                let err = client.oneshot(req.unwrap()).await.unwrap_err();
                assert!(err.is::<TokenUnavailable>(), "{err}");
                t0.elapsed()
            }
        });
        let failed_at = futures_util::future::join_all(requests).await;
        (failed_at, calls.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_waiting_for_a_source_that_hangs_all_fail_at_the_token_timeout() {
        let (failed_at, calls) = eight_requests_to(None).await;
        assert_eq!(failed_at, vec![Duration::from_secs(3); 8]);
        assert_eq!(calls, 1, "one call shared by all");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_its_requests_all_gave_up_on_is_not_joined_after_its_timeout() {
        let calls = Arc::new(AtomicUsize::new(0));
        let source = Failing {
            calls: Arc::clone(&calls),
            fails_after: None,
        };
        let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, BoxError>(Response::new(Full::<Bytes>::default()))
        });
        let client = AuthLayer::new(source)
            .token_timeout(Duration::from_secs(3))
            .layer(mpsd);
        let req = || Request::get("https://mpsd.test/handles/h").body(Full::default());
        // Given up after 1 s: no one polls the call any more.
        let given_up = tokio::time::timeout(
            Duration::from_secs(1),
            client.clone().oneshot(req().unwrap()),
        );
        assert!(given_up.await.is_err());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let t0 = Instant::now();
        let err = client.oneshot(req().unwrap()).await.unwrap_err();
        assert!(err.is::<TokenUnavailable>(), "{err}");
        assert_eq!(t0.elapsed(), Duration::from_secs(3), "a call of its own");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_waiting_for_a_source_that_fails_all_get_its_error_at_once() {
        let (failed_at, calls) = eight_requests_to(Some(Duration::from_secs(1))).await;
        assert_eq!(failed_at, vec![Duration::from_secs(1); 8]);
        assert_eq!(calls, 1, "one call shared by all");
    }
}

/// No readiness held across a wait for a token.
#[cfg(test)]
mod readiness {
    use std::time::Duration;

    use bytes::Bytes;
    use http::Request;
    use http_body_util::Full;
    use tokio::time::Instant;
    use tower::limit::ConcurrencyLimitLayer;
    use tower::{Layer, ServiceExt};

    use super::AuthLayer;
    use crate::auth::{FixedToken, Token, TokenFuture, TokenSource};
    use crate::ready::test_support::{at, upstream, when};

    /// Signs user u in, in 5 s.
    struct SlowSignIn;

    impl TokenSource for SlowSignIn {
        fn token(&self, _refresh: bool) -> TokenFuture<'_> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Token::new("u", "token")?)
            })
        }
    }

    fn get() -> Request<Full<Bytes>> {
        Request::get("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s")
            .body(Full::default())
            .unwrap()
    }

    /// u's request waits 5 s for u's token; v's, sent meanwhile through
    /// the one permit of a `ConcurrencyLimit` below both, goes at once.
    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_a_token_holds_no_readiness_below() {
        let t0 = Instant::now();
        let (svc, log) = upstream(t0);
        let limited = ConcurrencyLimitLayer::new(1).layer(svc);
        let u = AuthLayer::new(SlowSignIn).layer(limited.clone());
        let v_token = FixedToken::new(Token::new("v", "token").unwrap());
        let v = AuthLayer::new(v_token).layer(limited);
        let waiting = tokio::spawn(u.oneshot(get()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        v.oneshot(get()).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(1), "v waited");
        waiting.await.unwrap().unwrap();
        assert_eq!(when(&log), at(&[(1, "v"), (5, "u")]));
    }
}
