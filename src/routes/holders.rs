//! Institutions read only their own claims, and that holds for the claim
//! ids a decision names too: a reason's `held_by` (the claim that already
//! holds a key) is left out of what an institution is answered when that
//! claim is not one it may read. The reason itself stays.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_TYPE;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{Error, HttpMessage, ResponseError};

use super::AppState;
use crate::auth::InstitutionScope;
use crate::problem::ApiError;

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
    let bytes = match actix_web::body::to_bytes(body).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // In-memory JSON bodies cannot fail; answered like any failure.
            let e: Box<dyn std::error::Error> = e.into();
            let problem = ApiError::Internal(anyhow::anyhow!("reading an answer's body: {e}")).error_response();
            return Ok(ServiceResponse::new(request, problem).map_into_right_body());
        }
    };
    let holders = count(&bytes, b"\"held_by\"");
    let bytes = match state {
        Some(state) if holders > 0 => filter(bytes, holders, &scope, &state).await,
        _ => bytes,
    };
    Ok(ServiceResponse::new(request, head.set_body(bytes).map_into_boxed_body()).map_into_right_body())
}

/// The answer (`holders`: how many `"held_by"` it has) without the
/// `held_by`s the institution may not read: cut from the text as serde_json
/// writes it, or, should a `held_by` be written in another way, from the
/// parsed JSON (failing closed: an answer that cannot be parsed loses
/// nothing but is not sent with an unchecked id either).
async fn filter(text: Bytes, holders: usize, scope: &str, state: &AppState) -> Bytes {
    let mut visible = Visible::default();
    if holders == count(&text, HELD_BY) {
        return without_foreign_holders(&text, scope, state, &mut visible).await;
    }
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        tracing::error!("an answer with held_by could not be read to check it: withheld");
        return Bytes::from_static(b"{}");
    };
    let mut ids = Vec::new();
    holders_in(&v, &mut ids);
    for id in ids {
        visible.check(&id, scope, state).await;
    }
    strip(&mut v, &visible);
    serde_json::to_vec(&v).map(Bytes::from).unwrap_or_else(|_| Bytes::from_static(b"{}"))
}

/// Which holders the institution may read, each looked up once.
#[derive(Default)]
struct Visible(std::collections::HashMap<String, bool>);

impl Visible {
    async fn check(&mut self, id: &str, scope: &str, state: &AppState) -> bool {
        if let Some(v) = self.0.get(id) {
            return *v;
        }
        let v = match state.ledger.claim(id).await {
            Ok(Some(c)) => c.header.visible_to(Some(scope)),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "a holding claim could not be read: its id is left out");
                false
            }
        };
        self.0.insert(id.to_string(), v);
        v
    }

    fn allows(&self, id: &str) -> bool {
        self.0.get(id).copied().unwrap_or(false)
    }
}

fn holders_in(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(h) = m.get("held_by").and_then(|h| h.as_str()) {
                out.push(h.to_string());
            }
            m.values().for_each(|x| holders_in(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| holders_in(x, out)),
        _ => {}
    }
}

fn strip(v: &mut serde_json::Value, visible: &Visible) {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("held_by").is_some_and(|h| !h.as_str().is_some_and(|id| visible.allows(id))) {
                m.remove("held_by");
            }
            m.values_mut().for_each(|x| strip(x, visible));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| strip(x, visible)),
        _ => {}
    }
}

/// `text` without each `,"held_by":"<id>"` whose claim the institution may
/// not read (or that cannot be read now).
async fn without_foreign_holders(text: &Bytes, scope: &str, state: &AppState, known: &mut Visible) -> Bytes {
    let mut out = Vec::with_capacity(text.len());
    let mut from = 0;
    while let Some(at) = find(text, HELD_BY, from) {
        let id_start = at + HELD_BY.len();
        let Some(id_end) = find(text, b"\"", id_start) else { break };
        let id = String::from_utf8_lossy(&text[id_start..id_end]).into_owned();
        let visible = known.check(&id, scope, state).await;
        out.extend_from_slice(&text[from..at]);
        if visible {
            out.extend_from_slice(&text[at..id_end + 1]);
        }
        from = id_end + 1;
    }
    out.extend_from_slice(&text[from..]);
    Bytes::from(out)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_holders_not_allowed_wherever_they_are() {
        let mut v =
            serde_json::json!({"reasons": [{"code": "D", "held_by": "A-1"}, {"held_by": "B-1"}], "x": {"held_by": 5}});
        let mut ids = Vec::new();
        holders_in(&v, &mut ids);
        assert_eq!(ids, ["A-1", "B-1"]);
        let visible = Visible([("B-1".to_string(), true)].into_iter().collect());
        strip(&mut v, &visible);
        assert_eq!(v, serde_json::json!({"reasons": [{"code": "D"}, {"held_by": "B-1"}], "x": {}}));
        assert_eq!(count(br#"{"held_by":"A","held_by" :"B"}"#, b"\"held_by\""), 2);
        assert_eq!(count(br#"{"x":1,"held_by":"A","held_by" :"B"}"#, HELD_BY), 1);
    }

    #[test]
    fn finds_from_an_offset() {
        assert_eq!(find(b"abcabc", b"bc", 0), Some(1));
        assert_eq!(find(b"abcabc", b"bc", 2), Some(4));
        assert_eq!(find(b"abc", b"bc", 9), None);
        assert_eq!(find(br#"{"a":1,"held_by":"X-1"}"#, HELD_BY, 0), Some(6));
    }
}
