//! Start-up refuses what must never run, and says why.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a binary that should refuse to start may take to exit; one still
/// running then has started (and is stopped), so a refusal that went missing
/// fails the test instead of hanging it.
const REFUSAL_WITHIN: Duration = Duration::from_secs(20);

/// Runs the binary on a fresh store (`SUBSIDY__STORE__PATH` in `envs`
/// overrides it) until it exits: whether it succeeded (or was still serving
/// after `REFUSAL_WITHIN`), and what it printed.
pub fn run_with(envs: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_subsidy-service"));
    cmd.env("SUBSIDY__STORE__PATH", dir.path().join("store"))
        .env("SUBSIDY__SERVER__PORT", "0")
        .env_remove("SUBSIDY_ENV")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + REFUSAL_WITHIN;
    let mut serving = false;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            serving = true;
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (serving || out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn production_refuses_the_demo_keys_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), std::fs::read_to_string("config/default.toml").unwrap()).unwrap();
    std::fs::write(dir.path().join("production.toml"), std::fs::read_to_string("config/local.toml").unwrap()).unwrap();
    let (ok, err) = run_with(&[("SUBSIDY_ENV", "production"), ("SUBSIDY_CONFIG_DIR", dir.path().to_str().unwrap())]);
    assert!(!ok);
    assert!(err.contains("demo key"), "{err}");
}

#[test]
fn a_key_hash_longer_than_64_digits_is_refused_not_cut_to_a_demo_key() {
    let dir = tempfile::tempdir().unwrap();
    let local = std::fs::read_to_string("config/local.toml").unwrap();
    // A demo key's hash with two more digits: decoding only its first 64
    // would let the demo key in under the production profile.
    let longer = with_longer_key_hashes(&local);
    std::fs::write(dir.path().join("default.toml"), std::fs::read_to_string("config/default.toml").unwrap()).unwrap();
    std::fs::write(dir.path().join("production.toml"), longer).unwrap();
    let (ok, err) = run_with(&[("SUBSIDY_ENV", "production"), ("SUBSIDY_CONFIG_DIR", dir.path().to_str().unwrap())]);
    assert!(!ok);
    assert!(err.contains("must be 64 hex digits"), "{err}");
}

