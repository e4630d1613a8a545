//! `rpsctl init`: schema, account and grants on every server of the topology.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(config: Arc<Config>, _args: Args) -> anyhow::Result<()> {
    let report = rps_event_store::init(&config).await?;
    for s in &report.servers {
        println!("{}:", s.server);
        if let Some(u) = &s.user_created {
            println!("  created user {u}");
        }
        for d in &s.databases_created {
            println!("  created database {d}");
        }
        for t in &s.tables_created {
            println!("  created table {t}");
        }
        if s.user_created.is_none() && s.databases_created.is_empty() && s.tables_created.is_empty()
        {
            println!("  nothing to create: schema, account and grants already in place");
        }
        for (setting, expected, actual) in &s.setting_mismatches {
            println!("  WARNING: {setting} is {actual:?}, the pipeline needs {expected:?} (see sql/server.cnf)");
        }
    }
    Ok(())
}
