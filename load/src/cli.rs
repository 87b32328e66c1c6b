//! The command line. Hand-parsed: a dozen flags do not need a parser crate.

use crate::baseline::Fault;
use crate::shape::Overrides;
use crate::target::{parse_loopback_url, Kind};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage:
  agent-events-load run [--scenario NAME] [--target broker|baseline|both] [options]
  agent-events-load baseline-server [--port P]
  agent-events-load table FILE.jsonl...

run: starts the target(s) on 127.0.0.1 with an ephemeral port and a fresh data
dir, loads them, prints one JSON line per run (and per comparison) on stdout
and a readable summary and progress on stderr. Exit status 1 if any run lost,
doubled or reordered an event, or could not run.

  --scenario NAME      fanout | paced | ingest | idle | scaling | custom (default)
  --target T           broker, baseline or both (default: both; broker with --url)
  --url URL            load a running server instead (http://127.0.0.1:PORT;
                       loopback only); --pid PID to report its memory
  --also-url URL       with --url: more nodes of the same cluster (repeatable);
                       subscribers are spread evenly over all of them, the
                       producers post to --url
  --broker-bin PATH    the broker (default: agent-events beside this binary,
                       or $AGENT_EVENTS_BIN)
  --target-env K=V     extra environment for the broker child (repeatable)
  --no-pin             do not pin the target to one CPU and this tool to another

shape (overrides the scenario's values; for every step of `scaling`):
  --subscribers N  --executions N  --producers N  --batch N  --events N
  --rate EPS (0 = flat-out)  --duration SECS  --window N (0 = unbounded)
  --payload-bytes N  --settle SECS (idle wait before measuring memory)
  --timeout SECS  --connect-concurrency N
  --drain-stall SECS   stop waiting for missing deliveries after this long
                       without a new one (default 5); they count as lost

testing the checker: --baseline-fault drop:N|dup:N|reorder:N makes the baseline
drop, double or swap every Nth event frame of each connection.

baseline-server: the minimal fan-out server the broker is compared with
(POST /api/events, WebSocket subscribe by executionId); --port 0 picks one.

table: the comparisons of JSONL result files as a Markdown table.";

pub enum Command {
    Run(Box<RunArgs>),
    Baseline { port: u16, fault: Option<Fault> },
    Table(Vec<PathBuf>),
    Help,
}

#[derive(Debug)]
pub struct RunArgs {
    pub scenario: String,
    pub targets: Vec<Kind>,
    pub url: Option<SocketAddr>,
    /// More nodes of the `url`'s cluster: subscribers spread over all.
    pub also: Vec<SocketAddr>,
    pub pid: Option<u32>,
    pub broker_bin: Option<PathBuf>,
    pub target_env: Vec<(String, String)>,
    pub pin: bool,
    pub baseline_fault: Option<Fault>,
    pub overrides: Overrides,
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut words = args.into_iter();
    match words.next().as_deref() {
        Some("run") => parse_run(words).map(|args| Command::Run(Box::new(args))),
        Some("baseline-server") => {
            let (mut port, mut fault) = (3002, None);
            while let Some(word) = words.next() {
                match word.as_str() {
                    "--port" => port = value(&word, words.next())?,
                    "--fault" => fault = Some(value(&word, words.next())?),
                    "--help" | "-h" => return Ok(Command::Help),
                    other => return Err(format!("unknown argument `{other}`")),
                }
            }
            Ok(Command::Baseline { port, fault })
        }
        Some("table") => {
            let files: Vec<PathBuf> = words.map(PathBuf::from).collect();
            if files.is_empty() {
                return Err("table needs at least one JSONL file".into());
            }
            Ok(Command::Table(files))
        }
        None | Some("--help" | "-h" | "help") => Ok(Command::Help),
        Some(other) => Err(format!("unknown command `{other}`")),
    }
}

fn value<T: std::str::FromStr>(flag: &str, word: Option<String>) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let word = word.ok_or_else(|| format!("{flag} needs a value"))?;
    word.parse().map_err(|e| format!("{flag} {word}: {e}"))
}

fn seconds(flag: &str, word: Option<String>) -> Result<Duration, String> {
    let secs: f64 = value(flag, word)?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{flag}: not a duration"))
}

