//! `GET /v1/policies`, `GET /v1/policies/{county}` and `GET /v1/reason-codes`:
//! from the loaded policy data and the code catalogue, with the version of
//! the trade-friction directory in force as the ledger holds it.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::{county_path, ledger_error, AppState};
use std::collections::BTreeMap;

use crate::domain::{County, Kind};
use crate::policy::{
    Citation, CountyPolicy, CountyRules, Department, Document, Eligibility, KindEntry, Param, Period, Plan, Schools,
    Target, TradeFriction,
};
use crate::problem::{ApiError, Problem};
use crate::rules::{ReasonCode, Severity};

/// A county's policy in force, as `GET /v1/policies/{county}` shows it: every
/// parameter with its clause and dated values. A simulation's change names a
/// parameter by its JSON pointer in this document.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyDocument {
    pub county: County,
    pub document: Document,
    pub period: Period,
    /// `sha256:` of the canonical loaded data; cited by every decision.
    pub version: String,
    /// The version of the trade-friction directory in force.
    pub directory_version: String,
    pub annual_limit: Param<u32>,
    pub eligibility: Eligibility,
    pub trade_friction: TradeFriction,
    pub public_notice: Param<Vec<Kind>>,
    /// R-CERT: one certificate number backs at most one granted claim per
    /// county and kind; the clause `CERTIFICATE_ALREADY_USED` cites.
    pub certificate_once: Citation,
    pub kinds: BTreeMap<Kind, KindEntry>,
    pub rules: CountyRules,
    pub plan: Plan,
    pub departments: Vec<Department>,
    pub schools: Option<Schools>,
    pub targets: Option<BTreeMap<String, Target>>,
}

/// Every county's policy in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    pub policies: Vec<PolicyDocument>,
}

fn render(p: &CountyPolicy, directory_version: &str) -> PolicyDocument {
    let (common, reference) = (&p.common, &p.reference);
    PolicyDocument {
        county: p.county(),
        document: common.document.clone(),
        period: common.period.clone(),
        version: p.version.clone(),
        directory_version: directory_version.to_string(),
        annual_limit: common.annual_limit.clone(),
        eligibility: common.eligibility.clone(),
        trade_friction: common.trade_friction.clone(),
        public_notice: common.public_notice.clone(),
        certificate_once: common.certificate_once.clone(),
        kinds: common.kinds.clone(),
        rules: p.rules.clone(),
        plan: reference.plan.clone(),
        departments: reference.departments.clone(),
        schools: reference.schools.clone(),
        targets: reference.targets.clone(),
    }
}

/// Every county's policy in force: documents, periods, kinds, schedules, caps,
/// windows and reference data, each with its clause, and the policy version.
#[utoipa::path(get, path = "/v1/policies", operation_id = "listPolicies", tag = "policies", responses(
    (status = 200, description = "One entry per county, as `GET /v1/policies/{county}`", body = PolicyList),
    (status = 503, description = "Store unavailable: the directory in force cannot be read", body = Problem, content_type = "application/problem+json"),
))]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut policies = Vec::new();
    for p in state.policy.counties() {
        let directory = state.ledger.directory(p.county()).await.map_err(ledger_error)?;
        policies.push(render(p, &directory.version));
    }
    Ok(HttpResponse::Ok().json(PolicyList { policies }))
}

/// One county's policy in force.
#[utoipa::path(get, path = "/v1/policies/{county}", operation_id = "getPolicy", tag = "policies",
    params(("county" = String, Path, description = "`wuyi` or `changxing`")),
    responses(
        (status = 200, description = "The county's document, period, kinds with their clauses, every parameter with its clause and effective date, departments and plan figures, schools and targets, and the policy and directory versions", body = PolicyDocument),
        (status = 404, description = "No such county", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable: the directory in force cannot be read", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let county = county_path(&path)?;
    let p = state.policy.county(county);
    let directory = state.ledger.directory(county).await.map_err(ledger_error)?;
    Ok(HttpResponse::Ok().json(render(p, &directory.version)))
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
