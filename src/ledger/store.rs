//! The embedded store (sled), layout v2: the only code that touches sled.
//!
//! One tree; keys by a one-byte prefix:
//! - `H` + seq (u64, big endian) → a claim record's header and `R` + seq →
//!   its body ([`ClaimRecord`]): one record per claim, in recording order,
//!   written together (start-up and listings read only the headers);
//! - `E` + claim seq + event seq → a replay or revocation event;
//! - `D` + county → the trade-friction directory;
//! - `M` + name → metadata (`layout` = `2`, the readiness probe).
//!
//! Everything else (usage, unique keys, running totals, reports) is the
//! materialised state, rebuilt from the records' headers at start.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};
use chrono::Utc;

use super::record::{decode_record, encode_record, ClaimRecord, DirectoryRecord, EncodedRecord, Event, RecordHeader};
use crate::domain::County;

const RECORD: u8 = b'R';
const HEADER: u8 = b'H';
const EVENT: u8 = b'E';
const DIRECTORY: u8 = b'D';
const META: u8 = b'M';

/// The tree of layout v2 (layout v1 used the tree `ledger`).
const TREE_V2: &str = "ledger-v2";
const TREE_V1: &str = "ledger";

pub(crate) fn record_key(seq: u64) -> [u8; 9] {
    let mut k = [RECORD; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn header_key(seq: u64) -> [u8; 9] {
    let mut k = [HEADER; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn event_key(claim_seq: u64, event_seq: u64) -> [u8; 17] {
    let mut k = [EVENT; 17];
    k[1..9].copy_from_slice(&claim_seq.to_be_bytes());
    k[9..].copy_from_slice(&event_seq.to_be_bytes());
    k
}

pub(crate) fn directory_key(county: County) -> Vec<u8> {
    let mut k = vec![DIRECTORY];
    k.extend_from_slice(county.as_str().as_bytes());
    k
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

/// One atomic write of a group.
#[derive(Default)]
pub struct WriteBatch {
    batch: sled::Batch,
    pub len: usize,
}

impl WriteBatch {
    pub fn record(&mut self, r: &ClaimRecord) {
        self.record_bytes(r.seq, r.encode());
    }
    pub fn record_bytes(&mut self, seq: u64, (header, body): EncodedRecord) {
        self.put(&header_key(seq), header);
        self.put(&record_key(seq), body);
    }
    pub fn event(&mut self, claim_seq: u64, e: &Event) {
        self.put(&event_key(claim_seq, e.seq), encode_record(e));
    }
    pub fn directory(&mut self, county: County, d: &DirectoryRecord) {
        // Serialising our own records cannot fail.
        self.put(&directory_key(county), serde_json::to_vec(d).unwrap_or_default());
    }
    fn put(&mut self, k: &[u8], v: Vec<u8>) {
        self.batch.insert(k, v);
        self.len += 1;
    }
}

/// Makes what sled flushed durable on the device. sled 0.34 writes its log
/// with `pwrite` and `sync_file_range`, which neither flushes the file's
/// metadata nor the device's write cache; `fdatasync` does both. Values
/// large enough to be stored as blobs go to files of their own, written
/// without any sync: each new blob file and the blob directory are synced too.
struct DeviceSync {
    db_file: File,
    blobs: PathBuf,
    synced_blobs: HashSet<OsString>,
    blobs_seen: Option<std::time::SystemTime>,
}

impl DeviceSync {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let db_file = File::open(path.join("db")).context("opening sled's log file to sync it")?;
        // The store's directory entries themselves (db, conf, blobs).
        File::open(path)?.sync_all()?;
        Ok(Self { db_file, blobs: path.join("blobs"), synced_blobs: HashSet::new(), blobs_seen: None })
    }

    fn sync(&mut self) -> std::io::Result<u64> {
        self.db_file.sync_data()?;
        let mut syncs = 1;
        let modified = std::fs::metadata(&self.blobs).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified != self.blobs_seen {
            let mut present = HashSet::new();
            for e in std::fs::read_dir(&self.blobs)? {
                let e = e?;
                let name = e.file_name();
                if !self.synced_blobs.contains(&name) {
                    File::open(e.path())?.sync_data()?;
                    syncs += 1;
                }
                present.insert(name);
            }
            File::open(&self.blobs)?.sync_all()?;
            self.synced_blobs = present;
            self.blobs_seen = modified;
            syncs += 1;
        }
        Ok(syncs)
    }
}

/// The sled database, layout v2.
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    device: Mutex<DeviceSync>,
    fsyncs: AtomicU64,
}

impl Store {
    /// Opens (or creates) a layout-v2 store. A store of layout v1 is refused
    /// with the command that moves it.
    pub fn open(path: &Path, cache_capacity: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("creating store directory {}", path.display()))?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .mode(sled::Mode::HighThroughput)
            // Record bodies are compressed one by one with a trained
            // dictionary (`encode_record`); sled's own compression would
            // set up a zstd context for every page it logs.
            .use_compression(false)
            .open()
            .with_context(|| format!("opening the sled store at {}", path.display()))?;
        if db.tree_names().iter().any(|n| n.as_ref() == TREE_V1.as_bytes())
            && !db.open_tree(TREE_V1)?.is_empty()
            && !db.tree_names().iter().any(|n| n.as_ref() == TREE_V2.as_bytes())
        {
            bail!(
                "the store at {} has layout v1; move it to layout v2 with \
                 `subsidy-service import --store NEW_PATH --from {}` and start on NEW_PATH",
                path.display(),
                path.display()
            );
        }
        let tree = db.open_tree(TREE_V2).context("opening the ledger tree")?;
        if tree.get(meta_key("layout"))?.is_none() {
            tree.insert(meta_key("layout"), b"2".to_vec())?;
            db.flush()?;
        }
        let device = Mutex::new(DeviceSync::open(path)?);
        Ok(Self { db, tree, device, fsyncs: AtomicU64::new(0) })
    }

    /// Opens a store of layout v1, read only in effect (for `import --from`).
    pub fn open_v1(path: &Path) -> anyhow::Result<sled::Tree> {
        if !path.join("db").exists() {
            bail!("no store at {}", path.display());
        }
        let db = sled::Config::new().path(path).open().with_context(|| format!("opening {}", path.display()))?;
        if !db.tree_names().iter().any(|n| n.as_ref() == TREE_V1.as_bytes()) {
            bail!("{} holds no layout-v1 ledger", path.display());
        }
        Ok(db.open_tree(TREE_V1)?)
    }

    /// Applies a group atomically, then makes it durable on the device.
    pub fn commit(&self, batch: WriteBatch) -> anyhow::Result<()> {
        self.write(batch)?;
        self.sync()
    }

    /// Applies a group atomically (durable only after the next [`Store::sync`]).
    pub fn write(&self, batch: WriteBatch) -> anyhow::Result<()> {
        self.tree.apply_batch(batch.batch).context("writing a group")
    }

    /// sled's flush, then `fdatasync`.
    pub fn sync(&self) -> anyhow::Result<()> {
        self.db.flush().context("flushing the store")?;
        let mut device = self.device.lock().map_err(|_| anyhow::anyhow!("the device sync lock is poisoned"))?;
        let n = device.sync().context("syncing the store to the device")?;
        self.fsyncs.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// `fsync`/`fdatasync` calls made since start.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Readiness: the store takes a write and a durable flush.
    pub fn probe(&self) -> anyhow::Result<()> {
        self.tree.insert(meta_key("probe"), Utc::now().to_rfc3339().as_bytes())?;
        self.sync()
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    pub fn record(&self, seq: u64) -> anyhow::Result<Option<ClaimRecord>> {
        match (self.tree.get(header_key(seq))?, self.tree.get(record_key(seq))?) {
            (Some(h), Some(b)) => Ok(Some(ClaimRecord::decode(seq, &h, &b)?)),
            (None, None) => Ok(None),
            _ => bail!("record {seq}: its header and body are not both stored"),
        }
    }

    /// Every record's header, in recording order (start-up, listings).
    pub fn headers(&self, after: u64) -> impl Iterator<Item = anyhow::Result<(u64, RecordHeader)>> + '_ {
        self.tree.range(header_key(after.saturating_add(1))..=header_key(u64::MAX)).map(|kv| {
            let (k, v) = kv?;
            let seq = seq_of(&k)?;
            Ok((seq, ClaimRecord::decode_header(&v).with_context(|| format!("record {seq}"))?))
        })
    }

    /// Every record, whole, in recording order (checks and exports); a body
    /// without its header is an error too.
    pub fn records(&self) -> impl Iterator<Item = anyhow::Result<ClaimRecord>> + '_ {
        let orphans = self.tree.scan_prefix([RECORD]).filter_map(|kv| match kv {
            Ok((k, _)) => match seq_of(&k) {
                Ok(seq) => match self.tree.contains_key(header_key(seq)) {
                    Ok(true) => None,
                    Ok(false) => Some(Err(anyhow::anyhow!("record {seq}: a body without its header"))),
                    Err(e) => Some(Err(e.into())),
                },
                Err(e) => Some(Err(e)),
            },
            Err(e) => Some(Err(e.into())),
        });
        self.tree
            .scan_prefix([HEADER])
            .map(|kv| {
                let (k, h) = kv?;
                let seq = seq_of(&k)?;
                let b = self
                    .tree
                    .get(record_key(seq))?
                    .with_context(|| format!("record {seq}: a header without its body"))?;
                ClaimRecord::decode(seq, &h, &b)
            })
            .chain(orphans)
    }

    /// A claim's replay and revocation events, in order.
    pub fn events_of(&self, claim_seq: u64) -> anyhow::Result<Vec<Event>> {
        let mut prefix = vec![EVENT];
        prefix.extend_from_slice(&claim_seq.to_be_bytes());
        self.tree.scan_prefix(prefix).map(|kv| decode_record(&kv?.1)).collect()
    }

    /// Every stored event with its claim's sequence number.
    pub fn events(&self) -> impl Iterator<Item = anyhow::Result<(u64, Event)>> + '_ {
        self.tree.scan_prefix([EVENT]).map(|kv| {
            let (k, v) = kv?;
            let claim_seq = u64::from_be_bytes(k.get(1..9).context("a short event key")?.try_into()?);
            Ok((claim_seq, decode_record(&v)?))
        })
    }

    pub fn directory(&self, county: County) -> anyhow::Result<DirectoryRecord> {
        Ok(match self.tree.get(directory_key(county))? {
            Some(v) => serde_json::from_slice(&v).context("decoding a stored directory")?,
            None => DirectoryRecord::empty(),
        })
    }

    pub fn directories(&self) -> anyhow::Result<HashMap<County, DirectoryRecord>> {
        County::ALL.iter().map(|c| Ok((*c, self.directory(*c)?))).collect()
    }

    /// Whether the store holds no claim, event or directory.
    pub fn is_empty(&self) -> anyhow::Result<bool> {
        for p in [HEADER, RECORD, EVENT, DIRECTORY] {
            if self.tree.scan_prefix([p]).next().transpose()?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn seq_of(k: &[u8]) -> anyhow::Result<u64> {
    Ok(u64::from_be_bytes(k.get(1..9).context("a short record key")?.try_into()?))
}
