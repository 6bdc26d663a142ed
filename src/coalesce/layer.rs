use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::Body;
use tokio::sync::broadcast;
use tower::{Layer, Service};

use super::body::CoalesceBody;
use super::future::{Answer, ResponseFuture};
use crate::ready;
use crate::BoxError;

/// Sends concurrent identical GETs once and gives every caller the same
/// answer; see [the module](crate::coalesce).
///
/// Clones share one map of flights and one [`CoalesceStats`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CoalesceLayer {
    flights: Arc<Flights>,
    max_body: usize,
}

/// Counters of a [`CoalesceLayer`], shared by its clones and services.
#[derive(Debug, Default)]
pub struct CoalesceStats {
    reads_coalesced: AtomicU64,
    not_shared: AtomicU64,
}

crate::macros::counter_getters!(
    CoalesceStats;
    /// GETs answered with another caller's answer, without a request of
    /// their own.
    reads_coalesced,
    /// GETs that waited for another's answer but sent their own: it was
    /// over the body cap or failed, or its caller dropped it and this one
    /// was elected to send it for the others.
    not_shared,
);

impl CoalesceStats {
    pub(crate) fn coalesced(&self) {
        crate::metrics::coalesced_read();
        self.reads_coalesced.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn alone(&self) {
        self.not_shared.fetch_add(1, Ordering::Relaxed);
    }
}

/// The GETs in flight, by what makes them identical.
pub(crate) struct Flights {
    map: Mutex<HashMap<Arc<Key>, Option<Sender>>>,
    pub(crate) stats: CoalesceStats,
}

/// How a leader's answer reaches those waiting for it: the answer, or
/// `None` when it cannot be shared (over the cap, or the leader's request
/// failed); a sender dropped unsent: the leader's caller gave up.
pub(crate) type Sender = broadcast::Sender<Option<Arc<Answer>>>;
pub(crate) type Receiver = broadcast::Receiver<Option<Arc<Answer>>>;

const KEYED_LEN: usize = 8;

/// The request headers that must be equal for two GETs to share an
/// answer: who asks, on which conditions, for which representation and
/// contract.
const KEYED: [HeaderName; KEYED_LEN] = [
    header::AUTHORIZATION,
    header::IF_NONE_MATCH,
    header::IF_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    HeaderName::from_static("x-xbl-contract-version"),
];

/// What makes two GETs identical: the URI and the [`KEYED`] headers.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    uri: Uri,
    headers: [Option<HeaderValue>; KEYED_LEN],
}

/// The URI only: the headers hold the caller's `Authorization`.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The key of a GET, or `None` for a request never coalesced: another
    /// method, or a keyed header given twice.
    fn of<B>(req: &Request<B>) -> Option<Self> {
        if req.method() != Method::GET {
            return None;
        }
        let mut headers: [Option<HeaderValue>; KEYED_LEN] = Default::default();
        for (slot, name) in headers.iter_mut().zip(&KEYED) {
            let mut values = req.headers().get_all(name).iter();
            *slot = values.next().cloned();
            if values.next().is_some() {
                return None;
            }
        }
        Some(Self {
            uri: req.uri().clone(),
            headers,
        })
    }
}

/// A caller's part in a flight.
pub(crate) enum Role {
    /// It sends the request; the others wait for its answer.
    Leader(Flight),
    /// It waits for the leader's answer.
    Follower(Receiver),
}

/// A leader's flight: removed from the map when the answer's head
/// arrives, or when the leader gives up (its followers then send their
/// own).
pub(crate) struct Flight {
    flights: Arc<Flights>,
    key: Option<Arc<Key>>,
}

impl Flight {
    /// The answer's head has arrived: no one joins any more. The sender
    /// to its followers, if any came.
    pub(crate) fn land(mut self) -> Option<Sender> {
        let key = self.key.take()?;
        self.flights.lock().remove(&key).flatten()
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.flights.lock().remove(&key);
        }
    }
}

/// How many GETs are in flight, not which: their keys hold the callers'
/// `Authorization`.
impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Flights");
        // Never waits: a `Debug` inside a holder of the lock would hang.
        if let Ok(map) = self.map.try_lock() {
            debug.field("in_flight", &map.len());
        }
        debug.field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<Key>, Option<Sender>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight of `key` as a follower, or starts it as leader.
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<Key>) -> Role {
        let mut map = self.lock();
        if let Some(sender) = map.get_mut(key) {
            // The channel is made for the first follower: a GET no one
            // else asks for pays nothing for it.
            let sender = sender.get_or_insert_with(|| broadcast::channel(1).0);
            return Role::Follower(sender.subscribe());
        }
        let key = key.clone();
        map.insert(key.clone(), None);
        Role::Leader(Flight {
            flights: self.clone(),
            key: Some(key),
        })
    }
}

