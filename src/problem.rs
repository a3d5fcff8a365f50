//! The one mapping from failures to HTTP: every error is
//! `application/problem+json` (RFC 9457) with a stable `code` (API.md §2).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares the error codes as one table: code, HTTP status and title.
macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:ident, $title:literal;)+) => {
        /// Stable error codes of API.md §2.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ErrorCode {
            $($variant,)+
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant),+];

            /// The code's row of the table: (code, status, title).
            fn row(self) -> (&'static str, StatusCode, &'static str) {
                match self {
                    $(Self::$variant => ($code, StatusCode::$status, $title),)+
                }
            }
        }
    };
}

error_codes! {
    MalformedJson = "MALFORMED_JSON", BAD_REQUEST, "The body is not valid JSON";
    ValidationFailed = "VALIDATION_FAILED", UNPROCESSABLE_ENTITY, "The request is not valid";
    Unauthenticated = "UNAUTHENTICATED", UNAUTHORIZED, "A valid API key is required";
    Forbidden = "FORBIDDEN", FORBIDDEN, "This key may not perform this operation";
    NotFound = "NOT_FOUND", NOT_FOUND, "Not found";
    MethodNotAllowed = "METHOD_NOT_ALLOWED", METHOD_NOT_ALLOWED, "Method not allowed on this resource";
    ClaimIdConflict = "CLAIM_ID_CONFLICT", CONFLICT, "The claim id was already used with a different body";
    ClaimNotRevocable = "CLAIM_NOT_REVOCABLE", CONFLICT, "The claim cannot be revoked";
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", PAYLOAD_TOO_LARGE, "The body is larger than allowed";
    RequestTimeout = "REQUEST_TIMEOUT", REQUEST_TIMEOUT, "The body did not arrive in time";
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE", UNSUPPORTED_MEDIA_TYPE, "The body must be application/json";
    RateLimited = "RATE_LIMITED", TOO_MANY_REQUESTS, "Too many requests";
    StoreUnavailable = "STORE_UNAVAILABLE", SERVICE_UNAVAILABLE, "The decision store is unavailable";
    Internal = "INTERNAL", INTERNAL_SERVER_ERROR, "Internal error";
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    pub fn status(self) -> StatusCode {
        self.row().1
    }

    pub fn title(self) -> &'static str {
        self.row().2
    }
}

pub use crate::domain::FieldError;

/// Refuses unknown fields of a small JSON object body, listing them all.
pub fn only_fields(v: &serde_json::Value, allowed: &[&str]) -> Vec<FieldError> {
    match v.as_object() {
        Some(m) => m
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                FieldError::new(
                    crate::domain::pointer("", k),
                    "unknown_field",
                    "this field is not part of this request",
                )
            })
            .collect(),
        None => vec![FieldError::new("", "invalid_type", "the body must be a JSON object")],
    }
}

/// The problem+json body (RFC 9457).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
}

/// Every failure a request can meet.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("unauthenticated")]
    Unauthenticated,
    /// Why the key may not: which roles may, or whose claims it may touch.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("claim id conflict")]
    ClaimIdConflict(String),
    #[error("claim not revocable: {0}")]
    ClaimNotRevocable(String),
    #[error("payload too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    #[error("request body timed out")]
    RequestTimeout,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("store unavailable")]
    StoreUnavailable,
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedJson(_) => ErrorCode::MalformedJson,
            Self::Validation(_) => ErrorCode::ValidationFailed,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::ClaimIdConflict(_) => ErrorCode::ClaimIdConflict,
            Self::ClaimNotRevocable(_) => ErrorCode::ClaimNotRevocable,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::RequestTimeout => ErrorCode::RequestTimeout,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::StoreUnavailable => ErrorCode::StoreUnavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn validation(field: &str, code: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, code, message)])
    }

    /// The body a client sees: never an internal cause.
    pub fn problem(&self) -> Problem {
        let code = self.code();
        let detail = match self {
            Self::MalformedJson(e) => format!("The body could not be parsed as JSON: {e}"),
            Self::Validation(errs) => format!("{} field(s) are not valid; see errors", errs.len()),
            Self::Unauthenticated => "Send `Authorization: Bearer <api key>` with a configured key".into(),
            Self::Forbidden(why) => why.clone(),
            Self::NotFound(what) => what.clone(),
            Self::MethodNotAllowed => "This resource does not support this method".into(),
            Self::ClaimIdConflict(id) => {
                format!("Claim id `{id}` was already submitted with a different body")
            }
            Self::ClaimNotRevocable(why) => why.clone(),
            Self::PayloadTooLarge(limit) => format!("The body exceeds {limit} bytes"),
            Self::RequestTimeout => "Send the whole body promptly".into(),
            Self::UnsupportedMediaType => "Send `Content-Type: application/json`".into(),
            Self::RateLimited { retry_after_secs } => {
                format!("Retry after {retry_after_secs} second(s)")
            }
            Self::StoreUnavailable => {
                "The decision store cannot be read or written now; this answer acknowledges nothing. Retry later \
                 (a claim with the same claim_id: if it was recorded after all, it is replayed)"
                    .into()
            }
            Self::Internal(_) => "An unexpected error occurred; it has been logged".into(),
        };
        Problem {
            type_: format!("urn:subsidy-service:problem:{}", code.as_str().to_ascii_lowercase()),
            title: code.title().to_string(),
            status: code.status().as_u16(),
            detail,
            code,
            errors: match self {
                Self::Validation(errs) => errs.clone(),
                _ => Vec::new(),
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(e) = self {
            tracing::error!(error = %format!("{e:#}"), "internal error");
        }
        let mut resp = HttpResponse::build(self.status_code());
        resp.content_type("application/problem+json");
        match self {
            Self::Unauthenticated => {
                resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::RateLimited { retry_after_secs } => {
                resp.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Self::StoreUnavailable => {
                resp.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        resp.json(self.problem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire name, the table's code and the document's enum agree.
    #[test]
    fn every_error_code_is_written_as_its_table_code() {
        let schema = serde_json::to_value(<ErrorCode as utoipa::PartialSchema>::schema()).unwrap();
        let documented: Vec<&str> = schema["enum"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        let table: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(documented, table);
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
