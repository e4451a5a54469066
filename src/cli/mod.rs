//! The command line: one subcommand per job, each in its own module.
//!
//! `main.rs` parses a [`Cli`] and dispatches on [`Command`]; adding a
//! subcommand is a new variant here and a new module beside `check`.

pub mod check;
pub mod load;
pub mod replay;
pub mod rule_tests;
pub mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// cepheus: complex event processing over keyed event streams.
#[derive(Debug, Parser)]
#[command(name = "cepheus", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (embedded defaults: the journal and sled in ./data,
    /// listening on 127.0.0.1:8080).
    Serve(serve::ServeArgs),
    /// Make a new API token: prints the token (give it to the client) and
    /// the `[[auth.tokens]]` entry with its hash (put it in the config file).
    Token {
        /// A name for the client the token is for.
        #[arg(long, default_value = "client")]
        name: String,
        /// Scopes, comma-separated: ingest, read, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
    },
    /// Run rules over a file of events offline, on event time, and print
    /// the alerts as NDJSON (deterministic: the same input gives the same output).
    Replay(replay::ReplayArgs),
    /// Drive a running server with a synthetic keyed workload and report
    /// events/s, request latency and POST→alert latency (see BENCHMARKS.md).
    Load(load::LoadArgs),
    /// Print the OpenAPI document (JSON) of the HTTP API.
    Openapi {
        /// Write it to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Run rule test files: event streams and the alerts each must give
    /// (docs/rules.md, "Testing rules"); prints PASS or FAIL with a diff per
    /// case, exit status 1 on any failure.
    ///
    /// A directory means its *.yaml test files, or those of its cases/
    /// folder (so `cepheus test patterns/` runs the examples' cases).
    Test {
        /// Test files or directories of them.
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
    },
    /// Validate rule files and report every problem (exit status 1 if any).
    ///
    /// A directory means every *.yaml, *.yml and *.json file directly in it
    /// (not in its subdirectories).
    Check {
        /// Rule files or directories of rule files.
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
    },
}
