use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::future::ResponseFuture;
use super::table::PaceTable;
use crate::error::{Refused, RefusedBy};
use crate::logical::{at_most, LogicalRequest, DEFAULT_DEADLINE};
use crate::ready;
use crate::BoxError;

/// Adds [`Pace`] to a stack. Clones share its [`PaceTable`] (what is
/// counted, and every key's send times); [`with_table`](Self::with_table)
/// shares one with other stacks. No setter replaces it: what a table
/// counts is set when it is built.
#[derive(Clone)]
#[must_use]
pub struct PaceLayer {
    table: PaceTable,
}

impl fmt::Debug for PaceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaceLayer")
            .field("table", &self.table)
            .finish()
    }
}

impl Default for PaceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl PaceLayer {
    /// A layer with the defaults documented in [the module](crate::pace),
    /// with a new [`PaceTable`] of its own (MPSD's limits for every
    /// request, handle queries' limits on `POST /handles/query` as well, a
    /// 100 ms margin, 10,000 keys).
    pub fn new() -> Self {
        Self::with_table(PaceTable::new())
    }

    /// A layer pacing by `table`, shared with every layer given the same
    /// table (see [`PaceTable`] for an example with two stacks).
    pub fn with_table(table: PaceTable) -> Self {
        Self { table }
    }

    /// The table this layer paces by: a handle to give to other layers.
    pub fn table(&self) -> &PaceTable {
        &self.table
    }
}

impl<S> Layer<S> for PaceLayer {
    type Service = Pace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pace {
            inner,
            table: self.table.clone(),
        }
    }
}

/// Paces requests so that each key stays within MPSD's rate limits; see
/// [`PaceLayer`]. Clones share the [`PaceTable`].
#[derive(Clone)]
pub struct Pace<S> {
    inner: S,
    table: PaceTable,
}

