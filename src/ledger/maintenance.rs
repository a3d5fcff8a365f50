//! Offline maintenance of a stopped store: the consistency check (every
//! record decodes and agrees with itself; the holdings recounted from the
//! records never overlap), export to JSON lines, import from them (layout v1
//! or v2), and the move of a layout-v1 store to layout v2.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::keys::{digest_text, KeyDigest};
use super::record::{
    decode_record, ClaimPart, ClaimRecord, DirectoryRecord, Event, Holdings, LegacyClaim, RecordBody, RecordHeader,
};
use super::store::{Store, WriteBatch};
use crate::domain::{County, Kind};
use crate::rules::Status;

/// What the maintenance commands read of a stopped ledger, whichever its
/// backend: the records numbered 1.. in recording order, the events with
/// their claim's number, and the directories.
pub struct Dump<'a> {
    pub records: Box<dyn Iterator<Item = anyhow::Result<ClaimRecord>> + 'a>,
    pub events: Box<dyn Iterator<Item = anyhow::Result<(u64, Event)>> + 'a>,
    pub directories: Box<dyn FnOnce() -> anyhow::Result<HashMap<County, DirectoryRecord>> + 'a>,
}

impl Store {
    pub fn dump(&self) -> Dump<'_> {
        Dump {
            records: Box::new(self.records()),
            events: Box::new(self.events()),
            directories: Box::new(|| self.directories()),
        }
    }
}

/// What the granted records hold, recounted: a backend that keeps it
/// materialised compares its own with this.
#[derive(Debug, Default)]
pub struct Recount {
    /// (usage key, claim id) for every counted grant.
    pub usage: HashSet<(KeyDigest, String)>,
    /// Unique key → the claim holding it.
    pub holders: HashMap<KeyDigest, String>,
    /// Running totals (zero totals left out).
    pub totals: HashMap<KeyDigest, rust_decimal::Decimal>,
}

/// Rechecks a store from its records; returns the drift found.
pub fn check(store: &Store) -> anyhow::Result<Vec<String>> {
    Ok(check_dump(store.dump())?.0)
}

/// Rechecks a ledger from its records; returns the drift found and what the
/// records hold.
pub fn check_dump(dump: Dump) -> anyhow::Result<(Vec<String>, Recount)> {
    let mut check = DumpCheck::default();
    check.records(dump.records);
    check.events(dump.events);
    if let Err(e) = (dump.directories)() {
        check.drift.push(format!("undecodable directory: {e:#}"));
    }
    let DumpCheck { drift, mut recount, .. } = check;
    recount.totals.retain(|_, v| !v.is_zero());
    Ok((drift, recount))
}

/// A dump being checked: the drift found so far, what the granted records
/// hold, and the claim ids, keys and event numbers met so far.
#[derive(Default)]
struct DumpCheck {
    drift: Vec<String>,
    recount: Recount,
    /// Claim id → the record that recorded it first.
    ids: HashMap<String, u64>,
    /// Unique key → the last granted record holding it (number, claim id).
    held: HashMap<KeyDigest, (u64, String)>,
    /// Usage key → how many granted records count in it.
    counted: HashMap<KeyDigest, u32>,
    /// Every event number met: the `decided` events' and the other events'.
    event_seqs: HashSet<u64>,
}

