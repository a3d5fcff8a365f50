//! `POST /v1/usage/query`: a person's counted grants in a year. The ID number
//! travels in the body, never in a URL.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{read_body, read_json, AppState};
use crate::auth::{Caller, Operation};
use crate::domain::{County, IdNumber, Kind, Year};
use crate::problem::{ApiError, Problem};
use crate::request_type;
use crate::rules::Status;

request_type! {
    /// Whose usage: the ID number travels in the body, never in a URL.
    pub struct UsageQuery {
        pub county: County,
        pub id_number: IdNumber,
        pub year: Year,
    }
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
    let UsageQuery { county, id_number, year } = read_body(&body)?;
    let year = year.get();
    let person = state.pseudonymizer.person_key(&id_number);
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
