//! The shared state of write sequencing: per session, a FIFO gate and the
//! latest session seen, in a map bounded by sessions and by bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderValue, Uri};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Per-session write queues and the latest session document seen, shared
/// by every clone of the [`RebaseLayer`](crate::rebase::RebaseLayer) it is
/// given (and by every stack given the same board: clones of a board share
/// it).
///
/// - **Queue**: one conditional write per session at a time, first come
///   first served; the next goes when the one before is done (through
///   its rebase rounds after a 412; once its body has been read after a
///   200 or 201 carrying the session; at once after any other answer's
///   head).
/// - **Snapshot**: the session document and `ETag` of the latest answer
///   to a sequenced write (200, 201, or a 412 and the session it carried
///   or a re-read found), and
///   the `ETag`s it superseded: a write conditional on one of those is
///   rebased before it is sent.
///
/// | default | value | why |
/// |---|---|---|
/// | sessions held | 1,000 | a process writes to few sessions at once; an idle session's entry is a few hundred bytes plus its document |
/// | bytes held | 16 MiB | a thousand 16 KiB session documents |
/// | writes waiting per session | 128 | at ~100 ms per MPSD write, 128 queued writes take ~13 s, within the 20 s deadline; more could not be served in time |
///
/// Sessions are forgotten least recently used first; one whose queue is in
/// use keeps its gate and loses only its document. The superseded `ETag`s
/// kept per session are as many as the writes that may wait
/// (`max_waiting`): a waiting write read its session at most about that
/// many writes ago.
#[derive(Clone)]
pub struct SessionBoard {
    shared: Arc<Shared>,
}

