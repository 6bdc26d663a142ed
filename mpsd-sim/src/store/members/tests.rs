use crate::store::testing::*;

#[test]
fn members_join_leave_and_the_last_one_deletes_the_session() {
    let mut s = two_members();
    let doc = s.session("scid", "LobbySession", "s1").unwrap();
    assert_eq!(doc["members"]["1"]["constants"]["system"]["xuid"], "b");
    assert_eq!(
        doc["membersInfo"],
        json!({"first": 0, "next": 2, "count": 2, "accepted": 2, "active": 0})
    );
    let first_tag = etag(&call(&mut s, "GET", S, "a", ""));

    let doc = body(&call(&mut s, "PUT", S, "a", r#"{"members":{"me":null}}"#));
    assert_eq!(
        doc["membersInfo"],
        json!({"first": 1, "next": 2, "count": 1, "accepted": 1, "active": 0})
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

const RESERVE: &str = r#"{"members":{"me":{},
    "reserve_10":{"constants":{"system":{"xuid":"d"}}},
    "reserve_0":{"constants":{"system":{"xuid":"b","initialize":true},"custom":{"slot":1}}},
    "reserve_2":{"constants":{"system":{"xuid":"c"}}}}}"#;

#[test]
fn reservations_hold_seats_until_their_users_join() {
    let mut s = store();
    let doc = body(&call(&mut s, "PUT", S, "a", RESERVE));
    // The caller first, then the reservations in numeric order.
    let xuids: Vec<&Value> = (0..4)
        .map(|i| &doc["members"][i.to_string()]["constants"]["system"]["xuid"])
        .collect();
    assert_eq!(xuids, [&json!("a"), &json!("b"), &json!("c"), &json!("d")]);
    let b = &doc["members"]["1"];
    assert_eq!(b["reserved"], true);
    assert_eq!(
        b["constants"],
        json!({"system": {"xuid": "b", "index": 1, "initialize": true}, "custom": {"slot": 1}})
    );
    // A reserved seat has no device yet.
    for absent in ["joinTime", "deviceToken", "activeTitleId", "nat", "turn"] {
        assert!(b.get(absent).is_none(), "{absent}");
    }
    assert!(doc["members"]["0"].get("reserved").is_none());
    assert_eq!(
        doc["membersInfo"],
        json!({"first": 0, "next": 4, "count": 4, "accepted": 1, "active": 0})
    );

    // b takes its seat: same index, no longer reserved, now accepted.
    let join = r#"{"members":{"me":{"properties":{"system":{"active":true}}}}}"#;
    let doc = body(&call(&mut s, "PUT", S, "b", join));
    let b = &doc["members"]["1"];
    assert!(b.get("reserved").is_none(), "{b}");
    assert_eq!(b["constants"]["custom"], json!({"slot": 1}));
    assert_eq!(b["joinTime"], "2023-11-14T22:13:20.0000000Z");
    assert_eq!(
        doc["membersInfo"],
        json!({"first": 0, "next": 4, "count": 4, "accepted": 2, "active": 1})
    );
    assert!(doc["members"].get("4").is_none());

    // Reserving someone who is already a member (or reserved) changes nothing.
    let again = r#"{"members":{"reserve_0":{"constants":{"system":{"xuid":"b"},"custom":{"slot":9}}},
                                "reserve_1":{"constants":{"system":{"xuid":"c","initialize":true}}}}}"#;
    let after = body(&call(&mut s, "PUT", S, "a", again));
    assert_eq!(after["members"], doc["members"]);
    // A reserved user who declines leaves its seat.
    let doc = body(&call(&mut s, "PUT", S, "c", r#"{"members":{"me":null}}"#));
    assert!(doc["members"].get("2").is_none());
    assert_eq!(doc["membersInfo"]["count"], 3);
}

#[test]
fn a_reservation_needs_a_string_xuid() {
    let mut s = two_members();
    for bad in [
        r#"{"members":{"reserve_0":{}}}"#,
        r#"{"members":{"reserve_0":{"constants":{"system":{}}}}}"#,
        r#"{"members":{"reserve_0":{"constants":{"system":{"xuid":7}}}}}"#,
        r#"{"members":{"reserve_0":null}}"#,
    ] {
        assert_text(&call(&mut s, "PUT", S, "a", bad), 400);
    }
}

#[test]
fn the_service_owns_a_members_index() {
    let mut s = two_members();
    // A written index is ignored, not stored and not a conflict.
    let write = r#"{"members":{"me":{"constants":{"system":{"index":7,"xuid":"b"}}},
                    "reserve_0":{"constants":{"system":{"xuid":"c","index":0}}}}}"#;
    let doc = body(&call(&mut s, "PUT", S, "b", write));
    assert_eq!(doc["members"]["1"]["constants"]["system"]["index"], 1);
    assert_eq!(doc["members"]["2"]["constants"]["system"]["index"], 2);
    assert!(doc["members"].get("7").is_none());
}

