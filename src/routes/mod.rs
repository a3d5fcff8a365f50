//! HTTP handlers, one file per resource. Handlers parse, call the rules or the
//! ledger, and render; they never compute an amount.

pub mod claims;
pub mod directories;
pub mod health;
pub mod holders;
pub mod policies;
pub mod reports;
pub mod simulations;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{http::header, web, HttpRequest};
use futures_util::StreamExt;
use serde_json::Value;

use crate::auth::Caller;
use crate::configuration::ServerSettings;
use crate::domain::{parse_claim, parse_new_claim, Claim, ClaimJson, County, FromJson, Json, Node};
use crate::ledger::record::ClaimPart;
use crate::ledger::{ClaimItem, LedgerError, LedgerService};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::privacy::{Pseudonymizer, Sealer};
pub use crate::problem::only_fields;
use crate::problem::{ApiError, FieldError};

/// What every handler shares; built once at start.
pub struct AppState {
    pub server: ServerSettings,
    pub policy: Arc<Policy>,
    pub ledger: Arc<dyn LedgerService>,
    pub pseudonymizer: Pseudonymizer,
    pub sealer: Sealer,
    pub metrics: Arc<Metrics>,
    /// Batches read and parsed at once: the writer takes them one group at a
    /// time anyway, so more would only hold megabytes of parsed bodies.
    pub batch_permits: tokio::sync::Semaphore,
    /// Counties with a simulation running (one at a time per county).
    pub simulations: simulations::Running,
}

/// Most of an oversized body we read (and drop) so the client sees our 413
/// instead of a reset connection; beyond this the connection is closed.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a JSON body: `415` unless `application/json`, `413` over `limit`,
/// `400 MALFORMED_JSON` unless it parses as JSON.
pub async fn read_json(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<Value, ApiError> {
    json_value(&read_body_bytes(req, payload, limit).await?)
}

/// Reads a JSON body as a [`Node`] borrowed from its text (cheaper to build
/// than a [`Value`], and read by the same readers with the same outcome);
/// the same refusals as [`read_json`], with the same messages.
pub fn json_node(body: &[u8]) -> Result<Node<'_>, ApiError> {
    // `Node::parse` refuses exactly the texts a `Value` refuses; the
    // refusal's message is the `Value` parser's.
    Node::parse(body).or_else(|_| json_value(body).map(Node::from))
}

/// The body's bytes: `415` unless `application/json`, `413` over `limit`.
pub async fn read_body_bytes(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json")) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map_or(Duration::from_secs(10), |s| Duration::from_millis(s.server.body_timeout_ms));
    let too_large = declared.is_some_and(|n| n > limit);
    let mut body = web::BytesMut::new();
    let mut seen = 0usize;
    let read = async {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::MalformedJson(e.to_string()))?;
            seen += chunk.len();
            if too_large || seen > limit {
                if seen > DRAIN_LIMIT {
                    break;
                }
                continue;
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<(), ApiError>(())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| ApiError::RequestTimeout)??;
    if too_large || seen > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(body.freeze())
}

/// A body's JSON as a [`Value`], or `400 MALFORMED_JSON`.
pub fn json_value(body: &[u8]) -> Result<Value, ApiError> {
    // The body is checked as UTF-8 once, so that serde_json does not check
    // each string again; bytes that are not UTF-8 go to serde_json's own
    // reader, which names their line and column.
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|e| ApiError::MalformedJson(e.to_string()))
}

impl AppState {
    /// Parses a claim body and checks what the policy data knows of it.
    pub fn parse<J: ClaimJson>(&self, body: &J) -> Result<Claim, ApiError> {
        // The department is checked against the county's plan even when other
        // fields are bad, so that one answer names every bad field.
        let county = body.get("county").and_then(Json::as_str).and_then(County::parse);
        let department = body.get("department").and_then(Json::as_str);
        let bad_department = match (county, department) {
            (Some(c), Some(dep)) if self.policy.county(c).department(dep).is_none() => Some(FieldError::new(
                "/department",
                "invalid_value",
                "not a department of the county's plan; see GET /v1/policies/{county}",
            )),
            _ => None,
        };
        match (parse_new_claim(body), bad_department) {
            (Ok(claim), None) => Ok(claim),
            (Ok(_), Some(e)) => Err(ApiError::Validation(vec![e])),
            (Err(errs), None) => Err(ApiError::Validation(errs)),
            (Err(mut errs), Some(e)) => {
                if !errs.iter().any(|x| x.field == "/department") {
                    errs.push(e);
                }
                Err(ApiError::Validation(errs))
            }
        }
    }

