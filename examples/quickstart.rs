//! The quickstart: the recommended stack over a hyper-util client, talking
//! to the MPSD simulator on 127.0.0.1 (`cargo run --example quickstart`).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use mpsd_sim::Simulator;
use serde_json::{json, Value};
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::logical::AttemptHistory;
use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
use tower_mpsd::response::read_response;
use tower_mpsd::{BoxError, MpsdLayer, ServiceBuilderExt};

/// A request as the user `xuid`, with the headers MPSD expects.
fn request(
    method: Method,
    uri: &str,
    xuid: &str,
    body: Value,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let mut authorization = HeaderValue::from_str(&format!("XBL3.0 x={xuid};token"))?;
    authorization.set_sensitive(true); // kept out of logs and `Debug`
    Ok(Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, authorization)
        .header("x-xbl-contract-version", "107")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::from(body.to_string()))?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The simulator: MPSD's contract on 127.0.0.1, over plain HTTP.
    let sim = Simulator::start().await?;
    // A client for plain HTTP, as the simulator serves. For MPSD itself,
    // HTTPS through hyper-rustls (its "webpki-tokio" feature):
    //     Client::builder(TokioExecutor::new()).build(HttpsConnectorBuilder::new()
    //         .with_webpki_roots().https_only().enable_all_versions().build())
    let client = Client::builder(TokioExecutor::new()).build_http();

    // The recommended stack. The rebase policy says what to do when a
    // write loses a race (412): `ResendDelta` sends the same delta again
    // with the session's fresh ETag, right for "set my own properties".
    let mpsd = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
        .service(client.clone());

    let scid = "00000000-0000-0000-0000-00007a3c1d5e";
    let lobby = sim.session_uri(scid, "LobbySession", "quickstart");
    let join = json!({"members": {"me": {}}});

    // Alice creates the lobby by joining it: 201, the session and its ETag.
    let alice = request(Method::PUT, &lobby, "1001", join.clone())?;
    let joined = read_response(mpsd.clone().oneshot(alice).await?, 1 << 20).await?;
    let etag = joined.etag.ok_or("the session came without an ETag")?;
    println!("alice joined: {}, ETag {}", joined.outcome, etag.to_str()?);

    // Bob joins through a client of his own, as another process would:
    // the session's ETag moves on, and the one alice holds is stale.
    let bob = request(Method::PUT, &lobby, "1002", join)?;
    println!("bob joined: {}", client.request(bob).await?.status());

    // Alice sets a property of her own member if the session is as she
    // read it (`If-Match`). MPSD answers 412 with the session as it is
    // now; the stack sends the delta again with that session's ETag.
    let me = format!("{lobby}/members/me");
    let delta = json!({"properties": {"custom": {"ready": true}}});
    let mut ready = request(Method::PUT, &me, "1001", delta)?;
    ready.headers_mut().insert(header::IF_MATCH, etag);
    // What the stack sent on the way is kept in the answer's history.
    let ready = read_response(mpsd.oneshot(ready).await?, 1 << 20).await?;
    println!("alice is ready: {}", ready.outcome);
    let history = ready.history.as_ref();
    for sent in history.map_or(&[][..], AttemptHistory::attempts) {
        let (at, why) = (sent.sent_after, sent.purpose);
        let answer = sent.outcome.map_or("no answer".into(), |o| o.to_string());
        println!("  sent at {at:?} ({why:?}): {answer}");
    }

    // Print a field or two, never a whole session: it holds every member.
    let session = ready.payload.json().transpose()?.unwrap_or_default();
    let count = &session["membersInfo"]["count"];
    let alice_ready = &session["members"]["0"]["properties"]["custom"]["ready"];
    println!("members: {count}, alice ready: {alice_ready}");

    sim.shutdown().await;
    Ok(())
}
