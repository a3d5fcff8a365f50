//! Layered, typed settings (API.md §6): `config/default.toml`, then the
//! profile chosen by `SUBSIDY_ENV` (`local` by default), then
//! `SUBSIDY__SECTION__KEY` environment overrides.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::access::{demo_key_hashes, Role};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub profile: Profile,
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub telemetry: TelemetrySettings,
    pub policy: PolicySettings,
    pub privacy: PrivacySettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
}

/// The profile of `SUBSIDY_ENV`: `local` ships demo keys and secrets,
/// `production` refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Local,
    Production,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Self::Local),
            "production" => Some(Self::Production),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Production => "production",
        }
    }
}

/// Token bucket per API key: the role's default, or the key's own figures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub platform: Bucket,
    pub institution: Bucket,
    pub auditor: Bucket,
    pub admin: Bucket,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Sustained requests per second; 0 = unlimited.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl RateLimitSettings {
    pub fn for_role(&self, role: Role) -> Bucket {
        match role {
            Role::Platform => self.platform,
            Role::Institution => self.institution,
            Role::Auditor => self.auditor,
            Role::Admin => self.admin,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub claim_body_limit: usize,
    pub batch_body_limit: usize,
    pub max_batch_claims: usize,
    pub client_request_timeout_ms: u64,
    /// A request body must arrive within this time (ms), or the request gets 408.
    pub body_timeout_ms: u64,
    pub keep_alive_secs: u64,
    pub shutdown_timeout_secs: u64,
    /// `host:port` of a listener of its own for `GET /metrics` (then not
    /// served on the API's listener); empty: served on the API's listener.
    #[serde(default)]
    pub metrics_address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Which ledger backend: the embedded sled store or a shared PostgreSQL.
    pub backend: Backend,
    /// The sled store's directory (`backend = "sled"`).
    pub path: PathBuf,
    /// The database's URL (`backend = "postgres"`), e.g.
    /// `postgres://subsidy:secret@db:5432/subsidy`, with TLS as libpq's
    /// `sslmode`, `sslrootcert`, `sslcert` and `sslkey` say
    /// ([`crate::ledger::postgres::tls`]). It may hold a password: never
    /// logged.
    pub url: Secret,
    /// The most connections to the database each process keeps, split
    /// among its HTTP workers.
    pub pool_size: usize,
    /// How long a request waits for a database connection (ms) before it
    /// gets 503.
    pub connect_timeout_ms: u64,
    pub group_commit_max: usize,
    pub cache_capacity_bytes: u64,
    /// After a failed write (disk full, I/O error) the store refuses all
    /// writes until reopened: stop the service so its supervisor restarts it.
    pub stop_on_failure: bool,
}

/// The ledger's backend (API.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded sled store: one process owns the ledger.
    Sled,
    /// A shared PostgreSQL database: any number of processes.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `pretty` or `json`.
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    pub dir: PathBuf,
    /// Overrides the end of the Wuyi online-training epidemic window (WY §4(3)),
    /// the date the epidemic's impact is declared over. Empty: the policy data's value.
    pub epidemic_window_end: String,
}

impl PolicySettings {
    /// Loads and checks the policy data these settings name.
    pub fn load(&self) -> anyhow::Result<crate::policy::Policy> {
        let window_end = match self.epidemic_window_end.trim() {
            "" => None,
            s => Some(
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .with_context(|| format!("policy.epidemic_window_end `{s}` is not a date"))?,
            ),
        };
        crate::policy::Policy::load(&self.dir, window_end).context("loading the policy data")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySettings {
    /// HMAC-SHA256 secret that keys people in the store; never logged.
    pub id_hash_secret: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub keys: Vec<KeySettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// A non-secret name for the key, recorded on every event it causes.
    /// Optional: a key without one is named by its role and 12 hex digits of
    /// an HMAC of its `key_sha256` under `privacy.id_hash_secret` (e.g.
    /// `platform-3f1c0a9b2e4d`): stable, and telling nothing of the key.
    #[serde(default)]
    pub id: String,
    pub role: Role,
    /// Hex SHA-256 of the key; the key itself is never stored.
    pub key_sha256: String,
    /// For `institution` keys: the USCC the key acts for.
    #[serde(default)]
    pub credit_code: Option<String>,
    /// This key's own rate limit, instead of its role's.
    #[serde(default)]
    pub rate_limit: Option<Bucket>,
}

/// A secret setting: never printed (`Debug` shows it redacted) and read only
/// through `ExposeSecret::expose_secret`.
pub type Secret = secrecy::SecretString;

/// The demo secret of the local profile; production refuses it.
pub const DEMO_ID_HASH_SECRET: &str = "local-demo-id-hash-secret";

/// Where the `config/` directory is: `SUBSIDY_CONFIG_DIR`, else `./config`.
pub fn config_dir() -> PathBuf {
    std::env::var_os("SUBSIDY_CONFIG_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("config"))
}

/// Loads the settings for the profile in `SUBSIDY_ENV` (default `local`).
pub fn get_settings() -> anyhow::Result<Settings> {
    let profile = std::env::var("SUBSIDY_ENV").unwrap_or_else(|_| "local".to_string());
    load(&config_dir(), &profile)
}

pub fn load(dir: &Path, profile: &str) -> anyhow::Result<Settings> {
    let Some(profile) = Profile::parse(profile) else {
        bail!("SUBSIDY_ENV must be `local` or `production`, not `{profile}`");
    };
    // A file of the configuration directory, else the repository's copy built
    // into the binary (so the binary runs from any directory).
    let file = |name: &str, built_in: &'static str| -> Box<dyn config::Source + Send + Sync> {
        let path = dir.join(name);
        if path.exists() {
            Box::new(config::File::from(path))
        } else {
            Box::new(config::File::from_str(built_in, config::FileFormat::Toml))
        }
    };
    let profile_file = match profile {
        Profile::Production => file("production.toml", include_str!("../config/production.toml")),
        Profile::Local => file("local.toml", include_str!("../config/local.toml")),
    };
    let mut settings: Settings = config::Config::builder()
        .set_override("profile", profile.as_str())?
        .add_source(vec![file("default.toml", include_str!("../config/default.toml"))])
        .add_source(vec![profile_file])
        .add_source(
            // Values stay strings (no `try_parsing`): a number or a bool is
            // read from the string where the setting is one, and a string
            // setting made of digits (a secret) keeps its leading zeros.
            config::Environment::with_prefix("SUBSIDY").prefix_separator("__").separator("__"),
        )
        .build()
        .with_context(|| format!("reading configuration from {}", dir.display()))?
        .try_deserialize()
        .context("configuration is not valid")?;
    let secret = settings.privacy.id_hash_secret.expose_secret().to_string();
    for k in settings.auth.keys.iter_mut().filter(|k| k.id.is_empty()) {
        k.id = unnamed_key_id(k, &secret);
    }
    settings.check()?;
    Ok(settings)
}

/// The name of a key configured without one: its role and 12 hex digits of
/// an HMAC of its hash (labelled, lower case) under the id-hash secret.
fn unnamed_key_id(k: &KeySettings, secret: &str) -> String {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length.
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(b"api key id\0");
    mac.update(k.key_sha256.to_ascii_lowercase().as_bytes());
    format!("{}-{}", k.role.as_str(), faster_hex::hex_string(&mac.finalize().into_bytes()[..6]))
}

impl Settings {
    /// Refuses settings that must never run, with the reason.
    pub fn check(&self) -> anyhow::Result<()> {
        for k in &self.auth.keys {
            if !crate::privacy::decode_hex(&k.key_sha256, &mut [0u8; 32]) {
                bail!("auth key `{}`: key_sha256 must be 64 hex digits", k.id);
            }
            match (k.role, &k.credit_code) {
                (Role::Institution, None) => {
                    bail!("auth key `{}`: an institution key needs its credit_code", k.id)
                }
                (Role::Institution, Some(cc)) => {
                    crate::domain::CreditCode::parse(cc, "")
                        .map_err(|e| anyhow::anyhow!("auth key `{}`: credit_code: {}", k.id, e.message))?;
                }
                _ => {}
            }
        }
        if self.server.max_batch_claims == 0 || self.store.group_commit_max == 0 {
            bail!("server.max_batch_claims and store.group_commit_max must be at least 1");
        }
        if self.store.backend == Backend::Postgres {
            if self.store.url.expose_secret().is_empty() {
                bail!("store.backend = \"postgres\" needs store.url (SUBSIDY__STORE__URL=postgres://…)");
            }
            if self.store.pool_size == 0 {
                bail!("store.pool_size must be at least 1");
            }
        }
        if self.profile == Profile::Production {
            if self.auth.keys.is_empty() {
                bail!("production profile: no API key is configured; add [[auth.keys]] entries");
            }
            let demo = demo_key_hashes();
            if let Some(k) = self.auth.keys.iter().find(|k| demo.iter().any(|d| d.eq_ignore_ascii_case(&k.key_sha256)))
            {
                bail!("production profile: key `{}` is a published demo key; configure real keys", k.id);
            }
            let s = self.privacy.id_hash_secret.expose_secret();
            if s.len() < 16 || s == DEMO_ID_HASH_SECRET {
                bail!("production profile: privacy.id_hash_secret must be a real secret of at least 16 characters (set SUBSIDY__PRIVACY__ID_HASH_SECRET)");
            }
        }
        Ok(())
    }
}
