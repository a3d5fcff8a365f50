//! The ledger: every recorded decision and everything it holds (per-person
//! yearly usage, unique keys, cumulative totals, tranches, report totals),
//! behind one seam, [`LedgerService`]. Handlers call it and nothing else of
//! the ledger: they never see a store, a key or a byte.
//!
//! The embedded backend ([`EmbeddedLedger`], sled) is the default. Its
//! layout v2 writes one record per claim: the claim as submitted (personal
//! fields sealed), its decision and what it holds. The holdings of all
//! records, summed, are the materialised [`state`] in memory, which the
//! rules read: a claim is decided, recorded or evaluated without reading the
//! store. One writer thread takes whatever claims are waiting (group
//! commit), decides them in arrival order against the state plus the group's
//! own changes, writes the group as one atomic batch, makes it durable on the
//! device (`fdatasync`), then applies it to the state and answers.

mod embedded;
pub mod keys;
mod maintenance;
pub mod postgres;
pub mod record;
pub mod state;
mod store;

use std::sync::Arc;

use chrono::NaiveDate;

pub use embedded::EmbeddedLedger;
pub use maintenance::{
    check, check_dump, export, export_dump, import, import_v1_store, read_export, Dump, Imported, Recount,
};
pub use postgres::PostgresLedger;
pub use record::{
    ClaimPart, ClaimRecord, DirectoryEntry, DirectoryRecord, Event, HeaderPrefix, RecordHeader, ReportTotals, Tally,
};
pub use state::StateStats;
pub use store::Store;

use crate::domain::{Claim, County, Kind, Node};
use crate::rules::{Decision, Directory, Status};

/// A parsed claim on its way to be recorded.
pub struct ClaimItem {
    pub claim: Claim,
    /// The body's hashes: the same claim id with another body conflicts.
    pub body_hash: crate::privacy::BodyHashes,
    /// The person's keyed hash, for person-level kinds.
    pub person: Option<String>,
    pub id_masked: Option<String>,
    /// The record's claim section ([`record::ClaimPart`]: the claim as
    /// submitted, personal fields sealed, and who recorded it), encoded by
    /// the caller so that the writer does not.
    pub claim_section: Arc<[u8]>,
    pub key_id: String,
}

/// A claim to evaluate: decided against the ledger, recorded nowhere.
pub struct Evaluation {
    pub claim: Claim,
    pub person: Option<String>,
    /// The body's hashes, computed only when its claim id is already recorded.
    pub body_hashes: Box<dyn FnOnce() -> crate::privacy::BodyHashes + Send>,
}

#[derive(Debug, Clone)]
pub enum ItemResult {
    /// A new decision, recorded; with its JSON text as stored when the
    /// backend keeps it (the embedded ledger), which is then the answer's
    /// body. None when the same group changed the decision after it was
    /// made (a revocation): the stored text is then the changed decision's.
    New(Decision, Option<Arc<[u8]>>),
    Replayed(Decision),
    Conflict,
    /// The rules failed on this claim (a bug); nothing was recorded for it.
    Failed,
}

impl ItemResult {
    /// Gives a new decision the text its record was stored from, which is
    /// then the answer's body; debug builds check that it is the decision's.
    pub(crate) fn give_text(&mut self, t: Arc<[u8]>) {
        if let ItemResult::New(decision, text) = self {
            debug_assert!(
                serde_json::to_vec(decision).ok().as_deref() == Some(&t[..]),
                "claim {}: the text given is not the answered decision's",
                decision.claim_id
            );
            *text = Some(t);
        }
    }
}

#[derive(Debug)]
pub enum RevokeResult {
    Revoked(Box<Decision>),
    NotFound,
    NotRevocable,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the store could not be written or read: {0}")]
    Unavailable(String),
    #[error("the writer has stopped")]
    Stopped,
}

impl From<anyhow::Error> for LedgerError {
    fn from(e: anyhow::Error) -> Self {
        Self::Unavailable(format!("{e:#}"))
    }
}

/// The reports' line, and the listing's filter value, of the claims that
/// name no department.
pub const UNASSIGNED: &str = "unassigned";

/// A listing's department filter: `None` any, `Some(None)` claims naming no
/// department (the reports' [`UNASSIGNED`]), `Some(Some(code))` that one.
pub type DepartmentFilter = Option<Option<String>>;

/// Which recorded claims a listing shows, and from where.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub county: Option<County>,
    pub kind: Option<Kind>,
    pub status: Option<Status>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub department: DepartmentFilter,
    /// An institution sees only claims naming it.
    pub scope: Option<String>,
    /// The cursor: claims recorded after this one.
    pub after: Option<u64>,
    pub limit: usize,
}

impl ListFilter {
    fn keeps(&self, h: &RecordHeader) -> bool {
        h.visible_to(self.scope.as_deref())
            && self.county.is_none_or(|x| x == h.county)
            && self.kind.is_none_or(|x| x == h.kind)
            && self.status.is_none_or(|x| x == h.status)
            && self.from.is_none_or(|x| h.event_date >= x)
            && self.to.is_none_or(|x| h.event_date <= x)
            && self.department.as_ref().is_none_or(|x| h.department == *x)
    }
}

/// One page of a listing.
pub struct ListPage {
    pub claims: Vec<ClaimRecord>,
    /// The cursor of the next page, if there may be one.
    pub next: Option<u64>,
}

/// A claim counted in a person's year.
pub struct UsageEntry {
    pub claim_id: String,
    pub kind: Kind,
    pub event_date: NaiveDate,
    pub status: Status,
    pub amount: String,
}

