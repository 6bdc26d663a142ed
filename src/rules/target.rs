//! What an MPSD request URI names: a session, one of its elements, a handle,
//! a query, a batch, a matchmaking hopper or ticket, or something else.
//!
//! Pure parsing, no I/O and no allocation. Path segments that MPSD defines
//! are matched case-insensitively, since the service's own docs spell
//! `sessionTemplates` both ways; the names inside them (SCID, template,
//! session name) are returned as written.
//!
//! # Example
//!
//! ```
//! use tower_mpsd::rules::target::{Element, Member, Target, TargetKind};
//!
//! let t = Target::parse("/serviceconfigs/0001/sessiontemplates/Lobby/sessions/s1/members/me");
//! let Target::Element(id, Element::Member(Member::Me)) = t else { panic!() };
//! assert_eq!(id.name, "s1");
//! assert_eq!(id.path(), "/serviceconfigs/0001/sessionTemplates/Lobby/sessions/s1");
//! assert_eq!(t.kind(), TargetKind::Member);
//! ```

/// The session a URI names, directly or through one of its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId<'a> {
    /// The service configuration id (SCID).
    pub scid: &'a str,
    /// The session template's name.
    pub template: &'a str,
    /// The session's name.
    pub name: &'a str,
}

impl SessionId<'_> {
    /// The session's canonical URI path, as a GET of the whole session uses it.
    pub fn path(&self) -> String {
        format!(
            "/serviceconfigs/{}/sessionTemplates/{}/sessions/{}",
            self.scid, self.template, self.name
        )
    }
}

/// A member reference inside a session: `members/me` or `members/{index}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Member {
    /// `members/me`: the caller, identified by its `Authorization`.
    Me,
    /// `members/{index}`: a member by its index in the session.
    Index(u32),
}

/// An element of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Element<'a> {
    /// `members/{me|index}`.
    Member(Member),
    /// `servers/{name}`.
    Server(&'a str),
    /// `properties`.
    Properties,
}

/// What a request URI names, borrowing from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target<'a> {
    /// `/serviceconfigs/{scid}/sessionTemplates/{template}/sessions/{name}`.
    Session(SessionId<'a>),
    /// An element under a session.
    Element(SessionId<'a>, Element<'a>),
    /// `/handles/{id}/session`: the session a handle points at, read and
    /// written there as at its own URI (same 204 and 412 rules). Its kind
    /// is [`TargetKind::Session`].
    HandleSession(&'a str),
    /// `/handles`, `/handles/{id}`.
    Handle,
    /// A session query (`/serviceconfigs/{scid}/sessions`, or a template's
    /// `sessions` without a name) or a handle query (`/handles/query`).
    Query,
    /// A batch request (`.../batch`).
    Batch,
    /// A matchmaking hopper, its stats or a ticket
    /// (`/serviceconfigs/{scid}/hoppers/{hopper}`, `.../stats`,
    /// `.../tickets/{id}`).
    Matchmaking,
    /// Anything else.
    Other,
}

/// The kind of a [`Target`], without the names it borrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TargetKind {
    /// A whole session, by its own URI or through a handle.
    Session,
    /// `members/{me|index}` of a session.
    Member,
    /// `servers/{name}` of a session.
    Server,
    /// `properties` of a session.
    Properties,
    /// A handle.
    Handle,
    /// A session or handle query.
    Query,
    /// A batch request.
    Batch,
    /// A matchmaking hopper or ticket.
    Matchmaking,
    /// Anything else.
    Other,
}

impl TargetKind {
    /// Whether this names an element of a session rather than the session.
    pub fn is_element(self) -> bool {
        matches!(self, Self::Member | Self::Server | Self::Properties)
    }

    /// Whether this names a session or one of its elements.
    pub fn is_session_or_element(self) -> bool {
        self == Self::Session || self.is_element()
    }
}

/// Whether `segment` is the MPSD path word `word`, spelled as MPSD's docs
/// spell it, in any case: the exact spelling, which nearly every request
/// uses, is compared first, as a whole.
fn is_word(segment: &str, word: &str) -> bool {
    segment == word || segment.eq_ignore_ascii_case(word)
}

/// The non-empty `/`-separated segments of a path, up to any `?`.
struct Segments<'a>(&'a str);

impl<'a> Segments<'a> {
    fn new(path: &'a str) -> Self {
        let end = memchr::memchr(b'?', path.as_bytes()).unwrap_or(path.len());
        // `?` is ASCII: a char boundary.
        Self(&path[..end])
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.0.as_bytes();
        let start = bytes.iter().position(|&b| b != b'/')?;
        let len = memchr::memchr(b'/', &bytes[start..]);
        let end = len.map_or(bytes.len(), |len| start + len);
        // `/` is ASCII: these are char boundaries.
        let segment = &self.0[start..end];
        self.0 = &self.0[end..];
        Some(segment)
    }
}

