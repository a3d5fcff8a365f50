//! `POST /v1/simulations`: policy what-if over the recorded claims (API.md §8).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{ledger_error, only_fields, read_json, AppState};
use crate::auth::{Caller, Operation};
use crate::domain::County;
use crate::ledger::{LedgerError, ReplayFilter};
use crate::policy::{ChangeError, ParamChange};
use crate::problem::{ApiError, FieldError, Problem};
use crate::simulation::{Comparison, Simulation};

/// Changes one simulation may make.
pub const MAX_CHANGES: usize = 100;
/// Changed claims one answer may list.
pub const MAX_SAMPLE: usize = 1000;
const DEFAULT_SAMPLE: usize = 20;
/// Seconds a client is asked to wait while its county's simulation runs.
const RETRY_AFTER_SECS: u64 = 5;
const BODY_LIMIT: usize = 256 * 1024;

/// The counties with a simulation running: one at a time per county, so that
/// what-if questions cannot crowd out the claims being decided.
#[derive(Debug, Default)]
pub struct Running(Arc<Mutex<HashSet<County>>>);

/// A county's simulation slot, given back when dropped.
pub struct Slot {
    running: Arc<Mutex<HashSet<County>>>,
    county: County,
}

impl Running {
    pub fn take(&self, county: County) -> Option<Slot> {
        let mut set = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(county).then(|| Slot { running: self.0.clone(), county })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.county);
    }
}

/// A parameter change (API.md §8).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeDoc {
    /// JSON pointer to a parameter (an object carrying `clause` and `values`)
    /// in `GET /v1/policies/{county}`.
    #[schema(example = "/rules/qualification_training/levels/intermediate")]
    pub parameter: String,
    /// A value of the same shape as the parameter's values (amounts are
    /// quoted decimal strings, counts are numbers, dates `YYYY-MM-DD`).
    #[schema(value_type = Object, example = "1300")]
    pub value: Value,
    /// The date from which the new value applies; earlier dates keep the
    /// value in force. Without it the new value holds for the whole period.
    #[schema(value_type = Option<String>, format = Date, example = "2021-01-01")]
    pub from: Option<String>,
}

/// A what-if question: the county's recorded claims replayed under the
/// policy in force and under the changed one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulationRequest {
    pub county: County,
    /// First event date replayed (default: the start of the county's policy period).
    #[schema(value_type = Option<String>, format = Date, example = "2020-01-01")]
    pub from: Option<String>,
    /// Last event date replayed (default: the end of the county's policy period).
    #[schema(value_type = Option<String>, format = Date, example = "2021-12-31")]
    pub to: Option<String>,
    /// 0..100 changes, applied in order.
    #[schema(max_items = 100)]
    pub changes: Option<Vec<ChangeDoc>>,
    /// At most this many changed claims are listed (0..1000, default 20).
    #[schema(minimum = 0, maximum = 1000)]
    pub sample: Option<u32>,
}

struct Parsed {
    county: County,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    changes: Vec<ParamChange>,
    sample: usize,
}

fn date_at(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<NaiveDate> {
    let parsed = v.as_str().filter(|s| s.len() == 10).and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok());
    if parsed.is_none() {
        errs.push(FieldError::new(field, "invalid_date", "a date YYYY-MM-DD"));
    }
    parsed
}

fn parse(body: &Value) -> Result<Parsed, Vec<FieldError>> {
    let mut errs = only_fields(body, &["county", "from", "to", "changes", "sample"]);
    let county = match body.get("county") {
        Some(Value::String(s)) => County::parse(s).or_else(|| {
            errs.push(FieldError::new("/county", "invalid_value", "`wuyi` or `changxing`"));
            None
        }),
        Some(_) => {
            errs.push(FieldError::new("/county", "invalid_type", "must be a string"));
            None
        }
        None => {
            if body.is_object() {
                errs.push(FieldError::new("/county", "required", "this field is required"));
            }
            None
        }
    };
    let from = body.get("from").filter(|v| !v.is_null()).and_then(|v| date_at(v, "/from", &mut errs));
    let to = body.get("to").filter(|v| !v.is_null()).and_then(|v| date_at(v, "/to", &mut errs));
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            errs.push(FieldError::new("/to", "out_of_range", "`to` is before `from`"));
        }
    }
    let sample = match body.get("sample").filter(|v| !v.is_null()) {
        None => DEFAULT_SAMPLE,
        Some(v) => match v.as_u64() {
            Some(n) if n as usize <= MAX_SAMPLE => n as usize,
            _ => {
                errs.push(FieldError::new("/sample", "out_of_range", format!("a whole number from 0 to {MAX_SAMPLE}")));
                0
            }
        },
    };
    let mut changes = Vec::new();
    match body.get("changes").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::Array(list)) if list.len() > MAX_CHANGES => {
            errs.push(FieldError::new("/changes", "out_of_range", format!("at most {MAX_CHANGES} changes")));
        }
        Some(Value::Array(list)) => {
            for (i, c) in list.iter().enumerate() {
                let base = format!("/changes/{i}");
                for f in only_fields(c, &["parameter", "value", "from"]) {
                    errs.push(FieldError { field: format!("{base}{}", f.field), ..f });
                }
                if !c.is_object() {
                    continue;
                }
                let parameter = match c.get("parameter") {
                    Some(Value::String(s)) if s.starts_with('/') && s.len() <= 300 => Some(s.clone()),
                    Some(Value::String(_)) => {
                        errs.push(FieldError::new(
                            format!("{base}/parameter"),
                            "invalid_format",
                            "a JSON pointer such as /annual_limit",
                        ));
                        None
                    }
                    Some(_) => {
                        errs.push(FieldError::new(format!("{base}/parameter"), "invalid_type", "must be a string"));
                        None
                    }
                    None => {
                        errs.push(FieldError::new(format!("{base}/parameter"), "required", "this field is required"));
                        None
                    }
                };
                let value = c.get("value").filter(|v| !v.is_null()).cloned();
                if value.is_none() {
                    errs.push(FieldError::new(format!("{base}/value"), "required", "this field is required"));
                }
                let from = c.get("from").filter(|v| !v.is_null());
                let from_date = from.and_then(|v| date_at(v, &format!("{base}/from"), &mut errs));
                if let (Some(parameter), Some(value)) = (parameter, value) {
                    if from.is_none() || from_date.is_some() {
                        changes.push(ParamChange { parameter, value, from: from_date });
                    }
                }
            }
        }
        Some(_) => errs.push(FieldError::new("/changes", "invalid_type", "must be an array of changes")),
    }
    match (errs.is_empty(), county) {
        (true, Some(county)) => Ok(Parsed { county, from, to, changes, sample }),
        _ => Err(errs),
    }
}

