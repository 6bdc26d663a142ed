//! The `members` of a session delta: the caller's own `"me"`.

use serde_json::{json, Value};

use super::merge::{object_at, patch_bags, set_constants};
use super::{Object, Reply};

pub(super) fn merge_members(doc: &mut Object, value: &Value, user: &str) -> Result<(), Reply> {
    let Value::Object(delta) = value else {
        return Err(Reply::bad_request("`members` must be an object"));
    };
    for (key, member) in delta {
        if key != "me" {
            return Err(Reply::bad_request(format!(
                "only `me` may be written in `members`, not `{key}`"
            )));
        }
        match member {
            Value::Null => {
                if let Some(key) = member_key(doc, user) {
                    object_at(doc, "members").remove(&key);
                }
            }
            Value::Object(patch) => upsert_member(doc, patch, user)?,
            _ => return Err(Reply::bad_request("`me` must be an object or null")),
        }
    }
    refresh_members_info(doc);
    Ok(())
}

/// Adds the caller if absent, then merges its constants and properties.
fn upsert_member(doc: &mut Object, patch: &Object, user: &str) -> Result<(), Reply> {
    if let Some(other) = patch
        .keys()
        .find(|k| *k != "constants" && *k != "properties")
    {
        return Err(Reply::bad_request(format!(
            "unexpected key `{other}` in `me`"
        )));
    }
    let key = match member_key(doc, user) {
        Some(key) => key,
        None => add_member(doc, user),
    };
    let member = object_at(object_at(doc, "members"), &key);
    if let Some(constants) = patch.get("constants") {
        set_constants(object_at(member, "constants"), constants, "me.constants")?;
    }
    if let Some(properties) = patch.get("properties") {
        patch_bags(object_at(member, "properties"), properties, "me.properties")?;
    }
    Ok(())
}

/// Adds the caller at index `membersInfo.next`; returns its key.
fn add_member(doc: &mut Object, user: &str) -> String {
    let info = object_at(doc, "membersInfo");
    let index = info.get("next").and_then(Value::as_u64).unwrap_or(0);
    info.insert("next".into(), (index + 1).into());
    let member = json!({
        "constants": {"system": {"xuid": user}, "custom": {}},
        "properties": {"system": {}, "custom": {}},
    });
    object_at(doc, "members").insert(index.to_string(), member);
    index.to_string()
}

fn refresh_members_info(doc: &mut Object) {
    let members = object_at(doc, "members");
    let count = members.len();
    let first = members.keys().filter_map(|k| k.parse::<u64>().ok()).min();
    let info = object_at(doc, "membersInfo");
    let first = first.unwrap_or_else(|| info.get("next").and_then(Value::as_u64).unwrap_or(0));
    info.insert("count".into(), count.into());
    info.insert("first".into(), first.into());
}

pub(super) fn xuid(member: &Value) -> Option<&str> {
    member
        .pointer("/constants/system/xuid")
        .and_then(Value::as_str)
}

/// The key (index) of the caller's member entry, if the caller is a member.
pub(super) fn member_key(doc: &Object, user: &str) -> Option<String> {
    let members = doc.get("members")?.as_object()?;
    members
        .iter()
        .find(|(_, member)| xuid(member) == Some(user))
        .map(|(key, _)| key.clone())
}

#[cfg(test)]
mod tests;
