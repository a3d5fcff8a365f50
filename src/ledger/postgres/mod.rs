//! The PostgreSQL backend: one database shared by any number of service
//! processes (API.md §7), behind the same seam as the embedded store.
//!
//! Every guarantee holds across processes because it is kept by the
//! database, never by a lock in one process:
//! - A claim is decided and recorded in one transaction. Before the rules'
//!   answer counts, every ledger key they read (a person's year, a
//!   certificate, an institution's running total…) is locked with a
//!   transaction-scoped advisory lock and read again under it. Claims that
//!   share no key never wait for each other; claims that do are decided one
//!   after another, each seeing the last one's effects.
//! - The claim id is locked the same way, before any key: a retry that lands
//!   on another process finds the recorded claim and replays it (or
//!   conflicts).
//! - Recording order needs no counter that every writer would wait on: a
//!   claim's number is its transaction's id shifted left by [`SEQ_SHIFT`] bits
//!   plus its place in the transaction, and listings and replays show only
//!   claims whose transaction is older than every one still running, so a
//!   cursor never passes a claim that commits later.
//! - A deadlock or serialisation failure rolls the transaction back and it
//!   is tried again from the start (a bounded number of times).
//! - A commit returns once the database made it durable
//!   (`synchronous_commit` is on by default; the service sets it on).
//!
//! The records keep the embedded store's encoding (header and compressed
//! body, personal fields sealed), so export and import move them between
//! backends unchanged.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use sha2::{Digest as _, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The statements of a transaction on a pooled connection (prepared
/// statements are cached per connection: a statement is parsed once per
/// connection, not per use).
///
/// The transaction is begun and ended by hand, not with a driver's
/// `Transaction`, so that `BEGIN` goes out with its first statements and a
/// recording's `COMMIT` with its last writes: two round trips fewer than
/// waiting for each. A [`Session`] ends every transaction it began before
/// its connection goes back to the pool.
struct Tx<'a> {
    client: &'a deadpool_postgres::ClientWrapper,
    /// `BEGIN` was sent, and neither `COMMIT` nor `ROLLBACK` after it.
    open: &'a AtomicBool,
}

impl std::ops::Deref for Tx<'_> {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &Self::Target {
        self.client
    }
}

/// A pooled connection on which transactions are run one after another. If
/// it is dropped while a transaction may be open (a request given up part
/// way), the connection leaves the pool: a statement of that transaction
/// may still be waiting for a lock, and the next user's statements would
/// wait behind it. The statement is cancelled and the connection closed,
/// which ends the transaction with a rollback (a `ROLLBACK` is queued
/// first, for a database that reads it sooner).
struct Session {
    conn: Option<deadpool_postgres::Object>,
    open: AtomicBool,
    /// For the cancel request, which opens a connection of its own.
    tls: tls::Tls,
}

impl Session {
    fn new(conn: deadpool_postgres::Object, tls: tls::Tls) -> Self {
        Self { conn: Some(conn), open: AtomicBool::new(false), tls }
    }

    /// The connection's statements, for a transaction [`in_transaction`] begins.
    fn tx(&self) -> Result<Tx<'_>, LedgerError> {
        let client = self.conn.as_deref().ok_or_else(|| unavailable("the connection was closed"))?;
        if self.open.load(Ordering::SeqCst) {
            // A transaction that could not be ended: the connection is not used again.
            return Err(unavailable("the database connection is in an unfinished transaction"));
        }
        Ok(Tx { client, open: &self.open })
    }

    /// Ends a transaction the body left open: `COMMIT` when it succeeded,
    /// else `ROLLBACK`. Answers the body's result, or the commit's error.
    async fn end<T>(&mut self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        if !self.open.load(Ordering::SeqCst) {
            return result;
        }
        let Some(conn) = self.conn.as_deref() else { return result };
        let result = match result {
            Ok(v) => conn.batch_execute("COMMIT").await.map(|()| v).map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        if result.is_ok() {
            self.open.store(false, Ordering::SeqCst);
        } else if conn.batch_execute("ROLLBACK").await.is_ok() {
            // Also after a `COMMIT` that failed: most such failures end the
            // transaction already, and a `ROLLBACK` outside one only warns.
            self.open.store(false, Ordering::SeqCst);
        }
        result
    }

    /// Whether a transaction may still be open on the connection (one that
    /// could not be ended); the connection is then not used again.
    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }
}

/// Runs `body` in a new transaction on `tx`'s connection: `BEGIN` goes out
/// first and is not waited for alone (`join` polls it first, so it is
/// queued before anything the body sends). The transaction is then still
/// open unless the body committed it ([`commit_with`]); [`Session::end`]
/// ends it.
async fn in_transaction<T>(
    tx: &Tx<'_>,
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tx.open.store(true, Ordering::SeqCst);
    // Read committed whatever the database's default: every read sent after
    // a lock must see what the lock's previous holder committed (a snapshot
    // taken before the wait would not, and the yearly limit would not hold).
    let begin = tx.client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED");
    let (begun, result) = futures_util::future::join(begin, body).await;
    begun?;
    result
}

impl Drop for Session {
    fn drop(&mut self) {
        use futures_util::FutureExt as _;
        let Some(conn) = self.conn.take() else { return };
        if self.open.load(Ordering::SeqCst) {
            // The first poll queues the statement; its answer is not read.
            let _ = conn.batch_execute("ROLLBACK").now_or_never();
            // A statement still waiting for a lock would keep the session
            // (and the database's connection slot) until the lock came free:
            // it is cancelled, from a task, as the drop cannot wait.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (token, tls) = (conn.cancel_token(), self.tls.clone());
                runtime.spawn(async move { drop(token.cancel_query(tls).await) });
            }
            // Out of the pool for good.
            drop(deadpool_postgres::Object::take(conn));
        }
    }
}

/// Sends `writes` and then `COMMIT`, pipelined. Each write's first poll
/// sends its statement (or fails before sending it, which sends nothing
/// more and leaves the transaction open for [`Session::end`] to roll back).
/// Once every write is sent, `COMMIT` follows them: if a write then fails,
/// the database ends the transaction at that `COMMIT` with a rollback, and
/// the first failure (in sending order, the cause) is answered.
async fn commit_with(
    tx: &Tx<'_>,
    writes: Vec<futures_util::future::BoxFuture<'_, Result<u64, tokio_postgres::Error>>>,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::future::MaybeDone;
    use std::future::Future as _;
    use std::pin::Pin;
    use std::task::Poll;
    let mut writes: Vec<MaybeDone<_>> = writes.into_iter().map(futures_util::future::maybe_done).collect();
    // The first poll of each write, in order, sends it; stop at one that
    // failed before it was sent.
    let unsent = futures_util::future::poll_fn(|cx| {
        for (i, w) in writes.iter_mut().enumerate() {
            let _ = Pin::new(&mut *w).poll(cx);
            if matches!(w, MaybeDone::Done(Err(_))) {
                return Poll::Ready(Some(i));
            }
        }
        Poll::Ready(None)
    })
    .await;
    if let Some(i) = unsent {
        if let Some(Err(e)) = Pin::new(&mut writes[i]).take_output() {
            return Err(e);
        }
    }
    let commit = tx.client.batch_execute("COMMIT");
    let sent = futures_util::future::poll_fn(|cx| {
        let mut pending = false;
        for w in &mut writes {
            pending |= Pin::new(w).poll(cx).is_pending();
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    });
    let ((), committed) = futures_util::future::join(sent, commit).await;
    // The transaction has ended once `COMMIT` answered, committed or (after
    // a failed write) rolled back.
    if committed.is_ok() {
        tx.open.store(false, Ordering::SeqCst);
    }
    for w in &mut writes {
        if let Some(Err(e)) = Pin::new(w).take_output() {
            return Err(e);
        }
    }
    committed
}

/// Rows of a cached statement.
async fn rows(tx: &Tx<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query(&statement, params).await
}

/// Query parameters.
type Params<'a, const N: usize> = [&'a (dyn ToSql + Sync); N];

mod maintenance;
mod pools;
pub mod tls;

pub use maintenance::{check, dump, export, import};
use pools::ThreadPools;

use super::keys::{digest, KeyDigest};
use super::record::{
    ClaimRecord, DirectoryRecord, EncodedRecord, Event, Holdings, RecordBody, RecordHeader, ReportTotals,
};
use super::{
    ClaimItem, Evaluation, ItemResult, LedgerError, LedgerService, LedgerStats, ListFilter, ListPage, ReplayFilter,
    RevokeResult, StoredClaim, Submissions, Submitted, UsageEntry,
};
use crate::domain::{Claim, County, Kind};
use crate::policy::Policy;
use crate::rules::{decide, Decision, Directory, LedgerKey, LedgerReadError, LedgerView, Revocation, Status};

/// The schema, one migration per step, applied in order at start and by
/// `subsidy-service migrate`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_ledger.sql")),
    (2, include_str!("../migrations/0002_no_row_lock_per_write.sql")),
    (3, include_str!("../migrations/0003_claim_references_again.sql")),
    (4, include_str!("../migrations/0004_claim_references_checked.sql")),
];

/// How many times a transaction is tried when the database rolls it back
/// for a deadlock or a serialisation failure.
const ATTEMPTS: u32 = 8;

/// A claim's number is `xid << SEQ_SHIFT` plus its place in its transaction.
const SEQ_SHIFT: u32 = 20;

/// Claims that are visible and older than every transaction still running.
const SETTLED: &str = "xid < pg_snapshot_xmin(pg_current_snapshot())";

/// Claims read per query when replaying.
const REPLAY_PAGE: i64 = 5_000;