fn change_errors(errs: Vec<ChangeError>) -> ApiError {
    ApiError::Validation(
        errs.into_iter()
            .map(|e| FieldError::new(format!("/changes/{}/{}", e.index, e.field.as_str()), "invalid_value", e.message))
            .collect(),
    )
}

/// Replay a county's recorded claims under the policy in force and under
/// changed parameters, and compare the two.
///
/// Each run starts from an empty scratch ledger and sees the recorded claims
/// (event dates in `from..to`, revoked ones left out) in recording order, so
/// yearly limits, unique keys, cumulative caps and tranches act as they did.
/// Nothing is written to the real ledger; claims keep being decided while a
/// simulation runs. One simulation at a time per county.
#[utoipa::path(
    post, path = "/v1/simulations", tag = "simulations",
    request_body(content = SimulationRequest, example = json!({
        "county": "wuyi", "from": "2020-01-01", "to": "2021-12-31",
        "changes": [
            {"parameter": "/rules/qualification_training/levels/intermediate", "value": "1300"},
            {"parameter": "/annual_limit", "value": 2, "from": "2021-01-01"}
        ],
        "sample": 20
    })),
    responses(
        (status = 200, description = "Both runs' totals by kind and department, how many claims changed, and a sample of them", body = Comparison),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Auditors and administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad field; an unknown parameter, a value of the wrong shape or a change the policy's checks refuse names `/changes/N/parameter` or `/changes/N/value`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "A simulation of this county is running; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The recorded claims cannot be read now", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(name = "simulate", skip_all, fields(key_id = %caller.key_id))]
pub async fn simulate(
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Operation::Simulate)?;
    let body = read_json(&req, payload, BODY_LIMIT).await?;
    let p = parse(&body).map_err(ApiError::Validation)?;
    let baseline = state.policy.county(p.county);
    let simulated = baseline.with_changes(&p.changes).map_err(change_errors)?;
    let slot = state.simulations.take(p.county).ok_or(ApiError::RateLimited { retry_after_secs: RETRY_AFTER_SECS })?;
    let period = &baseline.common.period;
    let (from, to) = (p.from.unwrap_or(period.from), p.to.unwrap_or(period.to));
    let source = state.ledger.submissions(ReplayFilter { county: p.county, from, to }).map_err(ledger_error)?;
    let directory = state.ledger.directory(p.county);
    let st = state.clone();
    let started = std::time::Instant::now();
    // The slot goes with the work: a client that hangs up does not free it
    // while the replay still runs.
    let result = web::block(move || {
        let _slot = slot;
        let sim = Simulation {
            baseline: st.policy.county(p.county),
            simulated: &simulated,
            directory: &directory,
            from,
            to,
            sample: p.sample,
        };
        sim.run(source, &st.sealer, &st.pseudonymizer)
    })
    .await
    .map_err(|e| ledger_error(LedgerError::Unavailable(e.to_string())))?;
    let comparison = result.map_err(ledger_error)?;
    tracing::info!(
        county = %p.county,
        claims = comparison.claims_replayed,
        changed = comparison.changed.claims,
        ms = started.elapsed().as_millis() as u64,
        "simulation finished"
    );
    Ok(HttpResponse::Ok().json(comparison))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Vec<String> {
        match parse(&v) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = json!({
            "county": "hangzhou", "from": "2020-13-01", "to": 5, "sample": 1001, "extra": 1,
            "changes": [
                {"parameter": "annual_limit", "value": 2},
                {"value": 2, "from": "2021-02-30", "note": "x"},
                {"parameter": "/annual_limit"}
            ]
        });
        let mut got = fields(bad);
        got.sort();
        let mut want = vec![
            "/county",
            "/from",
            "/to",
            "/sample",
            "/extra",
            "/changes/0/parameter",
            "/changes/1/parameter",
            "/changes/1/from",
            "/changes/1/note",
            "/changes/2/value",
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(fields(json!({"county": "wuyi", "from": "2021-01-01", "to": "2020-01-01"})), vec!["/to"]);
        assert_eq!(fields(json!({"county": "wuyi", "changes": {}})), vec!["/changes"]);
        assert!(fields(json!({"county": "changxing", "changes": [], "sample": 0})).is_empty());
    }

    #[test]
    fn one_simulation_per_county_at_a_time() {
        let running = Running::default();
        let slot = running.take(County::Wuyi).expect("free");
        assert!(running.take(County::Wuyi).is_none(), "taken");
        assert!(running.take(County::Changxing).is_some(), "another county is free");
        drop(slot);
        assert!(running.take(County::Wuyi).is_some(), "given back");
    }
}
