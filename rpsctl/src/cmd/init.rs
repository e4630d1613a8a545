//! `rpsctl init`: schema, account and grants on every server of the topology.

use rps_core::Config;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    /// Whether this run created anything (false on a second run).
    changed: bool,
    servers: Vec<ServerReport>,
}

#[derive(Debug, serde::Serialize)]
struct ServerReport {
    server: String,
    user_created: Option<String>,
    databases_created: Vec<String>,
    tables_created: Vec<String>,
    /// Server settings the pipeline needs and does not have (see sql/server.cnf).
    setting_mismatches: Vec<SettingMismatch>,
}

#[derive(Debug, serde::Serialize)]
struct SettingMismatch {
    setting: String,
    expected: String,
    actual: String,
}

pub async fn run(config: Arc<Config>, args: Args) -> anyhow::Result<()> {
    let report = rps_event_store::init(&config).await?;
    if args.json {
        return crate::cli::print_json(&Report {
            changed: report.changed_anything(),
            servers: report
                .servers
                .iter()
                .map(|s| ServerReport {
                    server: s.server.clone(),
                    user_created: s.user_created.clone(),
                    databases_created: s.databases_created.clone(),
                    tables_created: s.tables_created.clone(),
                    setting_mismatches: s
                        .setting_mismatches
                        .iter()
                        .map(|(setting, expected, actual)| SettingMismatch {
                            setting: setting.clone(),
                            expected: expected.clone(),
                            actual: actual.clone(),
                        })
                        .collect(),
                })
                .collect(),
        });
    }
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
