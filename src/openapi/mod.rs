//! The OpenAPI 3.1 document, generated from the code. `openapi/openapi.json`
//! is its checked-in copy (regenerate: `cargo run -- openapi > openapi/openapi.json`).

use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{example::ExampleBuilder, RefOr};
use utoipa::{Modify, OpenApi};

mod examples;

pub use examples::{claim_examples, decision_example, problem_example};

use crate::domain::*;
use crate::problem::{ErrorCode, FieldError, Problem};
use crate::routes;
use crate::rules::{Decision, PolicyRef, Reason, ReasonCode, Revocation, Severity, Status, Step, Usage};

/// Who may do what: the demo keys and the permission table, from the code.
fn start_here() -> String {
    use crate::auth::{roles_of, Role, DEMO_KEYS, PERMISSIONS};
    let mut t = String::from(
        "## Start here\n\nPress **Authorize** and paste a key. The local profile ships one demo key per role \
         (the production profile refuses them):\n\n| role | demo key | may |\n|---|---|---|\n",
    );
    for (role, key) in Role::ALL.iter().zip(DEMO_KEYS) {
        let may: Vec<&str> =
            PERMISSIONS.iter().filter(|(op, _)| roles_of(*op).contains(role)).map(|(op, _)| op.describe()).collect();
        t.push_str(&format!("| {} | `{key}` | {} |\n", role.as_str(), may.join("; ")));
    }
    t.push_str(
        "\nAn institution key is bound to one credit code and sees only claims naming it. Policies, reason codes, \
         health, readiness and metrics need no key. A refused operation answers `403 FORBIDDEN` naming the roles \
         that may perform it.",
    );
    t
}

struct Extras;

impl Modify for Extras {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("API key: `Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
        api.info.description = Some(format!("{}\n\n{}", api.info.description.take().unwrap_or_default(), start_here()));
        // Public operations need no key: say so, rather than inherit nothing.
        for path in ["/healthz", "/readyz", "/metrics", "/v1/policies", "/v1/policies/{county}", "/v1/reason-codes"] {
            if let Some(op) = api.paths.paths.get_mut(path).and_then(|i| i.get.as_mut()) {
                op.security = Some(Vec::new());
            }
        }
        // Examples of every kind on the claim operations, taken from the code
        // that a test submits to a fresh server.
        for path in ["/v1/claims", "/v1/evaluations"] {
            let body = api.paths.paths.get_mut(path).and_then(|item| item.post.as_mut()).and_then(request_json);
            if let Some(content) = body {
                for (name, value) in claim_examples() {
                    content
                        .examples
                        .insert(name.to_string(), RefOr::T(ExampleBuilder::new().value(Some(value)).build()));
                }
            }
        }
        add_keyed_responses(api);
        add_response_examples(api);
        let batch = api.paths.paths.get_mut("/v1/claims/batch").and_then(|item| item.post.as_mut());
        if let Some(content) = batch.and_then(request_json) {
            let claims: Vec<Value> = claim_examples().into_iter().take(2).map(|(_, v)| v).collect();
            content.examples.insert(
                "two_claims".into(),
                RefOr::T(ExampleBuilder::new().value(Some(json!({"claims": claims}))).build()),
            );
        }
    }
}

/// The JSON request body of an operation.
fn request_json(op: &mut utoipa::openapi::path::Operation) -> Option<&mut utoipa::openapi::content::Content> {
    match op.request_body.as_mut()? {
        RefOr::T(body) => match body.content.get_mut("application/json")? {
            RefOr::T(content) => Some(content),
            RefOr::Ref(_) => None,
        },
        RefOr::Ref(_) => None,
    }
}

/// Every operation of the document.
fn operations(api: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    api.paths.paths.values_mut().flat_map(|item| {
        [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
            .into_iter()
            .filter_map(Option::as_mut)
    })
}

/// The answers every operation that takes a key can give besides its own:
/// `429` (the key's rate limit, checked with the key), `503` (every such
/// operation reads the ledger), and with a body `413` and `408` (its size
/// and time limits). Each operation's own text, where it has one, stays.
fn add_keyed_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};
    let problem = || ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let retry_after = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
        .description(Some("Seconds to wait"))
        .build();
    let answer = |description: &str| {
        ResponseBuilder::new().description(description).content("application/problem+json", problem())
    };
    for op in operations(api) {
        if op.security.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        let mut common = vec![
            (
                "429",
                answer("Rate limited: this key's requests are over its rate; retry after `Retry-After` seconds")
                    .header("Retry-After", retry_after.clone()),
            ),
            ("503", answer("Store unavailable: the ledger cannot be read now; retry later")),
        ];
        // A body is read under a size limit and a time limit.
        if op.request_body.is_some() {
            common.push(("413", answer("Body over the limit")));
            common.push(("408", answer("The body did not arrive in time (`server.body_timeout_ms`)")));
        }
        for (status, response) in common {
            op.responses.responses.entry(status.into()).or_insert_with(|| response.into());
        }
    }
}

