//! The session store: sessions, handles, delta merging, ETags and
//! preconditions, as pure functions of a request that return a typed
//! [`Reply`]. No I/O, no clock: the server feeds it and sends its replies.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::route::{route, Part, Route, SessionPath};

pub(crate) const JSON: &str = "application/json";
pub(crate) const TEXT: &str = "text/plain";

type Object = Map<String, Value>;

/// What the store answers: everything the server needs to build a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<&'static str>,
    pub(crate) body: Bytes,
    pub(crate) etag: Option<String>,
    /// The `Allow` header of a 405.
    pub(crate) allow: Option<&'static str>,
}

impl Reply {
    pub(crate) fn empty(status: StatusCode) -> Self {
        Self {
            status,
            content_type: None,
            body: Bytes::new(),
            etag: None,
            allow: None,
        }
    }

    pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            content_type: Some(TEXT),
            body: Bytes::from(message.into()),
            ..Self::empty(status)
        }
    }

    pub(crate) fn json(status: StatusCode, value: &Value) -> Self {
        Self {
            content_type: Some(JSON),
            body: Bytes::from(value.to_string()),
            ..Self::empty(status)
        }
    }

    fn with_etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.to_owned());
        self
    }

    fn not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::text(StatusCode::METHOD_NOT_ALLOWED, format!("allowed: {allow}"))
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::text(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: &str) -> Self {
        Self::text(StatusCode::NOT_FOUND, message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::text(StatusCode::CONFLICT, message)
    }
}

/// One request as the store sees it; the caller is already authenticated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a Method,
    /// The URI path, without the query.
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    /// The caller's user hash.
    pub(crate) user: &'a str,
    pub(crate) if_match: Option<&'a str>,
    pub(crate) if_none_match: Option<&'a str>,
    pub(crate) body: &'a [u8],
}

impl Request<'_> {
    fn nocommit(&self) -> bool {
        let query = self.query.unwrap_or_default();
        query
            .split('&')
            .any(|pair| pair.eq_ignore_ascii_case("nocommit=true"))
    }
}

/// Sessions are keyed by SCID, lowercased template and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    scid: String,
    template: String,
    name: String,
}

impl Key {
    fn new(scid: &str, template: &str, name: &str) -> Self {
        Self {
            scid: scid.to_owned(),
            template: template.to_ascii_lowercase(),
            name: name.to_owned(),
        }
    }

    fn of(id: SessionPath<'_>) -> Self {
        Self::new(id.scid, id.template, id.name)
    }
}

#[derive(Debug, Clone)]
struct Stored {
    doc: Object,
    etag: String,
    /// The template's name as the creating request spelled it, for queries.
    template: String,
}

impl Stored {
    /// The whole session with its ETag, as every session-carrying reply has it.
    fn reply(&self, status: StatusCode) -> Reply {
        Reply::json(status, &Value::Object(self.doc.clone())).with_etag(&self.etag)
    }

    /// The sim's read-only marker: `constants.system.writeRestriction ==
    /// "members"` lets only members write.
    fn read_only_for(&self, user: &str) -> bool {
        let restriction = self
            .doc
            .get("constants")
            .and_then(|c| c.pointer("/system/writeRestriction"));
        restriction == Some(&json!("members")) && member_key(&self.doc, user).is_none()
    }
}

/// How a write ends: a session PUT answers 201/200, an element PUT 200,
/// a DELETE always 204.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    PutSession,
    PutElement,
    Delete,
}

/// The simulator's state: sessions and handles.
#[derive(Debug)]
pub(crate) struct Store {
    /// Known template names, lowercased.
    templates: Vec<String>,
    sessions: BTreeMap<Key, Stored>,
    handles: BTreeMap<String, Value>,
    /// One counter for ETags, correlation ids and handle ids, so an ETag is
    /// never reused, even after a session is deleted and re-created.
    counter: u64,
}

