//! Handles: `/handles`, `/handles/{id}`, `/handles/{id}/session` and
//! `POST /handles/query`.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::members::TITLE_ID;
use super::merge::field;
use super::reply::parse_object;
use super::time::rfc3339;
use super::{session_ref, Key, Object, Reply, Request, Store, Stored};
use crate::route::SessionPath;

/// How long an invite handle lives: its `expiration` is its creation time
/// plus this (a choice: MPSD's docs do not give the figure).
pub(crate) const INVITE_LIFETIME: Duration = Duration::from_secs(60 * 60);

impl Store {
    pub(super) fn on_handles(&mut self, req: &Request<'_>) -> Reply {
        match req.method.as_str() {
            "POST" => self.create_handle(req),
            _ => Reply::not_allowed("POST"),
        }
    }

    pub(super) fn on_handle(&mut self, id: &str, req: &Request<'_>) -> Reply {
        match req.method.as_str() {
            "GET" => match self.handles.get(id) {
                Some(handle) => Reply::json(StatusCode::OK, handle),
                None => Reply::not_found("handle not found"),
            },
            "DELETE" => match self.handles.remove(id) {
                Some(_) => Reply::empty(StatusCode::NO_CONTENT),
                None => Reply::not_found("handle not found"),
            },
            _ => Reply::not_allowed("GET, DELETE"),
        }
    }

    /// The session a handle points at, read and written as through the
    /// session's own URI (GET: 200/304, 204 when the session is gone; PUT:
    /// the same merge and preconditions), with a `Content-Location` naming
    /// that URI on every answer once the handle is found.
    pub(super) fn on_handle_session(&mut self, id: &str, req: &Request<'_>) -> Reply {
        if !matches!(req.method.as_str(), "GET" | "PUT") {
            return Reply::not_allowed("GET, PUT");
        }
        let Some((scid, template, name)) = self
            .handles
            .get(id)
            .and_then(|handle| session_ref(handle.get("sessionRef")))
            .map(|(s, t, n)| (s.to_owned(), t.to_owned(), n.to_owned()))
        else {
            return Reply::not_found("handle not found");
        };
        let path = SessionPath {
            scid: &scid,
            template: &template,
            name: &name,
        };
        let mut reply = self.on_session(path, req);
        reply.content_location = Some(
            format!("/serviceconfigs/{scid}/sessionTemplates/{template}/sessions/{name}").into(),
        );
        reply
    }