impl<S> Pace<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Pace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pace")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Pace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(key) = self.table.key(req.uri(), req.headers()) else {
            return ResponseFuture::calling(self.inner.call(req), None);
        };
        let now = Instant::now();
        // A request waits for its slot until the logical request's
        // deadline, or the default one when no outer layer started one: to
        // a caller a wait for a slot is no different from a wait for a
        // retry. A slot further off is refused at once.
        let logical = req.extensions().get::<LogicalRequest>();
        let deadline = match logical {
            Some(logical) => logical.deadline(),
            None => at_most(now, DEFAULT_DEADLINE),
        };
        let attempts = logical.map_or(0, |logical| logical.context().attempts());
        #[cfg(feature = "redis")]
        if let Some(store) = self.table.store() {
            let reservation = self.table.reserve_shared(
                store,
                key.clone(),
                req.method(),
                req.uri(),
                now,
                deadline,
            );
            let learn = Some((self.table.clone(), key));
            return ResponseFuture::reserving(
                Box::pin(reservation),
                attempts,
                ready::release(&mut self.inner),
                req,
                learn,
            );
        }
        let reserved = self
            .table
            .reserve(&key, req.method(), req.uri(), now, deadline);
        let learn = Some((self.table.clone(), key));
        match reserved {
            Ok(slot) if slot <= now => ResponseFuture::calling(self.inner.call(req), learn),
            Ok(slot) => {
                tracing::debug!(wait = ?(slot - now), "mpsd pace: waiting for a slot");
                crate::metrics::pace_wait();
                ResponseFuture::waiting(slot, ready::release(&mut self.inner), req, learn)
            }
            Err(slot) => {
                ResponseFuture::failed(Refused::new(RefusedBy::Pace, slot - now, attempts))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response, StatusCode};
    use tokio::time::Instant;
    use tower::{service_fn, Layer, ServiceExt};

    use super::PaceLayer;
    use crate::classify::{Call, Classified, Outcome};
    use crate::pace::{Limits, PaceTable, Window};
    use crate::rules::rate_limit::RateLimitInfo;
    use crate::rules::target::TargetKind;

    fn get() -> Request<()> {
        Request::get("http://mpsd.test/handles/h1")
            .header("authorization", "XBL3.0 x=1234;token")
            .body(())
            .unwrap()
    }

    /// A service answering the first request with `first`, then 200.
    async fn first_then_ok(first: Response<()>) -> (PaceTable, Duration) {
        first_then_ok_with(PaceTable::new(), first).await
    }

    async fn first_then_ok_with(table: PaceTable, first: Response<()>) -> (PaceTable, Duration) {
        let first = std::sync::Arc::new(std::sync::Mutex::new(Some(first)));
        let svc = PaceLayer::with_table(table.clone()).layer(service_fn(move |_req| {
            let res = first.lock().unwrap().take().unwrap_or_default();
            async move { Ok::<_, std::convert::Infallible>(res) }
        }));
        let t0 = Instant::now();
        svc.clone().oneshot(get()).await.unwrap();
        svc.clone().oneshot(get()).await.unwrap();
        (table, t0.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pushes_the_next_slot_to_its_retry_after() {
        let res = Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "3")
            .body(())
            .unwrap();
        let (table, elapsed) = first_then_ok(res).await;
        assert_eq!(elapsed, Duration::from_secs(3));
        let stats = table.stats();
        assert_eq!(
            (stats.throttled(), stats.waits(), stats.refusals()),
            (1, 1, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_longer_than_the_windows_holds_for_all_of_it() {
        // Limits set shorter than the service's: the 429 is what corrects
        // them, so its `Retry-After` is not cut to the 1 s windows.
        let second = Window::new(100, Duration::from_secs(1));
        let table = PaceTable::builder()
            .limits(Limits::new(second, second))
            .build();
        let res = Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "2")
            .body(())
            .unwrap();
        let (_, elapsed) = first_then_ok_with(table, res).await;
        assert_eq!(elapsed, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_body_saying_the_window_is_full_holds_it_for_the_period() {
        let info = RateLimitInfo::parse(
            br#"{"currentRequests":31,"maxRequests":30,"periodInSeconds":15}"#,
        );
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        let outcome = Outcome::TooManyRequests {
            retry_after: None,
            rate_limit: info,
        };
        let call = Call::new(http::Method::GET, TargetKind::Session);
        res.extensions_mut().insert(Classified::new(outcome, call));
        let (_, elapsed) = first_then_ok(res).await;
        assert_eq!(elapsed, Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn an_enormous_retry_after_is_capped_at_a_day() {
        let res = Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "100000")
            .body(())
            .unwrap();
        let table = PaceTable::new();
        let first = std::sync::Arc::new(std::sync::Mutex::new(Some(res)));
        let svc = PaceLayer::with_table(table.clone()).layer(service_fn(move |_req| {
            let res = first.lock().unwrap().take().unwrap_or_default();
            async move { Ok::<_, std::convert::Infallible>(res) }
        }));
        svc.clone().oneshot(get()).await.unwrap();
        // A day is past the default 20 s deadline: refused at once, and the
        // refusal says when.
        let err = svc.oneshot(get()).await.unwrap_err();
        let refused = err.downcast_ref::<crate::error::Refused>().unwrap();
        assert_eq!(refused.retry_in, crate::rules::retry_after::MAX_HOLD);
        assert_eq!(table.stats().refusals(), 1);
    }
}

/// With a shared store that never answers, pacing falls back to the
/// process's own windows, exactly as without one.
#[cfg(all(test, feature = "redis"))]
mod fallback {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http::{Request, Response};
    use tokio::time::Instant;
    use tower::{service_fn, Layer, ServiceExt};

    use super::PaceLayer;
    use crate::fleet::RedisStore;
    use crate::pace::{Limits, PaceTable, Window};

    #[tokio::test(start_paused = true)]
    async fn with_redis_unreachable_the_processs_own_windows_pace() {
        let store = RedisStore::open("redis://127.0.0.1:1/").unwrap();
        let limits = Limits::new(
            Window::new(3, Duration::from_secs(10)),
            Window::new(5, Duration::from_secs(100)),
        );
        let table = PaceTable::builder()
            .limits(limits)
            .margin(Duration::ZERO)
            .redis(store.clone())
            .build();
        let sends: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let log = sends.clone();
        let svc = PaceLayer::with_table(table.clone()).layer(service_fn(move |_req| {
            log.lock().unwrap().push(Instant::now());
            async { Ok::<_, std::convert::Infallible>(Response::new(())) }
        }));
        let get = || {
            Request::get("http://mpsd.test/handles/h1")
                .header("authorization", "XBL3.0 x=1234;token")
                .body(())
                .unwrap()
        };
        for _ in 0..4 {
            svc.clone().oneshot(get()).await.unwrap();
        }
        let sends = sends.lock().unwrap();
        let after: Vec<Duration> = sends.iter().map(|&s| s - sends[0]).collect();
        let secs = Duration::from_secs;
        assert_eq!(after, [secs(0), secs(0), secs(0), secs(10)]);
        assert_eq!((store.fallbacks(), store.is_shared()), (1, false));
        assert_eq!(table.stats().waits(), 1);
    }
}

/// No readiness held across a wait for a slot.
#[cfg(test)]
mod readiness {
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::limit::ConcurrencyLimitLayer;
    use tower::{ServiceBuilder, ServiceExt};

    use super::PaceLayer;
    use crate::pace::{Limits, PaceTable, Window};
    use crate::ready::test_support::{at, request, upstream, when};

    /// u's second request waits 10 s for its slot; v's, sent meanwhile
    /// through the one permit of a `ConcurrencyLimit` below, goes at once.
    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_its_slot_holds_no_readiness_below() {
        let window = Window::new(1, Duration::from_secs(10));
        let table = PaceTable::builder()
            .limits(Limits::new(window, window))
            .margin(Duration::ZERO)
            .build();
        let t0 = Instant::now();
        let (svc, log) = upstream(t0);
        let client = ServiceBuilder::new()
            .layer(PaceLayer::with_table(table))
            .layer(ConcurrencyLimitLayer::new(1))
            .service(svc);
        let get = |user| request("GET", "/handles/h1", user, 0);
        client.clone().oneshot(get("u")).await.unwrap();
        let waiting = tokio::spawn(client.clone().oneshot(get("u")));
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.clone().oneshot(get("v")).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(1), "v waited");
        waiting.await.unwrap().unwrap();
        assert_eq!(when(&log), at(&[(0, "u"), (1, "v"), (10, "u")]));
    }
}
