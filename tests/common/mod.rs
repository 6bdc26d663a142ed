//! Shared set-up for the integration tests: the simulator on loopback and
//! a hyper-util client, as a user would wire them.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use mpsd_sim::{Fault, SimHandle, Simulator};
use serde_json::json;
use tower::{Layer, ServiceExt};
use tower_mpsd::classify::{Call, Classified, Outcome};
use tower_mpsd::classify::{Classify, ClassifyBody, ClassifyLayer};
use tower_mpsd::response::{read_response, MpsdError, MpsdSuccess};

pub const SCID: &str = "00000000-0000-0000-0000-00006a0b1c2d";

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A plain hyper-util client, as a user builds one.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The client behind `ClassifyLayer`.
pub fn classified_client() -> Classify<HttpClient> {
    ClassifyLayer::new().layer(http_client())
}

/// `XBL3.0 x=<user>;<token>`.
pub fn auth(user: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("XBL3.0 x={user};token-of-{user}")).unwrap()
}

/// A request as an MPSD client sends it.
pub struct Req {
    pub method: Method,
    pub uri: String,
    pub user: Option<&'static str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

pub fn request(method: Method, uri: impl Into<String>) -> Req {
    Req {
        method,
        uri: uri.into(),
        user: Some("alice"),
        headers: Vec::new(),
        body: Bytes::new(),
    }
}

impl Req {
    pub fn user(mut self, user: Option<&'static str>) -> Self {
        self.user = user;
        self
    }
    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        self.headers
            .push((name, HeaderValue::from_str(value).unwrap()));
        self
    }
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Bytes::from(body.to_string());
        self
    }
    pub fn raw_bytes(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }
    pub fn raw_body(mut self, body: &'static str) -> Self {
        self.body = Bytes::from_static(body.as_bytes());
        self
    }
    pub fn build(self) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(self.method)
            .uri(self.uri)
            .header("x-xbl-contract-version", "107")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(user) = self.user {
            req = req.header(header::AUTHORIZATION, auth(user));
        }
        for (name, value) in self.headers {
            req = req.header(name, value);
        }
        req.body(Full::new(self.body)).unwrap()
    }
}

/// What a test looks at in an answer.
#[derive(Debug)]
pub struct Answer {
    pub outcome: Outcome,
    pub call: Call,
    pub headers: HeaderMap,
    pub result: Result<MpsdSuccess, MpsdError>,
}

