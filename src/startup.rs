//! Builds the application: store, policy, writer, routes, server.

use secrecy::ExposeSecret;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, Error, HttpResponse, HttpServer};
use anyhow::Context;
use prometheus::{Histogram, IntCounter};
use tracing::Instrument;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::KeyTable;
use crate::configuration::{Backend, Settings, StoreSettings};
use crate::ledger::{EmbeddedLedger, LedgerService, PostgresLedger, Store};
use crate::metrics::Metrics;
use crate::privacy::{Pseudonymizer, Sealer};
use crate::problem::ApiError;
use crate::routes::{self, AppState};

/// Batches decided at once by one process (others wait for a permit).
const BATCHES_AT_ONCE: usize = 2;

pub struct Application {
    port: u16,
    server: Server,
    /// The metrics listener's port and server, when it has its own.
    metrics: Option<(u16, Server)>,
    ledger: Arc<dyn LedgerService>,
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Application {
    /// Opens the store, loads and checks the policy, starts the writer and
    /// binds the listener (port 0 picks a free port).
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let policy = Arc::new(settings.policy.load()?);
        // 0: a worker per available core (actix's own default).
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            n => n,
        };
        // The most claims this process's transactions hold at once: its full
        // batches, and a claim on each pooled connection.
        let claims_at_once =
            BATCHES_AT_ONCE.saturating_mul(settings.server.max_batch_claims).saturating_add(settings.store.pool_size);
        let ledger = open_ledger(&settings.store, workers, claims_at_once, policy.clone())?;
        let keys = KeyTable::new(&settings.auth.keys, &settings.rate_limit)?;
        let metrics = Arc::new(Metrics::new(settings.store.backend)?);
        let state = web::Data::new(AppState {
            server: settings.server.clone(),
            policy,
            ledger: ledger.clone(),
            pseudonymizer: Pseudonymizer::new(settings.privacy.id_hash_secret.expose_secret()),
            sealer: Sealer::new(settings.privacy.id_hash_secret.expose_secret()),
            metrics,
            batch_permits: tokio::sync::Semaphore::new(BATCHES_AT_ONCE),
            simulations: Default::default(),
        });
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| format!("binding {}:{}", settings.server.host, settings.server.port))?;
        let port = listener.local_addr()?.port();
        let metrics = match settings.server.metrics_address.as_str() {
            "" => None,
            address => Some(metrics_server(address, state.clone())?),
        };
        let metrics_on_api = metrics.is_none();
        let keys = web::Data::new(keys);
        let openapi = crate::openapi::document();
        let s = &settings.server;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(keys.clone())
                .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::NotFound(e.to_string()).into()))
                .wrap(from_fn(routes::holders::hide_foreign_holders))
                .wrap(from_fn(observe))
                .configure(|cfg| routes_config(cfg, metrics_on_api))
                .service(web::redirect("/swagger-ui", "/swagger-ui/"))
                .service(web::redirect("/reports", "/reports/"))
                .service(SwaggerUi::new("/swagger-ui/{_:.*}").url("/openapi.json", openapi.clone()))
                .default_service(web::to(not_found))
        })
        .listen(listener)?
        .client_request_timeout(Duration::from_millis(s.client_request_timeout_ms))
        // A client that closes its side of the connection has gone: its
        // request is dropped (a simulation stops at its next chunk; a claim
        // already handed to the embedded ledger's writer is recorded all the
        // same, one in a PostgreSQL transaction is rolled back unless its
        // `COMMIT` was sent; either way a retry finds out). HTTP clients
        // close a connection when they give up, not to end a request (its
        // length does that).
        .h1_allow_half_closed(false)
        .keep_alive(Duration::from_secs(s.keep_alive_secs))
        .shutdown_timeout(s.shutdown_timeout_secs);
        // The count the ledger's connections were split for.
        server = server.workers(workers);
        let server = server.run();
        if settings.store.stop_on_failure {
            let handle = server.handle();
            ledger.on_failure(Box::new(move || {
                tracing::error!("the store failed: stopping so that the supervisor restarts the service");
                // The stop command is sent now; its completion is awaited by run_until_stopped.
                drop(handle.stop(true));
            }));
        }
        Ok(Self { port, server, metrics, ledger })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics listener's port, when `server.metrics_address` gives it one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    /// Serves until SIGTERM/SIGINT (actix stops accepting and finishes the
    /// requests in flight), then stops the writer and flushes the store.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let metrics = self.metrics.map(|(_, server)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let result = self.server.await;
        // The metrics listener serves as long as the API's does.
        if let Some((handle, task)) = metrics {
            handle.stop(true).await;
            match task.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
                Err(e) => tracing::warn!(error = %e, "the metrics listener's task failed"),
                Ok(Ok(())) => {}
            }
        }
        self.ledger.shutdown().await;
        tracing::info!("stopped; store flushed");
        result.context("server error")?;
        if self.ledger.failed() {
            anyhow::bail!("stopped because the store failed (see the log above); restart once it is repaired");
        }
        Ok(())
    }
}

