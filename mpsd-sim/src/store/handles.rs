//! Handles: `/handles`, `/handles/{id}`, `/handles/{id}/session` and
//! `POST /handles/query`.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::reply::parse_object;
use super::{session_ref, Key, Reply, Request, Store};

impl Store {
    pub(super) fn on_handles(&mut self, req: &Request<'_>) -> Reply {
        match req.method.as_str() {
            "POST" => self.create_handle(req.body),
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

    pub(super) fn on_handle_session(&self, id: &str, req: &Request<'_>) -> Reply {
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

    pub(super) fn on_handle_query(&self, req: &Request<'_>) -> Reply {
        if req.method != Method::POST {
            return Reply::not_allowed("POST");
        }
        let results: Vec<&Value> = self.handles.values().collect();
        Reply::json(StatusCode::OK, &json!({ "results": results }))
    }
}

#[cfg(test)]
mod tests;
