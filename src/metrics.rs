//! Metrics of the layers, through the `metrics` crate's facade, with
//! the `metrics` feature: install any recorder (a Prometheus or
//! OpenTelemetry exporter) and the stack reports to it. Without the
//! feature the calls compile to nothing.
//!
//! Names follow OpenTelemetry's HTTP client semantic conventions where one
//! exists (`http.client.request.duration`, in seconds; the attributes
//! `http.request.method`, `http.response.status_code`, `server.address`,
//! `error.type`); the rest are `mpsd.client.*`. Durations are seconds, as
//! OpenTelemetry asks.
//!
//! | metric | kind | labels | what it counts |
//! |---|---|---|---|
//! | [`http.client.request.duration`](REQUEST_DURATION) | histogram, s | `http.request.method`, `server.address`, `http.response.status_code` or `error.type` | each send, from the moment it went to the client until its answer's head (or its error): what OpenTelemetry calls one HTTP request; a retry is another |
//! | [`mpsd.client.responses`](RESPONSES) | counter | `http.request.method`, `mpsd.status_class`, `mpsd.outcome` | each send's answer, by its status class (`2xx` … `5xx`, or `error` when the client failed) and its MPSD [`Outcome`] name (`session_changed`, `too_many_requests`, …, or `error`) |
//! | [`mpsd.client.logical.duration`](LOGICAL_DURATION) | histogram, s | `http.request.method`, `mpsd.status_class` | each logical request, from the call to its final answer or error, every retry and wait included |
//! | [`mpsd.client.logical.attempts`](LOGICAL_ATTEMPTS) | histogram | `http.request.method`, `mpsd.status_class` | the sends each logical request took |
//! | [`mpsd.client.retries`](RETRIES) | counter | `mpsd.cause` | retries sent, by why: `overloaded` (503), `throttled` (429), `transient` (408, 5xx, an error after which the request may have been sent), `unprocessed` (an HTTP/2 stream refused), `not_connected` |
//! | [`mpsd.client.refusals`](REFUSALS) | counter | `mpsd.refused_by` | requests refused before they were sent ([`Refused`](crate::error::Refused)), by `cooldown`, `pace` or `queue` |
//! | [`mpsd.client.cooldowns`](COOLDOWNS) | counter | `mpsd.cause` | cooldowns started (a 503 or 429 closing a key that was open), by `overloaded` or `throttled`; one that is extended is not counted again |
//! | [`mpsd.client.pace.waits`](PACE_WAITS) | counter | | requests that waited for a pace slot before they were sent |
//! | [`mpsd.client.rebases`](REBASES) | counter | `mpsd.rebase` | writes rebased, `before_sending` (the session board knew them stale) or `after_412` |
//! | [`mpsd.client.coalesced_reads`](COALESCED_READS) | counter | | GETs answered with another caller's answer, without a send of their own |
//! | [`mpsd.client.redis.fallbacks`](REDIS_FALLBACKS) | counter | | times a process fell back to its own state because Redis failed (`redis` feature) |
//!
//! No label holds a user hash, a session name, a path or a token: their
//! values are unbounded (one series each) and private. `server.address`
//! is the request's host, as bounded as the hosts a client talks to; a
//! method other than the standard ones is `_OTHER`, as OpenTelemetry asks.
//!
//! Where a logical request ends in an error the stack's [`LogicalLayer`](crate::logical::LogicalLayer)
//! sees (every [`MpsdLayer`](crate::MpsdLayer) has one), it is recorded with `mpsd.status_class` `error`.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "metrics")]
//! # {
//! // With `metrics-exporter-prometheus`, say:
//! // PrometheusBuilder::new().install()?;
//! tower_mpsd::metrics::describe();
//! # }
//! ```
//!
//! [`Outcome`]: crate::classify::Outcome

use std::time::Duration;

use http::uri::Authority;
use http::{Method, StatusCode};

use crate::classify::Outcome;
use crate::error::RefusedBy;
use crate::rules::backoff::Cause;

