use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::Body;
use tower::{Layer, Service};

use super::cache::Lru;
use super::future::{Ctx, ResponseFuture};
use crate::logical::LogicalRequest;
use crate::rules::identity::user_hash;
use crate::rules::target::Target;
use crate::BoxError;

/// The cache as the services and their futures use it.
#[derive(Clone)]
pub(crate) struct Shared {
    cache: Arc<Mutex<Lru>>,
    pub(crate) max_body_bytes: usize,
}

impl Shared {
    pub(crate) fn cache(&self) -> MutexGuard<'_, Lru> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The revalidation cache of one or more [`RevalidateLayer`]s: each GET's
/// `ETag`, headers and body, least recently used first out, bounded by
/// entry count and by bytes.
///
/// A cheap handle: clones share one cache. A layer made with
/// [`RevalidateLayer::new`] makes its own; its clones, and the services
/// they make, share it. Give one cache to several stacks with
/// [`RevalidateLayer::with_cache`] so that a session read through one is
/// revalidated, not read again, through the others, and a write through
/// any of them drops it for all. Its bounds are fixed when it is built
/// ([`Cache::builder`]).
///
/// # Example
///
/// ```
/// use tower::ServiceBuilder;
/// # use tower::service_fn;
/// use tower_mpsd::revalidate::{Cache, RevalidateLayer};
///
/// # let hyper_client = service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// # });
/// // One cache for both clients of this process.
/// let cache = Cache::builder().max_entries(4096).build();
/// let lobby = ServiceBuilder::new()
///     .layer(RevalidateLayer::with_cache(cache.clone()))
///     .service(hyper_client.clone());
/// let matchmaking = ServiceBuilder::new()
///     .layer(RevalidateLayer::with_cache(cache.clone()))
///     .service(hyper_client);
/// // A session read through `lobby` is asked `If-None-Match` through
/// // `matchmaking` too.
/// assert_eq!(cache.usage().entries, 0);
/// # drop((lobby, matchmaking));
/// ```
#[derive(Clone)]
pub struct Cache {
    max_entries: usize,
    max_bytes: usize,
    shared: Shared,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("max_body_bytes", &self.shared.max_body_bytes)
            .field("usage", &self.usage())
            .finish()
    }
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    /// A new, empty cache with the defaults documented on [`CacheBuilder`]:
    /// 1,024 entries, 16 MiB in all, bodies of at most 256 KiB.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a cache with other bounds, starting from the defaults.
    pub fn builder() -> CacheBuilder {
        CacheBuilder {
            max_entries: 1024,
            max_bytes: 16 << 20,
            max_body_bytes: 256 << 10,
        }
    }

    /// How much of its bounds the cache uses now, over every layer sharing
    /// it.
    pub fn usage(&self) -> CacheUsage {
        let cache = self.shared.cache();
        CacheUsage {
            entries: cache.len(),
            bytes: cache.bytes(),
        }
    }
}

/// Builds a [`Cache`]; from [`Cache::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheBuilder {
    max_entries: usize,
    max_bytes: usize,
    max_body_bytes: usize,
}

impl CacheBuilder {
    /// How many reads are cached at most; the least recently used goes
    /// first. Default 1,024: a client polls a handful of sessions per user,
    /// and a service acting for many users should size it to them.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// How many bytes the cache holds at most (bodies, headers, `ETag`s
    /// and keys); the least recently used entries go first. Default 16 MiB:
    /// 1,024 session documents of 16 KiB, a generous session with
    /// a full roster and custom properties.
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// The largest body that is read to be cached. A larger one (e.g. a big
    /// query result) is passed on as it streams, whole, and not cached.
    /// Default 256 KiB: far above a session document, small enough that
    /// reading it ahead of the caller costs little.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// A new, empty cache with these bounds.
    pub fn build(self) -> Cache {
        Cache {
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            shared: Shared {
                cache: Arc::new(Mutex::new(Lru::new(self.max_entries, self.max_bytes))),
                max_body_bytes: self.max_body_bytes,
            },
        }
    }
}

