//! One module per subcommand: argument struct and a `run` that calls a library.

pub mod components;
pub mod init;
pub mod simulate;