/// `http.client.request.duration`: each send, in seconds (OpenTelemetry).
pub const REQUEST_DURATION: &str = "http.client.request.duration";
/// `mpsd.client.responses`: each send's answer, by status class and outcome.
pub const RESPONSES: &str = "mpsd.client.responses";
/// `mpsd.client.logical.duration`: each logical request, in seconds.
pub const LOGICAL_DURATION: &str = "mpsd.client.logical.duration";
/// `mpsd.client.logical.attempts`: the sends of each logical request.
pub const LOGICAL_ATTEMPTS: &str = "mpsd.client.logical.attempts";
/// `mpsd.client.retries`: retries sent, by cause.
pub const RETRIES: &str = "mpsd.client.retries";
/// `mpsd.client.refusals`: requests refused unsent, by what refused them.
pub const REFUSALS: &str = "mpsd.client.refusals";
/// `mpsd.client.cooldowns`: cooldowns started, by cause.
pub const COOLDOWNS: &str = "mpsd.client.cooldowns";
/// `mpsd.client.pace.waits`: requests that waited for a pace slot.
pub const PACE_WAITS: &str = "mpsd.client.pace.waits";
/// `mpsd.client.rebases`: writes rebased, before sending or after a 412.
pub const REBASES: &str = "mpsd.client.rebases";
/// `mpsd.client.coalesced_reads`: GETs answered with another's answer.
pub const COALESCED_READS: &str = "mpsd.client.coalesced_reads";
/// `mpsd.client.redis.fallbacks`: falls back to a process's own state.
pub const REDIS_FALLBACKS: &str = "mpsd.client.redis.fallbacks";

/// Gives every metric its description and unit, for recorders that show
/// them (a Prometheus `# HELP` line). Call it once, after installing the
/// recorder; without the feature it does nothing.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{describe_counter, describe_histogram, Unit};
        describe_histogram!(
            REQUEST_DURATION,
            Unit::Seconds,
            "Duration of each HTTP send, until its answer's head"
        );
        describe_counter!(
            RESPONSES,
            "Answers to each send, by status class and MPSD outcome"
        );
        describe_histogram!(
            LOGICAL_DURATION,
            Unit::Seconds,
            "Duration of each logical request, retries and waits included"
        );
        describe_histogram!(
            LOGICAL_ATTEMPTS,
            Unit::Count,
            "Sends of each logical request"
        );
        describe_counter!(RETRIES, "Retries sent, by cause");
        describe_counter!(
            REFUSALS,
            "Requests refused before they were sent, by what refused them"
        );
        describe_counter!(COOLDOWNS, "Cooldowns started after a 503 or 429, by cause");
        describe_counter!(PACE_WAITS, "Requests that waited for a pace slot");
        describe_counter!(REBASES, "Writes rebased, before sending or after a 412");
        describe_counter!(
            COALESCED_READS,
            "GETs answered with another caller's answer"
        );
        describe_counter!(
            REDIS_FALLBACKS,
            "Falls back to the process's own state after Redis failed"
        );
    }
}

// Label names.
#[cfg(feature = "metrics")]
const METHOD: &str = "http.request.method";
#[cfg(feature = "metrics")]
const STATUS_CODE: &str = "http.response.status_code";
#[cfg(feature = "metrics")]
const SERVER: &str = "server.address";
#[cfg(feature = "metrics")]
const ERROR_TYPE: &str = "error.type";
#[cfg(feature = "metrics")]
const STATUS_CLASS: &str = "mpsd.status_class";
#[cfg(feature = "metrics")]
const OUTCOME: &str = "mpsd.outcome";
#[cfg(feature = "metrics")]
const CAUSE: &str = "mpsd.cause";

