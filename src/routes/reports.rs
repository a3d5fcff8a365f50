//! `GET /v1/reports/{county}/{year}`: granted counts and amounts by kind and
//! by department beside the plan figures, from running totals kept in the
//! same commit as each decision.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Datelike;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use super::{county_path, ledger_error, AppState};
use crate::auth::{Caller, Operation};
use crate::domain::fmt2;
use crate::ledger::{ReportTotals, Tally};
use crate::policy::CountyPolicy;
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

/// The CSV form of a report: a row for the whole, then one per kind and one
/// per department (count, amount, the attachment's plan figure where there is
/// one), after the byte-order mark spreadsheet programs need to read UTF-8.
fn to_csv(r: &Report) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::Writer::from_writer("\u{feff}".as_bytes().to_vec());
    let plan = |p: Option<u32>| p.map(|n| n.to_string()).unwrap_or_default();
    let fail = |e: csv::Error| ApiError::Internal(e.into());
    w.write_record(["county", "year", "section", "code", "name_zh", "clause", "granted", "amount", "plan"])
        .map_err(fail)?;
    let (county, year) = (r.county.as_str(), r.year.to_string());
    let granted = r.granted.to_string();
    let total = plan(r.plan_total);
    w.write_record([county, &year, "total", "", "", &r.plan_clause, &granted, &r.amount, &total]).map_err(fail)?;
    for k in &r.by_kind {
        let n = k.granted.to_string();
        w.write_record([county, &year, "kind", &k.kind, &k.title_zh, &k.clause, &n, &k.amount, ""]).map_err(fail)?;
    }
    for d in &r.by_department {
        let (n, p) = (d.granted.to_string(), plan(d.plan));
        let name = d.name_zh.as_deref().unwrap_or("");
        w.write_record([county, &year, "department", &d.department, name, "", &n, &d.amount, &p]).map_err(fail)?;
    }
    w.into_inner().map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))
}

/// `Accept` prefers `text/csv` to JSON (actix's ranking: quality value, then
/// the order given); no header, `*/*` or `text/csv;q=0` mean JSON.
fn wants_csv(req: &HttpRequest) -> bool {
    use actix_web::http::header::{Accept, Header, Quality};
    let Ok(accept) = Accept::parse(req) else { return false };
    let refused = |m: &str| accept.iter().any(|q| q.item.essence_str() == m && q.quality == Quality::ZERO);
    let first = accept.ranked().into_iter().find(|m| matches!(m.essence_str(), "text/csv" | "application/json"));
    first.is_some_and(|m| m.essence_str() == "text/csv" && !refused("text/csv"))
}

/// Plan against actual for a county and year (revoked and rejected claims
/// excluded), as JSON or, with `Accept: text/csv`, as CSV.
#[utoipa::path(get, path = "/v1/reports/{county}/{year}", operation_id = "getReport", tag = "reports",
    params(("county" = String, Path, description = "`wuyi` or `changxing`"), ("year" = i32, Path, description = "Calendar year of the event dates")),
    responses(
        (status = 200, description = "Counts and amounts by kind and department beside the plan; `text/csv` (UTF-8 with a byte-order mark): a `total` row, one `kind` row per kind and one `department` row per department", content(
            (Report = "application/json"),
            (String = "text/csv", example = "county,year,section,code,name_zh,clause,granted,amount,plan\nwuyi,2020,total,,,WY 附件,8,15600.00,18860\nwuyi,2020,kind,qualification_training,职业资格培训补贴,\"WY §2(3)1, §4(1)1\",8,15600.00,\nwuyi,2020,department,education,县教育局,,2,4000.00,2000\n"),
        )),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Auditors and administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such county, or a year outside the county's policy period", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get(
    req: HttpRequest,
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
    let p = state.policy.county(county);
    let period = &p.common.period;
    if !(period.from.year()..=period.to.year()).contains(&year) {
        return Err(ApiError::NotFound(format!(
            "no report for {year}: the {county} policy runs from {} to {}",
            period.from, period.to
        )));
    }
    let totals = state.ledger.report(county, year).await.map_err(ledger_error)?;
    let report = build(p, year, &totals);
    if wants_csv(&req) {
        let name = format!("report-{}-{}.csv", report.county, report.year);
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((header::CONTENT_DISPOSITION, format!("inline; filename=\"{name}\"")))
            .insert_header((header::VARY, "Accept"))
            .body(to_csv(&report)?));
    }
    Ok(HttpResponse::Ok().insert_header((header::VARY, "Accept")).json(report))
}

/// The report of a county's year: the plan's figures beside the running totals.
fn build(p: &CountyPolicy, year: i32, totals: &ReportTotals) -> Report {
    let y = year.to_string();
    let by_kind = p
        .common
        .kinds
        .iter()
        .map(|(k, e)| {
            let t = totals.by_kind.get(k).cloned().unwrap_or_default();
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
    let report = Report {
        county: p.county().as_str().into(),
        year,
        document: p.common.document.number.clone(),
        policy_version: p.version.clone(),
        plan_clause: p.reference.plan.clause.clone(),
        plan_total: p.reference.plan.totals.get(&y).copied(),
        granted,
        amount: fmt2(amount),
        by_kind,
        by_department,
    };
    report
}

/// The report page's security headers: its script comes from the service and
/// nothing else is loaded, inline or from elsewhere.
fn page_headers(resp: &mut actix_web::HttpResponseBuilder) -> &mut actix_web::HttpResponseBuilder {
    resp.insert_header((
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::REFERRER_POLICY, "no-referrer"))
}

/// The report page (`/reports/`): county and year chosen in the browser,
/// granted against plan drawn as bars. Static and self-contained (no
/// external assets); it shows nothing until an auditor's or admin's key is
/// given, and the key stays in the page.
pub async fn page() -> HttpResponse {
    page_headers(&mut HttpResponse::Ok()).content_type("text/html; charset=utf-8").body(include_str!("reports.html"))
}

/// The report page's script (`/reports/app.js`).
pub async fn script() -> HttpResponse {
    page_headers(&mut HttpResponse::Ok())
        .content_type("text/javascript; charset=utf-8")
        .body(include_str!("reports.js"))
}
