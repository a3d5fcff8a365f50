//! The writer thread: group commit of decisions, revocations and directories.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use chrono::{Datelike, Utc};
use rust_decimal::Decimal;
use tokio::sync::oneshot;

use super::presence::Presence;
use super::store::{
    decode_record, encode_members, encode_record, key, members, parse_num, px, DirectoryRecord, Event, ReportTotals,
    Store, StoredClaim, Tally,
};
use crate::domain::{Claim, County};
use crate::policy::Policy;
use crate::rules::{decide, Directory, LedgerView, Revocation, Status};

/// A parsed claim on its way to be recorded.
pub struct ClaimItem {
    pub claim: Claim,
    /// SHA-256 of the canonical body: the same claim id with another body conflicts.
    pub body_hash: String,
    /// The person's keyed hash, for person-level kinds.
    pub person: Option<String>,
    pub id_masked: Option<String>,
    pub key_id: String,
}

#[derive(Debug, Clone)]
pub enum ItemResult {
    New(crate::rules::Decision),
    Replayed(crate::rules::Decision),
    Conflict,
    /// The rules failed on this claim (a bug); nothing was recorded for it.
    Failed,
}

#[derive(Debug)]
pub enum RevokeResult {
    Revoked(Box<crate::rules::Decision>),
    NotFound,
    NotRevocable,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the store could not be written: {0}")]
    Unavailable(String),
    #[error("the writer has stopped")]
    Stopped,
}

enum Job {
    Claims {
        items: Vec<ClaimItem>,
        reply: oneshot::Sender<Result<Vec<ItemResult>, LedgerError>>,
    },
    Revoke {
        claim_id: String,
        reason: String,
        key_id: String,
        reply: oneshot::Sender<Result<RevokeResult, LedgerError>>,
    },
    Directory {
        county: County,
        record: DirectoryRecord,
        reply: oneshot::Sender<Result<DirectoryRecord, LedgerError>>,
    },
    /// Ends the writer after the jobs queued before it.
    Stop,
}

impl Job {
    fn weight(&self) -> usize {
        match self {
            Job::Claims { items, .. } => items.len().max(1),
            _ => 1,
        }
    }
}

/// The current directories, shared with readers (evaluations).
pub type Directories = Arc<RwLock<HashMap<County, Arc<Directory>>>>;

/// Handle to the writer thread.
pub struct Ledger {
    pub store: Store,
    pub presence: Arc<Presence>,
    tx: crossbeam_channel::Sender<Job>,
    handle: std::sync::Mutex<Option<JoinHandle<()>>>,
    pub directories: Directories,
    failure: Arc<StoreFailure>,
}

/// sled refuses every write after an I/O error until it is reopened, so a
/// failed commit is remembered and reported once (the service then stops so
/// that its supervisor restarts it on the repaired store).
#[derive(Default)]
pub struct StoreFailure {
    failed: std::sync::atomic::AtomicBool,
    on_failure: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl StoreFailure {
    fn report(&self) {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            if let Some(f) = self.on_failure.get() {
                f();
            }
        }
    }
}

impl Ledger {
    pub fn start(
        store: Store,
        policy: Arc<Policy>,
        group_commit_max: usize,
        presence_keys: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let records = store.directories()?;
        let presence = Arc::new(Presence::load(&store, presence_keys)?);
        let directories: Directories =
            Arc::new(RwLock::new(records.iter().map(|(c, r)| (*c, Arc::new(r.to_directory()))).collect()));
        let (tx, rx) = crossbeam_channel::unbounded();
        let failure = Arc::new(StoreFailure::default());
        let writer = Writer {
            store: store.clone(),
            presence: presence.clone(),
            policy,
            directories: directories.clone(),
            max: group_commit_max,
            failure: failure.clone(),
        };
        let handle = std::thread::Builder::new().name("ledger-writer".into()).spawn(move || writer.run(rx))?;
        Ok(Arc::new(Self { store, presence, tx, handle: std::sync::Mutex::new(Some(handle)), directories, failure }))
    }

    /// Called once, from the writer, when a commit fails.
    pub fn on_store_failure(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.failure.on_failure.set(Box::new(f));
    }

