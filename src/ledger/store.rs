//! The embedded store (sled), layout v2: the only code that touches sled.
//!
//! One tree; keys by a one-byte prefix:
//! - `H` + first seq (u64, big endian) → a page of claim records' headers,
//!   and `R` + first seq → the page of their bodies ([`ClaimRecord`]): the
//!   records of a group in recording order, up to 64 records (or ~48 KB of
//!   bodies) a page, so a group of claims costs two sled inserts per page,
//!   not one per claim (sled copies the leaf it inserts into). Start-up and
//!   listings read only the header pages; an index of the pages (their first
//!   numbers) is kept in memory. A revocation rewrites its record's pages in
//!   the same atomic write;
//! - `E` + claim seq + event seq → a replay or revocation event;
//! - `D` + county → the trade-friction directory;
//! - `M` + name → metadata (`layout` = `2`, the readiness probe).
//!
//! Everything else (usage, unique keys, running totals, reports) is the
//! materialised state, rebuilt from the records' headers at start.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};
use chrono::Utc;

use super::record::{
    decode_record, encode_record, ClaimRecord, DirectoryRecord, EncodedRecord, Event, HeaderPrefix, RecordHeader,
};
use crate::domain::County;

const RECORD: u8 = b'R';
const HEADER: u8 = b'H';
const EVENT: u8 = b'E';
const DIRECTORY: u8 = b'D';
const META: u8 = b'M';

/// The tree of layout v2 (layout v1 used the tree `ledger`).
const TREE_V2: &str = "ledger-v2";
const TREE_V1: &str = "ledger";

pub(crate) fn record_key(first: u64) -> [u8; 9] {
    let mut k = [RECORD; 9];
    k[1..].copy_from_slice(&first.to_be_bytes());
    k
}

pub(crate) fn header_key(first: u64) -> [u8; 9] {
    let mut k = [HEADER; 9];
    k[1..].copy_from_slice(&first.to_be_bytes());
    k
}

/// Most records in a page, and the body bytes after which a page is closed
/// (sled stores a value over ~128 KB as a file of its own).
const PAGE_RECORDS: usize = 64;
const PAGE_BYTES: usize = 48 * 1024;
const PAGE_V1: u8 = 1;
/// The most last pages start-up removes for headers without their bodies
/// ([`Store::load`]): a power loss cuts only the groups written after the last
/// completed sync, a few; more is damage, and start-up refuses instead.
const UNACKNOWLEDGED_PAGES_MAX: usize = 64;

/// A page's values: the count, each entry's length, then the entries.
fn encode_page(entries: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + entries.len() * 4 + entries.iter().map(|e| e.len()).sum::<usize>());
    out.push(PAGE_V1);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
    }
    for e in entries {
        out.extend_from_slice(e);
    }
    out
}

fn decode_page(v: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let [PAGE_V1, a, b, rest @ ..] = v else { bail!("not a page of records") };
    let n = u16::from_le_bytes([*a, *b]) as usize;
    if rest.len() < n * 4 {
        bail!("a page of records is cut short");
    }
    let (lens, mut data) = rest.split_at(n * 4);
    let mut out = Vec::with_capacity(n);
    for l in lens.chunks_exact(4) {
        let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
        if data.len() < len {
            bail!("a page of records is cut short");
        }
        let (e, rest) = data.split_at(len);
        out.push(e);
        data = rest;
    }
    Ok(out)
}

/// The pages of the store by their first record number (recording order).
#[derive(Default)]
struct Pages {
    /// (first seq, records in the page), ascending and contiguous.
    pages: Vec<(u64, u32)>,
}

impl Pages {
    fn next_seq(&self) -> u64 {
        self.pages.last().map_or(1, |(f, n)| f + u64::from(*n))
    }
    /// The page holding `seq`: its first number and count.
    fn of(&self, seq: u64) -> Option<(u64, u32)> {
        let i = self.pages.partition_point(|(f, _)| *f <= seq).checked_sub(1)?;
        let (f, n) = self.pages[i];
        (seq < f + u64::from(n)).then_some((f, n))
    }
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
    /// New and changed records, paged when the batch is written.
    records: std::collections::BTreeMap<u64, EncodedRecord>,
    /// Writes other than records (events, directories) in `batch`.
    puts: usize,
    pub len: usize,
}

impl WriteBatch {
    pub fn record(&mut self, r: &ClaimRecord) {
        self.record_bytes(r.seq, r.encode());
    }
    pub fn record_bytes(&mut self, seq: u64, encoded: EncodedRecord) {
        self.records.insert(seq, encoded);
        self.len += 1;
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
        self.puts += 1;
        self.len += 1;
    }
}

