//! Bearer-key authentication and the one table of who may do what (API.md §1).

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpMessage, HttpRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::access::{allowed, demo_key_hashes, roles_of, sha256_hex, Operation, Role, DEMO_KEYS, PERMISSIONS};
use crate::configuration::{Bucket, KeySettings, RateLimitSettings};
use crate::domain::CreditCode;
use crate::problem::ApiError;

type Limiter = governor::DefaultDirectRateLimiter;

struct KeyEntry {
    id: String,
    hash: [u8; 32],
    role: Role,
    credit_code: Option<CreditCode>,
    limiter: Option<Limiter>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry").field("id", &self.id).field("role", &self.role).finish_non_exhaustive()
    }
}

fn limiter(bucket: Bucket) -> Option<Limiter> {
    let rate = std::num::NonZeroU32::new(bucket.per_second)?;
    let burst = std::num::NonZeroU32::new(bucket.burst.max(bucket.per_second)).unwrap_or(rate);
    Some(governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst)))
}

/// The configured keys, by hash only, each with its token bucket.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    keys: Arc<Vec<KeyEntry>>,
}

impl KeyTable {
    pub fn new(keys: &[KeySettings], limits: &RateLimitSettings) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for k in keys {
            let mut hash = [0u8; 32];
            if !crate::privacy::decode_hex(&k.key_sha256, &mut hash) {
                anyhow::bail!("key `{}`: key_sha256 must be 64 hex digits", k.id);
            }
            let credit_code = match &k.credit_code {
                Some(c) => Some(CreditCode::parse(c, "").map_err(|e| anyhow::anyhow!("{}", e.message))?),
                None => None,
            };
            // Checked here as well as with the settings: an institution key
            // without its credit code would be scoped to nothing, i.e. see all.
            if k.role == Role::Institution && credit_code.is_none() {
                anyhow::bail!("key `{}`: an institution key needs its credit_code", k.id);
            }
            let bucket = k.rate_limit.unwrap_or_else(|| limits.for_role(k.role));
            let limiter = if limits.enabled { limiter(bucket) } else { None };
            out.push(KeyEntry { id: k.id.clone(), hash, role: k.role, credit_code, limiter });
        }
        Ok(Self { keys: Arc::new(out) })
    }

    /// Compares the presented key's hash with every configured hash in
    /// constant time, so timing tells nothing about which key is close.
    fn find(&self, presented: &str) -> Option<&KeyEntry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for k in self.keys.iter() {
            if bool::from(k.hash.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found
    }
}

/// The credit code an institution's key acts for, put in the request's
/// extensions when the key is authenticated; what it is answered is cut to
/// what it may read (`routes::holders`).
#[derive(Debug, Clone)]
pub struct InstitutionScope(pub String);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    /// Set for institution keys.
    pub credit_code: Option<CreditCode>,
}

impl Caller {
    pub fn require(&self, op: Operation) -> Result<(), ApiError> {
        if allowed(self.role, op) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "A key of role {} may not {}; this takes a key of role {}",
                self.role.as_str(),
                op.describe(),
                roles_of(op).iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ")
            )))
        }
    }

    /// For institution keys: the credit code every claim they touch must name.
    pub fn scope(&self) -> Option<&str> {
        match self.role {
            Role::Institution => self.credit_code.as_ref().map(|c| c.as_str()),
            _ => None,
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let table = req
        .app_data::<web::Data<KeyTable>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("key table missing")))?;
    let value =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(ApiError::Unauthenticated)?;
    let (scheme, key) = value.trim().split_once(' ').ok_or(ApiError::Unauthenticated)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthenticated);
    }
    let entry = table.find(key.trim()).ok_or(ApiError::Unauthenticated)?;
    if let Some(l) = &entry.limiter {
        if let Err(not_until) = l.check() {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            return Err(ApiError::RateLimited { retry_after_secs: wait.as_secs().max(1) });
        }
    }
    let caller = Caller { key_id: entry.id.clone(), role: entry.role, credit_code: entry.credit_code.clone() };
    if let Some(scope) = caller.scope() {
        // What it is answered is cut to what it may read (routes::holders).
        req.extensions_mut().insert(InstitutionScope(scope.to_string()));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{Bucket, KeySettings, RateLimitSettings};

    #[test]
    fn an_institution_key_without_its_credit_code_is_refused() {
        let bucket = Bucket { per_second: 1, burst: 1 };
        let limits =
            RateLimitSettings { enabled: false, platform: bucket, institution: bucket, auditor: bucket, admin: bucket };
        let key = |role, credit_code: Option<&str>| KeySettings {
            id: "k".into(),
            role,
            key_sha256: "ab".repeat(32),
            credit_code: credit_code.map(str::to_string),
            rate_limit: None,
        };
        let Err(refused) = KeyTable::new(&[key(Role::Institution, None)], &limits) else { panic!("refused") };
        assert!(refused.to_string().contains("credit_code"), "{refused}");
        assert!(KeyTable::new(&[key(Role::Institution, Some("91330723MA0DEMQ01N"))], &limits).is_ok());
        assert!(KeyTable::new(&[key(Role::Platform, None)], &limits).is_ok());
    }
}
