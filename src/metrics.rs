//! Prometheus metrics: requests by route and status with latency histograms,
//! decisions by county, kind and status, and the ledger's own figures (the
//! embedded store's state and syncs, or a replica's database connections).
//! Labels never carry personal data.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::configuration::Backend;
use crate::ledger::LedgerStats;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub decisions: IntCounterVec,
    /// The ledger's own figures, read at each scrape.
    ledger: LedgerGauges,
}

/// Each backend's gauges (only its own are exposed).
enum LedgerGauges {
    /// The embedded store's materialised state and durability.
    Embedded {
        claims: IntGauge,
        usage_keys: IntGauge,
        unique_keys: IntGauge,
        state_bytes: IntGauge,
        fsyncs: IntGauge,
        store_bytes: IntGauge,
    },
    /// The replica's database connections.
    Database { open: IntGauge, idle: IntGauge, max: IntGauge, waiting: IntGauge },
}

impl Metrics {
    pub fn new(backend: Backend) -> anyhow::Result<Self> {
        let registry = Registry::new_custom(Some("subsidy".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method and status"),
            &["route", "method", "status"],
        )?;
        let latency_buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency in seconds")
                .buckets(latency_buckets),
            &["route", "method"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new("decisions_total", "Recorded decisions by county, kind and status"),
            &["county", "kind", "status"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        let gauge = |name: &str, help: &str| -> anyhow::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let ledger = match backend {
            Backend::Sled => LedgerGauges::Embedded {
                claims: gauge("ledger_claims", "Recorded claims")?,
                usage_keys: gauge("ledger_usage_keys", "Person-years with counted grants in the ledger's state")?,
                unique_keys: gauge("ledger_unique_keys", "Unique keys held in the ledger's state")?,
                state_bytes: gauge("ledger_state_bytes", "Approximate bytes of the ledger's in-memory state")?,
                fsyncs: gauge("ledger_fsyncs", "fsync/fdatasync calls that made groups durable since start")?,
                store_bytes: gauge("ledger_store_bytes", "Bytes of the store on disk")?,
            },
            Backend::Postgres => LedgerGauges::Database {
                open: gauge("ledger_db_connections", "Open database connections of this replica (idle or in use)")?,
                idle: gauge("ledger_db_connections_idle", "Open database connections of this replica now idle")?,
                max: gauge(
                    "ledger_db_connections_max",
                    "The most database connections this replica keeps (store.pool_size)",
                )?,
                waiting: gauge("ledger_db_waiting", "Requests of this replica waiting for a database connection")?,
            },
        };
        Ok(Self { registry, requests, latency, decisions, ledger })
    }

    pub fn observe_ledger(&self, s: &LedgerStats) {
        fn set(g: &IntGauge, v: impl TryInto<i64>) {
            g.set(v.try_into().unwrap_or(i64::MAX));
        }
        match (&self.ledger, s) {
            (
                LedgerGauges::Embedded { claims, usage_keys, unique_keys, state_bytes, fsyncs, store_bytes },
                LedgerStats::Embedded { state, fsyncs: synced, size_on_disk },
            ) => {
                set(claims, state.claims);
                set(usage_keys, state.usage_keys);
                set(unique_keys, state.unique_keys);
                set(state_bytes, state.bytes);
                set(fsyncs, *synced);
                set(store_bytes, *size_on_disk);
            }
            (LedgerGauges::Database { open, idle, max, waiting }, LedgerStats::Database(c)) => {
                set(open, c.open);
                set(idle, c.idle);
                set(max, c.max);
                set(waiting, c.waiting);
            }
            // A ledger of another backend than the metrics were made for: nothing to show.
            _ => {}
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
