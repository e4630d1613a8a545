//! What the `rpsctl bench` comparison harnesses share: their command line
//! (`[--rounds N] [-- rpsctl bench arguments]`) and the `rpsctl` binary
//! built beside them.

use std::path::PathBuf;

/// A harness run: how many rounds, what to pass to every `rpsctl bench`,
/// and the binary to run.
pub struct BenchHarness {
    pub rounds: usize,
    pub bench_args: Vec<String>,
    pub rpsctl: PathBuf,
}

impl BenchHarness {
    /// From the process's arguments; panics with the usage of `name`.
    pub fn from_args(name: &str) -> BenchHarness {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (ours, bench_args) = match args.iter().position(|a| a == "--") {
            Some(i) => (&args[..i], &args[i + 1..]),
            None => (&args[..], &[][..]),
        };
        let rounds = match ours {
            [flag, n] if flag == "--rounds" => n.parse().expect("--rounds N"),
            [] => 1,
            _ => panic!("usage: {name} [--rounds N] [-- rpsctl bench arguments]"),
        };
        let rpsctl = std::env::current_exe()
            .expect("own path")
            .parent()
            .and_then(|examples| examples.parent())
            .expect("target/<profile>/examples")
            .join("rpsctl");
        assert!(
            rpsctl.exists(),
            "{} is missing: cargo build --release -p rpsctl --bin rpsctl",
            rpsctl.display()
        );
        BenchHarness {
            rounds,
            bench_args: bench_args.to_vec(),
            rpsctl,
        }
    }
}
