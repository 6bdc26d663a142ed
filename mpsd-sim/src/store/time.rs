//! RFC 3339 timestamps, as MPSD writes them (`2016-09-19T23:53:40.9167342Z`:
//! UTC, seven fractional digits).
//!
//! Written by hand from the civil-from-days algorithm rather than adding a
//! date crate: the simulator needs one format, in one direction.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as RFC 3339 in UTC; times before 1970 print as the epoch.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:07}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_nanos() / 100,
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> String {
        rfc3339(UNIX_EPOCH + Duration::new(secs, nanos))
    }

    #[test]
    fn formats_utc_with_seven_fractional_digits() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.0000000Z");
        // The corpus's own session: 2016-09-19T23:53:40.9167342Z.
        assert_eq!(
            at(1_474_329_220, 916_734_200),
            "2016-09-19T23:53:40.9167342Z"
        );
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.0000000Z");
        assert_eq!(
            at(4_102_444_799, 999_999_999),
            "2099-12-31T23:59:59.9999999Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.0000000Z"
        );
    }
}
