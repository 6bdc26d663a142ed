use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{response::Parts, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::RevalidateBody;
use super::cache::Entry;
use super::layer::Shared;
use super::Revalidated;
use crate::body::{read_within, Read};
use crate::classify::{classify, Classified};
use crate::BoxError;

/// What the layer does with one request's answer.
pub(crate) enum Ctx {
    /// Nothing: not a read or write it handles.
    Pass,
    /// A write to a session or its elements: drop the session's reads.
    Write { group: String },
    /// A GET: cache a 200, serve a 304 from `cached`, forget on 204 and
    /// the like.
    Read {
        key: String,
        group: Option<String>,
        cached: Option<Box<Entry>>,
    },
}

pin_project! {
    /// The response future of [`Revalidate`](super::Revalidate).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        ctx: Ctx,
        shared: Shared,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling {
            #[pin]
            future: F,
        },
        Reading {
            parts: Option<Parts>,
            // Boxed so that, over the cap, it moves into the response body.
            body: Option<Pin<Box<B>>>,
            read: BytesMut,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(future: F, ctx: Ctx, shared: Shared) -> Self {
        Self {
            state: State::Calling { future },
            ctx,
            shared,
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Reading { .. } => "reading",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<RevalidateBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    if let Ctx::Write { group } = &*this.ctx {
                        // Again: a read that overtook the write may have
                        // stored the session as it was before.
                        this.shared.cache().invalidate(group);
                    }
                    let res = result?;
                    let Ctx::Read { key, cached, .. } = &mut *this.ctx else {
                        return Poll::Ready(Ok(res.map(RevalidateBody::inner)));
                    };
                    match res.status() {
                        StatusCode::NOT_MODIFIED => match cached.take() {
                            Some(entry) => return Poll::Ready(Ok(from_cache(res, *entry))),
                            None => return Poll::Ready(Ok(res.map(RevalidateBody::inner))),
                        },
                        StatusCode::OK if storable(res.headers()) => {
                            let (parts, body) = res.into_parts();
                            State::Reading {
                                parts: Some(parts),
                                body: Some(Box::pin(body)),
                                read: BytesMut::new(),
                            }
                        }
                        StatusCode::OK
                        | StatusCode::NO_CONTENT
                        | StatusCode::FORBIDDEN
                        | StatusCode::NOT_FOUND
                        | StatusCode::GONE => {
                            // The cached read is no longer what the URI gives.
                            this.shared.cache().remove(key);
                            return Poll::Ready(Ok(res.map(RevalidateBody::inner)));
                        }
                        _ => return Poll::Ready(Ok(res.map(RevalidateBody::inner))),
                    }
                }
                StateProj::Reading { parts, body, read } => {
                    let rest = body.as_mut().expect("polled after completion");
                    let read_so_far = ready!(read_within(
                        rest.as_mut(),
                        read,
                        this.shared.max_body_bytes,
                        cx
                    ));
                    let parts = parts.take().expect("polled after completion");
                    let prefix = std::mem::take(read).freeze();
                    let ctx = std::mem::replace(this.ctx, Ctx::Pass);
                    let Ctx::Read { key, group, .. } = ctx else {
                        unreachable!("only reads are read")
                    };
                    let body = match read_so_far {
                        Ok(Read::Whole(None)) => {
                            let etag = parts.headers.get(header::ETAG).cloned();
                            if let Some(etag) = etag {
                                let entry = Entry {
                                    etag,
                                    headers: parts.headers.clone(),
                                    body: prefix.clone(),
                                    group,
                                };
                                this.shared.cache().insert(key, entry);
                            }
                            RevalidateBody::whole(prefix, None)
                        }
                        Ok(Read::Whole(trailers)) => {
                            // Rare enough not to cache; served as it came.
                            this.shared.cache().remove(&key);
                            RevalidateBody::whole(prefix, trailers)
                        }
                        Ok(Read::OverCap) => {
                            this.shared.cache().remove(&key);
                            RevalidateBody::partial(prefix, body.take().expect("checked above"))
                        }
                        Err(error) => {
                            this.shared.cache().remove(&key);
                            RevalidateBody::failed(prefix, error)
                        }
                    };
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
            };
            this.state.set(next);
        }
    }
}

/// Whether a 200 to a GET may be cached: it has an `ETag` to revalidate
/// with, and does not forbid storing.
fn storable(headers: &HeaderMap) -> bool {
    let no_store = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"));
    headers.contains_key(header::ETAG) && !no_store
}

/// Headers of a 304 that say nothing about the cached body's framing.
fn is_framing(name: &header::HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TRAILER,
        header::UPGRADE,
    ]
    .contains(name)
}

/// The 304 turned into a 200 with the cached body: the cached headers,
/// updated by the 304's own (its `ETag`, `Date`, ...), the 304's extensions
/// plus [`Revalidated`] and, if an inner `ClassifyLayer` classified it, the
/// outcome of a 200.
fn from_cache<B>(res: Response<B>, entry: Entry) -> Response<RevalidateBody<B>> {
    let (mut parts, _empty) = res.into_parts();
    let mut headers = entry.headers;
    for name in parts.headers.keys() {
        if !is_framing(name) {
            headers.remove(name);
        }
    }
    for (name, value) in &parts.headers {
        if !is_framing(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
    let etag = headers.get(header::ETAG).cloned().unwrap_or(entry.etag);
    parts.status = StatusCode::OK;
    parts.headers = headers;
    if let Some(classified) = parts.extensions.get_mut::<Classified>() {
        classified.outcome = classify(classified.call(), StatusCode::OK, &parts.headers);
    }
    parts.extensions.insert(Revalidated { etag });
    Response::from_parts(parts, RevalidateBody::whole(entry.body, None))
}
