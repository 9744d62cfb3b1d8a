//! Opening the database: connection settings, the embedded migrations, and the [`Store`]
//! handle the rest of the crate hangs its methods on.
//!
//! A file database runs in WAL mode with `synchronous=NORMAL`, foreign keys on and a 5 s busy
//! timeout, so the CLI, the predictor and the prefetcher can share it: readers never block the
//! writer, and writers queue instead of failing. Writes take the lock up front
//! (`BEGIN IMMEDIATE`) so a read-then-write transaction cannot deadlock against another one.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::error::{Context, Error, Result};

/// The schema migrations in `migrations/`, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!();

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the kfcache database. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

impl Store {
    /// Open (creating it and its parent directories if needed) the database at `path` and
    /// bring its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDirectory {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A private in-memory database with the full schema, for tests. It lives as long as the
    /// store (one connection that is never recycled).
    pub async fn open_in_memory() -> Result<Store> {
        let open_error = |source| Error::Open {
            path: PathBuf::from(":memory:"),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(open_error)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Apply any migrations the database has not seen. [`Store::open`] does this already.
    ///
    /// Several processes may open a new database at once (a cron, a drain and an analysis
    /// on one volume). The migrations therefore run in one transaction that holds the write
    /// lock from its start: one process applies them, the others wait for the lock (the busy
    /// timeout) and then find them applied. Without it two processes both saw migration 1
    /// missing and the second failed with "table pipeline already exists".
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.write().await?;
        MIGRATOR
            .run(&mut *tx)
            .await
            .map_err(|source| Error::Migrate { source })?;
        tx.commit()
            .await
            .context("committing the schema migrations")
    }

    /// The connection pool, for crates whose tables (run history, cache state) do not have a
    /// typed API here yet.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Close every connection, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction holding the database's write lock from its first statement.
    pub(crate) async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("starting a write transaction")
    }
}
