//! The hyper server: builder, accept loop, the per-request pipeline
//! (faults, overload, authorization, rate limit, store) and the request log.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_TYPE, ETAG, IF_MATCH,
    IF_NONE_MATCH, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::RootCertStore;

use crate::auth::{credentials, Tokens};
use crate::faults::{Breakage, Fault, Faults};
use crate::go_away::{self, GoAway, GoAwaySent};
use crate::limits::{Overload, RateLimiter, RateLimits, Shedder};
use crate::store::{self, Reply, Store, JSON, TEXT};
use crate::tls::Tls;
use crate::BoxError;

/// The log keeps this many most recent entries.
const LOG_CAPACITY: usize = 1_000_000;

/// The simulator's entry point: [`Simulator::start`] for the defaults,
/// [`Simulator::builder`] to configure it.
#[derive(Debug, Clone, Copy)]
pub struct Simulator;

impl Simulator {
    /// A builder with the defaults: MPSD's rate limits, no overload, the
    /// templates `LobbySession` and `GameSession`, 1 MiB request bodies.
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// Starts a simulator with the defaults on `127.0.0.1` and a free port.
    pub async fn start() -> io::Result<SimHandle> {
        Self::builder().start().await
    }
}

/// Configures and starts a simulator.
#[derive(Debug, Clone)]
#[must_use]
pub struct SimBuilder {
    rate_limit: Option<RateLimits>,
    overload: Option<Overload>,
    templates: Vec<String>,
    max_body_bytes: usize,
    https: bool,
    check_tokens: bool,
}

impl Default for SimBuilder {
    fn default() -> Self {
        Self {
            // Tests see MPSD's real limits unless they opt out.
            rate_limit: Some(RateLimits::mpsd()),
            overload: None,
            templates: vec!["LobbySession".into(), "GameSession".into()],
            // Far above any real session document; small enough to test 413.
            max_body_bytes: 1024 * 1024,
            https: false,
            check_tokens: false,
        }
    }
}

impl SimBuilder {
    /// Rate-limits each user (default: [`RateLimits::mpsd`]).
    pub fn rate_limit(mut self, limits: RateLimits) -> Self {
        self.rate_limit = Some(limits);
        self
    }

    /// Turns rate limiting off.
    pub fn no_rate_limit(mut self) -> Self {
        self.rate_limit = None;
        self
    }

    /// Sheds load beyond `overload` with 503 (default: off).
    pub fn overload(mut self, overload: Overload) -> Self {
        self.overload = Some(overload);
        self
    }

