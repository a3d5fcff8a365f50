//! The trade-friction directories (API.md §5, I-6): kept by an administrator,
//! never taken from the claimant's word.

use std::collections::HashSet;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{county_path, ledger_error, read_body, read_json, AppState};
use crate::auth::{Caller, Operation};
use crate::domain::{CreditCode, Text};
use crate::ledger::{DirectoryEntry, DirectoryRecord};
use crate::problem::{ApiError, FieldError, Problem};
use crate::request_type;

request_type! {
    /// An enterprise of the directory, affected from `listed_from` on.
    pub struct ListedEnterprise {
        pub credit_code: CreditCode,
        pub name: Text,
        pub listed_from: NaiveDate,
    }
}

request_type! {
    /// A county's whole directory.
    pub struct DirectoryBody {
        /// The whole list; each credit code at most once.
        pub enterprises: Vec<ListedEnterprise>,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DirectoryAnswer {
    pub county: String,
    pub enterprises: Vec<DirectoryEntry>,
    pub updated_at: Option<chrono::DateTime<Utc>>,
    /// The version decisions cite (`policy.directory_version`).
    pub version: String,
}

fn answer(county: &str, r: DirectoryRecord) -> DirectoryAnswer {
    DirectoryAnswer {
        county: county.to_string(),
        enterprises: r.enterprises,
        updated_at: r.updated_at,
        version: r.version,
    }
}

/// The county's directory of trade-friction-affected enterprises.
#[utoipa::path(
    get, path = "/v1/directories/{county}/trade-friction-enterprises", operation_id = "getTradeFrictionDirectory", tag = "directories",
    params(("county" = String, Path, description = "`wuyi` or `changxing`")),
    responses(
        (status = 200, description = "The directory and its version", body = DirectoryAnswer),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Auditors and administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such county", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::ReadDirectory)?;
    let county = county_path(&path)?;
    let r = state.ledger.directory_record(county).await.map_err(ledger_error)?;
    Ok(HttpResponse::Ok().json(answer(county.as_str(), r)))
}

/// Replaces the county's whole directory.
#[utoipa::path(
    put, path = "/v1/directories/{county}/trade-friction-enterprises", operation_id = "putTradeFrictionDirectory", tag = "directories",
    params(("county" = String, Path, description = "`wuyi` or `changxing`")),
    request_body(content = DirectoryBody, example = json!({"enterprises": [{"credit_code": "91330723MA00000156", "name": "测试企业1", "listed_from": "2019-06-01"}]})),
    responses(
        (status = 200, description = "The stored directory and its new version", body = DirectoryAnswer),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such county", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad credit codes, duplicates or dates", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable: not acknowledged; retry (repeating it is harmless)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::WriteDirectory)?;
    let county = county_path(&path)?;
    let body = read_json(&req, payload, state.server.batch_body_limit).await?;
    let entries = parse_directory(&body)?;
    let record = DirectoryRecord::new(entries, Some(Utc::now()));
    let stored = state.ledger.put_directory(county, record).await.map_err(ledger_error)?;
    tracing::info!(county = %county, entries = stored.enterprises.len(), version = %stored.version, key_id = %caller.key_id, "directory replaced");
    Ok(HttpResponse::Ok().json(answer(county.as_str(), stored)))
}

fn parse_directory(body: &Value) -> Result<Vec<DirectoryEntry>, ApiError> {
    // Duplicates are named beside every other bad field: the codes as the
    // reader reads them (a code it refuses is named for that already).
    let codes =
        body["enterprises"].as_array().into_iter().flatten().map(|e| {
            e["credit_code"].as_str().and_then(|c| CreditCode::parse(c, "").ok()).map(|c| c.as_str().to_string())
        });
    let duplicates = duplicates(codes);
    let DirectoryBody { enterprises } = match read_body(body) {
        Err(ApiError::Validation(mut errs)) => {
            errs.extend(duplicates);
            return Err(ApiError::Validation(errs));
        }
        read => read?,
    };
    if !duplicates.is_empty() {
        return Err(ApiError::Validation(duplicates));
    }
    Ok(enterprises
        .into_iter()
        .map(|e| DirectoryEntry {
            credit_code: e.credit_code.as_str().to_string(),
            name: e.name.as_str().to_string(),
            listed_from: e.listed_from,
        })
        .collect())
}

/// An error for each credit code that an earlier entry has.
fn duplicates(codes: impl Iterator<Item = Option<String>>) -> Vec<FieldError> {
    let mut seen = HashSet::new();
    codes
        .enumerate()
        .filter_map(|(i, c)| c.filter(|c| !seen.insert(c.clone())).map(|_| i))
        .map(|i| FieldError::new(format!("/enterprises/{i}/credit_code"), "duplicate", "each enterprise appears once"))
        .collect()
}
