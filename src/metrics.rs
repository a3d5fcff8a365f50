//! Prometheus metrics: requests by route and status with latency histograms,
//! decisions by county, kind and status, and the fill of the ledger's key
//! filter. Labels never carry personal data.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub decisions: IntCounterVec,
    /// Keys in the ledger's Bloom filter, and the number it was planned for
    /// (past it, false positives and so store reads grow until a restart).
    pub filter_keys: IntGauge,
    pub filter_planned_keys: IntGauge,
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
        let filter_keys = IntGauge::new("ledger_filter_keys", "Keys in the ledger's key filter (approximate)")?;
        let filter_planned_keys =
            IntGauge::new("ledger_filter_planned_keys", "Keys the ledger's key filter was planned for at start")?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(filter_keys.clone()))?;
        registry.register(Box::new(filter_planned_keys.clone()))?;
        Ok(Self { registry, requests, latency, decisions, filter_keys, filter_planned_keys })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