/// The ledger backend the settings choose, started.
fn open_ledger(
    store: &StoreSettings,
    workers: usize,
    claims_at_once: usize,
    policy: Arc<crate::policy::Policy>,
) -> anyhow::Result<Arc<dyn LedgerService>> {
    Ok(match store.backend {
        Backend::Sled => {
            let s = Store::open(&store.path, store.cache_capacity_bytes)?;
            EmbeddedLedger::start(s, policy, store.group_commit_max)?
        }
        Backend::Postgres => PostgresLedger::start(
            store.url.expose_secret(),
            store.pool_size,
            workers,
            Duration::from_millis(store.connect_timeout_ms),
            claims_at_once,
            policy,
        )?,
    })
}

/// 405 with the `Allow` header naming the resource's methods (RFC 9110 §15.5.6).
fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        let mut resp = actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed);
        resp.headers_mut().insert(actix_web::http::header::ALLOW, HeaderValue::from_static(allow));
        resp
    })
}

/// The metrics listener: `GET /metrics` alone, to anyone who reaches it, on
/// one worker; it stops with the API's server (no signal handling of its own).
fn metrics_server(address: &str, state: web::Data<AppState>) -> anyhow::Result<(u16, Server)> {
    let listener = TcpListener::bind(address).with_context(|| format!("binding the metrics listener {address}"))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(resource("/metrics", "GET").route(web::get().to(routes::health::metrics)))
            .default_service(web::to(not_found))
    })
    .listen(listener)?
    .workers(1)
    .disable_signals()
    .run();
    Ok((port, server))
}

/// A resource whose other methods get 405 with `Allow: {allow}`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(method_not_allowed(allow))
}

/// The routes: fixed paths first, in order of traffic, then those with
/// parameters. The router tries resources in this order, and a pattern with
/// a parameter is matched by a regular expression, so a busy fixed path
/// should not wait behind them. A fixed path that a pattern would match too
/// (`/v1/claims/batch`) stays ahead of it either way.
fn routes_config(cfg: &mut web::ServiceConfig, metrics_on_api: bool) {
    use routes::*;
    if metrics_on_api {
        cfg.service(resource("/metrics", "GET").route(web::get().to(health::metrics)));
    }
    cfg.service(
        resource("/v1/claims", "GET, POST").route(web::post().to(claims::submit)).route(web::get().to(claims::list)),
    )
    .service(resource("/v1/evaluations", "POST").route(web::post().to(claims::evaluate)))
    .service(resource("/v1/claims/batch", "POST").route(web::post().to(claims::batch)))
    .service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
    .service(resource("/readyz", "GET").route(web::get().to(health::readyz)))
    .service(resource("/v1/usage/query", "POST").route(web::post().to(usage::query)))
    .service(resource("/v1/policies", "GET").route(web::get().to(policies::list)))
    .service(resource("/v1/reason-codes", "GET").route(web::get().to(policies::reason_codes)))
    .service(resource("/v1/simulations", "POST").route(web::post().to(simulations::simulate)))
    .service(resource("/reports/", "GET").route(web::get().to(reports::page)))
    .service(resource("/reports/app.js", "GET").route(web::get().to(reports::script)))
    .service(resource("/v1/claims/{claim_id}", "GET").route(web::get().to(claims::get)))
    .service(resource("/v1/claims/{claim_id}/revocation", "POST").route(web::post().to(claims::revoke)))
    .service(resource("/v1/claims/{claim_id}/events", "GET").route(web::get().to(claims::events)))
    .service(resource("/v1/claims/{claim_id}/submission", "GET").route(web::get().to(claims::submission)))
    .service(resource("/v1/policies/{county}", "GET").route(web::get().to(policies::get)))
    .service(
        resource("/v1/directories/{county}/trade-friction-enterprises", "GET, PUT")
            .route(web::get().to(directories::get))
            .route(web::put().to(directories::put)),
    )
    .service(resource("/v1/reports/{county}/{year}", "GET").route(web::get().to(reports::get)));
}