impl<'a> Target<'a> {
    /// Parses a URI path (no query string). Never fails: what does not match
    /// an MPSD resource is [`Target::Other`].
    pub fn parse(path: &'a str) -> Self {
        let mut segments = Segments::new(path);
        let first = segments.next().unwrap_or_default();
        if is_word(first, "handles") {
            return match (segments.next(), segments.next(), segments.next()) {
                (Some(q), None, _) if is_word(q, "query") => Target::Query,
                (Some(id), Some(s), None) if is_word(s, "session") => Target::HandleSession(id),
                (None | Some(_), None, _) => Target::Handle,
                _ => Target::Other,
            };
        }
        if !is_word(first, "serviceconfigs") {
            return Target::Other;
        }
        let Some(scid) = segments.next() else {
            return Target::Other;
        };
        let rest: [Option<&'a str>; 6] = std::array::from_fn(|_| segments.next());
        if segments.next().is_some() {
            return Target::Other;
        }
        Self::under_scid(scid, rest)
    }

    fn under_scid(scid: &'a str, rest: [Option<&'a str>; 6]) -> Self {
        let is = |s: Option<&str>, word: &str| s.is_some_and(|s| is_word(s, word));
        match rest {
            [Some(s), None, ..] if is(Some(s), "sessions") => Target::Query,
            [Some(s), None, ..] if is(Some(s), "batch") => Target::Batch,
            [Some(h), Some(_), None, ..] if is(Some(h), "hoppers") => Target::Matchmaking,
            [Some(h), Some(_), stats, None, ..] if is(Some(h), "hoppers") && is(stats, "stats") => {
                Target::Matchmaking
            }
            [Some(h), Some(_), tickets, Some(_), None, ..]
                if is(Some(h), "hoppers") && is(tickets, "tickets") =>
            {
                Target::Matchmaking
            }
            [Some(t), Some(_), Some(b), None, ..]
                if is(Some(t), "sessionTemplates") && is(Some(b), "batch") =>
            {
                Target::Batch
            }
            [Some(t), Some(_), Some(s), None, ..]
                if is(Some(t), "sessionTemplates") && is(Some(s), "sessions") =>
            {
                Target::Query
            }
            [Some(t), Some(template), Some(s), Some(name), element, index]
                if is(Some(t), "sessionTemplates") && is(Some(s), "sessions") =>
            {
                let id = SessionId {
                    scid,
                    template,
                    name,
                };
                match Element::parse(element, index) {
                    Some(None) => Target::Session(id),
                    Some(Some(element)) => Target::Element(id, element),
                    None => Target::Other,
                }
            }
            _ => Target::Other,
        }
    }

    /// The kind of this target.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Session(_) | Target::HandleSession(_) => TargetKind::Session,
            Target::Element(_, Element::Member(_)) => TargetKind::Member,
            Target::Element(_, Element::Server(_)) => TargetKind::Server,
            Target::Element(_, Element::Properties) => TargetKind::Properties,
            Target::Handle => TargetKind::Handle,
            Target::Query => TargetKind::Query,
            Target::Batch => TargetKind::Batch,
            Target::Matchmaking => TargetKind::Matchmaking,
            Target::Other => TargetKind::Other,
        }
    }

    /// The session this target names or lives under, if any. `None` for
    /// [`Target::HandleSession`]: its SCID, template and name are not in
    /// the URI (see [`Target::session_path`]).
    pub fn session(&self) -> Option<SessionId<'a>> {
        match self {
            Target::Session(id) | Target::Element(id, _) => Some(*id),
            _ => None,
        }
    }

    /// The path that reads the whole session this target names or lives
    /// under: the session's own URI, or the handle's `/handles/{id}/session`.
    pub fn session_path(&self) -> Option<String> {
        match self {
            Target::Session(id) | Target::Element(id, _) => Some(id.path()),
            Target::HandleSession(handle) => Some(format!("/handles/{handle}/session")),
            _ => None,
        }
    }
}

