//! The embedded backend: sled (layout v2) plus the materialised state, with
//! one writer thread doing group commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::oneshot;

use super::keys::digest;
use super::record::{ClaimRecord, DirectoryRecord, Event, Holdings, RecordBody, RecordHeader, ReportTotals};
use super::state::{Base, Changes, EvalView, GroupView, State};
use super::store::{Store, WriteBatch};
use super::{
    ClaimItem, Evaluation, ItemResult, LedgerError, LedgerService, LedgerStats, ListFilter, ListPage, ReplayFilter,
    RevokeResult, StoredClaim, Submissions, Submitted, UsageEntry,
};
use crate::domain::County;
use crate::policy::Policy;
use crate::rules::{decide, Decision, Directory, LedgerKey, Revocation, Status};

type Directories = Arc<RwLock<HashMap<County, Arc<Directory>>>>;

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

/// sled refuses every write after an I/O error until it is reopened, so a
/// failed commit is remembered and reported once.
#[derive(Default)]
struct StoreFailure {
    failed: AtomicBool,
    on_failure: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl StoreFailure {
    fn report(&self) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            if let Some(f) = self.on_failure.get() {
                f();
            }
        }
    }
}

pub struct EmbeddedLedger {
    store: Arc<Store>,
    state: Arc<RwLock<State>>,
    directories: Directories,
    policy: Arc<Policy>,
    tx: crossbeam_channel::Sender<Job>,
    handle: Mutex<Option<JoinHandle<()>>>,
    failure: Arc<StoreFailure>,
    revoking: Revoking,
}

/// The records a revocation rewrote in the store whose group is not durable
/// yet (being synced, or refused by a failed store): readers show them as
/// they were before it, as the state does. A revocation rewrites its record
/// in place, so the store alone cannot tell.
type Revoking = Arc<RwLock<HashSet<u64>>>;

/// Whether record `seq`, read from the store as revoked, is revoked durably.
/// Checked after the read: the writer notes a revocation before the store
/// holds it, and the syncer forgets it once durable, so a revocation read is
/// either still noted or durable.
fn durably_revoked(revoking: &Revoking, seq: u64) -> anyhow::Result<bool> {
    let r = revoking.read().map_err(|_| anyhow::anyhow!("the ledger's revocation list is poisoned"))?;
    Ok(!r.contains(&seq))
}

/// `h` (of record `seq`) as it is durably: a revocation not yet durable undone.
fn header_as_durable(revoking: &Revoking, seq: u64, h: &mut RecordHeader) -> anyhow::Result<()> {
    if h.status == Status::Revoked && !durably_revoked(revoking, seq)? {
        h.status = Status::Approved;
    }
    Ok(())
}

/// `r` as it is durably: a revocation not yet durable undone.
fn as_durable(revoking: &Revoking, mut r: ClaimRecord) -> anyhow::Result<ClaimRecord> {
    if r.header.status == Status::Revoked && !durably_revoked(revoking, r.seq)? {
        undo_revocation(&mut r);
    }
    Ok(r)
}

/// `r` as it was before its revocation (a revocation rewrites only these).
fn undo_revocation(r: &mut ClaimRecord) {
    r.header.status = Status::Approved;
    r.body.decision.status = Status::Approved;
    r.body.decision.revocation = None;
}

fn poisoned() -> LedgerError {
    LedgerError::Unavailable("the ledger state lock is poisoned".into())
}

/// The claims as submitted that `filter` selects among the records numbered
/// below `before`.
pub(crate) fn replay(store: &Arc<Store>, before: u64, filter: ReplayFilter) -> Submissions {
    let rows = store.submissions(before, move |h| filter.keeps(h));
    Box::new(rows.map(|row| {
        let (seq, claim_id, section) = row?;
        Ok(Submitted { seq, claim_id, claim: StoredClaim::Section(section) })
    }))
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> Result<T, LedgerError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| LedgerError::Unavailable(e.to_string()))?.map_err(Into::into)
}