/// `key_sha256 = "…"` lines with `00` added inside the quotes.
fn with_longer_key_hashes(toml: &str) -> String {
    toml.lines()
        .map(|l| match l.strip_prefix("key_sha256 = \"").and_then(|h| h.strip_suffix('"')) {
            Some(h) => format!("key_sha256 = \"{h}00\""),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn production_refuses_to_start_with_no_key() {
    let (ok, err) = run_with(&[
        ("SUBSIDY_ENV", "production"),
        ("SUBSIDY__PRIVACY__ID_HASH_SECRET", "a-real-secret-of-enough-length"),
    ]);
    assert!(!ok);
    assert!(err.contains("no API key"), "{err}");
}

#[test]
fn a_store_that_cannot_be_opened_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let (ok, err) = run_with(&[("SUBSIDY__STORE__PATH", file.to_str().unwrap())]);
    assert!(!ok);
    assert!(err.contains("store"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_broken_policy_file_stops_the_start_with_its_reason() {
    let cases = [
        ("value = \"5000\", clause = \"WY §4(1)1\"", "value = \"5000\", clause = \"\"", "clause"),
        ("value = \"2500\"", "value = \"25x0\"", "malformed amount"),
        ("[kinds.online_training]", "[kinds.skill_upgrade]\nclause = \"x\"\ntitle_zh = \"x\"\ncounts = true\n\n[kinds.online_training]", "skill_upgrade"),
        ("min_class_hours = { value = 12, clause = \"WY §4(1)2\" }", "min_class_hours = { clause = \"WY §4(1)2\", history = [{ from = \"2021-01-01\", value = 12 }, { from = \"2020-06-01\", value = 10 }] }", "overlapping"),
        ("[kinds.project_training]", "[kinds.teleportation]", "teleportation"),
    ];
    for (from, to, says) in cases {
        let (ok, err) = start_with_edited_policy("wuyi/policy.toml", from, to);
        assert!(!ok, "started with a broken policy ({says})");
        assert!(err.contains(says), "want `{says}` in: {err}");
    }
}

#[test]
fn a_reference_total_that_does_not_add_up_stops_the_start() {
    let (ok, err) = start_with_edited_policy("wuyi/reference.toml", "\"2020\" = 18860", "\"2020\" = 18861");
    assert!(!ok);
    assert!(err.contains("add up"), "{err}");
}

/// Starts the binary on a copy of the policy data with one edit.
fn start_with_edited_policy(file: &str, from: &str, to: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    for county in ["wuyi", "changxing"] {
        std::fs::create_dir_all(policies.join(county)).unwrap();
        for f in ["policy.toml", "reference.toml"] {
            std::fs::copy(format!("config/policies/{county}/{f}"), policies.join(county).join(f)).unwrap();
        }
    }
    let path = policies.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "the fixture text `{from}` is in {file}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    run_with(&[("SUBSIDY__POLICY__DIR", policies.to_str().unwrap())])
}

/// The binary carries its default configuration and policy data: started in
/// a directory without `config/`, it serves with the local profile's demo keys
/// and the same policy versions as the repository's files.
#[tokio::test]
async fn the_binary_runs_from_any_directory_on_its_built_in_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::helpers::BinaryApp::start_in(&dir.path().join("store"), None, dir.path()).await;
    let api = crate::helpers::base(&app.address);
    let claim = crate::helpers::wy_qualification(
        "EMB-1",
        &crate::helpers::id_number("33072319900101021"),
        "6-31-01-03",
        "junior",
        "EMB-C1",
        "2020-05-01",
    );
    let answer = api.post_claim(&claim).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let built_in = api.get("/v1/policies/wuyi", crate::helpers::PLATFORM).await.body;
    let files = subsidy_service::policy::Policy::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies"),
        None,
    )
    .unwrap();
    assert_eq!(built_in["version"], files.county(subsidy_service::domain::County::Wuyi).version.as_str());
    assert_eq!(answer.body["policy"]["version"], built_in["version"]);
    assert!(!dir.path().join("config").exists());
    app.stop();
}

/// API.md §6's key entry (`role` and `key_sha256`, no `id`) is enough, and
/// a secret given in the environment is read as the string it is: sixteen
/// characters with a leading zero pass the production profile's check of
/// sixteen or more.
#[tokio::test]
async fn production_starts_on_a_key_without_an_id_and_a_secret_of_digits() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("config/default.toml", dir.path().join("default.toml")).unwrap();
    let key = "a-production-key-of-this-test-only";
    let hash = faster_hex::hex_string(&Sha256::digest(key.as_bytes()));
    let production =
        format!("[server]\nhost = \"127.0.0.1\"\n\n[[auth.keys]]\nrole = \"platform\"\nkey_sha256 = \"{hash}\"\n");
    std::fs::write(dir.path().join("production.toml"), production).unwrap();
    let store = dir.path().join("store");
    let env = [
        ("SUBSIDY_ENV", "production"),
        ("SUBSIDY_CONFIG_DIR", dir.path().to_str().unwrap()),
        ("SUBSIDY__PRIVACY__ID_HASH_SECRET", "0123456789012345"),
        ("SUBSIDY__STORE__PATH", store.to_str().unwrap()),
    ];
    let app =
        crate::helpers::BinaryApp::start_with_env(&env, None, std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).await;
    let api = crate::helpers::base(&app.address);
    let claim = crate::helpers::wy_qualification(
        "PRD-1",
        &crate::helpers::id_number("33072319900101021"),
        "6-31-01-03",
        "junior",
        "PRD-C1",
        "2020-05-01",
    );
    let a = api.post("/v1/claims", key, &claim).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let events = api.get("/v1/claims/PRD-1/events", key).await;
    assert_eq!(events.status, 200, "{}", events.body);
    // Named by its role and an HMAC of its hash under the id-hash secret.
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(b"0123456789012345").unwrap();
    mac.update(b"api key id\0");
    mac.update(hash.as_bytes());
    let name = format!("platform-{}", faster_hex::hex_string(&mac.finalize().into_bytes()[..6]));
    assert_eq!(events.body[0]["key_id"], name.as_str(), "{}", events.body);
    assert!(!name.contains(&hash[..12]), "the name tells nothing of the key's hash");
    assert_eq!(api.get("/v1/claims/PRD-1", crate::helpers::PLATFORM).await.status, 401, "no demo key in production");
    app.stop();
}
