//! The session store: sessions, handles, delta merging, ETags and
//! preconditions, as pure functions of a request that return a typed
//! [`Reply`]. No I/O and no clock of its own: the server passes each
//! request's wall-clock time in, and sends the replies.

mod elements;
mod filled;
mod handles;
mod hoppers;
mod members;
mod merge;
mod reply;
mod session;
#[cfg(test)]
mod testing;
mod time;

use std::collections::BTreeMap;
use std::time::SystemTime;

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::route::{route, Route, SessionPath};

use members::member_key;
pub(crate) use reply::{Reply, JSON, TEXT};

type Object = Map<String, Value>;

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
    /// When the request arrived, by the wall clock (the server's start
    /// time plus the `tokio::time` elapsed since, so paused-time tests see
    /// virtual time here too).
    pub(crate) now: SystemTime,
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
    /// Tickets submitted per (SCID, hopper); none ever completes.
    tickets: BTreeMap<(String, String), u64>,
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
            tickets: BTreeMap::new(),
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
            Route::Hopper { scid, hopper } => self.on_hopper(scid, hopper, req),
            Route::HopperStats { scid, hopper } => self.on_hopper_stats(scid, hopper, req),
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

    /// A GUID-shaped id (MPSD's handle ids and branches look like
    /// `cc74e398-3fcd-4819-9e31-853640347dd6`).
    fn next_guid(&mut self) -> String {
        let hex = self.next_hex();
        let part = |range: std::ops::Range<usize>| &hex[range];
        format!(
            "{}-{}-{}-{}-{}",
            part(0..8),
            part(8..12),
            part(12..16),
            part(16..20),
            part(20..32)
        )
    }

    /// An empty session, created at `now`: `startTime` and `branch` (a
    /// GUID fixed at creation) are set here and never change.
    fn new_doc(&mut self, now: SystemTime) -> Object {
        let doc = json!({
            "contractVersion": 107,
            "correlationId": self.next_hex(),
            "branch": self.next_guid(),
            "startTime": time::rfc3339(now),
            "changeNumber": 0,
            "constants": {"system": {}, "custom": {}},
            "properties": {"system": {}, "custom": {}},
            "members": {},
            "membersInfo": {"first": 0, "next": 0, "count": 0, "accepted": 0, "active": 0},
            "servers": {},
        });
        match doc {
            Value::Object(doc) => doc,
            _ => Object::new(),
        }
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::testing::*;

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
        assert_eq!(ticket.status, StatusCode::CREATED);
        let ticket = body(&ticket);
        assert_eq!(ticket["waitTime"], 30);
        let id = ticket["ticketId"].as_str().unwrap();
        assert_eq!((id.len(), id.matches('-').count()), (36, 4), "a GUID: {id}");
        let again = body(&call(
            &mut s,
            "POST",
            "/serviceconfigs/scid/hoppers/h",
            "a",
            "{}",
        ));
        assert_ne!(again["ticketId"], id, "every ticket has its own id");
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