impl EmbeddedLedger {
    /// Rebuilds the state from the records' headers and starts the writer.
    pub fn start(store: Store, policy: Arc<Policy>, group_commit_max: usize) -> anyhow::Result<Arc<Self>> {
        let store = Arc::new(store);
        let mut state = State::default();
        let mut pending = Changes::default();
        store.load(|seq, h| {
            state.load(seq, &h, &mut pending)?;
            if seq % 65_536 == 0 {
                state.apply(&std::mem::take(&mut pending));
            }
            Ok(())
        })?;
        state.apply(&pending);
        for e in store.events() {
            let (_, e) = e?;
            state.next_event = state.next_event.max(e.seq + 1);
        }
        let directories: Directories =
            Arc::new(RwLock::new(store.directories()?.iter().map(|(c, r)| (*c, Arc::new(r.to_directory()))).collect()));
        let (next_seq, next_event) = (state.next_seq(), state.next_event.max(1));
        let dirs = directories.read().map(|d| d.clone()).unwrap_or_default();
        let state = Arc::new(RwLock::new(state));
        let (tx, rx) = crossbeam_channel::unbounded();
        let failure = Arc::new(StoreFailure::default());
        let applied = Arc::new(AtomicU64::new(0));
        let revoking = Revoking::default();
        let syncer = Syncer {
            store: store.clone(),
            state: state.clone(),
            directories: directories.clone(),
            failure: failure.clone(),
            applied: applied.clone(),
            revoking: revoking.clone(),
        };
        let writer = Writer {
            store: store.clone(),
            state: state.clone(),
            policy: policy.clone(),
            dirs,
            max: group_commit_max.max(1),
            failure: failure.clone(),
            next_seq,
            next_event,
            inflight: VecDeque::new(),
            groups: 0,
            applied,
            revoking: revoking.clone(),
        };
        let handle = std::thread::Builder::new().name("ledger-writer".into()).spawn(move || writer.run(rx, syncer))?;
        let handle = Mutex::new(Some(handle));
        Ok(Arc::new(Self { store, state, directories, policy, tx, handle, failure, revoking }))
    }

    async fn send<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, LedgerError>>) -> Job,
    ) -> Result<T, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(job(reply)).map_err(|_| LedgerError::Stopped)?;
        rx.await.map_err(|_| LedgerError::Stopped)?
    }

    /// The directory the writer decides with (what is durable).
    fn directory_now(&self, county: County) -> Arc<Directory> {
        self.directories.read().map(|d| d.get(&county).cloned().unwrap_or_default()).unwrap_or_default()
    }

    fn seq_of(&self, claim_id: &str) -> Result<Option<u64>, LedgerError> {
        Ok(self.state.read().map_err(|_| poisoned())?.ids.seq(claim_id))
    }

    fn decide_now(
        &self,
        claim: &crate::domain::Claim,
        person: Option<&str>,
        own: Option<(u64, &Holdings)>,
    ) -> Result<Decision, LedgerError> {
        let county = claim.county;
        let directory = self.directory_now(county);
        let state = self.state.read().map_err(|_| poisoned())?;
        let view = EvalView { state: &state, own };
        let outcome = decide(claim, person, &view, self.policy.county(county), &directory, Utc::now())
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        Ok(outcome.decision)
    }
}

#[async_trait::async_trait]
impl LedgerService for EmbeddedLedger {
    async fn submit(&self, items: Vec<ClaimItem>) -> Result<Vec<ItemResult>, LedgerError> {
        self.send(|reply| Job::Claims { items, reply }).await
    }

    async fn evaluate(&self, e: Evaluation) -> Result<Decision, LedgerError> {
        // A claim id never recorded: decided from memory, no store read.
        let Some(seq) = self.seq_of(e.claim.claim_id.as_str())? else {
            return self.decide_now(&e.claim, e.person.as_deref(), None);
        };
        let (store, revoking) = (self.store.clone(), self.revoking.clone());
        let record = blocking(move || store.record(seq)?.map(|r| as_durable(&revoking, r)).transpose()).await?;
        // Only the same body, granted, sets its own record aside.
        let Some(record) = record else {
            return Err(LedgerError::Unavailable(format!("record {seq} is missing from the store")));
        };
        let hashes = (e.body_hashes)();
        let own = Some(record).filter(|r| hashes.matches(&r.body.body_hash) && r.header.status == Status::Approved);
        self.decide_now(&e.claim, e.person.as_deref(), own.as_ref().map(|r| (r.seq, &r.header.holdings)))
    }

    async fn claim(&self, claim_id: &str) -> Result<Option<ClaimRecord>, LedgerError> {
        let Some(seq) = self.seq_of(claim_id)? else { return Ok(None) };
        let (store, revoking) = (self.store.clone(), self.revoking.clone());
        blocking(move || store.record(seq)?.map(|r| as_durable(&revoking, r)).transpose()).await
    }

