//! Keys, records and read access.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{County, Kind};
use crate::rules::{Decision, Directory, Effects, LedgerView};

/// Key prefixes of the one tree.
pub(crate) mod px {
    pub const CLAIM: &str = "c\0";
    pub const KEY: &str = "k\0";
    pub const NUM: &str = "n\0";
    pub const EVENT: &str = "e\0";
    pub const REPORT: &str = "r\0";
    pub const DIRECTORY: &str = "d\0";
    /// A person's counted claims of a year: `u\0usage:<county>:<person>:<year>`
    /// → their ids, one per line (the count is their number).
    pub const USAGE: &str = "u\0";
    pub const SEQ: &str = "s\0";
    pub const META: &str = "m\0";
}

pub(crate) fn key(prefix: &str, parts: &[&str]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

/// A recorded claim: the decision, what it holds in the ledger, and what the
/// listings and reports need. ID numbers appear only masked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredClaim {
    pub decision: Decision,
    pub body_hash: String,
    pub effects: Effects,
    pub granted: Decimal,
    pub county: County,
    pub kind: Kind,
    pub event_date: NaiveDate,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub person: Option<String>,
    #[serde(default)]
    pub id_masked: Option<String>,
    /// Credit codes of the institution and organisation on the claim.
    #[serde(default)]
    pub parties: Vec<String>,
    pub seq: u64,
    pub recorded_by: String,
    /// Sequence number of the `decided` event, which the record itself stands
    /// for (no separate event is stored for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_event: Option<u64>,
}

impl StoredClaim {
    /// The `decided` event this record stands for.
    pub fn decided(&self) -> Option<Event> {
        Some(Event {
            seq: self.decided_event?,
            claim_id: self.decision.claim_id.clone(),
            event: "decided".into(),
            at: self.decision.decided_at,
            key_id: self.recorded_by.clone(),
            // Only a granted claim can be revoked.
            status: match self.decision.status {
                crate::rules::Status::Revoked => crate::rules::Status::Approved,
                s => s,
            },
            reason: None,
        })
    }

    pub fn visible_to(&self, scope: Option<&str>) -> bool {
        scope.is_none_or(|cc| self.parties.iter().any(|p| p == cc))
    }
}

/// One entry of a claim's append-only history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub seq: u64,
    pub claim_id: String,
    /// `decided`, `replayed` or `revoked`.
    pub event: String,
    pub at: DateTime<Utc>,
    /// The id (never the secret) of the API key that acted.
    pub key_id: String,
    pub status: crate::rules::Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tally {
    pub count: u64,
    #[schema(value_type = String)]
    pub amount: Decimal,
}

/// Running totals of granted claims for a county and year (revocations subtract).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportTotals {
    pub by_kind: BTreeMap<String, Tally>,
    pub by_department: BTreeMap<String, Tally>,
}

/// A stored trade-friction directory.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirectoryRecord {
    pub enterprises: Vec<DirectoryEntry>,
    pub updated_at: Option<DateTime<Utc>>,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryEntry {
    /// GB 32100-2015 unified social credit code.
    #[schema(pattern = "^[0-9A-HJ-NPQRTUWXY]{18}$", example = "91330723MA00000156")]
    pub credit_code: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub listed_from: NaiveDate,
}

impl DirectoryRecord {
    pub fn empty() -> Self {
        Self::new(Vec::new(), None)
    }

    /// The version is the hash of the sorted entries: the same list, the same version.
    pub fn new(mut enterprises: Vec<DirectoryEntry>, updated_at: Option<DateTime<Utc>>) -> Self {
        use sha2::{Digest, Sha256};
        enterprises.sort_by(|a, b| a.credit_code.cmp(&b.credit_code));
        let canonical = serde_json::to_vec(&enterprises).unwrap_or_default();
        let version = format!("sha256:{}", hex::encode(&Sha256::digest(&canonical)[..16]));
        Self { enterprises, updated_at, version }
    }

    pub fn to_directory(&self) -> Directory {
        Directory {
            version: self.version.clone(),
            listed: self.enterprises.iter().map(|e| (e.credit_code.clone(), e.listed_from)).collect(),
        }
    }
}

/// The sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    pub(crate) tree: sled::Tree,
}

