//! The recommended stack over reqwest 0.12 instead of hyper-util, against
//! the MPSD simulator on 127.0.0.1 (`cargo run --example reqwest`): a 204,
//! a 503 retried after its `Retry-After`, a 412 rebased.
//!
//! `reqwest::Client` is a `tower::Service<reqwest::Request>`; the stack
//! needs a `Service<http::Request<B>>` answering an `http::Response`, so
//! a `service_fn` converts one into the other (see the crate docs, "Any
//! hyper-based client"). `tests/reqwest.rs` runs this adapter too.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mpsd_sim::{Fault, Simulator};
use serde_json::json;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_mpsd::logical::AttemptHistory;
use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
use tower_mpsd::response::read_response;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

/// A reqwest client that sends once per call: it follows no redirects,
/// since the stack decides what may be sent again from what one call did.
pub fn one_send_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// `client` as the `Service<http::Request<Full<Bytes>>>` the stack wraps:
/// its requests converted into reqwest's, reqwest's responses into
/// `http::Response<reqwest::Body>` (a streaming `http_body::Body`).
pub fn reqwest_service(
    client: reqwest::Client,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<reqwest::Body>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            let (parts, body) = req.into_parts();
            // `Full` holds the whole body already: this does not wait.
            let body = body.collect().await?.to_bytes();
            let req = reqwest::Request::try_from(Request::from_parts(parts, body))?;
            let res = client.execute(req).await?;
            Ok::<_, BoxError>(Response::from(res))
        }
    })
}

/// A request as the user `xuid`, with the headers MPSD expects and a JSON
/// body, if any.
fn request(
    method: Method,
    uri: &str,
    xuid: &str,
    body: Option<serde_json::Value>,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let mut authorization = HeaderValue::from_str(&format!("XBL3.0 x={xuid};token"))?;
    authorization.set_sensitive(true);
    Ok(Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, authorization)
        .header("x-xbl-contract-version", "107")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Full::default, |json| Full::from(json.to_string())))?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let sim = Simulator::start().await?;
    let mpsd = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
        .service(reqwest_service(one_send_client()?));
    let lobby = sim.session_uri(
        "00000000-0000-0000-0000-00007a3c1d5e",
        "LobbySession",
        "reqwest",
    );

    // 204: no such session yet.
    let read = mpsd
        .clone()
        .oneshot(request(Method::GET, &lobby, "1001", None)?)
        .await?;
    println!(
        "GET before anyone joined: {}",
        read_response(read, 1 << 20).await?.outcome
    );

    // The next request is shed with 503 and `Retry-After: 1`: the stack
    // waits at least that second and sends it again.
    sim.script(
        Fault::status(StatusCode::SERVICE_UNAVAILABLE)
            .header(header::RETRY_AFTER, HeaderValue::from_static("1")),
    );
    let join = request(
        Method::PUT,
        &lobby,
        "1001",
        Some(json!({"members": {"me": {}}})),
    )?;
    let joined = mpsd.clone().oneshot(join).await?;
    print_sends("alice joins", &joined);
    let joined = read_response(joined, 1 << 20).await?;
    let etag = joined.etag.ok_or("the session came without an ETag")?;

    // Bob joins (the ETag moves on); alice's write with the old one gets
    // 412 with the current session, and the stack rebases it.
    let bob = request(
        Method::PUT,
        &lobby,
        "1002",
        Some(json!({"members": {"me": {}}})),
    )?;
    read_response(mpsd.clone().oneshot(bob).await?, 1 << 20).await?;
    let delta = json!({"properties": {"custom": {"ready": true}}});
    let mut ready = request(
        Method::PUT,
        &format!("{lobby}/members/me"),
        "1001",
        Some(delta),
    )?;
    ready.headers_mut().insert(header::IF_MATCH, etag);
    let response = mpsd.oneshot(ready).await?;
    print_sends("alice sets ready with a stale ETag", &response);
    let ready = read_response(response, 1 << 20).await?;
    println!("alice is ready: {}", ready.outcome);

    sim.shutdown().await;
    Ok(())
}

/// Prints what the stack sent for one logical request: when, why, and
/// what came back.
fn print_sends<B>(what: &str, response: &Response<B>) {
    println!("{what}: {}", response.status());
    let history = AttemptHistory::of(response);
    for sent in history.map_or(&[][..], AttemptHistory::attempts) {
        let (at, why) = (sent.sent_after, sent.purpose);
        let answer = sent.outcome.map_or("no answer".into(), |o| o.to_string());
        println!("  sent at {at:?} ({why:?}): {answer}");
    }
}
