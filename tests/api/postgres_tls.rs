//! TLS to the database (`store.url`'s `sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`), against a throwaway cluster that takes TLS connections only,
//! with certificates made here: a server certificate for `localhost` signed
//! by a test root, a client certificate for the user `postgres` signed by
//! the same root, and a second root that signed nothing the server shows.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use subsidy_service::startup::Application;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::helpers::{
    base, id_number, spawn_app_with, start_postgres_cluster, test_settings, use_postgres, wy_qualification, BinaryApp,
};
use crate::postgres::{given_up_claims_leave_no_session_waiting, migrate_command};

/// The cluster's port and the directory of the certificates a client uses.
struct TlsCluster {
    port: u16,
    dir: PathBuf,
}

impl TlsCluster {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A URL to database `db` of the cluster on `host`, with these query parameters.
    fn url(&self, host: &str, db: &str, query: &str) -> String {
        let url = format!("postgres://postgres@{host}:{}/{db}", self.port);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }

    /// A connection to the cluster's database `postgres`.
    async fn admin(&self) -> tokio_postgres::Client {
        let url = self.url("localhost", "postgres", "sslmode=require");
        subsidy_service::ledger::postgres::connect(&url).await.expect("the cluster answers")
    }

    /// A new database, and its URL with the server's certificate checked in full.
    async fn new_database(&self, name: &str) -> String {
        self.admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("a database");
        self.url("localhost", name, &format!("sslmode=verify-full&sslrootcert={}", self.file("root.crt")))
    }
}

fn root(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate signed by `issuer` (its PEM and its key's), for these names
/// and this common name.
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str], common_name: &str) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// The cluster (started once for this test binary). Its `pg_hba.conf`
/// takes TLS connections only; database `clientcert` also asks for a client
/// certificate of the test root.
fn tls_cluster() -> &'static TlsCluster {
    static CLUSTER: OnceLock<TlsCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let server_side = dir.join("server");
        std::fs::create_dir(&server_side).unwrap();
        let ca = root("subsidy test root");
        let (server_cert, server_key) = leaf(&ca, &["localhost"], "localhost");
        let (client_cert, client_key) = leaf(&ca, &[], "postgres");
        write(&server_side, "server.crt", &server_cert);
        write(&server_side, "server.key", &server_key);
        write(&server_side, "ca.crt", &ca.pem());
        write(
            &server_side,
            "pg_hba.conf",
            "local all all trust\n\
             hostssl clientcert all 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        );
        write(&dir, "root.crt", &ca.pem());
        let other = root("another root");
        let (stranger_cert, stranger_key) = leaf(&other, &[], "postgres");
        write(&dir, "other-root.crt", &other.pem());
        write(&dir, "stranger.crt", &stranger_cert);
        write(&dir, "stranger.key", &stranger_key);
        write(&dir, "client.crt", &client_cert);
        write(&dir, "client.key", &client_key);
        let admin = start_postgres_cluster(&[("PG_TLS_DIR", &server_side)]);
        let port = admin.rsplit_once(':').and_then(|(_, p)| p.split('/').next()?.parse().ok()).expect("a port");
        TlsCluster { port, dir }
    })
}

