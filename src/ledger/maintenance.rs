//! Offline maintenance of a store: the consistency check (recount every
//! counter, key, index and report total from the stored decisions), export
//! to JSON lines and import from them.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use chrono::Datelike;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::store::{
    encode_members, encode_record, key, members, parse_num, px, DirectoryRecord, Event, ReportTotals, Store,
    StoredClaim,
};
use crate::domain::County;
use crate::rules::Status;

/// What the derived entries of the store must be, given its decisions.
#[derive(Default)]
struct Expected {
    nums: BTreeMap<Vec<u8>, Decimal>,
    keys: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Usage records, members sorted (the store keeps recording order).
    usage: BTreeMap<Vec<u8>, Vec<String>>,
    seqs: BTreeMap<Vec<u8>, Vec<u8>>,
    reports: BTreeMap<Vec<u8>, ReportTotals>,
    max_seq: u64,
    /// Highest event sequence number a claim's `decided` event uses.
    max_decided_event: u64,
}

impl Expected {
    fn add(&mut self, c: &StoredClaim) {
        let id = c.decision.claim_id.as_str();
        self.seqs.insert(key(px::SEQ, &[&format!("{:020}", c.seq)]), id.as_bytes().to_vec());
        self.max_seq = self.max_seq.max(c.seq);
        self.max_decided_event = self.max_decided_event.max(c.decided_event.unwrap_or(0));
        if c.decision.status != Status::Approved {
            return;
        }
        let e = &c.effects;
        if let Some(k) = &e.count {
            self.usage.entry(key(px::USAGE, &[k])).or_default().push(id.to_string());
        }
        for k in &e.keys {
            self.keys.insert(key(px::KEY, &[k]), id.as_bytes().to_vec());
        }
        for (k, amount) in &e.totals {
            *self.nums.entry(key(px::NUM, &[k])).or_default() += *amount;
        }
        let r =
            self.reports.entry(key(px::REPORT, &[c.county.as_str(), &c.event_date.year().to_string()])).or_default();
        let by_kind = r.by_kind.entry(c.kind.as_str().to_string()).or_default();
        by_kind.count += 1;
        by_kind.amount += c.granted;
        let by_department =
            r.by_department.entry(c.department.clone().unwrap_or_else(|| "unassigned".into())).or_default();
        by_department.count += 1;
        by_department.amount += c.granted;
    }

    fn from_store(store: &Store) -> anyhow::Result<Self> {
        let mut exp = Self::default();
        for c in store.all_claims() {
            exp.add(&c?);
        }
        exp.nums.retain(|_, v| !v.is_zero());
        exp.usage.values_mut().for_each(|ids| ids.sort());
        Ok(exp)
    }
}

/// Recounts every derived entry from the stored decisions; returns the drift found.
pub fn check(store: &Store) -> anyhow::Result<Vec<String>> {
    let exp = Expected::from_store(store)?;
    let mut drift = Vec::new();
    let show = |k: &[u8]| String::from_utf8_lossy(k).replace('\0', "/");
    let mut actual_nums = BTreeMap::new();
    for kv in store.tree.scan_prefix(px::NUM.as_bytes()) {
        let (k, v) = kv?;
        actual_nums.insert(k.to_vec(), parse_num(&v));
    }
    for (k, want) in &exp.nums {
        match actual_nums.get(k) {
            Some(have) if have == want => {}
            have => drift.push(format!("counter {}: stored {:?}, recount {}", show(k), have, want)),
        }
    }
    for k in actual_nums.keys().filter(|k| !exp.nums.contains_key(*k)) {
        drift.push(format!("counter {}: stored, but no granted decision accounts for it", show(k)));
    }
    let usage: BTreeMap<Vec<u8>, Vec<u8>> = exp.usage.iter().map(|(k, ids)| (k.clone(), encode_members(ids))).collect();
    let sorted_members = |v: &[u8]| {
        let mut ids = members(Some(v));
        ids.sort();
        encode_members(&ids)
    };
    for (prefix, want, what) in
        [(px::KEY, &exp.keys, "key"), (px::USAGE, &usage, "usage record"), (px::SEQ, &exp.seqs, "order index")]
    {
        let mut actual = BTreeMap::new();
        for kv in store.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            let v = if prefix == px::USAGE { sorted_members(&v) } else { v.to_vec() };
            actual.insert(k.to_vec(), v);
        }
        for (k, v) in want {
            if actual.get(k) != Some(v) {
                drift.push(format!(
                    "{what} {}: stored {:?}, recount {}",
                    show(k),
                    actual.get(k).map(|v| String::from_utf8_lossy(v).to_string()),
                    String::from_utf8_lossy(v)
                ));
            }
        }
        for k in actual.keys().filter(|k| !want.contains_key(*k)) {
            drift.push(format!("{what} {}: stored, but no decision accounts for it", show(k)));
        }
    }
    // The sequence counters must be past every number in use, or new claims
    // and events would reuse numbers.
    let mut max_event = exp.max_decided_event;
    for e in store.all_events() {
        max_event = max_event.max(e?.seq);
    }
    for (name, in_use) in [("claim_seq", exp.max_seq), ("event_seq", max_event)] {
        let stored = store.tree.get(key(px::META, &[name]))?;
        let counter = stored.as_deref().and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok()).unwrap_or(0);
        if counter < in_use {
            drift.push(format!("sequence counter {name}: stored {counter}, highest number in use {in_use}"));
        }
    }
    for kv in store.tree.scan_prefix(px::REPORT.as_bytes()) {
        let (k, v) = kv?;
        let have: ReportTotals = serde_json::from_slice(&v)?;
        let want = exp.reports.get(k.as_ref()).cloned().unwrap_or_default();
        if !same_report(&have, &want) {
            drift.push(format!("report {}: stored {:?}, recount {:?}", show(&k), have, want));
        }
    }
    for (k, want) in &exp.reports {
        if store.tree.get(k)?.is_none() && !same_report(&ReportTotals::default(), want) {
            drift.push(format!("report {}: missing", show(k)));
        }
    }
    Ok(drift)
}

