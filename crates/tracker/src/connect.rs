//! Opening the pool: the database is created when it does not exist yet (so
//! a fresh machine needs no manual step), and the embedded migrations are
//! applied under sqlx's advisory lock, so several workers starting at once
//! do not race.

use crate::{Result, TrackerError};
use scheduler_core::redact_url;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use std::str::FromStr;
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub url: String,
    pub max_connections: u32,
    /// How long to wait for a connection before reporting the database as
    /// unreachable.
    pub connect_timeout: Duration,
}

impl TrackerConfig {
    pub fn new(url: impl Into<String>) -> Self {
        TrackerConfig {
            url: url.into(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Handle on the record of truth; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub(crate) pool: PgPool,
    /// Same server, `synchronous_commit = off`: for bookkeeping whose loss in
    /// a database crash is harmless (a pid, a published-at marker), so it
    /// does not wait for a disk flush on the hot path.
    pub(crate) relaxed: PgPool,
    /// The hot path's own connections (generic plans, no ping on return).
    pub(crate) hot: std::sync::Arc<crate::hot::Hot>,
}

impl Tracker {
    /// Connects, creating the database first if the server says it does not
    /// exist. Does not migrate; call [`Tracker::migrate`].
    pub async fn connect(config: &TrackerConfig) -> Result<Tracker> {
        let connect_err = |source| TrackerError::Connect {
            url: redact_url(&config.url),
            source,
        };
        let options = PgConnectOptions::from_str(&config.url).map_err(connect_err)?;
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(config.max_connections)
                .min_connections(1)
                .acquire_timeout(config.connect_timeout)
                // The default pings every connection before each use: a
                // second round trip per statement on the hot path. A dead
                // connection fails its statement instead, and callers retry.
                .test_before_acquire(false)
        };
        match pool_options().connect_with(options.clone()).await {
            Ok(pool) => Ok(Tracker::with_pools(pool, &options, config)),
            Err(e) if is_missing_database(&e) => {
                tracing::info!(url = %redact_url(&config.url), "database does not exist; creating it");
                if let Err(create) = Postgres::create_database(&config.url).await {
                    // Another process may have created it in the meantime.
                    if !Postgres::database_exists(&config.url).await.unwrap_or(false) {
                        return Err(connect_err(create));
                    }
                }
                let pool = pool_options()
                    .connect_with(options.clone())
                    .await
                    .map_err(connect_err)?;
                Ok(Tracker::with_pools(pool, &options, config))
            }
            Err(e) => Err(connect_err(e)),
        }
    }

    fn with_pools(pool: PgPool, options: &PgConnectOptions, config: &TrackerConfig) -> Tracker {
        let relaxed_options = options.clone().options([("synchronous_commit", "off")]);
        let relaxed = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(relaxed_options);
        let hot = crate::hot::Hot::new(options, &config.url, config.max_connections, config.connect_timeout);
        Tracker {
            pool,
            relaxed,
            hot: std::sync::Arc::new(hot),
        }
    }

    /// Applies the embedded migrations (idempotent, safe to run concurrently).
    /// A database that holds a migration this binary does not know was
    /// migrated by a newer one: refused, saying so, with nothing changed.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => TrackerError::NewerSchema {
                url: self.hot.url().to_string(),
                version,
            },
            other => TrackerError::Migrate(other),
        })
    }

    /// Connect and migrate: what every command that touches the database does.
    pub async fn open(config: &TrackerConfig) -> Result<Tracker> {
        let tracker = Tracker::connect(config).await?;
        tracker.migrate().await?;
        Ok(tracker)
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.relaxed.close().await;
        self.hot.close().await;
    }
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "3D000")
}
