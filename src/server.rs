//! Start-up and shutdown: opens the store, starts the actors, serves HTTP and
//! WebSocket on one port, and stops gracefully on SIGINT/SIGTERM.
//!
//! # Shutdown, as a designed path
//! 1. The Emitter stops accepting: producers get 503 `shutting-down`.
//! 2. The Persister flushes: everything accepted is stored (or the deadline
//!    passes and the failure is logged), and waiting producers get their 202.
//!    In a store-once cluster this node's store leases are given up, so that
//!    another node stores its partitions at once.
//! 3. The Registry tells every Session to close. A Session's mailbox holds
//!    every event published before that message, so each client receives
//!    everything accepted, then a close frame 1001.
//! 4. Once the sessions are gone (or the deadline passes), the HTTP server
//!    stops, and the process exits 0. Webhook attempts still running are
//!    cut off: their deliveries stay in the store's outbox and go out after
//!    the next start, as after a crash.

use crate::config::Config;
use crate::notifications;
use crate::routes;
use crate::security::Guard;
use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use agent_events_actors::cluster_keys::ClusterKeys;
use agent_events_actors::demo::{self, DemoConfig};
use agent_events_actors::emitter::{Emitter, EmitterConfig, Forget, StopAccepting, Storage};
use agent_events_actors::history::History;
use agent_events_actors::limits::{ConnectionLimiter, KeyedBuckets};
use agent_events_actors::metrics::Metrics;
use agent_events_actors::notifier::Notifier;
use agent_events_actors::notify_rule::Rule;
use agent_events_actors::persister::{Backlog, Flush, Persister, PersisterConfig};
use agent_events_actors::redis_link::RedisTarget;
use agent_events_actors::redis_sequencer::RedisSequencer;
use agent_events_actors::redis_subscriber::{
    RedisHealth, RedisSubscriber, ReleaseLeases, SubscriberConfig,
};
use agent_events_actors::registry::{CloseAll, Registry};
use agent_events_actors::session::{SessionConfig, SessionDeps};
use agent_events_actors::socket::ConnectionSocket;
use agent_events_actors::store::mongo;
use agent_events_actors::store::sqlite::{SqliteOptions, SqliteStore};
use agent_events_actors::store::{Retention, Store};
use agent_events_actors::EmitterHandle;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the routes need: the actors, the store and the figures.
#[derive(Clone)]
pub struct Broker {
    /// Settings in force.
    pub config: Arc<Config>,
    /// The way in for events.
    pub emitter: Addr<Emitter>,
    /// Subscriptions and fan-out.
    pub registry: Addr<Registry>,
    /// Writes to the store.
    pub persister: Addr<Persister>,
    /// The store, for queries.
    pub store: Arc<dyn Store>,
    /// Accepted but not yet stored.
    pub backlog: Arc<Backlog>,
    /// Shared figures.
    pub metrics: Metrics,
    /// What each new WebSocket session gets.
    pub session_deps: SessionDeps,
    /// When the broker started.
    pub started_at: Instant,
    /// In cluster mode, this node's Redis-subscriber and its link's state.
    pub cluster: Option<Cluster>,
    /// Tokens and Origins.
    pub guard: Guard,
    /// Open connections, in total and per address.
    pub connections: Arc<ConnectionLimiter>,
    /// Events per second per producer.
    pub producers: Arc<KeyedBuckets>,
    /// Webhooks for events that match a rule; rules and dead letters.
    pub notifier: Addr<Notifier>,
}

/// This node's part of the cluster.
#[derive(Clone)]
pub struct Cluster {
    /// Reads the cluster's stream; also answers the cluster view.
    pub subscriber: Addr<RedisSubscriber>,
    /// Whether Redis is reachable.
    pub health: Arc<RedisHealth>,
    /// This node's name.
    pub node_id: String,
}

impl Cluster {
    /// Starts this node's Redis-subscriber, feeding `emitter`.
    fn join(
        client: RedisTarget,
        config: SubscriberConfig,
        emitter: &Addr<Emitter>,
        store: &Arc<dyn Store>,
        metrics: &Metrics,
    ) -> Cluster {
        let health = Arc::new(RedisHealth::default());
        let node_id = config.node_id.clone();
        let subscriber = RedisSubscriber::new(
            client,
            config,
            emitter.clone().recipient(),
            Some(store.clone()),
            metrics.clone(),
            health.clone(),
        )
        .start();
        log::info!("cluster mode: node {node_id}");
        Cluster {
            subscriber,
            health,
            node_id,
        }
    }
}