    async fn events(&self, claim_id: &str) -> Result<Option<(ClaimRecord, Vec<Event>)>, LedgerError> {
        let Some(seq) = self.seq_of(claim_id)? else { return Ok(None) };
        // Only durable events: a group being synced is not shown yet.
        let durable = self.state.read().map_err(|_| poisoned())?.next_event;
        let store = self.store.clone();
        blocking(move || {
            let mut r = store.record(seq)?.with_context(|| format!("record {seq} is missing from the store"))?;
            let mut events: Vec<Event> = store.events_of(seq)?.into_iter().filter(|e| e.seq < durable).collect();
            // The record as of the same moment as its history: revoked only
            // with a durable revocation among its events.
            if r.header.status == Status::Revoked && !events.iter().any(|e| e.event == "revoked") {
                undo_revocation(&mut r);
            }
            events.push(r.decided());
            events.sort_by_key(|e| e.seq);
            Ok(Some((r, events)))
        })
        .await
    }

    async fn list(&self, filter: ListFilter) -> Result<ListPage, LedgerError> {
        // Only durable claims: a group being synced is not listed yet (its
        // numbers would be given again if it were lost).
        let durable = self.state.read().map_err(|_| poisoned())?.next_seq();
        let (store, revoking) = (self.store.clone(), self.revoking.clone());
        blocking(move || {
            let mut claims = Vec::new();
            let mut last = None;
            for row in store.headers(filter.after.unwrap_or(0)) {
                let (seq, mut h) = row?;
                if seq >= durable {
                    break;
                }
                header_as_durable(&revoking, seq, &mut h)?;
                if !filter.keeps(&h) {
                    continue;
                }
                if claims.len() == filter.limit {
                    // Another match exists: the page has a next.
                    return Ok(ListPage { claims, next: last });
                }
                let mut r = store.record(seq)?.with_context(|| format!("record {seq} vanished"))?;
                // As the header was read: a revocation written since is undone.
                if h.status == Status::Approved && r.header.status == Status::Revoked {
                    undo_revocation(&mut r);
                }
                last = Some(seq);
                claims.push(r);
            }
            Ok(ListPage { claims, next: None })
        })
        .await
    }

    async fn revoke(&self, claim_id: String, reason: String, key_id: String) -> Result<RevokeResult, LedgerError> {
        self.send(|reply| Job::Revoke { claim_id, reason, key_id, reply }).await
    }

    async fn usage(&self, county: County, person: String, year: i32) -> Result<Vec<UsageEntry>, LedgerError> {
        let key = digest(&LedgerKey::Usage { county, person, year });
        let seqs = self.state.read().map_err(|_| poisoned())?.usage(&key).to_vec();
        let (store, revoking) = (self.store.clone(), self.revoking.clone());
        blocking(move || {
            let mut out = Vec::new();
            for seq in seqs {
                let r = store.record(seq)?.with_context(|| format!("record {seq} is missing from the store"))?;
                let r = as_durable(&revoking, r)?;
                out.push(UsageEntry {
                    claim_id: r.header.claim_id,
                    kind: r.header.kind,
                    event_date: r.header.event_date,
                    status: r.header.status,
                    amount: r.body.decision.amount,
                });
            }
            out.sort_by(|a, b| a.claim_id.cmp(&b.claim_id));
            Ok(out)
        })
        .await
    }

    fn submissions(&self, filter: ReplayFilter) -> Result<Submissions, LedgerError> {
        let durable = self.state.read().map_err(|_| poisoned())?.next_seq();
        Ok(replay(&self.store, durable, filter))
    }

    async fn directory(&self, county: County) -> Result<Arc<Directory>, LedgerError> {
        Ok(self.directory_now(county))
    }

    async fn directory_record(&self, county: County) -> Result<DirectoryRecord, LedgerError> {
        let store = self.store.clone();
        blocking(move || store.directory(county)).await
    }

    async fn put_directory(&self, county: County, record: DirectoryRecord) -> Result<DirectoryRecord, LedgerError> {
        self.send(|reply| Job::Directory { county, record, reply }).await
    }

    async fn report(&self, county: County, year: i32) -> Result<ReportTotals, LedgerError> {
        Ok(self.state.read().map_err(|_| poisoned())?.report(county, year))
    }