/// Adds [`Revalidate`] to a stack. Clones share its [`Cache`];
/// [`with_cache`](Self::with_cache) shares one with other stacks. No
/// setter replaces it: a cache's bounds are set when it is built.
#[derive(Clone, Debug)]
#[must_use]
pub struct RevalidateLayer {
    cache: Cache,
}

impl Default for RevalidateLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// How much of its bounds a cache uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheUsage {
    /// Entries held.
    pub entries: usize,
    /// Bytes held: bodies, headers, `ETag`s and keys.
    pub bytes: usize,
}

impl RevalidateLayer {
    /// A layer with a new [`Cache`] of its own, with the defaults
    /// documented in [the module](crate::revalidate): 1,024 entries,
    /// 16 MiB in all, bodies of at most 256 KiB.
    pub fn new() -> Self {
        Self::with_cache(Cache::new())
    }

    /// A layer using `cache`, shared with every layer given the same cache
    /// (see [`Cache`] for an example with two stacks).
    pub fn with_cache(cache: Cache) -> Self {
        Self { cache }
    }

    /// The cache this layer uses: a handle to give to other layers.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// How much of its bounds the shared cache uses now: [`Cache::usage`].
    pub fn usage(&self) -> CacheUsage {
        self.cache.usage()
    }
}

impl<S> Layer<S> for RevalidateLayer {
    type Service = Revalidate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Revalidate {
            inner,
            shared: self.cache.shared.clone(),
        }
    }
}

/// Revalidates GETs with `If-None-Match` and answers 304s from its cache;
/// see [`RevalidateLayer`]. Clones share the cache.
#[derive(Clone)]
pub struct Revalidate<S> {
    inner: S,
    shared: Shared,
}

impl<S> Revalidate<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Revalidate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revalidate")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Revalidate<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<super::RevalidateBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let ctx = prepare(&self.shared, &mut req);
        ResponseFuture::new(self.inner.call(req), ctx, self.shared.clone())
    }
}

/// Decides what the layer does with a request, and adds `If-None-Match`
/// to a GET whose answer is cached.
fn prepare<B>(shared: &Shared, req: &mut Request<B>) -> Ctx {
    // What the request names and who sends it, parsed once per logical
    // request (this layer sees every attempt) when one is there.
    let logical = req.extensions().get::<LogicalRequest>();
    let parsed = Parsed::of(req.uri(), req.headers(), logical);
    let method = req.method();
    if *method == Method::GET {
        if has_own_conditions(req.headers()) {
            return Ctx::Pass;
        }
        let key = cache_key(req.uri(), req.headers(), parsed.user);
        let group = session_group(req.uri(), parsed.session);
        let cached = shared.cache().get(&key).map(Box::new);
        if let Some(entry) = &cached {
            req.headers_mut()
                .insert(header::IF_NONE_MATCH, entry.etag.clone());
        }
        return Ctx::Read { key, group, cached };
    }
    if matches!(*method, Method::HEAD | Method::OPTIONS | Method::TRACE) {
        return Ctx::Pass;
    }
    match session_group(req.uri(), parsed.session) {
        Some(group) => {
            shared.cache().invalidate(&group);
            Ctx::Write { group }
        }
        None => Ctx::Pass,
    }
}

/// Whether the caller validates or asks for a range itself: then the layer
/// keeps out of the way.
fn has_own_conditions(headers: &HeaderMap) -> bool {
    [
        header::IF_NONE_MATCH,
        header::IF_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ]
    .iter()
    .any(|name| headers.contains_key(name))
}

/// The session a request names and its user: from the logical request,
/// which parses them once, or from the request itself.
struct Parsed<'a> {
    session: Option<std::borrow::Cow<'a, str>>,
    user: Option<&'a str>,
}

impl<'a> Parsed<'a> {
    fn of(uri: &'a Uri, headers: &'a HeaderMap, logical: Option<&'a LogicalRequest>) -> Self {
        match logical {
            Some(logical) => Self {
                session: logical.session_path().map(Into::into),
                user: logical.user(),
            },
            None => Self {
                session: Target::parse(uri.path()).session_path().map(Into::into),
                user: headers.get(header::AUTHORIZATION).and_then(user_hash),
            },
        }
    }
}