impl Broker {
    /// Starts the actors around `store`; joins the cluster when `redis` is given.
    fn start(
        config: Config,
        guard: Guard,
        store: Arc<dyn Store>,
        redis: Option<RedisTarget>,
        local: SocketAddr,
        notify_rules: Vec<Rule>,
    ) -> io::Result<Broker> {
        let metrics = Metrics::new();
        let backlog = Backlog::new(config.persist_backlog_max);
        let persister = Persister::new(
            store.clone(),
            persister_config(&config),
            backlog.clone(),
            metrics.clone(),
        )
        .start();
        let registry = Registry::new(metrics.clone());
        let watched = registry.watched();
        let registry = registry.start();
        let notifier = Notifier::new(
            notifications::notifier_config(&config),
            store.clone(),
            notify_rules,
            metrics.clone(),
        )
        .map_err(io::Error::other)?
        .start();
        let storage = Storage {
            store: store.clone(),
            persister: persister.clone(),
            backlog: backlog.clone(),
        };
        let node_id = node_id(&config, local);
        let keys = ClusterKeys::new(&config.redis_key_prefix, config.cluster_partitions);
        let mut emitter = Emitter::new(
            emitter_config(&config),
            registry.clone(),
            Some(storage),
            metrics.clone(),
        )
        .with_notifier(notifier.clone())
        .with_watched(watched.clone());
        if let Some(client) = &redis {
            let sequencer = RedisSequencer::new(
                client.clone(),
                keys.clone(),
                &node_id,
                config.redis_stream_max_len,
            );
            emitter = emitter.with_sequencer(sequencer);
        }
        let emitter = emitter.start();
        let cluster = redis.map(|client| {
            let view = SubscriberConfig {
                node_id,
                advertised: local.to_string(),
                keys,
                store_once: config
                    .cluster_store_once
                    .then(|| Duration::from_millis(config.cluster_store_claim_idle_ms)),
                // Store-once: what nobody here watches is not parsed.
                watched: config.cluster_store_once.then_some(watched),
            };
            Cluster::join(client, view, &emitter, &store, &metrics)
        });
        let session_deps = SessionDeps {
            config: session_config(&config),
            registry: registry.clone(),
            history: History::new(
                emitter.clone().recipient(),
                Some(store.clone()),
                config.max_replay_events,
            ),
            metrics: metrics.clone(),
            auth: guard.verifier(),
        };
        let connections = ConnectionLimiter::counted(
            config.max_connections,
            config.max_connections_per_ip,
            metrics.clone(),
        );
        let producers = Arc::new(producer_buckets(&config));
        Ok(Broker {
            config: Arc::new(config),
            emitter,
            registry,
            persister,
            store,
            backlog,
            metrics,
            session_deps,
            started_at: Instant::now(),
            connections,
            producers,
            cluster,
            guard,
            notifier,
        })
    }

