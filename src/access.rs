//! Roles, operations and the one table of who may do what (API.md §1), with
//! the demo keys of the local profile. Authentication (`auth`) and the
//! settings (`configuration`) both read it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Platform,
    Institution,
    Auditor,
    Admin,
}

/// Every authenticated operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    SubmitClaim,
    SubmitBatch,
    Evaluate,
    ReadClaim,
    ListClaims,
    ReadClaimEvents,
    RevokeClaim,
    QueryUsage,
    ReadDirectory,
    WriteDirectory,
    ReadReport,
    Simulate,
}

use Operation as Op;
use Role::*;

/// Which role may call which operation: the only place this is decided.
/// Institutions are further limited to their own claims by the handlers.
pub const PERMISSIONS: &[(Operation, &[Role])] = &[
    (Op::SubmitClaim, &[Platform, Institution]),
    (Op::SubmitBatch, &[Platform, Institution]),
    (Op::Evaluate, &[Platform, Institution, Auditor, Admin]),
    (Op::ReadClaim, &[Platform, Auditor, Institution]),
    (Op::ListClaims, &[Platform, Auditor, Institution]),
    (Op::ReadClaimEvents, &[Platform, Auditor, Institution]),
    (Op::RevokeClaim, &[Platform]),
    (Op::QueryUsage, &[Platform, Auditor]),
    (Op::ReadDirectory, &[Auditor, Admin]),
    (Op::WriteDirectory, &[Admin]),
    (Op::ReadReport, &[Auditor, Admin]),
    (Op::Simulate, &[Auditor, Admin]),
];

/// The roles that may perform `op`.
pub fn roles_of(op: Operation) -> &'static [Role] {
    PERMISSIONS.iter().find(|(o, _)| *o == op).map_or(&[], |(_, roles)| roles)
}

impl Role {
    pub const ALL: [Role; 4] = [Platform, Institution, Auditor, Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform => "platform",
            Institution => "institution",
            Auditor => "auditor",
            Admin => "admin",
        }
    }
}

impl Operation {
    /// What the operation does, with its route, for people reading a 403 or the API document.
    pub fn describe(self) -> &'static str {
        match self {
            Op::SubmitClaim => "submit a claim (POST /v1/claims)",
            Op::SubmitBatch => "submit a batch of claims (POST /v1/claims/batch)",
            Op::Evaluate => "evaluate a claim (POST /v1/evaluations)",
            Op::ReadClaim => "read a recorded claim (GET /v1/claims/{id}, …/submission)",
            Op::ListClaims => "list recorded claims (GET /v1/claims)",
            Op::ReadClaimEvents => "read a claim's history (GET /v1/claims/{id}/events)",
            Op::RevokeClaim => "revoke a claim (POST /v1/claims/{id}/revocation)",
            Op::QueryUsage => "query a person's yearly usage (POST /v1/usage/query)",
            Op::ReadDirectory => "read a trade-friction directory (GET /v1/directories/…)",
            Op::WriteDirectory => "replace a trade-friction directory (PUT /v1/directories/…)",
            Op::ReadReport => "read a report (GET /v1/reports/{county}/{year})",
            Op::Simulate => "run a policy simulation (POST /v1/simulations)",
        }
    }
}

pub fn allowed(role: Role, op: Operation) -> bool {
    PERMISSIONS.iter().any(|(o, roles)| *o == op && roles.contains(&role))
}

/// The demo keys of the local profile (README); production refuses them.
pub const DEMO_KEYS: [&str; 4] =
    ["local-platform-key", "local-institution-key", "local-auditor-key", "local-admin-key"];

pub fn sha256_hex(s: &str) -> String {
    faster_hex::hex_string(&Sha256::digest(s.as_bytes()))
}

pub fn demo_key_hashes() -> Vec<String> {
    DEMO_KEYS.iter().map(|k| sha256_hex(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_writes_directories_and_only_platform_revokes() {
        for role in [Platform, Institution, Auditor, Admin] {
            assert_eq!(allowed(role, Op::WriteDirectory), role == Admin);
            assert_eq!(allowed(role, Op::RevokeClaim), role == Platform);
        }
    }

    #[test]
    fn every_operation_has_a_row() {
        let ops = [
            Op::SubmitClaim,
            Op::SubmitBatch,
            Op::Evaluate,
            Op::ReadClaim,
            Op::ListClaims,
            Op::ReadClaimEvents,
            Op::RevokeClaim,
            Op::QueryUsage,
            Op::ReadDirectory,
            Op::WriteDirectory,
            Op::ReadReport,
            Op::Simulate,
        ];
        for op in ops {
            assert_eq!(PERMISSIONS.iter().filter(|(o, _)| *o == op).count(), 1, "{op:?}");
        }
    }
}
