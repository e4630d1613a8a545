//! What holding XA branches costs the reader, measured in one run on a
//! private server and Redis per flavor: the same rows, in transactions of
//! the same size, once as plain transactions and once as XA branches
//! (prepared, then committed from a second session), published from a
//! backlog. Each side is published `ROUNDS` times, alternating, so the
//! ratio is against a baseline of the same minute.
//!
//! `cargo run --release -p cdc-reader --example xa_bench -- [rows] [rows_per_trx] [flavors]`
//! (defaults 100000, 4, `mariadb,mysql`).

use cdc_reader::Checkpoint;
use mysql_async::prelude::*;
use std::time::{Duration, Instant};
use test_support::{MariaDbInstance, MySqlInstance, RedisInstance, ShardServerInstance, TestEnv};
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 3;
const SHARDS: u16 = 4;

/// Writes the rows of every shard in transactions of `per_trx` rows, as XA
/// branches (prepare, then commit from a second session) or plainly.
async fn load(env: &TestEnv, rows: usize, per_trx: usize, xa: bool, base: i64) {
    let mut tasks = Vec::new();
    for shard in 0..SHARDS {
        let store = env.store.clone();
        let mut conn = env.admin_conn(shard).await;
        let mut decider = env.admin_conn(shard).await;
        let evs = test_support::started_events(
            shard,
            SHARDS,
            base + 100_000_000 * i64::from(shard),
            rows / usize::from(SHARDS),
        );
        tasks.push(tokio::spawn(async move {
            for (i, c) in evs.chunks(per_trx).enumerate() {
                let xid = format!("'b{base}-{shard}-{i}'");
                if xa {
                    conn.query_drop(format!("XA START {xid}"))
                        .await
                        .expect("start");
                }
                store
                    .append_batch(&mut conn, shard, "match_result_events", c)
                    .await
                    .expect("insert");
                if xa {
                    conn.query_drop(format!("XA END {xid}")).await.expect("end");
                    conn.query_drop(format!("XA PREPARE {xid}"))
                        .await
                        .expect("prepare");
                    // MariaDB: the branch leaves its session only when the
                    // session ends or moves on; MySQL detaches it at prepare.
                    if decider
                        .query_drop(format!("XA COMMIT {xid}"))
                        .await
                        .is_err()
                    {
                        conn.query_drop(format!("XA COMMIT {xid}"))
                            .await
                            .expect("commit");
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
}

async fn publish_from(env: &TestEnv, start: &Checkpoint, rows: u64) -> anyhow::Result<Duration> {
    use fred::prelude::*;
    let redis = env.redis().await;
    let keys = env.config.keys();
    for s in 0..env.config.shard_count {
        let _: () = redis.del(keys.events(s)).await?;
    }
    let server = &env.config.servers[0].name;
    for t in rps_core::keys::PublishTarget::all(env.config.shard_count) {
        let _: () = redis.del(keys.cdc_xa_branches(server, t)).await?;
        let _: () = redis.del(keys.cdc_target_checkpoint(server, t)).await?;
    }
    let _: () = redis
        .set(
            keys.cdc_checkpoint(server),
            start.encode("bench", 0),
            None,
            None,
            false,
        )
        .await?;
    let token = CancellationToken::new();
    let reader = tokio::spawn(cdc_reader::run(env.config.clone(), token.clone()));
    let inspect = cdc_reader::inspect::connect(&env.config).await?;
    let t0 = Instant::now();
    loop {
        let n = cdc_reader::inspect::total_entries(&inspect, &env.config).await?;
        if n >= rows {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "only {n} of {rows}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = t0.elapsed();
    token.cancel();
    reader.await??;
    Ok(took)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let per_trx: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let flavors = args.next().unwrap_or_else(|| "mariadb,mysql".into());
    let total = (rows / usize::from(SHARDS) * usize::from(SHARDS)) as u64;
    println!("{total} rows over {SHARDS} shards in transactions of {per_trx} rows, published from a backlog; best of {ROUNDS} alternating rounds.\n");
    println!("| server | plain | XA (prepare, then commit) | XA ÷ plain |");
    println!("|---|---|---|---|");
    for flavor in flavors.split(',') {
        let db = match flavor {
            "mariadb" => ShardServerInstance::MariaDb(MariaDbInstance::start(73).await),
            "mysql" => ShardServerInstance::MySql(MySqlInstance::start(74).await),
            other => anyhow::bail!("unknown flavor {other}"),
        };
        let redis = RedisInstance::start(false).await;
        let env = TestEnv::on_servers(
            "xabench",
            SHARDS,
            &[db.test_server("bench-a")],
            &redis.url(),
        )
        .await;
        let plain_start = cdc_reader::start_position(&env.config, 0).await?;
        load(&env, rows, per_trx, false, 1_000_000_000).await;
        let xa_start = cdc_reader::start_position(&env.config, 0).await?;
        load(&env, rows, per_trx, true, 2_000_000_000).await;
        let (mut plain, mut xa) = (Duration::MAX, Duration::MAX);
        for _ in 0..ROUNDS {
            plain = plain.min(publish_from(&env, &plain_start, total).await?);
            // From the XA backlog's start only its rows are new; the plain
            // rows before it are not read again.
            xa = xa.min(publish_from(&env, &xa_start, total).await?);
        }
        let rps = |d: Duration| total as f64 / d.as_secs_f64();
        println!(
            "| {} | {:.0} rows/s | {:.0} rows/s | {:.2}× |",
            flavor,
            rps(plain),
            rps(xa),
            rps(xa) / rps(plain)
        );
        drop(env);
        drop(redis);
        drop(db);
    }
    Ok(())
}
