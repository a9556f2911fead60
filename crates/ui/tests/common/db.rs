//! A connection of a test's own to the app's store, for the histories and
//! states no command makes (a run of a thousand steps, a step's peak
//! memory): one SQL text for both stores. The text uses `$1`… placeholders,
//! which both drivers take, and binds every time (no `now()`), so PostgreSQL
//! and SQLite read it alike.

use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

pub enum Db {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Db {
    /// An empty list as a literal of the store (a PostgreSQL array, JSON
    /// text in SQLite).
    pub fn empty_list(&self) -> &'static str {
        match self {
            Db::Pg(_) => "'{}'",
            Db::Sqlite(_) => "'[]'",
        }
    }

    pub async fn connect(url: &str) -> Db {
        match url.strip_prefix("sqlite://") {
            Some(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(std::time::Duration::from_secs(30));
                Db::Sqlite(sqlx::SqliteConnection::connect_with(&options).await.unwrap())
            }
            None => Db::Pg(sqlx::PgConnection::connect(url).await.unwrap()),
        }
    }
}

/// A value bound to a placeholder; each backend encodes it its own way.
#[derive(Clone, Debug)]
pub enum Bind {
    Uuid(Uuid),
    Time(Option<DateTime<Utc>>),
    Text(String),
    OptText(Option<String>),
    Int(Option<i32>),
    BigInt(Option<i64>),
}

impl From<Uuid> for Bind {
    fn from(v: Uuid) -> Bind {
        Bind::Uuid(v)
    }
}
impl From<DateTime<Utc>> for Bind {
    fn from(v: DateTime<Utc>) -> Bind {
        Bind::Time(Some(v))
    }
}
impl From<Option<DateTime<Utc>>> for Bind {
    fn from(v: Option<DateTime<Utc>>) -> Bind {
        Bind::Time(v)
    }
}
impl From<&str> for Bind {
    fn from(v: &str) -> Bind {
        Bind::Text(v.to_string())
    }
}
impl From<Option<&str>> for Bind {
    fn from(v: Option<&str>) -> Bind {
        Bind::OptText(v.map(str::to_string))
    }
}
impl From<i32> for Bind {
    fn from(v: i32) -> Bind {
        Bind::Int(Some(v))
    }
}
impl From<Option<i32>> for Bind {
    fn from(v: Option<i32>) -> Bind {
        Bind::Int(v)
    }
}
impl From<i64> for Bind {
    fn from(v: i64) -> Bind {
        Bind::BigInt(Some(v))
    }
}
impl From<Option<i64>> for Bind {
    fn from(v: Option<i64>) -> Bind {
        Bind::BigInt(v)
    }
}

/// A statement to run on either store: `query(sql).bind(x).execute(&mut db)`.
pub struct Query {
    sql: String,
    binds: Vec<Bind>,
}

pub fn query(sql: &str) -> Query {
    Query {
        sql: sql.to_string(),
        binds: vec![],
    }
}

macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Uuid(v) => q.bind(v),
                Bind::Time(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
                Bind::OptText(v) => q.bind(v),
                Bind::Int(v) => q.bind(v),
                Bind::BigInt(v) => q.bind(v),
            };
        }
        q
    }};
}

impl Query {
    pub fn bind(mut self, value: impl Into<Bind>) -> Query {
        self.binds.push(value.into());
        self
    }

    /// Runs the statement; the rows it affected.
    pub async fn execute(self, db: &mut Db) -> u64 {
        let text = sqlx::AssertSqlSafe(self.sql);
        match db {
            Db::Pg(c) => bind_all!(sqlx::query(text), self.binds)
                .execute(c)
                .await
                .unwrap()
                .rows_affected(),
            Db::Sqlite(c) => bind_all!(sqlx::query(text), self.binds)
                .execute(c)
                .await
                .unwrap()
                .rows_affected(),
        }
    }
}