fn parse_run(mut words: impl Iterator<Item = String>) -> Result<RunArgs, String> {
    let mut scenario = "custom".to_owned();
    let mut target: Option<String> = None;
    let mut url = None;
    let mut also = Vec::new();
    let mut pid = None;
    let mut broker_bin = None;
    let mut target_env = Vec::new();
    let mut pin = true;
    let mut baseline_fault = None;
    let mut o = Overrides::default();
    while let Some(word) = words.next() {
        let flag = word.as_str();
        if flag == "--no-pin" {
            pin = false;
            continue;
        }
        let next = words.next();
        match flag {
            "--scenario" => scenario = value(flag, next)?,
            "--target" => target = Some(value(flag, next)?),
            "--url" => url = Some(parse_loopback_url(&value::<String>(flag, next)?)?),
            "--also-url" => also.push(parse_loopback_url(&value::<String>(flag, next)?)?),
            "--pid" => pid = Some(value(flag, next)?),
            "--broker-bin" => broker_bin = Some(value(flag, next)?),
            "--target-env" => {
                let pair: String = value(flag, next)?;
                let (k, v) = pair.split_once('=').ok_or("--target-env takes KEY=VALUE")?;
                target_env.push((k.to_owned(), v.to_owned()));
            }
            "--baseline-fault" => baseline_fault = Some(value(flag, next)?),
            "--subscribers" => o.subscribers = Some(value(flag, next)?),
            "--executions" => o.executions = Some(value(flag, next)?),
            "--producers" => o.producers = Some(value(flag, next)?),
            "--batch" => o.batch = Some(value(flag, next)?),
            "--events" => o.events = Some(value(flag, next)?),
            "--rate" => {
                let rate: f64 = value(flag, next)?;
                o.rate = Some((rate > 0.0).then_some(rate));
            }
            "--duration" => o.duration = Some(seconds(flag, next)?),
            "--window" => o.window = Some(value(flag, next)?),
            "--payload-bytes" => o.payload_bytes = Some(value(flag, next)?),
            "--settle" => o.settle = Some(seconds(flag, next)?),
            "--timeout" => o.timeout = Some(seconds(flag, next)?),
            "--drain-stall" => o.drain_stall = Some(seconds(flag, next)?),
            "--connect-concurrency" => o.connect_concurrency = Some(value(flag, next)?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let targets = match (target.as_deref(), url) {
        (Some("both"), Some(_)) => {
            return Err("--url loads one server: name it with --target".into())
        }
        (Some("both") | None, None) => vec![Kind::Broker, Kind::Baseline],
        (None, Some(_)) => vec![Kind::Broker],
        (Some(t), _) => vec![Kind::parse(t)?],
    };
    if !also.is_empty() && url.is_none() {
        return Err("--also-url goes with --url (the first node)".into());
    }
    if pid.is_some() && url.is_none() {
        return Err("--pid goes with --url (a started target's pid is known)".into());
    }
    Ok(RunArgs {
        scenario,
        targets,
        url,
        also,
        pid,
        broker_bin,
        target_env,
        pin,
        baseline_fault,
        overrides: o,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &str) -> Result<RunArgs, String> {
        let words =
            std::iter::once("run".to_owned()).chain(args.split_whitespace().map(String::from));
        match parse(words)? {
            Command::Run(args) => Ok(*args),
            _ => Err("not run".into()),
        }
    }

    #[test]
    fn also_url_adds_cluster_nodes_to_a_url() {
        let a = run("--url http://127.0.0.1:3001 --also-url http://127.0.0.1:3002").unwrap();
        assert_eq!(a.also, ["127.0.0.1:3002".parse().unwrap()]);
        assert!(
            run("--also-url http://127.0.0.1:3002").is_err(),
            "needs --url"
        );
        assert!(run("--url http://127.0.0.1:3001 --also-url http://10.0.0.1:3002").is_err());
    }

    #[test]
    fn defaults_run_both_targets() {
        let a = run("").unwrap();
        assert_eq!(a.scenario, "custom");
        assert_eq!(a.targets, [Kind::Broker, Kind::Baseline]);
        assert!(a.pin);
    }

    #[test]
    fn flags_and_overrides() {
        let a = run(
            "--scenario fanout --target baseline --events 50 --rate 0 --no-pin --subscribers 5",
        )
        .unwrap();
        assert_eq!(a.scenario, "fanout");
        assert_eq!(a.targets, [Kind::Baseline]);
        assert_eq!(a.overrides.events, Some(50));
        assert_eq!(a.overrides.rate, Some(None));
        assert_eq!(a.overrides.subscribers, Some(5));
        assert!(!a.pin);
        let a = run("--no-pin").unwrap();
        assert!(!a.pin);
    }

    #[test]
    fn url_is_loopback_only_and_one_target() {
        assert_eq!(
            run("--url http://127.0.0.1:3001").unwrap().targets,
            [Kind::Broker]
        );
        assert!(run("--url http://192.168.1.2:3001").is_err());
        assert!(run("--url http://127.0.0.1:3001 --target both").is_err());
        assert!(run("--pid 5").is_err());
    }

    #[test]
    fn mistakes_are_named() {
        assert!(run("--events").unwrap_err().contains("--events"));
        assert!(run("--events many").is_err());
        assert!(run("--frobnicate").is_err());
        assert!(run("--target-env NOEQUALS").is_err());
        assert!(run("--baseline-fault lose:2").is_err());
    }
}
