//! `/v1/claims`, `/v1/claims/batch`, `/v1/evaluations` and a claim's
//! revocation and history.

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{
    internal, json_node, ledger_error, only_fields, read_body, read_body_bytes, read_json, AppState, Prepared,
};
use crate::auth::{Caller, Operation};
use crate::domain::{peek_claim_id, County, FromJson, Kind, Node};
use crate::domain::{Claim, RevocationReason};
use crate::ledger::{
    ClaimItem, ClaimRecord, DepartmentFilter, Evaluation, Event, ItemResult, ListFilter, RevokeResult,
};
use crate::privacy::Sealer;
use crate::problem::{ApiError, FieldError, Problem};
use crate::request_type;
use crate::rules::{Decision, Status};

fn count_decision(state: &AppState, county: &str, kind: &str, d: &Decision) {
    state.metrics.decisions.with_label_values(&[county, kind, d.status.as_str()]).inc();
}

/// Adjudicate one claim and record it.
#[utoipa::path(
    post, path = "/v1/claims", operation_id = "submitClaim", tag = "claims",
    request_body(content = Claim, description = "A claim; `details` has the shape of its `kind`"),
    responses(
        (status = 201, description = "New decision, recorded and durable", body = Decision),
        (status = 200, description = "Replay of the same claim id with the same body (header `Idempotent-Replayed: true`): the stored decision, nothing counted twice", body = Decision,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role not allowed, or an institution that is not a party to the claim", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Same claim id, different body (`CLAIM_ID_CONFLICT`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid claim: every bad field listed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable: not acknowledged, so not counted on; a write that failed may still have reached the store. Retry with the same claim_id (a recorded claim replays, 200)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "submit_claim", skip_all, fields(key_id = %caller.key_id))]
pub async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::SubmitClaim)?;
    let body = read_body_bytes(&req, payload, state.server.claim_body_limit).await?;
    let (item, refused) = match state.prepare(json_node(&body)?, &caller)? {
        Prepared::Ready(item) => (item, None),
        Prepared::ReplayOnly(item, refusal) if recorded(&state, &item).await? => (item, Some(refusal)),
        Prepared::ReplayOnly(_, refusal) => return Err(refusal),
    };
    let (county, kind) = (item.claim.county, item.claim.kind);
    let result = state.ledger.submit(vec![item]).await.map_err(ledger_error)?.pop();
    match result {
        Some(ItemResult::New(d, text)) => {
            count_decision(&state, county.as_str(), kind.as_str(), &d);
            Ok(match text {
                // The decision's text as stored.
                Some(text) => {
                    HttpResponse::Created().content_type(ContentType::json()).body(web::Bytes::from_owner(text))
                }
                None => HttpResponse::Created().json(d),
            })
        }
        Some(ItemResult::Replayed(d)) => Ok(HttpResponse::Ok().insert_header(("Idempotent-Replayed", "true")).json(d)),
        Some(ItemResult::Conflict) => Err(match refused {
            // Another body under the recorded id: the body's own refusal.
            Some(refusal) => refusal,
            None => {
                ApiError::ClaimIdConflict(Node::parse(&body).ok().and_then(|n| peek_claim_id(&n)).unwrap_or_default())
            }
        }),
        Some(ItemResult::Failed) | None => Err(internal(anyhow::anyhow!("the ledger gave no decision"))),
    }
}

/// Whether a claim's id is recorded already: a [`Prepared::ReplayOnly`]
/// claim goes to the ledger only then (a recorded claim is never decided
/// again, so nothing new is recorded from it).
async fn recorded(state: &AppState, item: &ClaimItem) -> Result<bool, ApiError> {
    Ok(state.ledger.claim(item.claim.claim_id.as_str()).await.map_err(ledger_error)?.is_some())
}

/// One item of a batch answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// `true` when this item replayed an earlier identical submission.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// A batch of claims (the items are read one by one: a bad item is answered
/// in its place and does not fail the batch).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to `server.max_batch_claims` claims (1000 by default), decided in
    /// order. Each item is validated on its own and answered in `results`.
    #[schema(min_items = 1)]
    pub claims: Vec<Claim>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchItem>,
}

