//! The errors of a logical request that the retry layer adds, and the pure
//! rules that decide them: which URIs can be sent, and which errors are the
//! caller's mistake.

use std::error::Error;
use std::fmt;

use http::Uri;

/// A request was refused before anything was sent: its URI has no scheme
/// or no authority (`/serviceconfigs/…` instead of
/// `https://sessiondirectory.xboxlive.com/serviceconfigs/…`).
///
/// No client can send it (hyper-util's fails with `UserAbsoluteUriRequired`),
/// and the cooldowns are keyed by the authority, so retrying it would only
/// wait out the deadline. A layer that completes relative URIs goes outside
/// the retry layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUri {
    uri: Uri,
}

impl InvalidUri {
    /// `Err` when `uri` lacks a scheme or an authority.
    pub(crate) fn check(uri: &Uri) -> Result<(), Self> {
        if uri.scheme().is_some() && uri.authority().is_some() {
            Ok(())
        } else {
            Err(Self { uri: uri.clone() })
        }
    }

    /// The URI refused.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

impl fmt::Display for InvalidUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let missing = match (self.uri.scheme(), self.uri.authority()) {
            (None, None) => "a scheme and an authority",
            (None, Some(_)) => "a scheme",
            _ => "an authority",
        };
        // The path only: a query is the caller's to show.
        write!(
            f,
            "request URI {:?} lacks {missing}: an absolute URI (https://host/path) is needed",
            self.uri.path()
        )
    }
}

impl Error for InvalidUri {}

/// Whether `error` is the caller's mistake, which no retry can mend: a
/// [`hyper::Error`] anywhere in its source chain with
/// [`is_user()`](hyper::Error::is_user) (the request body failed, a header
/// is not allowed, the connection task is gone), or an [`InvalidUri`].
///
/// hyper-util's legacy client reports some mistakes in its own error kinds
/// (`UserUnsupportedVersion`, `UserUnsupportedRequestMethod`), which it
/// does not expose; they are retried like any other error.
pub(crate) fn callers_mistake(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
            || e.is::<InvalidUri>()
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    #[test]
    fn only_absolute_uris_pass() {
        for ok in ["http://mpsd.test/handles/h1", "https://a:8443/"] {
            assert_eq!(InvalidUri::check(&ok.parse().unwrap()), Ok(()), "{ok}");
        }
        let refused = |uri: &str| InvalidUri::check(&uri.parse().unwrap()).unwrap_err();
        let relative = refused("/serviceconfigs/scid/sessionTemplates/t/sessions/s?secret=1");
        assert_eq!(
            relative.to_string(),
            "request URI \"/serviceconfigs/scid/sessionTemplates/t/sessions/s\" lacks a scheme \
             and an authority: an absolute URI (https://host/path) is needed"
        );
        assert_eq!(relative.uri().query(), Some("secret=1"));
        assert!(refused("mpsd.test:80")
            .to_string()
            .contains("lacks a scheme:"));
        assert!(refused("*")
            .to_string()
            .contains("lacks a scheme and an authority"));
    }

    #[derive(Debug)]
    struct Outer(BoxError);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_callers_mistake_is_found_anywhere_in_the_chain() {
        let invalid: BoxError = InvalidUri::check(&"/x".parse().unwrap())
            .unwrap_err()
            .into();
        assert!(callers_mistake(&*invalid));
        let nested: BoxError = Box::new(Outer(Box::new(Outer(invalid))));
        assert!(callers_mistake(&*nested));
        let reset: BoxError = Box::new(Outer(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        ))));
        assert!(!callers_mistake(&*reset));
    }
}
