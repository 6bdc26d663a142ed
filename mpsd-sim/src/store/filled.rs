//! What the service fills in after every write, derived from the members:
//! each member's `next`, `membersInfo`, `hostCandidates`, `initializing`
//! and the `count` of each declared role.

use serde_json::{json, Value};

use super::merge::object_at;
use super::Object;

/// Recomputes the derived fields of `doc`. The same document always gives
/// the same result (`now` only stamps an `initializing` episode that
/// begins), so a write that changes nothing leaves the document as it was.
pub(super) fn fill(doc: &mut Object, now: &str) {
    let members = object_at(doc, "members");
    let mut order: Vec<(u64, String)> = members
        .keys()
        .filter_map(|k| Some((k.parse().ok()?, k.clone())))
        .collect();
    order.sort_unstable();
    let next_index = doc
        .get("membersInfo")
        .and_then(|i| i.get("next"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    chain(object_at(doc, "members"), &order, next_index);
    members_info(doc, &order, next_index);
    host_candidates(doc, &order);
    initializing(doc, now);
    role_counts(doc);
}

/// Each member's `next` is the index of the next member in index order;
/// the last one's is `membersInfo.next`.
fn chain(members: &mut Object, order: &[(u64, String)], next_index: u64) {
    for (i, (_, key)) in order.iter().enumerate() {
        let next = order.get(i + 1).map_or(next_index, |(index, _)| *index);
        object_at(members, key).insert("next".into(), next.into());
    }
}

fn reserved(member: &Value) -> bool {
    member.get("reserved") == Some(&Value::Bool(true))
}

/// `first`, `next`, `count` (reserved seats too), `accepted` (members who
/// joined: not reserved) and `active` (`properties.system.active` true).
fn members_info(doc: &mut Object, order: &[(u64, String)], next_index: u64) {
    let members = object_at(doc, "members").clone();
    let accepted = members.values().filter(|m| !reserved(m)).count();
    let active = members
        .values()
        .filter(|m| m.pointer("/properties/system/active") == Some(&Value::Bool(true)))
        .count();
    let first = order.first().map_or(next_index, |(index, _)| *index);
    let info = object_at(doc, "membersInfo");
    info.insert("first".into(), first.into());
    info.insert("next".into(), next_index.into());
    info.insert("count".into(), members.len().into());
    info.insert("accepted".into(), accepted.into());
    info.insert("active".into(), active.into());
}

/// The device tokens of the accepted members, in index order (a choice:
/// MPSD ranks candidates by connection quality, which the simulator does
/// not measure).
fn host_candidates(doc: &mut Object, order: &[(u64, String)]) {
    let members = object_at(doc, "members");
    let tokens: Vec<Value> = order
        .iter()
        .filter_map(|(_, key)| members.get(key))
        .filter(|m| !reserved(m))
        .filter_map(|m| m.get("deviceToken").cloned())
        .collect();
    doc.insert("hostCandidates".into(), tokens.into());
}

/// `initializing` is there while some member was written with
/// `constants.system.initialize: true`: one episode, in the `joining`
/// stage, from the write that brought the first such member (a choice: the
/// simulator measures no QoS, so the episode never moves on to
/// `measuring` or `evaluating`).
fn initializing(doc: &mut Object, now: &str) {
    let initialize = object_at(doc, "members")
        .values()
        .any(|m| m.pointer("/constants/system/initialize") == Some(&Value::Bool(true)));
    match (initialize, doc.contains_key("initializing")) {
        (true, false) => {
            let episode = json!({"stage": "joining", "stageStartTime": now, "episode": 1});
            doc.insert("initializing".into(), episode);
        }
        (false, _) => {
            doc.remove("initializing");
        }
        (true, true) => {}
    }
}

/// Fills each declared role's `count` with the members holding it (a
/// choice: MPSD's docs describe `count` as read-only and kept by the
/// service; roles members hold that no role type declares count nowhere).
fn role_counts(doc: &mut Object) {
    let members = object_at(doc, "members").clone();
    let Some(Value::Object(role_types)) = doc.get_mut("roleTypes") else {
        return;
    };
    for (type_name, role_type) in role_types.iter_mut() {
        let Some(Value::Object(roles)) = role_type.get_mut("roles") else {
            continue;
        };
        for (role_name, role) in roles.iter_mut() {
            let count = members
                .values()
                .filter(|m| {
                    m.get("roles").and_then(|r| r.get(type_name)) == Some(&json!(role_name))
                })
                .count();
            if let Value::Object(role) = role {
                role.insert("count".into(), count.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::testing::*;

    fn at(secs: u64) -> std::time::SystemTime {
        t0() + Duration::from_secs(secs)
    }

    #[test]
    fn each_member_gets_what_the_service_fills() {
        let mut s = store();
        call_at(
            &mut s,
            at(0),
            "PUT",
            S,
            "2814670358539055",
            (None, None),
            JOIN,
        );
        let doc = body(&call_at(&mut s, at(5), "PUT", S, "b", (None, None), JOIN));
        let a = &doc["members"]["0"];
        assert_eq!(a["gamertag"], "Player9055");
        assert_eq!(a["joinTime"], "2023-11-14T22:13:20.0000000Z");
        assert_eq!(a["activeTitleId"], "1234567890");
        assert_eq!((&a["nat"], &a["turn"]), (&json!("open"), &json!(false)));
        assert_eq!(
            a["constants"]["system"],
            json!({"xuid": "2814670358539055", "index": 0})
        );
        assert_eq!(
            doc["members"]["1"]["joinTime"],
            "2023-11-14T22:13:25.0000000Z"
        );
        let token = |doc: &Value, i: &str| {
            doc["members"][i]["deviceToken"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let (ta, tb) = (token(&doc, "0"), token(&doc, "1"));
        assert!(
            ta.len() == 32 && ta.bytes().all(|b| b.is_ascii_hexdigit()),
            "{ta}"
        );
        assert_ne!(ta, tb);
        assert_eq!(doc["hostCandidates"], json!([ta, tb]));

        // Later writes keep what was stamped at join.
        let active = r#"{"members":{"me":{"properties":{"system":{"active":true}}}}}"#;
        let later = body(&call_at(
            &mut s,
            at(60),
            "PUT",
            S,
            "2814670358539055",
            (None, None),
            active,
        ));
        assert_eq!(later["members"]["0"]["joinTime"], a["joinTime"]);
        assert_eq!(token(&later, "0"), ta);
        assert_eq!(later["membersInfo"]["active"], 1);
        assert_eq!(later["startTime"], doc["startTime"]);
    }

    #[test]
    fn next_chains_the_members_in_index_order() {
        let mut s = two_members();
        call(&mut s, "PUT", S, "c", JOIN);
        let doc = body(&call(&mut s, "GET", S, "a", ""));
        let next = |doc: &Value, i: &str| doc["members"][i]["next"].clone();
        assert_eq!(
            [next(&doc, "0"), next(&doc, "1"), next(&doc, "2")],
            [1, 2, 3]
        );
        let doc = body(&call(&mut s, "PUT", S, "b", r#"{"members":{"me":null}}"#));
        assert_eq!([next(&doc, "0"), next(&doc, "2")], [2, 3]);
        assert_eq!(doc["membersInfo"]["next"], 3);
    }

    #[test]
    fn initializing_lasts_while_members_initialize() {
        let mut s = store();
        let doc = body(&call(&mut s, "PUT", S, "a", JOIN));
        assert!(doc.get("initializing").is_none());
        let init = r#"{"members":{"me":{"constants":{"system":{"initialize":true}}}}}"#;
        let doc = body(&call_at(
            &mut s,
            t0() + Duration::from_secs(3),
            "PUT",
            S,
            "b",
            (None, None),
            init,
        ));
        let episode = json!({"stage": "joining", "stageStartTime": "2023-11-14T22:13:23.0000000Z", "episode": 1});
        assert_eq!(doc["initializing"], episode);
        assert_eq!(
            doc["members"]["1"]["constants"]["system"]["initialize"],
            true
        );
        // The episode keeps its start while it lasts.
        let doc = body(&call_at(
            &mut s,
            t0() + Duration::from_secs(9),
            "PUT",
            S,
            "a",
            (None, None),
            "{}",
        ));
        assert_eq!(doc["initializing"], episode);
        let doc = body(&call(&mut s, "PUT", S, "b", r#"{"members":{"me":null}}"#));
        assert!(doc.get("initializing").is_none());
    }

    #[test]
    fn role_types_are_stored_and_count_their_members() {
        let mut s = two_members();
        let types = r#"{"roleTypes":{"lfg":{"ownerManaged":true,"roles":{"confirmed":{"target":2},"maybe":{}}}}}"#;
        let doc = body(&call(&mut s, "PUT", S, "a", types));
        assert_eq!(
            doc["roleTypes"],
            json!({"lfg": {"ownerManaged": true, "roles": {"confirmed": {"target": 2, "count": 0}, "maybe": {"count": 0}}}})
        );
        call(
            &mut s,
            "PUT",
            S,
            "a",
            r#"{"members":{"me":{"roles":{"lfg":"confirmed"}}}}"#,
        );
        let doc = body(&call(
            &mut s,
            "PUT",
            S,
            "b",
            r#"{"members":{"me":{"roles":{"lfg":"confirmed","other":"x"}}}}"#,
        ));
        assert_eq!(
            doc["roleTypes"]["lfg"]["roles"]["confirmed"],
            json!({"target": 2, "count": 2})
        );
        let doc = body(&call(
            &mut s,
            "PUT",
            S,
            "b",
            r#"{"members":{"me":{"roles":{"lfg":"maybe"}}}}"#,
        ));
        assert_eq!(doc["roleTypes"]["lfg"]["roles"]["confirmed"]["count"], 1);
        assert_eq!(doc["roleTypes"]["lfg"]["roles"]["maybe"]["count"], 1);
        let doc = body(&call(
            &mut s,
            "PUT",
            S,
            "a",
            r#"{"roleTypes":{"lfg":null}}"#,
        ));
        assert!(doc.get("roleTypes").is_none());
    }

    #[test]
    fn a_session_without_accepted_members_has_no_host_candidates() {
        let mut s = store();
        let doc = body(&call(
            &mut s,
            "PUT",
            S,
            "a",
            r#"{"members":{"me":{},"reserve_0":{"constants":{"system":{"xuid":"b"}}}}}"#,
        ));
        assert_eq!(doc["hostCandidates"].as_array().unwrap().len(), 1);
        let doc = body(&call(&mut s, "PUT", S, "a", r#"{"members":{"me":null}}"#));
        assert_eq!(doc["hostCandidates"], json!([]));
        assert_eq!(doc["membersInfo"]["accepted"], 0);
        assert_eq!(doc["membersInfo"]["count"], 1);
    }
}
