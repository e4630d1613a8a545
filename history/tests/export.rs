//! Export round trips: every format carries exactly the rows SQL holds
//! (same count and same per-row checksum), in `occurred_at` order.

use history::export::{ExportOptions, Format};
use history::mysql_async::prelude::Queryable;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use std::collections::BTreeSet;
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

/// (shard, id, event_id, match_id, version, event_type, occurred_at µs)
type Key = (u16, i64, String, i64, i32, String, i64);

async fn sql_rows(env: &TestEnv, shard: Option<u16>) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    for s in 0..env.config.shard_count {
        if shard.is_some_and(|x| x != s) {
            continue;
        }
        let mut conn = env.admin_conn(s).await;
        let rows: Vec<(i64, String, i64, i32, String, i64)> = conn
            .query(format!(
                "SELECT id, event_id, match_id, version, event_type, \
                 TIMESTAMPDIFF(MICROSECOND, '1970-01-01', occurred_at) FROM `{}`.match_result_events",
                env.config.database(s)
            ))
            .await
            .expect("sql");
        for (id, e, m, v, t, at) in rows {
            out.insert((s, id, e, m, v, t, at));
        }
    }
    out
}

async fn export(env: &TestEnv, format: Format, shard: Option<u16>) -> Vec<u8> {
    let file = tempfile::NamedTempFile::new().expect("temp");
    let report = history::export::export(
        env.config.clone(),
        ExportOptions {
            format,
            season: None,
            from: None,
            to: None,
            shards: shard.map(|s| vec![s]),
        },
        file.reopen().expect("reopen"),
        CancellationToken::new(),
    )
    .await
    .expect("export");
    let bytes = std::fs::read(file.path()).expect("read back");
    assert!(report.rows > 0);
    bytes
}

fn parse_ts(s: &str) -> i64 {
    rps_core::Timestamp::parse(s)
        .expect("timestamp")
        .as_micros()
}

fn check_order(rows: &[Key]) {
    assert!(
        rows.windows(2).all(|w| w[0].6 <= w[1].6),
        "rows are not in occurred_at order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_format_round_trips_the_sql_rows() {
    let env = TestEnv::new("hist_export").await;
    simulator::run(
        env.store.clone(),
        simulator::SimulateOptions {
            players: 200,
            matches: 800,
            seed: Some(5),
            ..Default::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect("load");
    let expected = sql_rows(&env, None).await;
    assert!(expected.len() > 2000);

    // NDJSON
    let bytes = export(&env, Format::Ndjson, None).await;
    let rows: Vec<Key> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("json line");
            assert_eq!(
                v.as_object().expect("object").len(),
                history::export::COLUMNS.len()
            );
            (
                v["shard"].as_u64().unwrap() as u16,
                v["id"].as_i64().unwrap(),
                v["event_id"].as_str().unwrap().to_string(),
                v["match_id"].as_i64().unwrap(),
                v["version"].as_i64().unwrap() as i32,
                v["event_type"].as_str().unwrap().to_string(),
                parse_ts(v["occurred_at"].as_str().unwrap()),
            )
        })
        .collect();
    check_order(&rows);
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows.iter().cloned().collect::<BTreeSet<_>>(), expected);

    // CSV, with the stable header.
    let bytes = export(&env, Format::Csv, None).await;
    let mut rdr = csv::Reader::from_reader(&bytes[..]);
    let header: Vec<String> = rdr
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(header, history::export::COLUMNS);
    let rows: Vec<Key> = rdr
        .records()
        .map(|r| {
            let r = r.expect("record");
            (
                r[0].parse().unwrap(),
                r[2].parse().unwrap(),
                r[3].to_string(),
                r[4].parse().unwrap(),
                r[5].parse().unwrap(),
                r[6].to_string(),
                parse_ts(&r[16]),
            )
        })
        .collect();
    check_order(&rows);
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows.iter().cloned().collect::<BTreeSet<_>>(), expected);

    // Parquet, read back with parquet's own reader.
    let bytes = export(&env, Format::Parquet, None).await;
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("parquet");
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(names, history::export::COLUMNS);
    let mut rows: Vec<Key> = Vec::new();
    for row in reader.get_row_iter(None).expect("rows") {
        let r = row.expect("row");
        rows.push((
            r.get_ushort(0).expect("shard"),
            r.get_long(2).expect("id"),
            r.get_string(3).expect("event_id").clone(),
            r.get_long(4).expect("match_id"),
            r.get_int(5).expect("version"),
            r.get_string(6).expect("event_type").clone(),
            r.get_timestamp_micros(16).expect("occurred_at"),
        ));
    }
    check_order(&rows);
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), expected);

    // One shard only.
    let bytes = export(&env, Format::Ndjson, Some(3)).await;
    let n = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(n, sql_rows(&env, Some(3)).await.len());
    env.cleanup().await;
}
