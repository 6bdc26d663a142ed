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
