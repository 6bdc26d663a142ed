//! The session board's fleet half: one write order per session for every
//! process sharing a Redis, and the session as the last write left it.
//!
//! Per session (keys under one hash tag: the session, so each script's
//! keys share a Redis Cluster slot):
//!
//! - `:q`, a sorted set of waiting tickets (token by arrival number, from
//!   `:seq`), and `:alive`, each ticket's last moment (its write's
//!   deadline, on Redis's clock): first come, first served;
//! - `:lease`, the token of the write whose turn it is, expiring after the
//!   lease unless its holder renews it: a holder that dies hands the turn
//!   on when its lease ends;
//! - `:snap` (the `ETag` and document as the last holder left them, the
//!   document only up to [`DOCUMENT_CAP`]) and `:sup` (the `ETag`s they
//!   superseded), both expiring after [`KEPT`]: what a write given its
//!   turn is rebased on before it is sent.
//!
//! Every change of holder is announced on one channel (the token given the
//! turn); each process listens with one subscription and wakes its waiter,
//! so a hand-off takes one message, not a polling interval. A waiter also
//! asks every [`POLL`], in case a message was lost or a lease ran out.
//! Each process puts only the head of its own queue (the in-process
//! board's) in Redis's.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use redis::{Script, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tower::util::rng::{HasherRng, Rng};

use super::connect::Subscriber;
use super::RedisStore;

/// How long a turn is held without its holder renewing it: a holder that
/// died stalls its session's writes at most this long. 5 s: many MPSD
/// round trips (about 100 ms each), and renewed every third of it, so a
/// live holder never loses it to a slow Redis call.
pub(crate) const LEASE: Duration = Duration::from_secs(5);

/// How often a waiter asks Redis whether its turn came, besides hearing
/// it announced: a lost message or an expired lease costs at most this.
/// 250 ms: a few writes' time, a few calls a second per waiting process.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// How long Redis keeps a session's queue and document after its last
/// write: 60 s, longer than any write waits (the 20 s default deadline),
/// after which an idle session leaves Redis on its own.
pub(crate) const KEPT: Duration = Duration::from_secs(60);

/// The largest session document kept in Redis: 64 KiB, many times an
/// MPSD session's usual few KiB; a larger one is kept as its `ETag` only,
/// and writes are then rebased by the 412 they meet.
pub(crate) const DOCUMENT_CAP: usize = 64 * 1024;

/// Superseded `ETag`s kept per session: as many as the writes that may
/// wait in one process's queue (the in-process board's default).
const SUPERSEDED: usize = 128;

/// Grants the head of the queue the turn when no one holds it; skips
/// tickets whose writes gave up. Defines `now` (ms of Redis's `TIME`).
/// `KEYS`: q, alive, lease; `ARGV[1]` token, `ARGV[2]` lease ms,
/// `ARGV[3]` channel.
const ADVANCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function advance()
  local holder = redis.call('GET', KEYS[3])
  if holder then return holder end
  while true do
    local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
    if not head then return false end
    redis.call('ZREM', KEYS[1], head)
    local last = tonumber(redis.call('HGET', KEYS[2], head) or '0') or 0
    redis.call('HDEL', KEYS[2], head)
    if last > now then
      redis.call('SET', KEYS[3], head, 'PX', ARGV[2])
      redis.call('PUBLISH', ARGV[3], head)
      return head
    end
  end
end
local function known()
  local snap = redis.call('HMGET', KEYS[5], 'etag', 'body')
  local out = {1, snap[1] or '', snap[2] or ''}
  for _, e in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do out[#out + 1] = e end
  return out
end
";

/// Takes a ticket. `KEYS`: q, alive, lease, seq, snap, sup; `ARGV` as
/// [`ADVANCE`], then `ARGV[4]` ms until the write's deadline, `ARGV[5]`
/// ms the keys are kept. Returns `{1, etag, body, superseded...}` with the
/// turn, else `{0}`.
const ENTER: &str = r"
local n = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[1], n, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[4]))
for _, i in ipairs({1, 2, 4}) do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
if advance() == ARGV[1] then return known() end
return {0}
";

