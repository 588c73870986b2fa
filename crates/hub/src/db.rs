//! The database: the connection pools (ingest's, planned once per connection, and the reads',
//! planned per execution: [`Planning`]), the schema migrations (numbered
//! SQL files in `crates/hub/migrations/`, embedded in the binary, applied at start in one
//! transaction under an advisory lock so that hubs starting together apply each once, recorded in
//! `schema_migrations`), and the classification of PostgreSQL errors into "retry the
//! transaction" (serialization failure, deadlock) and "the database is unavailable".

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "schema", include_str!("../migrations/0001_schema.sql")),
    (2, "admin", include_str!("../migrations/0002_admin.sql")),
    (3, "figures", include_str!("../migrations/0003_figures.sql")),
    (
        4,
        "contacts",
        include_str!("../migrations/0004_contacts.sql"),
    ),
    (
        5,
        "positions",
        include_str!("../migrations/0005_positions.sql"),
    ),
    (
        6,
        "figures_positions",
        include_str!("../migrations/0006_figures_positions.sql"),
    ),
];

/// The advisory lock key held while migrating ("loyalty-hub" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x006c_6f79_616c_7479;

/// A database failure, as a request or start-up sees it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had (server down, pool exhausted past the timeout).
    #[error("the database is unavailable: {0} (check [database] and that PostgreSQL is running)")]
    Unavailable(String),
    /// A statement failed.
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
}

impl DbError {
    /// True for failures worth running the whole transaction again (serialization failure,
    /// deadlock detected).
    pub fn is_retryable(&self) -> bool {
        match self {
            DbError::Query(e) => e.code().is_some_and(|code| {
                *code == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            }),
            DbError::Unavailable(_) => false,
        }
    }
}

/// How a pool's sessions plan their statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// Every statement planned for its parameters (`plan_cache_mode = force_custom_plan`): the
    /// reads (feed, dashboard, export, admin), whose best plan depends on the values. A generic
    /// plan fixed while the tables were still small would scan them whole for ever after.
    PerExecution,
    /// Planned once per connection (`force_generic_plan`) with sequential scans priced out
    /// (`enable_seqscan = off`): ingest, whose statements are all inserts from `unnest` arrays and
    /// lookups by a primary or unique key, so one plan fits every batch, and planning each of a
    /// batch's statements again cost about a tenth of the database's CPU at ingest.
    Once,
}

/// The pool of `size` connections for `config`, planning as `planning` says.
pub fn pool(
    mut config: tokio_postgres::Config,
    size: usize,
    planning: Planning,
) -> Result<Pool, DbError> {
    let session = match planning {
        Planning::PerExecution => "-c plan_cache_mode=force_custom_plan",
        Planning::Once => "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off",
    };
    let options = match config.get_options() {
        Some(options) if !options.is_empty() => format!("{options} {session}"),
        _ => session.to_string(),
    };
    config.options(&options);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// A connection from `pool`.
pub async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, DbError> {
    pool.get()
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// How `database.pool_size` connections are shared: (ingest, reads). A quarter (at least one)
/// is kept for reads (the feed, by-card), so reads do not queue behind a backlog of batches;
/// a pool size of 1 still gets one of each.
pub fn split_pool(pool_size: usize) -> (usize, usize) {
    let reads = (pool_size / 4).max(1);
    (pool_size.saturating_sub(reads).max(1), reads)
}

/// A connection from `pool`, waiting up to `wait` for one to be free (the pool's waiters are
/// served in arrival order: a fair queue).
pub async fn client_waiting(
    pool: &Pool,
    wait: std::time::Duration,
) -> Result<deadpool_postgres::Object, DbError> {
    let mut timeouts = pool.timeouts();
    timeouts.wait = Some(wait);
    pool.timeout_get(&timeouts)
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Applies the migrations this database lacks; returns the schema version afterwards.
pub async fn migrate(pool: &Pool) -> Result<i32, DbError> {
    let mut client = client(pool).await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer     NOT NULL PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tracing::info!(version, name, "applying migration");
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
    }
    let version: Option<i32> = tx
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await?
        .get(0);
    tx.commit().await?;
    Ok(version.unwrap_or(0))
}

/// The schema version of the database (`/health`).
pub async fn schema_version(pool: &Pool) -> Result<i32, DbError> {
    let client = client(pool).await?;
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await?
        .get(0);
    Ok(version.unwrap_or(0))
}

/// `execute` with a statement prepared once per connection (deadpool's statement cache): one
/// round trip instead of two.
pub async fn exec(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, params).await
}

/// `query` with a cached statement.
pub async fn query(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query(&statement, params).await
}

/// `query_one` with a cached statement.
pub async fn query_one(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query_one(&statement, params).await
}

/// `query_opt` with a cached statement.
pub async fn query_opt(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query_opt(&statement, params).await
}