impl Store {
    pub fn open(path: &Path, cache_capacity: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("creating store directory {}", path.display()))?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .mode(sled::Mode::HighThroughput)
            // Records are compressed one by one (`encode_record`): sled's own
            // compression sets up a zstd context for every page it logs, which
            // cost more than half of the writer's time (scripts/bench.d/RESULTS.md).
            .use_compression(false)
            .open()
            .with_context(|| format!("opening the sled store at {}", path.display()))?;
        let tree = db.open_tree("ledger").context("opening the ledger tree")?;
        Ok(Self { db, tree })
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        self.db.flush().context("flushing the store")?;
        Ok(())
    }

    /// Readiness: the store takes a write and a flush.
    pub fn probe(&self) -> anyhow::Result<()> {
        self.tree.insert(key(px::META, &["probe"]), Utc::now().to_rfc3339().as_bytes())?;
        self.flush()
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, k: &[u8]) -> anyhow::Result<Option<T>> {
        match self.tree.get(k)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).context("decoding a stored record")?)),
            None => Ok(None),
        }
    }

    pub fn claim(&self, claim_id: &str) -> anyhow::Result<Option<StoredClaim>> {
        self.tree.get(key(px::CLAIM, &[claim_id]))?.map(|v| decode_record(&v)).transpose()
    }

    /// A claim's history in order: its decision, then replays and revocation.
    pub fn events(&self, claim: &StoredClaim) -> anyhow::Result<Vec<Event>> {
        let mut prefix = key(px::EVENT, &[&claim.decision.claim_id]);
        prefix.push(0);
        let mut events: Vec<Event> = claim.decided().into_iter().collect();
        for kv in self.tree.scan_prefix(prefix) {
            events.push(decode_record(&kv?.1)?);
        }
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }

    pub fn directory(&self, county: County) -> anyhow::Result<DirectoryRecord> {
        Ok(self.get_json(&key(px::DIRECTORY, &[county.as_str()]))?.unwrap_or_else(DirectoryRecord::empty))
    }

    pub fn directories(&self) -> anyhow::Result<HashMap<County, DirectoryRecord>> {
        County::ALL.iter().map(|c| Ok((*c, self.directory(*c)?))).collect()
    }

    pub fn report(&self, county: County, year: i32) -> anyhow::Result<ReportTotals> {
        Ok(self.get_json(&key(px::REPORT, &[county.as_str(), &year.to_string()]))?.unwrap_or_default())
    }

    /// The claims counted under a usage key (a person's year): in recording
    /// order as the writer keeps them, in claim-id order after an import.
    pub fn usage_claims(&self, usage_key: &str) -> anyhow::Result<Vec<String>> {
        Ok(members(self.tree.get(key(px::USAGE, &[usage_key]))?.as_deref()))
    }

    /// Claims in recording order, from `after` (exclusive), at most `limit`.
    pub fn claims_in_order(&self, after: Option<u64>) -> impl Iterator<Item = anyhow::Result<(u64, StoredClaim)>> + '_ {
        let start = key(px::SEQ, &[&format!("{:020}", after.map_or(0, |a| a + 1))]);
        self.tree
            .range(start..)
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(px::SEQ.as_bytes())))
            .map(move |kv| {
                let (k, v) = kv?;
                let seq: u64 = std::str::from_utf8(&k[px::SEQ.len()..])?.parse()?;
                let id = String::from_utf8_lossy(&v).to_string();
                let c = self.claim(&id)?.with_context(|| format!("claim {id} missing from its index"))?;
                Ok((seq, c))
            })
    }

    /// Every stored claim (for checks and exports).
    pub fn all_claims(&self) -> impl Iterator<Item = anyhow::Result<StoredClaim>> + '_ {
        self.tree.scan_prefix(px::CLAIM.as_bytes()).map(|kv| decode_record(&kv?.1))
    }

    /// Every stored event (for checks and exports).
    pub fn all_events(&self) -> impl Iterator<Item = anyhow::Result<Event>> + '_ {
        self.tree.scan_prefix(px::EVENT.as_bytes()).map(|kv| decode_record(&kv?.1))
    }
}

/// Marks a compressed record: `D`, the version of the dictionary it was
/// compressed with, the JSON's length (u32, little endian), then the zstd
/// frame. A record that starts with `{` is plain JSON.
const COMPRESSED: u8 = b'D';

/// The zstd dictionaries of claim records, by version (index + 1), trained
/// by `scripts/record-dictionary` on records of every kind. Records are small
/// and alike: a ~1.2 KB record compresses to ~750 B alone and to ~130–250 B
/// with the dictionary. A released version never changes (the records written
/// with it need it); a new one is appended and becomes current.
const DICTIONARIES: [&[u8]; 1] = [include_bytes!("records-v1.dict")];
const CURRENT: usize = DICTIONARIES.len();

struct Codec {
    compressor: zstd::bulk::Compressor<'static>,
    /// One per dictionary version.
    decompressors: Vec<zstd::bulk::Decompressor<'static>>,
}

thread_local! {
    static CODEC: std::cell::RefCell<Option<Codec>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's zstd contexts (created once, dictionaries loaded).
fn with_codec<R>(f: impl FnOnce(&mut Codec) -> std::io::Result<R>) -> std::io::Result<R> {
    CODEC.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Codec {
                compressor: zstd::bulk::Compressor::with_dictionary(1, DICTIONARIES[CURRENT - 1])?,
                decompressors: DICTIONARIES
                    .iter()
                    .map(|d| zstd::bulk::Decompressor::with_dictionary(d))
                    .collect::<std::io::Result<_>>()?,
            });
        }
        match slot.as_mut() {
            Some(codec) => f(codec),
            None => Err(std::io::Error::other("zstd contexts missing")),
        }
    })
}

