//! `agent-events`: the broker binary. Reads the settings, starts the actors
//! and the server, and exits 0 after a graceful shutdown.

#![warn(missing_docs)]

mod api_doc;
mod config;
mod monitor;
mod routes;
mod server;
mod sse;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: agent-events [--config FILE] [--demo]

  --config FILE  settings file (keys of config/default.toml); env vars still win
  --demo         run simulated orchestrations so events flow at once
  --help         this text

See README.md for every setting and config/default.toml for their defaults.";

/// What the command line asked for.
struct Args {
    config: Option<PathBuf>,
    demo: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        demo: false,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--demo" => args.demo = true,
            "--config" => {
                let path = words.next().ok_or("--config needs a file")?;
                args.config = Some(path.into());
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) if problem.is_empty() => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("agent-events: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match config::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            log::error!("cannot start: {err}");
            return ExitCode::from(2);
        }
    };
    let result = actix_web::rt::System::new().block_on(server::run(config, args.demo));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("stopped: {err}");
            ExitCode::FAILURE
        }
    }
}
