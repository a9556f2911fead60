//! The hot path's own connections: the statement that records a step and
//! claims the next ([`crate::apply`]) runs on one of these, not on the pool.
//!
//! Two costs of the pool that this takes off every step, both measured
//! (PostgreSQL's statement log, 5-step runs, one at a time):
//!
//! - **Planning.** PostgreSQL plans a prepared statement afresh at each
//!   bind for its first five executions on a connection, and keeps doing so
//!   while a custom plan looks cheaper. The apply statement's CTEs took 0.6 to
//!   0.9 ms to bind (plan) against 0.3 to 0.5 ms to execute, and the pool
//!   hands out its connections in turn, so each one rarely got past its
//!   first executions. These connections set `plan_cache_mode =
//!   force_generic_plan`: the statement is planned once per connection (every
//!   part of it is a lookup by key, so the generic plan is the custom one),
//!   and a bind costs 0.06 ms. Only here: the pages' filtered queries keep
//!   their custom plans. Planned once, perhaps on nearly empty tables, the
//!   plan must not depend on their size: every row is found by its primary
//!   key (`apply.rs`), and `enable_seqscan = off` keeps a plan made on an
//!   empty table from scanning it whole once it has grown.
//! - **The ping.** sqlx pings a connection (a `Sync` round trip) each time
//!   it goes back to its pool. A connection here goes back to the idle list
//!   as it is when its statement succeeded, and is closed when it failed.
//!
//! At most `max` are open at once; a caller waits for one beyond that. A
//! failed statement also drops the idle ones: after a database restart they
//! are all dead, and each would otherwise fail one more write.

use crate::{Result, TrackerError};
use scheduler_core::redact_url;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

pub(crate) struct Hot {
    options: PgConnectOptions,
    /// For the error message only (the password redacted).
    url: String,
    idle: Mutex<Vec<PgConnection>>,
    permits: Semaphore,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Hot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hot")
            .field("url", &self.url)
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// A connection lent out; closed when dropped, unless [`Lent::give_back`].
pub(crate) struct Lent<'a> {
    hot: &'a Hot,
    conn: Option<PgConnection>,
    _permit: SemaphorePermit<'a>,
}

impl Hot {
    pub(crate) fn new(options: &PgConnectOptions, url: &str, max: u32, connect_timeout: Duration) -> Hot {
        Hot {
            options: options
                .clone()
                .options([("plan_cache_mode", "force_generic_plan"), ("enable_seqscan", "off")]),
            url: redact_url(url),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max.max(1) as usize),
            connect_timeout,
        }
    }

    /// An idle connection, or a new one.
    pub(crate) async fn take(&self) -> Result<Lent<'_>> {
        let permit = self.permits.acquire().await.expect("the semaphore is never closed");
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        Ok(Lent {
            hot: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<PgConnection> {
        let connect_err = |source| TrackerError::Connect {
            url: self.url.clone(),
            source,
        };
        match tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&self.options)).await {
            Ok(connected) => connected.map_err(connect_err),
            Err(_) => Err(connect_err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {:?}", self.connect_timeout),
            )))),
        }
    }

    /// The database's URL, its password redacted.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Drops the idle connections (after a failure: they may all be dead).
    pub(crate) fn forget_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Closes the idle connections cleanly.
    pub(crate) async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

impl Lent<'_> {
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("present until given back")
    }

    /// Returns the connection for the next statement: only after one that
    /// succeeded (a dropped or failed statement may leave it mid-protocol).
    pub(crate) fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            self.hot.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }
}
