//! `GET /v1/policies`, `GET /v1/policies/{county}` and `GET /v1/reason-codes`:
//! straight from the loaded policy data and the code catalogue.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{county_path, AppState};
use crate::policy::CountyPolicy;
use crate::problem::{ApiError, Problem};
use crate::rules::{ReasonCode, Severity};

fn render(p: &CountyPolicy, directory_version: &str) -> Value {
    json!({
        "county": p.county(),
        "document": p.common.document,
        "period": p.common.period,
        "version": p.version,
        "directory_version": directory_version,
        "annual_limit": p.common.annual_limit,
        "eligibility": p.common.eligibility,
        "trade_friction": p.common.trade_friction,
        "public_notice": p.common.public_notice,
        "kinds": p.common.kinds,
        "rules": p.rules,
        "plan": p.reference.plan,
        "departments": p.reference.departments,
        "schools": p.reference.schools,
        "targets": p.reference.targets,
    })
}

/// Every county's policy in force: documents, periods, kinds, schedules, caps,
/// windows and reference data, each with its clause, and the policy version.
#[utoipa::path(get, path = "/v1/policies", operation_id = "listPolicies", tag = "policies", responses(
    (status = 200, description = "One entry per county, as `GET /v1/policies/{county}`", body = Object),
))]
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let out: Vec<Value> =
        state.policy.counties().map(|p| render(p, &state.ledger.directory(p.county()).version)).collect();
    HttpResponse::Ok().json(json!({ "policies": out }))
}

/// One county's policy in force.
#[utoipa::path(get, path = "/v1/policies/{county}", operation_id = "getPolicy", tag = "policies",
    params(("county" = String, Path, description = "`wuyi` or `changxing`")),
    responses(
        (status = 200, description = "The county's document, period, kinds with their clauses, every parameter with its clause and effective date, departments and plan figures, schools and targets, and the policy and directory versions", body = Object),
        (status = 404, description = "No such county", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let county = county_path(&path)?;
    let p = state.policy.county(county);
    Ok(HttpResponse::Ok().json(render(p, &state.ledger.directory(county).version)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReasonCodeInfo {
    pub code: ReasonCode,
    pub severity: Severity,
    pub clause: String,
    pub message_zh: String,
    pub message_en: String,
}

pub fn catalogue() -> Vec<ReasonCodeInfo> {
    ReasonCode::ALL
        .iter()
        .map(|c| ReasonCodeInfo {
            code: *c,
            severity: c.severity(),
            clause: c.clause().to_string(),
            message_zh: c.message_zh().to_string(),
            message_en: c.message_en().to_string(),
        })
        .collect()
}

/// Every reason code a decision can carry.
#[utoipa::path(get, path = "/v1/reason-codes", operation_id = "listReasonCodes", tag = "policies", responses(
    (status = 200, description = "The catalogue of RULES.md §5", body = Vec<ReasonCodeInfo>),
))]
pub async fn reason_codes() -> HttpResponse {
    HttpResponse::Ok().json(catalogue())
}
