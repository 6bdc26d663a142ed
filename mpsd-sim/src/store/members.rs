//! The `members` of a session delta: the caller's own `"me"`, and seats
//! reserved for others (`reserve_0`, `reserve_1`, ...).

use serde_json::{json, Value};

use super::merge::{merge_patch, object_at, patch_bags, set_constants};
use super::{Object, Reply};

/// The title every member plays, as `activeTitleId` (a simulator constant:
/// one title per simulator, written as MPSD writes title ids, in decimal).
pub(crate) const TITLE_ID: &str = "1234567890";

/// Who writes a delta, and what the service stamps on a member who joins.
#[derive(Debug, Clone, Copy)]
pub(super) struct Writer<'a> {
    /// The caller's user hash (its xuid).
    pub(super) user: &'a str,
    /// The request's time, RFC 3339.
    pub(super) now: &'a str,
    /// The device token the caller gets if it joins with this write.
    pub(super) device_token: &'a str,
}

pub(super) fn merge_members(
    doc: &mut Object,
    value: &Value,
    writer: &Writer<'_>,
) -> Result<(), Reply> {
    let Value::Object(delta) = value else {
        return Err(Reply::bad_request("`members` must be an object"));
    };
    let mut reservations = Vec::new();
    for (key, member) in delta {
        match reservation_number(key) {
            _ if key == "me" => {}
            Some(n) => reservations.push((n, member)),
            None => {
                return Err(Reply::bad_request(format!(
                    "only `me` and `reserve_{{n}}` may be written in `members`, not `{key}`"
                )))
            }
        }
    }
    // The caller first, so that a creator who reserves seats for others in
    // the same write gets the first index; then the reservations in order.
    match delta.get("me") {
        None => {}
        Some(Value::Null) => {
            if let Some(key) = member_key(doc, writer.user) {
                object_at(doc, "members").remove(&key);
            }
        }
        Some(Value::Object(patch)) => upsert_me(doc, patch, writer)?,
        Some(_) => return Err(Reply::bad_request("`me` must be an object or null")),
    }
    reservations.sort_by_key(|(n, _)| *n);
    for (_, reservation) in reservations {
        reserve(doc, reservation)?;
    }
    Ok(())
}

/// `reserve_{n}` -> `n`.
fn reservation_number(key: &str) -> Option<u64> {
    let n = key.strip_prefix("reserve_")?;
    n.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| n.parse().ok())
        .flatten()
}

/// Adds the caller if absent (or takes its reserved seat), then merges its
/// constants, properties and roles.
fn upsert_me(doc: &mut Object, patch: &Object, writer: &Writer<'_>) -> Result<(), Reply> {
    check_keys(patch, "me")?;
    let key = match member_key(doc, writer.user) {
        Some(key) => key,
        None => add_member(doc, writer.user),
    };
    let member = object_at(object_at(doc, "members"), &key);
    // A new member, or one taking a reserved seat, joins now: it is no
    // longer reserved, and gets what the service stamps on a joining
    // device. A reserved seat has none of these until it is taken.
    if !member.contains_key("joinTime") {
        member.remove("reserved");
        member.insert("joinTime".into(), writer.now.into());
        member.insert("activeTitleId".into(), TITLE_ID.into());
        member.insert("deviceToken".into(), writer.device_token.into());
        member.insert("nat".into(), "open".into());
        member.insert("turn".into(), false.into());
    }
    apply(member, patch, "me")
}

/// Reserves a seat for `constants.system.xuid`: a member at the next index,
/// `"reserved": true`, not accepted until that user writes `"me"`.
/// Reserving a user who is already a member changes nothing.
fn reserve(doc: &mut Object, value: &Value) -> Result<(), Reply> {
    let Value::Object(patch) = value else {
        return Err(Reply::bad_request("a reservation must be an object"));
    };
    check_keys(patch, "reserve_{n}")?;
    let Some(xuid) = value
        .pointer("/constants/system/xuid")
        .and_then(Value::as_str)
    else {
        return Err(Reply::bad_request(
            "a reservation needs a string `constants.system.xuid`",
        ));
    };
    if member_key(doc, xuid).is_some() {
        return Ok(());
    }
    let key = add_member(doc, xuid);
    let member = object_at(object_at(doc, "members"), &key);
    member.insert("reserved".into(), true.into());
    apply(member, patch, "reserve_{n}")
}