impl DumpCheck {
    /// Checks the records in recording order: numbered 1.. without a gap,
    /// each agreeing with itself, and a grant's holdings recounted; then
    /// that no usage key has more counted grants than a year allows.
    fn records(&mut self, records: impl Iterator<Item = anyhow::Result<ClaimRecord>>) {
        let mut expected_seq = 1;
        for r in records {
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    self.drift.push(format!("undecodable record: {e:#}"));
                    continue;
                }
            };
            if r.seq != expected_seq {
                self.drift.push(format!(
                    "record {} follows record {}: a gap in the recording order",
                    r.seq,
                    expected_seq - 1
                ));
            }
            expected_seq = r.seq + 1;
            self.record(&r);
            if r.header.status != Status::Approved {
                continue;
            }
            self.grant(&r);
        }
        for (k, n) in &self.counted {
            // No year allows more than this many counted grants (RULES R-LIMIT: 3).
            if *n > 3 {
                self.drift
                    .push(format!("usage {}: {n} counted grants in one year", faster_hex::hex_string(k.as_slice())));
            }
        }
    }

    /// Checks one record by itself: its claim id recorded once, its header
    /// agreeing with its decision (status, amount granted), its `decided`
    /// event's number used once.
    fn record(&mut self, r: &ClaimRecord) {
        let (h, d) = (&r.header, &r.body.decision);
        if let Some(first) = self.ids.insert(h.claim_id.clone(), r.seq) {
            self.drift.push(format!("claim {} recorded twice (records {first} and {})", h.claim_id, r.seq));
        }
        if h.status != d.status {
            self.drift.push(format!("claim {}: header says {:?}, decision says {:?}", h.claim_id, h.status, d.status));
        }
        let amount: rust_decimal::Decimal = d.amount.parse().unwrap_or_default();
        if amount != h.granted && h.status != Status::Rejected {
            self.drift.push(format!("claim {}: granted {} but the decision says {}", h.claim_id, h.granted, d.amount));
        }
        if !self.event_seqs.insert(h.decided_event) {
            self.drift.push(format!("event number {} used twice", h.decided_event));
        }
    }

    /// Recounts what a granted record holds, checking that no unique key is
    /// held by two granted claims and that no share of a total is negative.
    fn grant(&mut self, r: &ClaimRecord) {
        let h = &r.header;
        for k in &h.holdings.keys {
            if let Some((seq, other)) = self.held.insert(*k, (r.seq, h.claim_id.clone())) {
                self.drift.push(format!(
                    "key {} held by two granted claims: {other} (record {seq}) and {} (record {})",
                    faster_hex::hex_string(k.as_slice()),
                    h.claim_id,
                    r.seq
                ));
            }
        }
        if let Some(k) = &h.holdings.count {
            *self.counted.entry(*k).or_default() += 1;
            self.recount.usage.insert((*k, h.claim_id.clone()));
        }
        for k in &h.holdings.keys {
            self.recount.holders.insert(*k, h.claim_id.clone());
        }
        for (k, amount) in &h.holdings.totals {
            *self.recount.totals.entry(*k).or_default() += *amount;
            if amount.is_sign_negative() {
                self.drift.push(format!(
                    "claim {}: a negative share {amount} of total {}",
                    h.claim_id,
                    faster_hex::hex_string(k.as_slice())
                ));
            }
        }
    }

    /// Checks the events: each names the claim its record number is, and
    /// each event number is used once (among the `decided` events too).
    fn events(&mut self, events: impl Iterator<Item = anyhow::Result<(u64, Event)>>) {
        for e in events {
            let (claim_seq, e) = match e {
                Ok(x) => x,
                Err(err) => {
                    self.drift.push(format!("undecodable event: {err:#}"));
                    continue;
                }
            };
            if self.ids.get(&e.claim_id) != Some(&claim_seq) {
                self.drift.push(format!("event {} names claim {} which record {claim_seq} is not", e.seq, e.claim_id));
            }
            if !self.event_seqs.insert(e.seq) {
                self.drift.push(format!("event number {} used twice", e.seq));
            }
        }
    }
}

/// A record as exported: its header (digests as hex) and its body.
#[derive(Serialize, Deserialize)]
struct ExportRecord {
    seq: u64,
    claim_id: String,
    status: Status,
    county: County,
    kind: Kind,
    event_date: chrono::NaiveDate,
    #[serde(default)]
    department: Option<String>,
    granted: rust_decimal::Decimal,
    #[serde(default)]
    parties: Vec<String>,
    decided_event: u64,
    #[serde(default)]
    count: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    totals: Vec<(String, rust_decimal::Decimal)>,
    decision: crate::rules::Decision,
    #[serde(flatten)]
    claim: ClaimPart,
}

fn hex16(s: &str) -> anyhow::Result<KeyDigest> {
    let mut digest = KeyDigest::default();
    if !crate::privacy::decode_hex(s, &mut digest) {
        anyhow::bail!("a key digest is not 32 hex digits");
    }
    Ok(digest)
}

impl ExportRecord {
    fn from_record(r: ClaimRecord) -> Self {
        let h = r.header;
        Self {
            seq: r.seq,
            claim_id: h.claim_id,
            status: h.status,
            county: h.county,
            kind: h.kind,
            event_date: h.event_date,
            department: h.department,
            granted: h.granted,
            parties: h.parties,
            decided_event: h.decided_event,
            count: h.holdings.count.map(|k| faster_hex::hex_string(k.as_slice())),
            keys: h.holdings.keys.iter().map(|k| faster_hex::hex_string(k.as_slice())).collect(),
            totals: h.holdings.totals.iter().map(|(k, v)| (faster_hex::hex_string(k.as_slice()), *v)).collect(),
            decision: r.body.decision,
            claim: ClaimPart {
                body_hash: r.body.body_hash,
                submitted: r.body.submitted,
                id_masked: r.body.id_masked,
                recorded_by: r.body.recorded_by,
            },
        }
    }