impl BatchResponse {
    /// The answer's JSON, as serde writes it, except that a decision with
    /// its stored text (`texts`, by item) is written as that text, where
    /// serialising the decision again would give the same bytes.
    fn to_json(&self, texts: &[Option<std::sync::Arc<[u8]>>]) -> serde_json::Result<Vec<u8>> {
        // About a kilobyte an item (a decision's JSON is most of it).
        let mut out = Vec::with_capacity(16 + self.results.len() * 1024);
        out.extend_from_slice(br#"{"results":["#);
        for (i, item) in self.results.iter().enumerate() {
            // Every field named: a field added to `BatchItem` must be written here too.
            let BatchItem { claim_id, decision, replayed, error } = item;
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            let mut first = true;
            // A member's name, after a comma unless it is the item's first.
            let mut field = |out: &mut Vec<u8>, name: &str| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
            };
            if let Some(id) = claim_id {
                field(&mut out, "claim_id");
                serde_json::to_writer(&mut out, id)?;
            }
            if let Some(d) = decision {
                field(&mut out, "decision");
                match texts.get(i).and_then(Option::as_deref) {
                    Some(text) => out.extend_from_slice(text),
                    None => serde_json::to_writer(&mut out, d)?,
                }
            }
            if *replayed {
                field(&mut out, "replayed");
                out.extend_from_slice(b"true");
            }
            if let Some(p) = error {
                field(&mut out, "error");
                serde_json::to_writer(&mut out, p)?;
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }
}

/// The claims of a batch body: `claims`, an array of 1 to `max` items (each
/// read later on its own).
fn batch_claims(mut body: Value, max: usize) -> Result<Vec<Value>, ApiError> {
    let mut errs = only_fields(&body, &["claims"]);
    let claims = match body.get("claims") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= max => Some(a),
        Some(Value::Array(_)) => {
            errs.push(FieldError::new("/claims", "out_of_range", format!("a batch has 1 to {max} claims")));
            None
        }
        Some(_) => {
            errs.push(FieldError::new("/claims", "invalid_type", "must be an array of claims"));
            None
        }
        None if body.is_object() => {
            errs.push(FieldError::new("/claims", "required", "this field is required"));
            None
        }
        None => None,
    };
    if !errs.is_empty() || claims.is_none() {
        return Err(ApiError::Validation(errs));
    }
    match body.get_mut("claims").map(Value::take) {
        Some(Value::Array(claims)) => Ok(claims),
        _ => Err(ApiError::Validation(errs)),
    }
}

/// Adjudicate up to 1000 claims in order; each sees the earlier ones' effects.
#[utoipa::path(
    post, path = "/v1/claims/batch", operation_id = "submitBatch", tag = "claims",
    request_body(content = BatchRequest),
    responses(
        (status = 200, description = "One result per claim, in input order: a decision or a problem. All recorded decisions are durable", body = BatchResponse),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the batch limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a batch: `claims` missing, empty or over 1000", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable: not acknowledged, so not counted on; a write that failed may still have reached the store. Retry with the same claim_id (a recorded claim replays, 200)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "submit_batch", skip_all, fields(key_id = %caller.key_id))]
pub async fn batch(
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::SubmitBatch)?;
    // The body's bytes first (within their size and time limits), then a
    // permit, then the parsing: a client sending its body slowly holds no
    // permit, and so holds up no other caller's batch.
    let bytes = super::read_body_bytes(&req, payload, state.server.batch_body_limit).await?;
    let _permit = state.batch_permits.acquire().await.map_err(|e| internal(e.into()))?;
    let body = super::json_value(&bytes)?;
    let mut claims = batch_claims(body, state.server.max_batch_claims)?;
    // Parsing, sealing and encoding are most of a batch's work before the
    // ledger: the second half is prepared on the blocking pool meanwhile.
    let second = claims.split_off(claims.len() / 2);
    let offset = claims.len();
    let s = state.clone();
    let c = caller.clone();
    let other = web::block(move || prepare_all(&s, &c, second, offset));
    let mut prepared = prepare_all(&state, &caller, claims, 0);
    prepared.extend(other.await.map_err(|e| internal(anyhow::anyhow!("{e}")))?);
    let mut results: Vec<BatchItem> = Vec::with_capacity(prepared.len());
    // The stored text of each new decision (the embedded ledger's), by item.
    let mut texts = vec![None; prepared.len()];
    let mut items = Vec::new();
    let mut slots = Vec::new();
    let mut labels = Vec::new();
    // The refusal of each replay-only item sent to the ledger, by slot.
    let mut refusals = Vec::new();
    for (i, (claim_id, p)) in prepared.into_iter().enumerate() {
        let (item, refused) = match p {
            Ok((item, None)) => (item, None),
            Ok((item, Some(refusal))) if recorded(&state, &item).await? => (item, Some(refusal)),
            Ok((_, Some(refusal))) | Err(refusal) => {
                results.push(BatchItem { claim_id, decision: None, replayed: false, error: Some(refusal) });
                continue;
            }
        };
        labels.push((item.claim.county, item.claim.kind));
        items.push(item);
        slots.push(i);
        refusals.push(refused);
        results.push(BatchItem { claim_id, decision: None, replayed: false, error: None });
    }
    if !items.is_empty() {
        let decided = state.ledger.submit(items).await.map_err(ledger_error)?;
        for (((slot, r), (county, kind)), refused) in slots.into_iter().zip(decided).zip(labels).zip(refusals) {
            let out = &mut results[slot];
            match r {
                // Another body under the recorded id: the body's own refusal.
                ItemResult::Conflict if refused.is_some() => out.error = refused,
                ItemResult::New(d, text) => {
                    count_decision(&state, county.as_str(), kind.as_str(), &d);
                    out.decision = Some(d);
                    texts[slot] = text;
                }
                ItemResult::Replayed(d) => {
                    out.decision = Some(d);
                    out.replayed = true;
                }
                ItemResult::Conflict => {
                    out.error = Some(ApiError::ClaimIdConflict(out.claim_id.clone().unwrap_or_default()).problem());
                }
                ItemResult::Failed => {
                    out.error = Some(internal(anyhow::anyhow!("the rules failed on this claim")).problem());
                }
            }
        }
    }
    let body = BatchResponse { results }.to_json(&texts).map_err(|e| internal(e.into()))?;
    Ok(HttpResponse::Ok().content_type(ContentType::json()).body(body))
}

/// A batch's claim prepared: the item for the ledger, with its refusal when
/// it may only replay ([`Prepared::ReplayOnly`]), or the problem naming its
/// bad fields.
type PreparedItem = Result<(ClaimItem, Option<Problem>), Problem>;

/// Prepares claims of a batch (`offset`: the index of the first in the batch):
/// each with its id.
fn prepare_all(
    state: &AppState,
    caller: &Caller,
    claims: Vec<Value>,
    offset: usize,
) -> Vec<(Option<String>, PreparedItem)> {
    claims
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let claim_id = peek_claim_id(&c);
            let problem = |e: ApiError| {
                let mut p = e.problem();
                for fe in &mut p.errors {
                    fe.field = format!("/claims/{}{}", i + offset, fe.field);
                }
                p
            };
            let prepared = match state.prepare(Node::from(c), caller) {
                Ok(Prepared::Ready(item)) => Ok((item, None)),
                Ok(Prepared::ReplayOnly(item, refusal)) => Ok((item, Some(problem(refusal)))),
                Err(e) => Err(problem(e)),
            };
            (claim_id, prepared)
        })
        .collect()
}