/// Creates or migrates the schema; returns the versions applied now. Each
/// migration runs in a transaction of its own, so that one may take brief
/// locks and the next scan the tables without holding them (the claims'
/// foreign keys: added unchecked by migration 3, checked by migration 4
/// while claims go on being recorded). Several processes starting at once
/// migrate one at a time. A migration that fails leaves the ones before it
/// applied.
pub async fn migrate(client: &mut tokio_postgres::Client) -> anyhow::Result<Vec<i32>> {
    let mut applied = Vec::new();
    loop {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_id(b"schema-migrations")]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
        let done: HashSet<i32> =
            tx.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
        let Some((version, sql)) = MIGRATIONS.iter().find(|(v, _)| !done.contains(v)) else {
            tx.commit().await?;
            return Ok(applied);
        };
        tx.batch_execute(sql).await.with_context(|| format!("schema migration {version}"))?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
        tx.commit().await?;
        applied.push(*version);
    }
}

/// Connects once, outside any pool (start-up, `migrate`, replays, the
/// maintenance commands).
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    connect_to(&tls::target(url)?).await
}

/// Connects once to what [`tls::target`] read (its connector made once: the
/// ledger's own connections outside the pools).
async fn connect_to(target: &tls::Target) -> anyhow::Result<tokio_postgres::Client> {
    let tls::Target { mut config, tls } = target.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let prefer = config.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer;
    let (client, connection) = config.connect(tls).await.map_err(|e| {
        let what = if prefer && tls_refused(&e) {
            "connecting to the database (store.url): the server offered TLS and it failed; sslmode=prefer does not \
             go on without TLS here (fix the server's certificate, or set sslmode=disable)"
        } else {
            "connecting to the database (store.url)"
        };
        anyhow::Error::new(e).context(what)
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "a database connection ended");
        }
    });
    Ok(client)
}

/// How long a session may sit in an open transaction without sending
/// anything before the database ends it: a replica that died or was cut off
/// mid-transaction (no FIN reached the database) then frees its locks after
/// this, not after the database's TCP keepalive (two hours by default). Our
/// own transactions are never idle for more than a few milliseconds.
const IDLE_IN_TRANSACTION: &str = "60s";

/// The pools' connections to `url`, with their session settings around the
/// URL's own `options`: a transaction idle longer than
/// [`IDLE_IN_TRANSACTION`] is ended (unless the URL says otherwise), commits
/// wait for the WAL flush whatever the URL says, and a connection whose peer
/// vanished is found by TCP keepalives within about a minute (unless the URL
/// sets them). TLS as the URL's `sslmode` says ([`tls`]).
pub fn session_config(url: &str) -> anyhow::Result<tls::Target> {
    Ok(with_session_settings(tls::target(url)?))
}

/// [`session_config`] of what [`tls::target`] read (the same connector).
fn with_session_settings(target: tls::Target) -> tls::Target {
    let tls::Target { mut config, tls } = target;
    let own = config.get_options().unwrap_or_default();
    let options =
        format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION} {own} -c synchronous_commit=on");
    config.options(options);
    let default_idle = config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60);
    if default_idle && config.get_keepalives_interval().is_none() && config.get_keepalives_retries().is_none() {
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        // Data sent and not acknowledged for this long: the connection is gone.
        config.tcp_user_timeout(Duration::from_secs(60));
    }
    tls::Target { config, tls }
}

/// Whether a failure is the database not answering (yet): no connection
/// (refused, reset, timed out, a name that does not resolve), one lost, a
/// server starting up, shutting down or full, or a connection exception
/// (SQLSTATE class 08). Not a database that answers and refuses (a wrong
/// password, no such database, a failed migration), nor an error of the
/// client's own (a password missing from the URL).
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<tokio_postgres::Error>()).any(|pg| {
        // tokio-postgres tells its connection failures apart only by their
        // text: "error connecting to server", "error communicating with the
        // server", "error performing TLS handshake" (each with the io::Error
        // as its source), "timeout waiting for server".
        let text = pg.to_string();
        let source = io_source(pg);
        let io = (text.starts_with("error connecting to server") || text.starts_with("error communicating with"))
            && source.is_some()
            && !tls_refused(pg)
            || text.starts_with("timeout waiting for server");
        // A TLS handshake the network cut off; not one the connector refused
        // to start (a host name not valid for TLS) nor a certificate.
        let cut_off = text.starts_with("error performing TLS handshake")
            && !tls_refused(pg)
            && source.is_some_and(|e| {
                use std::io::ErrorKind::*;
                matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut)
            });
        let code = pg.code().is_some_and(|c| {
            c.code().starts_with("08")
                || [SqlState::CANNOT_CONNECT_NOW, SqlState::TOO_MANY_CONNECTIONS, SqlState::ADMIN_SHUTDOWN].contains(c)
                || *c == SqlState::CRASH_SHUTDOWN
        });
        io || cut_off || pg.is_closed() || code
    })
}

/// The I/O error a connection failure carries.
fn io_source(pg: &tokio_postgres::Error) -> Option<&std::io::Error> {
    std::error::Error::source(pg).and_then(|s| s.downcast_ref::<std::io::Error>())
}

/// TLS that failed on either side (a certificate that failed its check, an
/// alert from the server, a peer that does not speak TLS), whichever step it
/// surfaced in: with TLS 1.3 the server's refusal of a client certificate
/// arrives after the handshake, as a read error. A refusal, not a database
/// to wait for.
fn tls_refused(pg: &tokio_postgres::Error) -> bool {
    io_source(pg).and_then(std::io::Error::get_ref).is_some_and(|inner| inner.is::<rustls::Error>())
}

/// Tries [`PostgresLedger::prepare`] again, waiting longer each time (up to
/// 5 s), until it succeeds, the database refuses and the service can be
/// stopped (`store.stop_on_failure`; without it, it goes on trying), or the
/// ledger shuts down or is dropped.
fn prepare_until_ready(ledger: &std::sync::Weak<PostgresLedger>) {
    let mut wait = Duration::from_millis(250);
    for attempt in 1u64.. {
        std::thread::sleep(wait);
        let Some(ledger) = ledger.upgrade() else { return };
        if ledger.closing.load(Ordering::Acquire) {
            return;
        }
        match ledger.prepare() {
            Ok(()) => {
                tracing::info!(attempt, "the database answers: the ledger is ready");
                return;
            }
            // A line now and then (about a minute apart), not one a try.
            Err(NotReady::Unreachable(e)) => {
                if attempt % 12 == 0 {
                    tracing::warn!(attempt, error = %format!("{e:#}"), "the database still cannot be reached");
                }
            }
            Err(NotReady::Refused(e)) => match ledger.on_refusal.lock().ok().and_then(|mut f| f.take()) {
                Some(stop) => {
                    tracing::error!(error = %format!("{e:#}"), "the database refused the start: stopping");
                    ledger.refused.store(true, Ordering::Release);
                    stop();
                    return;
                }
                None => tracing::error!(error = %format!("{e:#}"), "the database refused the start: trying again"),
            },
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own:
/// callable from synchronous code and from inside another runtime alike.
pub fn on_own_runtime<T: Send>(f: impl std::future::Future<Output = anyhow::Result<T>> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f))
            .join()
            .map_err(|_| anyhow!("the database task panicked"))?
    })
}

/// A 64-bit advisory lock id.
fn lock_id(bytes: &[u8]) -> i64 {
    let d = Sha256::digest(bytes);
    i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The lock of a ledger key (its digest is already a hash).
fn key_lock(d: &KeyDigest) -> i64 {
    i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn claim_lock(claim_id: &str) -> i64 {
    lock_id(format!("claim-id\0{claim_id}").as_bytes())
}

/// Takes transaction-scoped advisory locks in ascending order.
const LOCK: &str = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS t(k)";

/// Takes the advisory locks `ids` in the order given (see [`lock_order`]),
/// then runs each query under them, in one round trip. Every statement is
/// prepared first, so that the lock is sent before the reads (a statement
/// prepared on first use would otherwise let a read overtake the lock, and
/// read what the lock was to wait for).
async fn locked_reads<const N: usize>(
    tx: &Tx<'_>,
    ids: Vec<i64>,
    queries: [(&str, &[&(dyn ToSql + Sync)]); N],
) -> Result<Vec<Vec<Row>>, tokio_postgres::Error> {
    let lock = tx.prepare_cached(LOCK).await?;
    let mut statements = Vec::with_capacity(N);
    for (sql, _) in &queries {
        statements.push(tx.prepare_cached(sql).await?);
    }
    let lock = async {
        if !ids.is_empty() {
            tx.execute(&lock, &[&ids]).await?;
        }
        Ok(())
    };
    let reads = futures_util::future::try_join_all(statements.iter().zip(&queries).map(|(st, (_, p))| tx.query(st, p)));
    let ((), rows) = tokio::try_join!(lock, reads)?;
    Ok(rows)
}

/// Advisory locks one claim's transaction may take, at most: its claim id and
/// up to five keys (a CX apprenticeship enrolment reads its apprentice-year's
/// completion, stage and counted mark, its tranche total and the yearly
/// count; most kinds take three or four in all).
pub const LOCKS_PER_CLAIM: u64 = 6;

/// The database's shared lock table: its entries, and the two settings that
/// size it.
#[derive(Debug, Clone, Copy)]
struct LockTable {
    entries: u64,
    per_transaction: u64,
    /// `max_connections + max_prepared_transactions`.
    connections: u64,
}

impl LockTable {
    /// The `max_locks_per_transaction` that transactions holding `claims`
    /// claims at once need, when this table is smaller.
    fn too_small_for(&self, claims: u64) -> Option<u64> {
        let wanted = claims.saturating_mul(LOCKS_PER_CLAIM);
        (self.entries < wanted).then(|| wanted.div_ceil(self.connections.max(1)))
    }
}

async fn lock_table(c: &tokio_postgres::Client) -> anyhow::Result<LockTable> {
    let row = c
        .query_one(
            "SELECT current_setting('max_locks_per_transaction')::bigint,
                    current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint",
            &[],
        )
        .await?;
    let (per_transaction, connections): (i64, i64) = (row.get(0), row.get(1));
    let (per_transaction, connections) = (per_transaction.max(0) as u64, connections.max(0) as u64);
    Ok(LockTable { entries: per_transaction.saturating_mul(connections), per_transaction, connections })
}

/// The order every transaction takes its locks in: claim ids first, sorted,
/// then keys, sorted (each list without repeats). Two transactions that
/// take their locks in one statement this way cannot deadlock; a key locked
/// in a later round trip (one only the final decision reads) can, and the
/// database then rolls one back and it is tried again.
fn lock_order(claim_ids: &[&str], keys: &[KeyDigest]) -> Vec<i64> {
    let mut ids: Vec<i64> = claim_ids.iter().map(|id| claim_lock(id)).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut key_ids: Vec<i64> = keys.iter().map(key_lock).collect();
    key_ids.sort_unstable();
    key_ids.dedup();
    ids.extend(key_ids);
    ids
}

/// A recorded claim by its claim id.
const CLAIM_BY_ID: &str = "SELECT seq, header, body FROM claims WHERE claim_id = $1";

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(e.to_string())
}

/// A failure that trying the transaction again may cure.
fn retryable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.code()).is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
            // A pipelined statement after the one that failed reports only
            // this; the failure itself may be one of the above.
            || *c == SqlState::IN_FAILED_SQL_TRANSACTION
    })
}