    async fn probe(&self) -> Result<(), LedgerError> {
        if self.failed() {
            return Err(LedgerError::Unavailable("a write has failed since start".into()));
        }
        // A writer that ended without being stopped (a bug) records nothing:
        // not ready, and the service stops so that its supervisor restarts it.
        let writer_ended = self.handle.lock().map_or(true, |h| h.as_ref().is_some_and(|h| h.is_finished()));
        if writer_ended {
            tracing::error!("the ledger writer has ended; stopping");
            self.failure.report();
            return Err(LedgerError::Stopped);
        }
        let store = self.store.clone();
        blocking(move || store.probe()).await
    }

    fn stats(&self) -> LedgerStats {
        LedgerStats::Embedded {
            state: self.state.read().map(|s| s.stats()).unwrap_or_default(),
            fsyncs: self.store.fsyncs(),
            size_on_disk: self.store.size_on_disk(),
        }
    }

    fn on_failure(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.failure.on_failure.set(f);
    }

    fn failed(&self) -> bool {
        self.failure.failed.load(Ordering::SeqCst)
    }

    async fn shutdown(&self) {
        let handle = self.handle.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = self.tx.send(Job::Stop);
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = h.join();
                store.sync()
            })
            .await;
        }
    }
}

struct Writer {
    store: Arc<Store>,
    state: Arc<RwLock<State>>,
    policy: Arc<Policy>,
    /// The directories as the writer decides with them (durable or not).
    dirs: HashMap<County, Arc<Directory>>,
    max: usize,
    failure: Arc<StoreFailure>,
    next_seq: u64,
    next_event: u64,
    /// Groups written to the store whose sync has not been applied yet, by number.
    inflight: VecDeque<(u64, Arc<Changes>)>,
    groups: u64,
    /// The highest group number the syncer has made durable and applied.
    applied: Arc<AtomicU64>,
    revoking: Revoking,
}

enum Reply {
    Claims(oneshot::Sender<Result<Vec<ItemResult>, LedgerError>>, Vec<ItemResult>),
    Revoke(oneshot::Sender<Result<RevokeResult, LedgerError>>, RevokeResult),
    Directory(oneshot::Sender<Result<DirectoryRecord, LedgerError>>, DirectoryRecord),
}

impl Reply {
    fn send(self, failed: Option<&str>) {
        let err = |e: &str| LedgerError::Unavailable(e.to_string());
        match (self, failed) {
            (Reply::Claims(tx, v), None) => drop(tx.send(Ok(v))),
            (Reply::Claims(tx, _), Some(e)) => drop(tx.send(Err(err(e)))),
            (Reply::Revoke(tx, v), None) => drop(tx.send(Ok(v))),
            (Reply::Revoke(tx, _), Some(e)) => drop(tx.send(Err(err(e)))),
            (Reply::Directory(tx, v), None) => drop(tx.send(Ok(v))),
            (Reply::Directory(tx, _), Some(e)) => drop(tx.send(Err(err(e)))),
        }
    }
}

/// A group written to the store, waiting to be made durable.
struct Written {
    number: u64,
    changes: Arc<Changes>,
    /// The records the group's revocations rewrote.
    revoked: Vec<u64>,
    replies: Vec<Reply>,
    directories: Vec<(County, Arc<Directory>)>,
    written: usize,
}

/// A group being decided: its changes, its writes, and the records it wrote
/// or read (a replay or revocation of a claim recorded earlier in the same
/// group reads it here).
struct Group {
    changes: Changes,
    batch: WriteBatch,
    records: HashMap<u64, ClaimRecord>,
    /// Records whose decision the group changed (revoked): a new decision
    /// among them is not answered with its record's text.
    changed: Vec<u64>,
    read_error: Option<String>,
}

impl Group {
    /// Notes that the state lock is poisoned: the group is not recorded.
    fn note_poisoned_state(&mut self) {
        self.read_error.get_or_insert_with(|| "the ledger state lock is poisoned".to_string());
    }
}

/// Makes written groups durable and then visible: one sync (flush and
/// `fdatasync`) covers every group written before it, so while one sync runs
/// the writer decides and writes the next groups (group commit, pipelined).
/// Groups are applied to the state and answered in order, only once durable.
struct Syncer {
    store: Arc<Store>,
    state: Arc<RwLock<State>>,
    directories: Directories,
    failure: Arc<StoreFailure>,
    applied: Arc<AtomicU64>,
    revoking: Revoking,
}

