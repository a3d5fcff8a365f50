//! The maintenance commands on a PostgreSQL ledger: the records, events and
//! directories read for `check` and `export`, the recount of what the
//! database keeps, and `import` into an empty database.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{
    connect, key_columns, migrate, on_own_runtime, read_directory, read_on_thread, seq_i64, Writes, INSERT_HOLDERS,
    INSERT_USAGE, SEQ_SHIFT,
};
use crate::domain::County;
use crate::ledger::keys::KeyDigest;
use crate::ledger::record::ClaimRecord;
use crate::rules::Status;

/// One state of the database, which every reader of a maintenance command
/// sees, whatever replicas record meanwhile: a read-only repeatable-read
/// transaction held open on a connection (and a thread) of its own, whose
/// snapshot is exported to the readers' transactions. It ends when the last
/// reader drops it.
struct Snapshot {
    url: String,
    id: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    holder: Option<std::thread::JoinHandle<()>>,
}

impl Snapshot {
    fn take(url: &str) -> anyhow::Result<Arc<Self>> {
        let (id_tx, id_rx) = std::sync::mpsc::channel::<anyhow::Result<String>>();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let held = url.to_string();
        let holder = std::thread::spawn(move || {
            let hold = async {
                let c = connect(&held).await?;
                // Held open while the readers start, however long the
                // command runs: not ended by a database's idle timeout.
                c.batch_execute("SET idle_in_transaction_session_timeout = 0").await?;
                c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
                let id: String = c.query_one("SELECT pg_export_snapshot()", &[]).await?.get(0);
                Ok::<_, anyhow::Error>((c, id))
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let runtime = match runtime {
                Ok(rt) => rt,
                Err(e) => return drop(id_tx.send(Err(e.into()))),
            };
            match runtime.block_on(hold) {
                Ok((c, id)) => {
                    let _ = id_tx.send(Ok(id));
                    // Held, open on the server (nothing needs to be read
                    // from it meanwhile), until every reader is done.
                    let _ = stopped.recv();
                    drop(c);
                }
                Err(e) => drop(id_tx.send(Err(e))),
            }
        });
        let id = id_rx.recv().context("the snapshot's connection ended")??;
        Ok(Arc::new(Self { url: url.to_string(), id, stop: Some(stop), holder: Some(holder) }))
    }

    /// A connection whose transaction sees the snapshot.
    async fn reader(&self) -> anyhow::Result<tokio_postgres::Client> {
        let c = connect(&self.url).await?;
        let id = self.id.replace('\'', "''");
        c.batch_execute(&format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{id}'"))
            .await
            .context("reading the maintenance snapshot")?;
        Ok(c)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

/// Rows of a query in `snapshot`, streamed on a thread and a connection of
/// their own.
fn stream<T: Send + 'static>(
    snapshot: Arc<Snapshot>,
    sql: &'static str,
    map: fn(&Row) -> anyhow::Result<T>,
) -> Box<dyn Iterator<Item = anyhow::Result<T>> + Send> {
    use futures_util::TryStreamExt;
    Box::new(read_on_thread(4096, move |out| async move {
        let c = snapshot.reader().await?;
        let no_params: [&(dyn ToSql + Sync); 0] = [];
        let rows = c.query_raw(sql, no_params.iter().map(|p| *p as &dyn ToSql)).await?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.try_next().await? {
            if out.send(map(&row)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }))
}

/// The ledger in the database at `url`, for the maintenance commands:
/// records numbered 1.. in recording order, all read in one snapshot.
pub fn dump(url: &str) -> anyhow::Result<crate::ledger::Dump<'static>> {
    Ok(dump_in(Snapshot::take(url)?))
}

fn dump_in(snapshot: Arc<Snapshot>) -> crate::ledger::Dump<'static> {
    let directories = snapshot.clone();
    crate::ledger::Dump {
        records: stream(
            snapshot.clone(),
            "SELECT row_number() OVER (ORDER BY seq), header, body FROM claims ORDER BY seq",
            |r| ClaimRecord::decode(r.get::<_, i64>(0) as u64, r.get(1), r.get(2)),
        ),
        events: stream(
            snapshot,
            "SELECT c.n, e.event FROM events e
             JOIN (SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM claims) c ON c.seq = e.claim_seq
             ORDER BY e.seq",
            |r| Ok((r.get::<_, i64>(0) as u64, serde_json::from_str(r.get(1)).context("a stored event")?)),
        ),
        directories: Box::new(move || {
            on_own_runtime(async move {
                let c = directories.reader().await?;
                let mut out = HashMap::new();
                for county in County::ALL {
                    out.insert(*county, read_directory(&c, *county).await?);
                }
                Ok(out)
            })
        }),
    }
}

/// Rechecks the ledger at `url` from its records, and what it keeps
/// materialised (usage, unique keys, totals) against their recount, all
/// read in one snapshot: replicas may go on recording meanwhile.
pub fn check(url: &str) -> anyhow::Result<Vec<String>> {
    let snapshot = Snapshot::take(url)?;
    let (mut drift, recount) = crate::ledger::check_dump(dump_in(snapshot.clone()))?;
    let (usage, holders, totals) = on_own_runtime(async move {
        let c = snapshot.reader().await?;
        let key = |r: &Row| -> anyhow::Result<KeyDigest> {
            r.get::<_, &[u8]>(0).try_into().context("a stored ledger key is not 16 bytes")
        };
        let mut usage = HashSet::new();
        for r in c.query("SELECT key, claim_id FROM usage_counts", &[]).await? {
            usage.insert((key(&r)?, r.get::<_, String>(1)));
        }
        let mut holders = HashMap::new();
        for r in c.query("SELECT key, claim_id FROM holders", &[]).await? {
            holders.insert(key(&r)?, r.get::<_, String>(1));
        }
        let mut totals = HashMap::new();
        for r in c.query("SELECT key, total FROM totals WHERE total <> 0", &[]).await? {
            totals.insert(key(&r)?, r.get::<_, Decimal>(1));
        }
        Ok((usage, holders, totals))
    })?;
    for (k, id) in usage.symmetric_difference(&recount.usage) {
        let held = if usage.contains(&(*k, id.clone())) { "kept but not held by its record" } else { "missing" };
        drift.push(format!("usage {} of claim {id}: {held}", faster_hex::hex_string(k.as_slice())));
    }
    for (k, id) in &holders {
        if recount.holders.get(k) != Some(id) {
            drift.push(format!(
                "key {} kept for claim {id}, which does not hold it",
                faster_hex::hex_string(k.as_slice())
            ));
        }
    }
    for (k, id) in &recount.holders {
        if !holders.contains_key(k) {
            drift.push(format!("key {} of claim {id} is missing", faster_hex::hex_string(k.as_slice())));
        }
    }
    for k in totals.keys().chain(recount.totals.keys()).collect::<BTreeSet<_>>() {
        let (kept, counted) =
            (totals.get(k).copied().unwrap_or_default(), recount.totals.get(k).copied().unwrap_or_default());
        if kept != counted {
            drift.push(format!(
                "total {}: kept {kept}, the records add up to {counted}",
                faster_hex::hex_string(k.as_slice())
            ));
        }
    }
    Ok(drift)
}

/// Writes the ledger at `url` as JSON lines (the embedded store's format).
pub fn export(url: &str, out: &mut impl std::io::Write) -> anyhow::Result<usize> {
    crate::ledger::export_dump(dump(url)?, out)
}

/// Restores an export (either backend's, layout v1 or v2) into the empty
/// ledger at `url`, in one transaction.
pub fn import(url: &str, input: impl std::io::BufRead) -> anyhow::Result<usize> {
    let (ledger, n) = crate::ledger::read_export(input)?;
    let url = url.to_string();
    on_own_runtime(async move {
        let mut c = connect(&url).await?;
        migrate(&mut c).await?;
        let tx = c.transaction().await?;
        let used: i64 = tx
            .query_one("SELECT (SELECT count(*) FROM claims) + (SELECT count(*) FROM directories)", &[])
            .await?
            .get(0);
        anyhow::ensure!(used == 0, "the target database is not empty; import restores into a fresh ledger");
        // Imported records keep their numbers 1..n, below every number a
        // later transaction gives (its id shifted left).
        let xid: i64 = tx.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).await?.get(0);
        anyhow::ensure!(
            (ledger.records.len() as i64) < xid << SEQ_SHIFT,
            "too many records for this database's transaction ids"
        );
        for chunk in ledger.records.chunks(2000) {
            import_records(&tx, chunk).await?;
        }
        let mut events: (Vec<i64>, Vec<i64>, Vec<String>) = Default::default();
        for (claim_seq, e) in &ledger.events {
            events.0.push(seq_i64(e.seq));
            events.1.push(seq_i64(*claim_seq));
            events.2.push(serde_json::to_string(e)?);
        }
        tx.execute(
            "INSERT INTO events (seq, claim_seq, event) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])",
            &[&events.0, &events.1, &events.2],
        )
        .await?;
        for (county, d) in &ledger.directories {
            tx.execute(
                "INSERT INTO directories (county, revision, record) VALUES ($1, 1, $2)",
                &[&county.as_str(), &serde_json::to_string(d)?],
            )
            .await?;
        }
        let last_event = ledger
            .records
            .iter()
            .map(|r| r.header.decided_event)
            .chain(ledger.events.iter().map(|(_, e)| e.seq))
            .max()
            .unwrap_or(0);
        if last_event > 0 {
            tx.execute("SELECT setval('event_numbers', $1)", &[&seq_i64(last_event)]).await?;
        }
        tx.commit().await?;
        Ok(())
    })?;
    Ok(n)
}

/// Inserts imported records and what the granted ones hold.
async fn import_records(tx: &tokio_postgres::Transaction<'_>, records: &[ClaimRecord]) -> anyhow::Result<()> {
    let (mut seqs, mut ids, mut counties, mut kinds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut statuses, mut dates, mut departments) = (Vec::new(), Vec::new(), Vec::new());
    let (mut parties, mut granted, mut heads, mut bodies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut held = Writes::default();
    let mut totals: HashMap<KeyDigest, Decimal> = HashMap::new();
    for r in records {
        let h = &r.header;
        seqs.push(seq_i64(r.seq));
        ids.push(h.claim_id.as_str());
        counties.push(h.county.as_str());
        kinds.push(h.kind.as_str());
        statuses.push(h.status.as_str());
        dates.push(h.event_date);
        departments.push(h.department.as_deref());
        parties.push(h.parties.join("\u{1f}"));
        granted.push(h.granted);
        let (head, body) = r.encode();
        heads.push(head);
        bodies.push(body);
        if h.status == Status::Approved {
            if let Some(k) = h.holdings.count {
                held.usage.push((k, h.claim_id.clone()));
            }
            held.holders.extend(h.holdings.keys.iter().map(|k| (*k, h.claim_id.clone())));
            for (k, a) in &h.holdings.totals {
                *totals.entry(*k).or_default() += *a;
            }
        }
    }
    tx.execute(
        "INSERT INTO claims (seq, claim_id, county, kind, status, event_date, department, parties, granted, header, body)
         SELECT s, i, c, k, st, d, dep, string_to_array(p, E'\\x1f'), g, h, b
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::date[], $7::text[],
                     $8::text[], $9::numeric[], $10::bytea[], $11::bytea[]) AS t(s, i, c, k, st, d, dep, p, g, h, b)",
        &[&seqs, &ids, &counties, &kinds, &statuses, &dates, &departments, &parties, &granted, &heads, &bodies],
    )
    .await?;
    let (usage_keys, usage_ids) = key_columns(&held.usage);
    let (holder_keys, holder_ids) = key_columns(&held.holders);
    let (total_keys, total_values): (Vec<&[u8]>, Vec<Decimal>) = totals.iter().map(|(k, v)| (&k[..], *v)).unzip();
    tx.execute(INSERT_USAGE, &[&usage_keys, &usage_ids]).await?;
    tx.execute(INSERT_HOLDERS, &[&holder_keys, &holder_ids]).await?;
    tx.execute(
        "INSERT INTO totals (key, total) SELECT * FROM unnest($1::bytea[], $2::numeric[])
         ON CONFLICT (key) DO UPDATE SET total = totals.total + EXCLUDED.total",
        &[&total_keys, &total_values],
    )
    .await?;
    Ok(())
}
