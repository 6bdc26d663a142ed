use crate::store::testing::*;

#[test]
fn create_read_update() {
    let mut s = store();
    assert_empty(&call(&mut s, "GET", S, "a", ""), 204);
    let created = call(&mut s, "PUT", S, "a", JOIN);
    assert_eq!(created.status, StatusCode::CREATED);
    let doc = body(&created);
    assert_eq!(doc["contractVersion"], 107);
    assert_eq!(doc["changeNumber"], 1);
    let correlation = doc["correlationId"].as_str().unwrap();
    assert_eq!(correlation.len(), 32);
    assert!(correlation.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(doc["members"]["0"]["constants"]["system"]["xuid"], "a");
    assert_eq!(
        doc["members"]["0"]["properties"],
        json!({"system": {}, "custom": {}})
    );
    assert_eq!(
        doc["membersInfo"],
        json!({"first": 0, "next": 1, "count": 1, "accepted": 1, "active": 0})
    );
    assert_eq!(doc["servers"], json!({}));
    let tag = etag(&created);
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34,
        "{tag}"
    );

    let read = call(&mut s, "GET", S, "b", "");
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!((body(&read), etag(&read)), (doc, tag.clone()));

    let updated = call(
        &mut s,
        "PUT",
        S,
        "a",
        r#"{"properties":{"custom":{"x":1}}}"#,
    );
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(body(&updated)["changeNumber"], 2);
    assert_ne!(etag(&updated), tag);
    assert_eq!(
        s.session("scid", "lobbysession", "s1").unwrap(),
        body(&updated)
    );
}

#[test]
fn template_is_case_insensitive_and_unknown_ones_are_404() {
    let mut s = store();
    let lower = S.replace("LobbySession", "lobbysession");
    assert_eq!(call(&mut s, "PUT", &lower, "a", JOIN).status, 201);
    let upper = S.replace("LobbySession", "LOBBYSESSION");
    assert_eq!(call(&mut s, "GET", &upper, "a", "").status, 200);
    let other = S.replace("LobbySession", "Nope");
    assert_text(&call(&mut s, "GET", &other, "a", ""), 404);
    assert_text(&call(&mut s, "PUT", &other, "a", JOIN), 404);
    assert_text(
        &call(&mut s, "GET", &format!("{other}/members/me"), "a", ""),
        404,
    );
    assert_text(&call(&mut s, "GET", "/nothing/here", "a", ""), 404);
    assert_text(&call(&mut s, "GET", &format!("{S}/unknown"), "a", ""), 404);
}

#[test]
fn a_create_without_members_stores_nothing() {
    let mut s = store();
    assert_empty(&call(&mut s, "PUT", S, "a", "{}"), 204);
    let props = r#"{"properties":{"custom":{"x":1}}}"#;
    assert_empty(&call(&mut s, "PUT", S, "a", props), 204);
    assert_eq!(s.session("scid", "LobbySession", "s1"), None);
    assert_empty(&call(&mut s, "GET", S, "a", ""), 204);
}

