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
use crate::BoxError;

/// Sends concurrent identical GETs once and gives every caller the same
/// answer; see [the module](crate::coalesce).
///
/// Clones share one map of flights and one [`CoalesceStats`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CoalesceLayer {
    flights: Arc<Flights>,
}

/// Counters of a [`CoalesceLayer`], shared by its clones and services.
#[derive(Debug, Default)]
pub struct CoalesceStats {
    reads_coalesced: AtomicU64,
    not_shared: AtomicU64,
}

impl CoalesceStats {
    /// GETs answered with another caller's answer, without a request of
    /// their own.
    pub fn reads_coalesced(&self) -> u64 {
        self.reads_coalesced.load(Ordering::Relaxed)
    }

    /// GETs that waited for another's answer but sent their own: it was
    /// over the body cap, failed, or its caller dropped it.
    pub fn not_shared(&self) -> u64 {
        self.not_shared.load(Ordering::Relaxed)
    }

    pub(crate) fn coalesced(&self) {
        self.reads_coalesced.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn alone(&self) {
        self.not_shared.fetch_add(1, Ordering::Relaxed);
    }
}

/// The GETs in flight, by what makes them identical.
#[derive(Debug)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Key, Option<Sender>>>,
    pub(crate) max_body: usize,
    pub(crate) stats: CoalesceStats,
}

/// How a leader's answer reaches those waiting for it: the answer, or
/// `None` when it cannot be shared.
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    uri: Uri,
    headers: [Option<HeaderValue>; KEYED_LEN],
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
    key: Option<Key>,
}

impl Flight {
    /// The answer's head has arrived: no one joins any more. The sender
    /// to its followers, if any came.
    pub(crate) fn land(mut self) -> Option<Sender> {
        let key = self.key.take()?;
        self.flights.lock().remove(&key).flatten()
    }

    pub(crate) fn flights(&self) -> &Flights {
        &self.flights
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.flights.lock().remove(&key);
        }
    }
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Option<Sender>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight of `key` as a follower, or starts it as leader.
    fn join(self: &Arc<Self>, key: Key) -> Role {
        let mut map = self.lock();
        if let Some(sender) = map.get_mut(&key) {
            // The channel is made for the first follower: a GET no one
            // else asks for pays nothing for it.
            let sender = sender.get_or_insert_with(|| broadcast::channel(1).0);
            return Role::Follower(sender.subscribe());
        }
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
                max_body: 256 * 1024,
                stats: CoalesceStats::default(),
            }),
        }
    }

    /// The largest body shared. An answer that announces a longer one (or
    /// none: it streams) goes to its leader alone, and the others send
    /// their own GETs. Default 256 KiB.
    ///
    /// A new layer: its clones share a new map of flights and counters.
    pub fn max_body(self, bytes: usize) -> Self {
        Self {
            flights: Arc::new(Flights {
                map: Mutex::default(),
                max_body: bytes,
                stats: CoalesceStats::default(),
            }),
        }
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
        }
    }
}

/// Coalesces identical GETs; see [`CoalesceLayer`].
#[derive(Clone)]
pub struct Coalesce<S> {
    inner: S,
    flights: Arc<Flights>,
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
        match self.flights.join(key) {
            Role::Leader(flight) => ResponseFuture::leading(self.inner.call(req), flight),
            Role::Follower(answer) => {
                // It may have to send its own; a clone waits for that.
                let svc = self.inner.clone();
                ResponseFuture::following(svc, req, answer, self.flights.clone())
            }
        }
    }
}
