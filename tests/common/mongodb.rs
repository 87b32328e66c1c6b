//! A MongoDB database of one test, for the suites that run the broker on
//! MongoDB when `MONGODB_URI` is set (and say SKIPPED otherwise).

use std::sync::atomic::{AtomicU64, Ordering};

/// A MongoDB database of one test on the server at `MONGODB_URI`, for
/// brokers started with [`BrokerBuilder::mongodb`]; [`MongoDb::finish`]
/// drops it.
#[derive(Clone)]
pub struct MongoDb {
    uri: String,
    /// The database's name, unique to the test and the run.
    pub name: String,
}

impl MongoDb {
    /// A fresh database named after `test`, or `None` after printing
    /// `SKIPPED: MongoDB {suite} (MONGODB_URI not set)`.
    pub fn for_test(suite: &str, test: &str) -> Option<MongoDb> {
        if std::env::var("MONGODB_URI").map_or(true, |uri| uri.is_empty()) {
            eprintln!("SKIPPED: MongoDB {suite} (MONGODB_URI not set)");
            return None;
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Unique across the test binaries that share one server in a run.
        let name = format!(
            "aeb_{}_{}_{nanos}_{test}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        MongoDb::named(&name)
    }

    /// The database `name` (cut to MongoDB's 63 bytes) at `MONGODB_URI`, if set.
    pub(super) fn named(name: &str) -> Option<MongoDb> {
        let uri = std::env::var("MONGODB_URI")
            .ok()
            .filter(|uri| !uri.is_empty())?;
        let mut name = name.to_owned();
        name.truncate(63);
        Some(MongoDb { uri, name })
    }

    /// The variables that put a broker on this database.
    pub fn env(&self) -> [(String, String); 2] {
        [
            ("MONGODB_URI".to_owned(), self.uri.clone()),
            (
                "AGENT_EVENTS_MONGODB_DATABASE".to_owned(),
                self.name.clone(),
            ),
        ]
    }

    /// A client of the database itself, to check what the brokers stored.
    pub async fn database(&self) -> mongodb::Database {
        // The URI is never printed: it may hold credentials.
        let client = mongodb::Client::with_uri_str(&self.uri)
            .await
            .expect("a MongoDB client for MONGODB_URI");
        client.database(&self.name)
    }

    /// Drops the database. Called at the end of a test that passed: a
    /// failed one leaves its database to look at.
    pub async fn finish(self) {
        if let Err(e) = self.database().await.drop().await {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