/// A request id unique across restarts: a random per-process prefix and a counter
/// (cheaper than a random UUID per request).
fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    format!("{prefix}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The route label of a request: its resource pattern (`/v1/claims/{claim_id}`),
/// never the concrete path. Static routes are remembered after their first
/// router lookup (their number is bounded by the routes registered: only a
/// path equal to its own pattern is kept).
fn route_label(req: &ServiceRequest) -> Cow<'static, str> {
    static STATIC: OnceLock<RwLock<HashMap<String, &'static str>>> = OnceLock::new();
    let known = STATIC.get_or_init(Default::default);
    if let Some(label) = known.read().ok().and_then(|m| m.get(req.path()).copied()) {
        return Cow::Borrowed(label);
    }
    match req.match_pattern() {
        Some(pattern) if pattern == req.path() => {
            let label: &'static str = Box::leak(pattern.into_boxed_str());
            if let Ok(mut m) = known.write() {
                m.insert(label.to_string(), label);
            }
            Cow::Borrowed(label)
        }
        Some(pattern) => Cow::Owned(pattern),
        None => Cow::Borrowed("unmatched"),
    }
}

/// The method label: the standard methods by name, any other as `other`
/// (a client can send any token as a method; labels must stay bounded).
fn method_label(m: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ];
    KNOWN.iter().find(|k| *k == m).map_or("other", |k| k.as_str())
}

/// The request counter and latency histogram of a static route, method and
/// status, looked up once per thread (a labelled lookup hashes the labels and
/// takes a lock on every request).
fn route_metrics(
    m: &Metrics,
    route: &'static str,
    method: &'static str,
    status: StatusCode,
) -> (IntCounter, Histogram) {
    // Keyed by the registry too: servers in one process (tests) each have their own.
    type Handles = HashMap<(usize, &'static str, &'static str, StatusCode), (IntCounter, Histogram)>;
    thread_local! {
        static HANDLES: RefCell<Handles> = RefCell::new(HashMap::new());
    }
    HANDLES.with(|h| {
        h.borrow_mut()
            .entry((std::ptr::from_ref(m) as usize, route, method, status))
            .or_insert_with(|| {
                (
                    m.requests.with_label_values(&[route, method, status.as_str()]),
                    m.latency.with_label_values(&[route, method]),
                )
            })
            .clone()
    })
}

/// Request id, tracing span, metrics and one log line per request; never the body.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(next_request_id);
    let route = route_label(&req);
    let method = method_label(req.method());
    let method_name = req.method().clone();
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.metrics.clone());
    let span = tracing::info_span!("request", request_id = %request_id, method = %method_name, route = %route);
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status();
    let elapsed = started.elapsed();
    if let Some(m) = metrics {
        let (requests, latency) = match route {
            Cow::Borrowed(r) => route_metrics(&m, r, method, status),
            Cow::Owned(ref r) => {
                (m.requests.with_label_values(&[r, method, status.as_str()]), m.latency.with_label_values(&[r, method]))
            }
        };
        requests.inc();
        latency.observe(elapsed.as_secs_f64());
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    span.in_scope(|| {
        tracing::info!(status = status.as_u16(), latency_ms = elapsed.as_millis() as u64, "request completed")
    });
    Ok(res)
}

/// Any path the service does not have.
async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound("no such resource".into()))
}
