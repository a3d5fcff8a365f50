//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::problem::{ApiError, Problem};

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "operations", responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into() })
}

/// Readiness: the store is open and takes a write and a flush.
#[utoipa::path(get, path = "/readyz", operation_id = "getReadiness", tag = "operations", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "The store cannot be written", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.ledger.probe().await {
        Ok(()) => Ok(HttpResponse::Ok().json(Health { status: "ready".into() })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness probe failed");
            Err(ApiError::StoreUnavailable)
        }
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.observe_ledger(&state.ledger.stats());
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
