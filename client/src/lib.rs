//! A Rust client of subsidy-service (`../shared/spec/API.md`), and the
//! layout of the roster files read by `subsidy`, the CLI built on it.
//!
//! Requests and answers are the server's own types (re-exported here):
//! [`Decision`], [`BatchItem`], [`ClaimPage`], [`UsageAnswer`], [`Report`],
//! and every error answer is an [`Error::Api`] carrying the [`Problem`] with
//! its stable [`ErrorCode`] and the [`FieldError`]s of a `422`.
//!
//! Every call is retried on timeouts, connection errors, `503` and `429`
//! with the same body, with exponential backoff up to a bound
//! ([`ClientBuilder::max_retries`]). This is safe: a claim carries its
//! `claim_id`, so a retry of a submission that was recorded replays it (the
//! same decision, nothing counted twice), and a repeated revocation is
//! harmless.
//!
//! ```no_run
//! use subsidy_client::{Client, County, ErrorCode, ListFilter, TryStreamExt};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), subsidy_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080", "local-platform-key")?;
//!
//! let claim = json!({
//!     "claim_id": "WY-2020-PX-000123", "county": "wuyi", "kind": "qualification_training",
//!     "event_date": "2020-06-15",
//!     "applicant": {"id_number": "330723199005060038", "name": "张三", "local_hukou": true,
//!                   "employed_in_county": true, "groups": ["enterprise_employee"]},
//!     "details": {"occupation_code": "6-31-01-03", "level": "intermediate",
//!                 "certificate_number": "ZS0000000004", "payee": "person"}
//! });
//! let answer = client.submit(&claim).await?;
//! println!("{} {} (replayed: {})", answer.decision.status.as_str(), answer.decision.amount, answer.replayed);
//!
//! // A whole class at once: split into requests of at most 1,000 claims,
//! // one result per claim in input order.
//! let results = client.batch(&[claim.clone()]).await?;
//! assert!(results[0].decision.is_some());
//!
//! // Typed errors: the problem's code and every bad field.
//! match client.submit(&json!({"claim_id": "X-1"})).await {
//!     Err(e) if e.code() == Some(ErrorCode::ValidationFailed) => {
//!         for f in e.field_errors() {
//!             eprintln!("{} {}: {}", f.field, f.code, f.message);
//!         }
//!     }
//!     other => { other?; }
//! }
//!
//! // Every recorded claim of a county, page after page.
//! let filter = ListFilter { county: Some(County::Wuyi), ..Default::default() };
//! let mut claims = std::pin::pin!(client.list(filter));
//! while let Some(c) = claims.try_next().await? {
//!     println!("{} {}", c.claim_id, c.decision.status.as_str());
//! }
//! # Ok(())
//! # }
//! ```

pub mod roster;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use futures_util::Stream;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

pub use futures_util::{StreamExt, TryStreamExt};
pub use subsidy_service::domain::{County, Kind};
pub use subsidy_service::problem::{ErrorCode, FieldError, Problem};
pub use subsidy_service::routes::claims::{BatchItem, ClaimPage, ClaimSummary};
pub use subsidy_service::routes::reports::{DepartmentLine, KindLine, Report};
pub use subsidy_service::routes::usage::{UsageAnswer, UsageClaim};
pub use subsidy_service::rules::{Decision, Reason, Status, Step, Usage};

/// Most claims the service takes in one batch request.
pub const MAX_BATCH: usize = 1000;

/// What can go wrong with a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service answered with a problem (`application/problem+json`).
    #[error("{}", problem_text(.0))]
    Api(Box<Problem>),
    /// The service answered an error status without a readable problem.
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    /// No answer: connection refused or lost, timeout (after the retries).
    #[error("no answer from the service: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is not what the contract says.
    #[error("unexpected answer (HTTP {status}): {message}")]
    Unexpected { status: u16, message: String },
    /// A base URL or an argument the client cannot use.
    #[error("{0}")]
    Invalid(String),
}

