//! `loyalty-hub`: the central side a chain runs at head office (SPEC 2.8). It serves the sync
//! API of SPEC 2.5 to every store over mutual TLS (the store id is the client certificate's
//! common name), keeps the chain-wide ledger in PostgreSQL (one customer per card across
//! stores, merges of customers enrolled offline in two stores, double-redemption detection) and
//! feeds each store the changes that concern it, long-polled. Hub processes are stateless: any
//! number share one database.
//!
//! Modules: [`config`] (the TOML file, every error by key path), [`db`] (pool, migrations),
//! [`tls`] (mutual TLS, the store id), [`server`] (accept loop), [`api`] (the router, one module
//! per API area), [`ingest`] (a batch exactly once, and what each event does), [`feed`] (the
//! change log, pages, long-poll wake-ups), [`metrics`], [`admin`] (the admin API: profiles,
//! consent, rules, keys, offers, adjustments, erasure everywhere), [`export`] (every store's
//! events in commit order), [`tiers`] (tiers qualified centrally), [`figures`] (head office's
//! figures per store and day, refreshed incrementally), [`dashboard`] (head office's dashboard in
//! a browser: its own loopback listener, login with the admin token).

#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod export;
pub mod feed;
pub mod figures;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod tiers;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every request shares.
pub struct Hub {
    /// The configuration as loaded.
    pub config: config::Config,
    /// The database pool for everything but ingest (statements planned per execution).
    pub pool: deadpool_postgres::Pool,
    /// Ingest's connections ([`db::split_pool`], statements planned once): batches wait for one
    /// in arrival order, and the other pool stays free for the feed and by-card lookups.
    pub ingest_pool: deadpool_postgres::Pool,
    /// Metrics.
    pub metrics: metrics::Metrics,
    /// Long-poll wake-ups.
    pub notifier: Arc<feed::Notifier>,
    /// The admin API's bearer token (`admin.token_file`); `None`: the admin API is off.
    pub admin_token: Option<String>,
    /// Batches admitted to ingest (waiting for a database connection or being written): one
    /// per client connection; past that a batch is answered 503 at once.
    pub ingest_queue: tokio::sync::Semaphore,
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration (a file it names) is unusable.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached or migrated.
    #[error("{0}")]
    Db(#[from] db::DbError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (check server.listen and dashboard.listen; is another process using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A running hub.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The shared state.
    pub hub: Arc<Hub>,
    /// Cancel to stop.
    pub shutdown: CancellationToken,
    /// The server task.
    pub task: tokio::task::JoinHandle<()>,
    /// The dashboard's bound address (`[dashboard] listen`), if configured.
    pub dashboard: Option<SocketAddr>,
}

/// Starts a hub from `config`: builds TLS, connects and migrates the database, binds, serves.
pub async fn start(config: config::Config) -> Result<Running, StartError> {
    let tls = tls::server_config(
        &config.server.cert_file,
        &config.server.key_file,
        &config.server.client_ca_file,
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let pg = config
        .pg_config()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let admin_token = admin::read_token(&config).map_err(StartError::Config)?;
    let (ingest_size, read_size) = db::split_pool(config.database.pool_size);
    let pool = db::pool(pg.clone(), read_size, db::Planning::PerExecution)?;
    let ingest_pool = db::pool(pg.clone(), ingest_size, db::Planning::Once)?;
    let version = db::migrate(&pool).await?;
    tracing::info!(schema_version = version, "database ready");
    let addr = config.listen();
    let (addr, listener) = server::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let dashboard = match &config.dashboard.listen {
        Some(listen) => {
            let addr: SocketAddr = listen.parse().map_err(|_| {
                StartError::Config(format!(
                    "dashboard.listen: {listen:?} is not an address and port"
                ))
            })?;
            let bound = server::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            Some(bound)
        }
        None => None,
    };
    let shutdown = CancellationToken::new();
    let notifier = Arc::new(feed::Notifier::default());
    tokio::spawn(feed::listen(pg, notifier.clone(), shutdown.clone()));
    tokio::spawn(figures::run(pool.clone(), shutdown.clone()));
    let ingest_queue = tokio::sync::Semaphore::new(config.server.max_connections);
    let hub = Arc::new(Hub {
        ingest_queue,
        config,
        pool,
        ingest_pool,
        metrics: metrics::Metrics::new(),
        notifier,
        admin_token,
    });
    tokio::spawn(tiers::job(hub.clone(), shutdown.clone()));
    let task = tokio::spawn(server::serve(
        hub.clone(),
        listener,
        tokio_rustls::TlsAcceptor::from(tls),
        shutdown.clone(),
    ));
    tracing::info!(%addr, "loyalty-hub listening");
    let dashboard = dashboard.map(|(bound, listener)| {
        tokio::spawn(dashboard::serve(hub.clone(), listener, shutdown.clone()));
        tracing::info!(addr = %bound, "dashboard listening");
        bound
    });
    Ok(Running {
        addr,
        hub,
        shutdown,
        task,
        dashboard,
    })
}