/// The values of the keys `$1` (digests), all three kinds in one statement:
/// (0, key, claim id, NULL) for each claim counted under a usage key, (1,
/// key, claim id, NULL) for a key's holder, (2, key, NULL, total) for a
/// total.
const READ_KEYS: &str = "SELECT 0, key, claim_id, NULL::numeric FROM usage_counts WHERE key = ANY($1)
     UNION ALL SELECT 1, key, claim_id, NULL FROM holders WHERE key = ANY($1)
     UNION ALL SELECT 2, key, NULL, total FROM totals WHERE key = ANY($1)";

/// What a transaction has read of the ledger under its locks, plus its own
/// changes so far: the values the rules see.
#[derive(Default)]
struct Known {
    fetched: HashSet<KeyDigest>,
    usage: HashMap<KeyDigest, Vec<String>>,
    holders: HashMap<KeyDigest, String>,
    totals: HashMap<KeyDigest, Decimal>,
}

impl Known {
    /// Reads keys not read yet (all three kinds at once, pipelined).
    /// With `lock`, each key is locked first and read under its lock (one
    /// round trip either way).
    async fn fetch(&mut self, tx: &Tx<'_>, keys: &BTreeSet<KeyDigest>, lock: bool) -> anyhow::Result<()> {
        let fresh = self.unread(keys);
        if fresh.is_empty() {
            return Ok(());
        }
        let locks = if lock { lock_order(&[], &fresh) } else { Vec::new() };
        let digests: Vec<&[u8]> = fresh.iter().map(|k| &k[..]).collect();
        let p: Params<1> = [&digests];
        let read = locked_reads(tx, locks, [(READ_KEYS, &p)]).await?;
        self.absorb(read.iter().flatten(), fresh)
    }

    /// Those of `keys` not read yet.
    fn unread(&self, keys: &BTreeSet<KeyDigest>) -> Vec<KeyDigest> {
        keys.iter().filter(|k| !self.fetched.contains(*k)).copied().collect()
    }

    /// Takes in the rows of [`READ_KEYS`] read for `keys`.
    fn absorb<'r>(&mut self, rows: impl Iterator<Item = &'r Row>, keys: Vec<KeyDigest>) -> anyhow::Result<()> {
        for r in rows {
            let key: KeyDigest = r.get::<_, &[u8]>(1).try_into().context("a stored ledger key is not 16 bytes")?;
            match r.get::<_, i32>(0) {
                0 => self.usage.entry(key).or_default().push(r.get(2)),
                1 => {
                    self.holders.insert(key, r.get(2));
                }
                _ => {
                    self.totals.insert(key, r.get(3));
                }
            }
        }
        self.fetched.extend(keys);
        Ok(())
    }

    /// Takes what a granted claim holds (the transaction's own change).
    fn take(&mut self, claim_id: &str, h: &Holdings, writes: &mut Writes) {
        if let Some(k) = h.count {
            self.usage.entry(k).or_default().push(claim_id.to_string());
            writes.usage.push((k, claim_id.to_string()));
        }
        for k in &h.keys {
            self.holders.insert(*k, claim_id.to_string());
            writes.holders.push((*k, claim_id.to_string()));
        }
        for (k, amount) in &h.totals {
            *self.totals.entry(*k).or_default() += *amount;
            writes.totals.insert(*k);
        }
    }
}

/// The rules' view of [`Known`]. A key not read yet answers as absent and
/// is noted; the caller locks and reads the noted keys and decides again,
/// until the rules read nothing new.
struct KnownView<'a> {
    known: &'a Known,
    /// The same claim already granted (an evaluation sets it aside).
    own: Option<(&'a str, &'a Holdings)>,
    missing: RefCell<BTreeSet<KeyDigest>>,
}

impl<'a> KnownView<'a> {
    fn new(known: &'a Known, own: Option<(&'a str, &'a Holdings)>) -> Self {
        Self { known, own, missing: RefCell::default() }
    }

    /// The key's digest, if it has been read.
    fn read(&self, k: &LedgerKey) -> Option<KeyDigest> {
        let d = digest(k);
        if self.known.fetched.contains(&d) {
            Some(d)
        } else {
            self.missing.borrow_mut().insert(d);
            None
        }
    }

    fn is_own(&self, claim_id: &str) -> bool {
        self.own.is_some_and(|(id, _)| id == claim_id)
    }
}

impl LedgerView for KnownView<'_> {
    fn count(&self, k: &LedgerKey) -> Result<u32, LedgerReadError> {
        let Some(d) = self.read(k) else { return Ok(0) };
        let n = self.known.usage.get(&d).map_or(0, |ids| ids.iter().filter(|id| !self.is_own(id)).count());
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn holder(&self, k: &LedgerKey) -> Result<Option<String>, LedgerReadError> {
        let Some(d) = self.read(k) else { return Ok(None) };
        Ok(self.known.holders.get(&d).filter(|id| !self.is_own(id)).cloned())
    }

    fn total(&self, k: &LedgerKey) -> Result<Decimal, LedgerReadError> {
        let Some(d) = self.read(k) else { return Ok(Decimal::ZERO) };
        let stored = self.known.totals.get(&d).copied().unwrap_or_default();
        let own: Decimal =
            self.own.iter().flat_map(|(_, h)| h.totals.iter()).filter(|(key, _)| *key == d).map(|(_, a)| *a).sum();
        Ok((stored - own).max(Decimal::ZERO))
    }
}

/// A transaction's writes besides its records.
#[derive(Default)]
struct Writes {
    usage: Vec<(KeyDigest, String)>,
    holders: Vec<(KeyDigest, String)>,
    /// Totals changed (written as the value in [`Known`]).
    totals: BTreeSet<KeyDigest>,
}

/// The rows of [`Writes::usage`], as the parameters `($1 keys, $2 claim ids)`.
const INSERT_USAGE: &str = "INSERT INTO usage_counts (key, claim_id) SELECT * FROM unnest($1::bytea[], $2::text[])";
/// The rows of [`Writes::holders`], as the parameters `($1 keys, $2 claim ids)`.
const INSERT_HOLDERS: &str = "INSERT INTO holders (key, claim_id) SELECT * FROM unnest($1::bytea[], $2::text[])";

/// Rows of (key, claim id) as the two array parameters of
/// [`INSERT_USAGE`] and [`INSERT_HOLDERS`].
fn key_columns(rows: &[(KeyDigest, String)]) -> (Vec<&[u8]>, Vec<&str>) {
    rows.iter().map(|(k, id)| (&k[..], id.as_str())).unzip()
}

/// A claim decided in this transaction, numbered at commit.
struct Pending {
    header: RecordHeader,
    body: RecordBody,
    section: Arc<[u8]>,
}

/// Where an event of this transaction belongs.
enum EventOf {
    /// The `decided` event of the transaction's n-th new claim.
    Decided(usize),
    /// A replay of a stored claim.
    Stored(u64, Event),
    /// A replay of the transaction's n-th new claim.
    New(usize, Event),
}

fn holdings_of(outcome: &crate::rules::Outcome) -> Holdings {
    let e = &outcome.effects;
    Holdings {
        count: e.count.as_ref().map(digest),
        keys: e.keys.iter().map(digest).collect(),
        totals: e.totals.iter().map(|(k, v)| (digest(k), *v)).collect(),
    }
}

fn all_keys(h: &Holdings) -> impl Iterator<Item = KeyDigest> + '_ {
    h.count.iter().copied().chain(h.keys.iter().copied()).chain(h.totals.iter().map(|(k, _)| *k))
}

fn record_of(row: &Row) -> anyhow::Result<ClaimRecord> {
    let seq: i64 = row.get("seq");
    ClaimRecord::decode(seq as u64, row.get("header"), row.get("body"))
}

/// The PostgreSQL ledger.
pub struct PostgresLedger {
    pools: ThreadPools,
    /// `store.url` as read at start, with the pools' session settings, for
    /// connections outside the pools (start-up, replays).
    direct: tls::Target,
    policy: Arc<Policy>,
    /// Directories as last read, with their revision (a county with no
    /// stored directory holds the empty one, revision [`NO_DIRECTORY`]).
    directories: RwLock<HashMap<County, (i64, Arc<Directory>)>>,
    /// When [`LedgerService::directory`] last read the directories'
    /// revisions: it reads them at most every [`DIRECTORY_RECHECK`].
    directories_checked: std::sync::Mutex<Option<std::time::Instant>>,
    /// The schema is migrated and the directories read: until then every
    /// operation answers `503` (the database was unreachable at start).
    ready: AtomicBool,
    /// How long the start-up waits for a connection (`store.connect_timeout_ms`).
    connect_timeout: Duration,
    /// The most claims this process's transactions may hold at once (its
    /// full batches and a claim on each pooled connection), checked against
    /// the database's lock table at start.
    claims_at_once: u64,
    /// The database, first reached after the start, refused it (see
    /// [`prepare_until_ready`]), and the service was stopped.
    refused: AtomicBool,
    /// The stop `on_failure` gives (`store.stop_on_failure`), taken when used.
    on_refusal: std::sync::Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Set by `shutdown`: the start-up retries stop.
    closing: AtomicBool,
}