    /// 201 with the handle and `Location: /handles/{id}`. Every handle
    /// carries `ownerXuid` (the caller), `createTime` and `titleId`; an
    /// invite also `invitedXuid` (required), `inviteAttributes` (as sent,
    /// default `{}`), `senderXuid` (the caller) and `expiration`; a
    /// transfer `originSessionRef` (required); a search `searchAttributes`
    /// (as sent, default `{}`).
    fn create_handle(&mut self, req: &Request<'_>) -> Reply {
        let request = match parse_object(req.body) {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        let Some(kind) = request.get("type").and_then(Value::as_str) else {
            return Reply::bad_request("a handle needs a string `type`");
        };
        let Some((scid, template, name)) = session_ref(request.get("sessionRef")) else {
            return Reply::bad_request(
                "a handle needs `sessionRef` with `scid`, `templateName` and `name`",
            );
        };
        if !self.knows(template) || !self.sessions.contains_key(&Key::new(scid, template, name)) {
            return Reply::not_found("session not found");
        }
        let id = self.next_guid();
        let mut handle = json!({
            "id": id,
            "type": kind,
            "version": 1,
            "sessionRef": {"scid": scid, "templateName": template, "name": name},
            "ownerXuid": req.user,
            "createTime": rfc3339(req.now),
            "titleId": TITLE_ID,
        });
        let by_kind = match kind {
            "invite" => invite_fields(&request, req),
            "transfer" => transfer_fields(&request),
            "search" => search_fields(&request),
            _ => Ok(Vec::new()),
        };
        match by_kind {
            Ok(fields) => fields
                .into_iter()
                .for_each(|(name, value)| handle[name] = value),
            Err(reply) => return reply,
        }
        self.handles.insert(id.clone(), handle.clone());
        Reply {
            location: Some(format!("/handles/{id}").into()),
            ..Reply::json(StatusCode::CREATED, &handle)
        }
    }

    /// `POST /handles/query?include=relatedInfo,customProperties,roleInfo`.
    /// The body's `type`, `scid` and `owners.xuids` filter the handles;
    /// anything else in it (`owners.people`: the simulator has no social
    /// graph) is ignored, and so is an empty body.
    pub(super) fn on_handle_query(&self, req: &Request<'_>) -> Reply {
        if req.method != Method::POST {
            return Reply::not_allowed("POST");
        }
        let filter = match Filter::parse(req.body) {
            Ok(filter) => filter,
            Err(reply) => return reply,
        };
        let include = Include::parse(req.query.unwrap_or_default());
        let results: Vec<Value> = self
            .handles
            .values()
            .filter(|handle| filter.admits(handle))
            .map(|handle| self.with_included(handle, include))
            .collect();
        Reply::json(StatusCode::OK, &json!({ "results": results }))
    }

    /// A query result: the handle, and what `include` asked for from its
    /// session (nothing when the session is gone).
    fn with_included(&self, handle: &Value, include: Include) -> Value {
        let mut result = handle.clone();
        let stored = session_ref(handle.get("sessionRef"))
            .and_then(|(s, t, n)| self.sessions.get(&Key::new(s, t, n)));
        let (Some(stored), Value::Object(out)) = (stored, &mut result) else {
            return result;
        };
        if include.related_info {
            out.insert("relatedInfo".into(), related_info(stored));
        }
        if include.custom_properties {
            let custom = stored.doc.get("properties").and_then(|p| p.get("custom"));
            out.insert(
                "customProperties".into(),
                custom.cloned().unwrap_or(json!({})),
            );
        }
        if include.role_info {
            let role_types = stored.doc.get("roleTypes").cloned().unwrap_or(json!({}));
            out.insert("roleInfo".into(), json!({ "roleTypes": role_types }));
        }
        result
    }
}

/// What a handle query reports of its session. Unset fields take MPSD's
/// defaults: `visibility` "open", `joinRestriction` "none", `closed` false,
/// `maxMembersCount` 100.
fn related_info(stored: &Stored) -> Value {
    let doc: &Object = &stored.doc;
    let constant = |key: &str| field(doc, "constants").pointer(&format!("/system/{key}"));
    let property = |key: &str| field(doc, "properties").pointer(&format!("/system/{key}"));
    json!({
        "visibility": constant("visibility").cloned().unwrap_or(json!("open")),
        "joinRestriction": property("joinRestriction").cloned().unwrap_or(json!("none")),
        "closed": property("closed").cloned().unwrap_or(json!(false)),
        "maxMembersCount": constant("maxMembersCount").cloned().unwrap_or(json!(100)),
        "membersCount": field(doc, "membersInfo").get("count").cloned().unwrap_or(json!(0)),
    })
}

/// The filters of a handle query's body.
#[derive(Debug, Default)]
struct Filter {
    kind: Option<String>,
    scid: Option<String>,
    owners: Option<Vec<String>>,
}

impl Filter {
    fn parse(body: &[u8]) -> Result<Self, Reply> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let body = parse_object(body)?;
        let text = |key: &str| match body.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Reply::bad_request(format!("`{key}` must be a string"))),
        };
        let owners = match body.get("owners").and_then(|o| o.get("xuids")) {
            None => None,
            Some(Value::Array(xuids)) if xuids.iter().all(Value::is_string) => Some(
                xuids
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(_) => return Err(Reply::bad_request("`owners.xuids` must be strings")),
        };
        Ok(Self {
            kind: text("type")?,
            scid: text("scid")?,
            owners,
        })
    }

    fn admits(&self, handle: &Value) -> bool {
        let is = |key: &str, want: &Option<String>| {
            want.as_deref().map_or(true, |want| {
                handle.pointer(key).and_then(Value::as_str) == Some(want)
            })
        };
        let owner = handle.get("ownerXuid").and_then(Value::as_str);
        is("/type", &self.kind)
            && is("/sessionRef/scid", &self.scid)
            && self.owners.as_ref().map_or(true, |owners| {
                owners.iter().any(|o| Some(o.as_str()) == owner)
            })
    }
}

