//! Which ledger keys may exist: a Bloom filter over every claim record,
//! counter, running total and unique key in the store. The rules mostly ask
//! about keys that do not exist yet (a new person, a new certificate); the
//! filter answers those from memory, so the writer and evaluations read the
//! store only for keys that may be there. A false "may be there" costs one
//! store read; a key is never reported absent while the store holds it.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use fastbloom::AtomicBloomFilter;
use rust_decimal::Decimal;

use super::store::{key, px, Store};
use crate::rules::LedgerView;

/// Prefixes whose keys the filter tracks.
const TRACKED: [&str; 4] = [px::CLAIM, px::NUM, px::KEY, px::USAGE];

/// Filter bits per planned key: 10 bits (with the optimal number of hashes,
/// 7) give about 1% false positives at the planned number of keys.
const BITS_PER_KEY: usize = 10;

pub struct Presence {
    filter: AtomicBloomFilter,
    planned: usize,
    inserted: AtomicUsize,
}

impl Presence {
    /// Filled from the store. `planned` keys fit at about 1% false positives
    /// (1.25 bytes a key); a store with more than half that many gets a
    /// filter planned for twice its keys.
    pub fn load(store: &Store, planned: usize) -> anyhow::Result<Self> {
        let p = Self::fill(store, planned.max(1024))?;
        let have = p.inserted.load(Ordering::Relaxed);
        if have > p.planned / 2 {
            return Self::fill(store, have * 2);
        }
        Ok(p)
    }

    fn fill(store: &Store, planned: usize) -> anyhow::Result<Self> {
        let p = Self {
            filter: AtomicBloomFilter::with_num_bits(planned.saturating_mul(BITS_PER_KEY)).expected_items(planned),
            planned,
            inserted: AtomicUsize::new(0),
        };
        let mut n = 0;
        for prefix in TRACKED {
            for kv in store.tree.scan_prefix(prefix.as_bytes()) {
                p.filter.insert(&*kv?.0);
                n += 1;
            }
        }
        p.inserted.store(n, Ordering::Relaxed);
        Ok(p)
    }

    pub fn tracks(k: &[u8]) -> bool {
        TRACKED.iter().any(|p| k.starts_with(p.as_bytes()))
    }

    /// False only when the store certainly lacks `k` (for tracked prefixes).
    pub fn may_contain(&self, k: &[u8]) -> bool {
        !Self::tracks(k) || self.filter.contains(k)
    }

    /// False only when no claim with this id is recorded.
    pub fn may_hold_claim(&self, claim_id: &str) -> bool {
        self.may_contain(&key(px::CLAIM, &[claim_id]))
    }

    /// Called before the key is written. (The count of keys is approximate: a
    /// key already present, or taken for present, is not counted.)
    pub fn insert(&self, k: &[u8]) {
        if !self.filter.insert(k) {
            self.inserted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keys recorded so far and the number planned (beyond it false positives
    /// grow; the next start plans for more).
    pub fn load_factor(&self) -> (usize, usize) {
        (self.inserted.load(Ordering::Relaxed), self.planned)
    }
}

/// The ledger as evaluations see it, without touching the store: answers from
/// the filter where it can, and notes when the store must be asked (the
/// caller then decides again with [`super::StoreView`] off the async workers).
pub struct PresenceView<'a> {
    presence: &'a Presence,
    needs_store: Cell<bool>,
}

impl<'a> PresenceView<'a> {
    pub fn new(presence: &'a Presence) -> Self {
        Self { presence, needs_store: Cell::new(false) }
    }

    /// Whether some answer was a guess because the key may exist.
    pub fn needs_store(&self) -> bool {
        self.needs_store.get()
    }

    /// Answers "absent"; notes when that is only a guess.
    fn absent(&self, k: Vec<u8>) {
        if self.presence.may_contain(&k) {
            self.needs_store.set(true);
        }
    }
}

impl LedgerView for PresenceView<'_> {
    fn count(&self, k: &str) -> u32 {
        self.absent(key(px::USAGE, &[k]));
        0
    }
    fn holder(&self, k: &str) -> Option<String> {
        self.absent(key(px::KEY, &[k]));
        None
    }
    fn total(&self, k: &str) -> Decimal {
        self.absent(key(px::NUM, &[k]));
        Decimal::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_written_are_never_reported_absent_and_untracked_keys_always_may_exist() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("s"), 1 << 20).expect("store");
        store.tree.insert(key(px::KEY, &["cert:A"]), b"C-1".to_vec()).expect("insert");
        store.tree.insert(key(px::USAGE, &["usage:wuyi:p1:2020"]), b"C-1".to_vec()).expect("insert");
        let p = Presence::load(&store, 1000).expect("filter");
        assert!(p.may_contain(&key(px::KEY, &["cert:A"])));
        assert!(p.may_contain(&key(px::USAGE, &["usage:wuyi:p1:2020"])));
        assert!(p.may_contain(&key(px::META, &["anything"])), "untracked prefixes are always read");
        let absent = (0..1000).filter(|i| !p.may_contain(&key(px::KEY, &[&format!("cert:{i}")]))).count();
        assert!(absent > 900, "a 1% filter rules out most new keys: {absent}");
        p.insert(&key(px::KEY, &["cert:B"]));
        assert!(p.may_contain(&key(px::KEY, &["cert:B"])));

        let view = PresenceView::new(&p);
        assert_eq!(view.count("usage:wuyi:p2:2020"), 0);
        let guessed = view.needs_store();
        assert_eq!(view.holder("cert:A"), None);
        assert!(view.needs_store(), "a key that may exist sends the caller to the store");
        assert!(!guessed || p.may_contain(&key(px::USAGE, &["usage:wuyi:p2:2020"])));
    }

    #[test]
    fn a_store_with_more_keys_than_half_the_plan_gets_a_larger_filter() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("s"), 1 << 20).expect("store");
        for i in 0..3000 {
            store.tree.insert(key(px::CLAIM, &[&format!("C-{i}")]), b"{}".to_vec()).expect("insert");
        }
        let p = Presence::load(&store, 1000).expect("filter");
        assert_eq!(p.load_factor(), (3000, 6000));
    }
}