/// The decision a claim would get now, recording nothing.
#[utoipa::path(
    post, path = "/v1/evaluations", operation_id = "evaluateClaim", tag = "claims",
    request_body(content = Claim),
    responses(
        (status = 200, description = "The decision this claim would get now; `recorded: false`, nothing stored. A claim already recorded (the same id and body) is judged afresh: its own record (its place in the yearly limit, its keys, its share of running totals) does not count against it; another body under a recorded id is judged against that record", body = Decision),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid claim", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "evaluate", skip_all, fields(key_id = %caller.key_id))]
pub async fn evaluate(
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::Evaluate)?;
    let body = read_body_bytes(&req, payload, state.server.claim_body_limit).await?;
    let claim = state.parse(&json_node(&body)?)?;
    let person = claim.applicant.as_ref().map(|a| state.pseudonymizer.person_key(&a.id_number));
    let decision = {
        let s = state.clone();
        // Read again only when the claim id is already recorded.
        let body_hashes = Box::new(move || match Node::parse(&body) {
            Ok(node) => s.pseudonymizer.body_hashes(&node),
            Err(e) => {
                // Not reached: the same text was read above. Its record is
                // then judged as another body's.
                tracing::error!(error = %e, "an evaluated body no longer reads as JSON");
                s.pseudonymizer.body_hashes(&Node::Null)
            }
        });
        state.ledger.evaluate(Evaluation { claim, person, body_hashes }).await.map_err(ledger_error)?
    };
    Ok(HttpResponse::Ok().json(decision))
}

