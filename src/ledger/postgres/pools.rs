//! Database connections kept by the thread that uses them.
//!
//! A tokio-postgres connection is driven by a task on the runtime of the
//! thread that opened it; a query from another thread goes to that task
//! through a channel and its answer comes back through another, waking the
//! other thread twice per round trip. Each HTTP worker (a thread with a
//! runtime of its own) therefore gets a pool of its own, whose connections
//! it opens and uses: a query wakes no other thread. Measured with two
//! replicas of two workers on two cores: 4–8 % more claims a second than
//! with one pool shared by both workers (means of five rounds;
//! `scripts/bench.d/RESULTS.md`).
//!
//! `store.pool_size` is split among the workers (floor, the remainder to
//! the first), so that a replica never holds more connections than it: the
//! first threads to ask get a slot each, as many slots as workers (or as
//! connections, when there are fewer). A thread without a slot (one beyond
//! the workers, or a worker started again after another thread took its
//! slot) uses the slots' pools. A worker whose connections are all in use
//! takes an idle one of another worker's before it waits, so that a long
//! request (a batch) on one worker does not hold up the others' share of
//! work. A thread that ends gives its slot back.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;
use std::time::Duration;

use anyhow::{anyhow, Context};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};

use super::tls::{Target, Tls};
use crate::ledger::ConnectionStats;

/// Tells one [`ThreadPools`] from another in a thread's cache.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Each slot: the thread holding it and its pool.
type Slots = Vec<Option<(ThreadId, Pool)>>;

/// A thread's slots, given back when the thread ends.
struct Held(Vec<HeldSlot>);

struct HeldSlot {
    pools: u64,
    thread: ThreadId,
    pool: Pool,
    slots: Weak<Mutex<Slots>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for h in self.0.drain(..) {
            let Some(slots) = h.slots.upgrade() else { continue };
            if let Ok(mut slots) = slots.lock() {
                for slot in slots.iter_mut() {
                    if slot.as_ref().is_some_and(|(t, _)| *t == h.thread) {
                        *slot = None;
                    }
                }
            }
            // Its connections were driven by this thread's runtime.
            h.pool.close();
        }
    }
}

thread_local! {
    static HELD: RefCell<Held> = const { RefCell::new(Held(Vec::new())) };
}

/// The connections of one ledger, a pool per worker thread.
pub struct ThreadPools {
    id: u64,
    config: tokio_postgres::Config,
    tls: Tls,
    connect_timeout: Duration,
    /// The size of each slot's pool (they add up to `store.pool_size`).
    sizes: Vec<usize>,
    slots: Arc<Mutex<Slots>>,
}

