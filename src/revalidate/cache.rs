//! The pure bookkeeping of the revalidation cache: entries by key, bounded
//! by count and by bytes, the least recently used evicted first, and
//! dropped by session. No I/O.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

/// One cached read: what a 304 stands for.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The `ETag` the body was served with.
    pub(crate) etag: HeaderValue,
    /// The headers of the 200 that carried the body.
    pub(crate) headers: HeaderMap,
    /// The body.
    pub(crate) body: Bytes,
    /// The session the read was of (or under), to drop it on writes.
    pub(crate) group: Option<String>,
}

/// Bytes an entry is counted for: its key, body, `ETag`, group and headers.
fn cost(key: &str, entry: &Entry) -> usize {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    key.len()
        + entry.body.len()
        + entry.etag.len()
        + entry.group.as_ref().map_or(0, String::len)
        + headers
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    /// When it was last used; its key in `order`.
    tick: u64,
    cost: usize,
}

/// A least-recently-used map bounded by entry count and total bytes.
#[derive(Debug)]
pub(crate) struct Lru {
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    tick: u64,
    slots: HashMap<String, Slot>,
    /// Keys by last use, oldest first.
    order: BTreeMap<u64, String>,
}

impl Lru {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            bytes: 0,
            tick: 0,
            slots: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The entry at `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &str) -> Option<Entry> {
        let tick = self.next_tick();
        let slot = self.slots.get_mut(key)?;
        let key = self
            .order
            .remove(&slot.tick)
            .expect("every slot is ordered");
        slot.tick = tick;
        self.order.insert(tick, key);
        Some(slot.entry.clone())
    }

    /// Stores `entry` at `key` as the most recently used, evicting the
    /// least recently used ones until both bounds hold. An entry that alone
    /// exceeds a bound is not stored (and any older entry at `key` is
    /// dropped, as stale): `false`.
    pub(crate) fn insert(&mut self, key: String, entry: Entry) -> bool {
        self.remove(&key);
        let cost = cost(&key, &entry);
        if cost > self.max_bytes || self.max_entries == 0 {
            return false;
        }
        while self.slots.len() >= self.max_entries || self.bytes + cost > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(slot) = self.slots.remove(&oldest) {
                self.bytes -= slot.cost;
            }
        }
        let tick = self.next_tick();
        self.order.insert(tick, key.clone());
        self.slots.insert(key, Slot { entry, tick, cost });
        self.bytes += cost;
        true
    }

    /// Drops the entry at `key`, if any.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let Some(slot) = self.slots.remove(key) else {
            return false;
        };
        self.order.remove(&slot.tick);
        self.bytes -= slot.cost;
        true
    }

    /// Drops every entry of `group`; how many there were.
    pub(crate) fn invalidate(&mut self, group: &str) -> usize {
        let stale: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.entry.group.as_deref() == Some(group))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            self.remove(key);
        }
        stale.len()
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes held, as counted against the bound.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(body: &'static str, group: Option<&str>) -> Entry {
        Entry {
            etag: HeaderValue::from_static("\"e\""),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            group: group.map(str::to_owned),
        }
    }

    /// key "k" + body + etag (3 bytes).
    fn size(key: &str, body: &str) -> usize {
        key.len() + body.len() + 3
    }

    #[test]
    fn stores_and_serves_the_most_recent_entry() {
        let mut lru = Lru::new(4, 1000);
        assert!(lru.get("a").is_none());
        assert!(lru.insert("a".into(), entry("one", None)));
        assert!(lru.insert("a".into(), entry("three", None)));
        assert_eq!(lru.get("a").unwrap().body, "three");
        assert_eq!((lru.len(), lru.bytes()), (1, size("a", "three")));
    }

    #[test]
    fn the_least_recently_used_is_evicted_first() {
        let mut lru = Lru::new(2, 1000);
        lru.insert("a".into(), entry("1", None));
        lru.insert("b".into(), entry("2", None));
        lru.get("a");
        lru.insert("c".into(), entry("3", None));
        assert!(lru.get("b").is_none(), "b was least recently used");
        assert!(lru.get("a").is_some() && lru.get("c").is_some());
    }

    #[test]
    fn the_byte_bound_evicts_as_many_as_it_takes() {
        let mut lru = Lru::new(10, 3 * size("a", "xxxx"));
        for key in ["a", "b", "c"] {
            lru.insert(key.into(), entry("xxxx", None));
        }
        assert_eq!(lru.len(), 3);
        // Twice the size: the two oldest make room.
        assert!(lru.insert("d".into(), entry("xxxxxxxxxxxx", None)));
        assert_eq!(lru.len(), 2);
        assert!(lru.get("a").is_none() && lru.get("b").is_none());
        assert!(lru.get("c").is_some() && lru.get("d").is_some());
        assert!(lru.bytes() <= 3 * size("a", "xxxx"));
    }

    #[test]
    fn an_entry_over_the_byte_bound_is_not_stored_and_drops_the_stale_one() {
        let mut lru = Lru::new(10, 10);
        assert!(lru.insert("a".into(), entry("ok", None)));
        assert!(!lru.insert("a".into(), entry("far too long", None)));
        assert_eq!((lru.len(), lru.bytes()), (0, 0));
        let mut none = Lru::new(0, 1000);
        assert!(!none.insert("a".into(), entry("", None)));
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn a_session_is_dropped_with_all_its_elements() {
        let mut lru = Lru::new(10, 1000);
        lru.insert("s".into(), entry("doc", Some("s1")));
        lru.insert("s/members/me".into(), entry("me", Some("s1")));
        lru.insert("t".into(), entry("doc", Some("s2")));
        lru.insert("h".into(), entry("handle", None));
        assert_eq!(lru.invalidate("s1"), 2);
        assert_eq!(lru.invalidate("s1"), 0);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.bytes(), size("t", "doc") + 2 + size("h", "handle"));
        assert!(lru.remove("t") && !lru.remove("t"));
    }

    #[test]
    fn headers_and_groups_are_counted() {
        let mut e = entry("b", Some("grp"));
        e.headers
            .insert("content-type", HeaderValue::from_static("json"));
        let mut lru = Lru::new(10, 1000);
        lru.insert("k".into(), e);
        assert_eq!(lru.bytes(), size("k", "b") + 3 + "content-type".len() + 4);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Get(u8),
        Insert(u8, usize, u8),
        Remove(u8),
        Invalidate(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12).prop_map(Op::Get),
            (0u8..12, 0usize..60, 0u8..3).prop_map(|(k, n, g)| Op::Insert(k, n, g)),
            (0u8..12).prop_map(Op::Remove),
            (0u8..3).prop_map(Op::Invalidate),
        ]
    }

    proptest! {
        /// Whatever happens, the bounds hold, the byte count is exact, the
        /// order tracks every entry, and the newest insert that fits is kept.
        #[test]
        fn bounds_and_accounting_hold(
            max_entries in 0usize..6,
            max_bytes in 0usize..200,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut lru = Lru::new(max_entries, max_bytes);
            for op in ops {
                match op {
                    Op::Get(k) => { lru.get(&k.to_string()); }
                    Op::Insert(k, n, g) => {
                        let e = Entry {
                            etag: HeaderValue::from_static("\"e\""),
                            headers: HeaderMap::new(),
                            body: Bytes::from(vec![b'x'; n]),
                            group: Some(g.to_string()),
                        };
                        let key = k.to_string();
                        let fits = cost(&key, &e) <= max_bytes && max_entries > 0;
                        prop_assert_eq!(lru.insert(key.clone(), e), fits);
                        prop_assert_eq!(lru.get(&key).is_some(), fits);
                    }
                    Op::Remove(k) => { lru.remove(&k.to_string()); }
                    Op::Invalidate(g) => { lru.invalidate(&g.to_string()); }
                }
                prop_assert!(lru.len() <= max_entries);
                prop_assert!(lru.bytes() <= max_bytes);
                let counted: usize = lru.slots.iter().map(|(k, s)| cost(k, &s.entry)).sum();
                prop_assert_eq!(counted, lru.bytes());
                prop_assert_eq!(lru.order.len(), lru.slots.len());
                for (tick, key) in &lru.order {
                    prop_assert_eq!(lru.slots[key].tick, *tick);
                }
            }
        }
    }
}
