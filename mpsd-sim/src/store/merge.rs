//! Merging a session delta: constants set once, properties, servers and
//! role types as JSON merge-patch, members through
//! [`members`](super::members), then the fields the service fills
//! ([`filled`](super::filled)).

use serde_json::Value;

use super::filled::fill;
use super::members::{merge_members, Writer};
use super::{Object, Reply};

/// Merges a session delta into `doc`, as the writer's caller, then fills
/// in what the service derives from the result.
pub(super) fn merge(doc: &mut Object, delta: &Object, writer: &Writer<'_>) -> Result<(), Reply> {
    for (key, value) in delta {
        match key.as_str() {
            "constants" => set_constants(object_at(doc, "constants"), value, "constants", false)?,
            "properties" => patch_bags(object_at(doc, "properties"), value, "properties", false)?,
            "members" => merge_members(doc, value, writer)?,
            "servers" => merge_objects(object_at(doc, "servers"), value, "servers")?,
            "roleTypes" => {
                merge_objects(object_at(doc, "roleTypes"), value, "roleTypes")?;
                if field(doc, "roleTypes")
                    .as_object()
                    .is_some_and(Object::is_empty)
                {
                    doc.remove("roleTypes");
                }
            }
            other => {
                return Err(Reply::bad_request(format!(
                    "unexpected key `{other}` in the session delta"
                )))
            }
        }
    }
    fill(doc, writer.now);
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
/// `system` is always an object; `custom` may be any value when
/// `any_custom` (a member's bags), else it is an object too.
fn bags<'v>(
    value: &'v Value,
    what: &str,
    any_custom: bool,
) -> Result<Vec<(&'v str, &'v Value)>, Reply> {
    let Value::Object(object) = value else {
        return Err(Reply::bad_request(format!("`{what}` must be an object")));
    };
    object
        .iter()
        .map(|(bag, value)| {
            let fits = match bag.as_str() {
                "system" => value.is_object(),
                "custom" => any_custom || value.is_object(),
                _ => false,
            };
            if fits {
                Ok((bag.as_str(), value))
            } else {
                Err(Reply::bad_request(format!(
                    "`{what}` may hold only `system` and `custom` objects"
                )))
            }
        })
        .collect()
}

/// Constants are set once: the same value again is fine, another is a 409.
/// Objects are set key by key; a non-object `custom` (a member's) is one
/// value, which may replace only the empty default `{}`.
pub(super) fn set_constants(
    target: &mut Object,
    value: &Value,
    what: &str,
    any_custom: bool,
) -> Result<(), Reply> {
    for (bag, patch) in bags(value, what, any_custom)? {
        let slot = target
            .entry(bag)
            .or_insert_with(|| Value::Object(Object::new()));
        match (&mut *slot, patch) {
            (Value::Object(old), Value::Object(patch)) => set_keys_once(old, patch, what, bag)?,
            (old, patch) if old == patch => {}
            (Value::Object(old), patch) if old.is_empty() => *slot = patch.clone(),
            _ => {
                return Err(Reply::conflict(format!(
                    "constant `{what}.{bag}` is already set"
                )))
            }
        }
    }
    Ok(())
}

fn set_keys_once(target: &mut Object, patch: &Object, what: &str, bag: &str) -> Result<(), Reply> {
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
    Ok(())
}

/// Properties: each bag merges as JSON merge-patch. A non-object `custom`
/// (a member's) replaces the bag; `null` empties it (a choice: the bag
/// stays, as `{}`).
pub(super) fn patch_bags(
    target: &mut Object,
    value: &Value,
    what: &str,
    any_custom: bool,
) -> Result<(), Reply> {
    for (bag, patch) in bags(value, what, any_custom)? {
        match patch {
            Value::Object(patch) => merge_patch(object_at(target, bag), patch),
            Value::Null => {
                target.insert(bag.to_owned(), Value::Object(Object::new()));
            }
            other => {
                target.insert(bag.to_owned(), other.clone());
            }
        }
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

/// A map of named objects (`servers`, `roleTypes`): each entry an object
/// merged as merge-patch, or `null` to remove it.
fn merge_objects(target: &mut Object, value: &Value, what: &str) -> Result<(), Reply> {
    let Value::Object(delta) = value else {
        return Err(Reply::bad_request(format!("`{what}` must be an object")));
    };
    for (name, entry) in delta {
        match entry {
            Value::Null => {
                target.remove(name);
            }
            Value::Object(patch) => merge_patch(object_at(target, name), patch),
            _ => {
                return Err(Reply::bad_request(format!(
                    "`{what}.{name}` must be an object or null"
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
