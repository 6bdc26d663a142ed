//! The request shapes Microsoft's SDK sends, over real TCP: sessions read
//! and written through a handle, reservations, roles, non-object custom
//! values, the fields the service fills, handles (transfer and search
//! handles too) and their queries, and matchmaking tickets and hopper
//! statistics.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_LOCATION, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION,
};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use mpsd_sim::{SimHandle, Simulator};
use serde_json::{json, Value};

const SCID: &str = "00000000-0000-0000-0000-00007a3c1d5e";
const SESSION_PATH: &str =
    "/serviceconfigs/00000000-0000-0000-0000-00007a3c1d5e/sessionTemplates/LobbySession/sessions/lobby";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        assert_eq!(self.headers[CONTENT_TYPE], "application/json");
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: http::header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

struct Caller {
    sim: SimHandle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Caller {
    async fn start() -> Self {
        let sim = Simulator::builder().no_rate_limit().start().await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { sim, client }
    }

    /// One request as `user`, with optional extra headers.
    async fn send(
        &self,
        method: Method,
        path: &str,
        user: &str,
        headers: &[(http::header::HeaderName, &str)],
        body: &str,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.sim.base_uri()))
            .header(AUTHORIZATION, format!("XBL3.0 x={user};token"))
            .header("x-xbl-contract-version", "107");
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let (parts, body) = self.client.request(req).await.unwrap().into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn put(&self, path: &str, user: &str, body: Value) -> Answer {
        self.send(Method::PUT, path, user, &[], &body.to_string())
            .await
    }

    async fn get(&self, path: &str, user: &str) -> Answer {
        self.send(Method::GET, path, user, &[], "").await
    }

    /// POST /handles as `user`; checks the 201 and its `Location`, returns
    /// the handle.
    async fn create_handle(&self, user: &str, handle: Value) -> Value {
        let created = self
            .send(Method::POST, "/handles", user, &[], &handle.to_string())
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
        let doc = created.json();
        let id = doc["id"].as_str().unwrap();
        assert_eq!(
            created.header(LOCATION),
            Some(format!("/handles/{id}").as_str())
        );
        doc
    }
}

fn activity(kind: &str) -> Value {
    json!({"version": 1, "type": kind,
           "sessionRef": {"scid": SCID, "templateName": "LobbySession", "name": "lobby"}})
}

