//! Property tests: the parsers and the classifier are total on arbitrary
//! input, `Retry-After` round-trips in both forms, and every planned wait
//! lies within the server's hint and the cap, and before the deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use proptest::prelude::*;
use tower_mpsd::classify::{classify_at, Call};
use tower_mpsd::rules::backoff::{Backoff, Cause, Plan, TooLong};
use tower_mpsd::rules::rate_limit::RateLimitInfo;
use tower_mpsd::rules::retry_after::RetryAfter;
use tower_mpsd::rules::target::Target;

fn header_map() -> impl Strategy<Value = HeaderMap> {
    let name = prop_oneof![
        Just("retry-after"),
        Just("content-type"),
        Just("content-length"),
        Just("etag"),
        Just("x-other"),
    ];
    let value = prop::collection::vec(any::<u8>(), 0..40);
    prop::collection::vec((name, value), 0..8).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        map
    })
}

proptest! {
    #[test]
    fn retry_after_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), now in any::<u64>()) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let now = UNIX_EPOCH + Duration::from_secs(now % (1 << 40));
            if let Some(parsed) = RetryAfter::parse(&value) {
                let _ = parsed.delay_from(now);
            }
        }
    }

    #[test]
    fn delay_seconds_round_trip(secs in any::<u64>()) {
        let value = HeaderValue::from_str(&secs.to_string()).unwrap();
        prop_assert_eq!(RetryAfter::parse(&value), Some(RetryAfter::Delay(Duration::from_secs(secs))));
    }

    #[test]
    fn http_dates_round_trip(secs in 0u64..253_402_300_799, ahead in 0u64..100_000) {
        let at = UNIX_EPOCH + Duration::from_secs(secs);
        let value = HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap();
        prop_assert_eq!(RetryAfter::parse(&value), Some(RetryAfter::At(at)));
        let earlier = at - Duration::from_secs(ahead.min(secs));
        prop_assert_eq!(RetryAfter::At(at).delay_from(earlier), Duration::from_secs(ahead.min(secs)));
        prop_assert_eq!(RetryAfter::At(at).delay_from(at + Duration::from_secs(ahead)), Duration::ZERO);
    }

    #[test]
    fn classifier_is_total(
        method in prop::sample::select(vec![Method::GET, Method::PUT, Method::DELETE, Method::POST, Method::PATCH]),
        path in "(/[a-zA-Z0-9_.-]{0,12}){0,9}",
        status in 100u16..1000,
        headers in header_map(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let call = Call::new(method, Target::parse(&path).kind());
        let status = StatusCode::from_u16(status).unwrap();
        let outcome = classify_at(&call, status, &headers, SystemTime::UNIX_EPOCH).with_body(&body);
        prop_assert_eq!(outcome.status(), status);
        let _ = (outcome.body_kind(&call), outcome.retryable(), outcome.to_string());
    }

    #[test]
    fn rate_limit_body_never_panics(body in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = RateLimitInfo::parse(&body);
    }

    #[test]
    fn target_parse_never_panics(path in "\\PC{0,80}") {
        let _ = Target::parse(&path).kind();
    }
}

proptest! {
    #[test]
    fn every_wait_is_within_hint_and_cap_and_never_past_the_deadline(
        cause in prop::sample::select(vec![Cause::Overloaded, Cause::Throttled, Cause::Transient]),
        hint_ms in prop::option::of(0u64..200_000),
        failures in 0u32..100,
        r in 0.0f64..1.0,
        left_ms in 0u64..100_000,
    ) {
        let backoff = Backoff::default();
        let hint = hint_ms.map(Duration::from_millis);
        let left = Duration::from_millis(left_ms);
        match backoff.plan(cause, hint, failures, r, left) {
            Plan::Wait(wait) => {
                prop_assert!(wait <= left, "past the deadline");
                if let Some(hint) = hint {
                    prop_assert!(wait >= hint, "earlier than the server asked");
                    prop_assert!(hint <= backoff.max_wait);
                }
                prop_assert!(wait <= backoff.max_wait, "over the cap");
            }
            Plan::GiveUp { wait, why: TooLong::OverCap } => {
                prop_assert!(hint.is_some_and(|h| h > backoff.max_wait));
                prop_assert!(wait >= hint.unwrap());
            }
            Plan::GiveUp { wait, why: TooLong::PastDeadline } => {
                prop_assert!(wait > left);
            }
            Plan::GiveUp { .. } => prop_assert!(false, "an unknown reason"),
        }
    }
}
