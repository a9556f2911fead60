//! Test harness: each test gets its own PostgreSQL database, RabbitMQ queue
//! (with `x-expires`) and project directory, the UI's router driven in
//! process, and optionally a real worker running in the same process.
//!
//! `SCHEDULER_TEST_MODE=embedded` runs the same tests on the zero-server
//! mode's backends: the embedded store in the project's
//! `.scheduler/scheduler.db`, and the queue it carries.
#![allow(dead_code)]

pub mod db;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_producer::Project;
use scheduler_tracker::{Embedded, EmbeddedConfig, EmbeddedQueue, RunDetail, Store, Tracker, TrackerConfig};
use scheduler_ui::{AppState, UiConfig};
use scheduler_worker::WorkerConfig;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use uuid::Uuid;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The mode the tests run the UI in.
pub fn embedded_mode() -> bool {
    match std::env::var("SCHEDULER_TEST_MODE").as_deref() {
        Ok("embedded") => true,
        Ok("distributed") | Err(_) => false,
        Ok(other) => panic!("SCHEDULER_TEST_MODE={other}: expected embedded or distributed"),
    }
}

fn base_db_url() -> String {
    std::env::var("TEST_DATABASE_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Modules every test project has: output with markup in it, a failure,
/// a long sleep, and a short one (a run that holds its slot for a while).
pub const MODULES: &[(&str, &str)] = &[
    (
        "ok",
        "#!/bin/sh\necho 'rows: 42 <script>alert(1)</script>'\necho \"args: $*\"\n",
    ),
    (
        "boom",
        "#!/bin/sh\necho 'loading'\necho 'boom: disk <b>full</b>' >&2\nexit 3\n",
    ),
    ("nap", "#!/bin/sh\nsleep 30\n"),
    ("doze", "#!/bin/sh\nsleep 2\n"),
];

/// Stands for the test's own queue in [`SEQUENCES`] (queues are per test).
pub const QUEUE: &str = "@QUEUE@";

pub const SEQUENCES: &[(&str, &str)] = &[
    (
        "quick",
        r#"[{"module_name": "ok", "input": "in/<raw>.csv"}, {"module_name": "ok"}]"#,
    ),
    (
        "failing",
        r#"[{"module_name": "ok"}, {"module_name": "boom"}, {"module_name": "ok"}]"#,
    ),
    ("slow", r#"[{"module_name": "nap"}]"#),
    // Fails, and retries in an hour: a run waiting for its retry.
    (
        "retrying",
        r#"[{"module_name": "boom", "retries": 1, "retry_delay_secs": 3600, "retry_max_delay_secs": 3600, "retry_jitter_factor": 0}]"#,
    ),
    ("broken", r#"[{"module_name": "nope"}]"#),
    // One run at a time; a second one while the first holds the slot is
    // turned away, or waits for the slot.
    (
        "one_skip",
        r#"{"max_concurrent": 1, "on_conflict": "skip", "steps": [{"module_name": "doze"}]}"#,
    ),
    (
        "one_queue",
        r#"{"queue": "@QUEUE@", "max_concurrent": 1, "on_conflict": "queue", "steps": [{"module_name": "doze"}]}"#,
    ),
    // Its second step goes to a queue no worker serves (see [`TestApp::nobody_queue`]).
    (
        "unserved",
        r#"[{"module_name": "ok"}, {"module_name": "ok", "queue": "@QUEUE@-nobody"}]"#,
    ),
];

pub struct TestApp {
    pub router: Router,
    pub store: Arc<dyn Store>,
    /// RabbitMQ, or the embedded store's queue.
    pub transport: Arc<dyn Transport>,
    /// The embedded store itself (embedded mode), for its queue.
    embedded: Option<Embedded>,
    /// RabbitMQ (distributed mode), to delete the test's queues.
    broker: Option<Broker>,
    pub queue: String,
    pub project: PathBuf,
    pub shutdown: CancellationToken,
    db_url: String,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::with_token(None).await
    }

    pub async fn with_token(token: Option<&str>) -> TestApp {
        let id = Uuid::now_v7().simple().to_string();
        let id = &id[id.len() - 16..];
        let project = std::env::temp_dir().join(format!("scheduler-ui-test-{id}"));
        std::fs::create_dir_all(project.join("etl_sequences")).unwrap();
        std::fs::create_dir_all(project.join("bin")).unwrap();
        let mut table = serde_json::Map::new();
        for (name, body) in MODULES {
            let path = project.join("bin").join(format!("{name}.sh"));
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            table.insert(name.to_string(), serde_json::json!({"cmd": format!("./bin/{name}.sh")}));
        }
        std::fs::write(project.join("modules.json"), Value::Object(table).to_string()).unwrap();
        let queue = format!("ui-t-{id}");
        for (name, text) in SEQUENCES {
            let text = text.replace(QUEUE, &queue);
            std::fs::write(project.join("etl_sequences").join(format!("{name}.json")), text).unwrap();
        }
        type Backends = (
            String,
            Arc<dyn Store>,
            Arc<dyn Transport>,
            Option<Embedded>,
            Option<Broker>,
        );
        let (db_url, store, transport, embedded, broker): Backends = if embedded_mode() {
            let path = project.join(".scheduler").join("scheduler.db");
            let mut config = EmbeddedConfig::new(&path);
            config.project = Some(project.clone());
            let store = Embedded::open(&config).await.unwrap();
            let queue = EmbeddedQueue::new(&store);
            (
                format!("sqlite://{}", path.display()),
                Arc::new(store.clone()),
                Arc::new(queue),
                Some(store),
                None,
            )
        } else {
            let db_url = format!("{}/ui_t_{id}", base_db_url());
            let store = Tracker::open(&TrackerConfig::new(&db_url)).await.unwrap();
            let broker = Broker::connect(&broker_config(), "ui-test").await.unwrap();
            (db_url, Arc::new(store), Arc::new(broker.clone()), None, Some(broker))
        };
        let shutdown = CancellationToken::new();
        let config = UiConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_string),
            queue: queue.clone(),
        };
        let state = AppState::new(
            store.clone(),
            transport.clone(),
            Project::new(&project).unwrap(),
            config,
            shutdown.clone(),
        );
        TestApp {
            router: scheduler_ui::router(state),
            store,
            transport,
            embedded,
            broker,
            queue,
            project,
            shutdown,
            db_url,
            workers: vec![],
        }
    }

    /// Writes the project's `schedules.json` (read on every request).
    pub fn write_schedules(&self, text: &str) {
        std::fs::write(self.project.join("schedules.json"), text).unwrap();
    }

    /// A POST of a form, as a browser without htmx sends it (same-origin).
    pub async fn post_form(&self, uri: &str, body: &str) -> Reply {
        self.request(
            Method::POST,
            uri,
            &[
                ("origin", "http://127.0.0.1:8080"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body,
        )
        .await
    }

    /// The queue the `unserved` sequence's second step goes to, which no
    /// worker serves unless a test starts one on it.
    pub fn nobody_queue(&self) -> String {
        format!("{}-nobody", self.queue)
    }

    /// Starts a real worker on this app's queue, in this process, and waits
    /// until it consumes.
    pub async fn start_worker(&mut self) {
        self.start_worker_on(vec![self.queue.clone()]).await;
    }

    /// Starts a real worker serving `queues`, in this process, and waits
    /// until it consumes.
    pub async fn start_worker_on(&mut self, queues: Vec<String>) {
        let transport: Arc<dyn Transport> = match &self.embedded {
            Some(store) => Arc::new(EmbeddedQueue::new(store)),
            None => Arc::new(Broker::connect(&broker_config(), "ui-test-worker").await.unwrap()),
        };
        let config = WorkerConfig {
            queues,
            heartbeat_every: Duration::from_millis(500),
            kill_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(2),
            ..WorkerConfig::default()
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(scheduler_worker::worker::run(
            self.store.clone(),
            transport,
            Project::new(&self.project).unwrap(),
            config,
            self.shutdown.child_token(),
            move |_| {
                let _ = ready_tx.send(());
            },
        ));
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("the worker did not start")
            .unwrap();
        self.workers.push(handle);
    }

    pub async fn request(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1:8080");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.request(Method::GET, uri, &[], "").await
    }

    /// A POST as a script sends it (with the cross-site proof header).
    pub async fn post(&self, uri: &str) -> Reply {
        self.request(Method::POST, uri, &[("x-requested-by", "test")], "").await
    }

    /// Starts a run through the API; returns its id.
    pub async fn start(&self, sequence: &str) -> Uuid {
        let r = self.post(&format!("/api/v1/sequences/{sequence}/start")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.json()["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn detail(&self, run: Uuid) -> RunDetail {
        self.store.run_detail(run).await.unwrap().expect("run recorded")
    }

    /// Waits until the run's detail satisfies `done`.
    pub async fn wait_for(&self, run: Uuid, what: &str, done: impl Fn(&RunDetail) -> bool) -> RunDetail {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let d = self.detail(run).await;
            if done(&d) {
                return d;
            }
            assert!(Instant::now() < deadline, "run {run} never got {what}: {d:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_state(&self, run: Uuid, state: &str) -> RunDetail {
        self.wait_for(run, state, |d| d.run.state == state).await
    }

    /// A connection of the test's own to this app's store.
    pub async fn db(&self) -> db::Db {
        db::Db::connect(&self.db_url).await
    }

    /// Waits until the shared runs poller behind `/events` has stored its
    /// baseline, the first reading later ones are compared with. It watches,
    /// from `db`, the other connections' reads of this app's database that
    /// finished after `since` (the database's clock, from [`db_clock`]). One
    /// reading takes one or two round trips (a statement's first use
    /// prepares it) milliseconds apart, and the poller reads again only a
    /// second after storing a reading: two reads finished at least a quarter
    /// second apart mean the baseline is stored. Valid only while nothing
    /// else uses the database (no worker, no other request). SQLite shows no
    /// other connection's reads: there, it waits for the poller's first read
    /// and the second after it.
    pub async fn wait_for_runs_poller_baseline(&self, db: &mut db::Db, since: f64) {
        let db = match db {
            db::Db::Pg(c) => c,
            db::Db::Sqlite(_) => return tokio::time::sleep(Duration::from_millis(1500)).await,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen: Vec<f64> = Vec::new();
        loop {
            let finished: Vec<f64> = sqlx::query_scalar(
                "SELECT extract(epoch FROM query_start)::float8 FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                    AND state = 'idle' AND query_start > to_timestamp($1)",
            )
            .bind(since)
            .fetch_all(&mut *db)
            .await
            .unwrap();
            for t in finished {
                if !seen.contains(&t) {
                    seen.push(t);
                }
            }
            let first = seen.iter().copied().fold(f64::INFINITY, f64::min);
            if seen.iter().any(|t| t - first >= 0.25) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the runs poller never read the database twice; readings finished (s since the epoch): {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the worker, drops the database and the queue (the embedded
    /// store goes with the project directory).
    pub async fn finish(mut self) {
        self.shutdown.cancel();
        for w in std::mem::take(&mut self.workers) {
            let _ = tokio::time::timeout(Duration::from_secs(20), w).await;
        }
        self.store.close().await;
        if let Some(broker) = &self.broker {
            let _ = broker.delete_queue(&self.queue).await;
            let _ = broker.delete_queue(&self.nobody_queue()).await;
            use sqlx::migrate::MigrateDatabase;
            let _ = sqlx::Postgres::force_drop_database(&self.db_url).await;
        }
        self.transport.close().await;
        let _ = std::fs::remove_dir_all(&self.project);
    }
}

/// The database's clock, as seconds since the epoch (SQLite's is this
/// host's).
pub async fn db_clock(db: &mut db::Db) -> f64 {
    match db {
        db::Db::Pg(c) => sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
            .fetch_one(c)
            .await
            .unwrap(),
        db::Db::Sqlite(_) => chrono::Utc::now().timestamp_micros() as f64 / 1e6,
    }
}

fn broker_config() -> BrokerConfig {
    BrokerConfig {
        queue_expires_ms: Some(600_000),
        ..BrokerConfig::new(AMQP_URL)
    }
}

/// The table row (`<tr>…</tr>`) of `html` that contains `marker`.
pub fn row_of<'a>(html: &'a str, marker: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the page:\n{html}"));
    let start = html[..at].rfind("<tr").expect("inside a table row");
    let end = at + html[at..].find("</tr>").expect("a closed row") + "</tr>".len();
    &html[start..end]
}
