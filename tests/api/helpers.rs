//! `spawn_app()` and HTTP helpers shared by the tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use subsidy_service::configuration::{self, Backend, Settings};
use subsidy_service::ledger::postgres;
use subsidy_service::startup::Application;
use tempfile::TempDir;

pub const PLATFORM: &str = "local-platform-key";
pub const INSTITUTION: &str = "local-institution-key";
pub const AUDITOR: &str = "local-auditor-key";
pub const ADMIN: &str = "local-admin-key";
/// The credit code the local institution key is bound to.
pub const INSTITUTION_CODE: &str = "91330723MA0DEMQ01N";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: PathBuf,
    /// The ledger's database, when it is PostgreSQL.
    pub database: Option<String>,
    _dir: Option<TempDir>,
}

pub fn test_settings(store: &Path) -> Settings {
    let mut s = configuration::load(Path::new("config"), "local").expect("the local profile loads");
    s.server.port = 0;
    s.server.workers = 2;
    s.store.path = store.to_path_buf();
    s.telemetry.level = "warn".into();
    s
}

/// Starts the real application on a random port with a fresh temporary store.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let mut settings = test_settings(&store);
    change(&mut settings);
    let app = Application::build(settings).expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp { address, client: reqwest::Client::new(), store, database: None, _dir: Some(dir) }
}

/// The throwaway PostgreSQL cluster of this test binary, started (and
/// PostgreSQL installed if missing) by `scripts/postgres-throwaway` on first
/// use; it stops when the test binary ends. Its administrative URL.
pub fn postgres_cluster() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| start_postgres_cluster(&[]))
}

/// Starts a throwaway PostgreSQL cluster, with these environment settings
/// for the script; it stops when the test binary ends. Its administrative URL.
pub fn start_postgres_cluster(env: &[(&str, &Path)]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres-throwaway");
    let out = Command::new(script)
        .arg(free_port().to_string())
        .arg(std::process::id().to_string())
        .envs(env.iter().copied())
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/postgres-throwaway runs");
    assert!(out.status.success(), "scripts/postgres-throwaway failed");
    String::from_utf8(out.stdout).expect("a URL").trim().to_string()
}

/// A new, empty database in the test cluster; its URL.
pub async fn fresh_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = postgres_cluster();
    let name = format!("ledger_{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let client = postgres::connect(admin).await.expect("the test cluster answers");
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("a database");
    admin.rsplit_once('/').map(|(server, _)| format!("{server}/{name}")).expect("a URL with a database")
}

/// Settings that put the ledger in the PostgreSQL database at `url`.
pub fn use_postgres(s: &mut Settings, url: &str) {
    s.store.backend = Backend::Postgres;
    s.store.url = url.to_string().into();
    s.store.pool_size = 8;
}

/// Starts the real application on a random port with a fresh database of
/// the test cluster as its ledger.
pub async fn spawn_app_on_postgres() -> TestApp {
    let url = fresh_database().await;
    let mut app = spawn_app_with(|s| use_postgres(s, &url)).await;
    app.database = Some(url);
    app
}

/// The real binary, on a store directory of the caller's, on a random port.
pub struct BinaryApp {
    pub address: String,
    child: Child,
}

impl BinaryApp {
    pub async fn start(store: &Path) -> Self {
        Self::start_with_log(store, None).await
    }

    /// Starts the binary; with `log`, its logs (debug level, JSON) go to that file.
    pub async fn start_with_log(store: &Path, log: Option<&Path>) -> Self {
        Self::start_in(store, log, Path::new(env!("CARGO_MANIFEST_DIR"))).await
    }

    /// Starts the binary in the working directory `cwd`.
    pub async fn start_in(store: &Path, log: Option<&Path>, cwd: &Path) -> Self {
        Self::start_with_env(&[("SUBSIDY__STORE__PATH", store.to_str().expect("a UTF-8 path"))], log, cwd).await
    }

    /// Starts the binary with the ledger in the PostgreSQL database at `url`.
    pub async fn start_on_postgres(url: &str) -> Self {
        let env = [
            ("SUBSIDY__STORE__BACKEND", "postgres"),
            ("SUBSIDY__STORE__URL", url),
            ("SUBSIDY__STORE__POOL_SIZE", "16"),
        ];
        Self::start_with_env(&env, None, Path::new(env!("CARGO_MANIFEST_DIR"))).await
    }