impl Store {
    pub(crate) fn new<I, S>(templates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            templates: templates
                .into_iter()
                .map(|t| t.as_ref().to_ascii_lowercase())
                .collect(),
            sessions: BTreeMap::new(),
            handles: BTreeMap::new(),
            counter: 0,
        }
    }

    /// The current document of a session, for assertions.
    pub(crate) fn session(&self, scid: &str, template: &str, name: &str) -> Option<Value> {
        let stored = self.sessions.get(&Key::new(scid, template, name))?;
        Some(Value::Object(stored.doc.clone()))
    }

    /// Answers one request.
    pub(crate) fn handle(&mut self, req: &Request<'_>) -> Reply {
        match route(req.path) {
            Route::Session(id) => self.on_session(id, req),
            Route::Part(id, part) => self.on_element(id, part, req),
            Route::Handles => self.on_handles(req),
            Route::Handle(id) => self.on_handle(id, req),
            Route::HandleSession(id) => self.on_handle_session(id, req),
            Route::HandleQuery => self.on_handle_query(req),
            Route::SessionQuery { scid, template } => self.on_session_query(scid, template, req),
            Route::Batch => on_batch(req),
            Route::Hopper => on_hopper(req),
            Route::HopperStats => on_hopper_stats(req),
            Route::Ticket => Reply::not_found("ticket not found"),
            Route::Unknown => Reply::not_found("no such resource"),
        }
    }

    fn knows(&self, template: &str) -> bool {
        self.templates
            .iter()
            .any(|t| t.eq_ignore_ascii_case(template))
    }

    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        splitmix64(self.counter)
    }

    fn next_etag(&mut self, change: u64) -> String {
        format!("\"{:016x}{change:016x}\"", self.next_id())
    }

    fn next_hex(&mut self) -> String {
        let (a, b) = (self.next_id(), self.next_id());
        format!("{a:016x}{b:016x}")
    }

    fn new_doc(&mut self) -> Object {
        let doc = json!({
            "contractVersion": 107,
            "correlationId": self.next_hex(),
            "changeNumber": 0,
            "constants": {"system": {}, "custom": {}},
            "properties": {"system": {}, "custom": {}},
            "members": {},
            "membersInfo": {"first": 0, "next": 0, "count": 0},
            "servers": {},
        });
        match doc {
            Value::Object(doc) => doc,
            _ => Object::new(),
        }
    }

    fn on_session(&mut self, id: SessionPath<'_>, req: &Request<'_>) -> Reply {
        if !self.knows(id.template) {
            return Reply::not_found("unknown session template");
        }
        let key = Key::of(id);
        match req.method.as_str() {
            "GET" => self.get_session(&key, req),
            "PUT" => match parse_object(req.body) {
                Ok(delta) => self.write(&key, id.template, req, &delta, Mode::PutSession),
                Err(reply) => reply,
            },
            _ => Reply::not_allowed("GET, PUT"),
        }
    }

    fn get_session(&self, key: &Key, req: &Request<'_>) -> Reply {
        let Some(stored) = self.sessions.get(key) else {
            return Reply::empty(StatusCode::NO_CONTENT);
        };
        if req
            .if_none_match
            .is_some_and(|h| etag_matches(h, &stored.etag))
        {
            return Reply::empty(StatusCode::NOT_MODIFIED).with_etag(&stored.etag);
        }
        stored.reply(StatusCode::OK)
    }

    fn on_element(&mut self, id: SessionPath<'_>, element: Part<'_>, req: &Request<'_>) -> Reply {
        if !self.knows(id.template) {
            return Reply::not_found("unknown session template");
        }
        let key = Key::of(id);
        match (req.method.as_str(), element) {
            ("GET", _) => self.get_element(&key, element, req.user),
            ("PUT", Part::Member(_)) => Reply::not_allowed("GET, DELETE"),
            ("PUT", _) => match element_delta(element, req.body) {
                Ok(delta) => self.write(&key, id.template, req, &delta, Mode::PutElement),
                Err(reply) => reply,
            },
            ("DELETE", Part::Properties) => Reply::not_allowed("GET, PUT"),
            ("DELETE", _) => self.delete_element(&key, id.template, element, req),
            (_, Part::Member(_)) => Reply::not_allowed("GET, DELETE"),
            (_, Part::Properties) => Reply::not_allowed("GET, PUT"),
            (_, _) => Reply::not_allowed("GET, PUT, DELETE"),
        }
    }

    fn get_element(&self, key: &Key, element: Part<'_>, user: &str) -> Reply {
        let Some(stored) = self.sessions.get(key) else {
            return Reply::not_found("session not found");
        };
        let doc = &stored.doc;
        let found = match element {
            Part::Me => member_key(doc, user).and_then(|k| field(doc, "members").get(k)),
            Part::Member(i) => field(doc, "members").get(i.to_string()),
            Part::Server(name) => field(doc, "servers").get(name),
            Part::Properties => doc.get("properties"),
        };
        match found {
            Some(value) => Reply::json(StatusCode::OK, value).with_etag(&stored.etag),
            None => Reply::empty(StatusCode::NO_CONTENT),
        }
    }

    fn delete_element(
        &mut self,
        key: &Key,
        template: &str,
        element: Part<'_>,
        req: &Request<'_>,
    ) -> Reply {
        let delta = match element {
            Part::Me => json!({"members": {"me": null}}),
            Part::Server(name) => json!({"servers": {name: null}}),
            Part::Member(i) => match self.sessions.get(key) {
                None => return Reply::not_found("session not found"),
                Some(stored) => match field(&stored.doc, "members").get(i.to_string()) {
                    None => json!({}),
                    Some(member) if xuid(member) == Some(req.user) => {
                        json!({"members": {"me": null}})
                    }
                    Some(_) => {
                        return Reply::text(
                            StatusCode::FORBIDDEN,
                            "only the caller's own member can be removed",
                        )
                    }
                },
            },
            Part::Properties => return Reply::not_allowed("GET, PUT"),
        };
        let delta = delta.as_object().cloned().unwrap_or_default();
        self.write(key, template, req, &delta, Mode::Delete)
    }

    /// Checks access and preconditions, merges `delta` into the session (or a
    /// new one) and commits the result.
    fn write(
        &mut self,
        key: &Key,
        template: &str,
        req: &Request<'_>,
        delta: &Object,
        mode: Mode,
    ) -> Reply {
        let current = self.sessions.get(key).cloned();
        match &current {
            Some(stored) if stored.read_only_for(req.user) => {
                return stored.reply(StatusCode::FORBIDDEN)
            }
            None if mode != Mode::PutSession => return Reply::not_found("session not found"),
            _ => {}
        }
        if let Err(reply) = precondition(current.as_ref(), req.if_match, req.if_none_match) {
            return reply;
        }
        let mut doc = match &current {
            Some(stored) => stored.doc.clone(),
            None => self.new_doc(),
        };
        if let Err(reply) = merge(&mut doc, delta, req.user) {
            return reply;
        }
        self.commit(key, template, current, doc, req.nocommit(), mode)
    }

    fn commit(
        &mut self,
        key: &Key,
        template: &str,
        current: Option<Stored>,
        mut doc: Object,
        nocommit: bool,
        mode: Mode,
    ) -> Reply {
        // A DELETE of an element that is not there changes nothing: no new ETag.
        if mode == Mode::Delete && current.as_ref().map_or(true, |s| s.doc == doc) {
            return Reply::empty(StatusCode::NO_CONTENT);
        }
        // MPSD deletes a session whose last member left (or never stores it).
        if field(&doc, "members")
            .as_object()
            .map_or(true, Map::is_empty)
        {
            if !nocommit {
                self.sessions.remove(key);
            }
            return Reply::empty(StatusCode::NO_CONTENT);
        }
        let change = field(&doc, "changeNumber").as_u64().unwrap_or(0) + 1;
        doc.insert("changeNumber".into(), change.into());
        if nocommit {
            let etag = match &current {
                Some(stored) => stored.etag.clone(),
                None => self.next_etag(change),
            };
            return Reply::json(StatusCode::OK, &Value::Object(doc)).with_etag(&etag);
        }
        let stored = Stored {
            doc,
            etag: self.next_etag(change),
            template: current
                .as_ref()
                .map_or_else(|| template.to_owned(), |s| s.template.clone()),
        };
        let status = match (mode, current.is_some()) {
            (Mode::Delete, _) => return self.keep(key, stored, StatusCode::NO_CONTENT),
            (Mode::PutSession, false) => StatusCode::CREATED,
            _ => StatusCode::OK,
        };
        self.keep(key, stored, status)
    }

    fn keep(&mut self, key: &Key, stored: Stored, status: StatusCode) -> Reply {
        let reply = if status == StatusCode::NO_CONTENT {
            Reply::empty(status)
        } else {
            stored.reply(status)
        };
        self.sessions.insert(key.clone(), stored);
        reply
    }

    fn on_handles(&mut self, req: &Request<'_>) -> Reply {
        match req.method.as_str() {
            "POST" => self.create_handle(req.body),
            _ => Reply::not_allowed("POST"),
        }
    }

    fn on_handle(&mut self, id: &str, req: &Request<'_>) -> Reply {
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

    fn on_handle_session(&self, id: &str, req: &Request<'_>) -> Reply {
        match req.method.as_str() {
            "GET" => self.handle_session(id),
            _ => Reply::not_allowed("GET"),
        }
    }

    fn create_handle(&mut self, body: &[u8]) -> Reply {
        let handle = match parse_object(body) {
            Ok(handle) => handle,
            Err(reply) => return reply,
        };
        let Some(kind) = handle.get("type").and_then(Value::as_str) else {
            return Reply::bad_request("a handle needs a string `type`");
        };
        let Some((scid, template, name)) = session_ref(handle.get("sessionRef")) else {
            return Reply::bad_request(
                "a handle needs `sessionRef` with `scid`, `templateName` and `name`",
            );
        };
        if !self.knows(template) || !self.sessions.contains_key(&Key::new(scid, template, name)) {
            return Reply::not_found("session not found");
        }
        let id = self.next_hex();
        let handle = json!({
            "id": id,
            "type": kind,
            "version": 1,
            "sessionRef": {"scid": scid, "templateName": template, "name": name},
        });
        self.handles.insert(id, handle.clone());
        Reply::json(StatusCode::CREATED, &handle)
    }

    fn handle_session(&self, id: &str) -> Reply {
        let stored = self
            .handles
            .get(id)
            .and_then(|handle| session_ref(handle.get("sessionRef")))
            .and_then(|(scid, template, name)| self.sessions.get(&Key::new(scid, template, name)));
        match stored {
            Some(stored) => stored.reply(StatusCode::OK),
            None => Reply::not_found("handle or session not found"),
        }
    }

    fn on_handle_query(&self, req: &Request<'_>) -> Reply {
        if req.method != Method::POST {
            return Reply::not_allowed("POST");
        }
        let results: Vec<&Value> = self.handles.values().collect();
        Reply::json(StatusCode::OK, &json!({ "results": results }))
    }

    fn on_session_query(&self, scid: &str, template: Option<&str>, req: &Request<'_>) -> Reply {
        if req.method != Method::GET {
            return Reply::not_allowed("GET");
        }
        if template.is_some_and(|t| !self.knows(t)) {
            return Reply::not_found("unknown session template");
        }
        let results: Vec<Value> = self
            .sessions
            .iter()
            .filter(|(key, _)| key.scid == scid && template.map_or(true, |t| key.template.eq_ignore_ascii_case(t)))
            .map(|(key, stored)| {
                json!({"sessionRef": {"scid": key.scid, "templateName": stored.template, "name": key.name}})
            })
            .collect();
        Reply::json(StatusCode::OK, &json!({ "results": results }))
    }
}

