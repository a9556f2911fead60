//! Reaching under the binary, for the few checks no command shows (a slot
//! ledger, the rows a prune leaves) and the few fakes no command makes (runs
//! made 40 days old): one SQL text for both stores. The text uses `$1`…
//! placeholders, which both drivers take; what PostgreSQL and SQLite spell
//! differently (a UUID literal, the time now, a time moved by some days)
//! comes from the functions here, for the mode the tests run in.

use super::{Env, embedded_mode};
use sqlx::postgres::PgRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, FromRow};
use std::time::Duration;
use uuid::Uuid;

/// A UUID as a literal of the store: text in PostgreSQL, a 16-byte BLOB in
/// SQLite.
pub fn uuid(id: Uuid) -> String {
    if embedded_mode() {
        format!("X'{}'", id.simple())
    } else {
        format!("'{id}'")
    }
}

/// The time now, as the store keeps times (RFC 3339 text in SQLite).
pub fn now() -> String {
    if embedded_mode() {
        "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')".into()
    } else {
        "now()".into()
    }
}

/// The time `expr` moved by `days` (negative: earlier); NULL stays NULL.
pub fn shifted(expr: &str, days: i64) -> String {
    if embedded_mode() {
        format!("strftime('%Y-%m-%dT%H:%M:%f+00:00', {expr}, '{days:+} days')")
    } else {
        format!("({expr} + interval '{days} days')")
    }
}

enum Conn {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

async fn connect(env: &Env) -> Conn {
    if embedded_mode() {
        // Never creates the file: a test reads the store its binary made.
        let options = SqliteConnectOptions::new()
            .filename(env.store_path())
            .busy_timeout(Duration::from_secs(30));
        Conn::Sqlite(sqlx::SqliteConnection::connect_with(&options).await.unwrap())
    } else {
        Conn::Pg(sqlx::PgConnection::connect(&env.db_url()).await.unwrap())
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl Env {
    /// Runs `sql` on the test's store: a statement gives the rows it
    /// affected, a SELECT its one integer.
    pub fn sql(&self, sql: &str) -> i64 {
        let sql = sql.to_string();
        let select = sql.trim_start().to_uppercase().starts_with("SELECT");
        block_on(async {
            let text = sqlx::AssertSqlSafe(sql);
            match (connect(self).await, select) {
                (Conn::Pg(mut c), true) => sqlx::query_scalar(text).fetch_one(&mut c).await.unwrap(),
                (Conn::Pg(mut c), false) => sqlx::query(text).execute(&mut c).await.unwrap().rows_affected() as i64,
                (Conn::Sqlite(mut c), true) => sqlx::query_scalar(text).fetch_one(&mut c).await.unwrap(),
                (Conn::Sqlite(mut c), false) => sqlx::query(text).execute(&mut c).await.unwrap().rows_affected() as i64,
            }
        })
    }

    /// The rows of the query `sql` on the test's store.
    pub fn rows<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let sql = sql.to_string();
        block_on(async {
            let text = sqlx::AssertSqlSafe(sql);
            match connect(self).await {
                Conn::Pg(mut c) => sqlx::query_as(text).fetch_all(&mut c).await.unwrap(),
                Conn::Sqlite(mut c) => sqlx::query_as(text).fetch_all(&mut c).await.unwrap(),
            }
        })
    }
}