    /// The session templates that exist (matched case-insensitively); other
    /// templates answer 404. Default: `LobbySession` and `GameSession`.
    pub fn templates<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.templates = names.into_iter().map(Into::into).collect();
        self
    }

    /// The largest request body accepted (default 1 MiB); larger ones get 413.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Serves HTTPS instead of plain HTTP: TLS with a self-signed
    /// certificate made at start (trust it through
    /// [`SimHandle::root_store`]), and ALPN offering `h2` then `http/1.1`,
    /// so a client that offers both speaks HTTP/2. The URIs the handle
    /// gives are `https://127.0.0.1:{port}/...`.
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// Accepts only tokens it issued ([`SimHandle::issue_token`]), for
    /// their user and until they expire; any other token is answered 401
    /// `text/plain` with `WWW-Authenticate: XBL3.0`, as MPSD answers an
    /// expired or unknown XBL token. Default: any non-empty token passes.
    pub fn check_tokens(mut self) -> Self {
        self.check_tokens = true;
        self
    }

    /// Starts the simulator on `127.0.0.1` and a free port.
    pub async fn start(self) -> io::Result<SimHandle> {
        self.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts the simulator on `addr`. Its tasks run on the current tokio
    /// runtime.
    pub async fn bind(self, addr: SocketAddr) -> io::Result<SimHandle> {
        let tls = if self.https { Some(Tls::new()?) } else { None };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                store: Store::new(&self.templates),
                faults: Faults::default(),
                go_aways: VecDeque::new(),
                go_aways_sent: Vec::new(),
                shedder: Shedder::new(Instant::now(), self.overload),
                limiter: self.rate_limit.map(RateLimiter::new),
                tokens: Tokens::default(),
                check_tokens: self.check_tokens,
                log: VecDeque::new(),
            }),
            max_body_bytes: self.max_body_bytes,
            clock: Clock {
                wall: SystemTime::now(),
                started: Instant::now(),
            },
        });
        let (stop, stopped) = watch::channel(false);
        let acceptor = tls.as_ref().map(|tls| tls.acceptor.clone());
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            acceptor,
            stopped,
        ));
        Ok(SimHandle {
            inner: Arc::new(Inner {
                shared,
                addr,
                certificate: tls.map(|tls| tls.certificate),
                stop,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

/// One request the simulator answered.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogEntry {
    /// When the request arrived (virtual time on a paused clock).
    pub at: Instant,
    /// The request method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// The caller's user hash, if its `Authorization` had one.
    pub user: Option<String>,
    /// The `If-Match` header.
    pub if_match: Option<String>,
    /// The `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// The status answered.
    pub status: StatusCode,
    /// The length of the response body sent.
    pub response_bytes: usize,
    /// Whether a scripted fault broke the connection instead of answering
    /// ([`Fault::reset`], [`Fault::truncate`], [`Fault::refuse_stream`]).
    pub broken: bool,
    /// Which connection the request came on: connections are numbered
    /// from 0 in the order they were accepted.
    pub connection: u64,
    /// The HTTP version the request came in (`HTTP_2` when a client
    /// negotiated `h2` with an [`https`](SimBuilder::https) simulator).
    pub version: Version,
}

/// A running simulator. Clones are cheap and share it; it stops on
/// [`shutdown`](Self::shutdown) or when the last clone is dropped.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The self-signed certificate, when serving HTTPS.
    certificate: Option<CertificateDer<'static>>,
    /// Dropping it (with the last handle) stops the server too.
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://{addr}`, or `https://{addr}` when serving HTTPS.
    pub fn base_uri(&self) -> String {
        let scheme = if self.inner.certificate.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.inner.addr)
    }

    /// The DER of the self-signed certificate an
    /// [`https`](SimBuilder::https) simulator presents (`None` for plain
    /// HTTP). It names `localhost` and `127.0.0.1`.
    pub fn certificate_der(&self) -> Option<CertificateDer<'static>> {
        self.inner.certificate.clone()
    }

    /// Roots that trust this simulator and nothing else, for a rustls
    /// `ClientConfig` (`None` for plain HTTP).
    pub fn root_store(&self) -> Option<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.certificate_der()?).ok()?;
        Some(roots)
    }

    /// The URI of a session.
    pub fn session_uri(&self, scid: &str, template: &str, name: &str) -> String {
        format!(
            "{}/serviceconfigs/{scid}/sessionTemplates/{template}/sessions/{name}",
            self.base_uri()
        )
    }

    /// The requests answered so far (the most recent million), oldest first.
    pub fn log(&self) -> Vec<LogEntry> {
        self.inner.shared.lock().log.iter().cloned().collect()
    }

    /// Empties the log.
    pub fn clear_log(&self) {
        self.inner.shared.lock().log.clear();
    }

    /// Queues a fault, after those already scripted.
    pub fn script(&self, fault: Fault) {
        self.inner.shared.lock().faults.push(fault);
    }

    /// Queues a [`GoAway`] for a coming `h2` connection, after those
    /// already queued: each takes the next connection that negotiates `h2`.
    pub fn script_go_away(&self, go_away: GoAway) {
        self.inner.shared.lock().go_aways.push_back(go_away);
    }

    /// The scripted `GOAWAY`s sent so far, oldest first.
    pub fn go_aways(&self) -> Vec<GoAwaySent> {
        self.inner.shared.lock().go_aways_sent.clone()
    }

    /// Turns overload shedding on or off; the current window counts afresh.
    pub fn set_overload(&self, overload: Option<Overload>) {
        self.inner.shared.lock().shedder.set(overload);
    }

    /// Changes the rate limits (keeping what was counted) or turns them off
    /// (forgetting it).
    pub fn set_rate_limit(&self, limits: Option<RateLimits>) {
        let limiter = &mut self.inner.shared.lock().limiter;
        match (limiter.as_mut(), limits) {
            (Some(limiter), Some(limits)) => limiter.set_limits(limits),
            (_, limits) => *limiter = limits.map(RateLimiter::new),
        }
    }

    /// Issues a token for `user` (a user hash) that expires `ttl` from now
    /// (on `tokio::time`), for a simulator that
    /// [checks tokens](SimBuilder::check_tokens).
    pub fn issue_token(&self, user: &str, ttl: Duration) -> String {
        let now = Instant::now();
        self.inner.shared.lock().tokens.issue(user, ttl, now)
    }

    /// A session's current document, for assertions.
    pub fn session(&self, scid: &str, template: &str, name: &str) -> Option<serde_json::Value> {
        self.inner.shared.lock().store.session(scid, template, name)
    }

    /// Stops accepting connections, lets open ones finish their current
    /// request, and waits for the accept loop to end. Other clones of the
    /// handle see a stopped server.
    pub async fn shutdown(self) {
        self.inner.stop.send_replace(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct Shared {
    state: Mutex<State>,
    max_body_bytes: usize,
    clock: Clock,
}

/// The wall clock the store sees: the wall time at start plus the
/// `tokio::time` elapsed since, so that on a paused clock the store's
/// timestamps move with virtual time, and tests stay deterministic.
struct Clock {
    wall: SystemTime,
    started: Instant,
}

impl Clock {
    fn at(&self, at: Instant) -> SystemTime {
        self.wall + at.saturating_duration_since(self.started)
    }
}

impl Shared {
    /// Critical sections are short and never span an `.await`.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    store: Store,
    faults: Faults,
    /// Scripted `GOAWAY`s for coming `h2` connections, and those sent.
    go_aways: VecDeque<GoAway>,
    go_aways_sent: Vec<GoAwaySent>,
    shedder: Shedder,
    limiter: Option<RateLimiter>,
    /// The tokens issued.
    tokens: Tokens,
    /// Whether only they are accepted.
    check_tokens: bool,
    log: VecDeque<LogEntry>,
}

/// What the pipeline needs from a request once its body is taken.
struct Meta {
    at: Instant,
    method: Method,
    uri: Uri,
    version: Version,
    connection: u64,
    user: Option<String>,
    /// Checked, never logged.
    token: Option<String>,
    if_match: Option<String>,
    if_none_match: Option<String>,
}

impl Meta {
    fn of(req: &Request<Incoming>, connection: u64) -> Self {
        let credentials = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| credentials(value.as_bytes()));
        let header = |name| {
            req.headers()
                .get(name)
                .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Self {
            at: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            connection,
            user: credentials.as_ref().map(|(hash, _)| hash.clone()),
            token: credentials.map(|(_, token)| token),
            if_match: header(IF_MATCH),
            if_none_match: header(IF_NONE_MATCH),
        }
    }

    fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    fn entry(self, status: StatusCode, response_bytes: usize, broken: bool) -> LogEntry {
        LogEntry {
            path: self.path().to_owned(),
            at: self.at,
            method: self.method,
            user: self.user,
            if_match: self.if_match,
            if_none_match: self.if_none_match,
            status,
            response_bytes,
            broken,
            version: self.version,
            connection: self.connection,
        }
    }
}

impl State {
    /// Steps (1)-(4): a scripted fault, overload, missing authorization or
    /// rate limit answers before the body is even read.
    fn gate(&mut self, meta: &Meta) -> Option<Response<Full<Bytes>>> {
        if let Some(fault) = self.faults.take(&meta.method, meta.path()) {
            return Some(fault_response(&fault));
        }
        if let Err(secs) = self.shedder.check(meta.at) {
            let mut res = respond(StatusCode::SERVICE_UNAVAILABLE, Some(TEXT), Bytes::new());
            res.headers_mut().insert(RETRY_AFTER, secs.into());
            return Some(res);
        }
        let Some(user) = meta.user.as_deref() else {
            let message = "missing or invalid `Authorization: XBL3.0 x=<userhash>;<token>`";
            return Some(respond(StatusCode::FORBIDDEN, Some(TEXT), message.into()));
        };
        let token = meta.token.as_deref().unwrap_or_default();
        if self.check_tokens && !self.tokens.valid(user, token, meta.at) {
            let message = "the XBL token is expired or unknown";
            let mut res = respond(StatusCode::UNAUTHORIZED, Some(TEXT), message.into());
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("XBL3.0"));
            return Some(res);
        }
        let throttled = self.limiter.as_mut()?.check(user, meta.at).err()?;
        let mut res = respond(
            StatusCode::TOO_MANY_REQUESTS,
            Some(JSON),
            throttled.body().into(),
        );
        res.headers_mut()
            .insert(RETRY_AFTER, throttled.retry_after.into());
        Some(res)
    }

    fn record(&mut self, entry: LogEntry) {
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ids = 0..;
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let conn = Arc::new(Conn {
                    id: ids.next().unwrap_or_default(),
                    go_away: Notify::new(),
                });
                let service = SimService {
                    shared: Arc::clone(&shared),
                    conn: Arc::clone(&conn),
                };
                let stop = stop.clone();
                match tls.clone() {
                    None => tokio::spawn(connection(stream, service, conn, stop)),
                    Some(tls) => tokio::spawn(tls_connection(stream, tls, service, conn, stop)),
                };
            }
            Err(error) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "mpsd sim: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Resolves once shutdown is asked for, or every handle is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // `Err` means the sender (the last handle) was dropped: stop as well.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// One accepted connection.
struct Conn {
    id: u64,
    /// Woken by a [`Fault::go_away`] answered on it.
    go_away: Notify,
}

async fn connection(
    stream: TcpStream,
    service: SimService,
    conn: Arc<Conn>,
    mut stop: watch::Receiver<bool>,
) {
    // Small responses go out at once; timings in tests and benches stay honest.
    let _ = stream.set_nodelay(true);
    // No hyper timers: tests run on a paused clock.
    let served = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    drive(served, |c| c.graceful_shutdown(), &mut stop, &conn.go_away).await;
}

/// An HTTPS connection: the TLS handshake, then HTTP/1.1 or HTTP/2, as
/// the client's first bytes say (ALPN has offered both).
async fn tls_connection(
    stream: TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    service: SimService,
    conn: Arc<Conn>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let stream = tokio::select! {
        () = stopped(&mut stop) => return,
        accepted = tls.accept(stream) => match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "mpsd sim: TLS handshake failed");
                return;
            }
        },
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let scripted = h2.then(|| service.shared.lock().go_aways.pop_front());
    if let Some(go_away) = scripted.flatten() {
        return scripted_go_away(stream, go_away, &service.shared, conn.id, &mut stop).await;
    }
    // No hyper timers here either: no keep-alive pings, no header timeout.
    let builder = auto::Builder::new(TokioExecutor::new());
    let served = builder.serve_connection(TokioIo::new(stream), service);
    drive(served, |c| c.graceful_shutdown(), &mut stop, &conn.go_away).await;
}

