//! The materialised state: everything the rules read of the ledger, in
//! memory, rebuilt from the claim records' headers at start. Per-person
//! usage, unique keys, running totals and report totals are never written to
//! the store: each record carries what it holds, and the state is their sum.

use std::collections::HashMap;
use std::hash::BuildHasher;

use rust_decimal::Decimal;
use smallvec::SmallVec;

use super::keys::{digest, KeyDigest};
use super::record::{Holdings, RecordHeader, ReportTotals, Tally};
use crate::domain::County;
use crate::rules::{LedgerKey, LedgerReadError, LedgerView, Status};

/// Claim ids by recording order, and the order of an id: the ids live in one
/// string (no allocation per claim), the table holds only sequence numbers.
///
/// The table is split into [`SHARDS`] tables by the ids' hashes, as the
/// state's maps are ([`Shards`]).
pub struct IdIndex {
    text: String,
    /// End of each id in `text`; id of `seq` is `text[ends[seq-2]..ends[seq-1]]`.
    ends: Vec<usize>,
    tables: Box<[hashbrown::HashTable<u64>]>,
    hasher: std::hash::RandomState,
}

impl Default for IdIndex {
    fn default() -> Self {
        Self {
            text: String::new(),
            ends: Vec::new(),
            tables: (0..SHARDS).map(|_| hashbrown::HashTable::new()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

/// The shard of a hash: bits 32 to 39, which no table uses (a table places
/// an entry by the hash's low bits and tags it with its top seven: a shard
/// chosen by those would give all its entries one tag, and every lookup
/// would compare the ids of a whole group).
fn shard_of_hash(h: u64) -> usize {
    (h >> 32) as usize % SHARDS
}

impl IdIndex {
    pub fn len(&self) -> u64 {
        self.ends.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn id(&self, seq: u64) -> Option<&str> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.text[start..end])
    }

    pub fn seq(&self, id: &str) -> Option<u64> {
        let h = self.hasher.hash_one(id);
        self.tables[shard_of_hash(h)].find(h, |s| self.id(*s) == Some(id)).copied()
    }

    /// Appends the claim recorded as `seq` (the next number; a gap is filled
    /// with empty ids, which no claim has).
    fn push(&mut self, seq: u64, id: &str) {
        while self.len() + 1 < seq {
            self.ends.push(self.text.len());
        }
        self.text.push_str(id);
        self.ends.push(self.text.len());
        let h = self.hasher.hash_one(id);
        let (text, ends, hasher) = (&self.text, &self.ends, &self.hasher);
        self.tables[shard_of_hash(h)].insert_unique(h, seq, |s| {
            let i = (*s - 1) as usize;
            let start = if i == 0 { 0 } else { ends[i - 1] };
            hasher.hash_one(&text[start..ends[i]])
        });
    }

    fn bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * 8 + self.tables.iter().map(|t| t.capacity() * 9).sum::<usize>()
    }
}

/// Claims counted under a usage key, in recording order (the limit is 3).
pub type Seqs = SmallVec<[u64; 3]>;

/// How many tables each of the state's maps is split into.
const SHARDS: usize = 256;

/// A map by key digest split into [`SHARDS`] tables by the digest's first
/// byte (uniform: it is a SHA-256's). A full table moves every entry into
/// one twice its size, and the state is write-locked meanwhile, so every
/// claim and evaluation waits. With one table per map (measured 2026-12-01,
/// scenario 3 of `scripts/bench` from an empty store, 8-second runs of
/// ~150,000 claims in a row), the runs that went past ~230,000 and ~460,000
/// claims had p99 of 64-90 and up to 162-254 ms (max 338 ms), the others
/// 6-26 ms; split in 256, p99 was 6-9.4 ms in every run, and the mean claims
/// a second 3 % lower (within the spread of single runs). A shard grows
/// alone, with 1/256 of the entries.
struct Shards<V> {
    tables: Box<[HashMap<KeyDigest, V>]>,
}

impl<V> Default for Shards<V> {
    fn default() -> Self {
        Self { tables: (0..SHARDS).map(|_| HashMap::new()).collect() }
    }
}

/// The shard of a key digest: its first byte.
fn shard_of_key(k: &KeyDigest) -> usize {
    usize::from(k[0]) % SHARDS
}

impl<V> Shards<V> {
    fn get(&self, k: &KeyDigest) -> Option<&V> {
        self.tables[shard_of_key(k)].get(k)
    }

    fn insert(&mut self, k: KeyDigest, v: V) {
        self.tables[shard_of_key(&k)].insert(k, v);
    }

    fn remove(&mut self, k: &KeyDigest) {
        self.tables[shard_of_key(k)].remove(k);
    }

    fn len(&self) -> usize {
        self.tables.iter().map(HashMap::len).sum()
    }

    fn capacity(&self) -> usize {
        self.tables.iter().map(HashMap::capacity).sum()
    }
}

#[derive(Default)]
pub struct State {
    pub ids: IdIndex,
    usage: Shards<Seqs>,
    holders: Shards<u64>,
    totals: Shards<Decimal>,
    reports: HashMap<(County, i32), ReportTotals>,
    /// The next event sequence number.
    pub next_event: u64,
}

/// Sizes of the state, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StateStats {
    pub claims: u64,
    pub usage_keys: usize,
    pub unique_keys: usize,
    pub totals: usize,
    /// Approximate heap bytes of the state's tables.
    pub bytes: usize,
}

impl State {
    pub fn next_seq(&self) -> u64 {
        self.ids.len() + 1
    }

