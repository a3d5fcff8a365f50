//! Runs scenario files over HTTP: the public golden cases of the spec and the
//! project's own per-clause scenarios under `tests/scenarios/`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Client, TestApp, ADMIN, PLATFORM};

/// Runs every case of a file against one server; returns the failures.
pub async fn run_file(api: &Client, path: &Path) -> (usize, Vec<String>) {
    run_file_over(std::slice::from_ref(api), path).await
}

/// Runs every case of a file with its steps sent to `apis` in turn (several
/// replicas of one ledger); returns the failures.
pub async fn run_file_over(apis: &[Client], path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let cases = doc["cases"].as_array().unwrap_or_else(|| panic!("{} has no cases", path.display()));
    let mut failures = Vec::new();
    let mut steps = 0;
    let mut clauses: std::collections::HashMap<String, std::collections::HashSet<String>> = Default::default();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        for (i, step) in case["steps"].as_array().into_iter().flatten().enumerate() {
            let api = &apis[steps % apis.len()];
            steps += 1;
            let expect = step.get("expect").cloned().unwrap_or(Value::Null);
            let a = if let Some(d) = step.get("directory") {
                let county = d["county"].as_str().unwrap_or("");
                api.put(
                    &format!("/v1/directories/{county}/trade-friction-enterprises"),
                    ADMIN,
                    &json!({"enterprises": d["enterprises"]}),
                )
                .await
            } else if let Some(c) = step.get("submit") {
                api.post("/v1/claims", PLATFORM, c).await
            } else if let Some(c) = step.get("evaluate") {
                api.post("/v1/evaluations", PLATFORM, c).await
            } else if let Some(id) = step.get("revoke").and_then(Value::as_str) {
                api.post(&format!("/v1/claims/{id}/revocation"), PLATFORM, &json!({"reason": "scenario revocation"}))
                    .await
            } else if let Some(raw) = step.get("raw").and_then(Value::as_str) {
                crate::helpers::answer(
                    api.client
                        .post(api.url("/v1/claims"))
                        .bearer_auth(PLATFORM)
                        .header("content-type", "application/json")
                        .body(raw.to_string()),
                )
                .await
            } else {
                panic!("{name} step {i}: unknown step {step}");
            };
            let mut problems = Vec::new();
            let b = &a.body;
            if let Some(h) = expect.get("http").and_then(Value::as_u64) {
                if u64::from(a.status) != h {
                    problems.push(format!("http {} (want {h})", a.status));
                }
            }
            for k in ["status", "amount", "counted", "payee", "recorded"] {
                if let Some(want) = expect.get(k) {
                    if b.get(k) != Some(want) {
                        problems.push(format!("{k} {:?} (want {want})", b.get(k)));
                    }
                }
            }
            let codes = a.codes();
            for r in expect["reasons"].as_array().into_iter().flatten() {
                if !codes.iter().any(|c| Some(c.as_str()) == r.as_str()) {
                    problems.push(format!("missing reason {r} (have {codes:?})"));
                }
            }
            // `reasons_exact` (the project's own files): exactly these codes, in any order.
            if let Some(want) = expect.get("reasons_exact").and_then(Value::as_array) {
                let mut want: Vec<&str> = want.iter().filter_map(Value::as_str).collect();
                let mut have: Vec<&str> = codes.iter().map(String::as_str).collect();
                want.sort_unstable();
                have.sort_unstable();
                if want != have {
                    problems.push(format!("reasons {have:?} (want exactly {want:?})"));
                }
            }
            for r in expect["reasons_absent"].as_array().into_iter().flatten() {
                if codes.iter().any(|c| Some(c.as_str()) == r.as_str()) {
                    problems.push(format!("unexpected reason {r}"));
                }
            }
            // `usage_absent` (the project's own files): the decision has no usage.
            if expect.get("usage_absent") == Some(&Value::Bool(true)) && b.get("usage").is_some_and(|u| !u.is_null()) {
                problems.push(format!("usage {} (want none)", b["usage"]));
            }
            if let Some(u) = expect.get("usage_used") {
                if b["usage"]["used"] != *u {
                    problems.push(format!("usage {} (want used {u})", b["usage"]));
                }
            }
            if expect.get("replayed") == Some(&Value::Bool(true))
                && a.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()) != Some("true")
            {
                problems.push("not marked Idempotent-Replayed".into());
            }
            if let Some(county) = step.get("submit").or(step.get("evaluate")).and_then(|c| c["county"].as_str()) {
                if b.get("calculation").is_some() {
                    let clauses = clauses.entry(county.to_string()).or_default();
                    if clauses.is_empty() {
                        collect_clauses(&api.get(&format!("/v1/policies/{county}"), PLATFORM).await.body, clauses);
                    }
                    problems.extend(trace_problems(b, clauses));
                }
            }
            // `calculation` (the project's own files): exactly these steps, in this order.
            if let Some(want) = expect.get("calculation").and_then(Value::as_array) {
                problems.extend(calculation_problems(b, want));
            }
            if let Some(e) = expect.get("error") {
                if b.get("code") != Some(e) {
                    problems.push(format!("error {:?} (want {e})", b.get("code")));
                }
            }
            // `field`: one bad field named; `fields`: every one of them named in one answer.
            let fields = expect
                .get("field")
                .into_iter()
                .chain(expect.get("fields").and_then(Value::as_array).into_iter().flatten());
            for f in fields.filter_map(Value::as_str) {
                if !a.error_fields().iter().any(|x| x == f) {
                    problems.push(format!("field {f} not in {:?}", a.error_fields()));
                }
            }
            if !problems.is_empty() {
                failures.push(format!("{} — {name} (step {i}): {}", path.display(), problems.join("; ")));
            }
        }
    }
    (steps, failures)
}