/// An `h2` connection taken by a scripted [`GoAway`]: not served, only
/// answered with the `GOAWAY`, then read until the client closes it.
async fn scripted_go_away(
    mut stream: tokio_rustls::server::TlsStream<TcpStream>,
    go_away: GoAway,
    shared: &Shared,
    connection: u64,
    stop: &mut watch::Receiver<bool>,
) {
    let sent = tokio::select! {
        () = stopped(stop) => return,
        sent = go_away::send(&mut stream, go_away, connection) => sent,
    };
    match sent {
        Ok(sent) => shared.lock().go_aways_sent.push(sent),
        Err(error) => {
            tracing::debug!(%error, "mpsd sim: no request came for the scripted GOAWAY");
            return;
        }
    }
    tokio::select! {
        () = stopped(stop) => {}
        () = go_away::drain(&mut stream) => {}
    }
}

/// The simulator's service on one connection. Its future is boxed: the
/// pipeline is an `async fn`, and a simulator can afford the allocation.
#[derive(Clone)]
struct SimService {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
}

type ServeFuture =
    Pin<Box<dyn std::future::Future<Output = Result<Response<SimBody>, BoxError>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for SimService {
    type Response = Response<SimBody>;
    type Error = BoxError;
    type Future = ServeFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(serve(Arc::clone(&self.shared), Arc::clone(&self.conn), req))
    }
}

