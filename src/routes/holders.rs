//! Institutions read only their own claims, and that holds for the claim
//! ids a decision names too: a reason's `held_by` (the claim that already
//! holds a key) is left out of what an institution is answered when that
//! claim is not one it may read. The reason itself stays.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_TYPE;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{Error, HttpMessage};

use super::AppState;

/// The credit code an institution's key acts for, put in the request's
/// extensions when the key is authenticated.
#[derive(Debug, Clone)]
pub struct InstitutionScope(pub String);

/// How a `held_by` is written in every JSON answer: compact, after the
/// reason's other fields. A claim id is `[A-Za-z0-9._:-]`, so it ends at the
/// next quote; inside a JSON string a quote is escaped, so these bytes
/// never occur in a value.
const HELD_BY: &[u8] = br#","held_by":""#;

/// Middleware: an institution's JSON answers without the `held_by`s of
/// claims it may not read.
pub async fn hide_foreign_holders(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, Error> {
    let res = next.call(req).await?;
    let scope = res.request().extensions().get::<InstitutionScope>().map(|s| s.0.clone());
    let json = res.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let Some(scope) = scope.filter(|_| json) else {
        return Ok(res.map_into_left_body());
    };
    let state = res.request().app_data::<web::Data<AppState>>().cloned();
    let (request, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.map_err(|e| {
        let e: Box<dyn std::error::Error> = e.into();
        actix_web::error::ErrorInternalServerError(e.to_string())
    })?;
    let bytes = match state {
        Some(state) if find(&bytes, HELD_BY, 0).is_some() => without_foreign_holders(&bytes, &scope, &state).await,
        _ => bytes,
    };
    Ok(ServiceResponse::new(request, head.set_body(bytes).map_into_boxed_body()).map_into_right_body())
}

/// `text` without each `,"held_by":"<id>"` whose claim the institution may
/// not read (or that cannot be read now).
async fn without_foreign_holders(text: &Bytes, scope: &str, state: &AppState) -> Bytes {
    let mut out = Vec::with_capacity(text.len());
    let mut known: Vec<(String, bool)> = Vec::new();
    let mut from = 0;
    while let Some(at) = find(text, HELD_BY, from) {
        let id_start = at + HELD_BY.len();
        let Some(id_end) = find(text, b"\"", id_start) else { break };
        let id = String::from_utf8_lossy(&text[id_start..id_end]).into_owned();
        let visible = match known.iter().find(|(k, _)| *k == id) {
            Some((_, v)) => *v,
            None => {
                let v = matches!(state.ledger.claim(&id).await, Ok(Some(c)) if c.header.visible_to(Some(scope)));
                known.push((id, v));
                v
            }
        };
        out.extend_from_slice(&text[from..at]);
        if visible {
            out.extend_from_slice(&text[at..id_end + 1]);
        }
        from = id_end + 1;
    }
    out.extend_from_slice(&text[from..]);
    Bytes::from(out)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_from_an_offset() {
        assert_eq!(find(b"abcabc", b"bc", 0), Some(1));
        assert_eq!(find(b"abcabc", b"bc", 2), Some(4));
        assert_eq!(find(b"abc", b"bc", 9), None);
        assert_eq!(find(br#"{"a":1,"held_by":"X-1"}"#, HELD_BY, 0), Some(6));
    }
}