/// The public golden cases: the copy vendored in the repository (so a clone
/// tests on its own), or `SUBSIDY_GOLDEN_CASES`.
/// Every `clause` the county's policy data (as served) cites.
fn collect_clauses(v: &Value, out: &mut std::collections::HashSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("clause", Value::String(c)) => out.extend(references(c)),
                    _ => collect_clauses(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_clauses(x, out)),
        _ => {}
    }
}

/// The references a clause cites: `WY §2(3)3, §4(1)3` cites `WY §2(3)3` and
/// `WY §4(1)3`; `WY §4(1)4, I-16` cites `WY §4(1)4` and `I-16`.
fn references(clause: &str) -> Vec<String> {
    let mut county = "";
    clause
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some((c, _)) = p.split_once(' ').filter(|(c, _)| matches!(*c, "WY" | "CX")) {
                county = c;
                p.to_string()
            } else if p.starts_with('§') {
                format!("{county} {p}")
            } else {
                p.to_string()
            }
        })
        .collect()
}

/// Reason codes a claim gets from what the ledger holds (RULES §8 Stages: the
/// only refusals that come after the amount is computed).
const LEDGER_REFUSALS: [&str; 5] = [
    "ANNUAL_LIMIT_REACHED",
    "CERTIFICATE_ALREADY_USED",
    "DUPLICATE_SUBSIDY",
    "DUPLICATE_OCCUPATION_LEVEL",
    "INSTITUTION_CAP_REACHED",
];