    /// Steps 1–3 of the module documentation, then waits for the sessions.
    async fn shutdown(&self) {
        let deadline = Duration::from_millis(self.config.shutdown_timeout_ms);
        log::info!("shutting down: no new events; delivering and storing what was accepted");
        let _ = self.emitter.send(StopAccepting).await;
        match self.persister.send(Flush { deadline }).await {
            Ok(Ok(())) => log::info!("every accepted event is stored"),
            Ok(Err(err)) => log::error!("shutdown: events not stored: {err}"),
            Err(_) => log::error!("shutdown: the persister is gone"),
        }
        if let Some(cluster) = &self.cluster {
            // Store-once: another node stores this node's partitions at once.
            let _ = cluster.subscriber.send(ReleaseLeases).await;
        }
        // Stored events reach the Registry through the Emitter (Release):
        // one more round trip there puts them all ahead of CloseAll.
        let _ = self.emitter.send(StopAccepting).await;
        let sessions = self.registry.send(CloseAll).await.unwrap_or(0);
        log::info!("closing {sessions} client connections");
        let started = Instant::now();
        while self.metrics.connections.get() > 0 && started.elapsed() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs retention now and then, if a policy is set.
    fn schedule_retention(&self) {
        let policy = Retention {
            max_age: Some(Duration::from_secs(self.config.retention_max_age_secs))
                .filter(|d| !d.is_zero()),
            max_executions: Some(self.config.retention_max_executions).filter(|n| *n > 0),
        };
        if policy.max_age.is_none() && policy.max_executions.is_none() {
            return;
        }
        let store = self.store.clone();
        let emitter = self.emitter.clone();
        let every = Duration::from_secs(self.config.retention_interval_secs.max(1));
        actix_web::rt::spawn(async move {
            loop {
                match store.apply_retention(policy).await {
                    Ok(removed) if removed.is_empty() => {}
                    Ok(removed) => {
                        log::info!("retention removed {} executions", removed.len());
                        emitter.do_send(Forget(removed));
                    }
                    Err(err) => log::warn!("retention failed: {err}"),
                }
                actix_web::rt::time::sleep(every).await;
            }
        });
    }
}

/// The configured node name, or `ADDR:PORT-PID`: unique on one machine and readable.
fn node_id(config: &Config, local: SocketAddr) -> String {
    if config.node_id.is_empty() {
        format!("{local}-{}", std::process::id())
    } else {
        config.node_id.clone()
    }
}

fn producer_buckets(config: &Config) -> KeyedBuckets {
    let rate = config.max_events_per_sec_per_producer as f64;
    KeyedBuckets::new(rate, 2.0 * rate)
}

fn emitter_config(config: &Config) -> EmitterConfig {
    EmitterConfig {
        buffer_size: config.buffer_size,
        max_buffered_executions: config.max_buffered_executions,
        max_buffered_bytes: config.max_buffered_bytes,
        execution_idle: Duration::from_secs(config.execution_idle_secs),
        max_event_bytes: config.max_event_bytes,
        max_events_per_sec_per_execution: config.max_events_per_sec_per_execution,
        idempotency_window: Duration::from_secs(config.idempotency_window_secs),
    }
}

fn persister_config(config: &Config) -> PersisterConfig {
    PersisterConfig {
        batch_max: config.persist_batch_max,
        batch_delay: Duration::from_millis(config.persist_batch_ms),
    }
}

fn session_config(config: &Config) -> SessionConfig {
    SessionConfig {
        heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
        client_timeout: Duration::from_millis(config.client_timeout_ms),
        max_subscriptions: config.max_subscriptions,
        max_message_bytes: config.max_message_bytes,
        max_frame_bytes: config.max_frame_bytes,
        queue_bytes: config.session_queue_bytes,
        close_timeout: Duration::from_millis(config.close_timeout_ms),
        auth_timeout: Duration::from_millis(config.auth_timeout_ms),
        max_messages_per_sec: config.max_messages_per_sec as f64,
    }
}

/// SQLite under `data_dir`, or MongoDB when `mongodb_uri` is set.
async fn open_store(config: &Config) -> io::Result<Arc<dyn Store>> {
    if let Some(uri) = config.mongodb_uri() {
        let store = mongo::connect(uri, &config.mongodb_database)
            .await
            .map_err(|e| io::Error::other(format!("MongoDB: {e}")))?;
        log::info!("store: MongoDB database `{}`", config.mongodb_database);
        return Ok(Arc::new(store));
    }
    let path = config.data_dir.join("events.db");
    let options = SqliteOptions {
        busy_timeout: Duration::from_millis(config.sqlite_busy_timeout_ms),
        checkpoint_pages: config.sqlite_checkpoint_pages,
    };
    let store =
        SqliteStore::open_with(&path, options).map_err(|e| io::Error::other(e.to_string()))?;
    log::info!("store: SQLite at {}", path.display());
    Ok(Arc::new(store))
}

/// The Redis this node joins the cluster on, if any.
fn redis_target(config: &Config) -> io::Result<Option<RedisTarget>> {
    let nodes = config.redis_cluster_nodes();
    if !nodes.is_empty() {
        return RedisTarget::cluster(nodes)
            .map(Some)
            .map_err(|e| io::Error::other(format!("redis_cluster_nodes: {e}")));
    }
    config
        .redis_url()
        .map(RedisTarget::single)
        .transpose()
        .map_err(|e| io::Error::other(format!("REDIS_URL: {e}")))
}

/// Runs the broker, guarded by `guard` (built from `config` by the caller,
/// which refuses settings that cannot work before anything starts), until a
/// signal has stopped it gracefully.
pub async fn run(config: Config, guard: Guard, demo: bool) -> io::Result<()> {
    let redis = redis_target(&config)?;
    let notify_rules = notifications::load_rules_file(&config).map_err(io::Error::other)?;
    let store = open_store(&config).await?;
    // Bound before the actors start, so the node can announce its real address.
    let listener = TcpListener::bind((config.bind_addr.as_str(), config.ws_port))?;
    let local = listener.local_addr()?;
    let broker = Broker::start(config, guard, store, redis, local, notify_rules)?;
    broker.schedule_retention();
    let state = web::Data::new(broker.clone());
    let max_body = broker.config.max_body_bytes;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(state.guard.cors())
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .configure(routes::configure)
    })
    // Signals are ours: actix's own handling would stop the server before
    // the sessions have delivered what was accepted.
    .disable_signals()
    // Named rather than left to actix's default, so that the bound on a
    // slowloris (headers trickled a byte at a time) is a documented setting.
    .client_request_timeout(Duration::from_millis(
        broker.config.request_header_timeout_ms,
    ))
    .shutdown_timeout(broker.config.shutdown_timeout_ms.div_ceil(1000))
    // Each connection's socket, so that a client that never reads the close
    // of its stream can be reset after `close_timeout` (actors/src/socket.rs).
    .on_connect(|io, extensions| {
        if let Some(tcp) = io.downcast_ref::<actix_web::rt::net::TcpStream>() {
            extensions.insert(ConnectionSocket::of(tcp));
        }
    })
    .listen(listener)?;
    for addr in server.addrs() {
        log::info!("agent-events listening on http://{addr}");
    }
    let server = server.run();
    let handle = server.handle();
    if demo {
        let pace = Duration::from_millis(broker.config.demo_pace_ms);
        demo::start(
            EmitterHandle::new(broker.emitter.clone()),
            DemoConfig {
                pace,
                ..DemoConfig::default()
            },
        );
        log::info!(
            "demo running: subscribe with {{\"type\":\"subscribe\",\"conversationId\":\"demo\"}}"
        );
    }
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        broker.shutdown().await;
        handle.stop(true).await;
    });
    server.await
}

async fn wait_for_signal() {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => log::info!("SIGTERM received"),
        _ = interrupt.recv() => log::info!("SIGINT received"),
    }
}
