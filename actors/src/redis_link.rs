//! How this node reaches Redis: one server (`redis_url`) or a Redis Cluster
//! (`redis_cluster_nodes`), behind one connection type, so that the
//! sequencer and the subscriber send the same commands to either.
//!
//! With a Redis Cluster the crate's cluster client routes each command to
//! the master serving its key's slot and follows `MOVED` (a slot moved for
//! good: it refreshes its slot map) and `ASK` (a slot being migrated) by
//! itself. A pipeline must stay on one slot there; the sequencer sends one
//! per partition.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult};
use std::time::Duration;

/// How many times the cluster client retries a command after a redirection
/// or a lost node connection. Few: a `MOVED` costs one retry, and a Redis
/// that stays away must fail the publish soon enough for the fallback.
const CLUSTER_RETRIES: u32 = 3;

/// Where this node's Redis is; cheap to clone.
#[derive(Clone)]
pub enum RedisTarget {
    /// One Redis server (or a proxy in front of several).
    Single(Client),
    /// A Redis Cluster, reached through any of these seed nodes.
    Cluster(Vec<ConnectionInfo>),
}

impl RedisTarget {
    /// One Redis server at `url`.
    pub fn single(url: &str) -> RedisResult<RedisTarget> {
        Client::open(url).map(RedisTarget::Single)
    }

    /// A Redis Cluster reached through the seed nodes at `urls` (one is
    /// enough; the client learns the others from it).
    pub fn cluster<'a>(urls: impl IntoIterator<Item = &'a str>) -> RedisResult<RedisTarget> {
        let nodes = urls
            .into_iter()
            .map(IntoConnectionInfo::into_connection_info)
            .collect::<RedisResult<Vec<_>>>()?;
        if nodes.is_empty() {
            return Err((
                redis::ErrorKind::InvalidClientConfig,
                "no cluster node given",
            )
                .into());
        }
        Ok(RedisTarget::Cluster(nodes))
    }

    /// Whether keys of different slots may live on different servers, so
    /// that one command (an `XREAD` over several streams, a pipeline) must
    /// not name keys of several slots.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }

    /// A new connection whose commands may each take `response_timeout`.
    ///
    /// Each call opens connections of its own: a blocking read holds its
    /// connection, so readers must not share one with each other or with
    /// the publishers.
    pub async fn connect(
        &self,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<RedisConnection> {
        match self {
            RedisTarget::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(response_timeout)
                    .set_connection_timeout(connect_timeout);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(RedisConnection::Single)
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .retries(CLUSTER_RETRIES)
                    .build()?;
                // The cluster client connects lazily, node by node; bound
                // the first contact as a single server's connect is bounded.
                match tokio::time::timeout(connect_timeout, client.get_async_connection()).await {
                    Ok(connection) => connection.map(RedisConnection::Cluster),
                    Err(_) => Err((
                        redis::ErrorKind::IoError,
                        "connecting to the Redis Cluster timed out",
                    )
                        .into()),
                }
            }
        }
    }
}

/// A connection to one Redis server or to a Redis Cluster; cheap to clone
/// (clones share the underlying connections).
#[derive(Clone)]
pub enum RedisConnection {
    /// To one server.
    Single(MultiplexedConnection),
    /// To every master of a cluster, routing by slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            RedisConnection::Single(connection) => connection.req_packed_command(cmd),
            RedisConnection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConnection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            RedisConnection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(connection) => connection.get_db(),
            RedisConnection::Cluster(connection) => connection.get_db(),
        }
    }
}
