//! What the store answers ([`Reply`]) and how it reads request bodies.

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::Object;

pub(crate) const JSON: &str = "application/json";
pub(crate) const TEXT: &str = "text/plain";

/// What the store answers: everything the server needs to build a response.
/// (Its strings are boxed `str`s, to keep `Result<_, Reply>` small.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<&'static str>,
    pub(crate) body: Bytes,
    pub(crate) etag: Option<Box<str>>,
    /// The `Allow` header of a 405.
    pub(crate) allow: Option<&'static str>,
    /// The `Content-Location` header: the session's own URI path, on
    /// answers through `/handles/{id}/session`.
    pub(crate) content_location: Option<Box<str>>,
    /// The `Location` header: a created handle's URI path.
    pub(crate) location: Option<Box<str>>,
}

impl Reply {
    pub(crate) fn empty(status: StatusCode) -> Self {
        Self {
            status,
            content_type: None,
            body: Bytes::new(),
            etag: None,
            allow: None,
            content_location: None,
            location: None,
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

    pub(super) fn with_etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.into());
        self
    }

    pub(super) fn not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::text(StatusCode::METHOD_NOT_ALLOWED, format!("allowed: {allow}"))
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::text(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn not_found(message: &str) -> Self {
        Self::text(StatusCode::NOT_FOUND, message)
    }

    pub(super) fn conflict(message: impl Into<String>) -> Self {
        Self::text(StatusCode::CONFLICT, message)
    }
}

pub(super) fn parse_json(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body).map_err(|e| Reply::bad_request(format!("malformed JSON: {e}")))
}

pub(super) fn parse_object(body: &[u8]) -> Result<Object, Reply> {
    match parse_json(body)? {
        Value::Object(object) => Ok(object),
        _ => Err(Reply::bad_request("the body must be a JSON object")),
    }
}