/// `include=relatedInfo,customProperties,roleInfo` (names matched without
/// regard to case; the comma may be sent as `%2C`).
#[derive(Debug, Clone, Copy, Default)]
struct Include {
    related_info: bool,
    custom_properties: bool,
    role_info: bool,
}

impl Include {
    fn parse(query: &str) -> Self {
        let mut include = Self::default();
        let values = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(key, _)| key.eq_ignore_ascii_case("include"))
            .flat_map(|(_, value)| {
                value
                    .split(',')
                    .flat_map(|v| v.split("%2C").flat_map(|v| v.split("%2c")))
            });
        for value in values {
            match value.to_ascii_lowercase().as_str() {
                "relatedinfo" => include.related_info = true,
                "customproperties" => include.custom_properties = true,
                "roleinfo" => include.role_info = true,
                _ => {}
            }
        }
        include
    }
}

/// The fields a handle of one type adds, or the 400 for a body without
/// what that type needs.
type KindFields = Result<Vec<(&'static str, Value)>, Reply>;

/// An invite: `invitedXuid` (required), `inviteAttributes` (an object, as
/// sent, default `{}`), `senderXuid` (the caller) and `expiration`.
fn invite_fields(request: &Object, req: &Request<'_>) -> KindFields {
    let Some(invited) = request.get("invitedXuid").and_then(Value::as_str) else {
        return Err(Reply::bad_request(
            "an invite handle needs a string `invitedXuid`",
        ));
    };
    Ok(vec![
        ("invitedXuid", invited.into()),
        (
            "inviteAttributes",
            object_or_empty(request, "inviteAttributes")?,
        ),
        ("senderXuid", req.user.into()),
        ("expiration", rfc3339(req.now + INVITE_LIFETIME).into()),
    ])
}

/// A transfer (a lobby's members moved to a game session, `sessionRef`):
/// `originSessionRef`, the session they come from, is required, as
/// Microsoft's SDK always sends it. *Choice:* that session need not exist
/// any more (its members may all have left for the game).
fn transfer_fields(request: &Object) -> KindFields {
    let Some((scid, template, name)) = session_ref(request.get("originSessionRef")) else {
        return Err(Reply::bad_request(
            "a transfer handle needs `originSessionRef` with `scid`, `templateName` and `name`",
        ));
    };
    let origin = json!({"scid": scid, "templateName": template, "name": name});
    Ok(vec![("originSessionRef", origin)])
}

/// A search handle: `searchAttributes` (an object, as sent, default
/// `{}`; MPSD's has `tags`, `strings` and `numbers`, kept as they come).
fn search_fields(request: &Object) -> KindFields {
    Ok(vec![(
        "searchAttributes",
        object_or_empty(request, "searchAttributes")?,
    )])
}

/// The object at `name` in `request`, `{}` when absent, 400 when it is
/// not an object.
fn object_or_empty(request: &Object, name: &str) -> Result<Value, Reply> {
    match request.get(name) {
        None => Ok(json!({})),
        Some(value @ Value::Object(_)) => Ok(value.clone()),
        Some(_) => Err(Reply::bad_request(format!("`{name}` must be an object"))),
    }
}

#[cfg(test)]
mod tests;
