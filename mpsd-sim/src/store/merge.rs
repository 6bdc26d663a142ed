//! Merging a session delta: constants set once, properties and servers as
//! JSON merge-patch, members through [`members`](super::members).

use serde_json::Value;

use super::members::merge_members;
use super::{Object, Reply};

/// Merges a session delta into `doc`, as the caller `user`.
pub(super) fn merge(doc: &mut Object, delta: &Object, user: &str) -> Result<(), Reply> {
    for (key, value) in delta {
        match key.as_str() {
            "constants" => set_constants(object_at(doc, "constants"), value, "constants")?,
            "properties" => patch_bags(object_at(doc, "properties"), value, "properties")?,
            "members" => merge_members(doc, value, user)?,
            "servers" => merge_servers(object_at(doc, "servers"), value)?,
            other => {
                return Err(Reply::bad_request(format!(
                    "unexpected key `{other}` in the session delta"
                )))
            }
        }
    }
    Ok(())
}

/// The object under `key`, made an empty object if it is missing or not one.
pub(super) fn object_at<'m>(map: &'m mut Object, key: &str) -> &'m mut Object {
    let value = map
        .entry(key)
        .or_insert_with(|| Value::Object(Object::new()));
    if !value.is_object() {
        *value = Value::Object(Object::new());
    }
    match value {
        Value::Object(object) => object,
        _ => unreachable!("made an object above"),
    }
}

/// A `{system, custom}` delta: an object holding only those two bags.
pub(super) fn bags<'v>(value: &'v Value, what: &str) -> Result<Vec<(&'v str, &'v Object)>, Reply> {
    let Value::Object(object) = value else {
        return Err(Reply::bad_request(format!("`{what}` must be an object")));
    };
    object
        .iter()
        .map(|(bag, value)| match (bag.as_str(), value) {
            ("system" | "custom", Value::Object(patch)) => Ok((bag.as_str(), patch)),
            _ => Err(Reply::bad_request(format!(
                "`{what}` may hold only `system` and `custom` objects"
            ))),
        })
        .collect()
}

/// Constants are set once: the same value again is fine, another is a 409.
pub(super) fn set_constants(target: &mut Object, value: &Value, what: &str) -> Result<(), Reply> {
    for (bag, patch) in bags(value, what)? {
        let target = object_at(target, bag);
        for (key, value) in patch {
            match target.get(key) {
                Some(old) if old != value => {
                    return Err(Reply::conflict(format!(
                        "constant `{what}.{bag}.{key}` is already set"
                    )))
                }
                Some(_) => {}
                None => {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Ok(())
}

pub(super) fn patch_bags(target: &mut Object, value: &Value, what: &str) -> Result<(), Reply> {
    for (bag, patch) in bags(value, what)? {
        merge_patch(object_at(target, bag), patch);
    }
    Ok(())
}

/// RFC 7396 JSON merge-patch: `null` removes, objects merge, the rest replaces.
pub(super) fn merge_patch(target: &mut Object, patch: &Object) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(patch) => merge_patch(object_at(target, key), patch),
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

pub(super) fn merge_servers(servers: &mut Object, value: &Value) -> Result<(), Reply> {
    let Value::Object(delta) = value else {
        return Err(Reply::bad_request("`servers` must be an object"));
    };
    for (name, server) in delta {
        match server {
            Value::Null => {
                servers.remove(name);
            }
            Value::Object(patch) => merge_patch(object_at(servers, name), patch),
            _ => {
                return Err(Reply::bad_request(format!(
                    "server `{name}` must be an object or null"
                )))
            }
        }
    }
    Ok(())
}

/// `doc[key]`, or `null` when absent (`Map`'s own indexing panics instead).
pub(super) fn field<'d>(doc: &'d Object, key: &str) -> &'d Value {
    const NULL: &Value = &Value::Null;
    doc.get(key).unwrap_or(NULL)
}

#[cfg(test)]
mod tests;