/// What every decision's calculation trace must satisfy: an approved
/// decision shows its steps and ends on its amount; each step's amount has
/// two places and cites only references of the county's policy data; a decision
/// refused before the amount stage has no steps at all.
fn trace_problems(d: &Value, clauses: &std::collections::HashSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let steps = d["calculation"].as_array().cloned().unwrap_or_default();
    for s in &steps {
        let amount = s["amount"].as_str().unwrap_or("");
        if amount.split_once('.').is_none_or(|(_, cents)| cents.len() != 2) {
            problems.push(format!("step {} amount {amount:?} is not in cents", s["step"]));
        }
        let clause = s["clause"].as_str().unwrap_or("");
        let cited = references(clause);
        if cited.is_empty() || cited.iter().any(|r| !clauses.contains(r)) {
            problems.push(format!("step {} cites {clause:?}, which the policy data does not", s["step"]));
        }
    }
    match d["status"].as_str() {
        Some("approved") => match steps.last() {
            None => problems.push("an approved decision without calculation steps".into()),
            Some(last) if last["amount"] != d["amount"] || last["step"] != "total" => {
                problems.push(format!("the last step {last} is not the total {}", d["amount"]))
            }
            Some(_) => {}
        },
        Some("rejected") => {
            let static_refusal =
                d["reasons"].as_array().into_iter().flatten().any(|r| {
                    r["severity"] == "rejection" && !LEDGER_REFUSALS.contains(&r["code"].as_str().unwrap_or(""))
                });
            if static_refusal && !steps.is_empty() {
                problems.push(format!("refused before the amount stage, yet {} steps", steps.len()));
            }
        }
        _ => {}
    }
    problems
}

/// Compares a decision's calculation with the expected steps: the same
/// number, in the same order, each with the same `step`, `amount` and
/// `clause` (and `detail`, where the expectation gives one).
fn calculation_problems(d: &Value, want: &[Value]) -> Vec<String> {
    let have = d["calculation"].as_array().cloned().unwrap_or_default();
    let show = |steps: &[Value]| {
        steps.iter().map(|s| format!("{} {} [{}]", s["step"], s["amount"], s["clause"])).collect::<Vec<_>>().join(", ")
    };
    let same = have.len() == want.len()
        && have.iter().zip(want).all(|(h, w)| {
            ["step", "amount", "clause"].iter().all(|k| h.get(*k) == w.get(*k))
                && w.get("detail").is_none_or(|detail| h.get("detail") == Some(detail))
        });
    if same {
        Vec::new()
    } else {
        vec![format!("calculation [{}] (want [{}])", show(&have), show(want))]
    }
}