    /// Adds a record read at start; what it holds goes into `pending`, which
    /// the caller applies now and then (one report copy and one apply for
    /// many records, not one per record).
    pub fn load(&mut self, seq: u64, h: &RecordHeader, pending: &mut Changes) -> anyhow::Result<()> {
        if seq != self.next_seq() {
            anyhow::bail!("record {seq} follows record {}: the store has a gap", self.next_seq() - 1);
        }
        self.ids.push(seq, &h.claim_id);
        self.next_event = self.next_event.max(h.decided_event + 1);
        if h.status == Status::Approved {
            pending.hold(Base { state: self, inflight: &[] }, seq, h, true);
        }
        Ok(())
    }

    pub fn usage(&self, k: &KeyDigest) -> &[u64] {
        self.usage.get(k).map_or(&[], |s| s.as_slice())
    }

    pub fn report(&self, county: County, year: i32) -> ReportTotals {
        self.reports.get(&(county, year)).cloned().unwrap_or_default()
    }

    pub fn stats(&self) -> StateStats {
        let entry = std::mem::size_of::<KeyDigest>() + 1;
        StateStats {
            claims: self.ids.len(),
            usage_keys: self.usage.len(),
            unique_keys: self.holders.len(),
            totals: self.totals.len(),
            bytes: self.ids.bytes()
                + self.usage.capacity() * (entry + std::mem::size_of::<Seqs>())
                + self.holders.capacity() * (entry + 8)
                + self.totals.capacity() * (entry + 16),
        }
    }

    /// Applies a durable group's changes (values are absolute, so applying
    /// a group the state already reflects changes nothing).
    pub fn apply(&mut self, c: &Changes) {
        for (seq, id) in &c.new_ids {
            if self.ids.len() < *seq {
                self.ids.push(*seq, id);
            }
        }
        for (k, v) in &c.usage {
            if v.is_empty() {
                self.usage.remove(k);
            } else {
                self.usage.insert(*k, v.clone());
            }
        }
        for (k, v) in &c.holders {
            match v {
                Some(s) => self.holders.insert(*k, *s),
                None => self.holders.remove(k),
            }
        }
        for (k, v) in &c.totals {
            if v.is_zero() {
                self.totals.remove(k);
            } else {
                self.totals.insert(*k, *v);
            }
        }
        for (k, v) in &c.reports {
            self.reports.insert(*k, v.clone());
        }
        self.next_event = self.next_event.max(c.next_event);
    }
}

/// What the writer decides against: the durable state, plus the groups
/// written to the store but not yet durable (oldest first), each holding the
/// absolute values it set.
#[derive(Clone, Copy)]
pub struct Base<'a> {
    pub state: &'a State,
    pub inflight: &'a [std::sync::Arc<Changes>],
}

