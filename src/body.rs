//! Request and response bodies the layers hold: reading one up to a cap,
//! and playing back what was read, shared by the replay and revalidate
//! layers.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

/// What reading a body up to a cap found.
pub(crate) enum Read {
    /// The whole body is in the buffer, with its trailers if any.
    Whole(Option<HeaderMap>),
    /// The body is longer than the cap; what was read is in the buffer.
    OverCap,
}

/// Reads frames into `read` until the body ends or passes `limit`.
pub(crate) fn read_within<B>(
    mut body: Pin<&mut B>,
    read: &mut BytesMut,
    limit: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Read, BoxError>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Poll::Ready(Ok(Read::OverCap));
    }
    loop {
        if read.len() > limit {
            return Poll::Ready(Ok(Read::OverCap));
        }
        let Some(frame) = ready!(body.as_mut().poll_frame(cx)) else {
            return Poll::Ready(Ok(Read::Whole(None)));
        };
        match frame.map_err(Into::into)?.into_data() {
            Ok(mut data) => {
                while data.has_remaining() {
                    let chunk = data.chunk();
                    read.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Poll::Ready(Ok(Read::Whole(Some(trailers))));
                }
            }
        }
    }
}

/// A body read whole: its bytes, then its trailers, each sent once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buffered {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Buffered {
    pub(crate) fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            data: Some(data).filter(|d| !d.is_empty()),
            trailers,
        }
    }

    /// The next frame, or `None` at the end.
    pub(crate) fn next_frame(&mut self) -> Option<Frame<Bytes>> {
        match self.data.take() {
            Some(data) => Some(Frame::data(data)),
            None => self.trailers.take().map(Frame::trailers),
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// A frame of any body as a frame of `Bytes`.
pub(crate) fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
}

/// The size of a body that plays `prefix` (what was read) before `rest`.
pub(crate) fn hint_after(prefix: Option<&Bytes>, rest: SizeHint) -> SizeHint {
    let read = prefix.map_or(0, |p| p.len() as u64);
    let mut hint = SizeHint::new();
    hint.set_lower(rest.lower().saturating_add(read));
    if let Some(upper) = rest.upper() {
        hint.set_upper(upper.saturating_add(read));
    }
    hint
}