/// A member delta may hold `constants`, `properties` and `roles`.
fn check_keys(patch: &Object, what: &str) -> Result<(), Reply> {
    match patch
        .keys()
        .find(|k| !matches!(k.as_str(), "constants" | "properties" | "roles"))
    {
        Some(other) => Err(Reply::bad_request(format!(
            "unexpected key `{other}` in `{what}`"
        ))),
        None => Ok(()),
    }
}

/// Merges a member delta into `member`. The service owns
/// `constants.system.index`: a written one is ignored (a choice: the docs
/// do not say; ignoring it keeps a client that echoes a member it read
/// working), and the member keeps the index it was given.
fn apply(member: &mut Object, patch: &Object, what: &str) -> Result<(), Reply> {
    if let Some(constants) = patch.get("constants") {
        let mut constants = constants.clone();
        if let Some(system) = constants.get_mut("system").and_then(Value::as_object_mut) {
            system.remove("index");
        }
        let what = format!("{what}.constants");
        set_constants(object_at(member, "constants"), &constants, &what, true)?;
    }
    if let Some(properties) = patch.get("properties") {
        let what = format!("{what}.properties");
        patch_bags(object_at(member, "properties"), properties, &what, true)?;
    }
    if let Some(roles) = patch.get("roles") {
        merge_roles(member, roles, what)?;
    }
    Ok(())
}

/// `roles` is `{"roleTypeName": "roleName"}`, merged as merge-patch: a
/// role type set to `null` drops the member's role of that type. Roles are
/// not checked against the session's `roleTypes` (a choice: the simulator
/// has no template to declare them; MPSD checks them against the
/// template's).
fn merge_roles(member: &mut Object, roles: &Value, what: &str) -> Result<(), Reply> {
    let valid = roles
        .as_object()
        .is_some_and(|r| r.values().all(|v| v.is_string() || v.is_null()));
    let Some(patch) = roles.as_object().filter(|_| valid) else {
        return Err(Reply::bad_request(format!(
            "`{what}.roles` must map role type names to role names"
        )));
    };
    merge_patch(object_at(member, "roles"), patch);
    if member
        .get("roles")
        .and_then(Value::as_object)
        .is_some_and(Object::is_empty)
    {
        member.remove("roles");
    }
    Ok(())
}

/// Adds `xuid` at index `membersInfo.next`; returns its key.
fn add_member(doc: &mut Object, xuid: &str) -> String {
    let info = object_at(doc, "membersInfo");
    let index = info.get("next").and_then(Value::as_u64).unwrap_or(0);
    info.insert("next".into(), (index + 1).into());
    let member = json!({
        "constants": {"system": {"xuid": xuid, "index": index}, "custom": {}},
        "properties": {"system": {}, "custom": {}},
        "gamertag": gamertag(xuid),
    });
    object_at(doc, "members").insert(index.to_string(), member);
    index.to_string()
}

/// A gamertag derived from the xuid: "Player" and its last four characters
/// (a choice: the simulator has no profile service).
fn gamertag(xuid: &str) -> String {
    let tail: String = {
        let mut chars: Vec<char> = xuid.chars().rev().take(4).collect();
        chars.reverse();
        chars.into_iter().collect()
    };
    format!("Player{tail}")
}

pub(super) fn xuid(member: &Value) -> Option<&str> {
    member
        .pointer("/constants/system/xuid")
        .and_then(Value::as_str)
}

/// The key (index) of the caller's member entry, if the caller is a member
/// (or holds a reserved seat).
pub(super) fn member_key(doc: &Object, user: &str) -> Option<String> {
    let members = doc.get("members")?.as_object()?;
    members
        .iter()
        .find(|(_, member)| xuid(member) == Some(user))
        .map(|(key, _)| key.clone())
}

#[cfg(test)]
mod tests;
