//! A classifier for `tower_http::trace::TraceLayer`.

use std::fmt;

use http::{Request, Response};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, MakeClassifier, NeverClassifyEos,
};

use super::outcome::{classify, Call, Outcome};

/// A [`MakeClassifier`] for `tower-http`: responses whose [`Outcome`] is not
/// a success are failures of class [`MpsdFailure::Response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceClassifier(());

impl TraceClassifier {
    /// A new classifier.
    pub fn new() -> Self {
        Self(())
    }
}

impl MakeClassifier for TraceClassifier {
    type Classifier = TraceClassifyResponse;
    type FailureClass = MpsdFailure;
    type ClassifyEos = NeverClassifyEos<MpsdFailure>;

    fn make_classifier<B>(&self, req: &Request<B>) -> Self::Classifier {
        TraceClassifyResponse {
            call: Call::of(req),
        }
    }
}

/// The per-request [`ClassifyResponse`] made by [`TraceClassifier`].
#[derive(Debug, Clone)]
pub struct TraceClassifyResponse {
    call: Call,
}

impl ClassifyResponse for TraceClassifyResponse {
    type FailureClass = MpsdFailure;
    type ClassifyEos = NeverClassifyEos<MpsdFailure>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        let outcome =
            Outcome::of(res).unwrap_or_else(|| classify(&self.call, res.status(), res.headers()));
        if outcome.is_success() {
            ClassifiedResponse::Ready(Ok(()))
        } else {
            ClassifiedResponse::Ready(Err(MpsdFailure::Response(outcome)))
        }
    }

    fn classify_error<E>(self, error: &E) -> Self::FailureClass
    where
        E: fmt::Display + 'static,
    {
        MpsdFailure::Error(error.to_string())
    }
}

/// Why `tower-http` counted a call as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MpsdFailure {
    /// The service answered with an outcome that is not a success.
    Response(Outcome),
    /// The inner service failed (e.g. a connection error).
    Error(String),
}

impl fmt::Display for MpsdFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Response(outcome) => write!(f, "mpsd {outcome}"),
            Self::Error(error) => write!(f, "error: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, StatusCode};

    #[test]
    fn trace_classifier_splits_on_content_type() {
        let req = Request::put("/serviceconfigs/s/sessionTemplates/t/sessions/n/members/me")
            .body(())
            .unwrap();
        let res = Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .unwrap();
        let classifier = TraceClassifier::new().make_classifier(&req);
        match classifier.classify_response(&res) {
            ClassifiedResponse::Ready(Err(class)) => {
                assert_eq!(class, MpsdFailure::Response(Outcome::ReadOnly));
                assert_eq!(class.to_string(), "mpsd 403 read_only");
            }
            _ => panic!("a 403 is a failure"),
        }
        let ok = Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(())
            .unwrap();
        let get = Request::get("/x").body(()).unwrap();
        assert!(matches!(
            TraceClassifier::new()
                .make_classifier(&get)
                .classify_response(&ok),
            ClassifiedResponse::Ready(Ok(()))
        ));
    }
}