#[test]
fn etags_are_unique_across_sessions_and_recreation() {
    let mut s = store();
    let mut seen = std::collections::HashSet::new();
    for round in 0..20 {
        let path = format!("{S}{}", round % 3);
        let created = call(&mut s, "PUT", &path, "a", JOIN);
        assert!(seen.insert(etag(&created)));
        call(&mut s, "PUT", &path, "a", r#"{"members":{"me":null}}"#);
    }
}

#[test]
fn nocommit_returns_the_merge_without_storing_it() {
    let mut s = store();
    let preview = call(&mut s, "PUT", &format!("{S}?nocommit=true"), "a", JOIN);
    assert_eq!(preview.status, StatusCode::OK);
    assert_eq!(
        body(&preview)["members"]["0"]["constants"]["system"]["xuid"],
        "a"
    );
    assert_eq!(s.session("scid", "LobbySession", "s1"), None);

    let created = call(&mut s, "PUT", S, "a", JOIN);
    let patch = r#"{"properties":{"custom":{"x":1}}}"#;
    let preview = call(&mut s, "PUT", &format!("{S}?a=b&NoCommit=TRUE"), "a", patch);
    assert_eq!(preview.status, StatusCode::OK);
    assert_eq!(body(&preview)["properties"]["custom"]["x"], 1);
    assert_eq!(body(&preview)["changeNumber"], 2);
    assert_eq!(etag(&preview), etag(&created));
    assert_eq!(
        Some(body(&created)),
        s.session("scid", "LobbySession", "s1")
    );
    // Leaving with nocommit deletes nothing.
    let leave = call(
        &mut s,
        "PUT",
        &format!("{S}?nocommit=true"),
        "a",
        r#"{"members":{"me":null}}"#,
    );
    assert_empty(&leave, 204);
    assert!(s.session("scid", "LobbySession", "s1").is_some());
}

#[test]
fn get_with_if_none_match() {
    let mut s = store();
    let tag = etag(&call(&mut s, "PUT", S, "a", JOIN));
    let unchanged = call_if(&mut s, "GET", S, "a", (None, Some(&tag)), "");
    assert_empty(&unchanged, 304);
    assert_eq!(unchanged.etag.as_deref(), Some(tag.as_str()));
    let list = format!("\"other\", {tag}");
    assert_empty(
        &call_if(&mut s, "GET", S, "a", (None, Some(&list)), ""),
        304,
    );
    let stale = call_if(&mut s, "GET", S, "a", (None, Some("\"stale\"")), "");
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(etag(&stale), tag);
}

#[test]
fn put_preconditions() {
    let mut s = store();
    for if_match in ["*", "\"abc\""] {
        assert_empty(
            &call_if(&mut s, "PUT", S, "a", (Some(if_match), None), JOIN),
            412,
        );
    }
    let created = call_if(&mut s, "PUT", S, "a", (None, Some("*")), JOIN);
    assert_eq!(created.status, StatusCode::CREATED);
    let tag = etag(&created);
    assert_empty(
        &call_if(&mut s, "PUT", S, "a", (None, Some("*")), JOIN),
        412,
    );

    let updated = call_if(
        &mut s,
        "PUT",
        S,
        "a",
        (Some(&tag), None),
        r#"{"properties":{"custom":{"x":1}}}"#,
    );
    assert_eq!(updated.status, StatusCode::OK);
    // The old ETag lost the race: 412 with the whole current session.
    let lost = call_if(
        &mut s,
        "PUT",
        S,
        "a",
        (Some(&tag), None),
        r#"{"properties":{"custom":{"x":2}}}"#,
    );
    assert_eq!(lost.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body(&lost), body(&updated));
    assert_eq!(etag(&lost), etag(&updated));
    assert_eq!(
        call_if(&mut s, "PUT", S, "a", (Some("*"), None), "{}").status,
        200
    );
}

#[test]
fn read_only_sessions_refuse_non_members_with_the_session() {
    let mut s = store();
    let create = r#"{"members":{"me":{}},"constants":{"system":{"writeRestriction":"members"}}}"#;
    let tag = etag(&call(&mut s, "PUT", S, "a", create));
    for (method, path, body_text) in [
        ("PUT", S.to_owned(), JOIN),
        ("PUT", format!("{S}/members/me"), "{}"),
        ("PUT", format!("{S}/properties"), r#"{"custom":{}}"#),
        ("DELETE", format!("{S}/servers/x"), ""),
        ("DELETE", format!("{S}/members/me"), ""),
    ] {
        let refused = call(&mut s, method, &path, "b", body_text);
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(
            body(&refused)["members"]["0"]["constants"]["system"]["xuid"],
            "a"
        );
        assert_eq!(etag(&refused), tag);
    }
    assert_eq!(call(&mut s, "GET", S, "b", "").status, 200);
    assert_eq!(
        call(
            &mut s,
            "PUT",
            S,
            "a",
            r#"{"properties":{"custom":{"x":1}}}"#
        )
        .status,
        200
    );
}

#[test]
fn start_time_and_branch_are_fixed_at_creation() {
    let mut s = store();
    let later = t0() + std::time::Duration::from_millis(1500);
    let created = body(&call(&mut s, "PUT", S, "a", JOIN));
    assert_eq!(created["startTime"], "2023-11-14T22:13:20.0000000Z");
    let branch = created["branch"].as_str().unwrap();
    let groups: Vec<usize> = branch.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{branch}");
    let updated = body(&call_at(&mut s, later, "PUT", S, "b", (None, None), JOIN));
    assert_eq!(
        (&updated["startTime"], &updated["branch"]),
        (&created["startTime"], &created["branch"])
    );
    assert_eq!(
        updated["members"]["1"]["joinTime"],
        "2023-11-14T22:13:21.5000000Z"
    );
    // The sim runs no timers, so there is never a `nextTimer`.
    assert!(updated.get("nextTimer").is_none());
}
