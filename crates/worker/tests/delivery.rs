//! The worker's logic one delivery at a time: a [`Ctx`] built in the test
//! (a fresh PostgreSQL database, a RabbitMQ queue of its own, a project
//! directory with real module scripts) and [`handle_delivery`] called on
//! real deliveries, with no worker process, consume loop, heartbeat or
//! recovery around it.

use scheduler_broker::{Broker, BrokerConfig, Inbox, Transport};
use scheduler_core::{ExecState, Message};
use scheduler_producer::Project;
use scheduler_tracker::{ExecKey, RunDetail, Store, Tracker, TrackerConfig};
use scheduler_worker::{Ctx, SystemClock, WorkerConfig, handle_delivery};
use sqlx::migrate::MigrateDatabase;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

struct Harness {
    ctx: Ctx,
    inbox: Box<dyn Inbox>,
    broker: Broker,
    db_url: String,
    dir: PathBuf,
}

impl Harness {
    async fn new(modules: &[(&str, &str)], sequence: &[&str]) -> Harness {
        let id = Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("worker-t-{id}"));
        std::fs::create_dir_all(dir.join("etl_sequences")).unwrap();
        let mut table = serde_json::Map::new();
        for (name, body) in modules {
            let path = dir.join(format!("{name}.sh"));
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            table.insert(name.to_string(), serde_json::json!({"cmd": format!("./{name}.sh")}));
        }
        std::fs::write(dir.join("modules.json"), serde_json::Value::Object(table).to_string()).unwrap();
        let steps: Vec<_> = sequence
            .iter()
            .map(|m| serde_json::json!({"module_name": m, "input": "", "output": "", "conf": ""}))
            .collect();
        std::fs::write(
            dir.join("etl_sequences/s.json"),
            serde_json::Value::Array(steps).to_string(),
        )
        .unwrap();

        let base = std::env::var("TEST_DATABASE_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let db_url = format!("{base}/worker_t_{id}");
        let store: Arc<dyn Store> = Arc::new(Tracker::open(&TrackerConfig::new(&db_url)).await.unwrap());
        let broker = Broker::connect(
            &BrokerConfig {
                queue_expires_ms: Some(600_000),
                ..BrokerConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")
            },
            "worker-delivery-test",
        )
        .await
        .unwrap();
        let queue = format!("worker-t-{id}");
        broker.declare(&queue).await.unwrap();
        let transport: Arc<dyn Transport> = Arc::new(broker.clone());
        let inbox = transport.consume(std::slice::from_ref(&queue), 2, "t").await.unwrap();
        let config = WorkerConfig {
            queues: vec![queue],
            ..WorkerConfig::default()
        };
        let ctx = Ctx::new(
            store,
            transport,
            Project::new(&dir).unwrap(),
            config,
            Uuid::now_v7(),
            inbox.slots(),
            Arc::new(SystemClock),
        );
        ctx.store.register_worker(&ctx.info()).await.unwrap();
        Harness {
            ctx,
            inbox,
            broker,
            db_url,
            dir,
        }
    }

    fn store(&self) -> &dyn Store {
        &*self.ctx.store
    }

    fn queue(&self) -> &str {
        &self.ctx.config.queues[0]
    }

    async fn start(&self) -> Uuid {
        scheduler_producer::start_run(
            &self.ctx.project,
            self.store(),
            &*self.ctx.transport,
            "s",
            self.queue(),
            "test",
        )
        .await
        .unwrap()
        .run_id
    }

    /// Takes the next delivery of the queue and handles it to its end;
    /// returns the message it carried.
    async fn handle_next(&mut self) -> Message {
        let incoming = tokio::time::timeout(Duration::from_secs(10), self.inbox.next())
            .await
            .expect("a delivery within 10 s")
            .unwrap()
            .expect("the consumer is alive");
        let message = Message::decode(&incoming.data).unwrap();
        handle_delivery(&self.ctx, incoming).await;
        message
    }

    async fn detail(&self, run: Uuid) -> RunDetail {
        self.store().run_detail(run).await.unwrap().unwrap()
    }