/// Why the schema could not be made ready.
enum NotReady {
    /// The database did not answer (yet): try again.
    Unreachable(anyhow::Error),
    /// It answered and refused: trying again will not help.
    Refused(anyhow::Error),
}

impl NotReady {
    fn of(e: anyhow::Error) -> Self {
        if unreachable(&e) {
            Self::Unreachable(e)
        } else {
            Self::Refused(e)
        }
    }
}

impl PostgresLedger {
    /// Migrates the schema and reads the directories (once, at start), then
    /// serves from pools that reconnect by themselves: `pool_size`
    /// connections split among `threads` workers (see [`pools`]).
    ///
    /// A database that cannot be reached at start (no connection, or one
    /// "starting up") does not stop the service: it serves `503
    /// STORE_UNAVAILABLE` (and `/readyz` `503`) while a thread tries again,
    /// and is ready once the schema is migrated. A database that answers and
    /// refuses (a wrong password, no such database, a failed migration)
    /// stops the start, or, when first reached later, the service.
    /// `claims_at_once`, the most claims the process's transactions hold at
    /// once, is checked against the database's lock table (a warning).
    pub fn start(
        url: &str,
        pool_size: usize,
        threads: usize,
        connect_timeout: Duration,
        claims_at_once: usize,
        policy: Arc<Policy>,
    ) -> anyhow::Result<Arc<Self>> {
        // One connector (the certificate files read once, one resolver) and
        // the same session settings for the pools and the ledger's own
        // connections (start-up, replays).
        let direct = with_session_settings(tls::target(url)?);
        let mut target = direct.clone();
        target.config.connect_timeout(connect_timeout);
        let pools = ThreadPools::new(target, pool_size, threads, connect_timeout);
        let ledger = Arc::new(Self {
            pools,
            direct,
            policy,
            directories: RwLock::new(County::ALL.iter().map(|c| (*c, (NO_DIRECTORY, empty_directory()))).collect()),
            directories_checked: std::sync::Mutex::new(None),
            ready: AtomicBool::new(false),
            connect_timeout,
            claims_at_once: claims_at_once as u64,
            refused: AtomicBool::new(false),
            on_refusal: std::sync::Mutex::new(None),
            closing: AtomicBool::new(false),
        });
        match ledger.prepare() {
            Ok(()) => {}
            Err(NotReady::Unreachable(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "the database cannot be reached: answering 503 until it can");
                let weak = Arc::downgrade(&ledger);
                std::thread::Builder::new().name("ledger-connect".into()).spawn(move || prepare_until_ready(&weak))?;
            }
            Err(NotReady::Refused(e)) => return Err(e),
        }
        Ok(ledger)
    }

    /// Migrates the schema and reads the directories; the ledger is ready
    /// after. Warns when the database's lock table is smaller than this
    /// process may fill (it cannot know the other replicas'). A connection (its handshake included) not made within the
    /// connect timeout is the database unreachable.
    fn prepare(&self) -> Result<(), NotReady> {
        let (target, wait) = (self.direct.clone(), self.connect_timeout);
        let (dirs, table) = on_own_runtime(async move {
            let connected = tokio::time::timeout(wait, connect_to(&target)).await;
            let mut client = match connected {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Ok(Err(NotReady::of(e))),
                Err(_) => return Ok(Err(NotReady::Unreachable(anyhow!("no connection within {wait:?}")))),
            };
            let read = async {
                let applied = migrate(&mut client).await?;
                if !applied.is_empty() {
                    tracing::info!(versions = ?applied, "database schema migrated");
                }
                // A diagnostic only: a database that will not say is not checked.
                let table = lock_table(&client)
                    .await
                    .inspect_err(
                        |e| tracing::warn!(error = %format!("{e:#}"), "the lock table's size could not be read"),
                    )
                    .ok();
                Ok((read_directories(&client).await?, table))
            };
            Ok(read.await.map_err(NotReady::of))
        })
        .map_err(NotReady::Refused)??;
        if let Some((table, enough)) = table.and_then(|t| Some((t, t.too_small_for(self.claims_at_once)?))) {
            tracing::warn!(
                lock_table = table.entries,
                max_locks_per_transaction = table.per_transaction,
                enough,
                "the database's lock table (max_locks_per_transaction × (max_connections + \
                 max_prepared_transactions)) holds fewer locks than this process's full batches and pooled claims \
                 may take at once: raise max_locks_per_transaction to `enough` (README, Sizing the lock table)"
            );
        }
        self.directories.write().map_err(|_| NotReady::Refused(anyhow!("poisoned")))?.extend(dirs);
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// `503` until the schema is ready (the database unreachable since the start).
    fn ready(&self) -> Result<(), LedgerError> {
        match self.ready.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(unavailable("the database has not been reached since the start")),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        self.ready()?;
        self.pools.get().await.map_err(|e| unavailable(format!("{e:#}")))
    }

    /// A pooled connection for transactions ([`Session`]).
    async fn session(&self) -> Result<Session, LedgerError> {
        Ok(Session::new(self.client().await?, self.pools.tls().clone()))
    }

    /// The directories, read again where another process changed them.
    async fn fresh_directories(&self, tx: &Tx<'_>) -> anyhow::Result<HashMap<County, Arc<Directory>>> {
        let revisions = rows(tx, "SELECT county, revision FROM directories", &[]).await?;
        self.directories_at(&***tx, revisions.iter().map(|r| (r.get(0), r.get(1))).collect()).await
    }

    /// Reads the directories' revisions and, where one changed, the directory.
    async fn recheck_directories(&self) -> Result<(), LedgerError> {
        let c = self.client().await?;
        let read = async {
            let revisions = c.query("SELECT county, revision FROM directories", &[]).await?;
            self.directories_at(&**c, revisions.iter().map(|r| (r.get(0), r.get(1))).collect()).await
        };
        read.await.map(drop).map_err(|e| unavailable(format!("{e:#}")))
    }

    /// The directories at these revisions (county, revision), read again
    /// where the copy in memory is of another revision.
    async fn directories_at(
        &self,
        c: &impl tokio_postgres::GenericClient,
        revisions: Vec<(String, i64)>,
    ) -> anyhow::Result<HashMap<County, Arc<Directory>>> {
        let known: HashMap<County, i64> =
            self.directories.read().map_err(|_| anyhow!("poisoned"))?.iter().map(|(c, (r, _))| (*c, *r)).collect();
        let changed = changed_directories(c, revisions, &known).await?;
        let mut dirs = self.directories.write().map_err(|_| anyhow!("poisoned"))?;
        dirs.extend(changed);
        Ok(dirs.iter().map(|(c, (_, d))| (*c, d.clone())).collect())
    }

    /// Locks a claim id and reads its record, if recorded (one round trip).
    async fn lock_claim(tx: &Tx<'_>, claim_id: &str) -> anyhow::Result<Option<ClaimRecord>> {
        let params: Params<1> = [&claim_id];
        let found = locked_reads(tx, lock_order(&[claim_id], &[]), [(CLAIM_BY_ID, &params)]).await?;
        found.first().and_then(|rows| rows.first()).map(record_of).transpose()
    }

    /// Decides and records claims in one transaction, in order (a claim, or
    /// a batch).
    ///
    /// A single claim takes two round trips: its claim id and every key it is
    /// expected to read or take locked (one statement, in [`lock_order`]),
    /// its recorded claim and the keys read, with the numbers and the
    /// directories' revisions (after the `BEGIN` sent with them); then the
    /// writes, and the `COMMIT` with them. A batch looks its claim ids up
    /// first (with the revisions) and locks only the keys of the claims not
    /// recorded yet, in a round trip of its own, and is numbered after that:
    /// a batch sent again locks its claim ids alone.
    /// A key only the final decision reads (a directory changed by another
    /// process, an earlier claim of the batch granted, the decision gone
    /// another way) is locked after, in a round trip of its own.
    async fn submit_in(&self, tx: &Tx<'_>, items: &[&ClaimItem]) -> anyhow::Result<Vec<ItemResult>> {
        let single = items.len() == 1;
        let expected = if single {
            let dirs = self.directories.read().map_err(|_| anyhow!("poisoned"))?;
            let held = |item: &ClaimItem| dirs.get(&item.claim.county).map_or_else(empty_directory, |(_, d)| d.clone());
            self.keys_of_new_claims(items, &HashMap::new(), held)?
        } else {
            BTreeSet::new()
        };
        // A single claim is numbered in its locks' round trip; a batch, whose
        // keys are locked in a round trip of their own, after those.
        let (numbered, revisions, existing, mut known) = Self::lock_and_read(tx, items, &expected, single).await?;
        let dirs = self.directories_at(&***tx, revisions).await?;
        let dir_of = |item: &ClaimItem| dirs.get(&item.claim.county).cloned().unwrap_or_else(empty_directory);
        let (first_seq, event_numbers) = match numbered {
            Some(numbers) => numbers,
            None => {
                let keys = self.keys_of_new_claims(items, &existing, dir_of)?;
                known.fetch(tx, &keys, true).await?;
                numbers(tx, items.len(), items.len()).await?
            }
        };

        let mut writes = Writes::default();
        let mut pending: Vec<Pending> = Vec::new();
        let mut events: Vec<EventOf> = Vec::new();
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let id = item.claim.claim_id.as_str();
            if let Some(replayed) = Self::replay_recorded(item, &pending, &existing, &mut events) {
                results.push(replayed);
                continue;
            }
            let dir = dir_of(item);
            let Some(outcome) = self.decide_locked(tx, &mut known, &item.claim, item.person.as_deref(), &dir).await?
            else {
                results.push(ItemResult::Failed);
                continue;
            };
            let mut decision = outcome.decision.clone();
            decision.recorded = true;
            let header = Self::new_header(item, &decision, &outcome);
            if header.status == Status::Approved {
                known.take(id, &header.holdings, &mut writes);
            }
            events.push(EventOf::Decided(pending.len()));
            pending.push(Pending {
                header,
                body: RecordBody {
                    decision: decision.clone(),
                    body_hash: item.body_hash.keyed.clone(),
                    submitted: None,
                    id_masked: item.id_masked.clone(),
                    recorded_by: item.key_id.clone(),
                },
                section: item.claim_section.clone(),
            });
            results.push(ItemResult::New(decision, None));
        }
        let texts = self.write(tx, (first_seq, event_numbers), pending, events, &known, &writes).await?;
        // The new claims' records are numbered in the order they were
        // decided: each new decision is answered with its record's text.
        let new = results.iter_mut().filter(|r| matches!(r, ItemResult::New(..)));
        new.zip(texts).for_each(|(r, t)| r.give_text(t));
        Ok(results)
    }