impl Syncer {
    fn run(self, rx: crossbeam_channel::Receiver<Written>) {
        while let Ok(first) = rx.recv() {
            let mut groups = vec![first];
            groups.extend(rx.try_iter());
            let synced = if self.failure.failed.load(Ordering::SeqCst) {
                Err("an earlier write failed; the store refuses writes until it is reopened".to_string())
            } else {
                self.store.sync().map_err(|e| format!("{e:#}"))
            };
            match synced {
                Ok(()) => {
                    match self.state.write() {
                        Ok(mut s) => groups.iter().for_each(|g| s.apply(&g.changes)),
                        Err(_) => {
                            tracing::error!("the ledger state lock is poisoned; the service must restart");
                            self.failure.report();
                        }
                    }
                    // Durable, and in the state: shown as revoked from now.
                    if let Ok(mut r) = self.revoking.write() {
                        for seq in groups.iter().flat_map(|g| &g.revoked) {
                            r.remove(seq);
                        }
                    }
                    if let Ok(mut d) = self.directories.write() {
                        for g in &groups {
                            d.extend(g.directories.iter().cloned());
                        }
                    }
                    let written: usize = groups.iter().map(|g| g.written).sum();
                    if let Some(last) = groups.last() {
                        self.applied.store(last.number, Ordering::SeqCst);
                    }
                    for g in groups {
                        g.replies.into_iter().for_each(|r| r.send(None));
                    }
                    reclaim(written);
                }
                Err(e) => {
                    tracing::error!(error = %e, "store sync failed; the groups were not recorded");
                    self.failure.report();
                    for g in groups {
                        g.replies.into_iter().for_each(|r| r.send(Some(&e)));
                    }
                }
            }
        }
    }
}

