//! Routing: which MPSD resource a request path names.
//!
//! Written from MPSD's public URI documentation, on purpose apart from
//! `tower-mpsd`'s own parser: a test double that shared the code under test
//! would mirror its mistakes. Fixed segments (`serviceconfigs`,
//! `sessionTemplates`, `sessions`, `members`, ...) are matched without
//! regard to case, since the service's docs spell `sessionTemplates` both
//! ways; names (SCID, template, session, handle id) are kept as sent.

/// A session's address: SCID, template and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionPath<'a> {
    pub(crate) scid: &'a str,
    pub(crate) template: &'a str,
    pub(crate) name: &'a str,
}

/// A part of a session with a URI of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part<'a> {
    /// `members/me`: the caller's own member.
    Me,
    /// `members/{index}`.
    Member(u64),
    /// `servers/{name}`.
    Server(&'a str),
    /// `properties`.
    Properties,
}

/// The resources the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Session(SessionPath<'a>),
    Part(SessionPath<'a>, Part<'a>),
    /// `GET /serviceconfigs/{scid}/sessions` (`template: None`) or
    /// `.../sessionTemplates/{template}/sessions`.
    SessionQuery {
        scid: &'a str,
        template: Option<&'a str>,
    },
    /// `.../batch`, under a SCID or a template.
    Batch,
    /// `/handles`: where handles are created.
    Handles,
    /// `/handles/query`.
    HandleQuery,
    /// `/handles/{id}`.
    Handle(&'a str),
    /// `/handles/{id}/session`: the session a handle points at.
    HandleSession(&'a str),
    /// `/serviceconfigs/{scid}/hoppers/{hopper}`.
    Hopper {
        scid: &'a str,
        hopper: &'a str,
    },
    /// `/serviceconfigs/{scid}/hoppers/{hopper}/stats`.
    HopperStats {
        scid: &'a str,
        hopper: &'a str,
    },
    /// `/serviceconfigs/{scid}/hoppers/{hopper}/tickets/{id}`.
    Ticket,
    Unknown,
}

/// Routes a path (the query, if any, is ignored).
pub(crate) fn route(path: &str) -> Route<'_> {
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [h] if word(h, "handles") => Route::Handles,
        [h, q] if word(h, "handles") && word(q, "query") => Route::HandleQuery,
        [h, id] if word(h, "handles") => Route::Handle(id),
        [h, id, s] if word(h, "handles") && word(s, "session") => Route::HandleSession(id),
        [c, scid, rest @ ..] if word(c, "serviceconfigs") => under_scid(scid, rest),
        _ => Route::Unknown,
    }
}

fn under_scid<'a>(scid: &'a str, rest: &[&'a str]) -> Route<'a> {
    match rest {
        [s] if word(s, "sessions") => Route::SessionQuery {
            scid,
            template: None,
        },
        [b] if word(b, "batch") => Route::Batch,
        [h, hopper] if word(h, "hoppers") => Route::Hopper { scid, hopper },
        [h, hopper, s] if word(h, "hoppers") && word(s, "stats") => {
            Route::HopperStats { scid, hopper }
        }
        [h, _, t, _] if word(h, "hoppers") && word(t, "tickets") => Route::Ticket,
        [t, template, rest @ ..] if word(t, "sessiontemplates") => {
            under_template(scid, template, rest)
        }
        _ => Route::Unknown,
    }
}

fn under_template<'a>(scid: &'a str, template: &'a str, rest: &[&'a str]) -> Route<'a> {
    let session = |name| SessionPath {
        scid,
        template,
        name,
    };
    match rest {
        [b] if word(b, "batch") => Route::Batch,
        [s] if word(s, "sessions") => Route::SessionQuery {
            scid,
            template: Some(template),
        },
        [s, name] if word(s, "sessions") => Route::Session(session(name)),
        [s, name, part @ ..] if word(s, "sessions") => match session_part(part) {
            Some(part) => Route::Part(session(name), part),
            None => Route::Unknown,
        },
        _ => Route::Unknown,
    }
}