impl Base<'_> {
    fn layers(&self) -> impl Iterator<Item = &Changes> {
        self.inflight.iter().rev().map(|c| &**c)
    }
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        self.layers().find_map(|c| c.new_seq.get(id).copied()).or_else(|| self.state.ids.seq(id))
    }
    fn id_of(&self, seq: u64) -> Option<&str> {
        self.state.ids.id(seq).or_else(|| self.layers().find_map(|c| c.id_of(seq)))
    }
    fn usage(&self, k: &KeyDigest) -> Seqs {
        self.layers().find_map(|c| c.usage.get(k).cloned()).unwrap_or_else(|| SmallVec::from_slice(self.state.usage(k)))
    }
    fn holder(&self, k: &KeyDigest) -> Option<u64> {
        match self.layers().find_map(|c| c.holders.get(k)) {
            Some(h) => *h,
            None => self.state.holders.get(k).copied(),
        }
    }
    fn total(&self, k: &KeyDigest) -> Decimal {
        self.layers().find_map(|c| c.totals.get(k)).or_else(|| self.state.totals.get(k)).copied().unwrap_or_default()
    }
    fn report(&self, county: County, year: i32) -> ReportTotals {
        self.layers()
            .find_map(|c| c.reports.get(&(county, year)).cloned())
            .unwrap_or_else(|| self.state.report(county, year))
    }
}

/// A group's changes over its base, applied to the state once the group is durable.
#[derive(Default)]
pub struct Changes {
    /// The first sequence number this group may give.
    first_seq: u64,
    pub new_ids: Vec<(u64, String)>,
    new_seq: HashMap<String, u64>,
    usage: HashMap<KeyDigest, Seqs>,
    holders: HashMap<KeyDigest, Option<u64>>,
    totals: HashMap<KeyDigest, Decimal>,
    reports: HashMap<(County, i32), ReportTotals>,
    pub next_event: u64,
}

impl Changes {
    pub fn new(next_seq: u64, next_event: u64) -> Self {
        Self { first_seq: next_seq, next_event, ..Self::default() }
    }

    pub fn seq_of(&self, base: Base, id: &str) -> Option<u64> {
        self.new_seq.get(id).copied().or_else(|| base.seq_of(id))
    }

    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.new_ids.len() as u64
    }

    pub fn add_id(&mut self, seq: u64, id: &str) {
        self.new_ids.push((seq, id.to_string()));
        self.new_seq.insert(id.to_string(), seq);
    }

    pub fn take_event(&mut self) -> u64 {
        let n = self.next_event;
        self.next_event += 1;
        n
    }

    fn id_of(&self, seq: u64) -> Option<&str> {
        seq.checked_sub(self.first_seq).and_then(|i| self.new_ids.get(i as usize)).map(|(_, id)| id.as_str())
    }

    fn usage_of(&self, base: Base, k: &KeyDigest) -> Seqs {
        self.usage.get(k).cloned().unwrap_or_else(|| base.usage(k))
    }

    fn holder_of(&self, base: Base, k: &KeyDigest) -> Option<u64> {
        match self.holders.get(k) {
            Some(h) => *h,
            None => base.holder(k),
        }
    }

    fn total_of(&self, base: Base, k: &KeyDigest) -> Decimal {
        self.totals.get(k).copied().unwrap_or_else(|| base.total(k))
    }

    /// Takes (`take`) or releases everything a granted claim holds.
    pub fn hold(&mut self, base: Base, seq: u64, h: &RecordHeader, take: bool) {
        let e: &Holdings = &h.holdings;
        if let Some(k) = &e.count {
            let mut seqs = self.usage_of(base, k);
            seqs.retain(|s| *s != seq);
            if take {
                seqs.push(seq);
            }
            self.usage.insert(*k, seqs);
        }
        for k in &e.keys {
            if take {
                self.holders.insert(*k, Some(seq));
            } else if self.holder_of(base, k) == Some(seq) {
                self.holders.insert(*k, None);
            }
        }
        for (k, amount) in &e.totals {
            let v = self.total_of(base, k) + if take { *amount } else { -*amount };
            self.totals.insert(*k, v.max(Decimal::ZERO));
        }
        let report = self.reports.entry((h.county, h.year())).or_insert_with(|| base.report(h.county, h.year()));
        let bump = |t: &mut Tally| {
            if take {
                t.count += 1;
                t.amount += h.granted;
            } else {
                t.count = t.count.saturating_sub(1);
                t.amount -= h.granted;
            }
        };
        bump(report.by_kind.entry(h.kind).or_default());
        bump(report.by_department.entry(h.department.clone().unwrap_or_else(|| super::UNASSIGNED.into())).or_default());
    }
}