fn claim_id_path(s: &str) -> Result<String, ApiError> {
    crate::domain::ClaimId::parse(s, "")
        .map(|c| c.as_str().to_string())
        .map_err(|_| ApiError::NotFound(format!("no claim `{}`", s.chars().take(64).collect::<String>())))
}

/// The recorded claim a path names, if the caller may see it (an institution
/// sees only claims naming it; any other is not found).
async fn visible_claim(path: &str, caller: &Caller, state: &AppState) -> Result<ClaimRecord, ApiError> {
    caller.require(Operation::ReadClaim)?;
    let id = claim_id_path(path)?;
    match state.ledger.claim(&id).await.map_err(ledger_error)? {
        Some(c) if c.header.visible_to(caller.scope()) => Ok(c),
        _ => Err(ApiError::NotFound(format!("no claim `{id}`"))),
    }
}

/// The stored decision of a claim (`revoked` once revoked).
#[utoipa::path(
    get, path = "/v1/claims/{claim_id}", operation_id = "getClaim", tag = "claims",
    params(("claim_id" = String, Path, description = "The caller's claim id")),
    responses(
        (status = 200, description = "The stored decision", body = Decision),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such claim (or not one of this institution's)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(visible_claim(&path, &caller, &state).await?.body.decision))
}

/// A recorded claim as it was submitted, with its decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmittedClaim {
    pub claim_id: String,
    /// The claim as submitted, the applicant's ID number and name masked
    /// (they are stored sealed). `null` for a claim recorded before the
    /// store kept claims (moved from layout v1), which kept only its decision.
    #[schema(value_type = Option<Object>)]
    pub claim: Option<Value>,
    pub decision: Decision,
    /// The id of the API key that recorded it.
    pub recorded_by: String,
}

