//! `agent-events`: the broker binary. Reads the settings, starts the actors
//! and the server, and exits 0 after a graceful shutdown.

#![warn(missing_docs)]

mod analytics;
mod api;
mod asyncapi;
mod config;
mod ingest;
mod monitor;
mod notifications;
mod openapi;
mod routes;
mod schema;
mod security;
mod server;
mod sse;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: agent-events [--config FILE] [--demo]
       agent-events [--config FILE] token --role ROLE [--sub NAME] [--executions IDS] [--conversations IDS] [--ttl SECS]

  --config FILE  settings file (keys of config/default.toml); env vars still win
  --demo         run simulated orchestrations so events flow at once
  token          print a token signed with auth_hmac_secret: ROLE is subscriber,
                 producer or admin; IDS are comma-separated IDs or prefixes (team:*);
                 --ttl defaults to 3600 seconds
  --help         this text

See docs/reference.md for every setting and config/default.toml for their defaults.";

/// What the command line asked for.
struct Args {
    config: Option<PathBuf>,
    demo: bool,
    /// `token …`: the words after it.
    token: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        demo: false,
        token: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--demo" => args.demo = true,
            "token" => {
                args.token = Some(words.by_ref().collect());
            }
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

/// Status 2: the settings or arguments cannot work; nothing was started.
fn cannot_start(err: impl std::fmt::Display) -> ExitCode {
    log::error!("cannot start: {err}");
    ExitCode::from(2)
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
        Err(err) => return cannot_start(err),
    };
    if let Some(words) = args.token {
        return match token::mint(&config, &words) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(problem) => {
                eprintln!("agent-events token: {problem}\n\n{USAGE}");
                ExitCode::from(2)
            }
        };
    }
    // Settings that cannot work together, protected mode's refusal among
    // them, end the start with status 2 as bad settings do (1: a failure later).
    let guard = match security::Guard::from_config(&config) {
        Ok(guard) => guard,
        Err(err) => return cannot_start(err),
    };
    let result = actix_web::rt::System::new().block_on(server::run(config, guard, args.demo));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("stopped: {err}");
            ExitCode::FAILURE
        }
    }
}
