//! Benchmark of the reader, all measured in one run on private servers, for
//! each source side by side: MariaDB, MySQL, and MySQL with
//! `binlog_transaction_compression=ON`:
//!
//! 1. rows/s decoded from a backlog of N rows (no publishing), beside the
//!    server's own binlog tool (`mariadb-binlog -v`, MySQL's `mysqlbinlog -v`)
//!    reading the same binlog from the same server, and (MariaDB only)
//!    python-mysql-replication;
//! 2. rows/s published into the shard streams from that backlog;
//! 3. peak RSS of a reader process while it publishes one N-row transaction.
//!
//! `cargo run --release -p cdc-reader --example cdc_bench -- [rows] [sources]`
//! (default 1M rows; sources a comma list of `mariadb,mysql,mysql-zstd`).

use cdc_reader::Checkpoint;
use rps_core::Config;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_support::{
    MariaDbInstance, MySqlInstance, RedisInstance, ShardServerInstance, TestEnv, TestFlavor,
};
use tokio_util::sync::CancellationToken;

fn config_toml(c: &Config) -> String {
    let mut s = format!(
        "shard_count = {}\ndatabase_prefix = \"{}\"\n[redis]\nurl = \"{}\"\nprefix = \"{}\"\n[api]\nbind = \"127.0.0.1:0\"\n[cdc]\nserver_id_base = {}\nheartbeat_ms = {}\nbatch_rows = {}\n",
        c.shard_count, c.database_prefix, c.redis.url, c.redis.prefix, c.cdc.server_id_base + 50, c.cdc.heartbeat_ms, c.cdc.batch_rows
    );
    for sv in &c.servers {
        s.push_str(&format!(
            "[[servers]]\nname = \"{}\"\nurl = \"{}\"\nshards = {:?}\n",
            sv.name, sv.url, sv.shards
        ));
    }
    s
}

/// Child mode: just the reader, so its RSS is the reader's alone.
async fn child(path: &str) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(std::path::Path::new(path))?);
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
    });
    cdc_reader::run(config, token).await?;
    Ok(())
}

async fn set_checkpoint(env: &TestEnv, start: &Checkpoint) -> anyhow::Result<()> {
    use fred::prelude::*;
    let redis = env.redis().await;
    let keys = env.config.keys();
    for s in 0..env.config.shard_count {
        let _: () = redis.del(keys.events(s)).await?;
    }
    let server = &env.config.servers[0].name;
    for k in keys.cdc_target_checkpoints(server, env.config.shard_count) {
        let _: () = redis.del(k).await?;
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
    Ok(())
}

async fn wait_entries(env: &TestEnv, rows: u64, timeout: Duration) -> anyhow::Result<Duration> {
    let redis = cdc_reader::inspect::connect(&env.config).await?;
    let t0 = Instant::now();
    loop {
        let n = cdc_reader::inspect::total_entries(&redis, &env.config).await?;
        if n >= rows {
            return Ok(t0.elapsed());
        }
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "only {n} of {rows} entries after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One source of the comparison.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    MariaDb,
    MySql,
    MySqlCompressed,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::MariaDb => "MariaDB 10.11",
            Source::MySql => "MySQL 9.7",
            Source::MySqlCompressed => "MySQL 9.7, compressed",
        }
    }
}