/// Serves `conn` until it ends; on shutdown, or when a fault asks for a
/// GOAWAY, shuts it down gracefully (HTTP/2: `GOAWAY`; HTTP/1.1: no
/// keep-alive) and lets it finish what it has started.
async fn drive<C, E>(
    conn: C,
    shutdown: impl FnOnce(Pin<&mut C>),
    stop: &mut watch::Receiver<bool>,
    go_away: &Notify,
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(stop) => {
            shutdown(conn.as_mut());
            conn.await
        }
        () = go_away.notified() => {
            shutdown(conn.as_mut());
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "mpsd sim: connection ended with an error");
    }
}

/// The simulator's response body: whole, or cut short by a fault.
type SimBody = UnsyncBoxBody<Bytes, BoxError>;

/// A scripted fault broke the connection on purpose.
#[derive(Debug)]
struct Broken;

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("mpsd sim: connection broken by a scripted fault")
    }
}

impl std::error::Error for Broken {}

async fn serve(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, BoxError> {
    let meta = Meta::of(&req, conn.id);
    let gated = shared.lock().gate(&meta);
    let mut res = match gated {
        Some(mut res) => {
            if let Some(Delay(delay)) = res.extensions_mut().remove::<Delay>() {
                tokio::time::sleep(delay).await;
            }
            res
        }
        None => route(&shared, &meta, req).await,
    };
    let breakage = res.extensions_mut().remove::<Breakage>();
    let sent = match breakage {
        None => body_len(&res),
        Some(Breakage::Reset | Breakage::Refuse) => 0,
        Some(Breakage::Truncate(n)) => n.min(body_len(&res)),
        Some(Breakage::GoAway) => body_len(&res),
    };
    let broken = breakage.is_some_and(|b| b != Breakage::GoAway);
    let entry = meta.entry(res.status(), sent, broken);
    shared.lock().record(entry);
    let whole = |res: Response<Full<Bytes>>| {
        res.map(|body| body.map_err(|never| match never {}).boxed_unsync())
    };
    match breakage {
        None => Ok(whole(res)),
        // hyper closes the connection (HTTP/1.1) or resets the stream with
        // `INTERNAL_ERROR` (HTTP/2) when the service fails.
        Some(Breakage::Reset) => Err(Broken.into()),
        // hyper resets an HTTP/2 stream with the reason of an `h2::Error`
        // in the service's error: `REFUSED_STREAM`, "not processed".
        Some(Breakage::Refuse) => Err(h2::Error::from(h2::Reason::REFUSED_STREAM).into()),
        Some(Breakage::Truncate(n)) => Ok(truncated(res, n)),
        Some(Breakage::GoAway) => {
            conn.go_away.notify_one();
            Ok(whole(res))
        }
    }
}

/// `res` with a `Content-Length` for its whole body, but only `n` bytes of
/// it before the body fails, which makes hyper close the connection.
fn truncated(res: Response<Full<Bytes>>, n: usize) -> Response<SimBody> {
    let whole = body_len(&res);
    let (mut head, body) = res.into_parts();
    head.headers.insert(CONTENT_LENGTH, whole.into());
    let prefix = futures_util::FutureExt::now_or_never(body.collect())
        .and_then(Result::ok)
        .map(|b| b.to_bytes().slice(..n.min(whole)))
        .unwrap_or_default();
    // The failure comes a moment later, so that hyper has flushed the head
    // and the prefix: the client sees an answer whose body breaks off.
    let failure = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Err::<Frame<Bytes>, BoxError>(Broken.into())
    });
    let frames = futures_util::stream::iter([Ok(Frame::data(prefix))]).chain(failure);
    Response::from_parts(head, StreamBody::new(frames).boxed_unsync())
}

