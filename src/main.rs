//! The `cepheus` binary: wire-up only.

use std::process::ExitCode;

use clap::Parser;

use cepheus::cli::{check, load, replay, serve, Cli, Command};
use cepheus::rules::RuleLimits;

// NB: under load glibc malloc spent a third of the server's time in its
// arena locks and free-list consolidation; mimalloc's per-thread heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its option enum's 16th member).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // NB: by default mimalloc gives freed pages back to the kernel after
    // 10 ms, and the next batch of requests faults them in again, zeroed:
    // `clear_page_erms` was 7-9 % of the server's samples under load. A
    // second's delay keeps them while traffic lasts (+13 % events/s in
    // `cepheus load`, BENCHMARKS.md).
    // SAFETY: setting an option is a plain store mimalloc reads lazily.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1_000) };
    // NB: clap exits with status 2 on usage errors by itself.
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cepheus: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Replay(args) => match replay::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(3),
            Err(e) => {
                eprintln!("cepheus replay: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Load(args) => match load::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cepheus load: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Token { name, scopes } => match cepheus::api::auth::new_token() {
            Ok((token, hash)) => {
                println!("token (give this to the client; it is shown once):\n  {token}\n");
                println!("config entry (the hash only):\n[[auth.tokens]]\nname = {name:?}\nsha256 = \"{hash}\"\nscopes = {scopes:?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cepheus: cannot read randomness: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Openapi { output } => {
            let json = cepheus::api::docs::openapi_json();
            let written = match output {
                Some(path) => std::fs::write(&path, json + "\n")
                    .map_err(|e| format!("{}: {e}", path.display())),
                None => {
                    use std::io::Write as _;
                    // A closed pipe (`| head`) is not an error worth a panic.
                    let _ = writeln!(std::io::stdout().lock(), "{json}");
                    Ok(())
                }
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cepheus: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