/// The cache key of a GET: authority, user, contract version, path and
/// query. The user is part of it because `members/me` differs per caller;
/// the contract version because it shapes the document.
fn cache_key(uri: &Uri, headers: &HeaderMap, user: Option<&str>) -> String {
    let authority = uri.authority().map_or("", |a| a.as_str());
    let user = user.unwrap_or_default();
    let contract = headers
        .get("x-xbl-contract-version")
        .map_or(&b""[..], HeaderValue::as_bytes);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // Header values cannot hold a newline, so the parts cannot run together.
    format!(
        "{authority}\n{user}\n{}\n{path}",
        String::from_utf8_lossy(contract)
    )
}

/// The session a URI names or lives under, as a key that every spelling of
/// its path shares (writes drop all reads of it, for every user).
fn session_group(uri: &Uri, session: Option<std::borrow::Cow<'_, str>>) -> Option<String> {
    let session = session?;
    let authority = uri.authority().map_or("", |a| a.as_str());
    Some(format!(
        "{}\n{}",
        authority.to_ascii_lowercase(),
        session.to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn key(u: &Uri, h: &HeaderMap) -> String {
        cache_key(u, h, Parsed::of(u, h, None).user)
    }

    fn group(u: &Uri) -> Option<String> {
        session_group(u, Parsed::of(u, &HeaderMap::new(), None).session)
    }

    #[test]
    fn keys_tell_users_contracts_and_queries_apart() {
        let mut h = HeaderMap::new();
        let u = uri("http://mpsd/serviceconfigs/c/sessionTemplates/t/sessions/s?x=1");
        let anonymous = key(&u, &h);
        h.insert(header::AUTHORIZATION, "XBL3.0 x=42;tok".parse().unwrap());
        let alice = key(&u, &h);
        assert_ne!(anonymous, alice);
        assert!(!alice.contains("tok"), "the token is never kept");
        h.insert("x-xbl-contract-version", "107".parse().unwrap());
        assert_ne!(key(&u, &h), alice);
        assert_ne!(
            key(
                &uri("http://mpsd/serviceconfigs/c/sessionTemplates/t/sessions/s"),
                &h
            ),
            key(&u, &h)
        );
    }

    #[test]
    fn a_session_and_its_elements_share_a_group_in_any_spelling() {
        let s = group(&uri(
            "http://MPSD/serviceconfigs/c/sessionTemplates/t/sessions/s",
        ));
        let m = group(&uri(
            "http://mpsd/serviceconfigs/c/sessiontemplates/t/sessions/S/members/me",
        ));
        assert!(s.is_some());
        assert_eq!(s, m);
        assert_eq!(group(&uri("http://mpsd/handles/h")), None);
        assert_ne!(
            s,
            group(&uri(
                "http://other/serviceconfigs/c/sessionTemplates/t/sessions/s"
            ))
        );
    }

    #[test]
    fn callers_own_validators_are_respected() {
        let mut h = HeaderMap::new();
        assert!(!has_own_conditions(&h));
        h.insert(header::IF_NONE_MATCH, "\"x\"".parse().unwrap());
        assert!(has_own_conditions(&h));
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, "bytes=0-1".parse().unwrap());
        assert!(has_own_conditions(&h));
    }

    mod service {
        use std::sync::{Arc, Mutex};

        use bytes::Bytes;
        use http::{Request, Response, StatusCode};
        use http_body_util::{BodyExt, Full};
        use tower::{service_fn, ServiceExt};

        use super::super::super::Revalidated;
        use super::*;

        type Script = Arc<Mutex<Vec<Response<Full<Bytes>>>>>;
        type Seen = Arc<Mutex<Vec<Option<HeaderValue>>>>;

        /// A fake upstream answering from `script` in order, and recording
        /// each request's `If-None-Match`.
        fn upstream(
            script: Vec<Response<Full<Bytes>>>,
        ) -> (
            impl Service<
                    Request<Full<Bytes>>,
                    Response = Response<Full<Bytes>>,
                    Error = std::convert::Infallible,
                > + Clone,
            Seen,
        ) {
            let script: Script = Arc::new(Mutex::new(script.into_iter().rev().collect()));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let svc = service_fn(move |req: Request<Full<Bytes>>| {
                log.lock()
                    .unwrap()
                    .push(req.headers().get(header::IF_NONE_MATCH).cloned());
                let res = script.lock().unwrap().pop().expect("scripted");
                async move { Ok(res) }
            });
            (svc, seen)
        }

        fn res(
            status: u16,
            headers: &[(&'static str, &'static str)],
            body: &'static str,
        ) -> Response<Full<Bytes>> {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()
        }

        fn get() -> Request<Full<Bytes>> {
            Request::get("http://mpsd/serviceconfigs/c/sessionTemplates/t/sessions/s")
                .body(Full::default())
                .unwrap()
        }

        #[tokio::test]
        async fn a_304_becomes_the_cached_200_with_the_304s_headers() {
            let (svc, seen) = upstream(vec![
                res(
                    200,
                    &[
                        ("etag", "\"1\""),
                        ("date", "old"),
                        ("content-type", "application/json"),
                    ],
                    "{}",
                ),
                res(304, &[("etag", "\"1\""), ("date", "new")], ""),
            ]);
            let layer = RevalidateLayer::new();
            let svc = layer.layer(svc);
            svc.clone().oneshot(get()).await.unwrap();
            let res = svc.oneshot(get()).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.headers()["date"], "new");
            assert_eq!(res.headers()["content-type"], "application/json");
            assert_eq!(res.headers()["content-length"], "2");
            assert_eq!(res.extensions().get::<Revalidated>().unwrap().etag, "\"1\"");
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "{}");
            assert_eq!(
                *seen.lock().unwrap(),
                [None, Some(HeaderValue::from_static("\"1\""))]
            );
        }

        #[tokio::test]
        async fn no_store_and_missing_etags_are_not_cached() {
            let (svc, seen) = upstream(vec![
                res(
                    200,
                    &[("etag", "\"1\""), ("cache-control", "private, no-store")],
                    "a",
                ),
                res(200, &[], "b"),
                res(200, &[], "c"),
            ]);
            let layer = RevalidateLayer::new();
            let svc = layer.layer(svc);
            for _ in 0..3 {
                svc.clone().oneshot(get()).await.unwrap();
            }
            assert_eq!(*seen.lock().unwrap(), [None, None, None]);
            assert_eq!(layer.usage().entries, 0);
        }

        #[tokio::test]
        async fn throttling_keeps_the_entry_and_not_found_drops_it() {
            let (svc, seen) = upstream(vec![
                res(200, &[("etag", "\"1\"")], "a"),
                res(429, &[("retry-after", "1")], "{}"),
                res(503, &[], ""),
                res(404, &[], "gone"),
                res(204, &[], ""),
            ]);
            let layer = RevalidateLayer::new();
            let svc = layer.layer(svc);
            for status in [200, 429, 503, 404, 204] {
                let res = svc.clone().oneshot(get()).await.unwrap();
                assert_eq!(res.status().as_u16(), status);
                assert!(res.extensions().get::<Revalidated>().is_none());
            }
            let tag = Some(HeaderValue::from_static("\"1\""));
            assert_eq!(
                *seen.lock().unwrap(),
                [None, tag.clone(), tag.clone(), tag, None]
            );
        }

        #[tokio::test]
        async fn a_304_after_the_entry_was_evicted_still_has_its_body() {
            let (svc, _) = upstream(vec![
                res(200, &[("etag", "\"1\"")], "kept"),
                res(304, &[("etag", "\"1\"")], ""),
            ]);
            let layer = RevalidateLayer::new();
            let mut svc = layer.layer(svc);
            svc.clone().oneshot(get()).await.unwrap();
            let pending = svc.call(get());
            // Evicted while the revalidation is in flight.
            svc.shared.cache().invalidate(&group(get().uri()).unwrap());
            let res = pending.await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "kept");
        }
    }
}
