use crate::store::testing::*;

#[test]
fn handles() {
    let mut s = two_members();
    let handle = r#"{"type":"activity","sessionRef":{"scid":"scid","templateName":"LobbySession","name":"s1"}}"#;
    let created = call(&mut s, "POST", "/handles", "a", handle);
    assert_eq!(created.status, StatusCode::CREATED);
    let doc = body(&created);
    let id = doc["id"].as_str().unwrap().to_owned();
    assert_eq!(doc["sessionRef"]["name"], "s1");

    assert_eq!(
        body(&call(&mut s, "GET", &format!("/handles/{id}"), "b", "")),
        doc
    );
    let session = call(&mut s, "GET", &format!("/handles/{id}/session"), "b", "");
    assert_eq!(body(&session)["membersInfo"]["count"], 2);
    assert!(session.etag.is_some());
    let query = body(&call(&mut s, "POST", "/handles/query", "a", "{}"));
    assert_eq!(query["results"], json!([doc]));

    assert_text(&call(&mut s, "GET", "/handles/nope", "a", ""), 404);
    assert_text(&call(&mut s, "POST", "/handles", "a", "{}"), 400);
    assert_text(
        &call(&mut s, "POST", "/handles", "a", &handle.replace("s1", "s2")),
        404,
    );
    assert_empty(
        &call(&mut s, "DELETE", &format!("/handles/{id}"), "a", ""),
        204,
    );
    assert_text(
        &call(&mut s, "GET", &format!("/handles/{id}"), "a", ""),
        404,
    );
}

const ACTIVITY: &str =
    r#"{"type":"activity","sessionRef":{"scid":"scid","templateName":"LobbySession","name":"s1"}}"#;
const SESSION_PATH: &str = "/serviceconfigs/scid/sessionTemplates/LobbySession/sessions/s1";

/// Creates a handle as `user`; returns its id.
fn handle(s: &mut Store, user: &str, body_text: &str) -> String {
    let created = call(s, "POST", "/handles", user, body_text);
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let id = body(&created)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.location.as_deref(),
        Some(format!("/handles/{id}").as_str())
    );
    id
}

