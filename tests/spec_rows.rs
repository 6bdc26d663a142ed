//! One test per row (and split) of the MPSD status table, over real TCP
//! to the simulator, through the hyper-util client and `ClassifyLayer`.

mod common;

use std::time::Duration;

use common::{create, request, send, SCID};
use http::{header, HeaderName, HeaderValue, Method, StatusCode};
use mpsd_sim::{Fault, Overload, SimHandle, Simulator};
use serde_json::json;
use tower_mpsd::classify::{BodyKind, Outcome, Retryable};
use tower_mpsd::response::{MpsdError, Payload};

async fn sim() -> SimHandle {
    Simulator::builder().no_rate_limit().start().await.unwrap()
}

fn lobby(sim: &SimHandle, name: &str) -> String {
    sim.session_uri(SCID, "LobbySession", name)
}

fn body_kind(a: &common::Answer) -> BodyKind {
    a.outcome.body_kind(&a.call)
}

#[tokio::test]
async fn row_200_ok_read_and_update() {
    let sim = sim().await;
    let uri = lobby(&sim, "r200");
    let etag = create(&uri, "alice", json!({})).await;
    let read = send(request(Method::GET, &uri)).await;
    assert_eq!(read.outcome, Outcome::Ok);
    assert_eq!(body_kind(&read), BodyKind::Session);
    assert_eq!(read.etag().as_deref(), Some(etag.as_str()));
    assert!(read.json()["members"]["0"].is_object());
    let update =
        send(request(Method::PUT, &uri).json(json!({"properties": {"custom": {"map": "dust"}}})))
            .await;
    assert_eq!(update.outcome, Outcome::Ok);
    assert_ne!(update.etag().unwrap(), etag, "every write changes the ETag");
    assert_eq!(update.json()["properties"]["custom"]["map"], "dust");
}

#[tokio::test]
async fn row_201_created() {
    let sim = sim().await;
    let a =
        send(request(Method::PUT, lobby(&sim, "r201")).json(json!({"members": {"me": {}}}))).await;
    assert_eq!(a.outcome, Outcome::Created);
    assert_eq!(body_kind(&a), BodyKind::Session);
    assert!(a.etag().is_some());
    assert!(a.result.is_ok());
}

#[tokio::test]
async fn row_202_accepted() {
    let sim = sim().await;
    // MPSD's table allows 202 (`text/plain`, no body) without saying which
    // call answers it; the simulator answers it only when scripted.
    let text = HeaderValue::from_static("text/plain");
    sim.script(Fault::status(StatusCode::ACCEPTED).header(header::CONTENT_TYPE, text));
    let uri = format!("{}/serviceconfigs/{SCID}/hoppers/ranked", sim.base_uri());
    let a = send(request(Method::POST, uri).json(json!({"ticket": {}}))).await;
    assert_eq!(a.outcome, Outcome::Accepted);
    assert_eq!(body_kind(&a), BodyKind::Empty);
    assert_eq!(a.outcome.retryable(), Retryable::No, "202 is never retried");
    assert!(matches!(a.result, Ok(ref ok) if ok.payload == Payload::Empty));
}

#[tokio::test]
async fn row_204_get_of_a_missing_session() {
    let sim = sim().await;
    let a = send(request(Method::GET, lobby(&sim, "nobody-here"))).await;
    assert_eq!(a.outcome, Outcome::SessionMissing);
    assert_eq!(body_kind(&a), BodyKind::Empty);
    assert!(a.result.is_ok());
}

#[tokio::test]
async fn row_204_get_of_a_missing_element() {
    let sim = sim().await;
    let uri = lobby(&sim, "r204e");
    create(&uri, "alice", json!({})).await;
    let a = send(request(Method::GET, format!("{uri}/members/7"))).await;
    assert_eq!(a.outcome, Outcome::ElementMissing);
    let a = send(request(Method::GET, format!("{uri}/servers/nope"))).await;
    assert_eq!(a.outcome, Outcome::ElementMissing);
    let found = send(request(Method::GET, format!("{uri}/members/me"))).await;
    assert_eq!(found.outcome, Outcome::Ok);
    assert_eq!(body_kind(&found), BodyKind::Element);
}