/// Asks whether the turn came. `KEYS`, `ARGV` as [`ENTER`]'s. Returns
/// `{1, ...}` with the turn, `{0}` while waiting, `{-1}` when the ticket is
/// gone (its deadline passed on Redis's clock).
const POLL_TURN: &str = r"
if advance() == ARGV[1] then return known() end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {0} end
return {-1}
";

/// Leaves the queue, or the turn, handing it on. `KEYS`: q, alive, lease.
const LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
  advance()
end
return 1
";

/// Ends a turn, leaving what it learnt of the session, and hands the turn
/// on. `KEYS`: q, alive, lease, seq, snap, sup; `ARGV` as [`ADVANCE`],
/// then `ARGV[4]` ms kept, `ARGV[5]` `keep` | `gone` | `session`,
/// `ARGV[6]` the `ETag`, `ARGV[7]` the document (empty: over the cap),
/// `ARGV[8]` how many superseded `ETag`s are kept, `ARGV[9..]` the `ETag`s
/// the holder's writes superseded. Only a holder
/// still holding the turn writes the session: one whose lease ran out may
/// know an older one than the next holder left.
const RELEASE: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
if ARGV[5] == 'gone' then
  redis.call('DEL', KEYS[5], KEYS[6])
elseif ARGV[5] == 'session' then
  local etag = ARGV[6]
  local old = redis.call('HGET', KEYS[5], 'etag')
  local listed = {}
  for _, e in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do listed[e] = true end
  local function supersede(e)
    if e and e ~= etag and e ~= '*' and not listed[e] then
      listed[e] = true
      redis.call('LPUSH', KEYS[6], e)
    end
  end
  supersede(old)
  for i = 9, #ARGV do supersede(ARGV[i]) end
  redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[8]) - 1)
  redis.call('HSET', KEYS[5], 'etag', etag, 'body', ARGV[7])
  redis.call('PEXPIRE', KEYS[5], ARGV[4])
  redis.call('PEXPIRE', KEYS[6], ARGV[4])
end
redis.call('DEL', KEYS[3])
advance()
return 1
";

/// Renews the lease of a holder still holding it. `KEYS`: q, alive, lease.
const RENEW: &str = r"
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return 1
end
return 0
";

/// The scripts, compiled once per process.
struct Scripts {
    enter: Script,
    poll: Script,
    leave: Script,
    release: Script,
    renew: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_advance = |body: &str| Script::new(&format!("{ADVANCE}{body}"));
        Self {
            enter: with_advance(ENTER),
            poll: with_advance(POLL_TURN),
            leave: with_advance(LEAVE),
            release: with_advance(RELEASE),
            renew: Script::new(RENEW),
        }
    }
}

/// The session as Redis knew it when a write was given its turn.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) etag: HeaderValue,
    /// Empty when the document was over the cap.
    pub(crate) body: Bytes,
    pub(crate) superseded: Vec<HeaderValue>,
}

/// The `ETag` and lengths, not the document.
impl fmt::Debug for Known {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Known")
            .field("etag", &self.etag)
            .field("body_len", &self.body.len())
            .field("superseded", &self.superseded.len())
            .finish()
    }
}

/// What a turn learnt of the session, left in Redis when it ends.
#[derive(Debug, Clone, Default)]
pub(crate) enum Learnt {
    /// Nothing: the session stays as Redis knows it.
    #[default]
    Nothing,
    /// The session is gone, or nothing usable of it is known.
    Gone,
    /// The session at this `ETag` (and document, within the cap).
    Session { etag: HeaderValue, body: Bytes },
}

/// One answer of [`ENTER`] or [`POLL_TURN`].
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Turn(Option<Known>),
    Waiting,
    Lost,
}