impl Default for CoalesceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CoalesceLayer {
    /// A layer sharing answers of up to 256 KiB: far above a session
    /// document, and the revalidation cache's cap per body.
    pub fn new() -> Self {
        Self {
            flights: Arc::new(Flights {
                map: Mutex::default(),
                stats: CoalesceStats::default(),
            }),
            max_body: 256 * 1024,
        }
    }

    /// The largest body shared. An answer that announces a longer one (or
    /// none: it streams) goes to its leader alone, and the others send
    /// their own GETs. Default 256 KiB.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The counters, shared by the layer's clones and services.
    pub fn stats(&self) -> &CoalesceStats {
        &self.flights.stats
    }
}

impl<S> Layer<S> for CoalesceLayer {
    type Service = Coalesce<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Coalesce {
            inner,
            flights: self.flights.clone(),
            max_body: self.max_body,
        }
    }
}

/// Coalesces identical GETs; see [`CoalesceLayer`].
#[derive(Clone)]
pub struct Coalesce<S> {
    inner: S,
    flights: Arc<Flights>,
    max_body: usize,
}

impl<S> Coalesce<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Coalesce<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Coalesce<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CoalesceBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(key) = Key::of(&req) else {
            return ResponseFuture::through(self.inner.call(req));
        };
        let key = Arc::new(key);
        match self.flights.join(&key) {
            Role::Leader(flight) => {
                ResponseFuture::leading(self.inner.call(req), flight, self.max_body)
            }
            Role::Follower(answer) => {
                // It waits for the leader, holding no readiness meanwhile;
                // a clone is driven ready if it has to send its own.
                let svc = ready::release(&mut self.inner);
                let flights = self.flights.clone();
                ResponseFuture::following(svc, req, answer, (flights, key), self.max_body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use tokio::time::Instant;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::*;
    use crate::logical::LogicalLayer;
    use crate::retry::AttemptTimedOut;

    /// A service answering "answer <n>" (n counts its calls) after `delay`.
    fn slow(
        delay: Duration,
        sent: Arc<AtomicUsize>,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = BoxError,
        Future = impl Send,
    > + Clone {
        service_fn(move |_req: Request<Full<Bytes>>| {
            let n = sent.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, BoxError>(Response::new(Full::from(format!("answer {n}"))))
            }
        })
    }

    fn get() -> Request<Full<Bytes>> {
        Request::get("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s")
            .header(header::AUTHORIZATION, "XBL3.0 x=1;t")
            .body(Full::default())
            .unwrap()
    }

    async fn text<B: Body<Data = Bytes>>(res: Response<B>) -> String
    where
        B::Error: fmt::Debug,
    {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_over_the_cap_is_the_leaders_and_the_others_send_their_own() {
        let sent = Arc::new(AtomicUsize::new(0));
        let layer = CoalesceLayer::new().max_body(4);
        let svc = layer.layer(slow(Duration::from_millis(20), sent.clone()));
        let (a, b) = tokio::join!(svc.clone().oneshot(get()), svc.oneshot(get()));
        assert_eq!(text(a.unwrap()).await, "answer 0");
        assert_eq!(text(b.unwrap()).await, "answer 1");
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        assert_eq!(
            (layer.stats().reads_coalesced(), layer.stats().not_shared()),
            (0, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_keeps_its_deadline_and_outlives_a_dropped_leader() {
        let sent = Arc::new(AtomicUsize::new(0));
        let layer = CoalesceLayer::new();
        let svc = ServiceBuilder::new()
            .layer(LogicalLayer::new(Duration::from_secs(1), 1))
            .layer(layer.clone())
            .service(slow(Duration::from_secs(5), sent.clone()));
        let t0 = Instant::now();
        let leader = tokio::spawn(svc.clone().oneshot(get()));
        tokio::task::yield_now().await;
        let error = svc.clone().oneshot(get()).await.unwrap_err();
        let timed_out = error.downcast_ref::<AttemptTimedOut>().expect("timed out");
        assert_eq!(
            (timed_out.after, timed_out.attempts),
            (Duration::from_secs(1), 0)
        );
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));

        // A follower of a leader whose caller gives up sends it instead.
        let follower = tokio::spawn(svc.oneshot(get()));
        tokio::task::yield_now().await;
        leader.abort();
        assert_eq!(text(follower.await.unwrap().unwrap()).await, "answer 1");
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        assert_eq!(layer.stats().not_shared(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_leaders_caller_gives_up_one_follower_sends_for_the_others() {
        let sent = Arc::new(AtomicUsize::new(0));
        let layer = CoalesceLayer::new();
        let svc = layer.layer(slow(Duration::from_secs(1), sent.clone()));
        let leader = tokio::spawn(svc.clone().oneshot(get()));
        tokio::task::yield_now().await;
        let followers: Vec<_> = (0..3)
            .map(|_| tokio::spawn(svc.clone().oneshot(get())))
            .collect();
        tokio::task::yield_now().await;
        leader.abort();
        for follower in followers {
            assert_eq!(text(follower.await.unwrap().unwrap()).await, "answer 1");
        }
        assert_eq!(sent.load(Ordering::SeqCst), 2, "one GET for the three");
        assert_eq!(
            (layer.stats().reads_coalesced(), layer.stats().not_shared()),
            (2, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_leaders_request_fails_each_follower_sends_its_own() {
        let sent = Arc::new(AtomicUsize::new(0));
        let failing = service_fn({
            let sent = sent.clone();
            move |_req: Request<Full<Bytes>>| {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if n == 0 {
                        return Err::<Response<Full<Bytes>>, BoxError>("reset".into());
                    }
                    Ok(Response::new(Full::from(format!("answer {n}"))))
                }
            }
        });
        let layer = CoalesceLayer::new();
        let svc = layer.layer(failing);
        let (a, b, c) = tokio::join!(
            svc.clone().oneshot(get()),
            svc.clone().oneshot(get()),
            svc.oneshot(get())
        );
        assert!(a.is_err());
        let mut answers = [text(b.unwrap()).await, text(c.unwrap()).await];
        answers.sort();
        assert_eq!(answers, ["answer 1", "answer 2"], "each its own, at once");
        assert_eq!(layer.stats().not_shared(), 2);
    }

    #[test]
    fn only_gets_with_single_keyed_headers_have_a_key() {
        let put = Request::put("http://mpsd.test/x").body(()).unwrap();
        assert!(Key::of(&put).is_none());
        let twice = Request::get("http://mpsd.test/x")
            .header(header::IF_NONE_MATCH, "\"a\"")
            .header(header::IF_NONE_MATCH, "\"b\"")
            .body(())
            .unwrap();
        assert!(Key::of(&twice).is_none());
        let user = |who: &str| {
            let req = Request::get("http://mpsd.test/x")
                .header(header::AUTHORIZATION, format!("XBL3.0 x={who};t"))
                .header("x-request-id", who)
                .body(())
                .unwrap();
            Key::of(&req).unwrap()
        };
        assert_eq!(user("1"), user("1"), "other headers are not compared");
        assert_ne!(user("1"), user("2"));
    }
}

/// No readiness held by a follower waiting for its leader.
#[cfg(test)]
mod readiness {
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::limit::ConcurrencyLimitLayer;
    use tower::{Service, ServiceBuilder, ServiceExt};

    use super::CoalesceLayer;
    use crate::ready::test_support::{at, request, upstream, when};

    /// Two clients coalescing through one layer, each over the one permit
    /// of its own `ConcurrencyLimit`. u's GET through the second follows
    /// the first's, which takes 5 s; the second client's caller keeps its
    /// service meanwhile, as a long-lived client does. v's GET of another
    /// session through the second goes at once.
    #[tokio::test(start_paused = true)]
    async fn a_follower_holds_no_readiness_below() {
        let t0 = Instant::now();
        let (svc, log) = upstream(t0);
        let coalesce = CoalesceLayer::new();
        let client = || {
            ServiceBuilder::new()
                .layer(coalesce.clone())
                .layer(ConcurrencyLimitLayer::new(1))
                .service(svc.clone())
        };
        let (first, second) = (client(), client());
        let session = |s| format!("/serviceconfigs/c/sessionTemplates/t/sessions/{s}");
        let leader = tokio::spawn(first.oneshot(request("GET", &session("s"), "u", 5000)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut kept = second.clone();
        let follower = kept
            .ready()
            .await
            .unwrap()
            .call(request("GET", &session("s"), "u", 0));
        let follower = tokio::spawn(async move {
            let res = follower.await;
            drop(kept);
            res
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        second
            .oneshot(request("GET", &session("r"), "v", 0))
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(2), "v waited");
        leader.await.unwrap().unwrap();
        follower.await.unwrap().unwrap();
        assert_eq!(when(&log), at(&[(0, "u"), (2, "v")]));
        assert_eq!(coalesce.stats().reads_coalesced(), 1);
    }
}