/// What one source measured.
struct Measured {
    mb: f64,
    decode_rps: f64,
    tool: &'static str,
    tool_rps: f64,
    py_rps: Option<f64>,
    publish_rps: f64,
    commit: Duration,
    big: Duration,
    hwm: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if let Ok(path) = std::env::var("BENCH_CHILD_CONFIG") {
        return child(&path).await;
    }
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let sources: Vec<Source> = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "mariadb,mysql,mysql-zstd".into())
        .split(',')
        .map(|s| match s {
            "mariadb" => Ok(Source::MariaDb),
            "mysql" => Ok(Source::MySql),
            "mysql-zstd" => Ok(Source::MySqlCompressed),
            other => Err(anyhow::anyhow!("unknown source {other}")),
        })
        .collect::<anyhow::Result<_>>()?;
    let mut results = Vec::new();
    for s in &sources {
        eprintln!("== {}", s.name());
        results.push((*s, bench(*s, rows).await?));
    }
    let total = (rows / 8 * 8) as u64;
    println!(
        "{total} rows over 8 shards in 2000-row INSERTs; one private server and Redis each.\n"
    );
    print!("| measurement |");
    for (s, _) in &results {
        print!(" {} |", s.name());
    }
    println!();
    print!("|---|");
    for _ in &results {
        print!("---|");
    }
    println!();
    let row = |label: &str, f: &dyn Fn(&Measured) -> String| {
        print!("| {label} |");
        for (_, m) in &results {
            print!(" {} |", f(m));
        }
        println!();
    };
    row("binlog bytes of the backlog", &|m| {
        format!("{:.0} MB", m.mb)
    });
    row("cdc-reader decode (no publish), best of 3", &|m| {
        format!("{:.0} rows/s", m.decode_rps)
    });
    row("the server's own binlog tool `-v`, same binlog", &|m| {
        format!("{:.0} rows/s (`{}`)", m.tool_rps, m.tool)
    });
    row("cdc-reader decode ÷ the tool", &|m| {
        format!("{:.1}×", m.decode_rps / m.tool_rps)
    });
    row("python-mysql-replication (first 100k rows)", &|m| {
        m.py_rps
            .map(|r| format!("{r:.0} rows/s"))
            .unwrap_or_else(|| "–".into())
    });
    row("cdc-reader publish into the shard streams", &|m| {
        format!("{:.0} rows/s", m.publish_rps)
    });
    row("one N-row transaction: committed in", &|m| {
        format!("{:.1?}", m.commit)
    });
    row("… all of it published after the commit in", &|m| {
        format!("{:.1?}", m.big)
    });
    row("reader process peak RSS during it", &|m| m.hwm.clone());
    Ok(())
}

