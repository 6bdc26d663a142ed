use crate::store::testing::*;

#[test]
fn members_join_leave_and_the_last_one_deletes_the_session() {
    let mut s = two_members();
    let doc = s.session("scid", "LobbySession", "s1").unwrap();
    assert_eq!(doc["members"]["1"]["constants"]["system"]["xuid"], "b");
    assert_eq!(
        doc["membersInfo"],
        json!({"first": 0, "next": 2, "count": 2})
    );
    let first_tag = etag(&call(&mut s, "GET", S, "a", ""));

    let doc = body(&call(&mut s, "PUT", S, "a", r#"{"members":{"me":null}}"#));
    assert_eq!(
        doc["membersInfo"],
        json!({"first": 1, "next": 2, "count": 1})
    );
    assert!(doc["members"].get("0").is_none());
    // Rejoining takes a fresh index.
    let doc = body(&call(&mut s, "PUT", S, "a", JOIN));
    assert_eq!(doc["members"]["2"]["constants"]["system"]["xuid"], "a");

    call(&mut s, "PUT", S, "a", r#"{"members":{"me":null}}"#);
    assert_empty(
        &call(&mut s, "PUT", S, "b", r#"{"members":{"me":null}}"#),
        204,
    );
    assert_eq!(s.session("scid", "LobbySession", "s1"), None);
    assert_empty(&call(&mut s, "GET", S, "a", ""), 204);

    // A re-created session starts over, with an ETag never seen before.
    let recreated = call(&mut s, "PUT", S, "a", JOIN);
    assert_eq!(recreated.status, StatusCode::CREATED);
    assert_eq!(body(&recreated)["changeNumber"], 1);
    assert_ne!(etag(&recreated), first_tag);
}