#[tokio::test]
async fn row_204_put_that_deletes_the_session() {
    let sim = sim().await;
    let uri = lobby(&sim, "r204d");
    create(&uri, "alice", json!({})).await;
    let a = send(request(Method::PUT, &uri).json(json!({"members": {"me": null}}))).await;
    assert_eq!(a.outcome, Outcome::SessionDeleted);
    assert_eq!(
        send(request(Method::GET, &uri)).await.outcome,
        Outcome::SessionMissing
    );
}

#[tokio::test]
async fn row_204_put_or_delete_of_a_vanished_element() {
    let sim = sim().await;
    let uri = lobby(&sim, "r204v");
    create(&uri, "alice", json!({})).await;
    // Bob is not a member: his element does not exist any more (or ever).
    let a = send(request(Method::DELETE, format!("{uri}/members/me")).user(Some("bob"))).await;
    assert_eq!(a.outcome, Outcome::ElementGone);
    // Alice leaves through her element: the session goes with her.
    let a = send(request(Method::DELETE, format!("{uri}/members/me"))).await;
    assert_eq!(a.outcome, Outcome::ElementGone);
    assert_eq!(
        send(request(Method::GET, &uri)).await.outcome,
        Outcome::SessionMissing
    );
}

#[tokio::test]
async fn row_304_not_modified() {
    let sim = sim().await;
    let uri = lobby(&sim, "r304");
    let etag = create(&uri, "alice", json!({})).await;
    let a = send(request(Method::GET, &uri).header(header::IF_NONE_MATCH, &etag)).await;
    assert_eq!(a.outcome, Outcome::NotModified);
    assert!(a.outcome.is_success());
    assert_eq!(body_kind(&a), BodyKind::Empty);
    let stale = send(request(Method::GET, &uri).header(header::IF_NONE_MATCH, "\"old\"")).await;
    assert_eq!(stale.outcome, Outcome::Ok);
}

#[tokio::test]
async fn row_400_bad_request() {
    let sim = sim().await;
    let a = send(request(Method::PUT, lobby(&sim, "r400")).raw_body("{\"members\": ")).await;
    assert_eq!(a.outcome, Outcome::BadRequest);
    assert!(
        matches!(a.result, Err(MpsdError::Status { payload: Payload::Message(ref m), .. }) if !m.is_empty())
    );
}

#[tokio::test]
async fn row_403_forbidden_as_text() {
    let sim = sim().await;
    let a = send(request(Method::GET, lobby(&sim, "r403")).user(None)).await;
    assert_eq!(a.outcome, Outcome::Forbidden);
    assert_eq!(body_kind(&a), BodyKind::Message);
    assert!(matches!(
        a.result,
        Err(MpsdError::Status {
            payload: Payload::Message(_),
            ..
        })
    ));
}

#[tokio::test]
async fn row_403_read_only_as_json_session() {
    let sim = sim().await;
    let uri = lobby(&sim, "r403j");
    create(
        &uri,
        "alice",
        json!({"constants": {"system": {"writeRestriction": "members"}}}),
    )
    .await;
    let a = send(
        request(Method::PUT, format!("{uri}/properties"))
            .user(Some("mallory"))
            .json(json!({"custom": {"x": 1}})),
    )
    .await;
    assert_eq!(a.outcome, Outcome::ReadOnly);
    assert_eq!(
        body_kind(&a),
        BodyKind::Session,
        "the whole session, though the URI named an element"
    );
    assert!(a.json()["members"]["0"].is_object());
    // Readable all the same.
    assert_eq!(
        send(request(Method::GET, &uri).user(Some("mallory")))
            .await
            .outcome,
        Outcome::Ok
    );
}