fn session_part<'a>(part: &[&'a str]) -> Option<Part<'a>> {
    match part {
        [p] if word(p, "properties") => Some(Part::Properties),
        [m, me] if word(m, "members") && word(me, "me") => Some(Part::Me),
        [m, index] if word(m, "members") => member_index(index).map(Part::Member),
        [s, name] if word(s, "servers") => Some(Part::Server(name)),
        _ => None,
    }
}

/// A member index as MPSD writes it: decimal digits, no sign, no leading
/// zero, so that each member has one URI.
fn member_index(segment: &str) -> Option<u64> {
    let canonical = segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'));
    canonical.then(|| segment.parse().ok()).flatten()
}

fn word(segment: &str, expected: &str) -> bool {
    segment.eq_ignore_ascii_case(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "/serviceconfigs/c/sessionTemplates/T/sessions/n";
    const AT: SessionPath<'static> = SessionPath {
        scid: "c",
        template: "T",
        name: "n",
    };

    #[test]
    fn sessions_and_their_parts() {
        assert_eq!(route(S), Route::Session(AT));
        assert_eq!(route(&format!("{S}/")), Route::Session(AT));
        assert_eq!(route(&format!("{S}?nocommit=true")), Route::Session(AT));
        let part = |p: &str, expected: Route<'_>| assert_eq!(route(&format!("{S}/{p}")), expected);
        part("members/me", Route::Part(AT, Part::Me));
        part("MEMBERS/Me", Route::Part(AT, Part::Me));
        part("members/3", Route::Part(AT, Part::Member(3)));
        part("members/0", Route::Part(AT, Part::Member(0)));
        part("servers/g", Route::Part(AT, Part::Server("g")));
        part("properties", Route::Part(AT, Part::Properties));
        for bad in [
            "members",
            "members/x",
            "members/-1",
            "members/+3",
            "members/03",
            "members/",
            "properties/x",
            "other",
        ] {
            part(bad, Route::Unknown);
        }
        assert_eq!(
            route("/SERVICECONFIGS/c/sessiontemplates/T/Sessions/n"),
            Route::Session(AT)
        );
    }

    #[test]
    fn handles() {
        assert_eq!(route("/handles"), Route::Handles);
        assert_eq!(route("/handles/query"), Route::HandleQuery);
        assert_eq!(route("/handles/ab12"), Route::Handle("ab12"));
        assert_eq!(route("/handles/ab12/session"), Route::HandleSession("ab12"));
        assert_eq!(route("/handles/ab12/other"), Route::Unknown);
    }

    #[test]
    fn queries_batches_and_matchmaking() {
        let q = |template| Route::SessionQuery {
            scid: "c",
            template,
        };
        assert_eq!(route("/serviceconfigs/c/sessions?xuid=1"), q(None));
        assert_eq!(
            route("/serviceconfigs/c/sessionTemplates/T/sessions"),
            q(Some("T"))
        );
        assert_eq!(route("/serviceconfigs/c/batch"), Route::Batch);
        assert_eq!(
            route("/serviceconfigs/c/sessionTemplates/T/batch"),
            Route::Batch
        );
        assert_eq!(
            route("/serviceconfigs/c/hoppers/h"),
            Route::Hopper {
                scid: "c",
                hopper: "h"
            }
        );
        assert_eq!(
            route("/serviceconfigs/c/hoppers/h/stats"),
            Route::HopperStats {
                scid: "c",
                hopper: "h"
            }
        );
        assert_eq!(
            route("/serviceconfigs/c/hoppers/h/tickets/t"),
            Route::Ticket
        );
        for bad in ["", "/", "/serviceconfigs", "/serviceconfigs/c", "/x/y"] {
            assert_eq!(route(bad), Route::Unknown, "{bad}");
        }
    }
}