#[tokio::test]
async fn a_session_through_its_handle() {
    let c = Caller::start().await;
    let created = c
        .put(SESSION_PATH, "alice", json!({"members": {"me": {}}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let handle = c.create_handle("alice", activity("activity")).await;
    let by_handle = format!("/handles/{}/session", handle["id"].as_str().unwrap());

    // GET: the session, its ETag, and where it lives.
    let read = c.get(&by_handle, "bob").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.header(CONTENT_LOCATION), Some(SESSION_PATH));
    assert_eq!(read.json(), c.get(SESSION_PATH, "bob").await.json());
    let tag = read.header(ETAG).unwrap().to_owned();
    let unchanged = c
        .send(Method::GET, &by_handle, "bob", &[(IF_NONE_MATCH, &tag)], "")
        .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.header(ETAG), Some(tag.as_str()));
    assert_eq!(unchanged.header(CONTENT_LOCATION), Some(SESSION_PATH));

    // PUT: joins by handle, as the SDK does.
    let join = r#"{"members":{"me":{"constants":{"system":{"xuid":"bob","initialize":false}}}}}"#;
    let joined = c
        .send(Method::PUT, &by_handle, "bob", &[(IF_MATCH, &tag)], join)
        .await;
    assert_eq!(joined.status, StatusCode::OK);
    assert_eq!(joined.header(CONTENT_LOCATION), Some(SESSION_PATH));
    let new_tag = joined.header(ETAG).unwrap().to_owned();
    assert_ne!(new_tag, tag);
    assert_eq!(joined.json()["membersInfo"]["count"], 2);

    // A stale If-Match lost the race: 412 with the current session and ETag.
    let lost = c
        .send(Method::PUT, &by_handle, "bob", &[(IF_MATCH, &tag)], "{}")
        .await;
    assert_eq!(lost.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(lost.header(ETAG), Some(new_tag.as_str()));
    assert_eq!(lost.json(), joined.json());
    assert_eq!(lost.header(CONTENT_LOCATION), Some(SESSION_PATH));
    // Create-only on an existing session: 412 without a body.
    let exists = c
        .send(
            Method::PUT,
            &by_handle,
            "bob",
            &[(IF_NONE_MATCH, "*")],
            "{}",
        )
        .await;
    assert_eq!(exists.status, StatusCode::PRECONDITION_FAILED);
    assert!(exists.body.is_empty());

    // The last member leaves through the handle: 204, the session is gone.
    let leave = json!({"members": {"me": null}});
    assert_eq!(
        c.put(&by_handle, "alice", leave.clone()).await.status,
        StatusCode::OK
    );
    let gone = c.put(&by_handle, "bob", leave).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert!(gone.body.is_empty());
    assert_eq!(gone.header(CONTENT_LOCATION), Some(SESSION_PATH));
    assert!(c.sim.session(SCID, "LobbySession", "lobby").is_none());
    // The handle outlives it: a read through it is 204, an unknown one 404.
    assert_eq!(
        c.get(&by_handle, "bob").await.status,
        StatusCode::NO_CONTENT
    );
    let unknown = c.get("/handles/nope/session", "bob").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.header(CONTENT_LOCATION), None);
    c.sim.shutdown().await;
}

#[tokio::test]
async fn reservations_roles_and_custom_values() {
    let c = Caller::start().await;
    let create = json!({
        "roleTypes": {"lfg": {"ownerManaged": true, "roles": {"confirmed": {"target": 3}}}},
        "members": {
            "me": {"constants": {"system": {"xuid": "alice", "initialize": true}, "custom": "host"},
                   "properties": {"system": {"active": true}, "custom": 17},
                   "roles": {"lfg": "confirmed"}},
            "reserve_0": {"constants": {"system": {"xuid": "bob", "initialize": true}, "custom": {"seat": 2}},
                          "roles": {"lfg": "confirmed"}},
        },
    });
    let created = c.put(SESSION_PATH, "alice", create).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let doc = created.json();
    let (alice, bob) = (&doc["members"]["0"], &doc["members"]["1"]);
    assert_eq!(alice["constants"]["custom"], "host");
    assert_eq!(alice["properties"]["custom"], 17);
    assert_eq!(alice["roles"], json!({"lfg": "confirmed"}));
    assert_eq!(bob["reserved"], true);
    assert_eq!(
        bob["constants"]["system"],
        json!({"xuid": "bob", "index": 1, "initialize": true})
    );
    assert_eq!(
        doc["roleTypes"]["lfg"]["roles"]["confirmed"],
        json!({"target": 3, "count": 2})
    );
    assert_eq!(
        doc["membersInfo"],
        json!({"first": 0, "next": 2, "count": 2, "accepted": 1, "active": 1})
    );
    assert_eq!(doc["initializing"]["stage"], "joining");
    assert_eq!(doc["hostCandidates"], json!([alice["deviceToken"]]));

    // Bob takes his seat.
    let joined = c
        .put(SESSION_PATH, "bob", json!({"members": {"me": {}}}))
        .await
        .json();
    let bob = &joined["members"]["1"];
    assert!(bob.get("reserved").is_none());
    assert_eq!(bob["constants"]["custom"], json!({"seat": 2}));
    assert_eq!(joined["membersInfo"]["accepted"], 2);
    assert_eq!(
        joined["hostCandidates"],
        json!([alice["deviceToken"], bob["deviceToken"]])
    );

    // A reservation without an xuid, and a changed constant, are refused.
    let bad = json!({"members": {"reserve_0": {"constants": {"system": {}}}}});
    assert_eq!(
        c.put(SESSION_PATH, "alice", bad).await.status,
        StatusCode::BAD_REQUEST
    );
    let changed = json!({"members": {"me": {"constants": {"custom": "guest"}}}});
    assert_eq!(
        c.put(SESSION_PATH, "alice", changed).await.status,
        StatusCode::CONFLICT
    );
    c.sim.shutdown().await;
}

/// Seconds since the epoch of an RFC 3339 UTC time as the simulator writes
/// it (`2023-11-14T22:13:20.0000000Z`), to compare times across a test.
fn seconds(time: &Value) -> f64 {
    let text = time.as_str().unwrap();
    let num = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from civil (Howard Hinnant), for the date part.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let clock = (num(11..13) * 3600 + num(14..16) * 60 + num(17..19)) as f64;
    (days * 86_400) as f64 + clock + text[19..text.len() - 1].parse::<f64>().unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_service_fills_times_on_virtual_time() {
    let c = Caller::start().await;
    let doc = c
        .put(
            SESSION_PATH,
            "2533274790395904",
            json!({"members": {"me": {}}}),
        )
        .await
        .json();
    let me = &doc["members"]["0"];
    assert_eq!(me["gamertag"], "Player5904");
    assert_eq!(me["activeTitleId"], "1234567890");
    assert_eq!(
        (&me["nat"], &me["turn"], &me["next"]),
        (&json!("open"), &json!(false), &json!(1))
    );
    let token = me["deviceToken"].as_str().unwrap();
    assert!(token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(me["joinTime"], doc["startTime"]);
    assert_eq!(doc["branch"].as_str().unwrap().len(), 36);
    assert!(doc.get("nextTimer").is_none());

    tokio::time::advance(Duration::from_millis(90_500)).await;
    let later = c
        .put(SESSION_PATH, "bob", json!({"members": {"me": {}}}))
        .await
        .json();
    let waited = seconds(&later["members"]["1"]["joinTime"]) - seconds(&later["startTime"]);
    assert!((waited - 90.5).abs() < 1e-6, "{waited}");
    assert_eq!(later["startTime"], doc["startTime"]);
    assert_eq!(later["branch"], doc["branch"]);
    assert_eq!(later["members"]["0"]["next"], 1);
    assert_eq!(later["members"]["1"]["next"], 2);

    // An invite expires an hour after it was created.
    let invite = c
        .create_handle("bob", {
            let mut invite = activity("invite");
            invite["invitedXuid"] = json!("carol");
            invite
        })
        .await;
    let lifetime = seconds(&invite["expiration"]) - seconds(&invite["createTime"]);
    assert!((lifetime - 3600.0).abs() < 1e-6, "{lifetime}");
    assert!(seconds(&invite["createTime"]) - seconds(&later["startTime"]) >= 90.5);
    c.sim.shutdown().await;
}

#[tokio::test]
async fn handles_and_their_queries() {
    let c = Caller::start().await;
    let create = json!({
        "constants": {"system": {"visibility": "open", "maxMembersCount": 8}},
        "properties": {"system": {"joinRestriction": "followed"}, "custom": {"Joinability": "joinable_by_friends"}},
        "members": {"me": {}},
    });
    c.put(SESSION_PATH, "alice", create).await;
    let active = c.create_handle("alice", activity("activity")).await;
    assert_eq!(active["ownerXuid"], "alice");
    assert_eq!(active["sessionRef"]["name"], "lobby");
    let mut invite = activity("invite");
    invite["invitedXuid"] = json!("bob");
    invite["inviteAttributes"] = json!({"titleId": "1234567890", "context": "join me"});
    let invite = c.create_handle("alice", invite).await;
    assert_eq!(
        (
            &invite["invitedXuid"],
            &invite["senderXuid"],
            &invite["ownerXuid"]
        ),
        (&json!("bob"), &json!("alice"), &json!("alice"))
    );
    assert_eq!(invite["inviteAttributes"]["context"], "join me");
    let missing = c
        .send(
            Method::POST,
            "/handles",
            "alice",
            &[],
            &activity("invite").to_string(),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);

    let query = json!({"owners": {"xuids": ["alice"]}, "scid": SCID, "type": "activity"});
    let found = c
        .send(
            Method::POST,
            "/handles/query?include=relatedInfo,customProperties,roleInfo",
            "alice",
            &[],
            &query.to_string(),
        )
        .await;
    assert_eq!(found.status, StatusCode::OK);
    let results = found.json()["results"].clone();
    assert_eq!(results.as_array().unwrap().len(), 1);
    let result = &results[0];
    assert_eq!(result["id"], active["id"]);
    assert_eq!(result["ownerXuid"], "alice");
    assert_eq!(
        result["relatedInfo"],
        json!({"visibility": "open", "joinRestriction": "followed", "closed": false,
               "maxMembersCount": 8, "membersCount": 1})
    );
    assert_eq!(
        result["customProperties"],
        json!({"Joinability": "joinable_by_friends"})
    );
    assert_eq!(result["roleInfo"], json!({"roleTypes": {}}));

    let plain = c
        .send(
            Method::POST,
            "/handles/query",
            "alice",
            &[],
            r#"{"type":"invite"}"#,
        )
        .await
        .json();
    assert_eq!(plain["results"], json!([invite]));
    let nobody = json!({"owners": {"xuids": ["zed"]}});
    let none = c
        .send(
            Method::POST,
            "/handles/query",
            "alice",
            &[],
            &nobody.to_string(),
        )
        .await
        .json();
    assert_eq!(none["results"], json!([]));
    c.sim.shutdown().await;
}

/// The session shapes Microsoft's SDK sends with a transfer handle (a
/// lobby's members moved to a game) and with a search handle.
#[tokio::test]
async fn transfer_and_search_handles() {
    let c = Caller::start().await;
    c.put(SESSION_PATH, "alice", json!({"members": {"me": {}}}))
        .await;
    let lobby = json!({"scid": SCID, "templateName": "samplelobbytemplate107", "name": "bd6c41c3"});
    let mut transfer = activity("transfer");
    transfer["originSessionRef"] = lobby.clone();
    let transfer = c.create_handle("alice", transfer).await;
    assert_eq!(transfer["type"], "transfer");
    assert_eq!(transfer["originSessionRef"], lobby);
    assert_eq!(transfer["sessionRef"]["name"], "lobby");
    let read = c
        .get(
            &format!("/handles/{}", transfer["id"].as_str().unwrap()),
            "alice",
        )
        .await;
    assert_eq!(read.json(), transfer, "the handle is stored as answered");

    // A transfer without its origin, or with half of one, is refused.
    for origin in [None, Some(json!({"scid": SCID, "name": "bd6c41c3"}))] {
        let mut body = activity("transfer");
        if let Some(origin) = origin {
            body["originSessionRef"] = origin;
        }
        let refused = c
            .send(Method::POST, "/handles", "alice", &[], &body.to_string())
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
    }

    let attributes =
        json!({"tags": ["PlayerSkillNoQoS"], "strings": {"mode": "ffa"}, "numbers": {"level": 7}});
    let mut search = activity("search");
    search["searchAttributes"] = attributes.clone();
    let search = c.create_handle("alice", search).await;
    assert_eq!(search["searchAttributes"], attributes);
    let bare = c.create_handle("alice", activity("search")).await;
    assert_eq!(bare["searchAttributes"], json!({}));
    let mut wrong = activity("search");
    wrong["searchAttributes"] = json!(["tags"]);
    let refused = c
        .send(Method::POST, "/handles", "alice", &[], &wrong.to_string())
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    c.sim.shutdown().await;
}

#[tokio::test]
async fn hopper_statistics() {
    let c = Caller::start().await;
    let stats = format!("/serviceconfigs/{SCID}/hoppers/PlayerSkillNoQoS/stats");
    let empty = c.get(&stats, "alice").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(
        empty.json(),
        json!({"name": "PlayerSkillNoQoS", "hopperName": "PlayerSkillNoQoS",
               "waitTime": 30, "estimatedWaitTime": 30, "population": 0})
    );
    let ticket = json!({"ticketSessionRef": {"scid": SCID, "templateName": "LobbySession", "name": "lobby"}});
    let submitted = c
        .send(
            Method::POST,
            &format!("/serviceconfigs/{SCID}/hoppers/PlayerSkillNoQoS"),
            "alice",
            &[],
            &ticket.to_string(),
        )
        .await;
    // MPSD's answer, as Microsoft's SDK reads it: 201 with the ticket's id
    // and its expected wait, the hopper's.
    assert_eq!(submitted.status, StatusCode::CREATED);
    let submitted = submitted.json();
    assert_eq!(submitted["waitTime"], 30);
    let id = submitted["ticketId"].as_str().unwrap();
    assert_eq!((id.len(), id.matches('-').count()), (36, 4), "a GUID: {id}");
    assert_eq!(c.get(&stats, "alice").await.json()["population"], 1);
    c.sim.shutdown().await;
}