/// The method's label: its name when standard, else `_OTHER`, so that no
/// caller's invented method makes a series of its own.
#[cfg(feature = "metrics")]
fn method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// `2xx` … `5xx`, or `error` for no answer.
#[cfg(feature = "metrics")]
fn status_class(status: Option<StatusCode>) -> &'static str {
    match status.map(|s| s.as_u16() / 100) {
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

#[cfg(feature = "metrics")]
fn cause(cause: Cause) -> &'static str {
    match cause {
        Cause::Overloaded => "overloaded",
        Cause::Throttled => "throttled",
        Cause::Transient => "transient",
        Cause::Unprocessed => "unprocessed",
        Cause::NotConnected => "not_connected",
    }
}

/// One send to `authority` answered (`outcome`) or failed (`None`) after
/// `took`. The host is taken from the authority here, only when metrics
/// are kept: it is a parse.
#[inline]
pub(crate) fn send_done(
    call_method: &Method,
    authority: Option<&Authority>,
    outcome: Option<&Outcome>,
    took: Duration,
) {
    #[cfg(feature = "metrics")]
    {
        let m = method(call_method);
        let host = authority.map_or("", Authority::host).to_owned();
        let status = outcome.map(Outcome::status);
        let histogram = match status {
            Some(s) => {
                ::metrics::histogram!(REQUEST_DURATION, METHOD => m, SERVER => host, STATUS_CODE => s.as_str().to_owned())
            }
            None => {
                ::metrics::histogram!(REQUEST_DURATION, METHOD => m, SERVER => host, ERROR_TYPE => "_OTHER")
            }
        };
        histogram.record(took.as_secs_f64());
        let name = outcome.map_or("error", Outcome::name);
        ::metrics::counter!(RESPONSES, METHOD => m, STATUS_CLASS => status_class(status), OUTCOME => name)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (call_method, authority, outcome, took);
}

/// A logical request ended with `status`, or an error (`None`), after
/// `attempts` sends and `took`.
#[inline]
pub(crate) fn logical_done(
    call_method: &Method,
    status: Option<StatusCode>,
    attempts: usize,
    took: Duration,
) {
    #[cfg(feature = "metrics")]
    {
        let (m, class) = (method(call_method), status_class(status));
        ::metrics::histogram!(LOGICAL_DURATION, METHOD => m, STATUS_CLASS => class)
            .record(took.as_secs_f64());
        ::metrics::histogram!(LOGICAL_ATTEMPTS, METHOD => m, STATUS_CLASS => class)
            .record(attempts as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (call_method, status, attempts, took);
}

/// A retry for `why` is sent.
#[inline]
pub(crate) fn retry(why: Cause) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(RETRIES, CAUSE => cause(why)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = why;
}

/// A request is refused unsent by `by`.
#[inline]
pub(crate) fn refused(by: RefusedBy) {
    #[cfg(feature = "metrics")]
    {
        let by = match by {
            RefusedBy::Cooldown => "cooldown",
            RefusedBy::Pace => "pace",
            RefusedBy::Queue => "queue",
        };
        ::metrics::counter!(REFUSALS, "mpsd.refused_by" => by).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = by;
}

/// A cooldown for `why` starts. Only with the feature: whether a
/// cooldown starts (rather than is extended) takes a look at the clock
/// that the caller makes only for this.
#[cfg(feature = "metrics")]
pub(crate) fn cooldown_started(why: Cause) {
    ::metrics::counter!(COOLDOWNS, CAUSE => cause(why)).increment(1);
}

/// A request waits for its pace slot.
#[inline]
pub(crate) fn pace_wait() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(PACE_WAITS).increment(1);
}

/// A write is rebased: before it was sent, or after a 412.
#[inline]
pub(crate) fn rebased(before_sending: bool) {
    #[cfg(feature = "metrics")]
    {
        let when = if before_sending {
            "before_sending"
        } else {
            "after_412"
        };
        ::metrics::counter!(REBASES, "mpsd.rebase" => when).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = before_sending;
}

/// A GET is answered with another caller's answer.
#[inline]
pub(crate) fn coalesced_read() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(COALESCED_READS).increment(1);
}

/// A process falls back to its own state: Redis failed.
#[inline]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn redis_fallback() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(REDIS_FALLBACKS).increment(1);
}