fn problem_text(p: &Problem) -> String {
    let mut s = format!("{} {}: {}", p.status, p.code.as_str(), p.detail);
    for f in &p.errors {
        s.push_str(&format!("\n  {} {}: {}", if f.field.is_empty() { "/" } else { &f.field }, f.code, f.message));
    }
    s
}

impl Error {
    /// The problem's stable code, if the service answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        self.problem().map(|p| p.code)
    }

    /// The problem the service answered, if any.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Api(p) => Some(p),
            _ => None,
        }
    }

    /// Every bad field of a `422 VALIDATION_FAILED` (empty otherwise).
    pub fn field_errors(&self) -> &[FieldError] {
        self.problem().map_or(&[], |p| &p.errors)
    }

    /// The HTTP status of an error answer (`None` when there was no answer).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(p) => Some(p.status),
            Self::Http { status, .. } | Self::Unexpected { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
            Self::Invalid(_) => None,
        }
    }
}

/// The answer to a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub decision: Decision,
    /// `true` when the service already held this claim (same id and body):
    /// the stored decision, nothing counted twice. A retry of a submission
    /// whose first answer was lost also replays.
    pub replayed: bool,
}

/// Filters of `GET /v1/claims` (the server's own query type); `limit` is the
/// page size (1..500, default 100); `cursor` is set by [`Client::list`].
pub use subsidy_service::routes::claims::ListQuery as ListFilter;

/// When and how often a call is tried again.
#[derive(Debug, Clone)]
struct RetryPolicy {
    max_retries: u32,
    initial: Duration,
    max: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based): doubling from
    /// `initial`, at most `max`, with up to a quarter of jitter; a
    /// `Retry-After` of the service is honoured up to `max`.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max);
        }
        let base = self.initial.saturating_mul(2u32.saturating_pow(attempt)).min(self.max);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        base.saturating_sub(jitter)
    }
}

/// Builds a [`Client`] with its timeouts, retries and batch size.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    key: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    batch_size: usize,
    user_agent: String,
}

impl ClientBuilder {
    /// Time for one whole request and its answer (default 60 s; a batch of
    /// 1,000 claims is decided in well under a second on a healthy service).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Time to open a connection (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Retries after the first try (default 6; 0 disables retrying).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.retry.max_retries = n;
        self
    }

    /// First wait between tries and the most any wait lasts (default 250 ms
    /// doubling up to 8 s: with 6 retries a call gives up after about 16 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry.initial = initial;
        self.retry.max = max.max(initial);
        self
    }

    /// Claims per batch request (1..=1000, default 1000).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// The `User-Agent` sent (default `subsidy-client/<version>`).
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let mut base =
            Url::parse(&self.base_url).map_err(|e| Error::Invalid(format!("base URL `{}`: {e}", self.base_url)))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!("base URL `{}`: expected http:// or https://", self.base_url)));
        }
        if base.scheme() == "https" && !cfg!(feature = "rustls") {
            return Err(Error::Invalid(format!(
                "base URL `{}`: this build speaks plain HTTP only; build subsidy-client with `--features rustls` for https",
                self.base_url
            )));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            return Err(Error::Invalid(format!("batch size {}: a batch has 1 to {MAX_BATCH} claims", self.batch_size)));
        }
        #[cfg(feature = "rustls")]
        {
            // Ring is the crypto of this build; a provider installed before stays.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            .build()
            .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        Ok(Client { http, base, key: self.key, retry: self.retry, batch_size: self.batch_size })
    }
}

/// A client of one service with one API key. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: String,
    retry: RetryPolicy,
    batch_size: usize,
}