impl Writer {
    fn run(mut self, rx: crossbeam_channel::Receiver<Job>, syncer: Syncer) {
        let (tx, synced) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new().name("ledger-sync".into()).spawn(move || syncer.run(synced));
        let Ok(handle) = handle else {
            tracing::error!("could not start the ledger's sync thread");
            self.failure.report();
            return;
        };
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
            if let Some(w) = self.group(jobs) {
                if tx.send(w).is_err() {
                    break;
                }
            }
            if stop {
                break;
            }
        }
        drop(tx);
        let _ = handle.join();
    }

    /// Decides a group and writes it to the store; the syncer makes it durable.
    fn group(&mut self, jobs: Vec<Job>) -> Option<Written> {
        if self.failure.failed.load(Ordering::SeqCst) {
            jobs.into_iter().for_each(|j| fail_job(j, "the store refuses writes until it is reopened"));
            return None;
        }
        let inflight = self.changes_in_flight();
        let mut g = Group {
            changes: Changes::new(self.next_seq, self.next_event),
            batch: WriteBatch::default(),
            records: HashMap::new(),
            changed: Vec::new(),
            read_error: None,
        };
        let mut dirs = self.dirs.clone();
        let mut new_dirs = Vec::new();
        let mut replies = Vec::new();
        // The state is read-locked claim by claim, never across a group, so
        // that applying a durable group (the syncer) and evaluations never
        // wait for a whole group to be decided. What the writer sees stays
        // the same: the groups in flight hold the values they set.
        for job in jobs {
            match job {
                Job::Claims { items, reply } => {
                    let results = self.decide_claims(&mut g, &inflight, &dirs, items);
                    replies.push(Reply::Claims(reply, results));
                }
                Job::Revoke { claim_id, reason, key_id, reply } => {
                    let r = self.decide_revocation(&mut g, &inflight, &claim_id, reason, &key_id);
                    replies.push(Reply::Revoke(reply, r));
                }
                Job::Directory { county, record, reply } => {
                    g.batch.directory(county, &record);
                    let d = Arc::new(record.to_directory());
                    dirs.insert(county, d.clone());
                    new_dirs.push((county, d));
                    replies.push(Reply::Directory(reply, record));
                }
                Job::Stop => {}
            }
        }
        let Group { changes, batch, read_error, records, changed } = g;
        // Before the store holds them: a reader never sees a revocation
        // that is not durable.
        if !changed.is_empty() {
            match self.revoking.write() {
                Ok(mut r) => r.extend(changed.iter().copied()),
                Err(_) => {
                    let e = "the ledger's revocation list is poisoned".to_string();
                    replies.into_iter().for_each(|r| r.send(Some(&e)));
                    return None;
                }
            }
        }
        let (written, mut texts) = match self.write_group(batch, records, read_error) {
            Ok(written) => written,
            Err(e) => {
                // Nothing of the group was written: its revocations are not pending.
                if let Ok(mut r) = self.revoking.write() {
                    for seq in &changed {
                        r.remove(seq);
                    }
                }
                replies.into_iter().for_each(|r| r.send(Some(&e)));
                return None;
            }
        };
        texts.retain(|(seq, _)| !changed.contains(seq));
        give_texts(&mut replies, self.next_seq, &texts);
        // Written: what follows is decided against it.
        self.next_seq = changes.next_seq();
        self.next_event = changes.next_event;
        self.dirs = dirs;
        self.groups += 1;
        let changes = Arc::new(changes);
        self.inflight.push_back((self.groups, changes.clone()));
        Some(Written { number: self.groups, changes, revoked: changed, replies, directories: new_dirs, written })
    }

    /// Forgets the groups the syncer has made durable and applied (the state
    /// holds their changes now); answers the changes of those still in flight.
    fn changes_in_flight(&mut self) -> Vec<Arc<Changes>> {
        let applied = self.applied.load(Ordering::SeqCst);
        while self.inflight.front().is_some_and(|(n, _)| *n <= applied) {
            self.inflight.pop_front();
        }
        self.inflight.iter().map(|(_, c)| c.clone()).collect()
    }

    /// Decides a job's claims in order into the group, the state read-locked
    /// for one claim at a time. A claim the poisoned lock keeps from being
    /// decided fails, and so does the group.
    fn decide_claims(
        &self,
        g: &mut Group,
        inflight: &[Arc<Changes>],
        dirs: &HashMap<County, Arc<Directory>>,
        items: Vec<ClaimItem>,
    ) -> Vec<ItemResult> {
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let Ok(state) = self.state.read() else {
                g.note_poisoned_state();
                results.push(ItemResult::Failed);
                continue;
            };
            let base = Base { state: &state, inflight };
            results.push(self.claim(g, base, dirs, item));
        }
        results
    }

    /// Decides a revocation into the group, the state read-locked for it. A
    /// poisoned lock answers "not found" and fails the group.
    fn decide_revocation(
        &self,
        g: &mut Group,
        inflight: &[Arc<Changes>],
        claim_id: &str,
        reason: String,
        key_id: &str,
    ) -> RevokeResult {
        match self.state.read() {
            Ok(state) => {
                let base = Base { state: &state, inflight };
                self.revoke(g, base, claim_id, reason, key_id)
            }
            Err(_) => {
                g.note_poisoned_state();
                RevokeResult::NotFound
            }
        }
    }

    /// Encodes the group's records into its batch and writes the batch to
    /// the store (made durable later, by the syncer); answers how many keys
    /// it wrote and the records' decision texts (by record number). After a
    /// read failure nothing is written; after a failed
    /// write the store is reported failed. Either failure is logged and
    /// answered (the caller fails the group's replies with it).
    fn write_group(
        &self,
        mut batch: WriteBatch,
        records: HashMap<u64, ClaimRecord>,
        read_error: Option<String>,
    ) -> Result<(usize, Vec<DecisionText>), String> {
        let texts = match read_error {
            None => encode_records(&mut batch, records.into_values().collect()),
            Some(_) => Vec::new(),
        };
        if let Some(e) = read_error {
            // Nothing is written: the group's claims get 503, the store stays
            // writable (a read failure is not a reason to stop).
            tracing::error!(error = %e, "a ledger read failed; the group was not recorded");
            return Err(e);
        }
        let written = batch.len;
        if written > 0 {
            if let Err(e) = self.store.write(batch) {
                let e = format!("{e:#}");
                tracing::error!(error = %e, "store write failed; the group was not recorded");
                self.failure.report();
                return Err(e);
            }
        }
        Ok((written, texts))
    }

    /// A recorded claim, from this group's records or the store (which holds
    /// the groups written before, durable or not yet).
    fn record(&self, g: &mut Group, seq: u64) -> Option<ClaimRecord> {
        if let Some(r) = g.records.get(&seq) {
            return Some(r.clone());
        }
        match self.store.record(seq) {
            Ok(Some(r)) => Some(r),
            Ok(None) => {
                g.read_error.get_or_insert(format!("record {seq} is missing from the store"));
                None
            }
            Err(e) => {
                // A read that fails must not be taken for a missing claim.
                g.read_error.get_or_insert(format!("{e:#}"));
                None
            }
        }
    }

    fn event(
        g: &mut Group,
        claim_seq: u64,
        claim_id: &str,
        kind: &str,
        key_id: &str,
        status: Status,
        reason: Option<String>,
    ) {
        let e = Event {
            seq: g.changes.take_event(),
            claim_id: claim_id.into(),
            event: kind.into(),
            at: Utc::now(),
            key_id: key_id.into(),
            status,
            reason,
        };
        g.batch.event(claim_seq, &e);
    }

    fn claim(&self, g: &mut Group, base: Base, dirs: &HashMap<County, Arc<Directory>>, item: ClaimItem) -> ItemResult {
        let id = item.claim.claim_id.as_str().to_string();
        if let Some(seq) = g.changes.seq_of(base, &id) {
            let Some(existing) = self.record(g, seq) else { return ItemResult::Failed };
            if !item.body_hash.matches(&existing.body.body_hash) {
                return ItemResult::Conflict;
            }
            Self::event(g, seq, &id, "replayed", &item.key_id, existing.header.status, None);
            return ItemResult::Replayed(existing.body.decision);
        }
        let county = item.claim.county;
        let policy = self.policy.county(county);
        let dir = dirs.get(&county).cloned().unwrap_or_default();
        // A bug in the rules must not take the writer (and every later claim) down.
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let view = GroupView { base, changes: &g.changes };
            decide(&item.claim, item.person.as_deref(), &view, policy, &dir, Utc::now())
        }));
        let outcome = match decided {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                g.read_error.get_or_insert(e.to_string());
                return ItemResult::Failed;
            }
            Err(_) => {
                tracing::error!(claim_id = %id, kind = %item.claim.kind, "the rules panicked on a claim; nothing recorded for it");
                return ItemResult::Failed;
            }
        };
        let mut decision = outcome.decision;
        decision.recorded = true;
        let seq = g.changes.next_seq();
        let e = &outcome.effects;
        let header = RecordHeader {
            claim_id: id.clone(),
            status: decision.status,
            county,
            kind: item.claim.kind,
            event_date: item.claim.event_date,
            department: item.claim.department.as_ref().map(|d| d.as_str().to_string()),
            granted: outcome.amount,
            parties: item.claim.party_codes().into_iter().map(str::to_string).collect(),
            decided_event: g.changes.take_event(),
            holdings: Holdings {
                count: e.count.as_ref().map(digest),
                keys: e.keys.iter().map(digest).collect(),
                totals: e.totals.iter().map(|(k, v)| (digest(k), *v)).collect(),
            },
        };
        let record = ClaimRecord {
            seq,
            header,
            body: RecordBody {
                decision: decision.clone(),
                body_hash: item.body_hash.keyed,
                // Stored from the section encoded before the writer.
                submitted: None,
                id_masked: item.id_masked,
                recorded_by: item.key_id,
            },
            claim_section: Some(item.claim_section),
        };
        g.changes.add_id(seq, &id);
        if record.header.status == Status::Approved {
            g.changes.hold(base, seq, &record.header, true);
        }
        g.records.insert(seq, record);
        // Its stored text is added once the group's records are encoded.
        ItemResult::New(decision, None)
    }

    fn revoke(&self, g: &mut Group, base: Base, claim_id: &str, reason: String, key_id: &str) -> RevokeResult {
        let Some(seq) = g.changes.seq_of(base, claim_id) else { return RevokeResult::NotFound };
        let Some(mut r) = self.record(g, seq) else { return RevokeResult::NotFound };
        match r.header.status {
            Status::Rejected => RevokeResult::NotRevocable,
            Status::Revoked => RevokeResult::Revoked(Box::new(r.body.decision)),
            Status::Approved => {
                g.changes.hold(base, seq, &r.header, false);
                r.header.status = Status::Revoked;
                r.body.decision.status = Status::Revoked;
                r.body.decision.revocation = Some(Revocation { reason: reason.clone(), revoked_at: Utc::now() });
                g.changed.push(seq);
                Self::event(g, seq, claim_id, "revoked", key_id, Status::Revoked, Some(reason));
                let decision = r.body.decision.clone();
                g.records.insert(seq, r);
                RevokeResult::Revoked(Box::new(decision))
            }
        }
    }
}