async fn bench(source: Source, rows: usize) -> anyhow::Result<Measured> {
    let shards = 8u16;
    let db = match source {
        Source::MariaDb => ShardServerInstance::MariaDb(MariaDbInstance::start(71).await),
        _ => ShardServerInstance::MySql(MySqlInstance::start(72).await),
    };
    let redis = RedisInstance::start(false).await;
    let env =
        TestEnv::on_servers("bench", shards, &[db.test_server("bench-a")], &redis.url()).await;
    let config = env.config.clone();
    let start = cdc_reader::start_position(&config, 0).await?;
    let session: &[&str] = match source {
        Source::MySqlCompressed => &["SET SESSION binlog_transaction_compression = ON"],
        _ => &[],
    };

    // The backlog: N rows over 8 shards in multi-row INSERTs of 2000 rows.
    let t0 = Instant::now();
    let mut loads = Vec::new();
    for shard in 0..shards {
        let store = env.store.clone();
        let mut conn = env.admin_conn(shard).await;
        let evs = test_support::started_events(
            shard,
            shards,
            1_000_000_000 * i64::from(shard + 1),
            rows / usize::from(shards),
        );
        let session: Vec<String> = session.iter().map(|s| s.to_string()).collect();
        loads.push(tokio::spawn(async move {
            use mysql_async::prelude::*;
            for s in session {
                conn.query_drop(s).await.expect("session setup");
            }
            for c in evs.chunks(2000) {
                store
                    .append_batch(&mut conn, shard, "match_result_events", c)
                    .await
                    .expect("insert");
            }
        }));
    }
    for l in loads {
        l.await?;
    }
    let total = (rows / usize::from(shards) * usize::from(shards)) as u64;
    eprintln!("loaded {total} rows in {:.1?}", t0.elapsed());

    // 1. Decode only (best of 3).
    let mut best = cdc_reader::reader::DecodeStats::default();
    for _ in 0..3 {
        let s = cdc_reader::reader::decode_only(&config, 0, &start, total).await?;
        anyhow::ensure!(s.rows == total, "decoded {} of {total}", s.rows);
        if best.elapsed.is_zero() || s.elapsed < best.elapsed {
            best = s;
        }
    }
    let decode_rps = total as f64 / best.elapsed.as_secs_f64();
    let mb = best.bytes as f64 / 1e6;
    eprintln!(
        "decode: {total} rows, {mb:.0} MB of binlog in {:.2?}",
        best.elapsed
    );

    // The server's own binlog tool on the same binlog, from the same server.
    let logs: Vec<String> = {
        let mut a = env.admin_conn(0).await;
        let flavor = rps_event_store::Flavor::detect(&mut a).await?;
        flavor
            .binary_logs(&mut a)
            .await?
            .into_iter()
            .map(|(f, _)| f)
            .filter(|f| *f >= start.file)
            .collect()
    };
    let (flavor, tool) = match source {
        Source::MariaDb => (TestFlavor::MariaDb, "mariadb-binlog"),
        _ => (TestFlavor::MySql, "mysqlbinlog"),
    };
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let t = Instant::now();
    let st = if quick {
        Command::new("true").status()?
    } else {
        flavor
            .binlog_dump_command()
            .args([
                "--read-from-remote-server",
                "--host=127.0.0.1",
                "-uroot",
                "-v",
            ])
            .arg(format!("--port={}", db.port()))
            .arg(format!("--start-position={}", start.pos))
            .args(&logs)
            .stdout(Stdio::null())
            .status()?
    };
    let tool_time = t.elapsed();
    anyhow::ensure!(st.success(), "{tool} failed");
    let tool_rps = total as f64 / tool_time.as_secs_f64();

    // python-mysql-replication: slow, so on the first 100k rows; it reads
    // MariaDB's binlog only.
    let py_rps = if source == Source::MariaDb && !quick {
        let py_rows = total.min(100_000);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bench_pyrepl.py");
        match Command::new("python3")
            .arg(script)
            .arg(db.port().to_string())
            .arg(&start.file)
            .arg(start.pos.to_string())
            .arg(py_rows.to_string())
            .output()
        {
            Ok(o) if o.status.success() => {
                let out = String::from_utf8_lossy(&o.stdout);
                let mut it = out.split_whitespace();
                let n: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
                let s: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(1.0);
                Some(n / s)
            }
            Ok(o) => {
                eprintln!(
                    "python-mysql-replication failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                None
            }
            Err(e) => {
                eprintln!("python3 not runnable: {e}");
                None
            }
        }
    } else {
        None
    };

    // 2. Publish the backlog into the streams.
    set_checkpoint(&env, &start).await?;
    let token = CancellationToken::new();
    let reader = tokio::spawn(cdc_reader::run(config.clone(), token.clone()));
    let publish = wait_entries(&env, total, Duration::from_secs(600)).await?;
    token.cancel();
    let _ = reader.await?;
    let publish_rps = total as f64 / publish.as_secs_f64();

    // 3. Peak RSS of a reader process during one N-row transaction.
    let here = cdc_reader::start_position(&config, 0).await?;
    set_checkpoint(&env, &here).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rps.toml");
    std::fs::write(&path, config_toml(&config))?;
    let mut child = Command::new(std::env::current_exe()?)
        .env("BENCH_CHILD_CONFIG", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    {
        use mysql_async::prelude::*;
        let mut conn = env.admin_conn(0).await;
        for s in session {
            conn.query_drop(*s).await?;
        }
        conn.query_drop("BEGIN").await?;
        let evs = test_support::started_events(0, shards, 5_000_000_000, total as usize);
        for c in evs.chunks(5000) {
            env.store
                .append_batch(&mut conn, 0, "match_result_events", c)
                .await?;
        }
        conn.query_drop("COMMIT").await?;
    }
    let commit = t.elapsed();
    // set_checkpoint emptied the streams: these are the transaction's rows.
    let big = wait_entries(&env, total, Duration::from_secs(600)).await?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ? kB")
        .trim_start_matches("VmHWM:")
        .trim()
        .to_string();
    let _ = child.kill();
    let _ = child.wait();
    env.cleanup().await;
    Ok(Measured {
        mb,
        decode_rps,
        tool,
        tool_rps,
        py_rps,
        publish_rps,
        commit,
        big,
        hwm,
    })
}