impl Client {
    /// A client with the default timeouts and retries; `base_url` is the
    /// service's root, e.g. `http://127.0.0.1:8080`.
    pub fn new(base_url: impl Into<String>, key: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url, key).build()
    }

    pub fn builder(base_url: impl Into<String>, key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            key: key.into(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy { max_retries: 6, initial: Duration::from_millis(250), max: Duration::from_secs(8) },
            batch_size: MAX_BATCH,
            user_agent: concat!("subsidy-client/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// The service's root URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut s) = url.path_segments_mut() {
            s.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request, trying again on timeouts, connection errors, `503`
    /// and `429` with the same request.
    async fn send(&self, make: impl Fn() -> RequestBuilder) -> Result<reqwest::Response, Error> {
        let mut attempt = 0;
        loop {
            let outcome = make().bearer_auth(&self.key).send().await;
            let retry: Option<Option<Duration>> = match &outcome {
                Ok(r) if matches!(r.status(), StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) => {
                    Some(retry_after(r.headers()))
                }
                Ok(_) => None,
                Err(e) if e.is_timeout() || e.is_connect() || e.is_request() => Some(None),
                Err(_) => None,
            };
            match retry {
                Some(hint) if attempt < self.retry.max_retries => {
                    tokio::time::sleep(self.retry.delay(attempt, hint)).await;
                    attempt += 1;
                }
                _ => return outcome.map_err(Error::Transport),
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Vec<u8>>,
        query: Option<&ListFilter>,
    ) -> Result<(StatusCode, HeaderMap, T), Error> {
        let url = self.url(segments);
        let resp = self
            .send(|| {
                let mut r = self.http.request(method.clone(), url.clone()).header(ACCEPT, "application/json");
                if let Some(q) = query {
                    r = r.query(q);
                }
                if let Some(b) = &body {
                    r = r.header(CONTENT_TYPE, "application/json").body(b.clone());
                }
                r
            })
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            let value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Unexpected { status: status.as_u16(), message: e.to_string() })?;
            return Ok((status, headers, value));
        }
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) => Err(Error::Api(Box::new(p))),
            Err(_) => Err(Error::Http {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(2000).collect(),
            }),
        }
    }

    /// `POST /v1/claims`: adjudicates and records one claim.
    pub async fn submit<C: Serialize>(&self, claim: &C) -> Result<Submitted, Error> {
        let (_, headers, decision) = self.call(Method::POST, &["v1", "claims"], Some(to_body(claim)?), None).await?;
        let replayed = headers.get("idempotent-replayed").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(Submitted { decision, replayed })
    }

    /// `POST /v1/claims/batch`: adjudicates claims in order, in requests of
    /// at most the batch size (1,000), one after the other (each claim sees
    /// the earlier ones' effects). One result per claim, in input order: a
    /// decision (`replayed` when the service already held it) or a problem.
    ///
    /// If a request fails after its retries, the error is returned; the
    /// requests before it are recorded, and calling again with the same
    /// claims replays them.
    pub async fn batch<C: Serialize>(&self, claims: &[C]) -> Result<Vec<BatchItem>, Error> {
        let mut out = Vec::with_capacity(claims.len());
        for chunk in claims.chunks(self.batch_size) {
            out.extend(self.batch_chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn batch_chunk<C: Serialize>(&self, chunk: &[C]) -> Result<Vec<BatchItem>, Error> {
        #[derive(Serialize)]
        struct Body<'a, C> {
            claims: &'a [C],
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            results: Vec<BatchItem>,
        }
        let body = Body { claims: chunk };
        let (status, _, answer): (_, _, Answer) =
            self.call(Method::POST, &["v1", "claims", "batch"], Some(to_body(&body)?), None).await?;
        if answer.results.len() != chunk.len() {
            return Err(Error::Unexpected {
                status: status.as_u16(),
                message: format!("{} results for {} claims", answer.results.len(), chunk.len()),
            });
        }
        Ok(answer.results)
    }

    /// `POST /v1/evaluations`: the decision a claim would get now; records nothing.
    pub async fn evaluate<C: Serialize>(&self, claim: &C) -> Result<Decision, Error> {
        Ok(self.call(Method::POST, &["v1", "evaluations"], Some(to_body(claim)?), None).await?.2)
    }

    /// `GET /v1/claims/{claim_id}`: the stored decision.
    pub async fn get(&self, claim_id: &str) -> Result<Decision, Error> {
        Ok(self.call(Method::GET, &["v1", "claims", claim_id], None, None).await?.2)
    }

    /// `GET /v1/claims`: one page; pass the previous page's `next_cursor`.
    pub async fn list_page(&self, filter: &ListFilter, cursor: Option<&str>) -> Result<ClaimPage, Error> {
        let query = ListFilter { cursor: cursor.map(str::to_string), ..filter.clone() };
        Ok(self.call(Method::GET, &["v1", "claims"], None, Some(&query)).await?.2)
    }

    /// Every claim the filter selects, in recording order, fetched a page at a
    /// time as the stream is read.
    pub fn list(&self, filter: ListFilter) -> impl Stream<Item = Result<ClaimSummary, Error>> + '_ {
        struct State {
            filter: ListFilter,
            cursor: Option<String>,
            buffer: VecDeque<ClaimSummary>,
            done: bool,
        }
        let start = State { filter, cursor: None, buffer: VecDeque::new(), done: false };
        futures_util::stream::try_unfold(start, move |mut st| async move {
            loop {
                if let Some(c) = st.buffer.pop_front() {
                    return Ok(Some((c, st)));
                }
                if st.done {
                    return Ok(None);
                }
                let page = self.list_page(&st.filter, st.cursor.as_deref()).await?;
                st.cursor = page.next_cursor;
                st.done = st.cursor.is_none();
                st.buffer.extend(page.claims);
            }
        })
    }

    /// Every claim the filter selects, collected.
    pub async fn list_all(&self, filter: ListFilter) -> Result<Vec<ClaimSummary>, Error> {
        self.list(filter).try_collect().await
    }

    /// `POST /v1/claims/{claim_id}/revocation`: withdraws a grant; repeating it is harmless.
    pub async fn revoke(&self, claim_id: &str, reason: &str) -> Result<Decision, Error> {
        let body = json!({ "reason": reason });
        Ok(self.call(Method::POST, &["v1", "claims", claim_id, "revocation"], Some(to_body(&body)?), None).await?.2)
    }

    /// `POST /v1/usage/query`: a person's counted grants in a county and year.
    pub async fn usage(&self, county: County, id_number: &str, year: i32) -> Result<UsageAnswer, Error> {
        let body = json!({ "county": county, "id_number": id_number, "year": year });
        Ok(self.call(Method::POST, &["v1", "usage", "query"], Some(to_body(&body)?), None).await?.2)
    }

    /// `GET /v1/reports/{county}/{year}`: granted beside the plan figures.
    pub async fn report(&self, county: County, year: i32) -> Result<Report, Error> {
        let year = year.to_string();
        Ok(self.call(Method::GET, &["v1", "reports", county.as_str(), &year], None, None).await?.2)
    }
}

fn to_body<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Invalid(format!("the body cannot be written as JSON: {e}")))
}