/// Which recorded claims a replay reads: a county's granted or rejected
/// claims (revoked ones left out) with event dates in `from..=to`.
#[derive(Debug, Clone, Copy)]
pub struct ReplayFilter {
    pub county: County,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl ReplayFilter {
    fn keeps(&self, h: &HeaderPrefix) -> bool {
        h.county == self.county && h.status != Status::Revoked && (self.from..=self.to).contains(&h.event_date)
    }
}

/// A recorded claim as it was submitted (personal fields sealed), for replay.
pub struct Submitted {
    pub seq: u64,
    pub claim_id: String,
    pub claim: StoredClaim,
}

/// The claim as submitted, as a backend reads it: decoded, or still in the
/// stored form (decoded by [`StoredClaim::read`] on the replay's decoding
/// threads, so that a backend's reading thread only reads).
pub enum StoredClaim {
    Json(serde_json::Value),
    /// A layout-v2 record's claim section.
    Section(Vec<u8>),
    /// A record moved from layout v1, which kept only the decision.
    Missing,
}

impl StoredClaim {
    /// `f` of the claim as submitted read as a [`Node`] (personal fields
    /// sealed; `None` when not kept) and of the body hash recorded with it
    /// (`None` for a bare claim). A claim section's strings are borrowed
    /// from its text, which lives only as long as the call.
    pub fn read<R>(self, f: impl FnOnce(Option<Node<'_>>, Option<&str>) -> R) -> anyhow::Result<R> {
        match self {
            Self::Json(v) => Ok(f(Some(Node::from(v)), None)),
            Self::Section(bytes) => {
                let text = record::record_text(&bytes)?;
                let (claim, body_hash) = ClaimPart::submitted_node(&text)?;
                Ok(f(claim, Some(&body_hash)))
            }
            Self::Missing => Ok(f(None, None)),
        }
    }
}

/// Recorded claims read one after another (see [`LedgerService::submissions`]).
pub type Submissions = Box<dyn Iterator<Item = Result<Submitted, LedgerError>> + Send>;

/// The claims as submitted that `filter` selects in a stopped store (the
/// offline `simulate` command).
pub fn replay_store(store: &Arc<Store>, filter: ReplayFilter) -> Submissions {
    embedded::replay(store, u64::MAX, filter)
}

/// The ledger's seam. The embedded backend implements it; a networked one
/// (a shared database for several replicas) implements the same calls.
/// Every call that may wait on storage is async; a failed read or write is
/// [`LedgerError::Unavailable`] (`503 STORE_UNAVAILABLE`), never "absent".
#[async_trait::async_trait]
pub trait LedgerService: Send + Sync {
    /// Decides and records claims in order, each seeing the earlier ones'
    /// effects, all durable before the answer.
    async fn submit(&self, items: Vec<ClaimItem>) -> Result<Vec<ItemResult>, LedgerError>;
    /// The decision a claim would get now, recording nothing.
    async fn evaluate(&self, e: Evaluation) -> Result<Decision, LedgerError>;
    /// A recorded claim.
    async fn claim(&self, claim_id: &str) -> Result<Option<ClaimRecord>, LedgerError>;
    /// A recorded claim and its history in order: decided, replayed, revoked.
    async fn events(&self, claim_id: &str) -> Result<Option<(ClaimRecord, Vec<Event>)>, LedgerError>;
    /// Recorded claims in recording order.
    async fn list(&self, filter: ListFilter) -> Result<ListPage, LedgerError>;
    /// Withdraws a granted claim, releasing everything it holds.
    async fn revoke(&self, claim_id: String, reason: String, key_id: String) -> Result<RevokeResult, LedgerError>;
    /// The claims counted in a person's year, in claim-id order.
    async fn usage(&self, county: County, person: String, year: i32) -> Result<Vec<UsageEntry>, LedgerError>;
    /// The claims as submitted that `filter` selects, in recording order, as
    /// far as they are durable now (later claims are not read). The iterator
    /// reads the store as it goes: consume it off the async workers.
    fn submissions(&self, filter: ReplayFilter) -> Result<Submissions, LedgerError>;
    /// The county's trade-friction directory in force, as the rules read it.
    async fn directory(&self, county: County) -> Result<Arc<Directory>, LedgerError>;
    /// The county's stored trade-friction directory.
    async fn directory_record(&self, county: County) -> Result<DirectoryRecord, LedgerError>;
    async fn put_directory(&self, county: County, record: DirectoryRecord) -> Result<DirectoryRecord, LedgerError>;
    /// Running totals of granted claims for a county and year.
    async fn report(&self, county: County, year: i32) -> Result<ReportTotals, LedgerError>;
    /// Readiness: the store takes a durable write.
    async fn probe(&self) -> Result<(), LedgerError>;
    fn stats(&self) -> LedgerStats;
    /// Called once when the store fails for good (the embedded store: a
    /// write fails; PostgreSQL: a database first reached after the start
    /// refuses it), so that the service stops and its supervisor starts it
    /// again on a repaired store.
    fn on_failure(&self, f: Box<dyn Fn() + Send + Sync>);
    fn failed(&self) -> bool;
    /// Finishes what is queued, then makes the store durable.
    async fn shutdown(&self);
}

/// Figures for `/metrics` and the benchmark, each backend's own.
#[derive(Debug, Clone, Copy)]
pub enum LedgerStats {
    /// The embedded store: its materialised state and durability.
    Embedded { state: StateStats, fsyncs: u64, size_on_disk: u64 },
    /// A database: this replica's connections to it.
    Database(ConnectionStats),
}

/// A replica's database connections, over all its workers' pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Open (idle or in use).
    pub open: usize,
    /// Open and idle.
    pub idle: usize,
    /// The most it keeps (`store.pool_size`).
    pub max: usize,
    /// Requests waiting for one.
    pub waiting: usize,
}
