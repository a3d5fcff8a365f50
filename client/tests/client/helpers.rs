//! Starting the service, and claims to send it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use subsidy_service::configuration::{self, Settings};
use subsidy_service::startup::Application;
use tempfile::TempDir;

pub const PLATFORM: &str = "local-platform-key";
pub const INSTITUTION: &str = "local-institution-key";
pub const AUDITOR: &str = "local-auditor-key";
/// The credit code the local institution key is bound to.
pub const INSTITUTION_CODE: &str = "91330723MA0DEMQ01N";

pub struct Server {
    pub address: String,
    pub dir: TempDir,
}

pub fn settings(store: &Path, port: u16) -> Settings {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut s = configuration::load(&config, "local").expect("the local profile loads");
    s.server.port = port;
    s.server.workers = 2;
    s.store.path = store.to_path_buf();
    s.telemetry.level = "warn".into();
    s
}

/// The service on a random port with a fresh store.
pub async fn spawn() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = Application::build(settings(&dir.path().join("store"), 0)).expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Server { address, dir }
}

impl Server {
    pub fn client(&self, key: &str) -> subsidy_client::Client {
        subsidy_client::Client::new(self.address.clone(), key).expect("a client")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A valid resident ID number with the given 17 leading digits.
pub fn id_number(first17: &str) -> String {
    subsidy_service::domain::IdNumber::complete(first17).expect("17 digits")
}

/// The `n`th of many distinct Wuyi residents (born 1985–1990).
pub fn person(n: usize) -> String {
    let birth = chrono::NaiveDate::from_ymd_opt(1985, 1, 1).unwrap() + chrono::Days::new((n % 1800) as u64);
    id_number(&format!("330723{}{:03}", birth.format("%Y%m%d"), 100 + n / 1800))
}

/// A Wuyi qualification-training claim of the `n`th person.
pub fn wy_claim(prefix: &str, n: usize) -> Value {
    json!({
        "claim_id": format!("{prefix}-{n:05}"), "county": "wuyi", "kind": "qualification_training",
        "event_date": "2020-06-15",
        "applicant": {"id_number": person(n), "name": "测试", "local_hukou": true, "employed_in_county": true,
                      "groups": ["enterprise_employee"]},
        "details": {"occupation_code": "6-31-01-03", "level": "intermediate",
                    "certificate_number": format!("{prefix}-ZS-{n:05}"), "payee": "person"}
    })
}