/// Reads a script's answer: `{1, etag, body, superseded...}`, `{0}` or
/// `{-1}`; anything else is no answer.
fn answer(value: Value) -> Option<Answer> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut items = items.into_iter();
    match items.next()? {
        Value::Int(0) => Some(Answer::Waiting),
        Value::Int(-1) => Some(Answer::Lost),
        Value::Int(1) => {
            let mut strings = items.map(|v| match v {
                Value::BulkString(bytes) => Some(Bytes::from(bytes)),
                _ => None,
            });
            let etag = strings.next()??;
            let body = strings.next()??;
            let superseded: Option<Vec<_>> = strings
                .map(|e| e.and_then(|e| HeaderValue::from_maybe_shared(e).ok()))
                .collect();
            let known = match HeaderValue::from_maybe_shared(etag) {
                Ok(etag) if !etag.is_empty() => Some(Known {
                    etag,
                    body,
                    superseded: superseded?,
                }),
                _ => None,
            };
            Some(Answer::Turn(known))
        }
        _ => None,
    }
}

/// The fleet's session board: shared by the clones of a
/// [`SessionBoard`](crate::sequence::SessionBoard) given a store.
pub(crate) struct FleetBoard {
    store: RedisStore,
    scripts: Scripts,
    /// This process's part of every token.
    instance: u64,
    tickets: AtomicU64,
    /// Waiters of this process by token, woken when their turn is heard.
    waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for FleetBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBoard")
            .field("store", &self.store)
            .field("waiting", &lock(&self.waiters).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for FleetBoard {
    fn drop(&mut self) {
        if let Some(listener) = lock(&self.listener).take() {
            listener.abort();
        }
    }
}

/// A write's turn in its session's fleet queue: renewed while held, handed
/// on (with what it learnt) when dropped.
pub(crate) struct FleetTurn {
    board: Arc<FleetBoard>,
    session: String,
    token: String,
    renewing: JoinHandle<()>,
    learnt: Learnt,
    superseded: Vec<HeaderValue>,
}

impl fmt::Debug for FleetTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetTurn")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// What waiting for a fleet turn gave: the turn and the session as Redis
/// knew it, or `None` when Redis is away (the in-process turn alone: fail
/// open).
pub(crate) type Granted = Option<(FleetTurn, Option<Known>)>;

impl FleetBoard {
    pub(crate) fn new(store: RedisStore) -> Arc<Self> {
        Arc::new(Self {
            store,
            scripts: Scripts::new(),
            instance: HasherRng::new().next_u64(),
            tickets: AtomicU64::new(0),
            waiters: Arc::default(),
            listener: Mutex::new(None),
        })
    }

    /// The keys of one session's calls: q, alive, lease, seq, snap, sup.
    fn keys(&self, session: &str) -> [String; 6] {
        [":q", ":alive", ":lease", ":seq", ":snap", ":sup"]
            .map(|part| self.store.board_key(session, part))
    }

    fn channel(&self) -> String {
        self.store.board_channel()
    }

    /// Waits for the turn of `session` in the fleet's queue until
    /// `deadline`: `Err(())` when it did not come in time.
    pub(crate) async fn turn(
        self: &Arc<Self>,
        session: &str,
        deadline: Instant,
    ) -> Result<Granted, ()> {
        let n = self.tickets.fetch_add(1, Ordering::Relaxed);
        let token = format!("{:016x}-{n}", self.instance);
        let notify = Arc::new(Notify::new());
        lock(&self.waiters).insert(token.clone(), notify.clone());
        let mut ticket = Ticket {
            board: self.clone(),
            session: session.to_owned(),
            token,
            entered: false,
        };
        self.listen();
        let mut answer = ticket.enter(deadline).await;
        loop {
            match answer {
                None => return Ok(None),
                Some(Answer::Turn(known)) => return Ok(Some((ticket.into_turn(), known))),
                Some(Answer::Lost) => answer = ticket.enter(deadline).await,
                Some(Answer::Waiting) => {
                    let next = (Instant::now() + POLL).min(deadline);
                    tokio::select! {
                        () = notify.notified() => {}
                        () = sleep_until(next) => {}
                    }
                    if Instant::now() >= deadline {
                        return Err(());
                    }
                    answer = ticket.poll().await;
                }
            }
        }
    }

    /// Starts listening for announced turns, unless it already is.
    fn listen(self: &Arc<Self>) {
        let mut listener = lock(&self.listener);
        if listener.as_ref().is_some_and(|l| !l.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (subscriber, channel) = (self.store.board_subscriber().clone(), self.channel());
        let waiters = Arc::downgrade(&self.waiters);
        *listener = Some(runtime.spawn(announced(subscriber, channel, waiters)));
    }

    fn forget(&self, token: &str) {
        lock(&self.waiters).remove(token);
    }

    /// Runs `script` on the session's keys with the token, the lease and the
    /// channel, then `more`.
    async fn call(
        &self,
        script: &Script,
        session: &str,
        token: &str,
        more: &[&[u8]],
    ) -> Option<Value> {
        let mut invocation = script.prepare_invoke();
        for key in self.keys(session) {
            invocation.key(key);
        }
        invocation
            .arg(token)
            .arg(LEASE.as_millis() as u64)
            .arg(self.channel());
        for arg in more {
            invocation.arg(*arg);
        }
        self.store.board_run(invocation).await
    }
}

/// Until the board is dropped, or the subscription fails (the next waiter
/// starts another): wakes the waiter of each token announced.
async fn announced(
    subscriber: Subscriber,
    channel: String,
    waiters: Weak<Mutex<HashMap<String, Arc<Notify>>>>,
) {
    let subscribed = async {
        // One node (a cluster's first seed): it hears every node's messages.
        let mut pubsub = subscriber.connect(0).await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    let Ok(Ok(mut messages)) = tokio::time::timeout(POLL, subscribed).await else {
        return;
    };
    while let Some(message) = messages.next().await {
        let Some(waiters) = waiters.upgrade() else {
            return;
        };
        let token: String = message.get_payload().unwrap_or_default();
        let waiter = lock(&waiters).get(&token).cloned();
        if let Some(waiter) = waiter {
            waiter.notify_one();
        }
    }
}

/// A place in a session's fleet queue, left when dropped unless it became
/// the turn.
struct Ticket {
    board: Arc<FleetBoard>,
    session: String,
    token: String,
    entered: bool,
}

impl Ticket {
    async fn enter(&mut self, deadline: Instant) -> Option<Answer> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let wait = wait.as_millis().min(u128::from(u32::MAX)).to_string();
        let kept = KEPT.as_millis().to_string();
        let board = self.board.clone();
        // Left when dropped from here on, even halfway through the call.
        self.entered = true;
        let value = board
            .call(
                &board.scripts.enter,
                &self.session,
                &self.token,
                &[wait.as_bytes(), kept.as_bytes()],
            )
            .await;
        answer(value?)
    }

    async fn poll(&mut self) -> Option<Answer> {
        let board = self.board.clone();
        let value = board
            .call(&board.scripts.poll, &self.session, &self.token, &[])
            .await;
        answer(value?)
    }

    fn into_turn(mut self) -> FleetTurn {
        self.entered = false;
        let board = self.board.clone();
        let (session, token) = (
            std::mem::take(&mut self.session),
            std::mem::take(&mut self.token),
        );
        board.forget(&token);
        let renewing = spawn_renewal(board.clone(), session.clone(), token.clone());
        FleetTurn {
            board,
            session,
            token,
            renewing,
            learnt: Learnt::Nothing,
            superseded: Vec::new(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.board.forget(&self.token);
        if !self.entered {
            return;
        }
        let (board, session, token) =
            (self.board.clone(), self.session.clone(), self.token.clone());
        super::spawn(async move {
            board
                .call(&board.scripts.leave, &session, &token, &[])
                .await
                .map(drop)
        });
    }
}

fn spawn_renewal(board: Arc<FleetBoard>, session: String, token: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LEASE / 3).await;
            let renewed = board
                .call(&board.scripts.renew, &session, &token, &[])
                .await;
            if renewed != Some(Value::Int(1)) {
                return;
            }
        }
    })
}

impl FleetTurn {
    /// Notes what an answer said of the session: left in Redis when the
    /// turn ends. `sent`: the `ETag`s the write was conditional on.
    pub(crate) fn learnt(&mut self, learnt: Learnt, sent: [Option<&HeaderValue>; 2]) {
        let before = std::mem::replace(&mut self.learnt, learnt);
        let earlier = match &before {
            Learnt::Session { etag, .. } => Some(etag),
            Learnt::Nothing | Learnt::Gone => None,
        };
        supersede(
            &mut self.superseded,
            earlier.into_iter().chain(sent.into_iter().flatten()),
        );
    }
}

/// Adds `etags` to a turn's `superseded`, once each, at most
/// [`SUPERSEDED`] in all (the first kept: the oldest a waiting write may
/// hold).
fn supersede<'a>(superseded: &mut Vec<HeaderValue>, etags: impl Iterator<Item = &'a HeaderValue>) {
    for etag in etags {
        if superseded.len() < SUPERSEDED && !superseded.contains(etag) {
            superseded.push(etag.clone());
        }
    }
}