/// A claim or event record as stored: its JSON, compressed (level 1) with the
/// current dictionary.
pub(crate) fn encode_record<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own records cannot fail.
    let json = serde_json::to_vec(v).unwrap_or_default();
    let Ok(len) = u32::try_from(json.len()) else { return json };
    match with_codec(|c| c.compressor.compress(&json)) {
        Ok(z) if z.len() + 6 < json.len() => {
            let mut out = Vec::with_capacity(z.len() + 6);
            out.push(COMPRESSED);
            out.push(CURRENT as u8);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&z);
            out
        }
        _ => json,
    }
}

pub(crate) fn decode_record<T: serde::de::DeserializeOwned>(v: &[u8]) -> anyhow::Result<T> {
    match v {
        [COMPRESSED, version, a, b, c, d, z @ ..] => {
            let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
            let json = with_codec(|codec| {
                let dec = usize::from(*version)
                    .checked_sub(1)
                    .and_then(|i| codec.decompressors.get_mut(i))
                    .ok_or_else(|| std::io::Error::other(format!("unknown record dictionary {version}")))?;
                dec.decompress(z, len)
            })
            .context("decompressing a stored record")?;
            serde_json::from_slice(&json).context("decoding a stored record")
        }
        _ => serde_json::from_slice(v).context("decoding a stored record"),
    }
}

/// The claim ids of a usage record.
pub(crate) fn members(v: Option<&[u8]>) -> Vec<String> {
    v.map(|v| String::from_utf8_lossy(v).lines().map(str::to_string).collect()).unwrap_or_default()
}

/// A usage record's value (claim ids hold no line breaks).
pub(crate) fn encode_members(ids: &[String]) -> Vec<u8> {
    ids.join("\n").into_bytes()
}

pub(crate) fn parse_num(v: &[u8]) -> Decimal {
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or_default()
}

/// Reads the committed store (evaluations).
///
/// An evaluation of a claim that is already recorded (the same claim id and
/// body) judges it as if it were decided afresh: what its own record holds
/// (its place in the person's yearly usage, its unique keys, its share of
/// running totals) does not count against it. Another body under a recorded
/// id is judged against everything recorded, that record included. The writer
/// never decides a recorded claim again (a resubmission is a replay), so only
/// evaluations need this.
pub struct StoreView<'a> {
    store: &'a Store,
    own: Option<StoredClaim>,
}

impl<'a> StoreView<'a> {
    /// Sets aside the record of `claim_id` if it holds this `body_hash` and
    /// was granted (only a granted, unrevoked claim holds anything).
    pub fn new(store: &'a Store, claim_id: &str, body_hash: &str) -> anyhow::Result<Self> {
        let own = store
            .claim(claim_id)?
            .filter(|c| c.body_hash == body_hash && c.decision.status == crate::rules::Status::Approved);
        Ok(Self { store, own })
    }

    /// A view that sets nothing aside (the claim id is certainly not recorded).
    pub fn whole(store: &'a Store) -> Self {
        Self { store, own: None }
    }

    fn own_id(&self) -> Option<&str> {
        self.own.as_ref().map(|c| c.decision.claim_id.as_str())
    }
}

impl LedgerView for StoreView<'_> {
    fn count(&self, k: &str) -> u32 {
        let ids = self.store.tree.get(key(px::USAGE, &[k])).ok().flatten();
        let ids = members(ids.as_deref());
        u32::try_from(ids.iter().filter(|id| Some(id.as_str()) != self.own_id()).count()).unwrap_or(u32::MAX)
    }
    fn holder(&self, k: &str) -> Option<String> {
        let v = self.store.tree.get(key(px::KEY, &[k])).ok().flatten()?;
        let holder = String::from_utf8_lossy(&v).to_string();
        (Some(holder.as_str()) != self.own_id()).then_some(holder)
    }
    fn total(&self, k: &str) -> Decimal {
        let stored = self.store.tree.get(key(px::NUM, &[k])).ok().flatten().map(|v| parse_num(&v)).unwrap_or_default();
        let own: Decimal = self
            .own
            .iter()
            .flat_map(|c| c.effects.totals.iter())
            .filter(|(name, _)| name == k)
            .map(|(_, amount)| *amount)
            .sum();
        (stored - own).max(Decimal::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        claim_id: String,
        note: String,
    }

    #[test]
    fn records_round_trip_compressed_or_plain_and_an_unknown_dictionary_is_an_error() {
        let r = R { claim_id: "C-1".into(), note: "资格培训补贴 qualification_training ".repeat(20) };
        let stored = encode_record(&r);
        assert_eq!(stored[..2], [COMPRESSED, CURRENT as u8]);
        assert!(stored.len() < serde_json::to_vec(&r).expect("json").len() / 2);
        assert_eq!(decode_record::<R>(&stored).expect("decoded"), r);
        // Too small to gain from compression: stored as plain JSON, read back as such.
        let small = R { claim_id: "C".into(), note: String::new() };
        assert_eq!(encode_record(&small)[0], b'{');
        assert_eq!(decode_record::<R>(&encode_record(&small)).expect("decoded"), small);
        let mut unknown = stored.clone();
        unknown[1] = 99;
        let err = decode_record::<R>(&unknown).expect_err("no such dictionary");
        assert!(format!("{err:#}").contains("unknown record dictionary 99"), "{err:#}");
    }
}