    /// The keys the claims not in `recorded` are expected to read, or to
    /// take if granted: the first claim of each claim id decided once
    /// against nothing read, with the directory `dir_of` gives. What the
    /// transaction then finds (a claim recorded meanwhile, a directory
    /// changed by another process, a grant earlier in the batch) can only
    /// make it need fewer keys or others, which it locks then.
    fn keys_of_new_claims(
        &self,
        items: &[&ClaimItem],
        recorded: &HashMap<String, ClaimRecord>,
        dir_of: impl Fn(&ClaimItem) -> Arc<Directory>,
    ) -> anyhow::Result<BTreeSet<KeyDigest>> {
        let known = Known::default();
        let mut keys = BTreeSet::new();
        let mut seen = HashSet::new();
        for item in items {
            let id = item.claim.claim_id.as_str();
            if !recorded.contains_key(id) && seen.insert(id) {
                let found = self.decide_once(&known, &item.claim, item.person.as_deref(), &dir_of(item))?;
                keys.extend(found.into_iter().flat_map(|(_, missing)| missing));
            }
        }
        Ok(keys)
    }

    /// Locks every claim id and every one of `keys` (one statement, in
    /// [`lock_order`]), then reads the claims recorded under those ids and
    /// the keys, together with the directories' revisions and, with
    /// `number`, the transaction's numbers (see [`numbers`]): one round
    /// trip. Answers the numbers (with `number`), the revisions, the
    /// recorded claims by claim id, and the keys read.
    async fn lock_and_read(
        tx: &Tx<'_>,
        items: &[&ClaimItem],
        keys: &BTreeSet<KeyDigest>,
        number: bool,
    ) -> anyhow::Result<(Option<Numbers>, Revisions, HashMap<String, ClaimRecord>, Known)> {
        let ids: Vec<&str> = items.iter().map(|i| i.claim.claim_id.as_str()).collect();
        // One claim: the plain lookup (a generic plan of `= ANY($1)` may
        // estimate the array as large and leave the unique index).
        let (lookup, params): (&str, Params<1>) = match ids.as_slice() {
            [one] => (CLAIM_BY_ID, [one]),
            _ => ("SELECT seq, header, body FROM claims WHERE claim_id = ANY($1)", [&ids]),
        };
        let mut known = Known::default();
        let keys = known.unread(keys);
        let digests: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let key_params: Params<1> = [&digests];
        let locks = lock_order(&ids, &keys);
        claims_numbered(items.len())?;
        let events = items.len() as i64;
        let numbered: Params<1> = [&events];
        let (first, first_params): (&str, &[&(dyn ToSql + Sync)]) =
            if number { (NUMBERS_AND_REVISIONS, &numbered) } else { (REVISIONS, &[]) };
        // The numbers after the locks: the transaction id, which numbers the
        // claims, is then taken once the locks are held, so that of two
        // transactions waiting for one lock the one that takes it first
        // records its claims first, in the order a replay decides them.
        let read = if keys.is_empty() {
            locked_reads(tx, locks, [(first, first_params), (lookup, &params)]).await?
        } else {
            locked_reads(tx, locks, [(first, first_params), (lookup, &params), (READ_KEYS, &key_params)]).await?
        };
        let row = first_row(&read[0])?;
        let (numbers, revisions) = match number {
            true => (Some(numbers_of(row)?), revisions_of(row, 2)?),
            false => (None, revisions_of(row, 0)?),
        };
        let mut existing = HashMap::new();
        for row in &read[1] {
            let r = record_of(row)?;
            existing.insert(r.header.claim_id.clone(), r);
        }
        if let Some(rows) = read.get(2) {
            known.absorb(rows.iter(), keys)?;
        }
        Ok((numbers, revisions, existing, known))
    }

    /// A claim already recorded, earlier in this transaction or before it:
    /// its replay (the `replayed` event noted in `events`), or a conflict
    /// when its body differs. `None`: the claim is new.
    fn replay_recorded(
        item: &ClaimItem,
        pending: &[Pending],
        existing: &HashMap<String, ClaimRecord>,
        events: &mut Vec<EventOf>,
    ) -> Option<ItemResult> {
        let id = item.claim.claim_id.as_str();
        let replay = |status| Event {
            seq: 0,
            claim_id: id.to_string(),
            event: "replayed".into(),
            at: Utc::now(),
            key_id: item.key_id.clone(),
            status,
            reason: None,
        };
        if let Some(n) = pending.iter().position(|p| p.header.claim_id == id) {
            let p = &pending[n];
            if !item.body_hash.matches(&p.body.body_hash) {
                return Some(ItemResult::Conflict);
            }
            events.push(EventOf::New(n, replay(p.header.status)));
            return Some(ItemResult::Replayed(p.body.decision.clone()));
        }
        let existing = existing.get(id)?;
        if !item.body_hash.matches(&existing.body.body_hash) {
            return Some(ItemResult::Conflict);
        }
        events.push(EventOf::Stored(existing.seq, replay(existing.header.status)));
        Some(ItemResult::Replayed(existing.body.decision.clone()))
    }

    /// The header of a claim decided in this transaction (its `decided`
    /// event is numbered when the transaction writes).
    fn new_header(item: &ClaimItem, decision: &Decision, outcome: &crate::rules::Outcome) -> RecordHeader {
        RecordHeader {
            claim_id: item.claim.claim_id.as_str().to_string(),
            status: decision.status,
            county: item.claim.county,
            kind: item.claim.kind,
            event_date: item.claim.event_date,
            department: item.claim.department.as_ref().map(|d| d.as_str().to_string()),
            granted: outcome.amount,
            parties: item.claim.party_codes().into_iter().map(str::to_string).collect(),
            decided_event: 0,
            holdings: holdings_of(outcome),
        }
    }

    /// Decides and records claims, trying the transaction again after a
    /// deadlock or a serialisation failure.
    async fn submit_group(&self, items: &[&ClaimItem]) -> Result<Vec<ItemResult>, LedgerError> {
        let mut session = self.session().await?;
        for attempt in 1.. {
            let result = {
                let tx = session.tx()?;
                in_transaction(&tx, self.submit_in(&tx, items)).await
            };
            let result = session.end(result).await;
            if let Some(answer) = answer_or_retry(result, attempt).await {
                return answer;
            }
            if session.is_open() {
                // Not ended: the next attempt takes another connection, once
                // this one is given up (its slot may be the pool's only one).
                drop(session);
                session = self.session().await?;
            }
        }
        unreachable!("answer_or_retry answers by the last attempt")
    }