impl ThreadPools {
    /// `pool_size` connections in all, split among `workers` threads.
    pub fn new(target: Target, pool_size: usize, workers: usize, connect_timeout: Duration) -> Self {
        let Target { config, tls } = target;
        let pool_size = pool_size.max(1);
        let n = workers.clamp(1, pool_size);
        let sizes = (0..n).map(|i| pool_size / n + usize::from(i < pool_size % n)).collect();
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config,
            tls,
            connect_timeout,
            sizes,
            slots: Arc::new(Mutex::new(vec![None; n])),
        }
    }

    /// A connection: the calling thread's own, else another thread's idle
    /// one, else the first of its own to come free.
    pub async fn get(&self) -> anyhow::Result<Object> {
        let own = self.own()?;
        let s = own.status();
        if s.available == 0 && s.size >= s.max_size {
            // Only an idle connection of another pool is taken (none is
            // opened there): it stays driven by its own thread.
            let now = Timeouts { wait: Some(Duration::ZERO), ..own.timeouts() };
            for other in self.others()? {
                if other.status().available > 0 {
                    if let Ok(c) = other.timeout_get(&now).await {
                        return Ok(c);
                    }
                }
            }
        }
        own.get().await.map_err(|e| anyhow!("no database connection: {e}"))
    }

    /// The calling thread's pool: its slot's, a free slot's, or (no slot
    /// free) the first slot's.
    fn own(&self) -> anyhow::Result<Pool> {
        let cached = HELD.with(|h| h.borrow().0.iter().find(|s| s.pools == self.id).map(|s| s.pool.clone()));
        if let Some(pool) = cached {
            return Ok(pool);
        }
        let me = std::thread::current().id();
        let mut slots = self.slots.lock().map_err(|_| anyhow!("poisoned"))?;
        let Some(free) = slots.iter().position(Option::is_none) else {
            return slots.iter().flatten().map(|(_, p)| p.clone()).next().context("no connection pool");
        };
        let pool = self.build(self.sizes[free])?;
        slots[free] = Some((me, pool.clone()));
        drop(slots);
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            // Pools of ledgers closed since are let go.
            h.0.retain(|s| !s.pool.is_closed());
            h.0.push(HeldSlot { pools: self.id, thread: me, pool: pool.clone(), slots: Arc::downgrade(&self.slots) });
        });
        Ok(pool)
    }

    /// Every slot's pool but the calling thread's.
    fn others(&self) -> anyhow::Result<Vec<Pool>> {
        let me = std::thread::current().id();
        let slots = self.slots.lock().map_err(|_| anyhow!("poisoned"))?;
        Ok(slots.iter().flatten().filter(|(t, _)| *t != me).map(|(_, p)| p.clone()).collect())
    }

    /// Closes every pool: connections in use close when given back, and no
    /// new one is opened.
    pub fn close(&self) {
        if let Ok(slots) = self.slots.lock() {
            slots.iter().flatten().for_each(|(_, p)| p.close());
        }
    }

    /// The connections of every slot's pool; `max` is `store.pool_size`.
    pub fn stats(&self) -> ConnectionStats {
        let mut stats = ConnectionStats { max: self.sizes.iter().sum(), ..ConnectionStats::default() };
        if let Ok(slots) = self.slots.lock() {
            for (_, pool) in slots.iter().flatten() {
                let s = pool.status();
                stats.open += s.size;
                stats.idle += s.available;
                // deadpool counts as waiting every user beyond the open
                // connections, those opening one included: only those
                // beyond the most the pool opens wait for one to come free.
                stats.waiting += s.waiting.saturating_sub(s.max_size.saturating_sub(s.size));
            }
        }
        stats
    }

    /// The TLS connector of every connection.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    fn build(&self, size: usize) -> anyhow::Result<Pool> {
        let fast = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = Manager::from_config(self.config.clone(), self.tls.clone(), fast);
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.connect_timeout))
            .create_timeout(Some(self.connect_timeout))
            .recycle_timeout(Some(self.connect_timeout))
            .build()
            .context("the database connection pool")
    }
}

impl Drop for ThreadPools {
    /// The pools cached by other threads outlive this; their connections do not.
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(pool_size: usize, workers: usize) -> ThreadPools {
        // No connection is opened until a pool is asked for one.
        let target = super::super::tls::target("postgres://nobody@127.0.0.1:1/none").unwrap();
        ThreadPools::new(target, pool_size, workers, Duration::from_millis(10))
    }

    /// The sizes of the slots taken, in slot order.
    fn taken(p: &ThreadPools) -> Vec<usize> {
        p.slots.lock().unwrap().iter().flatten().map(|(_, pool)| pool.status().max_size).collect()
    }

    fn on_another_thread(p: &ThreadPools) -> usize {
        std::thread::scope(|s| s.spawn(|| p.own().unwrap().status().max_size).join().unwrap())
    }