#[test]
fn roles_are_stored_and_merged_on_the_member() {
    let mut s = two_members();
    let set = r#"{"members":{"me":{"roles":{"class":"medic","team":"red"}}}}"#;
    let doc = body(&call(&mut s, "PUT", S, "a", set));
    assert_eq!(
        doc["members"]["0"]["roles"],
        json!({"class": "medic", "team": "red"})
    );
    let change = r#"{"members":{"me":{"roles":{"class":"scout","team":null}}}}"#;
    let doc = body(&call(&mut s, "PUT", S, "a", change));
    assert_eq!(doc["members"]["0"]["roles"], json!({"class": "scout"}));
    let doc = body(&call(
        &mut s,
        "PUT",
        S,
        "a",
        r#"{"members":{"me":{"roles":{"class":null}}}}"#,
    ));
    assert!(doc["members"]["0"].get("roles").is_none());
    // A reservation may carry roles too.
    let reserve = r#"{"members":{"reserve_0":{"constants":{"system":{"xuid":"c"}},"roles":{"class":"medic"}}}}"#;
    let doc = body(&call(&mut s, "PUT", S, "a", reserve));
    assert_eq!(doc["members"]["2"]["roles"], json!({"class": "medic"}));
}

#[test]
fn a_members_custom_values_need_not_be_objects() {
    let mut s = store();
    let create = r#"{"members":{"me":{"constants":{"custom":"loadout-7"},
                                       "properties":{"custom":42}}}}"#;
    let doc = body(&call(&mut s, "PUT", S, "a", create));
    let me = &doc["members"]["0"];
    assert_eq!(me["constants"]["custom"], "loadout-7");
    assert_eq!(me["properties"]["custom"], 42);
    // Constants stay set once: the same value again is fine, another is 409.
    let same = r#"{"members":{"me":{"constants":{"custom":"loadout-7"}}}}"#;
    assert_eq!(call(&mut s, "PUT", S, "a", same).status, 200);
    for other in [r#""loadout-8""#, r#"{"x":1}"#, "[1]"] {
        let write = format!(r#"{{"members":{{"me":{{"constants":{{"custom":{other}}}}}}}}}"#);
        assert_text(&call(&mut s, "PUT", S, "a", &write), 409);
    }
    // Properties replace a non-object value, merge into an object one, and
    // `null` empties the bag.
    let doc = body(&call(
        &mut s,
        "PUT",
        S,
        "a",
        r#"{"members":{"me":{"properties":{"custom":{"r":1}}}}}"#,
    ));
    assert_eq!(doc["members"]["0"]["properties"]["custom"], json!({"r": 1}));
    let doc = body(&call(
        &mut s,
        "PUT",
        S,
        "a",
        r#"{"members":{"me":{"properties":{"custom":[true]}}}}"#,
    ));
    assert_eq!(doc["members"]["0"]["properties"]["custom"], json!([true]));
    let doc = body(&call(
        &mut s,
        "PUT",
        S,
        "a",
        r#"{"members":{"me":{"properties":{"custom":null}}}}"#,
    ));
    assert_eq!(doc["members"]["0"]["properties"]["custom"], json!({}));
    // A session's own custom bags are still objects.
    assert_text(
        &call(&mut s, "PUT", S, "a", r#"{"constants":{"custom":"x"}}"#),
        400,
    );
    // A member's empty default `{}` takes a first non-object constant.
    let doc = body(&call(
        &mut s,
        "PUT",
        S,
        "b",
        r#"{"members":{"me":{"constants":{"custom":7}}}}"#,
    ));
    assert_eq!(doc["members"]["1"]["constants"]["custom"], 7);
}
