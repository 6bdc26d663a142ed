use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service};

use super::body::RebaseBody;
use super::future::ResponseFuture;
use super::policy::RebasePolicy;
use super::rules::conditional_write;
use crate::ready;
use crate::sequence::SessionBoard;
use crate::BoxError;

/// Settings of a [`RebaseLayer`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) max_rounds: u32,
    pub(crate) body_limit: usize,
    pub(crate) session_limit: usize,
    pub(crate) spread: Duration,
}

/// Retries conditional writes that lose a race (412) through a
/// [`RebasePolicy`]; see [the module](crate::rebase).
#[derive(Clone)]
#[must_use]
pub struct RebaseLayer<P> {
    policy: P,
    config: Config,
    sequencing: Sequencing,
}

/// Whether conditional writes are sequenced, and by which board.
#[derive(Debug, Clone, Default)]
enum Sequencing {
    /// Not unless [`MpsdLayer`](crate::MpsdLayer) gives a board.
    #[default]
    Unset,
    On(SessionBoard),
    Off,
}

impl<P> fmt::Debug for RebaseLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RebaseLayer")
            .field("config", &self.config)
            .field("sequencing", &self.sequencing)
            .finish_non_exhaustive()
    }
}

impl<P> RebaseLayer<P> {
    /// A layer rebasing with `policy`; there is no default policy, since
    /// re-sending a write blindly can lose an update.
    pub fn new(policy: P) -> Self {
        Self {
            policy,
            config: Config {
                max_rounds: 16,
                body_limit: 64 * 1024,
                session_limit: 1024 * 1024,
                spread: Duration::from_millis(50),
            },
            sequencing: Sequencing::Unset,
        }
    }

    /// Sequences conditional writes per session through `board`, and
    /// rebases a write the board knows to be stale before it is sent (see
    /// [`crate::sequence`]). Layers and stacks given the same board share
    /// its queues and sessions. Used alone, the layer does not sequence
    /// unless given a board; [`MpsdLayer::rebase`](crate::MpsdLayer::rebase)
    /// gives it a new one unless it has one or is
    /// [`unsequenced`](Self::unsequenced).
    pub fn sequence(mut self, board: SessionBoard) -> Self {
        self.sequencing = Sequencing::On(board);
        self
    }

    /// Never sequences writes, not even inside
    /// [`MpsdLayer`](crate::MpsdLayer).
    pub fn unsequenced(mut self) -> Self {
        self.sequencing = Sequencing::Off;
        self
    }

    /// The board it sequences writes through, if any.
    pub fn board(&self) -> Option<&SessionBoard> {
        match &self.sequencing {
            Sequencing::On(board) => Some(board),
            Sequencing::Unset | Sequencing::Off => None,
        }
    }

    /// Sequenced by a new board, unless given one or told not to: what the
    /// recommended stack does.
    pub(crate) fn sequenced_by_default(mut self) -> Self {
        if let Sequencing::Unset = self.sequencing {
            self.sequencing = Sequencing::On(SessionBoard::new());
        }
        self
    }

    /// The most conflicts handled per logical request. Default 16: a
    /// round costs one write when the 412 carries the session, as MPSD's
    /// does, and separate processes writing one session need many. Measured
    /// by `cargo bench --bench storm` (`contention_4x16`: 16 writers on
    /// each of 4 stacks with separate state): 3 rounds handed back about 35
    /// of 320 writes, 8 about 3, 12 about 1, 16 none in three runs, at
    /// 1.10 sends per write. The deadline and the attempt limit bound them
    /// still.
    pub fn max_rounds(mut self, n: u32) -> Self {
        self.config.max_rounds = n;
        self
    }

    /// The largest request body kept for rebasing. Default 64 KiB: an MPSD
    /// write is a delta of a session document. A larger body is sent once
    /// and its 412 handed back with
    /// [`GaveUp::NotReplayable`](crate::logical::GaveUp::NotReplayable).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config.body_limit = bytes;
        self
    }

    /// The largest session document read from a 412 or a re-read.
    /// Default 1 MiB.
    pub fn session_limit(mut self, bytes: usize) -> Self {
        self.config.session_limit = bytes;
        self
    }

    /// Before the rebased write of round `n`, a random pause in
    /// `[0, spread × 2ⁿ⁻¹)` (the doubling stops at 32×), so that writers who
    /// lost the same race do not meet again, and a stack that keeps winning
    /// lets the others' losers in. Default 50 ms: a few round trips to the
    /// service; in `storm/contention_4x16` 30 ms handed back more writes
    /// (1 to 2 of 320 at 12 rounds, against 1 at 50 ms), and a pause that
    /// does not double handed back 12 or more.
    pub fn spread(mut self, spread: Duration) -> Self {
        self.config.spread = spread;
        self
    }
}

impl<S, P: Clone> Layer<S> for RebaseLayer<P> {
    type Service = Rebase<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Rebase {
            inner,
            policy: self.policy.clone(),
            config: self.config,
            board: self.board().cloned(),
        }
    }
}

/// Rebases conditional writes; see [`RebaseLayer`].
#[derive(Clone)]
pub struct Rebase<S, P> {
    inner: S,
    policy: P,
    config: Config,
    board: Option<SessionBoard>,
}

impl<S, P> Rebase<S, P> {
    crate::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug, P> fmt::Debug for Rebase<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rebase")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for Rebase<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: RebasePolicy + Clone,
    ReqBody: Body + Clone + From<Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<RebaseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, P, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(write) = conditional_write(&req) else {
            return ResponseFuture::through(self.inner.call(req));
        };
        // The ready service goes with the first send, unless the write
        // waits first (for its body or its turn): then it is let go.
        let inner = ready::take(&mut self.inner);
        let policy = self.policy.clone();
        let board = self.board.clone();
        ResponseFuture::rebasing(inner, policy, req, write, self.config, board)
    }
}