    /// Decides a claim against what `known` holds; also answers the keys it
    /// read that `known` does not hold yet, and those a grant would take.
    /// `None`: the rules failed on this claim (a bug).
    fn decide_once(
        &self,
        known: &Known,
        claim: &Claim,
        person: Option<&str>,
        dir: &Directory,
    ) -> anyhow::Result<Option<(crate::rules::Outcome, BTreeSet<KeyDigest>)>> {
        let policy = self.policy.county(claim.county);
        let view = KnownView::new(known, None);
        // A bug in the rules must not fail the other claims of a batch.
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decide(claim, person, &view, policy, dir, Utc::now())
        }));
        let outcome = match decided {
            Ok(o) => o?,
            Err(_) => {
                tracing::error!(claim_id = %claim.claim_id.as_str(), kind = %claim.kind, "the rules panicked on a claim; nothing recorded for it");
                return Ok(None);
            }
        };
        let mut missing = view.missing.into_inner();
        // What a grant takes is locked too, even if the rules did not read it.
        missing.extend(all_keys(&holdings_of(&outcome)).filter(|k| !known.fetched.contains(k)));
        Ok(Some((outcome, missing)))
    }

    /// Decides a claim with every key the rules read locked and read under
    /// the lock (the keys a batch's claims read are usually all locked
    /// before: then no round trip is made here).
    async fn decide_locked(
        &self,
        tx: &Tx<'_>,
        known: &mut Known,
        claim: &Claim,
        person: Option<&str>,
        dir: &Directory,
    ) -> anyhow::Result<Option<crate::rules::Outcome>> {
        loop {
            let Some((outcome, missing)) = self.decide_once(known, claim, person, dir)? else { return Ok(None) };
            if missing.is_empty() {
                return Ok(Some(outcome));
            }
            known.fetch(tx, &missing, true).await?;
        }
    }

    /// Numbers the transaction's claims and events and writes everything.
    async fn write(
        &self,
        tx: &Tx<'_>,
        (first_seq, event_numbers): (i64, Vec<i64>),
        mut pending: Vec<Pending>,
        events: Vec<EventOf>,
        known: &Known,
        writes: &Writes,
    ) -> anyhow::Result<Vec<Arc<[u8]>>> {
        if pending.is_empty() && events.is_empty() {
            return Ok(Vec::new());
        }
        let event_rows = Self::number_events(first_seq, event_numbers, events, &mut pending)?;
        // Every statement prepared first (after the first use of a
        // connection, from its cache): a write must go out when it is first
        // polled, ahead of the `COMMIT` that follows it.
        let [insert, usage_st, holders_st, totals_st, events_st] = [
            "INSERT INTO claims (seq, claim_id, county, kind, status, event_date, department, parties, granted, header, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            INSERT_USAGE,
            INSERT_HOLDERS,
            "INSERT INTO totals (key, total) SELECT * FROM unnest($1::bytea[], $2::numeric[])
             ON CONFLICT (key) DO UPDATE SET total = EXCLUDED.total",
            "INSERT INTO events (seq, claim_seq, event) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])",
        ]
        .map(|sql| tx.prepare_cached(sql));
        let (insert, usage_st, holders_st, totals_st, events_st) =
            tokio::try_join!(insert, usage_st, holders_st, totals_st, events_st)?;
        let records = Self::numbered_records(first_seq, pending);
        // The records' decision texts are written as they are encoded, and
        // answered (in record order).
        let (encoded, texts): (Vec<EncodedRecord>, Vec<_>) = records.iter().map(|(r, _)| r.encode_with_text()).unzip();
        let (usage_keys, usage_ids) = key_columns(&writes.usage);
        let (holder_keys, holder_ids) = key_columns(&writes.holders);
        let (total_keys, total_values): (Vec<&[u8]>, Vec<Decimal>) =
            writes.totals.iter().map(|k| (&k[..], known.totals.get(k).copied().unwrap_or_default())).unzip();
        let usage: Params<2> = [&usage_keys, &usage_ids];
        let holders: Params<2> = [&holder_keys, &holder_ids];
        let totals: Params<2> = [&total_keys, &total_values];
        let events: Params<3> = [&event_rows.0, &event_rows.1, &event_rows.2];
        // Everything, then `COMMIT`, in one round trip (the statements are
        // pipelined); an empty list is not sent.
        let mut sends = Self::insert_records(tx, &insert, &records, &encoded);
        for (run, st, params) in [
            (!usage_keys.is_empty(), &usage_st, &usage[..]),
            (!holder_keys.is_empty(), &holders_st, &holders[..]),
            (!total_keys.is_empty(), &totals_st, &totals[..]),
            (!event_rows.0.is_empty(), &events_st, &events[..]),
        ] {
            if run {
                sends.push(Box::pin(tx.execute(st, params)));
            }
        }
        commit_with(tx, sends).await?;
        Ok(texts)
    }

    /// Gives each of the transaction's events its number, in order: a
    /// `decided` event's number goes into its new claim's header; a replay
    /// becomes an event row (its number, its claim's number, the event).
    fn number_events(
        first_seq: i64,
        event_numbers: Vec<i64>,
        events: Vec<EventOf>,
        pending: &mut [Pending],
    ) -> anyhow::Result<(Vec<i64>, Vec<i64>, Vec<String>)> {
        let mut event_rows: (Vec<i64>, Vec<i64>, Vec<String>) = Default::default();
        for (e, seq) in events.into_iter().zip(event_numbers) {
            match e {
                EventOf::Decided(n) => pending[n].header.decided_event = seq as u64,
                EventOf::Stored(claim_seq, mut e) => {
                    e.seq = seq as u64;
                    event_rows.0.push(seq);
                    event_rows.1.push(seq_i64(claim_seq));
                    event_rows.2.push(serde_json::to_string(&e)?);
                }
                EventOf::New(n, mut e) => {
                    e.seq = seq as u64;
                    event_rows.0.push(seq);
                    event_rows.1.push(first_seq + n as i64);
                    event_rows.2.push(serde_json::to_string(&e)?);
                }
            }
        }
        Ok(event_rows)
    }

    /// The transaction's new claims as records, numbered from `first_seq` in
    /// the order they were decided (each with its number for the insert).
    fn numbered_records(first_seq: i64, pending: Vec<Pending>) -> Vec<(ClaimRecord, i64)> {
        pending
            .into_iter()
            .enumerate()
            .map(|(n, p)| {
                let seq = first_seq + n as i64;
                (ClaimRecord { seq: seq as u64, header: p.header, body: p.body, claim_section: Some(p.section) }, seq)
            })
            .collect()
    }

    /// The inserts of the numbered records with their encoded header and
    /// body, one execution of the prepared `insert` each (each sent when
    /// its future is first polled).
    fn insert_records<'f>(
        tx: &'f Tx<'_>,
        insert: &'f tokio_postgres::Statement,
        records: &'f [(ClaimRecord, i64)],
        encoded: &'f [(Vec<u8>, Vec<u8>)],
    ) -> Vec<futures_util::future::BoxFuture<'f, Result<u64, tokio_postgres::Error>>> {
        records
            .iter()
            .zip(encoded)
            .map(|((r, seq), (head, body))| {
                let h = &r.header;
                let insert: futures_util::future::BoxFuture<'f, _> = Box::pin(async move {
                    tx.execute(
                        insert,
                        &[
                            seq,
                            &h.claim_id,
                            &h.county.as_str(),
                            &h.kind.as_str(),
                            &h.status.as_str(),
                            &h.event_date,
                            &h.department,
                            &h.parties,
                            &h.granted,
                            head,
                            body,
                        ],
                    )
                    .await
                });
                insert
            })
            .collect()
    }

    async fn revoke_in(&self, tx: &Tx<'_>, claim_id: &str, reason: &str, key_id: &str) -> anyhow::Result<RevokeResult> {
        let Some(mut r) = Self::lock_claim(tx, claim_id).await? else {
            return Ok(RevokeResult::NotFound);
        };
        match r.header.status {
            Status::Rejected => return Ok(RevokeResult::NotRevocable),
            Status::Revoked => return Ok(RevokeResult::Revoked(Box::new(r.body.decision))),
            Status::Approved => {}
        }
        let h = r.header.holdings.clone();
        // In the order every transaction locks keys in, so that a revocation
        // and a claim taking the same keys cannot deadlock.
        let held: Vec<KeyDigest> = all_keys(&h).collect();
        locked_reads(tx, lock_order(&[], &held), []).await?;
        let keys: Vec<&[u8]> = h.keys.iter().map(|k| &k[..]).collect();
        let (total_keys, amounts): (Vec<&[u8]>, Vec<Decimal>) = h.totals.iter().map(|(k, a)| (&k[..], *a)).unzip();
        let count: Option<&[u8]> = h.count.as_ref().map(|k| &k[..]);
        let usage: Params<2> = [&count, &claim_id];
        let holders: Params<2> = [&keys, &claim_id];
        let totals: Params<2> = [&total_keys, &amounts];
        tokio::try_join!(
            tx.execute("DELETE FROM usage_counts WHERE key = $1 AND claim_id = $2", &usage),
            tx.execute("DELETE FROM holders WHERE key = ANY($1) AND claim_id = $2", &holders),
            tx.execute(
                "UPDATE totals t SET total = GREATEST(t.total - d.amount, 0)
                 FROM unnest($1::bytea[], $2::numeric[]) AS d(key, amount) WHERE t.key = d.key",
                &totals,
            ),
        )?;
        let (_, events) = numbers(tx, 0, 1).await?;
        let event_seq = *events.first().context("no event number was given")?;
        let revoked_at = Utc::now();
        r.header.status = Status::Revoked;
        r.body.decision.status = Status::Revoked;
        r.body.decision.revocation = Some(Revocation { reason: reason.to_string(), revoked_at });
        let event = Event {
            seq: event_seq as u64,
            claim_id: claim_id.to_string(),
            event: "revoked".into(),
            at: revoked_at,
            key_id: key_id.to_string(),
            status: Status::Revoked,
            reason: Some(reason.to_string()),
        };
        let (head, body) = r.encode();
        let seq = seq_i64(r.seq);
        let event = serde_json::to_string(&event)?;
        let record: Params<3> = [&seq, &head, &body];
        let event: Params<3> = [&event_seq, &seq, &event];
        tokio::try_join!(
            tx.execute("UPDATE claims SET status = 'revoked', header = $2, body = $3 WHERE seq = $1", &record),
            tx.execute("INSERT INTO events (seq, claim_seq, event) VALUES ($1, $2, $3)", &event),
        )?;
        Ok(RevokeResult::Revoked(Box::new(r.body.decision)))
    }

    /// The decision a claim would get now, read in `tx`, recording nothing.
    async fn evaluate_in(&self, tx: &Tx<'_>, e: Evaluation) -> anyhow::Result<Decision> {
        let id = e.claim.claim_id.as_str();
        let params: Params<1> = [&id];
        let (dirs, found) =
            tokio::try_join!(self.fresh_directories(tx), async { Ok(rows(tx, CLAIM_BY_ID, &params).await?) },)?;
        let existing = found.first().map(record_of).transpose()?;
        // Only the same body, granted, sets its own record aside.
        let own = match existing {
            Some(r) if r.header.status == Status::Approved && (e.body_hashes)().matches(&r.body.body_hash) => Some(r),
            _ => None,
        };
        let own_ref = own.as_ref().map(|r| (r.header.claim_id.as_str(), &r.header.holdings));
        let dir = dirs.get(&e.claim.county).cloned().unwrap_or_else(empty_directory);
        let policy = self.policy.county(e.claim.county);
        let mut known = Known::default();
        loop {
            let (outcome, missing) = {
                let view = KnownView::new(&known, own_ref);
                let outcome = decide(&e.claim, e.person.as_deref(), &view, policy, &dir, Utc::now())?;
                (outcome, view.missing.into_inner())
            };
            if missing.is_empty() {
                return Ok(outcome.decision);
            }
            known.fetch(tx, &missing, false).await?;
        }
    }

    async fn record_by_id(&self, claim_id: &str) -> Result<Option<ClaimRecord>, LedgerError> {
        let c = self.client().await?;
        let row = c.query_opt(CLAIM_BY_ID, &[&claim_id]).await.map_err(unavailable)?;
        row.as_ref().map(record_of).transpose().map_err(|e| unavailable(format!("{e:#}")))
    }
}

/// A transaction's numbers: the first recording number of its claims and
/// its event numbers (increasing).
type Numbers = (i64, Vec<i64>);

/// The directories' revisions by county.
type Revisions = Vec<(String, i64)>;

/// The first recording number of a transaction's claims (from its
/// transaction id) and `$1` event numbers: [`numbers_of`]' two columns.
macro_rules! numbering {
    () => {
        "pg_current_xact_id()::text::bigint, ARRAY(SELECT nextval('event_numbers') FROM generate_series(1, $1::bigint))"
    };
}

