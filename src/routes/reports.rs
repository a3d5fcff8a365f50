//! `GET /v1/reports/{county}/{year}`: granted counts and amounts by kind and
//! by department beside the plan figures, from running totals kept in the
//! same commit as each decision.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use super::{county_path, ledger_error, AppState};
use crate::auth::{Caller, Operation};
use crate::domain::fmt2;
use crate::ledger::Tally;
use crate::problem::{ApiError, Problem};

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct KindLine {
    pub kind: String,
    pub title_zh: String,
    pub clause: String,
    pub granted: u64,
    #[schema(value_type = String, example = "1300.00")]
    pub amount: String,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct DepartmentLine {
    pub department: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_zh: Option<String>,
    /// Person-times planned for the year in the attachment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<u32>,
    pub granted: u64,
    #[schema(value_type = String)]
    pub amount: String,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Report {
    pub county: String,
    pub year: i32,
    pub document: String,
    pub policy_version: String,
    pub plan_clause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_total: Option<u32>,
    pub granted: u64,
    #[schema(value_type = String)]
    pub amount: String,
    pub by_kind: Vec<KindLine>,
    pub by_department: Vec<DepartmentLine>,
}

/// Plan against actual for a county and year (revoked and rejected claims excluded).
#[utoipa::path(get, path = "/v1/reports/{county}/{year}", tag = "reports",
    params(("county" = String, Path, description = "`wuyi` or `changxing`"), ("year" = i32, Path, description = "Calendar year of the event dates")),
    responses(
        (status = 200, description = "Counts and amounts by kind and department beside the plan", body = Report),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Auditors and administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such county or year", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get(
    path: web::Path<(String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::ReadReport)?;
    let (county, year) = path.into_inner();
    let county = county_path(&county)?;
    let year: i32 = year
        .parse()
        .ok()
        .filter(|y| (1900..=2100).contains(y))
        .ok_or_else(|| ApiError::NotFound(format!("no report for year `{year}`")))?;
    let totals = state.ledger.report(county, year).await.map_err(ledger_error)?;
    let p = state.policy.county(county);
    let y = year.to_string();
    let by_kind = p
        .common
        .kinds
        .iter()
        .map(|(k, e)| {
            let t = totals.by_kind.get(k.as_str()).cloned().unwrap_or_default();
            KindLine {
                kind: k.as_str().into(),
                title_zh: e.title_zh.clone(),
                clause: e.clause.clone(),
                granted: t.count,
                amount: fmt2(t.amount),
            }
        })
        .collect();
    let mut rest: BTreeMap<String, Tally> = totals.by_department.clone();
    let mut by_department: Vec<DepartmentLine> = p
        .reference
        .departments
        .iter()
        .map(|d| {
            let t = rest.remove(&d.code).unwrap_or_default();
            DepartmentLine {
                department: d.code.clone(),
                name_zh: Some(d.name_zh.clone()),
                plan: d.plans.get(&y).copied(),
                granted: t.count,
                amount: fmt2(t.amount),
            }
        })
        .collect();
    by_department.extend(rest.into_iter().map(|(code, t)| DepartmentLine {
        department: code,
        name_zh: None,
        plan: None,
        granted: t.count,
        amount: fmt2(t.amount),
    }));
    let granted = totals.by_kind.values().map(|t| t.count).sum();
    let amount: Decimal = totals.by_kind.values().map(|t| t.amount).sum();
    Ok(HttpResponse::Ok().json(Report {
        county: county.as_str().into(),
        year,
        document: p.common.document.number.clone(),
        policy_version: p.version.clone(),
        plan_clause: p.reference.plan.clause.clone(),
        plan_total: p.reference.plan.totals.get(&y).copied(),
        granted,
        amount: fmt2(amount),
        by_kind,
        by_department,
    }))
}