/// The seconds of a `Retry-After` header.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl fmt::Display for Submitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.decision.claim_id, self.decision.status.as_str(), self.decision.amount)?;
        if self.replayed {
            f.write_str(" (replayed)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound_and_honours_retry_after() {
        let p = RetryPolicy { max_retries: 6, initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        for (attempt, base) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (20, 1000)] {
            let d = p.delay(attempt, None);
            let base = Duration::from_millis(base);
            assert!(d <= base && d >= base.mul_f64(0.75), "{attempt}: {d:?}");
        }
        assert_eq!(p.delay(0, Some(Duration::from_secs(3))), Duration::from_secs(1));
        assert_eq!(p.delay(5, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn urls_keep_the_base_path_and_escape_segments() {
        let c = Client::new("http://127.0.0.1:8080/subsidy", "k").unwrap();
        assert_eq!(c.url(&["v1", "claims", "a/b c"]).as_str(), "http://127.0.0.1:8080/subsidy/v1/claims/a%2Fb%20c");
        let c = Client::new("http://127.0.0.1:8080", "k").unwrap();
        assert_eq!(c.url(&["v1", "claims"]).as_str(), "http://127.0.0.1:8080/v1/claims");
        assert!(Client::builder("http://x", "k").batch_size(1001).build().is_err());
        assert!(Client::new("ftp://x", "k").is_err());
    }
}
