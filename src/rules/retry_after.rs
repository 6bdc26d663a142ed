//! Parsing the `Retry-After` response header (RFC 9110 §10.2.3).
//!
//! Pure parsing, no I/O. The header is either delay-seconds (`120`) or an
//! HTTP-date in any of its three forms (IMF-fixdate, obsolete RFC 850,
//! asctime); dates are read by the [`httpdate`] crate.
//!
//! Where implementations disagree, this crate follows RFC 9110:
//!
//! | input | reading |
//! |---|---|
//! | `120`, ` 120 ` (surrounding whitespace is not part of a field value) | 120 s |
//! | `0` | zero: retry now |
//! | `99999999999999999999` (more digits than fit in `u64` seconds) | the largest delay; the retry layer's cap decides what to do with it |
//! | `-1`, `+5`, `1.5`, `120abc`, empty | malformed: absent |
//! | any of the three HTTP-date forms, case-sensitive, literal `GMT` | the date |
//! | a date in the past | zero |
//! | an impossible date (`32 Dec`, wrong weekday, year before 1970) | malformed: absent |
//! | several `Retry-After` field lines | the first one, as [`http::HeaderMap::get`] reads it |
//!
//! Malformed values never panic and never become a delay: they are absent.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderValue;
//! use tower_mpsd::rules::retry_after::RetryAfter;
//!
//! let v = HeaderValue::from_static("120");
//! assert_eq!(RetryAfter::parse(&v), Some(RetryAfter::Delay(Duration::from_secs(120))));
//!
//! let v = HeaderValue::from_static("Fri, 31 Dec 1999 23:59:59 GMT");
//! let now = httpdate::parse_http_date("Fri, 31 Dec 1999 23:59:57 GMT").unwrap();
//! assert_eq!(RetryAfter::parse(&v).unwrap().delay_from(now), Duration::from_secs(2));
//!
//! assert_eq!(RetryAfter::parse(&HeaderValue::from_static("-1")), None);
//! ```

use std::time::{Duration, SystemTime};

use http::{header::RETRY_AFTER, HeaderMap, HeaderValue};

/// The longest hold any layer takes a hint at, whatever the server (or
/// Redis) says: a cooldown, a learned pacing hold, a shared slot. Enormous
/// hints must not overflow the clock or close an endpoint for the life of
/// the process; a request that cannot wait that long is refused at once.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(24 * 60 * 60);

/// A parsed `Retry-After` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delay-seconds: retry after this long.
    Delay(Duration),
    /// An HTTP-date: retry at this wall-clock time.
    At(SystemTime),
}

impl RetryAfter {
    /// Parses one header value; `None` when it is malformed.
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        Self::parse_str(value.to_str().ok()?)
    }

    /// Parses the text of one header value; `None` when it is malformed.
    pub fn parse_str(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // All digits: only overflow can fail, and a huge delay saturates.
            let secs = value.parse().unwrap_or(u64::MAX);
            return Some(Self::Delay(Duration::from_secs(secs)));
        }
        httpdate::parse_http_date(value).ok().map(Self::At)
    }

    /// Reads the first `Retry-After` field of `headers`, if well-formed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers.get(RETRY_AFTER).and_then(Self::parse)
    }

    /// How long to wait from `now`; a date in the past means zero.
    pub fn delay_from(self, now: SystemTime) -> Duration {
        match self {
            Self::Delay(d) => d,
            Self::At(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }
}

/// How long `headers` ask the client to wait, from the wall clock's `now`:
/// `None` when there is no well-formed `Retry-After`.
pub fn delay(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    RetryAfter::from_headers(headers).map(|r| r.delay_from(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<u64> {
        let now = httpdate::parse_http_date("Fri, 31 Dec 1999 23:59:57 GMT").unwrap();
        RetryAfter::parse_str(s).map(|r| r.delay_from(now).as_secs())
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(secs("0"), Some(0));
        assert_eq!(secs("120"), Some(120));
        assert_eq!(secs(" 120\t"), Some(120));
        assert_eq!(secs("00120"), Some(120));
        assert_eq!(secs("99999999999"), Some(99_999_999_999));
        assert_eq!(secs("99999999999999999999999"), Some(u64::MAX));
    }

    #[test]
    fn dates_in_all_three_forms() {
        assert_eq!(secs("Fri, 31 Dec 1999 23:59:59 GMT"), Some(2));
        assert_eq!(secs("Friday, 31-Dec-99 23:59:59 GMT"), Some(2));
        assert_eq!(secs("Fri Dec 31 23:59:59 1999"), Some(2));
        assert_eq!(secs("Fri, 31 Dec 1999 23:00:00 GMT"), Some(0));
    }

    #[test]
    fn malformed_is_absent() {
        for s in [
            "",
            " ",
            "-1",
            "+5",
            "1.5",
            "120abc",
            "1 2",
            "badbadbad",
            "Fri, 32 Dec 1999 23:59:59 GMT",
            "Fri, 31 Dec 1999 23:59:59 UTC",
            "fri, 31 dec 1999 23:59:59 gmt",
            "Sun Nov 10 08:00:00 1000",
        ] {
            assert_eq!(secs(s), None, "{s:?}");
        }
        let opaque = HeaderValue::from_bytes(b"12\xff").unwrap();
        assert_eq!(RetryAfter::parse(&opaque), None);
    }

    #[test]
    fn first_field_line_wins() {
        let mut headers = HeaderMap::new();
        headers.append(RETRY_AFTER, HeaderValue::from_static("2"));
        headers.append(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            delay(&headers, SystemTime::UNIX_EPOCH),
            Some(Duration::from_secs(2))
        );
        assert_eq!(delay(&HeaderMap::new(), SystemTime::UNIX_EPOCH), None);
    }
}
