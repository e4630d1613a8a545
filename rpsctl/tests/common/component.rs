//! One stand-alone component (`rpsctl <component> --metrics-bind …`) as the
//! metrics and health tests run it: its log in a file, killed on drop.

use std::path::Path;
use std::process::{Command, Stdio};
use test_support::KillOnDrop;

pub fn spawn_component(config: &Path, component: &str, port: u16, log: &Path) -> KillOnDrop {
    let log = std::fs::File::create(log).expect("log file");
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rpsctl"))
            .arg("--config")
            .arg(config)
            .arg(component)
            .arg("--metrics-bind")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn rpsctl"),
    )
}
