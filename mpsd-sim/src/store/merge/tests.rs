use crate::store::testing::*;

#[test]
fn malformed_deltas_are_400() {
    let mut s = two_members();
    for bad in [
        "",
        "{",
        "[]",
        "42",
        r#"{"unknown":{}}"#,
        r#"{"constants":[]}"#,
        r#"{"constants":{"other":{}}}"#,
        r#"{"constants":{"custom":1}}"#,
        r#"{"properties":{"custom":"x"}}"#,
        r#"{"members":{"0":{}}}"#,
        r#"{"members":[]}"#,
        r#"{"members":{"me":1}}"#,
        // Unknown member keys, bad roles and role types, malformed reservations.
        r#"{"members":{"me":{"gamertag":"x"}}}"#,
        r#"{"members":{"me":{"roles":[]}}}"#,
        r#"{"members":{"me":{"roles":{"t":1}}}}"#,
        r#"{"members":{"reserve_0":{}}}"#,
        r#"{"members":{"reserve_0":{"constants":{"system":{"xuid":1}}}}}"#,
        r#"{"members":{"reserve_x":{}}}"#,
        r#"{"members":{"me":{"constants":{"system":1}}}}"#,
        r#"{"roleTypes":[]}"#,
        r#"{"roleTypes":{"t":1}}"#,
        r#"{"servers":{"game":1}}"#,
        r#"{"servers":[]}"#,
    ] {
        assert_text(&call(&mut s, "PUT", S, "a", bad), 400);
    }
    assert_eq!(body(&call(&mut s, "GET", S, "a", ""))["changeNumber"], 2);
}

#[test]
fn constants_are_set_once() {
    let mut s = store();
    let set = r#"{"members":{"me":{}},"constants":{"custom":{"map":"a"},"system":{"maxMembersCount":4}}}"#;
    assert_eq!(call(&mut s, "PUT", S, "a", set).status, 201);
    assert_eq!(call(&mut s, "PUT", S, "a", set).status, 200);
    let more = r#"{"constants":{"custom":{"mode":"b"}}}"#;
    assert_eq!(call(&mut s, "PUT", S, "a", more).status, 200);
    let changed = r#"{"constants":{"custom":{"map":"b"}}}"#;
    assert_text(&call(&mut s, "PUT", S, "a", changed), 409);
    let xuid = r#"{"members":{"me":{"constants":{"system":{"xuid":"z"}}}}}"#;
    assert_text(&call(&mut s, "PUT", S, "a", xuid), 409);
    let member = r#"{"members":{"me":{"constants":{"custom":{"team":1}}}}}"#;
    assert_eq!(call(&mut s, "PUT", S, "a", member).status, 200);
    let member = r#"{"members":{"me":{"constants":{"custom":{"team":2}}}}}"#;
    assert_text(&call(&mut s, "PUT", S, "a", member), 409);
    let doc = s.session("scid", "LobbySession", "s1").unwrap();
    assert_eq!(doc["constants"]["custom"], json!({"map": "a", "mode": "b"}));
    assert_eq!(
        doc["members"]["0"]["constants"]["custom"],
        json!({"team": 1})
    );
}

#[test]
fn properties_merge_as_json_merge_patch() {
    let mut s = store();
    let set = r#"{"members":{"me":{"properties":{"custom":{"ready":true}}}},
                  "properties":{"custom":{"a":1,"b":{"c":2,"d":3}}}}"#;
    assert_eq!(call(&mut s, "PUT", S, "a", set).status, 201);
    let patch = r#"{"properties":{"custom":{"a":null,"b":{"c":null,"e":4},"f":[1]}}}"#;
    let doc = body(&call(&mut s, "PUT", S, "a", patch));
    assert_eq!(
        doc["properties"]["custom"],
        json!({"b": {"d": 3, "e": 4}, "f": [1]})
    );
    assert_eq!(doc["properties"]["system"], json!({}));
    assert_eq!(
        doc["members"]["0"]["properties"]["custom"],
        json!({"ready": true})
    );
    let patch = r#"{"members":{"me":{"properties":{"custom":{"ready":null}}}}}"#;
    let doc = body(&call(&mut s, "PUT", S, "a", patch));
    assert_eq!(doc["members"]["0"]["properties"]["custom"], json!({}));
}

#[test]
fn servers_are_set_merged_and_removed() {
    let mut s = two_members();
    let doc = body(&call(
        &mut s,
        "PUT",
        S,
        "a",
        r#"{"servers":{"game":{"constants":{"x":1}}}}"#,
    ));
    assert_eq!(doc["servers"], json!({"game": {"constants": {"x": 1}}}));
    let doc = body(&call(
        &mut s,
        "PUT",
        S,
        "a",
        r#"{"servers":{"game":{"properties":{"y":2}}}}"#,
    ));
    assert_eq!(
        doc["servers"]["game"],
        json!({"constants": {"x": 1}, "properties": {"y": 2}})
    );
    let doc = body(&call(&mut s, "PUT", S, "a", r#"{"servers":{"game":null}}"#));
    assert_eq!(doc["servers"], json!({}));
}