fn on_batch(req: &Request<'_>) -> Reply {
    match req.method.as_str() {
        "POST" => Reply::json(StatusCode::OK, &json!({"results": {}})),
        _ => Reply::not_allowed("POST"),
    }
}

/// Submitting a matchmaking ticket is MPSD's one asynchronous operation:
/// 202, the ticket "completes later". The sim tracks no tickets.
fn on_hopper(req: &Request<'_>) -> Reply {
    match req.method.as_str() {
        "POST" => Reply {
            content_type: Some(TEXT),
            ..Reply::empty(StatusCode::ACCEPTED)
        },
        _ => Reply::not_allowed("POST"),
    }
}

/// A hopper's statistics. The sim matches nobody, so its hoppers are
/// always empty: no one waiting, no estimate.
fn on_hopper_stats(req: &Request<'_>) -> Reply {
    match req.method.as_str() {
        "GET" => Reply::json(
            StatusCode::OK,
            &json!({"estimatedWaitTime": 0, "population": 0}),
        ),
        _ => Reply::not_allowed("GET"),
    }
}

fn session_ref(value: Option<&Value>) -> Option<(&str, &str, &str)> {
    let value = value?;
    let get = |name: &str| value.get(name).and_then(Value::as_str);
    Some((get("scid")?, get("templateName")?, get("name")?))
}

fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether an `If-Match`/`If-None-Match` value (`*` or a list of ETags)
/// names `etag`. Comparison is exact: ETags are opaque quoted strings.
fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag)
}

/// The write preconditions. 412 is empty when there is no session to
/// return, and carries the whole session when an `If-Match` lost a race.
fn precondition(
    current: Option<&Stored>,
    if_match: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<(), Reply> {
    if let Some(if_match) = if_match {
        let Some(stored) = current else {
            return Err(Reply::empty(StatusCode::PRECONDITION_FAILED));
        };
        if !etag_matches(if_match, &stored.etag) {
            return Err(stored.reply(StatusCode::PRECONDITION_FAILED));
        }
    }
    match (if_none_match, current) {
        (Some(header), Some(stored)) if etag_matches(header, &stored.etag) => {
            Err(Reply::empty(StatusCode::PRECONDITION_FAILED))
        }
        _ => Ok(()),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body).map_err(|e| Reply::bad_request(format!("malformed JSON: {e}")))
}

fn parse_object(body: &[u8]) -> Result<Object, Reply> {
    match parse_json(body)? {
        Value::Object(object) => Ok(object),
        _ => Err(Reply::bad_request("the body must be a JSON object")),
    }
}

/// An element PUT is the session delta that names only that element.
fn element_delta(element: Part<'_>, body: &[u8]) -> Result<Object, Reply> {
    let body = parse_json(body)?;
    let delta = match element {
        Part::Me | Part::Member(_) => json!({"members": {"me": body}}),
        Part::Server(name) => json!({"servers": {name: body}}),
        Part::Properties => json!({"properties": body}),
    };
    Ok(delta.as_object().cloned().unwrap_or_default())
}

/// Merges a session delta into `doc`, as the caller `user`.
fn merge(doc: &mut Object, delta: &Object, user: &str) -> Result<(), Reply> {
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
fn object_at<'m>(map: &'m mut Object, key: &str) -> &'m mut Object {
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
fn bags<'v>(value: &'v Value, what: &str) -> Result<Vec<(&'v str, &'v Object)>, Reply> {
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
fn set_constants(target: &mut Object, value: &Value, what: &str) -> Result<(), Reply> {
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

fn patch_bags(target: &mut Object, value: &Value, what: &str) -> Result<(), Reply> {
    for (bag, patch) in bags(value, what)? {
        merge_patch(object_at(target, bag), patch);
    }
    Ok(())
}

/// RFC 7396 JSON merge-patch: `null` removes, objects merge, the rest replaces.
fn merge_patch(target: &mut Object, patch: &Object) {
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

fn merge_servers(servers: &mut Object, value: &Value) -> Result<(), Reply> {
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

fn merge_members(doc: &mut Object, value: &Value, user: &str) -> Result<(), Reply> {
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

/// `doc[key]`, or `null` when absent (`Map`'s own indexing panics instead).
fn field<'d>(doc: &'d Object, key: &str) -> &'d Value {
    const NULL: &Value = &Value::Null;
    doc.get(key).unwrap_or(NULL)
}

fn xuid(member: &Value) -> Option<&str> {
    member
        .pointer("/constants/system/xuid")
        .and_then(Value::as_str)
}

/// The key (index) of the caller's member entry, if the caller is a member.
fn member_key(doc: &Object, user: &str) -> Option<String> {
    let members = doc.get("members")?.as_object()?;
    members
        .iter()
        .find(|(_, member)| xuid(member) == Some(user))
        .map(|(key, _)| key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "/serviceconfigs/scid/sessionTemplates/LobbySession/sessions/s1";
    const JOIN: &str = r#"{"members":{"me":{}}}"#;

    fn store() -> Store {
        Store::new(["LobbySession", "GameSession"])
    }

    /// One request with optional `If-Match` / `If-None-Match`.
    fn call_if(
        store: &mut Store,
        method: &str,
        path: &str,
        user: &str,
        (if_match, if_none_match): (Option<&str>, Option<&str>),
        body: &str,
    ) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        store.handle(&Request {
            method: &method,
            path,
            query,
            user,
            if_match,
            if_none_match,
            body: body.as_bytes(),
        })
    }

    fn call(store: &mut Store, method: &str, path: &str, user: &str, body: &str) -> Reply {
        call_if(store, method, path, user, (None, None), body)
    }

    fn body(reply: &Reply) -> Value {
        assert_eq!(reply.content_type, Some(JSON), "{reply:?}");
        serde_json::from_slice(&reply.body).unwrap()
    }

    fn etag(reply: &Reply) -> String {
        reply.etag.clone().expect("an ETag")
    }

    fn assert_empty(reply: &Reply, status: u16) {
        assert_eq!(reply.status.as_u16(), status, "{reply:?}");
        assert!(reply.body.is_empty(), "{reply:?}");
        assert_eq!(reply.content_type, None, "{reply:?}");
    }

    fn assert_text(reply: &Reply, status: u16) {
        assert_eq!(reply.status.as_u16(), status, "{reply:?}");
        assert_eq!(reply.content_type, Some(TEXT), "{reply:?}");
        assert!(!reply.body.is_empty(), "{reply:?}");
    }

    /// A session with `a` as member 0 and `b` as member 1.
    fn two_members() -> Store {
        let mut s = store();
        assert_eq!(call(&mut s, "PUT", S, "a", JOIN).status, 201);
        assert_eq!(call(&mut s, "PUT", S, "b", JOIN).status, 200);
        s
    }

    #[test]
    fn create_read_update() {
        let mut s = store();
        assert_empty(&call(&mut s, "GET", S, "a", ""), 204);
        let created = call(&mut s, "PUT", S, "a", JOIN);
        assert_eq!(created.status, StatusCode::CREATED);
        let doc = body(&created);
        assert_eq!(doc["contractVersion"], 107);
        assert_eq!(doc["changeNumber"], 1);
        let correlation = doc["correlationId"].as_str().unwrap();
        assert_eq!(correlation.len(), 32);
        assert!(correlation.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(doc["members"]["0"]["constants"]["system"]["xuid"], "a");
        assert_eq!(
            doc["members"]["0"]["properties"],
            json!({"system": {}, "custom": {}})
        );
        assert_eq!(
            doc["membersInfo"],
            json!({"first": 0, "next": 1, "count": 1})
        );
        assert_eq!(doc["servers"], json!({}));
        let tag = etag(&created);
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34,
            "{tag}"
        );

        let read = call(&mut s, "GET", S, "b", "");
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!((body(&read), etag(&read)), (doc, tag.clone()));

        let updated = call(
            &mut s,
            "PUT",
            S,
            "a",
            r#"{"properties":{"custom":{"x":1}}}"#,
        );
        assert_eq!(updated.status, StatusCode::OK);
        assert_eq!(body(&updated)["changeNumber"], 2);
        assert_ne!(etag(&updated), tag);
        assert_eq!(
            s.session("scid", "lobbysession", "s1").unwrap(),
            body(&updated)
        );
    }

    #[test]
    fn template_is_case_insensitive_and_unknown_ones_are_404() {
        let mut s = store();
        let lower = S.replace("LobbySession", "lobbysession");
        assert_eq!(call(&mut s, "PUT", &lower, "a", JOIN).status, 201);
        let upper = S.replace("LobbySession", "LOBBYSESSION");
        assert_eq!(call(&mut s, "GET", &upper, "a", "").status, 200);
        let other = S.replace("LobbySession", "Nope");
        assert_text(&call(&mut s, "GET", &other, "a", ""), 404);
        assert_text(&call(&mut s, "PUT", &other, "a", JOIN), 404);
        assert_text(
            &call(&mut s, "GET", &format!("{other}/members/me"), "a", ""),
            404,
        );
        assert_text(&call(&mut s, "GET", "/nothing/here", "a", ""), 404);
        assert_text(&call(&mut s, "GET", &format!("{S}/unknown"), "a", ""), 404);
    }

    #[test]
    fn a_create_without_members_stores_nothing() {
        let mut s = store();
        assert_empty(&call(&mut s, "PUT", S, "a", "{}"), 204);
        let props = r#"{"properties":{"custom":{"x":1}}}"#;
        assert_empty(&call(&mut s, "PUT", S, "a", props), 204);
        assert_eq!(s.session("scid", "LobbySession", "s1"), None);
        assert_empty(&call(&mut s, "GET", S, "a", ""), 204);
    }

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
            r#"{"members":{"me":{"roles":{}}}}"#,
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

    #[test]
    fn etags_are_unique_across_sessions_and_recreation() {
        let mut s = store();
        let mut seen = std::collections::HashSet::new();
        for round in 0..20 {
            let path = format!("{S}{}", round % 3);
            let created = call(&mut s, "PUT", &path, "a", JOIN);
            assert!(seen.insert(etag(&created)));
            call(&mut s, "PUT", &path, "a", r#"{"members":{"me":null}}"#);
        }
    }

    #[test]
    fn nocommit_returns_the_merge_without_storing_it() {
        let mut s = store();
        let preview = call(&mut s, "PUT", &format!("{S}?nocommit=true"), "a", JOIN);
        assert_eq!(preview.status, StatusCode::OK);
        assert_eq!(
            body(&preview)["members"]["0"]["constants"]["system"]["xuid"],
            "a"
        );
        assert_eq!(s.session("scid", "LobbySession", "s1"), None);

        let created = call(&mut s, "PUT", S, "a", JOIN);
        let patch = r#"{"properties":{"custom":{"x":1}}}"#;
        let preview = call(&mut s, "PUT", &format!("{S}?a=b&NoCommit=TRUE"), "a", patch);
        assert_eq!(preview.status, StatusCode::OK);
        assert_eq!(body(&preview)["properties"]["custom"]["x"], 1);
        assert_eq!(body(&preview)["changeNumber"], 2);
        assert_eq!(etag(&preview), etag(&created));
        assert_eq!(
            Some(body(&created)),
            s.session("scid", "LobbySession", "s1")
        );
        // Leaving with nocommit deletes nothing.
        let leave = call(
            &mut s,
            "PUT",
            &format!("{S}?nocommit=true"),
            "a",
            r#"{"members":{"me":null}}"#,
        );
        assert_empty(&leave, 204);
        assert!(s.session("scid", "LobbySession", "s1").is_some());
    }

    #[test]
    fn get_with_if_none_match() {
        let mut s = store();
        let tag = etag(&call(&mut s, "PUT", S, "a", JOIN));
        let unchanged = call_if(&mut s, "GET", S, "a", (None, Some(&tag)), "");
        assert_empty(&unchanged, 304);
        assert_eq!(unchanged.etag.as_deref(), Some(tag.as_str()));
        let list = format!("\"other\", {tag}");
        assert_empty(
            &call_if(&mut s, "GET", S, "a", (None, Some(&list)), ""),
            304,
        );
        let stale = call_if(&mut s, "GET", S, "a", (None, Some("\"stale\"")), "");
        assert_eq!(stale.status, StatusCode::OK);
        assert_eq!(etag(&stale), tag);
    }

    #[test]
    fn put_preconditions() {
        let mut s = store();
        for if_match in ["*", "\"abc\""] {
            assert_empty(
                &call_if(&mut s, "PUT", S, "a", (Some(if_match), None), JOIN),
                412,
            );
        }
        let created = call_if(&mut s, "PUT", S, "a", (None, Some("*")), JOIN);
        assert_eq!(created.status, StatusCode::CREATED);
        let tag = etag(&created);
        assert_empty(
            &call_if(&mut s, "PUT", S, "a", (None, Some("*")), JOIN),
            412,
        );

        let updated = call_if(
            &mut s,
            "PUT",
            S,
            "a",
            (Some(&tag), None),
            r#"{"properties":{"custom":{"x":1}}}"#,
        );
        assert_eq!(updated.status, StatusCode::OK);
        // The old ETag lost the race: 412 with the whole current session.
        let lost = call_if(
            &mut s,
            "PUT",
            S,
            "a",
            (Some(&tag), None),
            r#"{"properties":{"custom":{"x":2}}}"#,
        );
        assert_eq!(lost.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(body(&lost), body(&updated));
        assert_eq!(etag(&lost), etag(&updated));
        assert_eq!(
            call_if(&mut s, "PUT", S, "a", (Some("*"), None), "{}").status,
            200
        );
    }

    #[test]
    fn read_only_sessions_refuse_non_members_with_the_session() {
        let mut s = store();
        let create =
            r#"{"members":{"me":{}},"constants":{"system":{"writeRestriction":"members"}}}"#;
        let tag = etag(&call(&mut s, "PUT", S, "a", create));
        for (method, path, body_text) in [
            ("PUT", S.to_owned(), JOIN),
            ("PUT", format!("{S}/members/me"), "{}"),
            ("PUT", format!("{S}/properties"), r#"{"custom":{}}"#),
            ("DELETE", format!("{S}/servers/x"), ""),
            ("DELETE", format!("{S}/members/me"), ""),
        ] {
            let refused = call(&mut s, method, &path, "b", body_text);
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{method} {path}");
            assert_eq!(
                body(&refused)["members"]["0"]["constants"]["system"]["xuid"],
                "a"
            );
            assert_eq!(etag(&refused), tag);
        }
        assert_eq!(call(&mut s, "GET", S, "b", "").status, 200);
        assert_eq!(
            call(
                &mut s,
                "PUT",
                S,
                "a",
                r#"{"properties":{"custom":{"x":1}}}"#
            )
            .status,
            200
        );
    }

    #[test]
    fn get_elements() {
        let mut s = store();
        for element in ["members/me", "members/0", "servers/game", "properties"] {
            assert_text(
                &call(&mut s, "GET", &format!("{S}/{element}"), "a", ""),
                404,
            );
        }
        let create =
            r#"{"members":{"me":{}},"servers":{"game":{"x":1}},"properties":{"custom":{"p":1}}}"#;
        let tag = etag(&call(&mut s, "PUT", S, "a", create));
        let me = call(&mut s, "GET", &format!("{S}/members/me"), "a", "");
        assert_eq!(body(&me)["constants"]["system"]["xuid"], "a");
        assert_eq!(etag(&me), tag);
        assert_eq!(
            body(&call(&mut s, "GET", &format!("{S}/members/0"), "b", "")),
            body(&me)
        );
        assert_empty(
            &call(&mut s, "GET", &format!("{S}/members/me"), "b", ""),
            204,
        );
        assert_empty(
            &call(&mut s, "GET", &format!("{S}/members/1"), "a", ""),
            204,
        );
        assert_eq!(
            body(&call(&mut s, "GET", &format!("{S}/servers/game"), "a", "")),
            json!({"x": 1})
        );
        assert_empty(
            &call(&mut s, "GET", &format!("{S}/servers/other"), "a", ""),
            204,
        );
        let props = body(&call(&mut s, "GET", &format!("{S}/properties"), "a", ""));
        assert_eq!(props, json!({"system": {}, "custom": {"p": 1}}));
    }

    #[test]
    fn put_elements() {
        let mut s = store();
        assert_text(
            &call(&mut s, "PUT", &format!("{S}/members/me"), "a", "{}"),
            404,
        );
        assert_eq!(call(&mut s, "PUT", S, "a", JOIN).status, 201);

        let joined = call(
            &mut s,
            "PUT",
            &format!("{S}/members/me"),
            "b",
            r#"{"properties":{"custom":{"r":1}}}"#,
        );
        assert_eq!(joined.status, StatusCode::OK);
        let doc = body(&joined);
        assert_eq!(doc["members"]["1"]["properties"]["custom"]["r"], 1);
        assert_eq!(doc["membersInfo"]["count"], 2);

        let props = call(
            &mut s,
            "PUT",
            &format!("{S}/properties"),
            "a",
            r#"{"custom":{"p":2}}"#,
        );
        assert_eq!(body(&props)["properties"]["custom"]["p"], 2);
        let server = call(
            &mut s,
            "PUT",
            &format!("{S}/servers/game"),
            "a",
            r#"{"x":1}"#,
        );
        assert_eq!(body(&server)["servers"]["game"]["x"], 1);
        assert_text(
            &call(
                &mut s,
                "PUT",
                &format!("{S}/properties"),
                "a",
                r#"{"other":{}}"#,
            ),
            400,
        );
        assert_text(
            &call(&mut s, "PUT", &format!("{S}/members/me"), "a", "nope"),
            400,
        );

        let index = call(&mut s, "PUT", &format!("{S}/members/0"), "a", "{}");
        assert_text(&index, 405);
        assert_eq!(index.allow, Some("GET, DELETE"));

        // An element PUT that lost a race gets the whole session.
        let stale = call_if(
            &mut s,
            "PUT",
            &format!("{S}/properties"),
            "a",
            (Some("\"old\""), None),
            "{}",
        );
        assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(body(&stale)["servers"]["game"]["x"], 1);
        assert_eq!(stale.etag, call(&mut s, "GET", S, "a", "").etag);

        call(&mut s, "PUT", &format!("{S}/members/me"), "a", "null");
        assert_empty(
            &call(&mut s, "PUT", &format!("{S}/members/me"), "b", "null"),
            204,
        );
        assert_eq!(s.session("scid", "LobbySession", "s1"), None);
    }

    #[test]
    fn delete_elements() {
        let mut s = store();
        assert_text(
            &call(&mut s, "DELETE", &format!("{S}/members/me"), "a", ""),
            404,
        );
        let mut s = two_members();
        call(&mut s, "PUT", S, "a", r#"{"servers":{"game":{}}}"#);
        let tag = etag(&call(&mut s, "GET", S, "a", ""));

        // Deleting what is not there: 204, and nothing changes.
        assert_empty(
            &call(&mut s, "DELETE", &format!("{S}/servers/none"), "a", ""),
            204,
        );
        assert_empty(
            &call(&mut s, "DELETE", &format!("{S}/members/7"), "a", ""),
            204,
        );
        assert_eq!(etag(&call(&mut s, "GET", S, "a", "")), tag);

        let stale = call_if(
            &mut s,
            "DELETE",
            &format!("{S}/servers/game"),
            "a",
            (Some("\"old\""), None),
            "",
        );
        assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
        assert_empty(
            &call_if(
                &mut s,
                "DELETE",
                &format!("{S}/servers/game"),
                "a",
                (Some(&tag), None),
                "",
            ),
            204,
        );
        let doc = s.session("scid", "LobbySession", "s1").unwrap();
        assert_eq!(doc["servers"], json!({}));

        assert_text(
            &call(&mut s, "DELETE", &format!("{S}/members/1"), "a", ""),
            403,
        );
        assert_empty(
            &call(&mut s, "DELETE", &format!("{S}/members/0"), "a", ""),
            204,
        );
        assert_empty(
            &call(&mut s, "DELETE", &format!("{S}/members/me"), "b", ""),
            204,
        );
        assert_eq!(s.session("scid", "LobbySession", "s1"), None);
    }

    #[test]
    fn wrong_verbs_are_405_with_allow() {
        let mut s = two_members();
        for (method, path, allow) in [
            ("DELETE", S.to_owned(), "GET, PUT"),
            ("POST", S.to_owned(), "GET, PUT"),
            ("PATCH", S.to_owned(), "GET, PUT"),
            ("POST", format!("{S}/members/me"), "GET, PUT, DELETE"),
            ("PATCH", format!("{S}/members/0"), "GET, DELETE"),
            ("DELETE", format!("{S}/properties"), "GET, PUT"),
            ("POST", format!("{S}/servers/x"), "GET, PUT, DELETE"),
            ("GET", "/handles".to_owned(), "POST"),
            ("PUT", "/handles/abc".to_owned(), "GET, DELETE"),
            ("GET", "/handles/query".to_owned(), "POST"),
            ("POST", "/serviceconfigs/scid/sessions".to_owned(), "GET"),
            ("GET", "/serviceconfigs/scid/batch".to_owned(), "POST"),
            ("GET", "/serviceconfigs/scid/hoppers/h".to_owned(), "POST"),
        ] {
            let reply = call(&mut s, method, &path, "a", "");
            assert_text(&reply, 405);
            assert_eq!(reply.allow, Some(allow), "{method} {path}");
        }
    }

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

    #[test]
    fn session_queries() {
        let mut s = store();
        call(&mut s, "PUT", S, "a", JOIN);
        let game = "/serviceconfigs/scid/sessiontemplates/gamesession/sessions/g1";
        call(&mut s, "PUT", game, "a", JOIN);
        call(
            &mut s,
            "PUT",
            "/serviceconfigs/other/sessionTemplates/GameSession/sessions/x",
            "a",
            JOIN,
        );

        let all = body(&call(
            &mut s,
            "GET",
            "/serviceconfigs/scid/sessions?xuid=a",
            "a",
            "",
        ));
        let names: Vec<&Value> = all["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["sessionRef"]["name"])
            .collect();
        assert_eq!(names, [&json!("g1"), &json!("s1")]);
        let lobby = body(&call(
            &mut s,
            "GET",
            "/serviceconfigs/scid/sessionTemplates/LOBBYSESSION/sessions",
            "a",
            "",
        ));
        assert_eq!(
            lobby["results"],
            json!([{"sessionRef": {"scid": "scid", "templateName": "LobbySession", "name": "s1"}}])
        );
        assert_text(
            &call(
                &mut s,
                "GET",
                "/serviceconfigs/scid/sessionTemplates/Nope/sessions",
                "a",
                "",
            ),
            404,
        );
    }

    #[test]
    fn batch_and_matchmaking() {
        let mut s = store();
        let batch = call(&mut s, "POST", "/serviceconfigs/scid/batch", "a", "{}");
        assert_eq!(body(&batch), json!({"results": {}}));
        let ticket = call(&mut s, "POST", "/serviceconfigs/scid/hoppers/h", "a", "{}");
        assert_eq!(ticket.status, StatusCode::ACCEPTED);
        assert_eq!(ticket.content_type, Some(TEXT));
        assert!(ticket.body.is_empty());
        assert_text(
            &call(
                &mut s,
                "GET",
                "/serviceconfigs/scid/hoppers/h/tickets/t",
                "a",
                "",
            ),
            404,
        );
    }
}