/// Bounds and counts only: the board holds session documents, which may
/// carry what no log should.
impl fmt::Debug for SessionBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("SessionBoard");
        debug.field("limits", &self.shared.limits);
        // Never waits: a `Debug` inside a holder of the lock would hang.
        if let Ok(sessions) = self.shared.sessions.try_lock() {
            debug
                .field("sessions", &sessions.map.len())
                .field("bytes", &sessions.bytes);
        }
        debug
            .field("stats", &self.shared.stats)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SessionBoard`] with other bounds.
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionBoardBuilder {
    limits: Limits,
    #[cfg(feature = "redis")]
    store: Option<crate::fleet::RedisStore>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_sessions: usize,
    max_bytes: usize,
    max_waiting: usize,
}

struct Shared {
    limits: Limits,
    sessions: Mutex<Sessions>,
    stats: SequenceStats,
    /// The fleet's queues and sessions, when shared through Redis.
    #[cfg(feature = "redis")]
    fleet: Option<Arc<crate::fleet::FleetBoard>>,
}

/// Counters of a [`SessionBoard`], across every stack that shares it.
#[derive(Debug, Default)]
pub struct SequenceStats {
    writes_sequenced: AtomicU64,
    waited: AtomicU64,
    rebased_before_sending: AtomicU64,
    precondition_failed: AtomicU64,
    refused: AtomicU64,
}

crate::macros::counter_getters!(
    SequenceStats;
    /// Conditional writes that went through a session's queue.
    writes_sequenced,
    /// Of those, the ones that had to wait for their turn.
    waited,
    /// Writes rebased on the known session before they were sent, with no
    /// round trip of their own.
    rebased_before_sending,
    /// 412s the sequenced writes received (from the server, counting every
    /// conflict round).
    precondition_failed,
    /// Writes refused unsent: the queue was full, or their turn would not
    /// come before their deadline.
    refused
);

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Waited,
    RebasedBeforeSending,
    PreconditionFailed,
    Refused,
}

#[derive(Default)]
struct Sessions {
    map: HashMap<Uri, Session>,
    /// Sessions by last use, oldest first.
    order: BTreeMap<u64, Uri>,
    tick: u64,
    bytes: usize,
}

struct Session {
    gate: Arc<Semaphore>,
    waiting: usize,
    snapshot: Option<Snapshot>,
    /// ETags older than the snapshot's, newest last.
    superseded: VecDeque<HeaderValue>,
    tick: u64,
}

/// The latest session seen: its `ETag` and document.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) etag: HeaderValue,
    pub(crate) body: Bytes,
}

/// The `ETag` and the document's length, not the document.
impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("etag", &self.etag)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Session {
    fn new(tick: u64) -> Self {
        Self {
            gate: Arc::new(Semaphore::new(1)),
            waiting: 0,
            snapshot: None,
            superseded: VecDeque::new(),
            tick,
        }
    }

    /// Bytes it is counted for: its document and ETags.
    fn cost(&self) -> usize {
        let snapshot = self
            .snapshot
            .as_ref()
            .map_or(0, |s| s.etag.len() + s.body.len());
        snapshot + self.superseded.iter().map(HeaderValue::len).sum::<usize>()
    }

    /// No write holds or awaits its gate.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.gate) == 1
    }

    fn forget_document(&mut self) {
        self.snapshot = None;
        self.superseded.clear();
    }
}

/// A write's turn in its session's queue: the next write goes when it is
/// dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    _permit: OwnedSemaphorePermit,
    /// The turn in the fleet's queue too, when shared through Redis.
    #[cfg(feature = "redis")]
    fleet: Option<crate::fleet::FleetTurn>,
}

impl Turn {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: permit,
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    /// Notes what an answer to the write holding the turn said, for the
    /// fleet: it is left in Redis when the turn ends. `sent` as in
    /// [`SessionBoard::record`].
    pub(crate) fn saw(&mut self, seen: &Seen, sent: [Option<&HeaderValue>; 2]) {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &mut self.fleet {
            let learnt = match seen {
                Seen::Gone => crate::fleet::Learnt::Gone,
                Seen::Session(now) => crate::fleet::Learnt::Session {
                    etag: now.etag.clone(),
                    body: now.body.clone(),
                },
            };
            fleet.learnt(learnt, sent);
        }
        #[cfg(not(feature = "redis"))]
        let _ = (seen, sent);
    }
}

/// What a write entering its session's queue gets.
pub(crate) enum Entry {
    /// Its turn, at once.
    Now(Turn),
    /// A wait for its turn, over at the deadline (`Err(())`).
    Wait(Pin<Box<dyn Future<Output = Result<Turn, ()>> + Send>>),
    /// The queue is full.
    Full,
}

/// What an answer to a sequenced write says about the session.
#[derive(Debug)]
pub(crate) enum Seen {
    /// The whole session at this ETag.
    Session(Snapshot),
    /// The session is gone (204).
    Gone,
}

impl Default for SessionBoard {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionBoard {
    /// A board with the default bounds (see the table above).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder, to change the bounds.
    pub fn builder() -> SessionBoardBuilder {
        SessionBoardBuilder {
            limits: Limits {
                max_sessions: 1_000,
                max_bytes: 16 << 20,
                max_waiting: 128,
            },
            #[cfg(feature = "redis")]
            store: None,
        }
    }

    /// The counters, shared by every stack using this board.
    pub fn stats(&self) -> &SequenceStats {
        &self.shared.stats
    }

    /// Sessions held now.
    pub fn sessions(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> MutexGuard<'_, Sessions> {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn count(&self, what: Count) {
        let stats = &self.shared.stats;
        let counter = match what {
            Count::Waited => &stats.waited,
            Count::RebasedBeforeSending => &stats.rebased_before_sending,
            Count::PreconditionFailed => &stats.precondition_failed,
            Count::Refused => &stats.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Enters the queue of `session`: the turn at once when no write of it
    /// is in flight or waiting, else a wait ending at `deadline`. Shared
    /// through Redis, the turn in this process's queue is then followed by
    /// the turn in the fleet's, and the session the fleet knows is noted.
    pub(crate) fn enter(&self, session: &Uri, deadline: Instant) -> Entry {
        let entry = self.enter_here(session, deadline);
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.shared.fleet.clone() {
            return self.then_fleet(fleet, entry, session, deadline);
        }
        entry
    }

    /// After the turn `entry` gives in this process, the fleet's.
    #[cfg(feature = "redis")]
    fn then_fleet(
        &self,
        fleet: Arc<crate::fleet::FleetBoard>,
        entry: Entry,
        session: &Uri,
        deadline: Instant,
    ) -> Entry {
        let here: Pin<Box<dyn Future<Output = Result<Turn, ()>> + Send>> = match entry {
            Entry::Full => return Entry::Full,
            Entry::Now(turn) => Box::pin(std::future::ready(Ok(turn))),
            Entry::Wait(wait) => wait,
        };
        let (board, session) = (self.clone(), session.clone());
        Entry::Wait(Box::pin(async move {
            let mut turn = here.await?;
            if let Some((fleet_turn, known)) = fleet.turn(session.path(), deadline).await? {
                if let Some(known) = known {
                    board.adopt(&session, known);
                }
                turn.fleet = Some(fleet_turn);
            }
            Ok(turn)
        }))
    }

    /// Notes the session as the fleet knows it: the latest, superseding
    /// the `ETag`s it lists (a document over the fleet's cap is not known
    /// here either).
    #[cfg(feature = "redis")]
    fn adopt(&self, session: &Uri, known: crate::fleet::Known) {
        let crate::fleet::Known {
            etag,
            body,
            superseded,
        } = known;
        if body.is_empty() {
            self.record(session, [None, None], Seen::Gone);
            return;
        }
        let seen = Seen::Session(Snapshot { etag, body });
        // Redis lists the newest first; the board keeps them oldest first,
        // and forgets from the front.
        let mut superseded = superseded;
        superseded.reverse();
        self.record_superseding(session, &superseded, seen);
    }

    /// [`enter`](Self::enter) within this process.
    fn enter_here(&self, session: &Uri, deadline: Instant) -> Entry {
        let limits = self.shared.limits;
        let mut sessions = self.lock();
        let entry = sessions.touch(session);
        let gate = entry.gate.clone();
        let turn = match gate.clone().try_acquire_owned() {
            Ok(permit) => Some(Turn::new(permit)),
            Err(_) if entry.waiting >= limits.max_waiting => return Entry::Full,
            Err(_) => {
                entry.waiting += 1;
                None
            }
        };
        // The new entry counts too; this one, in use, keeps its gate.
        sessions.evict(limits);
        drop(sessions);
        self.shared
            .stats
            .writes_sequenced
            .fetch_add(1, Ordering::Relaxed);
        if let Some(turn) = turn {
            return Entry::Now(turn);
        }
        let waiter = Waiter {
            board: self.clone(),
            session: session.clone(),
            _gate: gate.clone(),
        };
        Entry::Wait(Box::pin(async move {
            let _waiter = waiter;
            match tokio::time::timeout_at(deadline, gate.acquire_owned()).await {
                Ok(Ok(permit)) => Ok(Turn::new(permit)),
                // The gate is never closed; a deadline passed.
                _ => Err(()),
            }
        }))
    }

    /// The session a write conditional on `if_match` (`None`: create-only)
    /// should be rebased on before it is sent: the latest seen, when the
    /// write's ETag is one it superseded, or, for a create-only write, when
    /// the session is known to exist.
    pub(crate) fn stale(&self, session: &Uri, if_match: Option<&HeaderValue>) -> Option<Snapshot> {
        let sessions = self.lock();
        let entry = sessions.map.get(session)?;
        let snapshot = entry.snapshot.as_ref()?;
        match if_match {
            None => Some(snapshot.clone()),
            Some(etag) if entry.superseded.contains(etag) => Some(snapshot.clone()),
            Some(_) => None,
        }
    }

    /// Notes what the answer to a write conditional on `sent` (the
    /// `If-Match` values it carried, first and last) says: the session as it
    /// is now, superseding `sent`, or that it is gone.
    pub(crate) fn record(&self, session: &Uri, sent: [Option<&HeaderValue>; 2], seen: Seen) {
        let sent: Vec<HeaderValue> = sent.into_iter().flatten().cloned().collect();
        self.record_superseding(session, &sent, seen);
    }

    /// [`record`](Self::record), with every `ETag` the answer superseded.
    fn record_superseding(&self, session: &Uri, sent: &[HeaderValue], seen: Seen) {
        let limits = self.shared.limits;
        let mut sessions = self.lock();
        let before = sessions.map.get(session).map_or(0, Session::cost);
        let entry = sessions.touch(session);
        match seen {
            Seen::Gone => entry.forget_document(),
            Seen::Session(now) => {
                let old = entry.snapshot.take().map(|s| s.etag);
                for etag in old.iter().chain(sent) {
                    // `If-Match: *` matches any version: never stale.
                    let any = etag == "*";
                    if !any && *etag != now.etag && !entry.superseded.contains(etag) {
                        entry.superseded.push_back(etag.clone());
                    }
                }
                while entry.superseded.len() > limits.max_waiting {
                    entry.superseded.pop_front();
                }
                entry.snapshot = Some(now);
            }
        }
        let after = entry.cost();
        if after > limits.max_bytes {
            entry.forget_document();
        }
        let after = entry.cost();
        sessions.bytes = sessions.bytes + after - before;
        sessions.evict(limits);
    }
}

impl Sessions {
    /// The entry of `session`, made if new, now the most recently used.
    fn touch(&mut self, session: &Uri) -> &mut Session {
        self.tick += 1;
        let tick = self.tick;
        match self.map.get_mut(session) {
            Some(entry) => {
                self.order.remove(&entry.tick);
                entry.tick = tick;
            }
            None => {
                self.map.insert(session.clone(), Session::new(tick));
            }
        }
        self.order.insert(tick, session.clone());
        self.map.get_mut(session).expect("just made")
    }

    /// Forgets least recently used sessions until both bounds hold; a
    /// session in use loses only its document.
    fn evict(&mut self, limits: Limits) {
        let mut from = 0;
        while self.map.len() > limits.max_sessions || self.bytes > limits.max_bytes {
            let Some((&tick, session)) = self.order.range(from..).next() else {
                break;
            };
            from = tick + 1;
            let session = session.clone();
            let entry = self.map.get_mut(&session).expect("every entry is ordered");
            self.bytes -= entry.cost();
            if entry.idle() {
                self.map.remove(&session);
                self.order.remove(&tick);
            } else {
                entry.forget_document();
            }
        }
    }
}

/// A write waiting for its turn; leaving the wait (turn, deadline or a
/// dropped future) frees its place.
struct Waiter {
    board: SessionBoard,
    session: Uri,
    /// Held until its place is freed, so that the session's entry (the
    /// one counting it) is in use, never evicted and made anew meanwhile,
    /// whatever order a dropped wait's parts go in.
    _gate: Arc<Semaphore>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(entry) = self.board.lock().map.get_mut(&self.session) {
            entry.waiting = entry.waiting.saturating_sub(1);
        }
    }
}

impl SessionBoardBuilder {
    /// The most sessions held. Default 1,000.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.limits.max_sessions = n;
        self
    }

    /// The most bytes of session documents and ETags held. Default 16 MiB.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// The most writes waiting per session; one more is refused at once
    /// ([`Refused`](crate::error::Refused) by
    /// [`RefusedBy::Queue`](crate::error::RefusedBy::Queue)). Default 128.
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.limits.max_waiting = n;
        self
    }

    /// Shares the write order and the latest session of each session with
    /// every process given a store of the same Redis (see
    /// [`crate::sequence`]'s "A fleet"). Requires the `redis` feature.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, store: crate::fleet::RedisStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The board.
    pub fn build(self) -> SessionBoard {
        SessionBoard {
            shared: Arc::new(Shared {
                limits: self.limits,
                sessions: Mutex::default(),
                stats: SequenceStats::default(),
                #[cfg(feature = "redis")]
                fleet: self.store.map(crate::fleet::FleetBoard::new),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(name: &str) -> Uri {
        format!("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/{name}")
            .parse()
            .unwrap()
    }

    fn snapshot(etag: &'static str, body: &'static str) -> Seen {
        Seen::Session(Snapshot {
            etag: HeaderValue::from_static(etag),
            body: Bytes::from_static(body.as_bytes()),
        })
    }

    #[test]
    fn only_an_etag_the_board_saw_superseded_is_stale() {
        let board = SessionBoard::new();
        let s = uri("s");
        let e = |v: &'static str| HeaderValue::from_static(v);
        assert!(board.stale(&s, Some(&e("\"1\""))).is_none());
        assert!(board.stale(&s, None).is_none(), "no session known");
        board.record(&s, [Some(&e("\"1\"")), None], snapshot("\"2\"", "{}"));
        board.record(
            &s,
            [Some(&e("\"2\"")), None],
            snapshot("\"3\"", "{\"a\":1}"),
        );
        for old in ["\"1\"", "\"2\""] {
            assert_eq!(board.stale(&s, Some(&e(old))).unwrap().etag, "\"3\"");
        }
        assert!(board.stale(&s, Some(&e("\"3\""))).is_none(), "current");
        assert!(board.stale(&s, Some(&e("\"9\""))).is_none(), "unknown");
        assert!(board.stale(&s, Some(&e("*"))).is_none());
        assert_eq!(board.stale(&s, None).unwrap().body, "{\"a\":1}");
        board.record(&s, [None, None], Seen::Gone);
        assert!(board.stale(&s, Some(&e("\"1\""))).is_none());
        assert!(board.stale(&s, None).is_none(), "gone");
    }

    #[test]
    fn the_board_is_bounded_by_sessions_and_bytes_and_keeps_busy_gates() {
        let board = SessionBoard::builder()
            .max_sessions(2)
            .max_bytes(100)
            .build();
        let held = match board.enter(&uri("a"), Instant::now()) {
            Entry::Now(turn) => turn,
            _ => panic!("free"),
        };
        board.record(&uri("a"), [None, None], snapshot("\"1\"", "{}"));
        board.record(&uri("b"), [None, None], snapshot("\"1\"", "{}"));
        board.record(&uri("c"), [None, None], snapshot("\"1\"", "{}"));
        // `a` is the oldest but busy: it keeps its gate, loses its document.
        assert_eq!(board.sessions(), 2, "b went instead");
        assert!(board.stale(&uri("a"), None).is_none());
        assert!(matches!(
            board.enter(&uri("a"), Instant::now()),
            Entry::Wait(_)
        ));
        drop(held);
        let big = Box::leak("x".repeat(200).into_boxed_str());
        board.record(&uri("c"), [None, None], snapshot("\"2\"", big));
        assert!(board.stale(&uri("c"), None).is_none(), "over the byte cap");
        assert!(board.lock().bytes <= 100);
    }

    #[test]
    fn if_match_any_is_never_stale() {
        let board = SessionBoard::new();
        let s = uri("s");
        let any = HeaderValue::from_static("*");
        board.record(&s, [Some(&any), None], snapshot("\"2\"", "{}"));
        assert!(board.stale(&s, Some(&any)).is_none());
    }

    #[test]
    fn sessions_entered_but_never_answered_are_bounded_too() {
        let board = SessionBoard::builder().max_sessions(2).build();
        let far = Instant::now() + std::time::Duration::from_secs(60);
        for name in ["a", "b", "c", "d"] {
            // A write that failed: its turn ends, nothing is recorded.
            let Entry::Now(turn) = board.enter(&uri(name), far) else {
                panic!("free")
            };
            drop(turn);
        }
        assert_eq!(board.sessions(), 2);
    }

    #[cfg(feature = "redis")]
    #[test]
    fn of_the_etags_the_fleet_saw_superseded_the_newest_are_kept() {
        let board = SessionBoard::builder().max_waiting(3).build();
        let s = uri("s");
        let e = |i: u32| HeaderValue::from_str(&format!("\"{i}\"")).unwrap();
        // Redis lists them newest first.
        let known = crate::fleet::Known {
            etag: e(6),
            body: Bytes::from_static(b"{}"),
            superseded: (1..6).rev().map(e).collect(),
        };
        board.adopt(&s, known);
        for old in [3, 4, 5] {
            assert_eq!(board.stale(&s, Some(&e(old))).unwrap().etag, e(6));
        }
        assert!(
            board.stale(&s, Some(&e(2))).is_none(),
            "the oldest forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_queue_in_order_and_a_dropped_waiter_frees_its_place() {
        let board = SessionBoard::builder().max_waiting(2).build();
        let s = uri("s");
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let Entry::Now(first) = board.enter(&s, far) else {
            panic!()
        };
        let Entry::Wait(second) = board.enter(&s, far) else {
            panic!()
        };
        let Entry::Wait(third) = board.enter(&s, far) else {
            panic!()
        };
        assert!(matches!(board.enter(&s, far), Entry::Full));
        drop(second);
        let Entry::Wait(fourth) = board.enter(&s, far) else {
            panic!("the dropped waiter's place is free")
        };
        drop(first);
        let third = third.await.expect("next in line");
        let soon = Instant::now() + std::time::Duration::from_secs(1);
        let Entry::Wait(late) = board.enter(&s, soon) else {
            panic!()
        };
        assert!(late.await.is_err(), "its deadline passed first");
        drop(third);
        assert!(fourth.await.is_ok());
        assert_eq!(board.stats().writes_sequenced(), 5);
    }
}
