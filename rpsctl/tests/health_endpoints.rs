//! `/healthz` and `/readyz` of the stand-alone components, as processes:
//! alive answers 200 as long as the process serves; ready follows what the
//! component library reports, 503 with a JSON reason while it cannot do
//! its job (Redis gone for the projector and the compensator, the MySQL
//! server gone for the reader) and 200 again once it can. `rpsctl
//! healthcheck`, the compose health check, exits 0 and 1 accordingly.

use rps_core::config::RedisConfig;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::{
    eventually, shared_redis_url, RedisInstance, ShardServerInstance, TestEnv, TestFlavor,
    TestServer,
};

#[path = "common/component.rs"]
mod component;
use component::spawn_component;

/// Status and body of a GET, or None while nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body = r.json().await.ok()?;
    Some((status, body))
}

async fn wait_status(what: &str, port: u16, path: &str, status: u16) -> serde_json::Value {
    eventually(what, Duration::from_secs(60), || async move {
        get(port, path)
            .await
            .filter(|(s, _)| *s == status)
            .map(|(_, b)| b)
    })
    .await
}

fn healthcheck(url: &str) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_rpsctl"))
        .args(["healthcheck", url, "--timeout", "2s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("rpsctl healthcheck")
        .code()
        .unwrap_or(-1)
}

fn log_path(env: &TestEnv, component: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{component}.log", env.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_and_compensator_are_not_ready_while_redis_is_gone() {
    let mut redis = RedisInstance::start(false).await;
    let servers: Vec<TestServer> = TestFlavor::current()
        .shared_ports()
        .split_whitespace()
        .enumerate()
        .map(|(i, p)| TestServer {
            name: format!("mysql-{}", (b'a' + i as u8) as char),
            port: p.parse().unwrap(),
        })
        .collect();
    // The databases on the shared servers, the state in a Redis of its own.
    let env = TestEnv::on_servers("health_redis", 2, &servers, &shared_redis_url()).await;
    let mut config = env.config.as_ref().clone();
    config.redis = RedisConfig {
        prefix: config.redis.prefix.clone(),
        ..RedisConfig::from_url(redis.url())
    };
    let (_dir, path) = test_support::write_config_file(&config);
    let (pp, cp) = (test_support::free_port(), test_support::free_port());
    let _projector = spawn_component(&path, "projector", pp, &log_path(&env, "projector"));
    let _compensator = spawn_component(&path, "compensator", cp, &log_path(&env, "compensator"));

    for port in [pp, cp] {
        let alive = wait_status("/healthz answers", port, "/healthz", 200).await;
        assert_eq!(alive["status"], "alive");
        let ready = wait_status("/readyz ready", port, "/readyz", 200).await;
        assert_eq!(ready["status"], "ready");
    }
    assert_eq!(healthcheck(&format!("http://127.0.0.1:{pp}/readyz")), 0);

    redis.kill9();
    let p = wait_status("projector not ready", pp, "/readyz", 503).await;
    assert_eq!(p["status"], "not_ready");
    let reason = p["reasons"]["lag"].as_str().unwrap_or_default().to_string();
    assert!(!reason.is_empty(), "{p}");
    let c = wait_status("compensator not ready", cp, "/readyz", 503).await;
    let reason_c = c["reasons"]["deadlines"].as_str().unwrap_or_default();
    assert!(reason_c.starts_with("claiming deadlines failed"), "{c}");
    eprintln!("not ready: projector {reason:?}, compensator {reason_c:?}");
    // Alive all the same: nothing to restart.
    for port in [pp, cp] {
        assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));
    }
    assert_eq!(healthcheck(&format!("http://127.0.0.1:{cp}/readyz")), 1);
    assert_eq!(healthcheck(&format!("http://127.0.0.1:{cp}/healthz")), 0);

    redis.restart().await;
    wait_status("projector ready again", pp, "/readyz", 200).await;
    wait_status("compensator ready again", cp, "/readyz", 200).await;
    assert_eq!(healthcheck(&format!("http://127.0.0.1:{cp}/readyz")), 0);

    drop(_projector);
    drop(_compensator);
    // Nothing listens any more: unhealthy, not a hang.
    assert_eq!(healthcheck(&format!("http://127.0.0.1:{cp}/healthz")), 1);
    for c in ["projector", "compensator"] {
        let _ = std::fs::remove_file(log_path(&env, c));
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_is_not_ready_while_its_server_is_down() {
    let mut db = ShardServerInstance::start(251).await;
    let env = TestEnv::on_servers(
        "health_mysql",
        2,
        &[db.test_server("mysql-p")],
        &shared_redis_url(),
    )
    .await;
    let (_dir, path) = env.write_config_file();
    let port = test_support::free_port();
    let _reader = spawn_component(&path, "cdc-reader", port, &log_path(&env, "cdc-reader"));

    wait_status("/healthz answers", port, "/healthz", 200).await;
    // Ready once the binlog streams (after the first start's bootstrap).
    wait_status("reader ready", port, "/readyz", 200).await;

    db.kill9();
    let body = wait_status("reader not ready", port, "/readyz", 503).await;
    let reason = body["reasons"]["mysql-p"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("reconnecting") || reason == "connecting",
        "{body}"
    );
    eprintln!("not ready: {body}");
    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));

    db.restart().await;
    wait_status("reader ready again", port, "/readyz", 200).await;

    drop(_reader);
    let _ = std::fs::remove_file(log_path(&env, "cdc-reader"));
    env.cleanup().await;
}