    /// Whether a commit has failed since start.
    pub fn store_failed(&self) -> bool {
        self.failure.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn directory(&self, county: County) -> Arc<Directory> {
        self.directories.read().map(|d| d.get(&county).cloned().unwrap_or_default()).unwrap_or_default()
    }

    pub async fn submit(&self, items: Vec<ClaimItem>) -> Result<Vec<ItemResult>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Claims { items, reply }).map_err(|_| LedgerError::Stopped)?;
        rx.await.map_err(|_| LedgerError::Stopped)?
    }

    pub async fn revoke(&self, claim_id: String, reason: String, key_id: String) -> Result<RevokeResult, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Revoke { claim_id, reason, key_id, reply }).map_err(|_| LedgerError::Stopped)?;
        rx.await.map_err(|_| LedgerError::Stopped)?
    }

    pub async fn put_directory(&self, county: County, record: DirectoryRecord) -> Result<DirectoryRecord, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Directory { county, record, reply }).map_err(|_| LedgerError::Stopped)?;
        rx.await.map_err(|_| LedgerError::Stopped)?
    }

    /// Stops the writer after the jobs already queued, then flushes.
    pub fn shutdown(&self) {
        // The sentinel job ends the writer after everything queued before it.
        if let Ok(mut h) = self.handle.lock() {
            if let Some(h) = h.take() {
                let _ = self.tx.send(Job::Stop);
                let _ = h.join();
            }
        }
        let _ = self.store.flush();
    }
}

/// Pending writes of a group over the committed tree.
struct Overlay<'a> {
    store: &'a Store,
    presence: &'a Presence,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    reports: HashMap<Vec<u8>, ReportTotals>,
    read_error: std::cell::RefCell<Option<String>>,
}

impl<'a> Overlay<'a> {
    fn get(&self, k: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.writes.get(k) {
            return v.clone();
        }
        if !self.presence.may_contain(k) {
            return None;
        }
        match self.store.tree.get(k) {
            Ok(v) => v.map(|v| v.to_vec()),
            Err(e) => {
                // Reads cannot fail quietly: remember it and fail the group.
                self.read_error.borrow_mut().get_or_insert(e.to_string());
                None
            }
        }
    }
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }
    fn del(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }
    fn num(&self, name: &str) -> Decimal {
        self.get(&key(px::NUM, &[name])).map(|v| parse_num(&v)).unwrap_or_default()
    }
    fn add_num(&mut self, name: &str, delta: Decimal) {
        let v = (self.num(name) + delta).max(Decimal::ZERO);
        if v.is_zero() {
            self.del(key(px::NUM, &[name]));
        } else {
            self.put(key(px::NUM, &[name]), v.normalize().to_string().into_bytes());
        }
    }
    fn json<T: serde::de::DeserializeOwned>(&self, k: &[u8]) -> Option<T> {
        self.get(k).and_then(|v| serde_json::from_slice(&v).ok())
    }
    fn claim(&self, k: &[u8]) -> Option<StoredClaim> {
        let v = self.get(k)?;
        match decode_record(&v) {
            Ok(c) => Some(c),
            Err(e) => {
                // An undecodable record must not be taken for a missing one.
                self.read_error.borrow_mut().get_or_insert(format!("{e:#}"));
                None
            }
        }
    }
    fn put_json<T: serde::Serialize>(&mut self, k: Vec<u8>, v: &T) {
        // Serialising our own records cannot fail.
        self.put(k, serde_json::to_vec(v).unwrap_or_default());
    }
    fn next_seq(&mut self, name: &str) -> u64 {
        let k = key(px::META, &[name]);
        let n = self.get(&k).and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok()).unwrap_or(0) + 1;
        self.put(k, n.to_string().into_bytes());
        n
    }
    fn event(&mut self, claim_id: &str, event: &str, key_id: &str, status: Status, reason: Option<String>) {
        let seq = self.next_seq("event_seq");
        let e = Event {
            seq,
            claim_id: claim_id.into(),
            event: event.into(),
            at: Utc::now(),
            key_id: key_id.into(),
            status,
            reason,
        };
        self.put(key(px::EVENT, &[claim_id, &format!("{seq:020}")]), encode_record(&e));
    }
    fn report(&mut self, c: &StoredClaim, sign: Decimal) {
        let year = c.event_date.year().to_string();
        let k = key(px::REPORT, &[c.county.as_str(), &year]);
        // Decoded once per group and encoded once at commit.
        if !self.reports.contains_key(&k) {
            let r: ReportTotals = self.json(&k).unwrap_or_default();
            self.reports.insert(k.clone(), r);
        }
        let Some(r) = self.reports.get_mut(&k) else { return };
        let bump = |t: &mut Tally| {
            if sign.is_sign_negative() {
                t.count = t.count.saturating_sub(1);
            } else {
                t.count += 1;
            }
            t.amount += sign * c.granted;
        };
        bump(r.by_kind.entry(c.kind.as_str().to_string()).or_default());
        bump(r.by_department.entry(c.department.clone().unwrap_or_else(|| "unassigned".into())).or_default());
    }
    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.reports.is_empty() && self.read_error.borrow().is_none()
    }
    fn commit(mut self) -> Result<(), String> {
        if let Some(e) = self.read_error.take() {
            return Err(e);
        }
        for (k, r) in std::mem::take(&mut self.reports) {
            self.put_json(k, &r);
        }
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => {
                    // Before the write: the filter may over-report, never under-report.
                    if Presence::tracks(&k) {
                        self.presence.insert(&k);
                    }
                    batch.insert(k, v)
                }
                None => batch.remove(k),
            }
        }
        self.store.tree.apply_batch(batch).map_err(|e| e.to_string())?;
        self.store.flush().map_err(|e| format!("{e:#}"))
    }
}

