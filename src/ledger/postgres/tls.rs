//! TLS to the database, set in `store.url` with libpq's parameters.
//!
//! tokio-postgres reads `sslmode` as `disable`, `prefer` or `require` and
//! leaves the certificate to the connector; libpq's other parameters are
//! read here, from the URL form (`postgres://…?sslmode=verify-full&…`):
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it | not checked |
//! | `require` | always | not checked; with `sslrootcert`, as `verify-ca` |
//! | `verify-ca` | always | signed by a root of `sslrootcert` |
//! | `verify-full` | always | signed by a root of `sslrootcert`, and for the URL's host |
//!
//! `sslrootcert` is a PEM file of root certificates, or `system` for the
//! platform's (which, as in libpq, means `verify-full` and refuses a weaker
//! `sslmode`). `verify-ca` and `verify-full` need it: there is no default
//! file (libpq's is `~/.postgresql/root.crt`). `sslcert` and `sslkey` (PEM
//! files, both or neither) are the client's certificate and key, for a
//! server that asks for one (`hostssl … cert` in `pg_hba.conf`), read again
//! when they change; the roots are read at start. Only the
//! URL form carries these four; the `key=value` form takes tokio-postgres'
//! own `sslmode` values. TLS runs on rustls (ring), offering ALPN
//! `postgresql`, so `sslnegotiation=direct` works with PostgreSQL 17.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
pub use tokio_postgres_rustls::MakeRustlsConnect as Tls;

/// What `store.url` says: the connection's settings for tokio-postgres, and
/// the TLS connector its `sslmode` and certificates make.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
}

/// libpq's `sslmode` values this service takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS parameters read from the URL's query.
#[derive(Default, Debug, PartialEq, Eq)]
struct Params {
    mode: Option<Mode>,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Reads `url` (never quoted in an error: it may hold a password).
pub fn target(url: &str) -> anyhow::Result<Target> {
    let (rest, params) = split(url)?;
    let mut config: tokio_postgres::Config = rest.parse().context("store.url is not a PostgreSQL URL")?;
    let mode = params.mode.unwrap_or(match config.get_ssl_mode() {
        SslMode::Disable => Mode::Disable,
        SslMode::Require => Mode::Require,
        _ => Mode::Prefer,
    });
    let (mode, verifier) = verifier(mode, &params)?;
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
    });
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS to the database")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut client = match (&params.cert, &params.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => builder.with_client_cert_resolver(ClientCert::read(cert, key)?),
        _ => bail!("store.url's sslcert and sslkey go together: give both or neither"),
    };
    client.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Target { config, tls: Tls::new(client) })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The URL without the parameters read here, and those parameters. A
/// `key=value` string is given back whole. The query starts at the first
/// `?` after the credentials, which end at the first `@` (as tokio-postgres
/// reads them).
fn split(url: &str) -> anyhow::Result<(String, Params)> {
    let mut params = Params::default();
    let Some(scheme) = ["postgres://", "postgresql://"].into_iter().find(|s| url.starts_with(s)) else {
        return Ok((url.to_string(), params));
    };
    let authority = url[scheme.len()..].find('@').map_or(scheme.len(), |at| scheme.len() + at + 1);
    let Some(q) = url[authority..].find('?') else {
        return Ok((url.to_string(), params));
    };
    let (head, query) = (&url[..authority + q], &url[authority + q + 1..]);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sslmode" => None,
            "sslrootcert" => Some(&mut params.root_cert),
            "sslcert" => Some(&mut params.cert),
            "sslkey" => Some(&mut params.key),
            _ => {
                kept.push(pair);
                continue;
            }
        };
        let value = percent_decode_str(value).decode_utf8().with_context(|| format!("store.url's {key}"))?;
        match slot {
            Some(slot) => *slot = Some(value.into_owned()),
            None => params.mode = Some(mode(&value)?),
        }
    }
    let rest = if kept.is_empty() { head.to_string() } else { format!("{head}?{}", kept.join("&")) };
    Ok((rest, params))
}

fn mode(value: &str) -> anyhow::Result<Mode> {
    Ok(match value {
        "disable" => Mode::Disable,
        "prefer" => Mode::Prefer,
        "require" => Mode::Require,
        "verify-ca" => Mode::VerifyCa,
        "verify-full" => Mode::VerifyFull,
        other => bail!(
            "store.url's sslmode={other} is not one this service takes \
             (disable, prefer, require, verify-ca, verify-full)"
        ),
    })
}