/// `subsidy-service migrate --url URL`: whether it reached the database, and what it said.
fn migrate(url: &str) -> (bool, String) {
    let out = migrate_command(url);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn the_database_is_reached_over_tls_with_its_certificate_checked_as_sslmode_says() {
    let c = tls_cluster();
    let root = format!("sslrootcert={}", c.file("root.crt"));
    let other = format!("sslrootcert={}", c.file("other-root.crt"));
    // The server takes no connection without TLS.
    let (ok, said) = migrate(&c.url("localhost", "postgres", "sslmode=disable"));
    assert!(!ok && said.contains("no encryption"), "{said}");
    // Encrypted without a check of the certificate: libpq's prefer (the default) and require.
    for query in ["", "sslmode=prefer", "sslmode=require"] {
        let (ok, said) = migrate(&c.url("localhost", "postgres", query));
        assert!(ok, "{query}: {said}");
    }
    // The certificate checked against the test root, and the host's name against it.
    let (ok, said) = migrate(&c.url("localhost", "postgres", &format!("sslmode=verify-full&{root}")));
    assert!(ok, "{said}");
    // The certificate names localhost, not 127.0.0.1: verify-full refuses,
    // verify-ca (and require given a root, as in libpq) takes it.
    let (ok, said) = migrate(&c.url("127.0.0.1", "postgres", &format!("sslmode=verify-full&{root}")));
    assert!(!ok && said.contains("certificate not valid for name"), "{said}");
    for mode in ["verify-ca", "require"] {
        let (ok, said) = migrate(&c.url("127.0.0.1", "postgres", &format!("sslmode={mode}&{root}")));
        assert!(ok, "{mode}: {said}");
    }
    // Signed by a root the URL does not name: refused, whatever the host.
    // (prefer and require given a root check the chain, as in libpq.)
    for (host, mode) in
        [("localhost", "verify-full"), ("127.0.0.1", "verify-ca"), ("localhost", "require"), ("localhost", "prefer")]
    {
        let (ok, said) = migrate(&c.url(host, "postgres", &format!("sslmode={mode}&{other}")));
        assert!(!ok && said.contains("UnknownIssuer"), "{host} {mode}: {said}");
    }
}

#[tokio::test]
async fn a_server_that_asks_for_a_client_certificate_gets_the_urls() {
    let c = tls_cluster();
    let verified = c.new_database("clientcert").await;
    let (ok, said) = migrate(&verified);
    assert!(!ok && said.contains("certificate"), "no client certificate: {said}");
    // A client certificate of another root: the server's TLS refuses it,
    // which with TLS 1.3 arrives after the handshake, as a read error. The
    // service stops at its start: a refusal, not a database to wait for.
    let stranger = format!("{verified}&sslcert={}&sslkey={}", c.file("stranger.crt"), c.file("stranger.key"));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&dir.path().join("store"));
    use_postgres(&mut settings, &stranger);
    let refused = Application::build(settings).err().expect("the start stops");
    assert!(format!("{refused:#}").contains("UnknownCA"), "{refused:#}");
    let with_cert = format!("{verified}&sslcert={}&sslkey={}", c.file("client.crt"), c.file("client.key"));
    let (ok, said) = migrate(&with_cert);
    assert!(ok, "{said}");
}

/// The service itself (its pools, sessions and start-up) on a database it
/// reaches over verified TLS only: a claim is decided and recorded.
#[tokio::test]
async fn the_service_records_claims_on_a_database_reached_over_verified_tls() {
    let c = tls_cluster();
    let url = c.new_database("over_tls").await;
    let app = BinaryApp::start_on_postgres(&url).await;
    let api = base(&app.address);
    let claim =
        wy_qualification("TLS-1", &id_number("33072319870707002"), "6-31-01-03", "junior", "TLS-C1", "2020-07-01");
    let answer = api.post_claim(&claim).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["status"], "approved");
    let in_ssl: i64 = c
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = 'over_tls' AND ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(in_ssl > 0, "the service's connections use TLS");
}

/// A claim given up while it waits for a lock is cancelled over TLS too: the
/// cancel request opens a connection of its own with the session's
/// `sslmode` (here `verify-full`, which a connector without TLS cannot
/// honour, and sends nothing).
#[tokio::test]
async fn a_claim_given_up_on_a_database_reached_over_tls_leaves_no_session_waiting() {
    let url = tls_cluster().new_database("given_up").await;
    let mut app = spawn_app_with(|s| use_postgres(s, &url)).await;
    app.database = Some(url);
    given_up_claims_leave_no_session_waiting(app).await;
}

/// A client certificate rotated in place is used by the next connection
/// (libpq reads the files for each connection): one of another root, then
/// the right one again; the connector is made once, as a replica's pools
/// make theirs at start.
#[tokio::test]
async fn a_rotated_client_certificate_is_used_by_the_next_connection() {
    let c = tls_cluster();
    let verified = c.new_database("rotated").await;
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("client.crt"), files.path().join("client.key"));
    let put = |name: &str| {
        std::fs::copy(c.dir.join(format!("{name}.crt")), &cert).unwrap();
        std::fs::copy(c.dir.join(format!("{name}.key")), &key).unwrap();
    };
    put("client");
    let url = format!("{verified}&sslcert={}&sslkey={}", cert.display(), key.display());
    let target = subsidy_service::ledger::postgres::tls::target(&url).expect("the URL reads");
    let connect = || async {
        let (client, connection) = target.config.connect(target.tls.clone()).await?;
        tokio::spawn(connection);
        client.query_one("SELECT 1", &[]).await.map(drop)
    };
    connect().await.expect("the first certificate is taken");
    put("stranger");
    let refused = connect().await.expect_err("a certificate of another root");
    assert!(format!("{refused:?}").contains("UnknownCA"), "{refused:?}");
    put("client");
    connect().await.expect("the right certificate again");
    // Half rotated (a key that is not the certificate's): the last pair read
    // stays in use; the rotation's end is read at the next connection.
    std::fs::copy(c.dir.join("stranger.key"), &key).unwrap();
    connect().await.expect("the last pair read");
    std::fs::copy(c.dir.join("stranger.crt"), &cert).unwrap();
    let refused = connect().await.expect_err("the stranger's pair, once whole");
    assert!(format!("{refused:?}").contains("UnknownCA"), "{refused:?}");
}