#[test]
fn handles_carry_their_owner_and_invites_their_invitee() {
    let mut s = two_members();
    let id = handle(&mut s, "a", ACTIVITY);
    let doc = body(&call(&mut s, "GET", &format!("/handles/{id}"), "b", ""));
    assert_eq!(doc["ownerXuid"], "a");
    assert_eq!(doc["createTime"], "2023-11-14T22:13:20.0000000Z");
    assert_eq!(doc["version"], 1);
    assert!(doc.get("invitedXuid").is_none());
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");

    let invite = ACTIVITY.replace(
        r#""type":"activity""#,
        r#""type":"invite","invitedXuid":"c","inviteAttributes":{"titleId":"1","context":"x"}"#,
    );
    let id = handle(&mut s, "b", &invite);
    let doc = body(&call(&mut s, "GET", &format!("/handles/{id}"), "a", ""));
    assert_eq!(
        (&doc["ownerXuid"], &doc["senderXuid"], &doc["invitedXuid"]),
        (&json!("b"), &json!("b"), &json!("c"))
    );
    assert_eq!(
        doc["inviteAttributes"],
        json!({"titleId": "1", "context": "x"})
    );
    assert_eq!(doc["expiration"], "2023-11-14T23:13:20.0000000Z");

    let bare = ACTIVITY.replace(
        r#""type":"activity""#,
        r#""type":"invite","invitedXuid":"c""#,
    );
    let id = handle(&mut s, "b", &bare);
    let doc = body(&call(&mut s, "GET", &format!("/handles/{id}"), "a", ""));
    assert_eq!(doc["inviteAttributes"], json!({}));
    for bad in [r#""type":"invite""#, r#""type":"invite","invitedXuid":7"#] {
        let bad = ACTIVITY.replace(r#""type":"activity""#, bad);
        assert_text(&call(&mut s, "POST", "/handles", "b", &bad), 400);
    }
}

#[test]
fn the_session_through_a_handle_is_the_session() {
    let mut s = two_members();
    let id = handle(&mut s, "a", ACTIVITY);
    let by_handle = format!("/handles/{id}/session");
    let direct = call(&mut s, "GET", S, "a", "");
    let read = call(&mut s, "GET", &by_handle, "b", "");
    assert_eq!(
        (read.status, body(&read), read.etag.clone()),
        (StatusCode::OK, body(&direct), direct.etag.clone())
    );
    assert_eq!(read.content_location.as_deref(), Some(SESSION_PATH));
    let tag = etag(&read);
    let unchanged = call_if(&mut s, "GET", &by_handle, "b", (None, Some(&tag)), "");
    assert_empty(&unchanged, 304);
    assert_eq!(unchanged.content_location.as_deref(), Some(SESSION_PATH));

    // PUT: the same merge and preconditions as the session URI.
    let put = call_if(&mut s, "PUT", &by_handle, "c", (Some(&tag), None), JOIN);
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.content_location.as_deref(), Some(SESSION_PATH));
    assert_eq!(
        body(&put)["members"]["2"]["constants"]["system"]["xuid"],
        "c"
    );
    let lost = call_if(&mut s, "PUT", &by_handle, "c", (Some(&tag), None), "{}");
    assert_eq!(lost.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        (body(&lost), lost.etag.clone()),
        (body(&put), put.etag.clone())
    );
    assert_empty(
        &call_if(&mut s, "PUT", &by_handle, "c", (None, Some("*")), "{}"),
        412,
    );
    let preview = call(
        &mut s,
        "PUT",
        &format!("{by_handle}?nocommit=true"),
        "d",
        JOIN,
    );
    assert_eq!(body(&preview)["membersInfo"]["count"], 4);
    assert_eq!(
        body(&call(&mut s, "GET", S, "a", ""))["membersInfo"]["count"],
        3
    );

    // The last member leaves through the handle: 204, the session is gone,
    // and a read through the handle is 204 too; the handle itself stays.
    for user in ["a", "b"] {
        call(
            &mut s,
            "PUT",
            &by_handle,
            user,
            r#"{"members":{"me":null}}"#,
        );
    }
    let gone = call(&mut s, "PUT", &by_handle, "c", r#"{"members":{"me":null}}"#);
    assert_empty(&gone, 204);
    assert_eq!(gone.content_location.as_deref(), Some(SESSION_PATH));
    assert_eq!(s.session("scid", "LobbySession", "s1"), None);
    assert_empty(&call(&mut s, "GET", &by_handle, "a", ""), 204);
    assert_eq!(
        call(&mut s, "GET", &format!("/handles/{id}"), "a", "").status,
        200
    );

    let unknown = call(&mut s, "GET", "/handles/nope/session", "a", "");
    assert_text(&unknown, 404);
    assert_eq!(unknown.content_location, None);
    let wrong = call(&mut s, "DELETE", &by_handle, "a", "");
    assert_text(&wrong, 405);
    assert_eq!(wrong.allow, Some("GET, PUT"));
}

#[test]
fn handle_queries_filter_and_include() {
    let mut s = two_members();
    let create = r#"{"constants":{"system":{"visibility":"private","maxMembersCount":8}},
                     "properties":{"system":{"joinRestriction":"followed"},"custom":{"mode":"ctf"}},
                     "roleTypes":{"lfg":{"roles":{"confirmed":{"target":4}}}},
                     "members":{"me":{"roles":{"lfg":"confirmed"}}}}"#;
    call(&mut s, "PUT", S, "a", create);
    let activity = handle(&mut s, "a", ACTIVITY);
    let invite = ACTIVITY.replace(
        r#""type":"activity""#,
        r#""type":"invite","invitedXuid":"c""#,
    );
    let invite = handle(&mut s, "b", &invite);
    let ids = |reply: &Reply| -> Vec<String> {
        body(reply)["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut both = vec![activity.clone(), invite.clone()];
    both.sort();

    let all = call(&mut s, "POST", "/handles/query", "a", "");
    assert_eq!(ids(&all), both);
    let plain = &body(&all)["results"][0];
    for absent in ["relatedInfo", "customProperties", "roleInfo"] {
        assert!(plain.get(absent).is_none(), "{absent}");
    }
    let by_type = call(
        &mut s,
        "POST",
        "/handles/query",
        "a",
        r#"{"type":"activity","scid":"scid"}"#,
    );
    assert_eq!(ids(&by_type), [activity]);
    let by_owner = call(
        &mut s,
        "POST",
        "/handles/query",
        "a",
        r#"{"owners":{"xuids":["b","z"]}}"#,
    );
    assert_eq!(ids(&by_owner), [invite]);
    let ignored = r#"{"owners":{"people":{"moniker":"People","monikerXuid":"a"}}}"#;
    assert_eq!(
        ids(&call(&mut s, "POST", "/handles/query", "a", ignored)),
        both
    );
    let other_scid = call(&mut s, "POST", "/handles/query", "a", r#"{"scid":"other"}"#);
    assert_eq!(ids(&other_scid), Vec::<String>::new());

    let query = "/handles/query?include=relatedInfo%2CcustomProperties,roleinfo";
    let full = body(&call(&mut s, "POST", query, "a", r#"{"type":"activity"}"#));
    let result = &full["results"][0];
    assert_eq!(
        result["relatedInfo"],
        json!({"visibility": "private", "joinRestriction": "followed", "closed": false,
               "maxMembersCount": 8, "membersCount": 2})
    );
    assert_eq!(result["customProperties"], json!({"mode": "ctf"}));
    assert_eq!(
        result["roleInfo"],
        json!({"roleTypes": {"lfg": {"roles": {"confirmed": {"target": 4, "count": 1}}}}})
    );
    let some = body(&call(
        &mut s,
        "POST",
        "/handles/query?include=customProperties",
        "a",
        "{}",
    ));
    assert!(some["results"][0].get("relatedInfo").is_none());
    assert_eq!(
        some["results"][0]["customProperties"],
        json!({"mode": "ctf"})
    );

    for bad in ["[]", "{", r#"{"type":1}"#, r#"{"owners":{"xuids":"a"}}"#] {
        assert_text(&call(&mut s, "POST", "/handles/query", "a", bad), 400);
    }
}