/// The mode in force and how the server's certificate is checked.
fn verifier(mode: Mode, params: &Params) -> anyhow::Result<(Mode, Arc<dyn ServerCertVerifier>)> {
    let roots = match params.root_cert.as_deref() {
        None => None,
        Some("system") => {
            if params.mode.is_some_and(|m| m != Mode::VerifyFull) {
                bail!("store.url's sslrootcert=system needs sslmode=verify-full (or no sslmode)");
            }
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!("store.url's sslrootcert=system: no root certificate found on this system ({:?})", found.errors);
            }
            return Ok((
                Mode::VerifyFull,
                WebPkiServerVerifier::builder_with_provider(roots.into(), provider()).build()?,
            ));
        }
        Some(file) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(file, "sslrootcert")? {
                roots.add(cert).with_context(|| format!("store.url's sslrootcert {file}"))?;
            }
            Some(WebPkiServerVerifier::builder_with_provider(roots.into(), provider()).build()?)
        }
    };
    Ok(match (mode, roots) {
        (Mode::Disable | Mode::Prefer | Mode::Require, None) => (mode, Lenient::checking(None)),
        // libpq: with a root certificate the chain is checked whenever TLS is
        // used, `prefer` (which still goes on without TLS when the server
        // offers none) and `require` included.
        (Mode::Disable | Mode::Prefer, Some(roots)) => (mode, Lenient::checking(Some(roots))),
        (Mode::Require | Mode::VerifyCa, Some(roots)) => (Mode::VerifyCa, Lenient::checking(Some(roots))),
        (Mode::VerifyFull, Some(roots)) => (mode, roots),
        (Mode::VerifyCa | Mode::VerifyFull, None) => {
            bail!("store.url's sslmode=verify-ca or verify-full needs sslrootcert=FILE (PEM) or sslrootcert=system")
        }
    })
}

/// The certificates of a PEM file; at least one.
fn certificates(file: &str, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(file).with_context(|| format!("store.url's {what} {file}"))?;
    certificates_in(&text, file, what)
}

/// The certificates of `file`'s PEM text; at least one.
fn certificates_in(text: &[u8], file: &str, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("store.url's {what} {file}: {e}"))?;
    if certs.is_empty() {
        bail!("store.url's {what} {file}: no PEM certificate in it");
    }
    Ok(certs)
}

/// The client's certificate and key (`sslcert`, `sslkey`), read again when
/// either file changed (libpq reads them for each connection): a rotated
/// pair is used from the next connection on. Files that do not hold a pair
/// then (one half written, a key that does not match its certificate)
/// leave the last pair in use, with one warning for that state of the
/// files, and are read again when they change; files that cannot be read at
/// all (permissions, too many open files) are tried again at the next
/// connection. Read once at start, where a
/// pair that cannot be read stops the start. The files are looked at (and
/// read) outside the lock; a new connection costs two `stat`s.
#[derive(Debug)]
struct ClientCert {
    cert: String,
    key: String,
    current: std::sync::Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    /// The files' stamps the pair in use was read at.
    read_at: Stamps,
    pair: Arc<CertifiedKey>,
    /// The stamps of the last pair that could not be read (warned about once).
    refused: Option<Stamps>,
}

/// Each file's identity and change times: whatever a rotation changes, an
/// atomic rename (a new inode), a rewrite in place (its change time, even
/// when the modification time and the length are kept, as `cp -p` does).
type Stamps = [Option<Stamp>; 2];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    changed: (i64, i64),
}