impl<'a> Element<'a> {
    /// `None`: not a valid element path; `Some(None)`: no element at all.
    fn parse(element: Option<&'a str>, index: Option<&'a str>) -> Option<Option<Self>> {
        let Some(element) = element else {
            return Some(None);
        };
        let parsed = if is_word(element, "members") {
            match index? {
                me if is_word(me, "me") => Element::Member(Member::Me),
                i => Element::Member(Member::Index(i.parse().ok()?)),
            }
        } else if is_word(element, "servers") {
            Element::Server(index?)
        } else if is_word(element, "properties") && index.is_none() {
            Element::Properties
        } else {
            return None;
        };
        Some(Some(parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "/serviceconfigs/scid/sessionTemplates/tpl/sessions/name";

    fn kind(path: &str) -> TargetKind {
        Target::parse(path).kind()
    }

    #[test]
    fn sessions_and_elements() {
        let id = SessionId {
            scid: "scid",
            template: "tpl",
            name: "name",
        };
        assert_eq!(Target::parse(S), Target::Session(id));
        assert_eq!(Target::parse(&format!("{S}/")), Target::Session(id));
        assert_eq!(
            Target::parse(&format!("{S}/members/me")),
            Target::Element(id, Element::Member(Member::Me))
        );
        assert_eq!(
            Target::parse(&format!("{S}/Members/ME")),
            Target::Element(id, Element::Member(Member::Me))
        );
        assert_eq!(
            Target::parse(&format!("{S}/members/7")),
            Target::Element(id, Element::Member(Member::Index(7)))
        );
        assert_eq!(
            Target::parse(&format!("{S}/servers/game")),
            Target::Element(id, Element::Server("game"))
        );
        assert_eq!(
            Target::parse(&format!("{S}/properties")),
            Target::Element(id, Element::Properties)
        );
        assert_eq!(id.path(), S);
    }

    #[test]
    fn segment_case_is_ignored() {
        assert_eq!(
            kind("/SERVICECONFIGS/x/sessiontemplates/t/SESSIONS/n"),
            TargetKind::Session
        );
        assert_eq!(
            Target::parse("/serviceconfigs/x/sessiontemplates/T/sessions/N")
                .session()
                .map(|s| (s.template, s.name)),
            Some(("T", "N"))
        );
    }

    #[test]
    fn other_resources() {
        assert_eq!(kind("/handles"), TargetKind::Handle);
        assert_eq!(kind("/handles/abc"), TargetKind::Handle);
        assert_eq!(kind("/handles/abc/session"), TargetKind::Session);
        assert_eq!(kind("/Handles/abc/SESSION"), TargetKind::Session);
        assert_eq!(
            Target::parse("/handles/abc/session"),
            Target::HandleSession("abc")
        );
        assert_eq!(
            Target::parse("/handles/abc/session")
                .session_path()
                .as_deref(),
            Some("/handles/abc/session")
        );
        assert_eq!(Target::parse("/handles/abc/session").session(), None);
        assert_eq!(kind("/handles/query"), TargetKind::Query);
        assert_eq!(kind("/serviceconfigs/x/sessions"), TargetKind::Query);
        assert_eq!(
            kind("/serviceconfigs/x/sessionTemplates/t/sessions"),
            TargetKind::Query
        );
        assert_eq!(kind("/serviceconfigs/x/batch"), TargetKind::Batch);
        assert_eq!(
            kind("/serviceconfigs/x/sessiontemplates/t/batch"),
            TargetKind::Batch
        );
        assert_eq!(kind("/serviceconfigs/x/hoppers/h"), TargetKind::Matchmaking);
        assert_eq!(
            kind("/serviceconfigs/x/hoppers/h/tickets/t"),
            TargetKind::Matchmaking
        );
        assert_eq!(
            kind("/serviceconfigs/x/hoppers/h/stats"),
            TargetKind::Matchmaking
        );
    }

    #[test]
    fn malformed_paths_are_other() {
        for p in [
            "",
            "/",
            "/serviceconfigs",
            "/serviceconfigs/x",
            "/serviceconfigs/x/sessionTemplates/t",
            &format!("{S}/members"),
            &format!("{S}/members/abc"),
            &format!("{S}/members/-1"),
            &format!("{S}/servers"),
            &format!("{S}/properties/x"),
            &format!("{S}/unknown"),
            &format!("{S}/members/me/extra/more"),
            "/other/thing",
            "/handles/abc/other",
            "/handles/abc/session/more",
            "/serviceconfigs/x/hoppers/h/other",
            "/serviceconfigs/x/hoppers/h/other/t",
        ] {
            assert_eq!(kind(p), TargetKind::Other, "{p}");
        }
    }

    #[test]
    fn query_string_is_ignored() {
        assert_eq!(kind("/serviceconfigs/x/sessions?xuid=1"), TargetKind::Query);
    }

    proptest::proptest! {
        /// The byte scan finds the segments `str::split` does, on paths
        /// of slashes, query marks, letters and a multi-byte character.
        #[test]
        fn segments_are_those_of_split(path in "[/?a\u{e9}]{0,12}") {
            let before_query = path.split('?').next().unwrap_or_default();
            let expected: Vec<_> = before_query.split('/').filter(|s| !s.is_empty()).collect();
            proptest::prop_assert_eq!(Segments::new(&path).collect::<Vec<_>>(), expected);
        }
    }
}
