//! Runs a test against each backend of the `Store` contract: PostgreSQL (a
//! database per test) and the embedded SQLite store (a file per test), from
//! one source. `SCHEDULER_TEST_BACKENDS=postgres` (or `sqlite`) picks one.

#![allow(dead_code)]

use scheduler_core::{Modules, Sequence};
use scheduler_tracker::{Embedded, EmbeddedConfig, NewRun, Store, Tracker, TrackerConfig};
use sqlx::migrate::MigrateDatabase;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The backends this run covers.
pub fn backends() -> Vec<Backend> {
    let chosen = std::env::var("SCHEDULER_TEST_BACKENDS").unwrap_or_else(|_| "postgres,sqlite".into());
    chosen
        .split(',')
        .map(|b| match b.trim() {
            "postgres" => Backend::Postgres,
            "sqlite" => Backend::Sqlite,
            other => panic!("SCHEDULER_TEST_BACKENDS: unknown backend {other:?} (postgres, sqlite)"),
        })
        .collect()
}

/// One backend's store for one test, usable as `&dyn Store`.
#[derive(Clone)]
pub struct TestStore {
    store: Arc<dyn Store>,
    pub backend: Backend,
    /// PostgreSQL: the database URL; SQLite: the file's path.
    pub location: String,
}

impl Deref for TestStore {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

impl TestStore {
    pub fn arc(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Runs backend-specific SQL for a test's set-up (backdating a time,
    /// reading a row the contract does not expose): `pg` for PostgreSQL
    /// (`$1` placeholders), `lite` for SQLite (`?`), each bound with `args`
    /// as text.
    pub async fn raw(&self, pg: &str, lite: &str, args: &[&str]) {
        match self.backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.location).await.unwrap();
                let mut q = sqlx::query(sqlx::AssertSqlSafe(pg.to_string()));
                for a in args {
                    q = q.bind(a.to_string());
                }
                q.execute(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.location))
                    .await
                    .unwrap();
                let mut q = sqlx::query(sqlx::AssertSqlSafe(lite.to_string()));
                for a in args {
                    q = q.bind(a.to_string());
                }
                q.execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }
}

impl TestStore {
    /// Like [`TestStore::raw`], for a test's read of what the contract does
    /// not expose: the one integer (a count) the query returns.
    pub async fn raw_i64(&self, pg: &str, lite: &str, args: &[&str]) -> i64 {
        match self.backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.location).await.unwrap();
                let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(pg.to_string()));
                for a in args {
                    q = q.bind(a.to_string());
                }
                let n = q.fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.location))
                    .await
                    .unwrap();
                let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(lite.to_string()));
                for a in args {
                    q = q.bind(a.to_string());
                }
                let n = q.fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
        }
    }
}

pub async fn open(backend: Backend, prefix: &str) -> TestStore {
    match backend {
        Backend::Postgres => {
            let base =
                std::env::var("TEST_DATABASE_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
            let url = format!("{base}/{prefix}_{}", Uuid::now_v7().simple());
            let tracker = Tracker::open(&TrackerConfig::new(&url)).await.unwrap();
            TestStore {
                store: Arc::new(tracker),
                backend,
                location: url,
            }
        }
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("{prefix}_{}", Uuid::now_v7().simple()));
            let path: PathBuf = dir.join("scheduler.db");
            let store = Embedded::open(&EmbeddedConfig::new(&path)).await.unwrap();
            TestStore {
                store: Arc::new(store),
                backend,
                location: path.display().to_string(),
            }
        }
    }
}

pub async fn remove(store: TestStore) {
    store.close().await;
    match store.backend {
        Backend::Postgres => {
            let _ = sqlx::Postgres::force_drop_database(&store.location).await;
        }
        Backend::Sqlite => {
            if let Some(dir) = PathBuf::from(&store.location).parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Runs `test` once per backend, each with a fresh store.
pub async fn each_backend<F, Fut>(prefix: &str, test: F)
where
    F: Fn(TestStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in backends() {
        eprintln!("--- backend: {backend:?}");
        let store = open(backend, prefix).await;
        test(store.clone()).await;
        remove(store).await;
    }
}

/// A run of sequence `name` (the JSON `text` of `etl_sequences/<name>.json`,
/// over module `m`) on queue `q1`.
pub fn run_of(name: &str, text: &str) -> NewRun {
    let modules = Modules::parse("modules.json", r#"{"m": {"cmd": "./m.sh"}}"#).unwrap();
    let seq = Sequence::parse(name, &format!("etl_sequences/{name}.json"), text, &modules).unwrap();
    NewRun {
        id: Uuid::now_v7(),
        queue: "q1".into(),
        trigger: "test".into(),
        snapshot: seq.snapshot(&modules, "q1"),
        schedule: None,
        logical_date: None,
    }
}
