//! Certificates for the TLS tests, made fresh per test: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, a client certificate, and a
//! second, unrelated CA that a misconfigured client might trust.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// PEM files in a folder a private server of the current flavor can read
/// (inside the MySQL root for MySQL, which runs chrooted).
pub struct TestCerts {
    dir: tempfile::TempDir,
    /// Where the server sees `dir` (differs from the host path under chroot).
    server_dir: PathBuf,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let (dir, server_dir) = match crate::TestFlavor::current() {
            crate::TestFlavor::MariaDb => {
                let dir = tempfile::Builder::new()
                    .prefix("rps-certs-")
                    .tempdir()
                    .expect("tempdir");
                let server_dir = dir.path().to_path_buf();
                (dir, server_dir)
            }
            crate::TestFlavor::MySql => {
                let root = crate::mysql_root();
                let dir = tempfile::Builder::new()
                    .prefix("rps-certs-")
                    .tempdir_in(root.join("var/tmp"))
                    .expect("tempdir in the MySQL root");
                let inner = Path::new("/").join(dir.path().strip_prefix(&root).expect("in root"));
                (dir, inner)
            }
        };
        let (ca_pem, ca) = authority("rps test CA");
        let (other_ca_pem, _) = authority("some other CA");
        let server = leaf(
            &ca,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            &ca,
            vec!["rps-pipeline".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let misnamed = leaf(
            &ca,
            vec!["db.example.invalid".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let files = [
            ("ca.pem", ca_pem),
            ("other-ca.pem", other_ca_pem),
            ("server.pem", server.0),
            ("server-key.pem", server.1),
            ("client.pem", client.0),
            ("client-key.pem", client.1),
            ("misnamed.pem", misnamed.0),
            ("misnamed-key.pem", misnamed.1),
        ];
        for (name, pem) in files {
            std::fs::write(dir.path().join(name), pem).expect("write certificate");
        }
        TestCerts { dir, server_dir }
    }

    /// A file as this process reads it: `ca.pem`, `other-ca.pem`,
    /// `client.pem`, `client-key.pem`, `server.pem`, `server-key.pem`,
    /// `misnamed.pem`, `misnamed-key.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The same file as the server process sees it.
    pub fn server_path(&self, name: &str) -> String {
        self.server_dir.join(name).display().to_string()
    }

    /// Server options for MariaDB/MySQL: TLS with `cert` (`server` or
    /// `misnamed`); with `require`, plain-text clients are refused.
    pub fn mysql_server_args(&self, cert: &str, require: bool) -> Vec<String> {
        let mut args = vec![
            format!("--ssl-ca={}", self.server_path("ca.pem")),
            format!("--ssl-cert={}", self.server_path(&format!("{cert}.pem"))),
            format!("--ssl-key={}", self.server_path(&format!("{cert}-key.pem"))),
        ];
        if require {
            args.push("--require-secure-transport=ON".into());
        }
        args
    }

    /// Options for redis-server: TLS on `tls_port`, plain text on
    /// `plain_port` or nowhere; client certificates optional.
    pub fn redis_server_args(&self, tls_port: u16, plain_port: Option<u16>) -> Vec<String> {
        let p = |name: &str| self.path(name).display().to_string();
        vec![
            "--port".into(),
            plain_port.unwrap_or(0).to_string(),
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            p("server.pem"),
            "--tls-key-file".into(),
            p("server-key.pem"),
            "--tls-ca-cert-file".into(),
            p("ca.pem"),
            "--tls-auth-clients".into(),
            "optional".into(),
        ]
    }
}

fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

/// `(certificate PEM, key PEM)` signed by `ca`.
fn leaf(
    ca: &Issuer<'static, KeyPair>,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(names.clone()).expect("valid names");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("certificate");
    (cert.pem(), key.serialize_pem())
}
