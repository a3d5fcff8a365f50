//! Prometheus metrics: requests by route and status with latency histograms,
//! decisions by county, kind and status, and the fill of the ledger's key
//! filter. Labels never carry personal data.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub decisions: IntCounterVec,
    /// The ledger's materialised state and durability, read at each scrape.
    ledger_claims: IntGauge,
    ledger_usage_keys: IntGauge,
    ledger_unique_keys: IntGauge,
    ledger_state_bytes: IntGauge,
    ledger_fsyncs: IntGauge,
    ledger_store_bytes: IntGauge,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
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
        Ok(Self {
            ledger_claims: gauge("ledger_claims", "Recorded claims")?,
            ledger_usage_keys: gauge("ledger_usage_keys", "Person-years with counted grants in the ledger's state")?,
            ledger_unique_keys: gauge("ledger_unique_keys", "Unique keys held in the ledger's state")?,
            ledger_state_bytes: gauge("ledger_state_bytes", "Approximate bytes of the ledger's in-memory state")?,
            ledger_fsyncs: gauge("ledger_fsyncs", "fsync/fdatasync calls that made groups durable since start")?,
            ledger_store_bytes: gauge("ledger_store_bytes", "Bytes of the store on disk")?,
            registry,
            requests,
            latency,
            decisions,
        })
    }

    pub fn observe_ledger(&self, s: &crate::ledger::LedgerStats) {
        let set = |g: &IntGauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.ledger_claims, s.state.claims);
        set(&self.ledger_usage_keys, s.state.usage_keys as u64);
        set(&self.ledger_unique_keys, s.state.unique_keys as u64);
        set(&self.ledger_state_bytes, s.state.bytes as u64);
        set(&self.ledger_fsyncs, s.fsyncs);
        set(&self.ledger_store_bytes, s.size_on_disk);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