/// Makes what sled flushed durable on the device. sled 0.34 writes its log
/// with `pwrite` and `sync_file_range`, which neither flushes the file's
/// metadata nor the device's write cache; `fdatasync` does both. Values and
/// tree nodes over a quarter of a log segment (~128 KB) go to blob files of
/// their own, written and closed without any sync: each new blob file, and
/// then the blob directory, is synced too.
///
/// The blob directory grows with the store (about 1,700 files at 1,000,000
/// claims), so on Linux new blobs are learnt from inotify rather than by
/// listing the directory at every sync: a file counts once sled has closed
/// it (`IN_CLOSE_WRITE`), so a blob the writer is still writing for a later
/// group is synced by a later sync, whole. The first sync, and any sync after
/// the event queue overflowed, lists the directory and syncs every file.
struct DeviceSync {
    db_file: File,
    blobs: PathBuf,
    new_blobs: NewBlobs,
    /// Blob files found but not synced yet, in name order: a sync that
    /// could not open one, list the directory or sync the directory keeps
    /// them for the next (a readiness probe's sync may fail so and the
    /// store go on).
    pending: BTreeSet<OsString>,
    /// A blob was synced since the blob directory last was.
    directory_behind: bool,
    /// A sync of data failed: the kernel may have dropped the pages it could
    /// not write and reports that once, so no later sync can be trusted.
    failed: Option<String>,
}

/// How a sync finds the blob files written since the last one.
enum NewBlobs {
    #[cfg(target_os = "linux")]
    Watched { inotify: inotify::Inotify, buffer: Vec<u8>, listed: bool },
    /// Without inotify: the directory is listed at every sync; a file is
    /// synced again when its length changed (it was being written when last
    /// listed).
    Listed { synced: HashMap<OsString, u64> },
}

impl NewBlobs {
    fn watch(blobs: &Path) -> Self {
        #[cfg(target_os = "linux")]
        {
            use inotify::{Inotify, WatchMask};
            let watched = Inotify::init().and_then(|inotify| {
                inotify.watches().add(blobs, WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO)?;
                Ok(inotify)
            });
            match watched {
                Ok(inotify) => return NewBlobs::Watched { inotify, buffer: vec![0; 64 * 1024], listed: false },
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot watch the store's blob directory; it is listed at every sync instead"
                ),
            }
        }
        NewBlobs::Listed { synced: HashMap::new() }
    }

    /// Adds the blob files to sync now to `into` (some may have been removed
    /// since). What was found is in `into` even when a later step fails.
    fn take(&mut self, blobs: &Path, into: &mut BTreeSet<OsString>) -> std::io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            NewBlobs::Watched { inotify, buffer, listed } => {
                let mut relist = !*listed;
                let mut lost = false;
                loop {
                    let events = match inotify.read_events(buffer) {
                        Ok(events) => events,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // Events may be lost: the next sync lists the directory.
                            *listed = false;
                            return Err(e);
                        }
                    };
                    for e in events {
                        if e.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                            relist = true;
                        } else if e.mask.contains(inotify::EventMask::IGNORED) {
                            // The watch ended (the directory went away).
                            lost = true;
                        } else if let Some(name) = e.name {
                            into.insert(name.to_os_string());
                        }
                    }
                }
                if lost {
                    tracing::warn!("the watch of the store's blob directory ended; it is listed at every sync instead");
                    *self = NewBlobs::Listed { synced: HashMap::new() };
                    return self.take(blobs, into);
                }
                // Events drained first: whatever is closed after the listing
                // is reported again.
                if relist {
                    into.extend(list(blobs)?.into_iter().map(|(name, _)| name));
                    *listed = true;
                }
                Ok(())
            }
            NewBlobs::Listed { synced } => {
                let files = list(blobs)?;
                into.extend(
                    files.iter().filter(|(name, len)| synced.get(name) != Some(len)).map(|(name, _)| name.clone()),
                );
                *synced = files.into_iter().collect();
                Ok(())
            }
        }
    }
}

