//! The backends a store suite runs on: SQLite (a fresh file per test) always,
//! MongoDB (a fresh database per test) when `MONGODB_URI` is set. Shared by
//! the store and analytics conformance suites, so both run on the same setup.

// Each suite uses a different part of this module.
#![allow(dead_code)]

use agent_events_actors::store::sqlite::SqliteStore;
use agent_events_actors::store::Store;
use chrono::Utc;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// Runs `rule` on a SQLite store in a fresh directory, removed afterwards.
pub async fn on_sqlite<F, Fut>(rule: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    rule(open_sqlite(dir.path())).await;
}

/// The SQLite store in `dir`.
pub fn open_sqlite(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.join("events.db")).expect("SQLite opens"))
}

/// Runs `rule` on a MongoDB store in a database of its own, when `MONGODB_URI`
/// is set; otherwise says `SKIPPED: MongoDB {suite} (…)` on stderr and passes.
pub async fn on_mongodb<F, Fut>(suite: &str, test: &str, rule: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(uri) = mongodb_uri(suite) else {
        return;
    };
    let database = database_name(test);
    rule(connect_mongodb(&uri, &database).await).await;
    // Only after a pass: a failed test leaves its database to look at.
    drop_database(&uri, &database).await;
}

/// `MONGODB_URI`, or `None` after saying that `suite` is skipped.
pub fn mongodb_uri(suite: &str) -> Option<String> {
    let uri = std::env::var("MONGODB_URI")
        .ok()
        .filter(|uri| !uri.is_empty());
    if uri.is_none() {
        eprintln!("SKIPPED: MongoDB {suite} (MONGODB_URI not set)");
    }
    uri
}

/// The one place the suites name the MongoDB backend.
pub async fn connect_mongodb(uri: &str, database: &str) -> Arc<dyn Store> {
    // The URI is not printed: it may hold credentials.
    let store = agent_events_actors::store::mongo::connect(uri, database)
        .await
        .unwrap_or_else(|e| panic!("MongoDB at MONGODB_URI, database {database}: {e}"));
    Arc::new(store)
}

/// Drops a test database.
pub async fn drop_database(uri: &str, database: &str) {
    let client = ::mongodb::Client::with_uri_str(uri)
        .await
        .expect("MongoDB client");
    if let Err(e) = client.database(database).drop().await {
        eprintln!("could not drop test database {database}: {e}");
    }
}

/// A database name unique to this test and run, within MongoDB's 63 bytes.
pub fn database_name(test: &str) -> String {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let mut name = format!("aet_{nanos}_{test}");
    name.truncate(63);
    name
}

/// Declares, for each rule, one test per backend: `sqlite::rule`, `mongo::rule`;
/// `$suite` names the suite in the MongoDB `SKIPPED` line.
macro_rules! conformance_suite {
    ($suite:literal: $($rule:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $rule() {
                    $crate::backends::on_sqlite(super::$rule).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test]
                async fn $rule() {
                    $crate::backends::on_mongodb($suite, stringify!($rule), super::$rule).await;
                }
            )*
        }
    };
}