    fn into_record(self) -> anyhow::Result<ClaimRecord> {
        Ok(ClaimRecord {
            seq: self.seq,
            header: RecordHeader {
                claim_id: self.claim_id,
                status: self.status,
                county: self.county,
                kind: self.kind,
                event_date: self.event_date,
                department: self.department,
                granted: self.granted,
                parties: self.parties,
                decided_event: self.decided_event,
                holdings: Holdings {
                    count: self.count.as_deref().map(hex16).transpose()?,
                    keys: self.keys.iter().map(|k| hex16(k)).collect::<anyhow::Result<_>>()?,
                    totals: self.totals.iter().map(|(k, v)| Ok((hex16(k)?, *v))).collect::<anyhow::Result<_>>()?,
                },
            },
            body: RecordBody {
                decision: self.decision,
                body_hash: self.claim.body_hash,
                submitted: self.claim.submitted,
                id_masked: self.claim.id_masked,
                recorded_by: self.claim.recorded_by,
            },
            claim_section: None,
        })
    }
}

/// One line of an export. `record` is layout v2; `claim` is a layout-v1
/// claim, read on import only.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Record(Box<ExportRecord>),
    Claim(Box<LegacyClaim>),
    Event(Event),
    Directory { county: County, record: DirectoryRecord },
}