impl Drop for FleetTurn {
    fn drop(&mut self) {
        self.renewing.abort();
        let (board, session, token) = (
            self.board.clone(),
            std::mem::take(&mut self.session),
            std::mem::take(&mut self.token),
        );
        let learnt = std::mem::take(&mut self.learnt);
        let superseded = std::mem::take(&mut self.superseded);
        super::spawn(async move {
            let kept = KEPT.as_millis().to_string();
            let (mode, etag, body): (&[u8], Bytes, Bytes) = match learnt {
                Learnt::Nothing => (b"keep", Bytes::new(), Bytes::new()),
                Learnt::Gone => (b"gone", Bytes::new(), Bytes::new()),
                Learnt::Session { etag, body } => {
                    let body = if body.len() <= DOCUMENT_CAP {
                        body
                    } else {
                        Bytes::new()
                    };
                    (b"session", Bytes::copy_from_slice(etag.as_bytes()), body)
                }
            };
            let cap = SUPERSEDED.to_string();
            let mut args: Vec<&[u8]> = vec![kept.as_bytes(), mode, &etag, &body, cap.as_bytes()];
            args.extend(superseded.iter().map(HeaderValue::as_bytes));
            board
                .call(&board.scripts.release, &session, &token, &args)
                .await
                .map(drop)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn answers_are_read_or_refused_never_a_panic() {
        assert_eq!(
            answer(Value::Array(vec![Value::Int(0)])),
            Some(Answer::Waiting)
        );
        assert_eq!(
            answer(Value::Array(vec![Value::Int(-1)])),
            Some(Answer::Lost)
        );
        let turn = Value::Array(vec![
            Value::Int(1),
            bulk("\"e2\""),
            bulk("{}"),
            bulk("\"e1\""),
        ]);
        let Some(Answer::Turn(Some(known))) = answer(turn) else {
            panic!("a turn with the session")
        };
        assert_eq!(known.etag, "\"e2\"");
        assert_eq!(known.body, "{}");
        assert_eq!(known.superseded, ["\"e1\""]);
        let nothing = Value::Array(vec![Value::Int(1), bulk(""), bulk("")]);
        assert_eq!(
            answer(nothing),
            Some(Answer::Turn(None)),
            "no session known"
        );
        for bad in [
            Value::Nil,
            Value::Int(1),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(7)]),
            Value::Array(vec![Value::Int(1), bulk("\"e\"")]),
            Value::Array(vec![
                Value::Int(1),
                bulk("\"e\""),
                bulk("{}"),
                Value::Int(3),
            ]),
            Value::Array(vec![
                Value::Int(1),
                bulk("\"e\""),
                bulk("{}"),
                bulk("bad\n"),
            ]),
        ] {
            assert_eq!(answer(bad.clone()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_turn_remembers_what_its_writes_superseded_once_each_within_the_cap() {
        let e = |i: usize| HeaderValue::from_str(&format!("\"{i}\"")).unwrap();
        let mut superseded = Vec::new();
        supersede(&mut superseded, [e(1), e(2), e(1)].iter());
        assert_eq!(superseded, [e(1), e(2)]);
        let many: Vec<_> = (0..300).map(e).collect();
        supersede(&mut superseded, many.iter());
        assert_eq!(superseded.len(), SUPERSEDED);
        assert_eq!(superseded[..3], [e(1), e(2), e(0)], "the first kept");
    }
}