/// The claim as submitted, as judged: what an auditor reads beside the decision.
#[utoipa::path(
    get, path = "/v1/claims/{claim_id}/submission", operation_id = "getClaimSubmission", tag = "claims",
    params(("claim_id" = String, Path, description = "The claim")),
    responses(
        (status = 200, description = "The claim as submitted (ID number and name masked) and its decision", body = SubmittedClaim),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such claim (or not one of this institution's)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn submission(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let c = visible_claim(&path, &caller, &state).await?;
    Ok(HttpResponse::Ok().json(SubmittedClaim {
        claim_id: c.header.claim_id,
        claim: c.body.submitted.as_ref().map(Sealer::shown),
        decision: c.body.decision,
        recorded_by: c.body.recorded_by,
    }))
}

request_type! {
    /// Withdrawing a grant.
    pub struct RevocationRequest {
        pub reason: RevocationReason,
    }
}

/// Withdraw a granted claim: its amount and its place in every limit are released.
#[utoipa::path(
    post, path = "/v1/claims/{claim_id}/revocation", operation_id = "revokeClaim", tag = "claims",
    params(("claim_id" = String, Path, description = "The claim to revoke")),
    request_body(content = RevocationRequest),
    responses(
        (status = 200, description = "The claim's decision, now `revoked` (again 200 when repeated)", body = Decision),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the platform revokes", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such claim", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A rejected claim cannot be revoked (`CLAIM_NOT_REVOCABLE`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason given", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable: not acknowledged; retry (repeating it is harmless)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "revoke", skip_all, fields(key_id = %caller.key_id))]
pub async fn revoke(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::RevokeClaim)?;
    let id = claim_id_path(&path)?;
    let body = read_json(&req, payload, state.server.claim_body_limit).await?;
    let RevocationRequest { reason } = read_body(&body)?;
    let reason = reason.trim().to_string();
    match state.ledger.revoke(id.clone(), reason, caller.key_id.clone()).await.map_err(ledger_error)? {
        RevokeResult::Revoked(d) => Ok(HttpResponse::Ok().json(*d)),
        RevokeResult::NotFound => Err(ApiError::NotFound(format!("no claim `{id}`"))),
        RevokeResult::NotRevocable => {
            Err(ApiError::ClaimNotRevocable(format!("claim `{id}` was rejected: there is nothing to revoke")))
        }
    }
}

/// A claim's append-only history.
#[utoipa::path(
    get, path = "/v1/claims/{claim_id}/events", operation_id = "getClaimEvents", tag = "claims",
    params(("claim_id" = String, Path, description = "The claim")),
    responses(
        (status = 200, description = "Events in order: decided, replayed, revoked, with the key that acted", body = Vec<Event>),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such claim", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::ReadClaimEvents)?;
    let id = claim_id_path(&path)?;
    match state.ledger.events(&id).await.map_err(ledger_error)? {
        Some((c, ev)) if c.header.visible_to(caller.scope()) => Ok(HttpResponse::Ok().json(ev)),
        _ => Err(ApiError::NotFound(format!("no claim `{id}`"))),
    }
}

/// The filters of `GET /v1/claims` (also the client crate's filter).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub county: Option<County>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Event dates from (inclusive), `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<NaiveDate>,
    /// Event dates to (inclusive), `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<NaiveDate>,
    /// A department code of the county's plan, or `unassigned`: claims that
    /// name no department (the reports' line of that name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// 1..500, default 100.
    #[param(minimum = 1, maximum = 500)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (digits).
    #[param(pattern = "^[0-9]{1,19}$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl ListQuery {
    /// Reads the query string of `GET /v1/claims`, naming every bad or
    /// unknown parameter at once (`/status`, `/limit`, …): the query, its
    /// cursor as a record number, and its department filter.
    fn read(
        query: &str,
        policy: &crate::policy::Policy,
    ) -> Result<(Self, Option<u64>, DepartmentFilter), Vec<FieldError>> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| vec![FieldError::new("", "invalid_value", format!("the query string cannot be read: {e}"))])?
            .into_inner();
        let mut q = ListQuery::default();
        let mut after = None;
        let mut errs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in pairs {
            let at = crate::domain::pointer("", &name);
            if !seen.insert(name.clone()) {
                errs.push(FieldError::new(at, "invalid_value", "given more than once"));
                continue;
            }
            // A value read as the same field of a body is.
            let text = Value::String(value.clone());
            match name.as_str() {
                "county" => q.county = FromJson::from_json(&text, &at, &mut errs),
                "kind" => q.kind = FromJson::from_json(&text, &at, &mut errs),
                "from" => q.from = FromJson::from_json(&text, &at, &mut errs),
                "to" => q.to = FromJson::from_json(&text, &at, &mut errs),
                "status" => match serde_json::from_value(text) {
                    Ok(status) => q.status = Some(status),
                    Err(e) => errs.push(FieldError::new(at, "invalid_value", e.to_string())),
                },
                "department" => q.department = Some(value),
                // Digits only, as the schema says (`str::parse` also takes a `+`).
                "limit" => match digits(&value).and_then(|v| v.parse::<usize>().ok()) {
                    Some(n) if (1..=500).contains(&n) => q.limit = Some(n),
                    _ => errs.push(FieldError::new(at, "out_of_range", "limit is 1..500")),
                },
                "cursor" => match digits(&value).filter(|v| v.len() <= 19).and_then(|v| v.parse::<u64>().ok()) {
                    Some(n) => (after, q.cursor) = (Some(n), Some(value)),
                    None => errs.push(FieldError::new(at, "invalid_value", "not a cursor of this service")),
                },
                _ => errs.push(FieldError::new(at, "unknown_field", "not a parameter of this request")),
            }
        }
        if q.from.zip(q.to).is_some_and(|(from, to)| from > to) {
            errs.push(FieldError::new("/to", "out_of_range", "`to` is before `from`"));
        }
        let department = q.department(policy).map_err(|e| errs.push(e)).ok().flatten();
        match errs.is_empty() {
            true => Ok((q, after, department)),
            false => Err(errs),
        }
    }

    /// The department filter: `unassigned` (claims naming none, the reports'
    /// line), or a department of the county's plan (of either county's when
    /// none is named); anything else is refused rather than matching nothing.
    fn department(&self, policy: &crate::policy::Policy) -> Result<DepartmentFilter, FieldError> {
        let Some(code) = &self.department else { return Ok(None) };
        if code == crate::ledger::UNASSIGNED {
            return Ok(Some(None));
        }
        let mut counties = policy.counties().filter(|p| self.county.is_none_or(|c| c == p.county()));
        match counties.any(|p| p.department(code).is_some()) {
            true => Ok(Some(Some(code.clone()))),
            false => Err(FieldError::new(
                "/department",
                "invalid_value",
                "not a department of the county's plan (GET /v1/policies/{county}) nor `unassigned`",
            )),
        }
    }
}