    /// The pools' figures 200 ms after `n` requests for a connection that
    /// the server never lets through.
    async fn stats_while_asking(p: &ThreadPools, n: usize) -> ConnectionStats {
        let asking = futures_util::future::join_all((0..n).map(|_| p.get()));
        let stats = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            p.stats()
        };
        tokio::select! {
            _ = asking => unreachable!("the server let a connection through"),
            s = stats => s,
        }
    }

    #[test]
    fn a_request_opening_a_connection_is_not_counted_as_waiting_for_one() {
        // A server that takes the connection and never answers: the
        // connection stays being opened.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("postgres://nobody@127.0.0.1:{}/none", silent.local_addr().unwrap().port());
        let p = ThreadPools::new(super::super::tls::target(&url).unwrap(), 2, 1, Duration::from_secs(30));
        assert_eq!(p.stats(), ConnectionStats { max: 2, ..ConnectionStats::default() });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Two opening (the pool's most), one waiting for them.
        let stats = runtime.block_on(stats_while_asking(&p, 3));
        assert_eq!(stats, ConnectionStats { open: 0, idle: 0, max: 2, waiting: 1 });
    }

    #[test]
    fn open_opening_and_waiting_requests_are_told_apart() {
        use std::io::{Read, Write};
        // A server that completes the first connection's start-up (trust:
        // authentication ok, ready for a query) and leaves every later one
        // being opened.
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for (n, stream) in server.incoming().enumerate() {
                let Ok(mut s) = stream else { return };
                if n == 0 {
                    let mut len = [0u8; 4];
                    s.read_exact(&mut len).unwrap();
                    let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                    s.read_exact(&mut startup).unwrap();
                    s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I']).unwrap();
                }
                held.push(s);
            }
        });
        let url = format!("postgres://nobody@127.0.0.1:{port}/none?sslmode=disable");
        let p = ThreadPools::new(super::super::tls::target(&url).unwrap(), 3, 1, Duration::from_secs(30));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let first = p.get().await.expect("the first connection opens");
            // One open and in use, two opening (up to the pool's most), one
            // waiting for a connection to come free (deadpool's own count
            // says three).
            let stats = stats_while_asking(&p, 3).await;
            assert_eq!(stats, ConnectionStats { open: 1, idle: 0, max: 3, waiting: 1 });
            drop(first);
        });
    }

    #[test]
    fn the_pool_size_is_split_among_the_workers_and_never_exceeded() {
        for (size, workers, split) in [
            (16, 2, vec![8, 8]),
            (5, 2, vec![3, 2]),
            (16, 6, vec![3, 3, 3, 3, 2, 2]),
            (2, 4, vec![1, 1]),
            (3, 1, vec![3]),
        ] {
            let p = pools(size, workers);
            assert_eq!(p.sizes, split, "{size} connections for {workers} workers");
            assert_eq!(p.sizes.iter().sum::<usize>(), size);
        }
    }

    #[test]
    fn each_thread_keeps_its_own_slot_and_a_thread_without_one_shares() {
        let p = pools(3, 2);
        assert_eq!(p.own().unwrap().status().max_size, 2);
        p.own().unwrap();
        assert_eq!(taken(&p), vec![2], "asked again, the same thread's slot");
        // A thread that ends gives its slot back; one alive keeps it.
        assert_eq!(on_another_thread(&p), 1);
        assert_eq!(taken(&p), vec![2], "the other thread ended: its slot is free again");
        let (hold, release) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let p = &p;
            s.spawn(move || {
                assert_eq!(p.own().unwrap().status().max_size, 1);
                release.recv().unwrap();
            });
            while taken(p).len() < 2 {
                std::thread::yield_now();
            }
            assert_eq!(on_another_thread(p), 2, "no slot free: the first slot's pool");
            assert_eq!(taken(p), vec![2, 1], "never more pools than slots");
            hold.send(()).unwrap();
        });
    }

    #[test]
    fn a_closed_ledgers_pools_are_let_go_by_the_threads_that_held_them() {
        let first = pools(1, 1);
        let held = first.own().unwrap();
        drop(first);
        assert!(held.is_closed());
        let second = pools(1, 1);
        second.own().unwrap();
        HELD.with(|h| {
            let h = h.borrow();
            assert_eq!(h.0.len(), 1, "only the open ledger's pool stays held");
            assert_eq!(h.0[0].pools, second.id);
        });
    }
}
