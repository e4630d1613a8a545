//! One module per subcommand: an argument struct and a `run` that calls a library.

pub mod api;
pub mod bench;
pub mod cdc_reader;
mod common;
pub mod compensator;
pub mod completions;
pub mod dlq;
pub mod export;
pub mod healthcheck;
pub mod init;
pub mod projector;
pub mod replay;
pub mod run_all;
pub mod simulate;
pub mod status;
pub mod top;
pub mod verify;
pub mod xa;

pub use common::MetricsBind;
