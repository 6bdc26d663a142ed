//! The session store: sessions, handles, delta merging, ETags and
//! preconditions, as pure functions of a request that return a typed
//! [`Reply`]. No I/O, no clock: the server feeds it and sends its replies.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::target::{Element, Member, SessionId, Target};

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

    fn of(id: SessionId<'_>) -> Self {
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
        match Target::parse(req.path) {
            Target::Session(id) => self.on_session(id, req),
            Target::Element(id, element) => self.on_element(id, element, req),
            Target::Handle => self.on_handle(req),
            Target::Query => self.on_query(req),
            Target::Batch => on_batch(req),
            Target::Matchmaking => on_matchmaking(req),
            _ => Reply::not_found("no such resource"),
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

    fn on_session(&mut self, id: SessionId<'_>, req: &Request<'_>) -> Reply {
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

    fn on_element(&mut self, id: SessionId<'_>, element: Element<'_>, req: &Request<'_>) -> Reply {
        if !self.knows(id.template) {
            return Reply::not_found("unknown session template");
        }
        let key = Key::of(id);
        match (req.method.as_str(), element) {
            ("GET", _) => self.get_element(&key, element, req.user),
            ("PUT", Element::Member(Member::Index(_))) => Reply::not_allowed("GET, DELETE"),
            ("PUT", _) => match element_delta(element, req.body) {
                Ok(delta) => self.write(&key, id.template, req, &delta, Mode::PutElement),
                Err(reply) => reply,
            },
            ("DELETE", Element::Properties) => Reply::not_allowed("GET, PUT"),
            ("DELETE", _) => self.delete_element(&key, id.template, element, req),
            (_, Element::Member(Member::Index(_))) => Reply::not_allowed("GET, DELETE"),
            (_, Element::Properties) => Reply::not_allowed("GET, PUT"),
            (_, _) => Reply::not_allowed("GET, PUT, DELETE"),
        }
    }

    fn get_element(&self, key: &Key, element: Element<'_>, user: &str) -> Reply {
        let Some(stored) = self.sessions.get(key) else {
            return Reply::not_found("session not found");
        };
        let doc = &stored.doc;
        let found = match element {
            Element::Member(Member::Me) => {
                member_key(doc, user).and_then(|k| field(doc, "members").get(k))
            }
            Element::Member(Member::Index(i)) => field(doc, "members").get(i.to_string()),
            Element::Server(name) => field(doc, "servers").get(name),
            Element::Properties => doc.get("properties"),
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
        element: Element<'_>,
        req: &Request<'_>,
    ) -> Reply {
        let delta = match element {
            Element::Member(Member::Me) => json!({"members": {"me": null}}),
            Element::Server(name) => json!({"servers": {name: null}}),
            Element::Member(Member::Index(i)) => match self.sessions.get(key) {
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
            Element::Properties => return Reply::not_allowed("GET, PUT"),
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

    fn on_handle(&mut self, req: &Request<'_>) -> Reply {
        let segments = segments(req.path);
        match (req.method.as_str(), &segments[1..]) {
            ("POST", []) => self.create_handle(req.body),
            ("GET", [id]) => match self.handles.get(*id) {
                Some(handle) => Reply::json(StatusCode::OK, handle),
                None => Reply::not_found("handle not found"),
            },
            ("DELETE", [id]) => match self.handles.remove(*id) {
                Some(_) => Reply::empty(StatusCode::NO_CONTENT),
                None => Reply::not_found("handle not found"),
            },
            ("GET", [id, s]) if s.eq_ignore_ascii_case("session") => self.handle_session(id),
            (_, []) => Reply::not_allowed("POST"),
            (_, [_]) => Reply::not_allowed("GET, DELETE"),
            (_, [_, s]) if s.eq_ignore_ascii_case("session") => Reply::not_allowed("GET"),
            _ => Reply::not_found("no such resource"),
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

    fn on_query(&self, req: &Request<'_>) -> Reply {
        let segments = segments(req.path);
        if segments[0].eq_ignore_ascii_case("handles") {
            return match (req.method.as_str(), segments.len()) {
                ("POST", 2) => {
                    let results: Vec<&Value> = self.handles.values().collect();
                    Reply::json(StatusCode::OK, &json!({ "results": results }))
                }
                (_, 2) => Reply::not_allowed("POST"),
                _ => Reply::not_found("no such resource"),
            };
        }
        if req.method != Method::GET {
            return Reply::not_allowed("GET");
        }
        // `/serviceconfigs/{scid}/sessions` or `.../sessionTemplates/{t}/sessions`.
        let scid = segments[1];
        let template = (segments.len() == 5).then(|| segments[3]);
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
fn on_matchmaking(req: &Request<'_>) -> Reply {
    let hopper = segments(req.path).len() == 4;
    match (req.method.as_str(), hopper) {
        ("POST", true) => Reply {
            content_type: Some(TEXT),
            ..Reply::empty(StatusCode::ACCEPTED)
        },
        (_, true) => Reply::not_allowed("POST"),
        (_, false) => Reply::not_found("ticket not found"),
    }
}

fn segments(path: &str) -> Vec<&str> {
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        segments.push("");
    }
    segments
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
fn element_delta(element: Element<'_>, body: &[u8]) -> Result<Object, Reply> {
    let body = parse_json(body)?;
    let delta = match element {
        Element::Member(_) => json!({"members": {"me": body}}),
        Element::Server(name) => json!({"servers": {name: body}}),
        Element::Properties => json!({"properties": body}),
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
