//! TLS against plain text on the same servers in the same run: `rpsctl
//! bench` on a private pair of shard servers (of `RPS_TEST_FLAVOR`) and a
//! private Redis that accept both, alternating a plain config with a TLS one
//! (`verify-identity` everywhere, a client certificate to MySQL). Prints
//! every run's report; docs/benchmarks.md quotes them.
//!
//! ```sh
//! cargo build --release -p rpsctl --bin rpsctl --example tls_bench
//! RPS_TEST_FLAVOR=mariadb target/release/examples/tls_bench --rounds 2 -- --backlog 300000
//! ```
//! Arguments after `--` go to every `rpsctl bench`.

mod common;

use common::BenchHarness;
use rps_core::config::TlsConfig;
use std::process::Command;
use test_support::tls::TestCerts;
use test_support::{free_port, test_config, write_config_file, RedisInstance, ShardServerInstance};

#[tokio::main]
async fn main() {
    let BenchHarness {
        rounds,
        bench_args,
        rpsctl,
    } = BenchHarness::from_args("tls_bench");

    let certs = TestCerts::generate();
    let servers = [
        ShardServerInstance::start_with_args(7401, certs.mysql_server_args("server", false)).await,
        ShardServerInstance::start_with_args(7402, certs.mysql_server_args("server", false)).await,
    ];
    let tls_port = free_port();
    let redis = RedisInstance::start_with(
        false,
        |port| {
            let mut args = certs.redis_server_args(tls_port, Some(port));
            // As the local environment runs it: AOF, fsync once a second.
            args.extend(["--appendonly", "yes", "--appendfsync", "everysec"].map(String::from));
            args
        },
        false,
    )
    .await;

    let plain = test_config(
        "tlsbench",
        8,
        &[
            servers[0].test_server("bench-a"),
            servers[1].test_server("bench-b"),
        ],
        &redis.url(),
    );
    let mut tls = plain.clone();
    for server in &mut tls.servers {
        server.tls = TlsConfig {
            mode: None,
            ca_file: Some(certs.path("ca.pem")),
            cert_file: Some(certs.path("client.pem")),
            key_file: Some(certs.path("client-key.pem")),
        };
    }
    tls.redis.url = format!("rediss://127.0.0.1:{tls_port}");
    tls.redis.tls.ca_file = Some(certs.path("ca.pem"));

    for round in 1..=rounds {
        for (name, config) in [("plain", &plain), ("tls", &tls)] {
            let (_dir, path) = write_config_file(config);
            println!("\n## round {round}: {name}\n");
            let status = Command::new(&rpsctl)
                .arg("--config")
                .arg(&path)
                .arg("bench")
                .args(&bench_args)
                .env("RUST_LOG", "warn")
                .status()
                .expect("run rpsctl bench");
            assert!(status.success(), "rpsctl bench ({name}) failed: {status}");
        }
    }
}
