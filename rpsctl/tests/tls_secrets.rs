//! TLS and secrets against real servers with TLS on: a private shard server
//! of the current flavor with `require_secure_transport`, and a private
//! Redis listening only on a TLS port with a password. Certificates are made
//! by the test. The whole pipeline (`rpsctl run`) and the operator commands
//! run with every password coming from the environment or a secret file,
//! and no output of any of them, at debug level, contains a password. A
//! wrong CA is a definite error that says so.

use mysql_async::prelude::Queryable;
use rps_core::config::{Secret, TlsConfig, TlsMode};
use rps_core::redis_client::ClientPolicy;
use rps_core::Config;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use test_support::tls::TestCerts;
use test_support::{free_port, test_config, RedisInstance, ShardServerInstance, TestEnv};

const MYSQL_PASSWORD: &str = "Tls-Pipeline-pw-51b7";
const REDIS_PASSWORD: &str = "Tls-Redis-pw-8c1f";
const SERVER: &str = "tls-a";

use test_support::KillOnDrop as Killed;

/// A private TLS shard server, a private TLS Redis and a config that
/// trusts the test CA and presents a client certificate.
struct TlsSetup {
    certs: TestCerts,
    _mysql: ShardServerInstance,
    _redis: RedisInstance,
    env: TestEnv,
    secrets: tempfile::TempDir,
}

impl TlsSetup {
    async fn start(test: &str, server_id: u32) -> TlsSetup {
        let certs = TestCerts::generate();
        let mysql = ShardServerInstance::start_with_args(
            server_id,
            certs.mysql_server_args("server", true),
        )
        .await;
        let redis = RedisInstance::start_with(
            false,
            |port| {
                let mut args = certs.redis_server_args(port, None);
                args.extend(["--requirepass".into(), REDIS_PASSWORD.into()]);
                args
            },
            true,
        )
        .await;
        let mut config = test_config(test, 2, &[mysql.test_server(SERVER)], &redis.url());
        let ca = TlsConfig {
            mode: None,
            ca_file: Some(certs.path("ca.pem")),
            cert_file: Some(certs.path("client.pem")),
            key_file: Some(certs.path("client-key.pem")),
        };
        let server = &mut config.servers[0];
        server.url = format!("mysql://rps_pipeline@127.0.0.1:{}", mysql.port());
        server.password = Some(Secret::new(MYSQL_PASSWORD));
        server.tls = ca.clone();
        config.redis.tls = TlsConfig {
            cert_file: None,
            key_file: None,
            ..ca
        };
        config.redis.password = Some(Secret::new(REDIS_PASSWORD));
        config.api.bind = format!("127.0.0.1:{}", free_port());
        config.compensator.retry_initial_ms = 200;
        config.validate().expect("valid");
        let env = TestEnv::from_config(config.redis.prefix.clone(), config).await;
        let secrets = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            secrets.path().join("mysql-password"),
            format!("{MYSQL_PASSWORD}\n"),
        )
        .expect("secret file");
        TlsSetup {
            certs,
            _mysql: mysql,
            _redis: redis,
            env,
            secrets,
        }
    }

    /// `rpsctl` with `config` written to a file (which holds no password)
    /// and the passwords in the environment, as a container would get them.
    fn rpsctl(&self, config: &Config, args: &[&str]) -> Command {
        let path = self.secrets.path().join(format!("{}.toml", args.join("-")));
        std::fs::write(&path, config.to_toml()).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rpsctl"));
        cmd.arg("--config")
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "debug")
            .env(
                "RPS_SERVER_TLS_A_PASSWORD_FILE",
                self.secrets.path().join("mysql-password"),
            )
            .env("RPS_REDIS_PASSWORD", REDIS_PASSWORD);
        cmd
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The end of a long debug-level output, for assertion messages.
fn tail(output: &str) -> &str {
    let start = output.len().saturating_sub(3000);
    let start = (start..output.len())
        .find(|&i| output.is_char_boundary(i))
        .unwrap_or(0);
    &output[start..]
}

fn assert_no_password(what: &str, output: &str) {
    for password in [MYSQL_PASSWORD, REDIS_PASSWORD] {
        assert!(
            !output.contains(password),
            "{what} printed a password:\n{output}"
        );
    }
}