#[tokio::test]
async fn row_404_not_found() {
    let sim = sim().await;
    let unknown_template = sim.session_uri(SCID, "NoSuchTemplate", "x");
    assert_eq!(
        send(request(Method::GET, unknown_template)).await.outcome,
        Outcome::NotFound
    );
    let element_of_missing = format!("{}/members/me", lobby(&sim, "missing"));
    let a = send(request(Method::GET, element_of_missing)).await;
    assert_eq!(a.outcome, Outcome::NotFound);
    assert_eq!(body_kind(&a), BodyKind::Message);
}

#[tokio::test]
async fn row_405_method_not_allowed() {
    let sim = sim().await;
    let a = send(request(Method::POST, lobby(&sim, "r405")).json(json!({}))).await;
    assert_eq!(a.outcome, Outcome::MethodNotAllowed);
    assert_eq!(body_kind(&a), BodyKind::Message);
}

#[tokio::test]
async fn row_409_conflict() {
    let sim = sim().await;
    let uri = lobby(&sim, "r409");
    create(
        &uri,
        "alice",
        json!({"constants": {"custom": {"mode": "ffa"}}}),
    )
    .await;
    let a =
        send(request(Method::PUT, &uri).json(json!({"constants": {"custom": {"mode": "teams"}}})))
            .await;
    assert_eq!(a.outcome, Outcome::Conflict);
    assert!(matches!(
        a.result,
        Err(MpsdError::Status {
            payload: Payload::Message(_),
            ..
        })
    ));
}

#[tokio::test]
async fn row_412_without_body() {
    let sim = sim().await;
    let uri = lobby(&sim, "r412");
    create(&uri, "alice", json!({})).await;
    let a = send(
        request(Method::PUT, &uri)
            .header(header::IF_NONE_MATCH, "*")
            .json(json!({"members": {"me": {}}})),
    )
    .await;
    assert_eq!(a.outcome, Outcome::PreconditionFailed);
    assert_eq!(body_kind(&a), BodyKind::Empty);
    assert_eq!(a.outcome.retryable(), Retryable::AfterRebase);
}

#[tokio::test]
async fn row_412_with_the_current_session() {
    let sim = sim().await;
    let uri = lobby(&sim, "r412j");
    let first = create(&uri, "alice", json!({})).await;
    let second =
        send(request(Method::PUT, &uri).json(json!({"properties": {"custom": {"n": 1}}}))).await;
    let current = second.etag().unwrap();
    let a = send(
        request(Method::PUT, format!("{uri}/members/me"))
            .header(header::IF_MATCH, &first)
            .json(json!({"properties": {"custom": {"ready": true}}})),
    )
    .await;
    assert_eq!(a.outcome, Outcome::SessionChanged);
    assert_eq!(body_kind(&a), BodyKind::Session);
    assert_eq!(a.etag().as_deref(), Some(current.as_str()));
    assert_eq!(
        a.json()["properties"]["custom"]["n"],
        1,
        "the whole current session"
    );
}

#[tokio::test]
async fn row_429_too_many_requests() {
    let sim = common::burst_limited_sim(2).await;
    let uri = lobby(&sim, "r429");
    for _ in 0..2 {
        assert_eq!(
            send(request(Method::GET, &uri)).await.outcome,
            Outcome::SessionMissing
        );
    }
    let a = send(request(Method::GET, &uri)).await;
    let Err(MpsdError::Status {
        outcome:
            Outcome::TooManyRequests {
                retry_after,
                rate_limit,
            },
        ..
    }) = a.result
    else {
        panic!("{a:?}")
    };
    let retry_after = retry_after.expect("a Retry-After");
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_secs(15),
        "{retry_after:?}"
    );
    let info = rate_limit.expect("the JSON body parses");
    assert_eq!(info.max_requests, Some(2));
    assert_eq!(info.period_in_seconds, Some(15));
    // Another user is not throttled.
    assert_eq!(
        send(request(Method::GET, &uri).user(Some("bob")))
            .await
            .outcome,
        Outcome::SessionMissing
    );
}