fn same_report(a: &ReportTotals, b: &ReportTotals) -> bool {
    let nonzero = |m: &BTreeMap<String, super::Tally>| -> BTreeMap<String, (u64, Decimal)> {
        m.iter()
            .filter(|(_, t)| t.count > 0 || !t.amount.is_zero())
            .map(|(k, t)| (k.clone(), (t.count, t.amount.normalize())))
            .collect()
    };
    nonzero(&a.by_kind) == nonzero(&b.by_kind) && nonzero(&a.by_department) == nonzero(&b.by_department)
}

/// One line of an export.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Claim(Box<StoredClaim>),
    Event(Event),
    Directory { county: County, record: DirectoryRecord },
}

/// Writes every decision, event and directory as JSON lines (run on a stopped
/// service: sled's lock keeps a running one out, so the snapshot is consistent).
pub fn export(store: &Store, out: &mut impl Write) -> anyhow::Result<usize> {
    let mut n = 0;
    for c in store.all_claims() {
        serde_json::to_writer(&mut *out, &Line::Claim(Box::new(c?)))?;
        out.write_all(b"\n")?;
        n += 1;
    }
    for e in store.all_events() {
        let e = e?;
        serde_json::to_writer(&mut *out, &Line::Event(e))?;
        out.write_all(b"\n")?;
        n += 1;
    }
    for (county, record) in store.directories()? {
        serde_json::to_writer(&mut *out, &Line::Directory { county, record })?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// Restores an export into an empty store and rebuilds every derived entry
/// (counters, keys, indexes, reports) from the decisions, in one batch.
pub fn import(store: &Store, input: impl BufRead) -> anyhow::Result<usize> {
    if store.tree.iter().next().is_some() {
        bail!("the target store is not empty; import restores into a fresh store");
    }
    let mut batch = sled::Batch::default();
    let mut exp = Expected::default();
    let mut max_event = 0u64;
    let mut n = 0;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(&line).with_context(|| format!("line {} is not an export record", i + 1))?;
        match parsed {
            Line::Claim(c) => {
                max_event = max_event.max(c.decided_event.unwrap_or(0));
                exp.add(&c);
                batch.insert(key(px::CLAIM, &[&c.decision.claim_id]), encode_record(&c));
            }
            Line::Event(e) => {
                max_event = max_event.max(e.seq);
                batch.insert(key(px::EVENT, &[&e.claim_id, &format!("{:020}", e.seq)]), encode_record(&e));
            }
            Line::Directory { county, record } => {
                batch.insert(key(px::DIRECTORY, &[county.as_str()]), serde_json::to_vec(&record)?);
            }
        }
        n += 1;
    }
    for (k, v) in exp.nums.into_iter().filter(|(_, v)| !v.is_zero()) {
        batch.insert(k, v.normalize().to_string().into_bytes());
    }
    let usage = exp.usage.into_iter().map(|(k, ids)| (k, encode_members(&ids)));
    for (k, v) in exp.keys.into_iter().chain(usage).chain(exp.seqs) {
        batch.insert(k, v);
    }
    for (k, r) in exp.reports {
        batch.insert(k, serde_json::to_vec(&r)?);
    }
    batch.insert(key(px::META, &["claim_seq"]), exp.max_seq.to_string().into_bytes());
    batch.insert(key(px::META, &["event_seq"]), max_event.to_string().into_bytes());
    store.tree.apply_batch(batch)?;
    store.flush()?;
    Ok(n)
}