impl ClientCert {
    fn read(cert: &str, key: &str) -> anyhow::Result<Arc<Self>> {
        let (cert, key) = (cert.to_string(), key.to_string());
        let read_at = stamps(&cert, &key);
        let pair = certified(&cert, &key).map_err(|(PairError::Read(e) | PairError::Content(e))| e)?;
        Ok(Arc::new(Self { cert, key, current: std::sync::Mutex::new(Current { read_at, pair, refused: None }) }))
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        // Nothing panics while holding it; a poisoned lock's pair is still whole.
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn stamps(cert: &str, key: &str) -> Stamps {
    [cert, key].map(|f| {
        let m = std::fs::metadata(f).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Some(Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            #[cfg(unix)]
            inode: (m.dev(), m.ino()),
            #[cfg(unix)]
            changed: (m.ctime(), m.ctime_nsec()),
        })
    })
}

/// Reading the pair: the files could not be read (perhaps for a moment:
/// tried again at the next connection), or what they hold is not a pair
/// (tried again once they change).
enum PairError {
    Read(anyhow::Error),
    Content(anyhow::Error),
}

fn certified(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, PairError> {
    let read = |file: &str, what: &str| {
        std::fs::read(file).with_context(|| format!("store.url's {what} {file}")).map_err(PairError::Read)
    };
    let (cert_text, key_text) = (read(cert, "sslcert")?, read(key, "sslkey")?);
    let parsed = (|| {
        let chain = certificates_in(&cert_text, cert, "sslcert")?;
        let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| anyhow!("store.url's sslkey {key}: {e}"))?;
        CertifiedKey::from_der(chain, key, &provider()).context("store.url's sslcert and sslkey")
    })();
    parsed.map(Arc::new).map_err(PairError::Content)
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let now = stamps(&self.cert, &self.key);
        {
            let current = self.current();
            if now == current.read_at || current.refused == Some(now) {
                return Some(current.pair.clone());
            }
        }
        let read = certified(&self.cert, &self.key);
        let mut current = self.current();
        match read {
            Ok(pair) => *current = Current { read_at: now, pair, refused: None },
            Err(PairError::Read(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "the database client certificate changed and cannot be read now: the last one read is used");
            }
            Err(PairError::Content(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "the database client certificate changed and is not a certificate and its key: the last one read is used");
                current.refused = Some(now);
            }
        }
        Some(current.pair.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The checks short of `verify-full`: with roots, the chain up to one of
/// them and not the name (`verify-ca`, and `prefer` or `require` given
/// `sslrootcert`; webpki checks the name last, once the chain is valid);
/// without, none (`prefer` and `require`: the connection is encrypted, the
/// certificate taken as it comes). The handshake's signature is always checked.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl Lenient {
    fn checking(chain: Option<Arc<WebPkiServerVerifier>>) -> Arc<dyn ServerCertVerifier> {
        Arc::new(Self { chain, provider: provider() })
    }
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_are_taken_out_of_the_url_and_the_rest_kept() {
        let (rest, p) = split(
            "postgres://u:p%40ss@db:5432/ledger?application_name=a&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5&sslcert=c.pem&sslkey=k.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@db:5432/ledger?application_name=a&connect_timeout=5");
        assert_eq!(
            p,
            Params {
                mode: Some(Mode::VerifyFull),
                root_cert: Some("/etc/ca.pem".into()),
                cert: Some("c.pem".into()),
                key: Some("k.pem".into())
            }
        );
        let (rest, p) = split("postgresql://db/ledger?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), p.mode), ("postgresql://db/ledger", Some(Mode::Require)));
        // A `?` in the credentials is theirs (they end at the first `@`).
        let (rest, p) = split("postgres://u:a?b@db/l?sslrootcert=%2Fca.pem&sslmode=verify-full").unwrap();
        assert_eq!(rest, "postgres://u:a?b@db/l");
        assert_eq!((p.mode, p.root_cert.as_deref()), (Some(Mode::VerifyFull), Some("/ca.pem")));
        let (rest, p) = split("postgres://u:a?b@db/l").unwrap();
        assert_eq!((rest.as_str(), p), ("postgres://u:a?b@db/l", Params::default()));
        // Several hosts, each checked against its own name.
        let (rest, p) =
            split("postgres://db1:5432,db2:5433/l?sslmode=require&target_session_attrs=read-write").unwrap();
        assert_eq!(
            (rest.as_str(), p.mode),
            ("postgres://db1:5432,db2:5433/l?target_session_attrs=read-write", Some(Mode::Require))
        );
        // The key=value form is tokio-postgres' to read.
        let kv = "host=db sslmode=require";
        assert_eq!(split(kv).unwrap(), (kv.to_string(), Params::default()));
    }

    #[test]
    fn the_mode_is_the_urls_or_tokio_postgres_default_and_weak_modes_check_nothing() {
        let t = target("postgres://db/ledger").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Prefer);
        let t = target("host=db sslmode=disable").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        let t = target("postgres://db/ledger?sslmode=require").unwrap();
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn a_mode_that_checks_certificates_needs_roots_and_bad_settings_are_named() {
        let err = |url: &str| format!("{:#}", target(url).err().expect("refused"));
        assert!(err("postgres://db/l?sslmode=verify-full").contains("needs sslrootcert"));
        assert!(err("postgres://db/l?sslmode=verify-ca").contains("needs sslrootcert"));
        assert!(err("postgres://db/l?sslmode=allow").contains("sslmode=allow is not one"));
        assert!(err("postgres://db/l?sslmode=require&sslrootcert=system").contains("needs sslmode=verify-full"));
        assert!(err("postgres://db/l?sslmode=verify-full&sslrootcert=/nonexistent.pem").contains("sslrootcert"));
        assert!(err("postgres://db/l?sslcert=/c.pem").contains("give both or neither"));
        // The password is never part of an error.
        assert!(!err("postgres://u:secret@db/l?sslmode=verify-ca").contains("secret"));
        assert!(!err("postgres://u:secret@db/l?nosuch=1").contains("secret"));
    }
}