#[tokio::test]
async fn row_503_service_unavailable() {
    let sim = Simulator::builder()
        .no_rate_limit()
        .overload(Overload {
            capacity: 1,
            window: Duration::from_secs(10),
        })
        .start()
        .await
        .unwrap();
    let uri = lobby(&sim, "r503");
    assert_eq!(
        send(request(Method::GET, &uri)).await.outcome,
        Outcome::SessionMissing
    );
    let a = send(request(Method::GET, &uri)).await;
    let Outcome::ServiceUnavailable {
        retry_after: Some(after),
    } = a.outcome
    else {
        panic!("{a:?}")
    };
    assert!(
        after > Duration::ZERO && after <= Duration::from_secs(10),
        "{after:?}"
    );
    assert_eq!(body_kind(&a), BodyKind::Empty);
    assert!(matches!(
        a.outcome.retryable(),
        Retryable::Overloaded { after: Some(_) }
    ));
}

#[tokio::test]
async fn statuses_outside_the_table() {
    let sim = sim().await;
    let uri = lobby(&sim, "other");
    for (code, expected) in [
        (401, Outcome::Unauthorized),
        (
            408,
            Outcome::Transient {
                status: StatusCode::REQUEST_TIMEOUT,
            },
        ),
        (
            500,
            Outcome::Transient {
                status: StatusCode::INTERNAL_SERVER_ERROR,
            },
        ),
        (
            502,
            Outcome::Transient {
                status: StatusCode::BAD_GATEWAY,
            },
        ),
        (
            504,
            Outcome::Transient {
                status: StatusCode::GATEWAY_TIMEOUT,
            },
        ),
        (
            418,
            Outcome::Unexpected {
                status: StatusCode::IM_A_TEAPOT,
            },
        ),
    ] {
        sim.script(Fault::status(StatusCode::from_u16(code).unwrap()).body("scripted"));
        let a = send(request(Method::GET, &uri)).await;
        assert_eq!(a.outcome, expected);
        assert!(
            matches!(a.result, Err(MpsdError::Status { payload: Payload::Message(ref m), .. }) if m == "scripted")
        );
    }
}

#[tokio::test]
async fn malformed_server_input_is_absent_not_fatal() {
    let sim = sim().await;
    let uri = lobby(&sim, "garbage");
    let retry_after = HeaderName::from_static("retry-after");
    sim.script(Fault::status(StatusCode::SERVICE_UNAVAILABLE).header(
        retry_after.clone(),
        HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    ));
    assert_eq!(
        send(request(Method::GET, &uri)).await.outcome,
        Outcome::ServiceUnavailable { retry_after: None }
    );
    sim.script(
        Fault::status(StatusCode::TOO_MANY_REQUESTS)
            .header(retry_after, HeaderValue::from_static("-3"))
            .body("{not json"),
    );
    let a = send(request(Method::GET, &uri)).await;
    assert_eq!(
        a.outcome,
        Outcome::TooManyRequests {
            retry_after: None,
            rate_limit: None
        }
    );
    sim.script(
        Fault::status(StatusCode::PRECONDITION_FAILED)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body("<html>not a session</html>"),
    );
    let a = send(request(Method::PUT, &uri).json(json!({}))).await;
    assert_eq!(a.outcome, Outcome::SessionChanged);
    let Err(MpsdError::Status {
        etag: None,
        payload,
        ..
    }) = a.result
    else {
        panic!()
    };
    assert!(
        payload.json().unwrap().is_err(),
        "a non-JSON 412 body is kept, and fails to parse, typed"
    );
}

#[tokio::test]
async fn the_log_records_every_request() {
    let sim = sim().await;
    let uri = lobby(&sim, "logged");
    create(&uri, "alice", json!({})).await;
    send(request(Method::GET, &uri).header(header::IF_NONE_MATCH, "\"x\"")).await;
    let log = sim.log();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].method.clone(), log[0].status),
        (Method::PUT, StatusCode::CREATED)
    );
    assert_eq!(log[1].if_none_match.as_deref(), Some("\"x\""));
    assert_eq!(log[1].user.as_deref(), Some("alice"));
    assert!(log[0].at <= log[1].at);
}
