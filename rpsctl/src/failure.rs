//! Exit codes: scripts tell "it ran and found something" apart from "it
//! could not run" without parsing messages.

use std::fmt;
use std::process::ExitCode;

/// The command ran and found differences, or as a dry run it would change something.
pub const DIFFERENCES: u8 = 1;
/// The command line is wrong (clap uses the same code for its own errors).
pub const USAGE: u8 = 2;
/// The command could not do its job: config, connection, a server refused.
pub const COULD_NOT_RUN: u8 = 3;

/// The table `rpsctl --help` ends with; docs/operations.md has the same.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  differences found: `verify` found drift (and did not repair it), a dry run
     (`replay --dry-run`, `xa sweep --dry-run`) would change something
  2  usage error: unknown command or flag, bad value, a shard or server the
     topology does not have
  3  could not run: config error, connection failure, a server refused, an
     action that did not happen (e.g. `xa commit` of a branch no server lists)";

/// Why a command did not exit with 0.
#[derive(Debug)]
pub enum Failure {
    Differences(String),
    Usage(String),
    CouldNotRun(anyhow::Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Differences(_) => DIFFERENCES,
            Failure::Usage(_) => USAGE,
            Failure::CouldNotRun(_) => COULD_NOT_RUN,
        }
    }

    /// Tells stderr why, and returns the exit code.
    pub fn report(&self) -> ExitCode {
        match self {
            Failure::Differences(m) => eprintln!("{m}"),
            Failure::Usage(m) => eprintln!("error: {m}"),
            // The same form as anyhow's own `main`: the message and its causes.
            Failure::CouldNotRun(e) => eprintln!("Error: {e:?}"),
        }
        ExitCode::from(self.code())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Differences(m) | Failure::Usage(m) => f.write_str(m),
            Failure::CouldNotRun(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Anything a command returns that is not a [`Failure`] could not run.
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<Failure>() {
            Ok(f) => f,
            Err(e) => Failure::CouldNotRun(e),
        }
    }
}

/// An error for a command's `anyhow::Result` that exits with [`DIFFERENCES`].
pub fn differences(message: impl Into<String>) -> anyhow::Error {
    Failure::Differences(message.into()).into()
}

/// An error for a command's `anyhow::Result` that exits with [`USAGE`].
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Failure::Usage(message.into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn anyhow_errors_could_not_run_and_marked_ones_keep_their_code() {
        assert_eq!(
            Failure::from(anyhow::anyhow!("refused")).code(),
            COULD_NOT_RUN
        );
        assert_eq!(Failure::from(differences("3 differ")).code(), DIFFERENCES);
        assert_eq!(Failure::from(usage("no shard 9")).code(), USAGE);
        let wrapped = Err::<(), _>(differences("3 differ")).context("verify");
        assert_eq!(Failure::from(wrapped.unwrap_err()).code(), DIFFERENCES);
    }
}
