//! `POST /v1/usage/query`: a person's counted grants in a year. The ID number
//! travels in the body, never in a URL.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{only_fields, read_json, AppState};
use crate::auth::{Caller, Operation};
use crate::domain::{County, IdNumber, Kind};
use crate::problem::{ApiError, FieldError, Problem};
use crate::rules::Status;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub county: County,
    #[schema(example = "330723199005060038", pattern = "^[0-9]{17}[0-9X]$")]
    pub id_number: String,
    #[schema(example = 2020, minimum = 1900, maximum = 2100)]
    pub year: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageClaim {
    pub claim_id: String,
    pub kind: Kind,
    pub event_date: NaiveDate,
    pub status: Status,
    #[schema(value_type = String, example = "800.00")]
    pub amount: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageAnswer {
    pub county: County,
    pub year: i32,
    pub used: u32,
    pub limit: u32,
    pub remaining: u32,
    /// The counted claims of that year.
    pub claims: Vec<UsageClaim>,
}

/// A person's counted subsidies in a county and year (R-ANNUAL).
#[utoipa::path(
    post, path = "/v1/usage/query", operation_id = "queryUsage", tag = "claims",
    request_body(content = UsageQuery),
    responses(
        (status = 200, description = "Used, limit and remaining", body = UsageAnswer),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Role not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad county, ID number or year", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn query(
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::QueryUsage)?;
    let body = read_json(&req, payload, state.server.claim_body_limit).await?;
    let mut errs = only_fields(&body, &["county", "id_number", "year"]);
    let county = match body.get("county").and_then(|v| v.as_str()) {
        Some(s) => County::parse(s).or_else(|| {
            errs.push(FieldError::new("/county", "invalid_value", "wuyi or changxing"));
            None
        }),
        None => {
            errs.push(FieldError::new("/county", "required", "this field is required"));
            None
        }
    };
    let id = match body.get("id_number").and_then(|v| v.as_str()) {
        Some(s) => IdNumber::parse(s, "/id_number").map_err(|e| errs.push(e)).ok(),
        None => {
            errs.push(FieldError::new("/id_number", "required", "this field is required"));
            None
        }
    };
    let year = match body.get("year") {
        Some(v) if v.is_i64() || v.is_u64() => match v.as_i64() {
            Some(y) if (1900..=2100).contains(&y) => Some(y as i32),
            _ => {
                errs.push(FieldError::new("/year", "out_of_range", "a year from 1900 to 2100"));
                None
            }
        },
        Some(_) => {
            errs.push(FieldError::new("/year", "invalid_type", "a whole number such as 2020"));
            None
        }
        None => {
            errs.push(FieldError::new("/year", "required", "this field is required"));
            None
        }
    };
    let (Some(county), Some(id), Some(year), true) = (county, id, year, errs.is_empty()) else {
        return Err(ApiError::Validation(errs));
    };
    let person = state.pseudonymizer.person_key(&id);
    let policy = state.policy.county(county);
    let limit = *policy.common.annual_limit.at(NaiveDate::from_ymd_opt(year, 12, 31).unwrap_or_default());
    let entries = state.ledger.usage(county, person, year).await.map_err(super::ledger_error)?;
    let used = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    let claims = entries
        .into_iter()
        .map(|e| UsageClaim {
            claim_id: e.claim_id,
            kind: e.kind,
            event_date: e.event_date,
            status: e.status,
            amount: e.amount,
        })
        .collect();
    let answer = UsageAnswer { county, year, used, limit, remaining: limit.saturating_sub(used), claims };
    Ok(HttpResponse::Ok().json(answer))
}