impl LedgerView for Overlay<'_> {
    fn count(&self, k: &str) -> u32 {
        u32::try_from(members(self.get(&key(px::USAGE, &[k])).as_deref()).len()).unwrap_or(u32::MAX)
    }
    fn holder(&self, k: &str) -> Option<String> {
        self.get(&key(px::KEY, &[k])).map(|v| String::from_utf8_lossy(&v).to_string())
    }
    fn total(&self, k: &str) -> Decimal {
        self.num(k)
    }
}

struct Writer {
    store: Store,
    presence: Arc<Presence>,
    policy: Arc<Policy>,
    directories: Directories,
    max: usize,
    failure: Arc<StoreFailure>,
}

enum Reply {
    Claims(oneshot::Sender<Result<Vec<ItemResult>, LedgerError>>, Vec<ItemResult>),
    Revoke(oneshot::Sender<Result<RevokeResult, LedgerError>>, RevokeResult),
    Directory(oneshot::Sender<Result<DirectoryRecord, LedgerError>>, DirectoryRecord),
}

impl Writer {
    fn run(self, rx: crossbeam_channel::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            let mut weight = jobs[0].weight();
            while weight < self.max {
                match rx.try_recv() {
                    Ok(j) => {
                        weight += j.weight();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let stop = jobs.iter().any(|j| matches!(j, Job::Stop));
            self.group(jobs);
            if stop {
                break;
            }
        }
    }

    fn group(&self, jobs: Vec<Job>) {
        let mut ov = Overlay {
            store: &self.store,
            presence: &self.presence,
            writes: BTreeMap::new(),
            reports: HashMap::new(),
            read_error: Default::default(),
        };
        let mut dirs: HashMap<County, Arc<Directory>> = self.directories.read().map(|d| d.clone()).unwrap_or_default();
        let mut new_dirs = Vec::new();
        let mut replies = Vec::new();
        for job in jobs {
            match job {
                Job::Claims { items, reply } => {
                    let results = items.into_iter().map(|item| self.claim(&mut ov, &dirs, item)).collect();
                    replies.push(Reply::Claims(reply, results));
                }
                Job::Revoke { claim_id, reason, key_id, reply } => {
                    let r = self.revoke(&mut ov, &claim_id, reason, &key_id);
                    replies.push(Reply::Revoke(reply, r));
                }
                Job::Stop => {}
                Job::Directory { county, record, reply } => {
                    ov.put_json(key(px::DIRECTORY, &[county.as_str()]), &record);
                    dirs.insert(county, Arc::new(record.to_directory()));
                    new_dirs.push((county, record.to_directory()));
                    replies.push(Reply::Directory(reply, record));
                }
            }
        }
        let written = ov.writes.len();
        let committed = if ov.is_empty() { Ok(()) } else { ov.commit() };
        match committed {
            Ok(()) => {
                if !new_dirs.is_empty() {
                    if let Ok(mut d) = self.directories.write() {
                        for (c, dir) in new_dirs {
                            d.insert(c, Arc::new(dir));
                        }
                    }
                }
                for r in replies {
                    match r {
                        Reply::Claims(tx, v) => {
                            let _ = tx.send(Ok(v));
                        }
                        Reply::Revoke(tx, v) => {
                            let _ = tx.send(Ok(v));
                        }
                        Reply::Directory(tx, v) => {
                            let _ = tx.send(Ok(v));
                        }
                    }
                }
                reclaim(written);
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; the group was not recorded");
                self.failure.report();
                let err = || LedgerError::Unavailable(e.clone());
                for r in replies {
                    match r {
                        Reply::Claims(tx, _) => {
                            let _ = tx.send(Err(err()));
                        }
                        Reply::Revoke(tx, _) => {
                            let _ = tx.send(Err(err()));
                        }
                        Reply::Directory(tx, _) => {
                            let _ = tx.send(Err(err()));
                        }
                    }
                }
            }
        }
    }

    fn claim(&self, ov: &mut Overlay, dirs: &HashMap<County, Arc<Directory>>, item: ClaimItem) -> ItemResult {
        let id = item.claim.claim_id.as_str().to_string();
        let ck = key(px::CLAIM, &[&id]);
        if let Some(existing) = ov.claim(&ck) {
            if existing.body_hash != item.body_hash {
                return ItemResult::Conflict;
            }
            ov.event(&id, "replayed", &item.key_id, existing.decision.status, None);
            return ItemResult::Replayed(existing.decision);
        }
        let county = item.claim.county;
        let policy = self.policy.county(county);
        let dir = dirs.get(&county).cloned().unwrap_or_default();
        // A bug in the rules must not take the writer (and every later claim) down.
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decide(&item.claim, item.person.as_deref(), &*ov, policy, &dir, Utc::now())
        }));
        let Ok(outcome) = decided else {
            tracing::error!(claim_id = %id, kind = %item.claim.kind, "the rules panicked on a claim; nothing recorded for it");
            return ItemResult::Failed;
        };
        let mut decision = outcome.decision;
        decision.recorded = true;
        let seq = ov.next_seq("claim_seq");
        let stored = StoredClaim {
            decision: decision.clone(),
            body_hash: item.body_hash,
            effects: outcome.effects.clone(),
            granted: outcome.amount,
            county,
            kind: item.claim.kind,
            event_date: item.claim.event_date,
            department: item.claim.department.clone(),
            person: item.person.clone(),
            id_masked: item.id_masked,
            parties: item.claim.party_codes().into_iter().map(str::to_string).collect(),
            seq,
            recorded_by: item.key_id.clone(),
            decided_event: Some(ov.next_seq("event_seq")),
        };
        if decision.status == Status::Approved {
            apply_effects(ov, &stored, &id, Decimal::ONE);
            ov.report(&stored, Decimal::ONE);
        }
        ov.put(key(px::SEQ, &[&format!("{seq:020}")]), id.clone().into_bytes());
        ov.put(ck, encode_record(&stored));
        ItemResult::New(decision)
    }

    fn revoke(&self, ov: &mut Overlay, claim_id: &str, reason: String, key_id: &str) -> RevokeResult {
        let ck = key(px::CLAIM, &[claim_id]);
        let Some(mut stored) = ov.claim(&ck) else {
            return RevokeResult::NotFound;
        };
        match stored.decision.status {
            Status::Rejected => RevokeResult::NotRevocable,
            Status::Revoked => RevokeResult::Revoked(Box::new(stored.decision)),
            Status::Approved => {
                apply_effects(ov, &stored, claim_id, Decimal::NEGATIVE_ONE);
                ov.report(&stored, Decimal::NEGATIVE_ONE);
                stored.decision.status = Status::Revoked;
                stored.decision.revocation = Some(Revocation { reason: reason.clone(), revoked_at: Utc::now() });
                ov.put(ck, encode_record(&stored));
                ov.event(claim_id, "revoked", key_id, Status::Revoked, Some(reason));
                RevokeResult::Revoked(Box::new(stored.decision))
            }
        }
    }
}

