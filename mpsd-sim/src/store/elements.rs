//! A session's elements: `members/me`, `members/{index}`,
//! `servers/{name}` and `properties`.

use http::StatusCode;
use serde_json::json;

use super::members::{member_key, xuid};
use super::merge::field;
use super::reply::parse_json;
use super::{Key, Mode, Object, Reply, Request, Store};
use crate::route::{Part, SessionPath};

impl Store {
    pub(super) fn on_element(
        &mut self,
        id: SessionPath<'_>,
        element: Part<'_>,
        req: &Request<'_>,
    ) -> Reply {
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

#[cfg(test)]
mod tests;