impl Answer {
    pub fn etag(&self) -> Option<String> {
        self.headers
            .get(header::ETAG)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    pub fn json(&self) -> serde_json::Value {
        let payload = match &self.result {
            Ok(ok) => &ok.payload,
            Err(MpsdError::Status { payload, .. }) => payload,
            Err(e) => panic!("{e}"),
        };
        payload.json().expect("a JSON payload").expect("valid JSON")
    }
}

/// Sends a request through `ClassifyLayer` and reads the answer.
pub async fn send(req: Req) -> Answer {
    let res: Response<ClassifyBody<Incoming>> =
        classified_client().oneshot(req.build()).await.unwrap();
    let classified = res.extensions().get::<Classified>().unwrap();
    let (outcome, call) = (classified.outcome, classified.call().clone());
    let headers = res.headers().clone();
    let result = read_response(res, 1 << 20).await;
    Answer {
        outcome,
        call,
        headers,
        result,
    }
}

/// The simulator with its rate limiter off: scripted faults and sessions
/// only.
pub async fn quiet_sim() -> SimHandle {
    Simulator::builder().no_rate_limit().start().await.unwrap()
}

/// A `Retry-After: <value>` header, as a fault adds it.
pub fn retry_after(value: &str) -> (HeaderName, HeaderValue) {
    (header::RETRY_AFTER, HeaderValue::from_str(value).unwrap())
}

/// A scripted 503 with `Retry-After: <after>`.
pub fn overloaded(after: &str) -> Fault {
    let (name, value) = retry_after(after);
    Fault::status(http::StatusCode::SERVICE_UNAVAILABLE).header(name, value)
}

/// A simulator whose burst window (15 s, as MPSD's) admits only `max`
/// requests per user; the sustain window keeps MPSD's 300 per 300 s.
pub async fn burst_limited_sim(max: u32) -> SimHandle {
    Simulator::builder()
        .rate_limit(burst_limits(max))
        .start()
        .await
        .unwrap()
}

/// Creates a session with `user` as its member and returns its ETag.
pub async fn create(uri: &str, user: &'static str, extra: serde_json::Value) -> String {
    let mut delta = json!({ "members": { "me": { "properties": { "custom": {} } } } });
    if let (Some(delta), Some(extra)) = (delta.as_object_mut(), extra.as_object()) {
        delta.extend(extra.clone());
    }
    let a = send(request(Method::PUT, uri).user(Some(user)).json(delta)).await;
    assert_eq!(a.outcome, Outcome::Created, "{a:?}");
    a.etag().unwrap()
}

/// Re-applies "add 1 to the counter" to the session as it is now: a
/// read-modify-write rebase policy for `rebase_fn`.
pub fn increment(
    conflict: &tower_mpsd::rebase::policy::LostRace<'_>,
) -> Result<tower_mpsd::rebase::policy::Decision, tower_mpsd::BoxError> {
    let next = count_of(conflict.session) + 1;
    Ok(tower_mpsd::rebase::policy::Decision::Retry(count_delta(
        next,
    )))
}

/// The counter `properties.custom.count` of a session, 0 if unset.
pub fn count_of(session: &serde_json::Value) -> u64 {
    session["properties"]["custom"]["count"]
        .as_u64()
        .unwrap_or(0)
}

/// A delta setting the counter to `count`.
pub fn count_delta(count: u64) -> Bytes {
    Bytes::from(json!({"properties": {"custom": {"count": count}}}).to_string())
}

// HTTPS: the simulator's certificate trusted by a hyper-rustls client.

// The demo's own client: tests run what the example shows.
#[path = "../../examples/demo/https.rs"]
mod demo_https;

pub use demo_https::HttpsClient;

/// A simulator serving HTTPS, rate limits off.
pub async fn https_sim() -> SimHandle {
    Simulator::builder()
        .no_rate_limit()
        .https()
        .start()
        .await
        .unwrap()
}

/// The demo's client: trusts `sim` only and offers `h2` and `http/1.1`
/// by ALPN (`h2`), or `http/1.1` alone.
pub fn https_client(sim: &SimHandle, h2: bool) -> HttpsClient {
    demo_https::https_client(sim, h2).expect("an HTTPS simulator")
}

// Transports: one scenario, run over each way a client reaches MPSD.

/// How a test's client reaches the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP/1.1, [`http_client`].
    Http1,
    /// HTTPS offering only `http/1.1` by ALPN.
    TlsHttp1,
    /// HTTPS offering `h2`, which the simulator picks.
    TlsHttp2,
}

/// Any of the transports' clients, boxed to one type.
pub type AnyClient =
    tower::util::BoxCloneService<Request<Full<Bytes>>, Response<Incoming>, tower_mpsd::BoxError>;

/// The recommended stack over any transport, boxed to one type.
pub type AnyStack = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    Response<ClassifyBody<Incoming>>,
    tower_mpsd::BoxError,
>;

impl Transport {
    /// Starts the simulator `builder` describes, serving this transport.
    pub async fn start(self, builder: mpsd_sim::SimBuilder) -> SimHandle {
        let builder = match self {
            Self::Http1 => builder,
            Self::TlsHttp1 | Self::TlsHttp2 => builder.https(),
        };
        builder.start().await.unwrap()
    }

    /// A client of `sim` over this transport.
    pub fn client(self, sim: &SimHandle) -> AnyClient {
        match self {
            Self::Http1 => AnyClient::new(http_client().map_err(Into::into)),
            Self::TlsHttp1 => AnyClient::new(https_client(sim, false).map_err(Into::into)),
            Self::TlsHttp2 => AnyClient::new(https_client(sim, true).map_err(Into::into)),
        }
    }

    /// The HTTP version every answer comes in.
    pub fn version(self) -> http::Version {
        match self {
            Self::Http1 | Self::TlsHttp1 => http::Version::HTTP_11,
            Self::TlsHttp2 => http::Version::HTTP_2,
        }
    }

    /// What a test's printed lines start with: nothing on plain HTTP/1.1,
    /// as before there were other transports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Http1 => "",
            Self::TlsHttp1 => "tls h1 ",
            Self::TlsHttp2 => "h2 ",
        }
    }
}

/// Limits where the burst window (15 s, as MPSD's) admits only `max`
/// requests per user; the sustain window keeps MPSD's 300 per 300 s.
pub fn burst_limits(max: u32) -> mpsd_sim::RateLimits {
    mpsd_sim::RateLimits {
        burst: mpsd_sim::Window {
            max,
            period: std::time::Duration::from_secs(15),
        },
        ..mpsd_sim::RateLimits::mpsd()
    }
}