fn write_line(out: &mut impl Write, line: &Line) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes every record, event and directory as JSON lines (run on a stopped
/// service: sled's lock keeps a running one out, so the snapshot is consistent).
pub fn export(store: &Store, out: &mut impl Write) -> anyhow::Result<usize> {
    export_dump(store.dump(), out)
}

/// Writes a ledger's records, events and directories as JSON lines.
pub fn export_dump(dump: Dump, out: &mut impl Write) -> anyhow::Result<usize> {
    let mut n = 0;
    for r in dump.records {
        write_line(out, &Line::Record(Box::new(ExportRecord::from_record(r?))))?;
        n += 1;
    }
    for e in dump.events {
        write_line(out, &Line::Event(e?.1))?;
        n += 1;
    }
    let mut directories: Vec<_> = (dump.directories)()?.into_iter().collect();
    directories.sort_by_key(|(c, _)| c.as_str());
    for (county, record) in directories {
        write_line(out, &Line::Directory { county, record })?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// A layout-v1 claim as a v2 record: the same decision and holdings (a key's
/// canonical text is the text v1 stored it under); the claim as submitted
/// was not kept by v1.
fn from_v1(c: LegacyClaim, seq: u64, decided_event: u64) -> ClaimRecord {
    let e = &c.effects;
    ClaimRecord {
        seq,
        header: RecordHeader {
            claim_id: c.decision.claim_id.clone(),
            status: c.decision.status,
            county: c.county,
            kind: c.kind,
            event_date: c.event_date,
            department: c.department.clone(),
            granted: c.granted,
            parties: c.parties.clone(),
            decided_event,
            holdings: Holdings {
                count: e.count.as_deref().map(digest_text),
                keys: e.keys.iter().map(|k| digest_text(k)).collect(),
                totals: e.totals.iter().map(|(k, v)| (digest_text(k), *v)).collect(),
            },
        },
        body: RecordBody {
            decision: c.decision,
            body_hash: c.body_hash,
            submitted: None,
            id_masked: c.id_masked,
            recorded_by: c.recorded_by,
        },
        claim_section: None,
    }
}

/// What an import collected before writing.
#[derive(Default)]
struct Incoming {
    records: Vec<ClaimRecord>,
    legacy: Vec<LegacyClaim>,
    events: Vec<Event>,
    directories: Vec<(County, DirectoryRecord)>,
}

impl Incoming {
    fn add(&mut self, line: Line) -> anyhow::Result<()> {
        match line {
            Line::Record(r) => self.records.push(r.into_record()?),
            Line::Claim(c) => self.legacy.push(*c),
            Line::Event(e) => self.events.push(e),
            Line::Directory { county, record } => self.directories.push((county, record)),
        }
        Ok(())
    }

    /// Writes everything in one batch and makes it durable.
    fn write(self, store: &Store) -> anyhow::Result<()> {
        if !store.is_empty()? {
            bail!("the target store is not empty; import restores into a fresh store");
        }
        let ledger = self.prepare()?;
        let mut batch = WriteBatch::default();
        for r in &ledger.records {
            batch.record(r);
        }
        for (seq, e) in &ledger.events {
            batch.event(*seq, e);
        }
        for (county, d) in &ledger.directories {
            batch.directory(*county, d);
        }
        store.commit(batch)
    }

    /// Checks the input and numbers it: records 1.. in recording order,
    /// events with their claim's number.
    fn prepare(mut self) -> anyhow::Result<Imported> {
        if !self.legacy.is_empty() && !self.records.is_empty() {
            bail!("the input mixes layout-v1 claims and layout-v2 records");
        }
        // Layout v1 numbered claims with gaps possible; v2 numbers them 1.. in
        // the same order, and gives claims without a `decided` event number one
        // past every number in use.
        self.legacy.sort_by_key(|c| c.seq);
        let mut next_event = self
            .legacy
            .iter()
            .filter_map(|c| c.decided_event)
            .chain(self.events.iter().map(|e| e.seq))
            .max()
            .unwrap_or(0)
            + 1;
        for (i, c) in std::mem::take(&mut self.legacy).into_iter().enumerate() {
            let ev = c.decided_event.unwrap_or_else(|| {
                next_event += 1;
                next_event - 1
            });
            self.records.push(from_v1(c, i as u64 + 1, ev));
        }
        self.records.sort_by_key(|r| r.seq);
        let mut seqs = HashMap::new();
        for (i, r) in self.records.iter().enumerate() {
            if r.seq != i as u64 + 1 {
                bail!("record {} follows record {i}: the input has a gap", r.seq);
            }
            if seqs.insert(r.header.claim_id.clone(), r.seq).is_some() {
                bail!("claim {} appears twice", r.header.claim_id);
            }
        }
        let events = self
            .events
            .into_iter()
            .map(|e| {
                let seq = seqs.get(&e.claim_id).with_context(|| format!("event {} names no imported claim", e.seq))?;
                Ok((*seq, e))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Imported { records: self.records, events, directories: self.directories })
    }
}

/// An export read and checked, ready to be written into an empty ledger.
pub struct Imported {
    /// Numbered 1.. in recording order.
    pub records: Vec<ClaimRecord>,
    /// With their claim's number.
    pub events: Vec<(u64, Event)>,
    pub directories: Vec<(County, DirectoryRecord)>,
}

/// Reads an export (layout v1 or v2) for an import into another backend;
/// also answers how many lines it read.
pub fn read_export(input: impl BufRead) -> anyhow::Result<(Imported, usize)> {
    let (incoming, n) = Incoming::read(input)?;
    Ok((incoming.prepare()?, n))
}

/// Restores an export (layout v1 or v2) into an empty store.
pub fn import(store: &Store, input: impl BufRead) -> anyhow::Result<usize> {
    let (incoming, n) = Incoming::read(input)?;
    incoming.write(store)?;
    Ok(n)
}

impl Incoming {
    /// Reads the lines of an export.
    fn read(input: impl BufRead) -> anyhow::Result<(Self, usize)> {
        let mut incoming = Self::default();
        let mut n = 0;
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line =
                serde_json::from_str(&line).with_context(|| format!("line {} is not an export record", i + 1))?;
            incoming.add(parsed)?;
            n += 1;
        }
        Ok((incoming, n))
    }
}

/// Moves a stopped layout-v1 store (`v1`) into an empty layout-v2 store.
pub fn import_v1_store(store: &Store, v1: &sled::Tree) -> anyhow::Result<usize> {
    let mut incoming = Incoming::default();
    let mut n = 0;
    for kv in v1.iter() {
        let (k, v) = kv?;
        let line = match k.get(..2) {
            Some(b"c\0") => Line::Claim(Box::new(decode_record(&v).context("decoding a v1 claim")?)),
            Some(b"e\0") => Line::Event(decode_record(&v).context("decoding a v1 event")?),
            Some(b"d\0") => {
                let county = County::parse(&String::from_utf8_lossy(&k[2..]))
                    .with_context(|| format!("a v1 directory of an unknown county: {}", String::from_utf8_lossy(&k)))?;
                Line::Directory { county, record: serde_json::from_slice(&v)? }
            }
            // Derived entries (counters, keys, usage, indexes, reports) are recounted.
            _ => continue,
        };
        incoming.add(line)?;
        n += 1;
    }
    incoming.write(store)?;
    Ok(n)
}