/// A record's decision as written for it: its number and its JSON text.
type DecisionText = (u64, Arc<[u8]>);

/// Encodes a group's new and changed records into its batch, and answers
/// their decisions' texts as written (in record order). The decisions' JSON
/// and compression are most of a record's cost, so a large group (a batch)
/// is encoded on two threads.
fn encode_records(batch: &mut WriteBatch, mut records: Vec<ClaimRecord>) -> Vec<DecisionText> {
    records.sort_by_key(|r| r.seq);
    let enc = |rs: &[ClaimRecord]| rs.iter().map(|r| (r.seq, r.encode_with_text())).collect::<Vec<_>>();
    let encoded = if records.len() >= 256 {
        let (a, b) = records.split_at(records.len() / 2);
        let (mut first, second) = std::thread::scope(|s| {
            let other = std::thread::Builder::new().spawn_scoped(s, || enc(b));
            (enc(a), other.ok().and_then(|t| t.join().ok()))
        });
        // Encoding cannot panic; if it did, or no thread could be started,
        // that half is encoded here.
        first.extend(second.unwrap_or_else(|| enc(b)));
        first
    } else {
        enc(&records)
    };
    let mut texts = Vec::with_capacity(encoded.len());
    for (seq, (bytes, text)) in encoded {
        batch.record_bytes(seq, bytes);
        texts.push((seq, text));
    }
    texts
}

