//! The shared harness of the black-box tests: it starts the real
//! `agent-events` binary on an ephemeral port with a fresh data directory,
//! talks to it over real WebSocket and HTTP connections, and kills it when
//! the test is done.
//!
//! Nothing here sleeps to synchronise: every wait is for a message (with a
//! timeout) or, where a counter is the thing awaited, a bounded poll of
//! `/admin/stats`.
//!
//! A map of its parts, each re-exported here so that a suite names them as
//! `common::…`:
//! - [`broker`]: `BrokerBuilder`, `Broker` (start, signals, `kill -9`,
//!   graceful stop) and `DataDir` for restarts on the same data;
//! - [`process`]: child processes started until ready and killed on drop
//!   (the brokers, the cluster suites' `redis-server`);
//! - [`mongodb`]: a MongoDB database of one test;
//! - [`client`]: the WebSocket test client and its `Frame`s;
//! - [`http`]: posting events, any request, stats, polling a figure;
//! - [`events`]: event constructors and the JSON comparisons;
//! - [`load`]: `BusyProducers` and the replay seam run under load.

// Each test file uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod client;
pub mod events;
pub mod http;
pub mod load;
pub mod mongodb;
pub mod process;

pub use self::broker::*;
pub use self::client::*;
pub use self::events::*;
pub use self::http::*;
pub use self::load::*;
pub use self::mongodb::*;
pub use self::process::*;

use std::time::Duration;

/// How long one awaited message (or HTTP answer) may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// How long the broker may take to say it is listening, or to exit.
pub const STARTUP: Duration = Duration::from_secs(30);