/// The blob directory's files and their lengths (none before sled made it).
fn list(blobs: &Path) -> std::io::Result<Vec<(OsString, u64)>> {
    let entries = match std::fs::read_dir(blobs) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for e in entries {
        let e = e?;
        match e.metadata() {
            Ok(m) => files.push((e.file_name(), m.len())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(files)
}

impl DeviceSync {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let db_file = File::open(path.join("db")).context("opening sled's log file to sync it")?;
        // The store's directory entries themselves (db, conf, blobs).
        File::open(path)?.sync_all()?;
        let blobs = path.join("blobs");
        let new_blobs = NewBlobs::watch(&blobs);
        Ok(Self { db_file, blobs, new_blobs, pending: BTreeSet::new(), directory_behind: false, failed: None })
    }

    /// Syncs the blob files written since the last sync, the blob directory
    /// when it gained any, then the log; the number of syncs made.
    ///
    /// Blobs first: when sled replaces a blob with a new one, it removes the
    /// old file once the new one's log segment is written, and syncing the
    /// log commits the file system's journal, that removal with it. Synced
    /// first, the new blob is on the device before the old one can be gone.
    fn sync(&mut self) -> std::io::Result<u64> {
        if let Some(failed) = &self.failed {
            return Err(std::io::Error::other(format!(
                "an earlier sync failed ({failed}); the store must be reopened"
            )));
        }
        let mut syncs = 0;
        self.new_blobs.take(&self.blobs, &mut self.pending)?;
        while let Some(name) = self.pending.first() {
            let Some(file) = open_blob(&self.blobs.join(name))? else {
                self.pending.pop_first();
                continue;
            };
            self.data_synced(file.sync_data())?;
            syncs += 1;
            self.directory_behind = true;
            self.pending.pop_first();
        }
        if self.directory_behind {
            let directory = File::open(&self.blobs)?;
            self.data_synced(directory.sync_all())?;
            self.directory_behind = false;
            syncs += 1;
        }
        let synced = self.db_file.sync_data();
        self.data_synced(synced)?;
        Ok(syncs + 1)
    }

    /// A sync's outcome; a failure fails every later sync too.
    fn data_synced(&mut self, r: std::io::Result<()>) -> std::io::Result<()> {
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }
}

/// Opens a blob file to sync it; `None` when it is gone: sled removes a
/// blob whose value was replaced, possibly between its event (or the
/// listing) and this call, and a removed blob holds nothing that must
/// survive.
fn open_blob(path: &Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The sled database, layout v2.
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    device: Mutex<DeviceSync>,
    fsyncs: AtomicU64,
    pages: std::sync::RwLock<Pages>,
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
        Ok(Self { db, tree, device, fsyncs: AtomicU64::new(0), pages: Default::default() })
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

    /// Applies a group atomically (durable only after the next [`Store::sync`]):
    /// its new records as new pages, changed records by rewriting their pages.
    ///
    /// A group that is one new page and nothing else (the usual group of
    /// single claims, up to 64 of them) is written as two plain inserts, the
    /// bodies before the headers, instead of a sled batch. sled writes a
    /// batch's log between two extra log buffers of its own (the one it seals
    /// before the batch and one holding the batch's marker alone), each
    /// written, waited for with `sync_file_range` and handed to its IO
    /// threads; and a batch takes sled's global write lock, which waits for
    /// any flush in progress (the syncer's), so the writer could not write
    /// the next group while the previous one was being synced.
    ///
    /// A record exists once its header is written, and the headers go last,
    /// for readers and for recovery alike. After a process crash sled
    /// recovers its log in order and stops at the first torn message (as it
    /// does for batches), so headers that survive have their bodies. After a
    /// power loss before the group's sync, sled's recovery also passes over a
    /// log entry whose blob file is missing, which can leave the headers
    /// without their bodies (a group written as a batch had the same
    /// exposure): start-up removes such pages ([`Store::load`]); they were
    /// never acknowledged. Bodies left without their headers are never read,
    /// and the next group's page replaces them.
    pub fn write(&self, batch: WriteBatch) -> anyhow::Result<()> {
        let WriteBatch { batch: mut sled_batch, records, puts, .. } = batch;
        let mut index = self.pages.write().map_err(|_| anyhow::anyhow!("the page index lock is poisoned"))?;
        let next = index.next_seq();
        let mut changed: std::collections::BTreeMap<u64, Vec<(u64, EncodedRecord)>> = Default::default();
        let mut fresh: Vec<(u64, EncodedRecord)> = Vec::new();
        for (seq, r) in records {
            if seq < next {
                let (first, _) = index.of(seq).with_context(|| format!("record {seq} is in no page"))?;
                changed.entry(first).or_default().push((seq, r));
            } else {
                fresh.push((seq, r));
            }
        }
        let rewrites = changed.len();
        for (first, edits) in changed {
            let (h, b) = (self.tree.get(header_key(first))?, self.tree.get(record_key(first))?);
            let (Some(h), Some(b)) = (h, b) else { bail!("the page of record {first} is missing") };
            let mut heads: Vec<Vec<u8>> = decode_page(&h)?.into_iter().map(<[u8]>::to_vec).collect();
            let mut bodies: Vec<Vec<u8>> = decode_page(&b)?.into_iter().map(<[u8]>::to_vec).collect();
            for (seq, (hh, bb)) in edits {
                let i = (seq - first) as usize;
                let (Some(hs), Some(bs)) = (heads.get_mut(i), bodies.get_mut(i)) else {
                    bail!("record {seq} is not in its page");
                };
                *hs = hh;
                *bs = bb;
            }
            let hv: Vec<&[u8]> = heads.iter().map(Vec::as_slice).collect();
            let bv: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
            sled_batch.insert(&header_key(first), encode_page(&hv));
            sled_batch.insert(&record_key(first), encode_page(&bv));
        }
        // The new pages: (first record, header page, body page, records).
        let mut new_pages: Vec<(u64, Vec<u8>, Vec<u8>, u32)> = Vec::new();
        let mut page: Vec<(u64, EncodedRecord)> = Vec::new();
        let mut bytes = 0;
        let close = |page: &mut Vec<(u64, EncodedRecord)>, new_pages: &mut Vec<_>| {
            if let Some((first, _)) = page.first() {
                let hv: Vec<&[u8]> = page.iter().map(|(_, (h, _))| h.as_slice()).collect();
                let bv: Vec<&[u8]> = page.iter().map(|(_, (_, b))| b.as_slice()).collect();
                new_pages.push((*first, encode_page(&hv), encode_page(&bv), page.len() as u32));
            }
            page.clear();
        };
        for (expected, (seq, r)) in (next..).zip(fresh) {
            if seq != expected {
                bail!("record {seq} would follow record {}: records are written in order", expected - 1);
            }
            bytes += r.1.len();
            page.push((seq, r));
            if page.len() == PAGE_RECORDS || bytes >= PAGE_BYTES {
                close(&mut page, &mut new_pages);
                bytes = 0;
            }
        }
        close(&mut page, &mut new_pages);
        let paged: Vec<(u64, u32)> = new_pages.iter().map(|(first, _, _, n)| (*first, *n)).collect();
        if new_pages.len() == 1 && puts == 0 && rewrites == 0 {
            for (first, heads, bodies, _) in new_pages {
                self.tree.insert(record_key(first), bodies).context("writing a page of records")?;
                self.tree.insert(header_key(first), heads).context("writing a page of records")?;
            }
        } else {
            for (first, heads, bodies, _) in new_pages {
                sled_batch.insert(&header_key(first), heads);
                sled_batch.insert(&record_key(first), bodies);
            }
            self.tree.apply_batch(sled_batch).context("writing a group")?;
        }
        index.pages.extend(paged);
        Ok(())
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
        // A record's header and body are two reads; a revocation rewriting
        // the page in between would pair an old header with a new decision.
        // They name the same status when read together: read again if not.
        let mut tries = 0;
        loop {
            let Some(r) = self.record_once(seq)? else { return Ok(None) };
            tries += 1;
            if r.header.status == r.body.decision.status || tries == 3 {
                return Ok(Some(r));
            }
        }
    }

    fn record_once(&self, seq: u64) -> anyhow::Result<Option<ClaimRecord>> {
        let page = self.pages.read().map_err(|_| anyhow::anyhow!("the page index lock is poisoned"))?.of(seq);
        let Some((first, _)) = page else { return Ok(None) };
        let (Some(h), Some(b)) = (self.tree.get(header_key(first))?, self.tree.get(record_key(first))?) else {
            bail!("the page of record {seq} is missing");
        };
        let i = (seq - first) as usize;
        let (heads, bodies) = (decode_page(&h)?, decode_page(&b)?);
        match (heads.get(i), bodies.get(i)) {
            (Some(h), Some(b)) => Ok(Some(ClaimRecord::decode(seq, h, b)?)),
            _ => bail!("record {seq}: not in its page"),
        }
    }

    /// Reads every record's header once, in recording order, and builds the
    /// index of the pages: start-up of a store that will be read by record
    /// number or written to ([`Store::record`], [`Store::headers`] and
    /// [`Store::write`] need the index; exports and checks do not).
    pub fn load(&self, mut each: impl FnMut(u64, RecordHeader) -> anyhow::Result<()>) -> anyhow::Result<()> {
        self.drop_unacknowledged_tail()?;
        let mut pages = Pages::default();
        for kv in self.tree.scan_prefix([HEADER]) {
            let (k, v) = kv?;
            let first = seq_of(&k)?;
            let heads = decode_page(&v).with_context(|| format!("the header page of record {first}"))?;
            for (i, h) in heads.iter().enumerate() {
                let seq = first + i as u64;
                each(seq, ClaimRecord::decode_header(h).with_context(|| format!("record {seq}"))?)?;
            }
            pages.pages.push((first, heads.len() as u32));
        }
        *self.pages.write().map_err(|_| anyhow::anyhow!("the page index lock is poisoned"))? = pages;
        Ok(())
    }

    /// Removes the last pages of headers whose bodies are missing or short,
    /// before the state is built from the headers. Such a page was never
    /// acknowledged: a group is answered only after a sync that follows both
    /// of its inserts, and what a completed sync covers is recovered whole.
    /// After a process crash sled's in-order recovery never leaves one (the
    /// bodies are inserted first); after a power loss before the group's
    /// sync it can, when sled wrote the bodies to a blob file of their own
    /// (a value or leaf over ~128 KB) that did not reach the device: sled's
    /// recovery passes over a log entry whose blob is missing. A page of
    /// bodies that is there but cannot be read is damage, not a cut write,
    /// and is left to the readers (`503` for its records).
    fn drop_unacknowledged_tail(&self) -> anyhow::Result<()> {
        let mut cut = Vec::new();
        for kv in self.tree.scan_prefix([HEADER]).rev() {
            let (k, v) = kv?;
            let first = seq_of(&k)?;
            let n = decode_page(&v).with_context(|| format!("the header page of record {first}"))?.len();
            let found = match self.tree.get(record_key(first))?.as_deref().map(decode_page) {
                None => 0,
                Some(Ok(b)) => b.len(),
                Some(Err(_)) => n,
            };
            if found >= n {
                break;
            }
            if cut.len() == UNACKNOWLEDGED_PAGES_MAX {
                // Far more than the groups in flight when the power went:
                // damage, not a cut write. Nothing is removed.
                bail!(
                    "more than {UNACKNOWLEDGED_PAGES_MAX} last pages of records (down to record {first}) have \
                     headers without their bodies: the store is damaged; run `subsidy-service check` on a copy"
                );
            }
            cut.push((first, n, found));
        }
        for &(first, headers, bodies) in &cut {
            tracing::warn!(
                first,
                headers,
                bodies,
                "a last page of records has headers without their bodies: never acknowledged, removed"
            );
            self.tree.remove(header_key(first))?;
            self.tree.remove(record_key(first))?;
        }
        if !cut.is_empty() {
            self.sync()?;
        }
        Ok(())
    }

    /// How many claim records the store holds: the number of the last (they
    /// are numbered from 1, none removed). Reads only the last header page.
    pub fn record_count(&self) -> anyhow::Result<u64> {
        let Some(kv) = self.tree.scan_prefix([HEADER]).next_back() else { return Ok(0) };
        let (k, v) = kv?;
        let first = seq_of(&k)?;
        let n = decode_page(&v).with_context(|| format!("the header page of record {first}"))?.len();
        Ok((first + n as u64).saturating_sub(1))
    }

    /// Every record's header after `after`, in recording order (listings).
    pub fn headers(&self, after: u64) -> impl Iterator<Item = anyhow::Result<(u64, RecordHeader)>> + '_ {
        let from = after.saturating_add(1);
        // Without the index (a poisoned lock) every page is scanned, none skipped.
        let start = self.pages.read().map_or(1, |p| p.of(from).map_or(from, |(f, _)| f));
        self.tree.range(header_key(start)..=header_key(u64::MAX)).flat_map(
            move |kv| -> Vec<anyhow::Result<(u64, RecordHeader)>> {
                let page = || -> anyhow::Result<Vec<(u64, RecordHeader)>> {
                    let (k, v) = kv?;
                    let first = seq_of(&k)?;
                    decode_page(&v)?
                        .into_iter()
                        .enumerate()
                        .map(|(i, h)| {
                            let seq = first + i as u64;
                            Ok((seq, ClaimRecord::decode_header(h).with_context(|| format!("record {seq}"))?))
                        })
                        .collect()
                };
                match page() {
                    Ok(rows) => rows.into_iter().filter(|(seq, _)| *seq > after).map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                }
            },
        )
    }

    /// Every record, whole, in recording order (checks and exports).
    ///
    /// A page of bodies that starts right after the last record is what a
    /// crash left of a group written as two inserts ([`Store::write`]) and
    /// never acknowledged: no record, skipped (the next group written
    /// replaces it). Any other page of bodies without its headers is an error.
    pub fn records(&self) -> impl Iterator<Item = anyhow::Result<ClaimRecord>> + '_ {
        // Unreadable: every page of bodies without headers is reported.
        let (next, unreadable) = match self.record_count().map(|n| n + 1) {
            Ok(next) => (next, None),
            Err(e) => (0, Some(Err(e.context("reading the last page of headers")))),
        };
        let bodies_without_headers = self.tree.scan_prefix([RECORD]).filter_map(move |kv| match kv {
            Ok((k, _)) => match seq_of(&k) {
                Ok(first) if first == next => None,
                Ok(first) => match self.tree.contains_key(header_key(first)) {
                    Ok(true) => None,
                    Ok(false) => Some(Err(anyhow::anyhow!("record {first}: a page of bodies without its headers"))),
                    Err(e) => Some(Err(e.into())),
                },
                Err(e) => Some(Err(e)),
            },
            Err(e) => Some(Err(e.into())),
        });
        self.tree
            .scan_prefix([HEADER])
            .flat_map(move |kv| -> Vec<anyhow::Result<ClaimRecord>> {
                let page = || -> anyhow::Result<Vec<anyhow::Result<ClaimRecord>>> {
                    let (k, h) = kv?;
                    let first = seq_of(&k)?;
                    let b = self
                        .tree
                        .get(record_key(first))?
                        .with_context(|| format!("record {first}: a page of headers without its bodies"))?;
                    let (heads, bodies) = (decode_page(&h)?, decode_page(&b)?);
                    if heads.len() != bodies.len() {
                        bail!("record {first}: the page holds {} headers and {} bodies", heads.len(), bodies.len());
                    }
                    Ok(heads
                        .iter()
                        .zip(&bodies)
                        .enumerate()
                        .map(|(i, (h, b))| ClaimRecord::decode(first + i as u64, h, b))
                        .collect())
                };
                page().unwrap_or_else(|e| vec![Err(e)])
            })
            .chain(bodies_without_headers)
            .chain(unreadable)
    }

    /// The claim sections (the claim as submitted), still encoded, of the
    /// records numbered below `before` whose header `keep` accepts, in
    /// recording order, for replaying recorded claims (policy simulations).
    /// Pages without such a record are skipped without reading their bodies;
    /// decoding the sections is left to the caller's threads.
    pub fn submissions(
        self: &std::sync::Arc<Self>,
        before: u64,
        keep: impl Fn(&HeaderPrefix) -> bool + Send + 'static,
    ) -> impl Iterator<Item = anyhow::Result<(u64, String, Vec<u8>)>> + Send + 'static {
        let store = self.clone();
        let pages = self.tree.range(header_key(1)..header_key(before.max(1)));
        pages.flat_map(move |kv| -> Vec<anyhow::Result<(u64, String, Vec<u8>)>> {
            let page = || -> anyhow::Result<Vec<(u64, String, Vec<u8>)>> {
                let (k, v) = kv?;
                let first = seq_of(&k)?;
                let mut kept = Vec::new();
                for (i, h) in decode_page(&v)?.into_iter().enumerate() {
                    let seq = first + i as u64;
                    let h = ClaimRecord::decode_header_prefix(h).with_context(|| format!("record {seq}"))?;
                    if seq < before && keep(&h) {
                        kept.push((i, seq, h.claim_id.to_string()));
                    }
                }
                if kept.is_empty() {
                    return Ok(Vec::new());
                }
                let b = store
                    .tree
                    .get(record_key(first))?
                    .with_context(|| format!("record {first}: a page of headers without its bodies"))?;
                let bodies = decode_page(&b)?;
                kept.into_iter()
                    .map(|(i, seq, h)| {
                        let body = bodies.get(i).with_context(|| format!("record {seq}: not in its page"))?;
                        Ok((seq, h, ClaimRecord::claim_section(seq, body)?.to_vec()))
                    })
                    .collect()
            };
            match page() {
                Ok(rows) => rows.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            }
        })
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
        for p in [HEADER, EVENT, DIRECTORY] {
            if self.tree.scan_prefix([p]).next().transpose()?.is_some() {
                return Ok(false);
            }
        }
        // Without headers, only the bodies of record 1 are what a cut first
        // group left (see `records`); any other bodies are data.
        for kv in self.tree.scan_prefix([RECORD]) {
            if seq_of(&kv?.0)? != 1 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn seq_of(k: &[u8]) -> anyhow::Result<u64> {
    Ok(u64::from_be_bytes(k.get(1..9).context("a short record key")?.try_into()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_removed_before_its_sync_is_skipped_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("1234");
        std::fs::write(&blob, b"value").unwrap();
        assert!(open_blob(&blob).unwrap().is_some());
        std::fs::remove_file(&blob).unwrap();
        assert!(open_blob(&blob).unwrap().is_none(), "a blob sled removed meanwhile");
        assert!(open_blob(&dir.path().join("no-such-dir/x")).is_ok_and(|f| f.is_none()));
    }

    /// Syncs made by one `sync` of the store.
    fn syncs_of(store: &Store) -> u64 {
        let before = store.fsyncs();
        store.sync().unwrap();
        store.fsyncs() - before
    }

    #[test]
    fn a_value_sled_writes_as_a_blob_is_synced_with_its_directory_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        syncs_of(&store);
        assert_eq!(syncs_of(&store), 1, "nothing new: the log alone");
        // Over a quarter of sled's 512 KiB segment: a blob file of its own.
        store.tree.insert(meta_key("large"), vec![7u8; 300 * 1024]).unwrap();
        assert_eq!(syncs_of(&store), 3, "the new blob, the blob directory and the log");
        assert!(std::fs::read_dir(dir.path().join("blobs")).unwrap().count() >= 1);
        assert_eq!(syncs_of(&store), 1, "the blob is not synced again");
    }

    /// A store directory with these blob files already in it, and its sync.
    fn device(watch: bool, blobs: &[&str]) -> (tempfile::TempDir, DeviceSync) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        for name in blobs {
            std::fs::write(dir.path().join("blobs").join(name), b"there before").unwrap();
        }
        let mut device = DeviceSync::open(dir.path()).unwrap();
        if !watch {
            device.new_blobs = NewBlobs::Listed { synced: HashMap::new() };
        }
        (dir, device)
    }

    #[test]
    fn a_blob_still_being_written_is_synced_again_once_whole() {
        use std::io::Write as _;
        for watch in [true, false] {
            // Written before the store was opened: no event tells of them.
            let (dir, mut device) = device(watch, &["1", "2"]);
            assert_eq!(device.sync().unwrap(), 4, "the first sync syncs every blob (watch: {watch})");
            assert_eq!(device.sync().unwrap(), 1);
            // A blob the writer has begun for a later group while a sync runs.
            let mut f = std::fs::File::create(dir.path().join("blobs/3")).unwrap();
            f.write_all(b"crc").unwrap();
            let partial = device.sync().unwrap();
            f.write_all(b" and the node").unwrap();
            drop(f);
            let whole = device.sync().unwrap();
            if watch {
                assert_eq!((partial, whole), (1, 3), "counted once closed");
            } else {
                assert_eq!((partial, whole), (3, 3), "listed half written, synced again when longer");
            }
            assert_eq!(device.sync().unwrap(), 1, "nothing new (watch: {watch})");
        }
    }

    #[test]
    fn a_sync_that_failed_part_way_is_finished_by_the_next() {
        for watch in [true, false] {
            let (dir, mut device) = device(watch, &[]);
            let blob = dir.path().join("blobs/7");
            // A name that cannot be opened (a symbolic link to itself).
            std::os::unix::fs::symlink(&blob, &blob).unwrap();
            assert!(device.sync().is_err(), "watch: {watch}");
            // Now a file, put there without being written: a hard link gives
            // no event of a file closed after writing, so with the watch only
            // the blob kept from the failed sync is synced. (The listing of
            // the fallback finds it again too: its length changed.)
            std::fs::remove_file(&blob).unwrap();
            let made = dir.path().join("made");
            std::fs::write(&made, b"node").unwrap();
            std::fs::hard_link(&made, &blob).unwrap();
            assert_eq!(device.sync().unwrap(), 3, "the blob left over, its directory, the log (watch: {watch})");
            assert_eq!(device.sync().unwrap(), 1);
        }
    }

    #[test]
    fn after_a_failed_sync_of_data_no_sync_succeeds() {
        // The kernel reports a write-back error once, and may have dropped
        // the pages: a later sync that succeeds would prove nothing.
        let (_dir, mut device) = device(true, &[]);
        assert_eq!(device.sync().unwrap(), 1);
        assert!(device.data_synced(Err(std::io::Error::other("input/output error"))).is_err());
        let refused = device.sync().unwrap_err();
        assert!(refused.to_string().contains("an earlier sync failed (input/output error)"), "{refused}");
    }

    #[test]
    fn a_blob_directory_whose_watch_ended_is_listed_instead() {
        let (dir, mut device) = device(true, &[]);
        assert_eq!(device.sync().unwrap(), 1);
        std::fs::remove_dir(dir.path().join("blobs")).unwrap();
        assert_eq!(device.sync().unwrap(), 1, "no blob directory: the log alone");
        assert!(matches!(device.new_blobs, NewBlobs::Listed { .. }));
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/9"), b"node").unwrap();
        assert_eq!(device.sync().unwrap(), 3, "found by listing");
    }

    #[test]
    fn the_record_count_is_the_last_records_number_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.record_count().unwrap(), 0);
        write_groups(&store, &[3, 70, 1]);
        assert_eq!(store.record_count().unwrap(), 74);
    }

    /// Writes groups of the given sizes of records numbered on from the
    /// store's last; record `seq`'s header is `[2, seq]`, its body `[3, seq]`.
    fn write_groups(store: &Store, sizes: &[u64]) {
        for &size in sizes {
            let mut batch = WriteBatch::default();
            let next = store.record_count().unwrap() + 1;
            for seq in next..next + size {
                batch.record_bytes(seq, (vec![2, seq as u8], vec![3, seq as u8]));
            }
            store.write(batch).unwrap();
        }
    }

    #[test]
    fn groups_of_one_page_or_several_and_a_page_with_an_event_keep_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        // one page (two plain inserts), two pages (a sled batch), one page
        write_groups(&store, &[3, 70, 2]);
        // One page and an event: a sled batch, nothing left out.
        let mut batch = WriteBatch::default();
        batch.record_bytes(76, (vec![2, 76], vec![3, 76]));
        batch.put(&event_key(76, 2), b"event".to_vec());
        store.write(batch).unwrap();
        assert_eq!(store.tree.get(event_key(76, 2)).unwrap().as_deref(), Some(&b"event"[..]));
        let index = store.pages.read().unwrap().pages.clone();
        assert_eq!(index, vec![(1, 3), (4, 64), (68, 6), (74, 2), (76, 1)]);
        for &(first, n) in &index {
            let heads = store.tree.get(header_key(first)).unwrap().expect("headers");
            let bodies = store.tree.get(record_key(first)).unwrap().expect("bodies");
            let want: Vec<Vec<u8>> = (first..first + u64::from(n)).map(|s| vec![3, s as u8]).collect();
            assert_eq!(decode_page(&bodies).unwrap(), want.iter().map(Vec::as_slice).collect::<Vec<_>>());
            assert_eq!(decode_page(&heads).unwrap().len(), n as usize);
        }
    }

    #[test]
    fn last_pages_of_headers_without_their_bodies_are_removed_at_start_and_damage_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        write_groups(&store, &[3, 70, 2]);
        assert_eq!(store.record_count().unwrap(), 75);
        store.drop_unacknowledged_tail().unwrap();
        assert_eq!(store.record_count().unwrap(), 75, "every page whole: nothing removed");
        // Page 74 lost its bodies, page 68 kept one body of six: both removed.
        store.tree.remove(record_key(74)).unwrap();
        store.tree.insert(record_key(68), encode_page(&[b"\x03\x44".as_slice()])).unwrap();
        store.drop_unacknowledged_tail().unwrap();
        assert_eq!(store.record_count().unwrap(), 67);
        assert!(store.tree.get(record_key(68)).unwrap().is_none(), "its short bodies go with it");
        // Damage, not a cut write: left to the readers (503 for its records).
        store.tree.insert(record_key(4), b"garbage".to_vec()).unwrap();
        store.drop_unacknowledged_tail().unwrap();
        assert_eq!(store.record_count().unwrap(), 67);
    }

    #[test]
    fn more_last_pages_without_bodies_than_a_power_loss_leaves_are_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        write_groups(&store, &[1; UNACKNOWLEDGED_PAGES_MAX + 2]);
        for seq in 2..=(UNACKNOWLEDGED_PAGES_MAX as u64 + 2) {
            store.tree.remove(record_key(seq)).unwrap();
        }
        let err = store.drop_unacknowledged_tail().expect_err("damage");
        assert!(format!("{err:#}").contains("more than 64 last pages"), "{err:#}");
        assert_eq!(store.record_count().unwrap(), UNACKNOWLEDGED_PAGES_MAX as u64 + 2, "nothing removed");
        store.tree.insert(record_key(2), encode_page(&[b"\x03\x02".as_slice()])).unwrap();
        store.drop_unacknowledged_tail().expect("64 pages: a cut");
        assert_eq!(store.record_count().unwrap(), 2);
    }

    #[test]
    fn bodies_right_after_the_last_record_are_no_record_and_other_bodies_without_headers_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let empty = encode_page(&[]);
        // What a crash between the first group's two inserts leaves.
        store.tree.insert(record_key(1), empty.clone()).unwrap();
        assert_eq!(store.records().count(), 0, "no record and no error");
        assert!(store.is_empty().unwrap(), "bodies without headers hold no record");
        store.tree.insert(record_key(9), empty).unwrap();
        assert!(!store.is_empty().unwrap(), "other bodies are data");
        let errs: Vec<String> = store.records().map(|r| format!("{:#}", r.expect_err("only errors"))).collect();
        assert_eq!(errs, ["record 9: a page of bodies without its headers"]);
    }

    #[test]
    fn pages_round_trip_and_the_index_finds_each_records_page() {
        let entries: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; usize::from(i) * 3]).collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let page = encode_page(&refs);
        assert_eq!(decode_page(&page).expect("decodes"), refs);
        assert!(decode_page(&page[..page.len() - 1]).is_err(), "a cut page is an error");
        assert!(decode_page(b"garbage").is_err());
        let index = Pages { pages: vec![(1, 3), (4, 64), (68, 1)] };
        assert_eq!(index.of(1), Some((1, 3)));
        assert_eq!(index.of(3), Some((1, 3)));
        assert_eq!(index.of(4), Some((4, 64)));
        assert_eq!(index.of(67), Some((4, 64)));
        assert_eq!(index.of(68), Some((68, 1)));
        assert_eq!(index.of(69), None);
        assert_eq!(index.of(0), None);
        assert_eq!(index.next_seq(), 69);
        assert_eq!(Pages::default().next_seq(), 1);
    }
}