/// A problem example for every error code a response's status can carry,
/// and a decision example beside every decision.
fn add_response_examples(api: &mut utoipa::openapi::OpenApi) {
    let example = |value: Value| RefOr::T(ExampleBuilder::new().value(Some(value)).build());
    for op in operations(api) {
        for (status, response) in op.responses.responses.iter_mut() {
            let RefOr::T(response) = response else { continue };
            // Codes of the status; those the description names, when it names any.
            let of_status: Vec<ErrorCode> =
                ErrorCode::ALL.iter().copied().filter(|c| c.status().as_str() == status).collect();
            let named: Vec<ErrorCode> =
                of_status.iter().copied().filter(|c| response.description.contains(c.as_str())).collect();
            let codes = if named.is_empty() { of_status } else { named };
            if let Some(RefOr::T(content)) = response.content.get_mut("application/problem+json") {
                for code in &codes {
                    content.examples.insert(code.as_str().to_string(), example(problem_example(*code)));
                }
            }
            if let Some(RefOr::T(content)) = response.content.get_mut("application/json") {
                let is_decision =
                    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Decision"));
                if is_decision {
                    content.examples.insert("approved".into(), example(decision_example()));
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "subsidy-service",
        description = "Adjudicates vocational-training and skill subsidies under the Wuyi (武人社〔2020〕21号) and Changxing (长政办发〔2020〕7号) 2020–2021 skill-upgrade plans. Every decision is explained by reason codes and cites its clauses and the policy version. Errors are `application/problem+json`.",
        license(name = "MIT", url = "https://opensource.org/license/mit")
    ),
    servers((url = "/", description = "This service (the origin the document is read from)")),
    paths(
        routes::claims::submit, routes::claims::batch, routes::claims::evaluate, routes::claims::list,
        routes::claims::get, routes::claims::submission, routes::claims::revoke, routes::claims::events,
        routes::usage::query,
        routes::policies::list, routes::policies::get, routes::policies::reason_codes,
        routes::directories::get, routes::directories::put, routes::reports::get,
        routes::simulations::simulate,
        routes::health::healthz, routes::health::readyz, routes::health::metrics,
    ),
    components(schemas(
        Claim, Decision, Status, Step, Reason,
        ReasonCode, Severity, Usage, PolicyRef, Revocation, Problem, FieldError, ErrorCode,
        County, Kind, Level, Group, Payee,
    )),
    modifiers(&Extras),
    tags(
        (name = "claims", description = "Adjudicate, record, read and revoke claims"),
        (name = "policies", description = "The policies and reason codes in force"),
        (name = "directories", description = "Trade-friction directories"),
        (name = "reports", description = "Plan against actual, for auditors"),
        (name = "simulations", description = "Policy what-if: recorded claims replayed under changed parameters"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The document as served and checked in.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut api = ApiDoc::openapi();
    drop_unreferenced_schemas(&mut api);
    api
}

const SCHEMA_REF: &str = "#/components/schemas/";

/// Keeps only the component schemas the operations reach, directly or
/// through other schemas. A generic parameter type such as `Param<T>` makes
/// utoipa list `T` (`u32`, `Vec`…) as a component that nothing refers to.
fn drop_unreferenced_schemas(api: &mut utoipa::openapi::OpenApi) {
    let Some(components) = api.components.as_mut() else { return };
    let schemas = std::mem::take(&mut components.schemas);
    // Serialising the document's own types cannot fail.
    let rest = serde_json::to_string(&*api).unwrap_or_default();
    let mut reached: std::collections::BTreeSet<String> = schema_refs(&rest).collect();
    let mut queue: Vec<String> = reached.iter().cloned().collect();
    while let Some(name) = queue.pop() {
        let Some(schema) = schemas.get(&name) else { continue };
        let text = serde_json::to_string(schema).unwrap_or_default();
        queue.extend(schema_refs(&text).filter(|r| reached.insert(r.clone())));
    }
    if let Some(components) = api.components.as_mut() {
        components.schemas = schemas.into_iter().filter(|(name, _)| reached.contains(name)).collect();
    }
}

/// The names of the component schemas a serialised part of the document refers to.
fn schema_refs(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(SCHEMA_REF).skip(1).filter_map(|tail| tail.split('"').next()).map(str::to_string)
}
