use crate::store::testing::*;

#[test]
fn get_elements() {
    let mut s = store();
    for element in ["members/me", "members/0", "servers/game", "properties"] {
        assert_text(
            &call(&mut s, "GET", &format!("{S}/{element}"), "a", ""),
            404,
        );
    }
    let create =
        r#"{"members":{"me":{}},"servers":{"game":{"x":1}},"properties":{"custom":{"p":1}}}"#;
    let tag = etag(&call(&mut s, "PUT", S, "a", create));
    let me = call(&mut s, "GET", &format!("{S}/members/me"), "a", "");
    assert_eq!(body(&me)["constants"]["system"]["xuid"], "a");
    assert_eq!(etag(&me), tag);
    assert_eq!(
        body(&call(&mut s, "GET", &format!("{S}/members/0"), "b", "")),
        body(&me)
    );
    assert_empty(
        &call(&mut s, "GET", &format!("{S}/members/me"), "b", ""),
        204,
    );
    assert_empty(
        &call(&mut s, "GET", &format!("{S}/members/1"), "a", ""),
        204,
    );
    assert_eq!(
        body(&call(&mut s, "GET", &format!("{S}/servers/game"), "a", "")),
        json!({"x": 1})
    );
    assert_empty(
        &call(&mut s, "GET", &format!("{S}/servers/other"), "a", ""),
        204,
    );
    let props = body(&call(&mut s, "GET", &format!("{S}/properties"), "a", ""));
    assert_eq!(props, json!({"system": {}, "custom": {"p": 1}}));
}

#[test]
fn put_elements() {
    let mut s = store();
    assert_text(
        &call(&mut s, "PUT", &format!("{S}/members/me"), "a", "{}"),
        404,
    );
    assert_eq!(call(&mut s, "PUT", S, "a", JOIN).status, 201);

    let joined = call(
        &mut s,
        "PUT",
        &format!("{S}/members/me"),
        "b",
        r#"{"properties":{"custom":{"r":1}}}"#,
    );
    assert_eq!(joined.status, StatusCode::OK);
    let doc = body(&joined);
    assert_eq!(doc["members"]["1"]["properties"]["custom"]["r"], 1);
    assert_eq!(doc["membersInfo"]["count"], 2);

    let props = call(
        &mut s,
        "PUT",
        &format!("{S}/properties"),
        "a",
        r#"{"custom":{"p":2}}"#,
    );
    assert_eq!(body(&props)["properties"]["custom"]["p"], 2);
    let server = call(
        &mut s,
        "PUT",
        &format!("{S}/servers/game"),
        "a",
        r#"{"x":1}"#,
    );
    assert_eq!(body(&server)["servers"]["game"]["x"], 1);
    assert_text(
        &call(
            &mut s,
            "PUT",
            &format!("{S}/properties"),
            "a",
            r#"{"other":{}}"#,
        ),
        400,
    );
    assert_text(
        &call(&mut s, "PUT", &format!("{S}/members/me"), "a", "nope"),
        400,
    );

    let index = call(&mut s, "PUT", &format!("{S}/members/0"), "a", "{}");
    assert_text(&index, 405);
    assert_eq!(index.allow, Some("GET, DELETE"));

    // An element PUT that lost a race gets the whole session.
    let stale = call_if(
        &mut s,
        "PUT",
        &format!("{S}/properties"),
        "a",
        (Some("\"old\""), None),
        "{}",
    );
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body(&stale)["servers"]["game"]["x"], 1);
    assert_eq!(stale.etag, call(&mut s, "GET", S, "a", "").etag);

    call(&mut s, "PUT", &format!("{S}/members/me"), "a", "null");
    assert_empty(
        &call(&mut s, "PUT", &format!("{S}/members/me"), "b", "null"),
        204,
    );
    assert_eq!(s.session("scid", "LobbySession", "s1"), None);
}

#[test]
fn delete_elements() {
    let mut s = store();
    assert_text(
        &call(&mut s, "DELETE", &format!("{S}/members/me"), "a", ""),
        404,
    );
    let mut s = two_members();
    call(&mut s, "PUT", S, "a", r#"{"servers":{"game":{}}}"#);
    let tag = etag(&call(&mut s, "GET", S, "a", ""));

    // Deleting what is not there: 204, and nothing changes.
    assert_empty(
        &call(&mut s, "DELETE", &format!("{S}/servers/none"), "a", ""),
        204,
    );
    assert_empty(
        &call(&mut s, "DELETE", &format!("{S}/members/7"), "a", ""),
        204,
    );
    assert_eq!(etag(&call(&mut s, "GET", S, "a", "")), tag);

    let stale = call_if(
        &mut s,
        "DELETE",
        &format!("{S}/servers/game"),
        "a",
        (Some("\"old\""), None),
        "",
    );
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_empty(
        &call_if(
            &mut s,
            "DELETE",
            &format!("{S}/servers/game"),
            "a",
            (Some(&tag), None),
            "",
        ),
        204,
    );
    let doc = s.session("scid", "LobbySession", "s1").unwrap();
    assert_eq!(doc["servers"], json!({}));

    assert_text(
        &call(&mut s, "DELETE", &format!("{S}/members/1"), "a", ""),
        403,
    );
    assert_empty(
        &call(&mut s, "DELETE", &format!("{S}/members/0"), "a", ""),
        204,
    );
    assert_empty(
        &call(&mut s, "DELETE", &format!("{S}/members/me"), "b", ""),
        204,
    );
    assert_eq!(s.session("scid", "LobbySession", "s1"), None);
}