    /// Ready messages in the queue and its dead-letter queue.
    async fn depths(&self) -> (u32, u32) {
        let q = self.broker.queue_depth(self.queue()).await.unwrap().0;
        let dead = self
            .broker
            .queue_depth(&format!("{}.dead", self.queue()))
            .await
            .unwrap()
            .0;
        (q, dead)
    }

    async fn finish(self) {
        self.inbox.close().await;
        let _ = self.broker.delete_queue(&self.ctx.config.queues[0]).await;
        self.broker.close().await;
        self.ctx.store.close().await;
        let _ = sqlx::Postgres::force_drop_database(&self.db_url).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const OK: &str = "#!/bin/sh\necho \"$ETL_STEP $ETL_ATTEMPT\" >> ledger.txt\n";
const FAIL_ONCE: &str = "#!/bin/sh\nif [ ! -e failed.txt ]; then touch failed.txt; echo 'disk full' >&2; exit 3; fi\necho \"$ETL_STEP $ETL_ATTEMPT\" >> ledger.txt\n";

#[tokio::test]
async fn start_etl_runs_every_step_here_and_the_last_one_succeeds_the_run() {
    let mut h = Harness::new(&[("ok", OK)], &["ok", "ok", "ok"]).await;
    let run = h.start().await;
    assert!(matches!(h.handle_next().await, Message::StartEtl { .. }));
    // The three steps ran in that one delivery (local continuation), and
    // the write that recorded the last one ended the run: no end_etl.
    assert_eq!(
        std::fs::read_to_string(h.dir.join("ledger.txt")).unwrap(),
        "0 1\n1 1\n2 1\n"
    );
    let d = h.detail(run).await;
    assert_eq!(d.run.state, "succeeded");
    assert!(
        d.executions
            .iter()
            .all(|e| e.state == "succeeded" && e.worker_id == Some(h.ctx.worker_id))
    );
    assert_eq!(h.depths().await, (0, 0), "every delivery was acknowledged");
    h.finish().await;
}

#[tokio::test]
async fn duplicates_of_every_message_are_dropped_and_acknowledged() {
    let mut h = Harness::new(&[("ok", OK)], &["ok", "ok"]).await;
    let run = h.start().await;
    h.handle_next().await;
    assert_eq!(h.detail(run).await.run.state, "succeeded");
    for m in [
        Message::StartEtl { run_id: run },
        Message::ExecModule {
            run_id: run,
            step: 0,
            attempt: 1,
        },
        Message::ExecModule {
            run_id: run,
            step: 1,
            attempt: 7,
        },
        Message::EndEtl { run_id: run },
        Message::ErrorHandler {
            run_id: run,
            step: 1,
            attempt: 1,
            reason: "late".into(),
        },
        Message::StartEtl { run_id: Uuid::now_v7() },
    ] {
        h.ctx.transport.publish(h.queue(), &m).await.unwrap();
        h.handle_next().await;
    }
    let d = h.detail(run).await;
    assert_eq!(d.run.state, "succeeded", "{d:#?}");
    assert_eq!(d.executions.len(), 2, "nothing ran again");
    assert_eq!(
        std::fs::read_to_string(h.dir.join("ledger.txt"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert_eq!(h.depths().await, (0, 0));
    h.finish().await;
}

#[tokio::test]
async fn a_failure_fails_the_run_with_its_reason_and_a_retry_runs_the_next_attempt() {
    let mut h = Harness::new(&[("ok", OK), ("flaky", FAIL_ONCE)], &["ok", "flaky"]).await;
    let run = h.start().await;
    h.handle_next().await; // start_etl: step 0 succeeds, step 1 fails here and fails the run
    let d = h.detail(run).await;
    assert_eq!(d.run.state, "failed");
    assert_eq!(d.run.failed_step, Some(1));
    let error = d.run.error.clone().unwrap();
    assert!(error.contains("exit code 3") && error.contains("disk full"), "{error}");

    scheduler_producer::retry(h.store(), &*h.ctx.transport, run)
        .await
        .unwrap();
    // The retry went to the run's queue as an exec_module of attempt 2.
    assert!(matches!(
        h.handle_next().await,
        Message::ExecModule {
            step: 1,
            attempt: 2,
            ..
        }
    ));
    let d = h.detail(run).await;
    assert_eq!(d.run.state, "succeeded");
    let attempts: Vec<_> = d
        .executions
        .iter()
        .map(|e| (e.step, e.attempt, e.state.as_str()))
        .collect();
    assert_eq!(
        attempts,
        vec![(0, 1, "succeeded"), (1, 1, "failed"), (1, 2, "succeeded")]
    );
    // A second retry of a succeeded run is refused, typed.
    let refused = scheduler_producer::retry(h.store(), &*h.ctx.transport, run).await;
    assert!(
        matches!(refused, Err(scheduler_producer::ProducerError::Conflict(_))),
        "{refused:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_draining_worker_hands_each_step_to_the_queue_instead_of_continuing() {
    let mut h = Harness::new(&[("ok", OK)], &["ok", "ok"]).await;
    h.ctx.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    let run = h.start().await;
    assert!(matches!(h.handle_next().await, Message::StartEtl { .. }));
    assert!(!h.dir.join("ledger.txt").exists(), "nothing ran on start_etl");
    assert!(matches!(h.handle_next().await, Message::ExecModule { step: 0, .. }));
    assert!(matches!(h.handle_next().await, Message::ExecModule { step: 1, .. }));
    assert!(matches!(h.handle_next().await, Message::EndEtl { .. }));
    assert_eq!(h.detail(run).await.run.state, "succeeded");
    h.finish().await;
}

#[tokio::test]
async fn a_canceled_run_runs_nothing_more_and_malformed_input_is_dead_lettered() {
    let mut h = Harness::new(&[("ok", OK)], &["ok", "ok"]).await;
    h.ctx.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    let run = h.start().await;
    h.handle_next().await; // start_etl: step 0 queued and published
    scheduler_producer::cancel(h.store(), &*h.ctx.transport, run)
        .await
        .unwrap();
    h.handle_next().await; // its exec_module: dropped
    let d = h.detail(run).await;
    assert_eq!(d.run.state, "canceled");
    assert_eq!(d.executions[0].state, ExecState::Canceled.as_str());
    assert!(!h.dir.join("ledger.txt").exists());
    let again = scheduler_producer::cancel(h.store(), &*h.ctx.transport, run).await;
    assert!(matches!(again, Err(scheduler_producer::ProducerError::Conflict(_))));
    let unknown = scheduler_producer::cancel(h.store(), &*h.ctx.transport, Uuid::now_v7()).await;
    assert!(matches!(unknown, Err(scheduler_producer::ProducerError::NoRun(_))));

    h.broker.publish_raw(h.queue(), b"{not json", "garbage").await.unwrap();
    let incoming = h.inbox.next().await.unwrap().unwrap();
    handle_delivery(&h.ctx, incoming).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.depths().await != (0, 1) {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", h.depths().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.finish().await;
}

#[tokio::test]
async fn two_workers_claiming_one_step_at_once_one_wins() {
    let h = Harness::new(&[("ok", OK)], &["ok"]).await;
    h.ctx.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    let run = scheduler_producer::record_run(&h.ctx.project, h.store(), "s", h.queue(), "t")
        .await
        .unwrap()
        .run_id;
    let start = scheduler_core::machine::on_start(h.store().run_view(run).await.unwrap().unwrap());
    // Applied without its publish reaching anyone: apply, then drain the queue.
    scheduler_producer::apply(h.store(), &*h.ctx.transport, run, start)
        .await
        .unwrap();
    let key = ExecKey {
        run_id: run,
        step: 0,
        attempt: 1,
    };
    // Polled together: every claim is in flight before any answer arrives.
    let claims =
        futures_util::future::join_all((0..8).map(|_| h.store().claim(key, Uuid::now_v7(), Duration::from_secs(30))))
            .await;
    let won = claims.iter().filter(|c| matches!(c, Ok(Some(_)))).count();
    assert_eq!(won, 1, "{claims:?}");
    h.finish().await;
}