/// Step (5): reads the body and lets the store answer.
async fn route(shared: &Shared, meta: &Meta, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), shared.max_body_bytes)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(TEXT),
                "request body too large".into(),
            )
        }
        Err(_) => {
            return respond(
                StatusCode::BAD_REQUEST,
                Some(TEXT),
                "could not read the request body".into(),
            )
        }
    };
    let request = store::Request {
        method: &meta.method,
        path: meta.uri.path(),
        query: meta.uri.query(),
        user: meta.user.as_deref().unwrap_or_default(),
        if_match: meta.if_match.as_deref(),
        if_none_match: meta.if_none_match.as_deref(),
        body: &body,
        now: shared.clock.at(meta.at),
    };
    let reply = shared.lock().store.handle(&request);
    reply_response(reply)
}

fn respond(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    if let Some(content_type) = content_type {
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    res
}

fn reply_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut res = respond(reply.status, reply.content_type, reply.body);
    if let Some(etag) = reply.etag.and_then(|e| HeaderValue::try_from(&*e).ok()) {
        res.headers_mut().insert(ETAG, etag);
    }
    if let Some(allow) = reply.allow {
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    let paths = [
        (CONTENT_LOCATION, reply.content_location),
        (LOCATION, reply.location),
    ];
    for (name, path) in paths {
        // A path with bytes a header cannot carry is left out.
        if let Some(value) = path.and_then(|p| HeaderValue::try_from(&*p).ok()) {
            res.headers_mut().insert(name, value);
        }
    }
    res
}

/// How long a scripted answer is held back.
#[derive(Clone, Copy)]
struct Delay(Duration);

fn fault_response(fault: &Fault) -> Response<Full<Bytes>> {
    let mut res = respond(fault.status_code(), None, fault.body_bytes().clone());
    for (name, value) in fault.headers() {
        res.headers_mut().append(name.clone(), value.clone());
    }
    if !fault.delay_time().is_zero() {
        res.extensions_mut().insert(Delay(fault.delay_time()));
    }
    if let Some(breakage) = fault.breakage() {
        res.extensions_mut().insert(breakage);
    }
    res
}

/// The length of the body sent, for the log (`Full` knows it exactly).
fn body_len(res: &Response<Full<Bytes>>) -> usize {
    let hint = http_body::Body::size_hint(res.body());
    usize::try_from(hint.exact().unwrap_or(hint.lower())).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;
    use http::HeaderMap;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;
    use serde_json::{json, Value};

    use crate::Window;

    type TestClient = Client<HttpConnector, Full<Bytes>>;

    const JOIN: &str = r#"{"members":{"me":{}}}"#;

    fn client() -> TestClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    fn request(method: Method, uri: &str, user: Option<&str>) -> http::request::Builder {
        let builder = Request::builder().method(method).uri(uri);
        match user {
            Some(user) => builder.header(AUTHORIZATION, format!("XBL3.0 x={user};token")),
            None => builder,
        }
    }

    async fn send(
        client: &TestClient,
        req: http::request::Builder,
        body: &str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let (parts, body) = client.request(req).await.unwrap().into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn put_create_then_get_if_none_match_is_304() {
        let sim = Simulator::start().await.unwrap();
        let client = client();
        let uri = sim.session_uri("scid", "LobbySession", "s1");

        let (status, headers, body) =
            send(&client, request(Method::PUT, &uri, Some("42")), JOIN).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers[CONTENT_TYPE], JSON);
        let etag = headers[ETAG].clone();
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["members"]["0"]["constants"]["system"]["xuid"], "42");

        let get = request(Method::GET, &uri, Some("42")).header(IF_NONE_MATCH, etag.clone());
        let (status, headers, body) = send(&client, get, "").await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers[ETAG], etag);
        assert!(body.is_empty());

        let log = sim.log();
        assert_eq!(log.len(), 2);
        assert_eq!(
            (log[0].method.clone(), log[0].status),
            (Method::PUT, StatusCode::CREATED)
        );
        assert_eq!(log[0].response_bytes, body_len_of(&doc));
        assert_eq!(
            log[0].path,
            "/serviceconfigs/scid/sessionTemplates/LobbySession/sessions/s1"
        );
        assert_eq!(log[1].user.as_deref(), Some("42"));
        assert_eq!(log[1].if_none_match.as_deref(), etag.to_str().ok());
        assert_eq!(
            (log[1].status, log[1].response_bytes),
            (StatusCode::NOT_MODIFIED, 0)
        );
        assert_eq!(sim.session("scid", "lobbysession", "s1"), Some(doc));
        sim.shutdown().await;
    }

    fn body_len_of(doc: &Value) -> usize {
        doc.to_string().len()
    }

    #[tokio::test(start_paused = true)]
    async fn burst_limit_answers_429_on_virtual_time() {
        let t0 = Instant::now();
        let sim = Simulator::start().await.unwrap();
        let client = client();
        let uri = sim.session_uri("scid", "LobbySession", "s1");
        for _ in 0..30 {
            let (status, _, _) = send(&client, request(Method::GET, &uri, Some("u")), "").await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        let (status, headers, body) =
            send(&client, request(Method::GET, &uri, Some("u")), "").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[CONTENT_TYPE], JSON);
        // All 31 arrived at t0: the window drains 15 s later.
        assert_eq!(headers[RETRY_AFTER], "15");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"version": 1, "currentRequests": 31, "maxRequests": 30, "periodInSeconds": 15, "limitType": "Rate"})
        );
        // Another user is not throttled.
        let (status, _, _) = send(&client, request(Method::GET, &uri, Some("v")), "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        tokio::time::advance(Duration::from_secs(5)).await;
        let (status, headers, _) = send(&client, request(Method::GET, &uri, Some("u")), "").await;
        assert_eq!(
            (status, &headers[RETRY_AFTER]),
            (StatusCode::TOO_MANY_REQUESTS, &HeaderValue::from(10))
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let (status, _, _) = send(&client, request(Method::GET, &uri, Some("u")), "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let log = sim.log();
        let times: Vec<Duration> = log.iter().map(|e| e.at - t0).collect();
        assert_eq!(times[..32], [Duration::ZERO; 32]);
        assert_eq!(
            times[32..],
            [Duration::from_secs(5), Duration::from_secs(15)]
        );
        assert_eq!(log[30].status, StatusCode::TOO_MANY_REQUESTS);
        sim.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn overload_sheds_with_retry_after_until_the_window_ends() {
        let sim = Simulator::builder()
            .no_rate_limit()
            .overload(Overload {
                capacity: 2,
                window: Duration::from_secs(10),
            })
            .start()
            .await
            .unwrap();
        let client = client();
        let uri = sim.session_uri("scid", "GameSession", "g");
        tokio::time::advance(Duration::from_secs(3)).await;
        for expected in [204, 204, 503] {
            let (status, headers, body) =
                send(&client, request(Method::GET, &uri, Some("u")), "").await;
            assert_eq!(status.as_u16(), expected);
            if expected == 503 {
                assert_eq!(headers[RETRY_AFTER], "7");
                assert_eq!(headers[CONTENT_TYPE], TEXT);
                assert!(body.is_empty());
            }
        }
        sim.set_overload(None);
        let (status, _, _) = send(&client, request(Method::GET, &uri, Some("u")), "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn faults_come_first_then_authorization_and_body_limits() {
        let sim = Simulator::builder()
            .max_body_bytes(64)
            .start()
            .await
            .unwrap();
        let client = client();
        let uri = sim.session_uri("scid", "LobbySession", "s1");
        sim.script(
            Fault::status(StatusCode::SERVICE_UNAVAILABLE)
                .method(Method::PUT)
                .header(RETRY_AFTER, HeaderValue::from_bytes(b"\xff").unwrap())
                .header(
                    HeaderName::from_static("x-test"),
                    HeaderValue::from_static("1"),
                )
                .body("down"),
        );
        // The GET is not the scripted PUT, and has no authorization.
        let (status, headers, body) = send(&client, request(Method::GET, &uri, None), "").await;
        assert_eq!(
            (status, &headers[CONTENT_TYPE]),
            (StatusCode::FORBIDDEN, &HeaderValue::from_static(TEXT))
        );
        assert!(!body.is_empty());
        // A fault answers even an unauthorized request.
        let (status, headers, body) = send(&client, request(Method::PUT, &uri, None), JOIN).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[RETRY_AFTER].as_bytes(), b"\xff");
        assert_eq!(headers["x-test"], "1");
        assert_eq!(&body[..], b"down");

        let big = format!(
            r#"{{"properties":{{"custom":{{"x":"{}"}}}}}}"#,
            "a".repeat(100)
        );
        let (status, headers, _) = send(&client, request(Method::PUT, &uri, Some("u")), &big).await;
        assert_eq!(
            (status, &headers[CONTENT_TYPE]),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                &HeaderValue::from_static(TEXT)
            )
        );
        let (status, _, _) = send(&client, request(Method::PUT, &uri, Some("u")), JOIN).await;
        assert_eq!(status, StatusCode::CREATED);
        let statuses: Vec<u16> = sim.log().iter().map(|e| e.status.as_u16()).collect();
        assert_eq!(statuses, [403, 503, 413, 201]);
        sim.clear_log();
        assert!(sim.log().is_empty());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn rate_limits_can_change_at_run_time() {
        let tiny = RateLimits {
            burst: Window {
                max: 1,
                period: Duration::from_secs(60),
            },
            sustain: Window {
                max: 10,
                period: Duration::from_secs(60),
            },
        };
        let sim = Simulator::builder().rate_limit(tiny).start().await.unwrap();
        let client = client();
        let uri = sim.session_uri("scid", "LobbySession", "s1");
        let get = || request(Method::GET, &uri, Some("u"));
        assert_eq!(send(&client, get(), "").await.0, StatusCode::NO_CONTENT);
        assert_eq!(
            send(&client, get(), "").await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        sim.set_rate_limit(None);
        assert_eq!(send(&client, get(), "").await.0, StatusCode::NO_CONTENT);
        sim.set_rate_limit(Some(tiny));
        assert_eq!(send(&client, get(), "").await.0, StatusCode::NO_CONTENT);
        assert_eq!(
            send(&client, get(), "").await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn dropping_the_last_handle_stops_the_server() {
        let sim = Simulator::start().await.unwrap();
        let addr = sim.addr();
        let clone = sim.clone();
        drop(sim);
        assert!(
            TcpStream::connect(addr).await.is_ok(),
            "a clone keeps it running"
        );
        drop(clone);
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the server still accepts connections");
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener() {
        let sim = Simulator::start().await.unwrap();
        let addr = sim.addr();
        assert_eq!(sim.base_uri(), format!("http://{addr}"));
        sim.clone().shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn only_issued_tokens_pass_when_tokens_are_checked() {
        let sim = Simulator::builder()
            .no_rate_limit()
            .check_tokens()
            .start()
            .await
            .unwrap();
        let uri = sim.session_uri("scid", "LobbySession", "tokens");
        let client = client();
        let with =
            |token: &str| Request::get(&uri).header(AUTHORIZATION, format!("XBL3.0 x=42;{token}"));
        let (status, headers, _) = send(&client, with("made-up"), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[WWW_AUTHENTICATE], "XBL3.0");
        let token = sim.issue_token("42", Duration::from_secs(10));
        assert_eq!(
            send(&client, with(&token), "").await.0,
            StatusCode::NO_CONTENT
        );
        let other_user = Request::get(&uri).header(AUTHORIZATION, format!("XBL3.0 x=43;{token}"));
        assert_eq!(
            send(&client, other_user, "").await.0,
            StatusCode::UNAUTHORIZED
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            send(&client, with(&token), "").await.0,
            StatusCode::UNAUTHORIZED
        );
        // Without checks, any token passes, issued or not.
        let open = Simulator::builder().no_rate_limit().start().await.unwrap();
        open.issue_token("42", Duration::from_secs(1));
        let uri = open.session_uri("scid", "LobbySession", "open");
        let any = Request::get(&uri).header(AUTHORIZATION, "XBL3.0 x=42;anything");
        assert_eq!(send(&client, any, "").await.0, StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn https_speaks_http2_or_http1_as_the_client_offers() {
        use tokio_rustls::rustls;
        let sim = Simulator::builder()
            .no_rate_limit()
            .https()
            .start()
            .await
            .unwrap();
        assert_eq!(sim.base_uri(), format!("https://{}", sim.addr()));
        let uri = sim.session_uri("scid", "LobbySession", "tls");
        for h2 in [false, true] {
            let ring = Arc::new(crate::tls::ring_provider());
            let tls = rustls::ClientConfig::builder_with_provider(ring)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(sim.root_store().unwrap())
                .with_no_client_auth();
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_only();
            let connector = if h2 {
                https.enable_all_versions().build()
            } else {
                https.enable_http1().build()
            };
            let client = Client::builder(TokioExecutor::new()).build(connector);
            let req = request(Method::GET, &uri, Some("42")).body(Full::<Bytes>::default());
            let res = client.request(req.unwrap()).await.unwrap();
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
        }
        let seen: Vec<_> = sim
            .log()
            .iter()
            .map(|e| (e.version, e.connection))
            .collect();
        assert_eq!(seen, [(Version::HTTP_11, 0), (Version::HTTP_2, 1)]);
        assert!(Simulator::start().await.unwrap().root_store().is_none());
    }
}