/// `s` if it is one or more ASCII digits.
fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then_some(s)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimSummary {
    pub claim_id: String,
    pub county: County,
    pub kind: Kind,
    pub event_date: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Masked: `330723********123X`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_number_masked: Option<String>,
    pub decision: Decision,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimPage {
    pub claims: Vec<ClaimSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Recorded claims, in recording order, filtered; ID numbers masked.
#[utoipa::path(
    get, path = "/v1/claims", operation_id = "listClaims", tag = "claims",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of claims (institutions see only their own)", body = ClaimPage),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad query parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(req: HttpRequest, caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::ListClaims)?;
    let (q, after, department) = ListQuery::read(req.query_string(), &state.policy).map_err(ApiError::Validation)?;
    let limit = q.limit.unwrap_or(100);
    let filter = ListFilter {
        county: q.county,
        kind: q.kind,
        status: q.status,
        from: q.from,
        to: q.to,
        department,
        scope: caller.scope().map(str::to_string),
        after,
        limit,
    };
    let page = state.ledger.list(filter).await.map_err(ledger_error)?;
    let claims = page
        .claims
        .into_iter()
        .map(|c| ClaimSummary {
            claim_id: c.header.claim_id,
            county: c.header.county,
            kind: c.header.kind,
            event_date: c.header.event_date,
            department: c.header.department,
            id_number_masked: c.body.id_masked,
            decision: c.body.decision,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ClaimPage { claims, next_cursor: page.next.map(|n| n.to_string()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answer_with_stored_texts_is_what_serde_writes() {
        let decision = crate::rules::sample_decision("approved");
        let problem = ApiError::ClaimIdConflict("C-3".into()).problem();
        let item = |id: Option<&str>, d: Option<&Decision>, replayed, error: Option<&Problem>| BatchItem {
            claim_id: id.map(str::to_string),
            decision: d.cloned(),
            replayed,
            error: error.cloned(),
        };
        let answer = BatchResponse {
            results: vec![
                item(Some("C-1"), Some(&decision), false, None),
                item(Some("C-2 \"quoted\""), Some(&decision), true, None),
                item(Some("C-3"), None, false, Some(&problem)),
                item(None, None, false, Some(&problem)),
                item(Some("C-4"), Some(&decision), false, None),
            ],
        };
        let text: std::sync::Arc<[u8]> = serde_json::to_vec(&decision).expect("json").into();
        let texts = vec![Some(text.clone()), None, None, None, None];
        let expected = serde_json::to_vec(&answer).expect("json");
        assert_eq!(answer.to_json(&texts).expect("json"), expected);
        assert_eq!(answer.to_json(&[]).expect("json"), expected, "without texts");
        // A text is written as it is, in its item's place only.
        let marked = answer.to_json(&[None, Some(br#"{"x":1}"#[..].into())]).expect("json");
        let marked = String::from_utf8(marked).expect("UTF-8");
        assert_eq!(marked.matches(r#""decision":{"x":1}"#).count(), 1);
        let read: Value = serde_json::from_str(&marked).expect("JSON");
        assert_eq!(read["results"][1]["decision"], serde_json::json!({"x": 1}));
        assert_eq!(read["results"][1]["replayed"], true);
        assert_eq!(read["results"][0]["decision"]["claim_id"], "C-1");
        assert_eq!(BatchResponse { results: vec![] }.to_json(&[]).expect("json"), br#"{"results":[]}"#);
    }
}