    /// Starts the binary with these environment settings.
    pub async fn start_with_env(env: &[(&str, &str)], log: Option<&Path>, cwd: &Path) -> Self {
        let port = free_port();
        let (level, stderr) = match log {
            Some(p) => ("debug", Stdio::from(std::fs::File::create(p).expect("log file"))),
            None => ("warn", Stdio::null()),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_subsidy-service"))
            .current_dir(cwd)
            // The local profile unless `env` chooses one.
            .env_remove("SUBSIDY_ENV")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .env("SUBSIDY__SERVER__PORT", port.to_string())
            .env("SUBSIDY__TELEMETRY__LEVEL", level)
            .env("SUBSIDY__TELEMETRY__FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the binary starts");
        let mut app = Self { address: format!("http://127.0.0.1:{port}"), child };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(format!("{}/readyz", app.address)).send().await.is_ok_and(|r| r.status() == 200) {
                return app;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = app.child.kill();
        let _ = app.child.wait();
        panic!("the binary did not become ready");
    }

    /// SIGTERM and wait: graceful shutdown.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// SIGTERM, then up to `limit` for the process to exit by itself: whether
    /// it did (one still running is killed when dropped).
    pub fn stop_within(mut self, limit: Duration) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().is_ok_and(|exited| exited.is_some()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for BinaryApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn codes(&self) -> Vec<String> {
        self.body["reasons"]
            .as_array()
            .map(|a| a.iter().map(|r| r["code"].as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default()
    }
    /// The claim ids of a listing, in its order.
    pub fn claim_ids(&self) -> Vec<&str> {
        self.body["claims"]
            .as_array()
            .map_or_else(Vec::new, |c| c.iter().filter_map(|c| c["claim_id"].as_str()).collect())
    }
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| a.iter().map(|r| r["field"].as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default()
    }
    pub fn content_type(&self) -> String {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    }
}

pub async fn answer(r: reqwest::RequestBuilder) -> Answer {
    let resp = r.send().await.expect("the request is answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, headers, body }
}

pub fn base(address: &str) -> Client {
    Client { address: address.to_string(), client: reqwest::Client::new() }
}

/// HTTP helpers bound to one server.
#[derive(Clone)]
pub struct Client {
    pub address: String,
    pub client: reqwest::Client,
}

impl TestApp {
    pub fn api(&self) -> Client {
        Client { address: self.address.clone(), client: self.client.clone() }
    }
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Answer {
        answer(self.client.post(self.url(path)).bearer_auth(key).json(body)).await
    }
    pub async fn put(&self, path: &str, key: &str, body: &Value) -> Answer {
        answer(self.client.put(self.url(path)).bearer_auth(key).json(body)).await
    }
    pub async fn get(&self, path: &str, key: &str) -> Answer {
        answer(self.client.get(self.url(path)).bearer_auth(key)).await
    }
    pub async fn post_claim(&self, claim: &Value) -> Answer {
        self.post("/v1/claims", PLATFORM, claim).await
    }
    pub async fn evaluate(&self, claim: &Value) -> Answer {
        self.post("/v1/evaluations", PLATFORM, claim).await
    }
    pub async fn revoke(&self, claim_id: &str) -> Answer {
        self.post(
            &format!("/v1/claims/{claim_id}/revocation"),
            PLATFORM,
            &json!({"reason": "objection during the public notice"}),
        )
        .await
    }
    pub async fn put_directory(&self, county: &str, enterprises: &Value) -> Answer {
        self.put(
            &format!("/v1/directories/{county}/trade-friction-enterprises"),
            ADMIN,
            &json!({"enterprises": enterprises}),
        )
        .await
    }
    pub async fn usage(&self, county: &str, id_number: &str, year: i32) -> Answer {
        self.post("/v1/usage/query", PLATFORM, &json!({"county": county, "id_number": id_number, "year": year})).await
    }
}

/// A valid resident ID number with the given 17 leading digits.
pub fn id_number(first17: &str) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17.bytes().zip(W).map(|(c, w)| u32::from(c - b'0') * w).sum();
    format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

/// A Wuyi qualification-training claim of a person.
pub fn wy_qualification(claim_id: &str, id: &str, occupation: &str, level: &str, cert: &str, date: &str) -> Value {
    json!({
        "claim_id": claim_id, "county": "wuyi", "kind": "qualification_training", "event_date": date,
        "applicant": {"id_number": id, "name": "测试", "local_hukou": true, "employed_in_county": true, "groups": ["enterprise_employee"]},
        "details": {"occupation_code": occupation, "level": level, "certificate_number": cert, "payee": "person"}
    })
}

/// A listing (read by the auditor) once it shows `n` claims: on PostgreSQL
/// claims appear in it when every transaction older than theirs has ended
/// (other tests share the cluster).
pub async fn listing(api: &Client, path: &str, n: usize) -> Answer {
    for _ in 0..100 {
        let listed = api.get(path, AUDITOR).await;
        if listed.body["claims"].as_array().is_some_and(|c| c.len() >= n) {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never listed {n} claims");
}
