//! The `cepheus` binary: wire-up only.

use std::process::ExitCode;

use clap::Parser;

use cepheus::cli::{check, Cli, Command};
use cepheus::rules::RuleLimits;

fn main() -> ExitCode {
    // NB: clap exits with status 2 on usage errors by itself.
    let cli = Cli::parse();
    match cli.command {
        Command::Check { paths } => {
            let valid = check::run(
                &paths,
                &RuleLimits::default(),
                &mut std::io::stdout().lock(),
            );
            if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