    /// A claim ready for the ledger, refused if an institution key may not
    /// submit it: a person's claim must name the key's credit code as its
    /// institution; an organisation's claim (an award, an
    /// investment, contest funding, online training) is the organisation's
    /// own, and only its key (or the platform) submits it: another party
    /// would spend the organisation's cumulative cap and once-only awards.
    ///
    /// A claim refused only for what a *new* claim is refused for (the
    /// intake checks, a department outside the county's plan), which reads
    /// as a recorded claim reads, is [`Prepared::ReplayOnly`]: a retry of a
    /// claim recorded before such a refusal (by an earlier release, or
    /// under earlier policy data) still replays, as idempotency promises.
    pub fn prepare(&self, body: Node<'_>, caller: &Caller) -> Result<Prepared, ApiError> {
        let (claim, refused) = match self.parse(&body) {
            Ok(claim) => (claim, None),
            Err(refusal) => match parse_claim(&body) {
                Ok(claim) => (claim, Some(refusal)),
                Err(_) => return Err(refusal),
            },
        };
        let item = self.item(claim, body, caller);
        match (item, refused) {
            (Ok(item), None) => Ok(Prepared::Ready(item)),
            (Ok(item), Some(refusal)) => Ok(Prepared::ReplayOnly(item, refusal)),
            // Refused either way: the body's own refusal first.
            (Err(e), refused) => Err(refused.unwrap_or(e)),
        }
    }

    fn item(&self, claim: Claim, body: Node<'_>, caller: &Caller) -> Result<ClaimItem, ApiError> {
        if let Some(scope) = caller.scope() {
            let claimant = claim.applicant.is_none().then_some(claim.organization.as_ref()).flatten();
            let may = match claimant {
                Some(organization) => organization.credit_code.as_str() == scope,
                None => claim.party_codes().contains(&scope),
            };
            if !may {
                return Err(ApiError::Forbidden(format!(
                    "An institution key may submit only claims naming its credit code {scope} as institution or \
                     organisation, and an organisation's claim only as that organisation"
                )));
            }
        }
        let person = claim.applicant.as_ref().map(|a| self.pseudonymizer.person_key(&a.id_number));
        let id_masked = claim.applicant.as_ref().map(|a| a.id_number.masked());
        let body_hash = self.pseudonymizer.body_hashes(&body);
        let claim_section = ClaimPart {
            body_hash: body_hash.keyed.clone(),
            submitted: Some(self.sealer.seal_node(body, claim.claim_id.as_str(), id_masked.as_deref())),
            id_masked: id_masked.clone(),
            recorded_by: caller.key_id.clone(),
        }
        .encode()
        .into();
        Ok(ClaimItem { claim, body_hash, person, id_masked, claim_section, key_id: caller.key_id.clone() })
    }
}

/// A claim prepared for the ledger.
pub enum Prepared {
    /// A claim to decide and record (or to replay, when its id is recorded).
    Ready(ClaimItem),
    /// A claim that only replays: refused as a new claim (the refusal), it
    /// goes to the ledger only when its id is recorded already, and is
    /// answered with that record's decision when its body is the recorded
    /// one, with the refusal otherwise. Nothing new is recorded from it.
    ReplayOnly(ClaimItem, ApiError),
}

/// Reads a request body into its typed form, naming every bad field.
pub fn read_body<T: FromJson>(body: &Value) -> Result<T, ApiError> {
    let mut errs = Vec::new();
    match T::from_json(body, "", &mut errs) {
        Some(value) if errs.is_empty() => Ok(value),
        _ => Err(ApiError::Validation(errs)),
    }
}

pub fn ledger_error(e: LedgerError) -> ApiError {
    tracing::error!(error = %e, "ledger unavailable");
    ApiError::StoreUnavailable
}

pub fn internal(e: anyhow::Error) -> ApiError {
    ApiError::Internal(e)
}

/// A county named in a path; unknown counties are not found.
pub fn county_path(s: &str) -> Result<County, ApiError> {
    County::parse(s).ok_or_else(|| ApiError::NotFound(format!("no county `{s}`; counties are wuyi and changxing")))
}