/// The directories' revisions: [`revisions_of`]' two columns.
macro_rules! revisions {
    () => {
        "ARRAY(SELECT county FROM directories ORDER BY county), ARRAY(SELECT revision FROM directories ORDER BY county)"
    };
}

const NUMBERING: &str = concat!("SELECT ", numbering!());
const REVISIONS: &str = concat!("SELECT ", revisions!());
/// Both, in one statement: a single claim's round trip.
const NUMBERS_AND_REVISIONS: &str = concat!("SELECT ", numbering!(), ", ", revisions!());

/// Numbers a transaction of `claims` claims and `events` events.
async fn numbers(tx: &Tx<'_>, claims: usize, events: usize) -> anyhow::Result<Numbers> {
    claims_numbered(claims)?;
    numbers_of(first_row(&rows(tx, NUMBERING, &[&(events as i64)]).await?)?)
}

fn claims_numbered(claims: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        claims < 1 << SEQ_SHIFT,
        "{claims} claims in one transaction is more than a transaction may number"
    );
    Ok(())
}

fn first_row(rows: &[Row]) -> anyhow::Result<&Row> {
    rows.first().context("a statement of one row answered none")
}

/// The first recording number and the event numbers (increasing), from
/// the first two columns of `row`.
fn numbers_of(row: &Row) -> anyhow::Result<Numbers> {
    let xid: i64 = row.try_get(0)?;
    let mut events: Vec<i64> = row.try_get(1)?;
    events.sort_unstable();
    let first = xid
        .checked_shl(SEQ_SHIFT)
        .filter(|s| s >> SEQ_SHIFT == xid)
        .context("transaction ids have outgrown claim numbers")?;
    Ok((first, events))
}

/// The directories' revisions, from the two columns of `row` from `at` on.
fn revisions_of(row: &Row, at: usize) -> anyhow::Result<Revisions> {
    let counties: Vec<String> = row.try_get(at)?;
    let revisions: Vec<i64> = row.try_get(at + 1)?;
    Ok(counties.into_iter().zip(revisions).collect())
}

/// Answers an ended transaction's attempt; after a deadlock or a
/// serialisation failure, waits a little and answers `None` (try again), a
/// bounded number of times.
async fn answer_or_retry<T>(result: anyhow::Result<T>, attempt: u32) -> Option<Result<T, LedgerError>> {
    match result {
        Ok(v) => Some(Ok(v)),
        Err(e) if retryable(&e) && attempt < ATTEMPTS => {
            tracing::debug!(error = %e, attempt, "transaction rolled back; trying again");
            tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
            None
        }
        Err(e) => Some(Err(unavailable(format!("{e:#}")))),
    }
}

fn poisoned() -> LedgerError {
    unavailable("a lock of the directories is poisoned")
}

/// The revision held for a county with no stored directory.
const NO_DIRECTORY: i64 = i64::MIN;

/// How often `GET /v1/policies` (through [`LedgerService::directory`]) reads
/// the directories' revisions: anyone may ask it, so it costs the database
/// at most one small query a second per process.
const DIRECTORY_RECHECK: Duration = Duration::from_secs(1);

/// The directory of a county that has none stored: the empty list, with the
/// version the embedded ledger gives it too.
fn empty_directory() -> Arc<Directory> {
    static EMPTY: std::sync::OnceLock<Arc<Directory>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::new(DirectoryRecord::empty().to_directory())).clone()
}

/// Every stored directory (start-up).
async fn read_directories(
    c: &impl tokio_postgres::GenericClient,
) -> anyhow::Result<Vec<(County, (i64, Arc<Directory>))>> {
    let rows = c.query("SELECT county, revision FROM directories", &[]).await?;
    changed_directories(c, rows.iter().map(|r| (r.get(0), r.get(1))).collect(), &HashMap::new()).await
}

/// The directories at these revisions (county, revision) whose revision
/// differs from `known`'s, read.
async fn changed_directories(
    c: &impl tokio_postgres::GenericClient,
    revisions: Vec<(String, i64)>,
    known: &HashMap<County, i64>,
) -> anyhow::Result<Vec<(County, (i64, Arc<Directory>))>> {
    let mut out = Vec::new();
    for (county, revision) in revisions {
        let Some(county) = County::ALL.iter().copied().find(|c| c.as_str() == county) else { continue };
        if known.get(&county) != Some(&revision) {
            let record = read_directory(c, county).await?;
            out.push((county, (revision, Arc::new(record.to_directory()))));
        }
    }
    Ok(out)
}

async fn read_directory(c: &impl tokio_postgres::GenericClient, county: County) -> anyhow::Result<DirectoryRecord> {
    match c.query_opt("SELECT record FROM directories WHERE county = $1", &[&county.as_str()]).await? {
        Some(row) => serde_json::from_str(row.get(0)).context("a stored directory"),
        None => Ok(DirectoryRecord::empty()),
    }
}

#[async_trait::async_trait]
impl LedgerService for PostgresLedger {
    async fn submit(&self, items: Vec<ClaimItem>) -> Result<Vec<ItemResult>, LedgerError> {
        let items: Vec<&ClaimItem> = items.iter().collect();
        self.submit_group(&items).await
    }

    async fn evaluate(&self, e: Evaluation) -> Result<Decision, LedgerError> {
        // Reads only, no lock and no transaction (under read committed a
        // transaction would not make the reads one snapshot either).
        let session = self.session().await?;
        let tx = session.tx()?;
        self.evaluate_in(&tx, e).await.map_err(|e| unavailable(format!("{e:#}")))
    }

    async fn claim(&self, claim_id: &str) -> Result<Option<ClaimRecord>, LedgerError> {
        self.record_by_id(claim_id).await
    }

    async fn events(&self, claim_id: &str) -> Result<Option<(ClaimRecord, Vec<Event>)>, LedgerError> {
        let c = self.client().await?;
        // The record and its events in one statement: one snapshot.
        let row = c
            .query_opt(
                "SELECT c.seq, c.header, c.body,
                        ARRAY(SELECT e.event FROM events e WHERE e.claim_seq = c.seq ORDER BY e.seq) AS events
                 FROM claims c WHERE c.claim_id = $1",
                &[&claim_id],
            )
            .await
            .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let r = record_of(&row).map_err(|e| unavailable(format!("{e:#}")))?;
        let mut events = vec![r.decided()];
        for e in row.get::<_, Vec<String>>("events") {
            events.push(serde_json::from_str(&e).map_err(|e| unavailable(format!("a stored event: {e}")))?);
        }
        events.sort_by_key(|e| e.seq);
        Ok(Some((r, events)))
    }

    async fn list(&self, filter: ListFilter) -> Result<ListPage, LedgerError> {
        let c = self.client().await?;
        let after = seq_i64(filter.after.unwrap_or(0));
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX - 1) + 1;
        let rows = c
            .query(
                &format!(
                    "SELECT seq, header, body FROM claims
                     WHERE seq > $1 AND {SETTLED}
                       AND ($2::text IS NULL OR county = $2)
                       AND ($3::text IS NULL OR kind = $3)
                       AND ($4::text IS NULL OR status = $4)
                       AND ($5::date IS NULL OR event_date >= $5)
                       AND ($6::date IS NULL OR event_date <= $6)
                       AND ($7::text IS NULL OR department = $7)
                       AND (NOT $10::boolean OR department IS NULL)
                       AND ($8::text IS NULL OR $8 = ANY(parties))
                     ORDER BY seq LIMIT $9"
                ),
                &[
                    &after,
                    &filter.county.map(County::as_str),
                    &filter.kind.map(|k| k.as_str()),
                    &filter.status.map(Status::as_str),
                    &filter.from,
                    &filter.to,
                    &filter.department.clone().flatten(),
                    &filter.scope,
                    &limit,
                    &matches!(filter.department, Some(None)),
                ],
            )
            .await
            .map_err(unavailable)?;
        let mut claims = rows
            .iter()
            .map(record_of)
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| unavailable(format!("{e:#}")))?;
        let next = if claims.len() > filter.limit {
            claims.truncate(filter.limit);
            claims.last().map(|r| r.seq)
        } else {
            None
        };
        Ok(ListPage { claims, next })
    }

    async fn revoke(&self, claim_id: String, reason: String, key_id: String) -> Result<RevokeResult, LedgerError> {
        let mut session = self.session().await?;
        for attempt in 1.. {
            let result = {
                let tx = session.tx()?;
                in_transaction(&tx, self.revoke_in(&tx, &claim_id, &reason, &key_id)).await
            };
            let result = session.end(result).await;
            if let Some(answer) = answer_or_retry(result, attempt).await {
                return answer;
            }
            if session.is_open() {
                // Not ended: the next attempt takes another connection, once
                // this one is given up (its slot may be the pool's only one).
                drop(session);
                session = self.session().await?;
            }
        }
        unreachable!("answer_or_retry answers by the last attempt")
    }

    async fn usage(&self, county: County, person: String, year: i32) -> Result<Vec<UsageEntry>, LedgerError> {
        let key = digest(&LedgerKey::Usage { county, person, year });
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT c.seq, c.header, c.body FROM usage_counts u JOIN claims c ON c.claim_id = u.claim_id
                 WHERE u.key = $1 ORDER BY c.claim_id",
                &[&&key[..]],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let r = record_of(row)?;
                Ok(UsageEntry {
                    claim_id: r.header.claim_id,
                    kind: r.header.kind,
                    event_date: r.header.event_date,
                    status: r.header.status,
                    amount: r.body.decision.amount,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| unavailable(format!("{e:#}")))
    }

    fn submissions(&self, filter: ReplayFilter) -> Result<Submissions, LedgerError> {
        self.ready()?;
        Ok(replay(self.direct.clone(), filter))
    }

    /// As the database has it: another replica may have changed it since
    /// this one last decided a claim. The revisions are read again at most
    /// every [`DIRECTORY_RECHECK`] (one small query; a directory is read
    /// only when its revision changed), so a directory put through another
    /// replica is named here within a second.
    async fn directory(&self, county: County) -> Result<Arc<Directory>, LedgerError> {
        self.ready()?;
        let due = {
            let mut checked = self.directories_checked.lock().map_err(|_| poisoned())?;
            let due = checked.is_none_or(|at| at.elapsed() >= DIRECTORY_RECHECK);
            if due {
                *checked = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            if let Err(e) = self.recheck_directories().await {
                // The next call reads them again.
                *self.directories_checked.lock().map_err(|_| poisoned())? = None;
                return Err(e);
            }
        }
        let dirs = self.directories.read().map_err(|_| poisoned())?;
        Ok(dirs.get(&county).map_or_else(empty_directory, |(_, d)| d.clone()))
    }

    async fn directory_record(&self, county: County) -> Result<DirectoryRecord, LedgerError> {
        let c = self.client().await?;
        read_directory(&**c, county).await.map_err(|e| unavailable(format!("{e:#}")))
    }

    async fn put_directory(&self, county: County, record: DirectoryRecord) -> Result<DirectoryRecord, LedgerError> {
        let c = self.client().await?;
        let text = serde_json::to_string(&record).map_err(unavailable)?;
        let row = c
            .query_one(
                "INSERT INTO directories (county, revision, record) VALUES ($1, 1, $2)
                 ON CONFLICT (county) DO UPDATE SET revision = directories.revision + 1, record = EXCLUDED.record
                 RETURNING revision",
                &[&county.as_str(), &text],
            )
            .await
            .map_err(unavailable)?;
        let revision: i64 = row.get(0);
        if let Ok(mut dirs) = self.directories.write() {
            dirs.insert(county, (revision, Arc::new(record.to_directory())));
        }
        Ok(record)
    }

    async fn report(&self, county: County, year: i32) -> Result<ReportTotals, LedgerError> {
        let (Some(from), Some(to)) = (NaiveDate::from_ymd_opt(year, 1, 1), NaiveDate::from_ymd_opt(year, 12, 31))
        else {
            return Ok(ReportTotals::default());
        };
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT kind, department, count(*), sum(granted) FROM claims
                 WHERE county = $1 AND status = 'approved' AND event_date BETWEEN $2 AND $3
                 GROUP BY kind, department",
                &[&county.as_str(), &from, &to],
            )
            .await
            .map_err(unavailable)?;
        let mut totals = ReportTotals::default();
        for row in rows {
            let kind: String = row.get(0);
            let department: Option<String> = row.get(1);
            let count = u64::try_from(row.get::<_, i64>(2)).unwrap_or_default();
            let amount: Decimal = row.get(3);
            let by_kind = Kind::parse(&kind).map(|kind| totals.by_kind.entry(kind).or_default());
            let by_department =
                totals.by_department.entry(department.unwrap_or_else(|| crate::ledger::UNASSIGNED.into())).or_default();
            for t in by_kind.into_iter().chain([by_department]) {
                t.count += count;
                t.amount += amount;
            }
        }
        Ok(totals)
    }

    async fn probe(&self) -> Result<(), LedgerError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO readiness (id, probed_at) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET probed_at = now()",
            &[],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    fn stats(&self) -> LedgerStats {
        LedgerStats::Database(self.pools.stats())
    }

    fn on_failure(&self, f: Box<dyn Fn() + Send + Sync>) {
        // A database that fails once serving is retried by the pool, and the
        // claims meanwhile get 503; only one that refused the start, first
        // reached after it, stops the service (`prepare_until_ready`).
        if let Ok(mut slot) = self.on_refusal.lock() {
            *slot = Some(f);
        }
    }

    fn failed(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    async fn shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        self.pools.close();
    }
}