/// Gives each new decision of the group's answers its record's text (texts
/// sorted by record number), which is then the answer's body
/// (`ItemResult::New`). The group's new records are numbered from
/// `first_seq` in the order of its new decisions. The caller leaves out the
/// records the group changed after deciding them.
fn give_texts(replies: &mut [Reply], first_seq: u64, texts: &[DecisionText]) {
    let mut seq = first_seq;
    for reply in replies {
        let Reply::Claims(_, results) = reply else { continue };
        for result in results.iter_mut().filter(|r| matches!(r, ItemResult::New(..))) {
            if let Ok(i) = texts.binary_search_by_key(&seq, |(s, _)| *s) {
                result.give_text(texts[i].1.clone());
            }
            seq += 1;
        }
    }
}

fn fail_job(job: Job, e: &str) {
    let reply = match job {
        Job::Claims { reply, .. } => Reply::Claims(reply, Vec::new()),
        Job::Revoke { reply, .. } => Reply::Revoke(reply, RevokeResult::NotFound),
        Job::Directory { reply, record, .. } => Reply::Directory(reply, record),
        Job::Stop => return,
    };
    reply.send(Some(e));
}

/// Frees the node versions sled replaced while writing `written` keys.
///
/// Every sled insert copies a B-tree node and leaves the old copy to
/// crossbeam-epoch's collector, which frees at most 512 of them per 128 pins
/// of a thread. At thousands of claims a second the writer makes garbage
/// faster than that; each flush of a fresh guard advances the epoch if it
/// can and runs one collection step.
fn reclaim(written: usize) {
    for _ in 0..written / 128 + 2 {
        crossbeam_epoch::pin().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_new_decision_gets_its_own_records_text() {
        let decided =
            |id: &str, status: &str| Decision { claim_id: id.into(), ..crate::rules::sample_decision(status) };
        let text = |d: &Decision| -> Arc<[u8]> { serde_json::to_vec(d).expect("json").into() };
        let (a, b, c) = (decided("A", "approved"), decided("B", "approved"), decided("C", "rejected"));
        let (tx1, _rx1) = oneshot::channel();
        let (tx2, _rx2) = oneshot::channel();
        let mut replies = vec![
            Reply::Claims(
                tx1,
                vec![ItemResult::New(a.clone(), None), ItemResult::Replayed(a.clone()), ItemResult::Failed],
            ),
            Reply::Revoke(oneshot::channel().0, RevokeResult::NotFound),
            // Two jobs of single claims in the same group.
            Reply::Claims(tx2, vec![ItemResult::New(b.clone(), None)]),
            Reply::Claims(oneshot::channel().0, vec![ItemResult::New(c.clone(), None)]),
        ];
        // The group's new records are 7, 8 and 9; record 3, of an earlier
        // group, was revoked in it, and so was 8: the caller leaves 8 out.
        let revoked = decided("R", "revoked");
        give_texts(&mut replies, 7, &[(3, text(&revoked)), (7, text(&a)), (9, text(&c))]);
        let given: Vec<Option<Vec<u8>>> = replies
            .iter()
            .flat_map(|r| match r {
                Reply::Claims(_, results) => results
                    .iter()
                    .map(|r| match r {
                        ItemResult::New(_, t) => t.as_deref().map(<[u8]>::to_vec),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(given, vec![Some(text(&a).to_vec()), None, None, None, Some(text(&c).to_vec())]);
    }
}