/// Frees the node versions sled replaced while writing `written` keys.
///
/// Every sled insert copies a B-tree node and leaves the old copy to
/// crossbeam-epoch's collector, which frees at most 512 of them per 128 pins
/// of a thread. At thousands of claims a second the writer makes garbage
/// faster than that, and without help the process grew to 3.6–4.4 GB during
/// a 1,000,000-claim load (scripts/bench.d/RESULTS.md). Each flush of a fresh
/// guard advances the epoch if it can and runs one collection step.
fn reclaim(written: usize) {
    for _ in 0..written / 128 + 2 {
        crossbeam_epoch::pin().flush();
    }
}

/// Takes (`sign` = 1) or releases (`sign` = −1) everything a granted claim holds.
fn apply_effects(ov: &mut Overlay, c: &StoredClaim, claim_id: &str, sign: Decimal) {
    let e = &c.effects;
    if let Some(count_key) = &e.count {
        let k = key(px::USAGE, &[count_key]);
        let mut ids = members(ov.get(&k).as_deref());
        ids.retain(|id| id != claim_id);
        if sign.is_sign_positive() {
            ids.push(claim_id.to_string());
        }
        if ids.is_empty() {
            ov.del(k);
        } else {
            ov.put(k, encode_members(&ids));
        }
    }
    for k in &e.keys {
        let kk = key(px::KEY, &[k]);
        if sign.is_sign_positive() {
            ov.put(kk, claim_id.as_bytes().to_vec());
        } else if ov.get(&kk).as_deref() == Some(claim_id.as_bytes()) {
            ov.del(kk);
        }
    }
    for (k, amount) in &e.totals {
        ov.add_num(k, sign * amount);
    }
}
