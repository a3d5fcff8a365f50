//! `POST /v1/simulations`: policy what-if over the recorded claims (API.md §8).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Datelike as _;

use super::{ledger_error, read_json, AppState};
use crate::auth::{Caller, Operation};
use crate::domain::County;
use crate::ledger::{LedgerError, ReplayFilter};
use crate::problem::{ApiError, Problem};
use crate::simulation::{check_request, Checked, Comparison, Simulation, SimulationError, SimulationRequest};

/// Seconds a client is asked to wait while its county's simulation runs.
const RETRY_AFTER_SECS: u64 = 5;
const BODY_LIMIT: usize = 256 * 1024;

/// The counties with a simulation running: one at a time per county, so that
/// what-if questions cannot crowd out the claims being decided; and the
/// requests' checks (each change loads the policy), one at a time too.
#[derive(Debug)]
pub struct Running {
    counties: Arc<Mutex<HashSet<County>>>,
    checks: tokio::sync::Semaphore,
}

impl Default for Running {
    fn default() -> Self {
        Self { counties: Default::default(), checks: tokio::sync::Semaphore::new(1) }
    }
}

/// A county's simulation slot, given back when dropped.
pub struct Slot {
    running: Arc<Mutex<HashSet<County>>>,
    county: County,
}

impl Running {
    pub fn take(&self, county: County) -> Option<Slot> {
        let mut set = self.counties.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(county).then(|| Slot { running: self.counties.clone(), county })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.county);
    }
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
    post, path = "/v1/simulations", operation_id = "runSimulation", tag = "simulations",
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
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "A simulation of this county is running; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The recorded claims cannot be read now, or the replay failed (logged); nothing was written", body = Problem, content_type = "application/problem+json"),
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
    // Checked before the county's slot is taken, so that every bad field is
    // named whether or not a simulation is running: off the worker and one
    // request at a time (each change loads the policy).
    let checking =
        state.simulations.checks.acquire().await.map_err(|e| ledger_error(LedgerError::Unavailable(e.to_string())))?;
    let st = state.clone();
    let checked = web::block(move || check_request(&body, &st.policy)).await;
    drop(checking);
    let Checked { county, sample, from, to, simulated } =
        checked.map_err(|e| ledger_error(LedgerError::Unavailable(e.to_string())))?.map_err(ApiError::Validation)?;
    let slot = state.simulations.take(county).ok_or(ApiError::RateLimited { retry_after_secs: RETRY_AFTER_SECS })?;
    let source = state.ledger.submissions(ReplayFilter { county, from, to }).map_err(ledger_error)?;
    // A sizing hint: the grants recorded in the window's years within the
    // policy's period (no grant is dated outside it).
    let period = &state.policy.county(county).common.period;
    let years = from.max(period.from).year()..=to.min(period.to).year();
    let mut grants = 0u64;
    for year in years {
        let report = state.ledger.report(county, year).await.map_err(ledger_error)?;
        grants += report.by_kind.values().map(|t| t.count).sum::<u64>();
    }
    // The directory in force (for several replicas, as the database has it).
    // It is read apart from the replay's snapshot: a directory put between
    // the two is the one the simulated decisions cite, as a claim decided
    // then would.
    let directory = state.ledger.directory(county).await.map_err(ledger_error)?;
    // A client that hangs up stops the replay at its next chunk.
    let cancel = CancelOnDrop::default();
    let (st, cancelled) = (state.clone(), cancel.0.clone());
    let started = std::time::Instant::now();
    // The slot goes with the work: it is given back when the replay has stopped.
    let result = web::block(move || {
        let _slot = slot;
        let baseline = st.policy.county(county);
        let grants = usize::try_from(grants).unwrap_or(usize::MAX);
        let sim = Simulation { baseline, simulated: &simulated, directory: &directory, from, to, sample, grants };
        sim.run(source, &st.sealer, &st.pseudonymizer, &cancelled).map_err(simulation_error)
    })
    .await
    .map_err(|e| ledger_error(LedgerError::Unavailable(e.to_string())))?;
    let comparison = result?;
    tracing::info!(
        county = %county,
        claims = comparison.claims_replayed,
        changed = comparison.changed.claims,
        ms = started.elapsed().as_millis() as u64,
        "simulation finished"
    );
    drop(cancel);
    Ok(HttpResponse::Ok().json(comparison))
}

/// Set when the request's future is dropped (the client went away).
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn simulation_error(e: SimulationError) -> ApiError {
    match e {
        SimulationError::Store(e) => ledger_error(e),
        // A failed replay is not the caller's fault and may pass (a rules
        // bug is fixed by a release): the same answer as an unreadable store.
        SimulationError::Replay(why) => {
            tracing::error!(error = %why, "simulation failed");
            ApiError::StoreUnavailable
        }
        // Nobody is waiting for this answer.
        SimulationError::Cancelled => ApiError::RequestTimeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