fn public_cases() -> PathBuf {
    std::env::var_os("SUBSIDY_GOLDEN_CASES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(VENDORED))
}

const VENDORED: &str = "tests/golden/public.json";

/// The vendored copy equals the specification's, where the specification is
/// beside the repository (a clone on its own has only the copy).
#[test]
fn the_vendored_golden_cases_equal_the_specifications() {
    let vendored = std::fs::read(VENDORED).expect("tests/golden/public.json is part of the repository");
    let doc: Value = serde_json::from_slice(&vendored).expect("the vendored cases are JSON");
    assert!(doc["cases"].as_array().is_some_and(|c| c.len() >= 60), "the vendored file holds the cases");
    if let Ok(spec) = std::fs::read("../shared/spec/cases/public.json") {
        assert!(
            spec == vendored,
            "tests/golden/public.json differs from ../shared/spec/cases/public.json: copy it again"
        );
    }
}

/// The specification and the two policy documents are vendored under
/// `docs/` (the README cites them); each copy equals the specification's
/// where it is beside the repository.
#[test]
fn the_vendored_specification_equals_the_shared_one() {
    let copies = [
        ("docs/spec/RULES.md", "../shared/spec/RULES.md"),
        ("docs/spec/API.md", "../shared/spec/API.md"),
        ("docs/seeds/wuyi-2020-21.txt", "../shared/seeds/wuyi-2020-21.txt"),
        ("docs/seeds/changxing-2020-7.txt", "../shared/seeds/changxing-2020-7.txt"),
    ];
    for (vendored, shared) in copies {
        let copy = std::fs::read(vendored).unwrap_or_else(|e| panic!("{vendored} is part of the repository: {e}"));
        assert!(copy.len() > 10_000, "{vendored} holds the document");
        if let Ok(original) = std::fs::read(shared) {
            assert!(original == copy, "{vendored} differs from {shared}: copy it again");
        }
    }
}

#[tokio::test]
async fn every_public_golden_case_passes_over_http() {
    let path = public_cases();
    assert!(
        path.exists(),
        "\n\n*** The public golden cases are missing: {} ***\n*** They are vendored at tests/golden/public.json; SUBSIDY_GOLDEN_CASES overrides the path. ***\n\n",
        path.display()
    );
    public_cases_pass(&spawn_app().await.api()).await;
}

/// Every public golden case passes against this server, in one ledger.
pub async fn public_cases_pass(api: &Client) {
    let path = public_cases();
    let (steps, failures) = run_file(api, &path).await;
    assert!(steps >= 66, "only {steps} steps ran");
    assert!(failures.is_empty(), "{} golden step(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn every_public_golden_case_passes_on_its_own_fresh_store() {
    let path = public_cases();
    assert!(path.exists(), "*** The public golden cases are missing: {} ***", path.display());
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, case) in doc["cases"].as_array().unwrap().iter().enumerate() {
        let file = dir.path().join(format!("case-{i}.json"));
        std::fs::write(&file, json!({"cases": [case]}).to_string()).unwrap();
        let app = spawn_app().await;
        failures.extend(run_file(&app.api(), &file).await.1);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_project_scenario_file_passes_over_http() {
    scenario_files_pass(|| async { spawn_app().await }).await;
}

/// Every scenario file passes, each against a fresh ledger from `spawn`.
pub async fn scenario_files_pass<F: std::future::Future<Output = TestApp>>(spawn: impl Fn() -> F) {
    let mut files: Vec<_> = std::fs::read_dir("tests/scenarios")
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in tests/scenarios");
    let mut failures = Vec::new();
    for f in &files {
        let app = spawn().await;
        let (steps, mut fails) = run_file(&app.api(), f).await;
        assert!(steps > 0, "{} has no steps", f.display());
        failures.append(&mut fails);
    }
    assert!(failures.is_empty(), "{} scenario step(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_reason_code_is_expected_by_some_scenario() {
    let mut expected = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("tests/scenarios").unwrap() {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for case in doc["cases"].as_array().unwrap() {
            for step in case["steps"].as_array().unwrap() {
                for r in step["expect"]["reasons"].as_array().into_iter().flatten() {
                    expected.insert(r.as_str().unwrap().to_string());
                }
            }
        }
    }
    let missing: Vec<_> =
        subsidy_service::rules::ReasonCode::ALL.iter().map(|c| c.as_str()).filter(|c| !expected.contains(*c)).collect();
    assert!(missing.is_empty(), "no scenario expects {missing:?}");
}

/// The pinned traces (`expect.calculation`) cover an approved claim of every
/// kind each county offers.
#[test]
fn every_kind_of_both_counties_has_a_pinned_trace() {
    use subsidy_service::domain::County;
    let mut pinned = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("tests/scenarios").unwrap() {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        for step in doc["cases"].as_array().unwrap().iter().flat_map(|c| c["steps"].as_array().unwrap()) {
            if step["expect"]["status"] == "approved" && step["expect"]["calculation"].is_array() {
                let c = &step["submit"];
                pinned.insert(format!("{}/{}", c["county"].as_str().unwrap(), c["kind"].as_str().unwrap()));
            }
        }
    }
    let offered: Vec<_> = County::ALL
        .iter()
        .flat_map(|c| {
            let policy = subsidy_service::policy::Policy::embedded(None).unwrap();
            let kinds: Vec<_> = policy.county(*c).common.kinds.keys().copied().collect();
            kinds.into_iter().map(move |k| format!("{c}/{k}"))
        })
        .collect();
    assert_eq!(offered.len(), 6 + 15, "Wuyi offers 6 kinds, Changxing 15 (RULES §3, §4)");
    let missing: Vec<_> = offered.iter().filter(|k| !pinned.contains(*k)).collect();
    assert!(missing.is_empty(), "no pinned trace for {missing:?}");
}
