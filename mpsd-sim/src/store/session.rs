//! A session's own URI: GET, PUT (merge, preconditions, commit) and
//! the write path the element URIs share.

use http::StatusCode;
use serde_json::{Map, Value};

use super::members::Writer;
use super::merge::{field, merge};
use super::reply::parse_object;
use super::time::rfc3339;
use super::{Key, Mode, Object, Reply, Request, Store, Stored};
use crate::route::SessionPath;

impl Store {
    pub(super) fn on_session(&mut self, id: SessionPath<'_>, req: &Request<'_>) -> Reply {
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

    /// Checks access and preconditions, merges `delta` into the session (or a
    /// new one) and commits the result.
    pub(super) fn write(
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
            None => self.new_doc(req.now),
        };
        let now = rfc3339(req.now);
        let writer = Writer {
            user: req.user,
            now: &now,
            device_token: &self.next_hex(),
        };
        if let Err(reply) = merge(&mut doc, delta, &writer) {
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
}

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

#[cfg(test)]
mod tests;