/// Runs to completion within `limit`, killed otherwise.
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rpsctl");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("rpsctl output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("rpsctl did not finish within {limit:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_over_tls_with_secrets_from_the_environment() {
    let setup = TlsSetup::start("tlsrun", 7301).await;
    let config = setup.env.config.as_ref().clone();
    assert_no_password("the config file", &config.to_toml());

    // The sessions are encrypted (the server refuses anything else).
    let opts = rps_event_store::server_opts(&config.servers[0], rps_event_store::Account::Pipeline)
        .expect("opts");
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("pipeline account over TLS");
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .expect("ssl status");
    assert!(cipher.is_some_and(|(_, c)| !c.is_empty()), "not encrypted");
    let _ = conn.disconnect().await;

    let logs = tempfile::tempdir().expect("tempdir");
    let log = |name: &str| std::fs::File::create(logs.path().join(name)).expect("log file");
    let mut run = setup.rpsctl(&config, &["run"]);
    run.stdout(log("run.out")).stderr(log("run.err"));
    let run = Killed(run.spawn().expect("rpsctl run"));

    let sim = output_within(
        setup.rpsctl(
            &config,
            &["simulate", "--matches", "300", "--players", "60"],
        ),
        Duration::from_secs(120),
    );
    assert!(sim.status.success(), "simulate failed:\n{}", text(&sim));
    let mut outputs = vec![("simulate", text(&sim))];

    // The pipeline catches up over TLS: verify finds no difference.
    let started = Instant::now();
    loop {
        let verify = output_within(setup.rpsctl(&config, &["verify"]), Duration::from_secs(60));
        if verify.status.success() {
            outputs.push(("verify", text(&verify)));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the read models never matched the event store:\n{}",
            text(&verify)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for args in [
        &["init"][..],
        &["status"],
        &["dlq", "list"],
        &["xa", "list"],
    ] {
        let out = output_within(setup.rpsctl(&config, args), Duration::from_secs(60));
        assert!(out.status.success(), "{args:?} failed:\n{}", text(&out));
        outputs.push((args[0], text(&out)));
    }
    let base = format!("http://{}", config.api.bind);
    let http = reqwest::Client::new();
    for path in ["/metrics", "/v1/leaderboard?limit=5", "/healthz"] {
        let body = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("api answers")
            .text()
            .await
            .expect("body");
        outputs.push(("api", body));
    }
    drop(run);
    for name in ["run.out", "run.err"] {
        let log = std::fs::read_to_string(logs.path().join(name)).expect("log");
        outputs.push(("rpsctl run", log));
    }
    let run_log = &outputs.last().expect("run log").1;
    assert!(
        run_log.contains("DEBUG"),
        "the pipeline's log is not at debug level, so the check means little:\n{run_log}"
    );
    for (what, output) in &outputs {
        assert_no_password(what, output);
    }

    // A failing connection names the server and the masked URL, not the
    // password, even when the password is in the URL.
    let mut broken = config.clone();
    broken.redis.url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1");
    broken.redis.tls = TlsConfig::default();
    let mut cmd = setup.rpsctl(&broken, &["dlq", "list"]);
    cmd.env_remove("RPS_REDIS_PASSWORD");
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert_no_password("a failed dlq list", &msg);
    setup.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_a_definite_error_that_says_so() {
    let setup = TlsSetup::start("tlsca", 7302).await;
    let good = setup.env.config.as_ref().clone();
    let other_ca = setup.certs.path("other-ca.pem");

    // MySQL: the reader stops at once with advice, instead of retrying.
    let mut config = good.clone();
    config.servers[0].tls.ca_file = Some(other_ca.clone());
    let out = output_within(
        setup.rpsctl(&config, &["cdc-reader"]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("TLS handshake failed") && msg.contains("tls.ca_file"),
        "{}",
        tail(&msg)
    );
    assert_no_password("cdc-reader with a wrong CA", &msg);

    // `required` encrypts without checking the chain; `verify-ca` checks it.
    for (mode, connects) in [(TlsMode::Required, true), (TlsMode::VerifyCa, false)] {
        let mut server = config.servers[0].clone();
        server.tls.mode = Some(mode);
        let opts = rps_event_store::server_opts(&server, rps_event_store::Account::Pipeline)
            .expect("opts");
        let r = mysql_async::Conn::new(opts).await;
        assert_eq!(r.is_ok(), connects, "{mode:?}: {r:?}");
        if let Err(e) = r {
            assert!(rps_core::tls::is_certificate_rejection(&e), "{e}");
            assert!(!rps_event_store::is_transient_mysql(&e), "{e}");
        }
    }

    // Redis: a command that needs it fails and names the certificate.
    let mut config = good.clone();
    config.redis.tls.ca_file = Some(other_ca);
    let out = output_within(setup.rpsctl(&config, &["status"]), Duration::from_secs(60));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("certificate"), "{}", tail(&msg));
    assert_no_password("status with a wrong Redis CA", &msg);
    let e = ClientPolicy::default()
        .connect(&config.redis)
        .await
        .expect_err("wrong CA");
    assert!(rps_core::redis_client::is_certificate_rejection(&e), "{e}");
    setup.env.cleanup().await;
}

/// The Redis verifier's three modes against a certificate issued for
/// another host name by the trusted CA, and a wrong CA file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_modes_check_what_they_promise() {
    let certs = TestCerts::generate();
    let misnamed = RedisInstance::start_with(
        false,
        |port| {
            let mut args = certs.redis_server_args(port, None);
            for a in args.iter_mut() {
                *a = a.replace("server.pem", "misnamed.pem");
                *a = a.replace("server-key.pem", "misnamed-key.pem");
            }
            args
        },
        true,
    )
    .await;
    let redis = |mode: Option<TlsMode>, ca: &Path| {
        let mut r = rps_core::config::RedisConfig::from_url(misnamed.url());
        r.tls = TlsConfig {
            mode,
            ca_file: Some(ca.to_path_buf()),
            cert_file: None,
            key_file: None,
        };
        r
    };
    let policy = ClientPolicy::default();
    let ca = certs.path("ca.pem");
    let other = certs.path("other-ca.pem");
    for (mode, ca, connects) in [
        (None, &ca, false),
        (Some(TlsMode::VerifyIdentity), &ca, false),
        (Some(TlsMode::VerifyCa), &ca, true),
        (Some(TlsMode::VerifyCa), &other, false),
        (Some(TlsMode::Required), &other, true),
    ] {
        let r = policy.connect(&redis(mode, ca)).await;
        assert_eq!(r.is_ok(), connects, "{mode:?} with {}: {r:?}", ca.display());
        match r {
            Ok(client) => {
                let pong: String = fred::interfaces::ClientLike::ping(&client, None)
                    .await
                    .expect("ping over TLS");
                assert_eq!(pong, "PONG");
            }
            Err(e) => assert!(rps_core::redis_client::is_certificate_rejection(&e), "{e}"),
        }
    }
}