/// The claims `filter` selects, read page by page on a thread and a
/// connection of their own, up to the claims recorded when it starts.
fn replay(target: tls::Target, filter: ReplayFilter) -> Submissions {
    let read = read_on_thread(2 * REPLAY_PAGE as usize, move |out| async move {
        let c = connect_to(&target).await?;
        // The claims settled now; later ones are not read.
        let end: i64 =
            c.query_one(&format!("SELECT coalesce(max(seq), 0) FROM claims WHERE {SETTLED}"), &[]).await?.get(0);
        let mut after = 0i64;
        loop {
            let rows = c
                .query(
                    "SELECT seq, claim_id, body FROM claims
                     WHERE seq > $1 AND seq <= $2 AND county = $3 AND status <> 'revoked'
                       AND event_date BETWEEN $4 AND $5
                     ORDER BY seq LIMIT $6",
                    &[&after, &end, &filter.county.as_str(), &filter.from, &filter.to, &REPLAY_PAGE],
                )
                .await?;
            let Some(last) = rows.last() else { return Ok(()) };
            after = last.get(0);
            for row in rows {
                let seq: i64 = row.get(0);
                let section = ClaimRecord::claim_section(seq as u64, row.get(2))?.to_vec();
                let item = Submitted { seq: seq as u64, claim_id: row.get(1), claim: StoredClaim::Section(section) };
                if out.send(Ok(item)).is_err() {
                    // The reader stopped reading.
                    return Ok(());
                }
            }
        }
    });
    Box::new(read.map(|r| r.map_err(|e| unavailable(format!("{e:#}")))))
}

/// Runs `read` on a thread with a runtime of its own: what it sends comes
/// out of the iterator, then its failure, if it fails.
fn read_on_thread<T, F>(
    capacity: usize,
    read: impl FnOnce(crossbeam_channel::Sender<anyhow::Result<T>>) -> F + Send + 'static,
) -> crossbeam_channel::IntoIter<anyhow::Result<T>>
where
    T: Send + 'static,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    std::thread::spawn(move || {
        let failed = tx.clone();
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(read(tx)));
        if let Err(e) = result {
            let _ = failed.send(Err(e));
        }
    });
    rx.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that declines TLS (`sslmode=prefer` asks first), reads a
    /// connection's start-up message, answers `reply` and closes; its port.
    fn fake_server(reply: Vec<u8>) -> u16 {
        fake_server_answering_tls(b"N", reply)
    }

    /// A server that answers a request for TLS with `tls` (`N`, or `S` and
    /// what follows it) and, after `N`, reads the start-up message and
    /// answers `reply`; it then closes. Its port.
    fn fake_server_answering_tls(tls: &'static [u8], reply: Vec<u8>) -> u16 {
        use std::io::{Read, Write};
        /// A message's length word and the rest of it.
        fn message(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).ok()?;
            let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
            s.read_exact(&mut rest).ok()?;
            Some(rest)
        }
        const SSL_REQUEST: [u8; 4] = 80877103u32.to_be_bytes();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("an address").port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut first = message(&mut s);
                if first.as_deref() == Some(&SSL_REQUEST[..]) && s.write_all(tls).is_ok() {
                    first = if tls == b"N" { message(&mut s) } else { None };
                    std::thread::sleep(Duration::from_millis(200));
                }
                if first.is_some() {
                    let _ = s.write_all(&reply);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        port
    }

    /// A fatal ErrorResponse with this SQLSTATE.
    fn error_response(code: &str) -> Vec<u8> {
        let mut fields = Vec::new();
        for (t, v) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', "refused by the test")] {
            fields.push(t);
            fields.extend_from_slice(v.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut m = vec![b'E'];
        m.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
        m.extend(fields);
        m
    }

    fn failed_connect(port: u16) -> anyhow::Error {
        let url = format!("postgres://someone@127.0.0.1:{port}/somedb");
        on_own_runtime(async move { connect(&url).await.map(drop) }).expect_err("no connection")
    }

    /// A database that does not answer (yet) is waited for; one that answers
    /// and refuses, or the client's own error, is not.
    #[test]
    fn only_a_database_that_does_not_answer_is_waited_for() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
        let e = failed_connect(closed);
        assert!(unreachable(&e), "a closed port: {e:#}");
        let e = failed_connect(fake_server(Vec::new()));
        assert!(unreachable(&e), "closed during the handshake: {e:#}");
        for (code, waited) in
            [("57P03", true), ("53300", true), ("08006", true), ("57P01", true), ("28P01", false), ("3D000", false)]
        {
            let e = failed_connect(fake_server(error_response(code)));
            assert_eq!(unreachable(&e), waited, "{code}: {e:#}");
        }
        // The server asks for a password the URL does not have.
        let e = failed_connect(fake_server(vec![b'R', 0, 0, 0, 8, 0, 0, 0, 3]));
        assert!(!unreachable(&e), "a password missing: {e:#}");
        // TLS: a server gone during the handshake is waited for; one that
        // answers with something other than TLS refuses.
        let e = failed_connect(fake_server_answering_tls(b"S", Vec::new()));
        assert!(unreachable(&e), "closed during the TLS handshake: {e:#}");
        let e = failed_connect(fake_server_answering_tls(b"SHTTP/1.1 400 Bad Request\r\n\r\n", Vec::new()));
        assert!(!unreachable(&e), "not TLS after S: {e:#}");
        assert!(format!("{e:#}").contains("or set sslmode=disable"), "the default sslmode is named: {e:#}");
    }

    /// Claim ids' locks come before keys' whatever their numbers, each
    /// group sorted and without repeats: every transaction takes them in
    /// one order (a revocation locks its claim id, then its keys).
    #[test]
    fn claim_ids_are_locked_before_keys_each_in_order() {
        let keys: Vec<KeyDigest> = (0u8..40).map(|i| [i; 16]).collect();
        let ids = ["C-2", "C-1", "C-2", "C-3"];
        let order = lock_order(&ids, &keys);
        let (claims, rest) = order.split_at(3);
        let mut expected_claims: Vec<i64> = ["C-1", "C-2", "C-3"].iter().map(|id| claim_lock(id)).collect();
        expected_claims.sort_unstable();
        assert_eq!(claims, expected_claims);
        let mut expected_keys: Vec<i64> = keys.iter().map(key_lock).collect();
        expected_keys.sort_unstable();
        assert_eq!(rest, expected_keys);
        // Some key sorts below some claim id, and still comes after it.
        assert!(rest.iter().any(|k| claims.iter().any(|c| k < c)));
        assert_eq!(lock_order(&[], &[keys[1], keys[0], keys[1]]).len(), 2);
    }
}
