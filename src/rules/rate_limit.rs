//! The JSON body of a 429 answer: which fine-grained rate limit was hit.
//!
//! Pure parsing, no I/O. The body is documented as
//! `{"version":1,"currentRequests":13,"maxRequests":10,"periodInSeconds":120,"limitType":"Rate"}`
//! but can be missing or malformed, so it only ever informs: nothing in this
//! crate depends on it. Each field is read on its own; a field that is
//! missing or of the wrong type is `None` while the others still count.
//!
//! # Example
//!
//! ```
//! use tower_mpsd::rules::rate_limit::{LimitType, RateLimitInfo};
//!
//! let body = br#"{"version":1,"currentRequests":13,"maxRequests":10,"periodInSeconds":120,"limitType":"rate"}"#;
//! let info = RateLimitInfo::parse(body).unwrap();
//! assert_eq!(info.max_requests, Some(10));
//! assert_eq!(info.limit_type, Some(LimitType::Rate));
//! assert_eq!(RateLimitInfo::parse(b"<html>"), None);
//! ```

use std::time::Duration;

use serde_json::Value;

/// The kind of limit a 429 reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitType {
    /// Too many requests in a window (`"Rate"` or `"rate"`).
    Rate,
    /// Too many requests in flight (`"concurrency"`).
    Concurrency,
    /// A value this crate does not know.
    Other,
}

/// The fields of a 429 body, each `None` when absent or malformed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RateLimitInfo {
    /// `version`.
    pub version: Option<u64>,
    /// `currentRequests`: requests counted in the window.
    pub current_requests: Option<u64>,
    /// `maxRequests`: the limit of the window.
    pub max_requests: Option<u64>,
    /// `periodInSeconds`: the window's length.
    pub period_in_seconds: Option<u64>,
    /// `limitType`.
    pub limit_type: Option<LimitType>,
}

impl RateLimitInfo {
    /// Parses a 429 body; `None` unless it is a JSON object with at least
    /// one known field.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let Value::Object(map) = serde_json::from_slice(body).ok()? else {
            return None;
        };
        let number = |key: &str| map.get(key).and_then(Value::as_u64);
        let info = Self {
            version: number("version"),
            current_requests: number("currentRequests"),
            max_requests: number("maxRequests"),
            period_in_seconds: number("periodInSeconds"),
            limit_type: map
                .get("limitType")
                .and_then(Value::as_str)
                .map(LimitType::parse),
        };
        (info != Self::default()).then_some(info)
    }

    /// How long the window stays full, when the body says it is full
    /// (`currentRequests` at least `maxRequests`): at most its period, the
    /// time its oldest counted request takes to leave it. `None` when a
    /// field is missing or the window has room.
    pub fn full_for(&self) -> Option<Duration> {
        match (
            self.current_requests,
            self.max_requests,
            self.period_in_seconds,
        ) {
            (Some(current), Some(max), Some(period)) if current >= max => {
                Some(Duration::from_secs(period))
            }
            _ => None,
        }
    }
}

impl LimitType {
    fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("rate") {
            Self::Rate
        } else if s.eq_ignore_ascii_case("concurrency") {
            Self::Concurrency
        } else {
            Self::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_body() {
        let info = RateLimitInfo::parse(
            br#"{"version":1,"currentRequests":13,"maxRequests":10,"periodInSeconds":120,"limitType":"Rate"}"#,
        )
        .unwrap();
        assert_eq!(
            info,
            RateLimitInfo {
                version: Some(1),
                current_requests: Some(13),
                max_requests: Some(10),
                period_in_seconds: Some(120),
                limit_type: Some(LimitType::Rate),
            }
        );
    }

    #[test]
    fn fields_stand_alone() {
        let info = RateLimitInfo::parse(
            br#"{"maxRequests":"ten","periodInSeconds":-1,"limitType":"concurrency"}"#,
        )
        .unwrap();
        assert_eq!(info.max_requests, None);
        assert_eq!(info.period_in_seconds, None);
        assert_eq!(info.limit_type, Some(LimitType::Concurrency));
        let other = RateLimitInfo::parse(br#"{"limitType":"weird"}"#).unwrap();
        assert_eq!(other.limit_type, Some(LimitType::Other));
    }

    #[test]
    fn a_full_window_is_full_for_its_period() {
        let info = |body: &[u8]| RateLimitInfo::parse(body).unwrap().full_for();
        let full = br#"{"currentRequests":31,"maxRequests":30,"periodInSeconds":15}"#;
        assert_eq!(info(full), Some(Duration::from_secs(15)));
        let at_max = br#"{"currentRequests":30,"maxRequests":30,"periodInSeconds":15}"#;
        assert_eq!(info(at_max), Some(Duration::from_secs(15)));
        let room = br#"{"currentRequests":29,"maxRequests":30,"periodInSeconds":15}"#;
        assert_eq!(info(room), None);
        assert_eq!(info(br#"{"currentRequests":31,"maxRequests":30}"#), None);
    }

    #[test]
    fn garbage_is_none() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"{\"x\":1}",
            b"\xff\xfe",
            b"{\"version\":",
        ] {
            assert_eq!(RateLimitInfo::parse(body), None);
        }
    }
}