/// The writer's view: its base plus the group's changes so far.
pub struct GroupView<'a> {
    pub base: Base<'a>,
    pub changes: &'a Changes,
}

impl LedgerView for GroupView<'_> {
    fn count(&self, k: &LedgerKey) -> Result<u32, LedgerReadError> {
        let d = digest(k);
        let n = match self.changes.usage.get(&d) {
            Some(s) => s.len(),
            None => self.base.usage(&d).len(),
        };
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
    fn holder(&self, k: &LedgerKey) -> Result<Option<String>, LedgerReadError> {
        let d = digest(k);
        Ok(self
            .changes
            .holder_of(self.base, &d)
            .map(|s| self.changes.id_of(s).or_else(|| self.base.id_of(s)).unwrap_or("").to_string()))
    }
    fn total(&self, k: &LedgerKey) -> Result<Decimal, LedgerReadError> {
        Ok(self.changes.total_of(self.base, &digest(k)))
    }
}

/// An evaluation's view: the committed state, with the claim's own record
/// set aside when it is the same claim (id and body) already granted.
pub struct EvalView<'a> {
    pub state: &'a State,
    pub own: Option<(u64, &'a Holdings)>,
}

impl LedgerView for EvalView<'_> {
    fn count(&self, k: &LedgerKey) -> Result<u32, LedgerReadError> {
        let d = digest(k);
        let n = self.state.usage(&d).iter().filter(|s| Some(**s) != self.own.map(|o| o.0)).count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
    fn holder(&self, k: &LedgerKey) -> Result<Option<String>, LedgerReadError> {
        let d = digest(k);
        Ok(self
            .state
            .holders
            .get(&d)
            .filter(|s| Some(**s) != self.own.map(|o| o.0))
            .map(|s| self.state.ids.id(*s).unwrap_or("").to_string()))
    }
    fn total(&self, k: &LedgerKey) -> Result<Decimal, LedgerReadError> {
        let d = digest(k);
        let stored = self.state.totals.get(&d).copied().unwrap_or_default();
        let own: Decimal =
            self.own.iter().flat_map(|(_, h)| h.totals.iter()).filter(|(name, _)| *name == d).map(|(_, a)| *a).sum();
        Ok((stored - own).max(Decimal::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_keep_every_key_apart() {
        let mut m: Shards<u64> = Shards::default();
        let keys: Vec<KeyDigest> = (0..2_000u32)
            .map(|i| digest(&LedgerKey::Usage { county: County::Wuyi, person: format!("person-{i}"), year: 2020 }))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            m.insert(*k, i as u64);
        }
        assert_eq!(m.len(), keys.len());
        assert!(m.tables.iter().filter(|t| !t.is_empty()).count() > SHARDS / 2, "keys spread over the shards");
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k), Some(&(i as u64)));
        }
        for k in keys.iter().step_by(2) {
            m.remove(k);
        }
        assert_eq!(m.len(), keys.len() / 2);
        assert_eq!(m.get(&keys[0]), None);
        assert_eq!(m.get(&keys[1]), Some(&1));
    }

    #[test]
    fn ids_are_found_in_their_shard() {
        let mut ids = IdIndex::default();
        for seq in 1..=3_000u64 {
            ids.push(seq, &format!("CLAIM-{seq}"));
        }
        assert_eq!(ids.len(), 3_000);
        assert_eq!(ids.seq("CLAIM-1"), Some(1));
        assert_eq!(ids.seq("CLAIM-2999"), Some(2999));
        assert_eq!(ids.seq("CLAIM-3001"), None);
        assert_eq!(ids.id(42), Some("CLAIM-42"));
        // The ids of a shard keep different tags (the hash's top seven bits).
        let mut tags: HashMap<usize, std::collections::HashSet<u64>> = HashMap::new();
        for seq in 1..=3_000u64 {
            let h = ids.hasher.hash_one(format!("CLAIM-{seq}").as_str());
            tags.entry(shard_of_hash(h)).or_default().insert(h >> 57);
        }
        // (A shard given one id has one tag; of 3,000 ids, shards hold ~12.)
        let shared: Vec<_> = tags.values().filter(|t| t.len() == 1).collect();
        assert!(shared.len() < 8, "{} shards with one tag for all their ids", shared.len());
    }
}
