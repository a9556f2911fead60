//! The embedded mode's start: a run and its `start_etl` recorded in one
//! transaction of the store that also holds the queue
//! (`EmbeddedQueue::record_and_start`).

mod common;

use scheduler_broker::Transport;
use scheduler_core::{Message, RunState};
use scheduler_tracker::{Admitted, Embedded, EmbeddedConfig, EmbeddedQueue, NewRun, Store};
use std::time::Duration;
use uuid::Uuid;

async fn open() -> (Embedded, EmbeddedQueue, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("outbox_t_{}", Uuid::now_v7().simple()));
    let store = Embedded::open(&EmbeddedConfig::new(dir.join("scheduler.db")))
        .await
        .unwrap();
    let queue = EmbeddedQueue::new(&store);
    (store, queue, dir)
}

/// A run on queue `q1` whose second step runs on `heavy`; `policy` is the
/// sequence's concurrency fields, if any.
fn new_run(policy: &str) -> NewRun {
    common::run_of(
        "s",
        &format!(r#"{{{policy} "steps": [{{"module_name": "m"}}, {{"module_name": "m", "queue": "heavy"}}]}}"#),
    )
}

fn queues() -> Vec<String> {
    vec!["q1".into(), "heavy".into()]
}

#[tokio::test]
async fn a_run_and_its_start_are_recorded_together_and_its_queues_declared() {
    let (store, queue, dir) = open().await;
    let run = new_run("");
    assert_eq!(queue.record_and_start(&run, &queues()).await.unwrap(), Admitted::Queued);
    let view = store.run_view(run.id).await.unwrap().unwrap();
    assert_eq!(view.state, RunState::Queued);
    // Noted published: recovery has nothing to publish again.
    assert!(store.unpublished_runs(Duration::ZERO, 10).await.unwrap().is_empty());
    // Both queues exist (a publish to the step's queue is routable).
    assert_eq!(queue.queue_depth("heavy").await.unwrap().0, 0);
    queue
        .publish("heavy", &Message::StartEtl { run_id: Uuid::now_v7() })
        .await
        .unwrap();
    let mut inbox = queue.consume(&["q1".into()], 1, "t").await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), inbox.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(Message::decode(&d.data).unwrap(), Message::StartEtl { run_id: run.id });
    d.ack().await.unwrap();
    inbox.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_run_that_waits_for_a_slot_gets_no_start_until_admitted() {
    let (store, queue, dir) = open().await;
    let policy = r#""max_concurrent": 1, "on_conflict": "queue","#;
    let (first, second) = (new_run(policy), new_run(policy));
    assert_eq!(
        queue.record_and_start(&first, &queues()).await.unwrap(),
        Admitted::Queued
    );
    let admitted = queue.record_and_start(&second, &queues()).await.unwrap();
    assert!(matches!(admitted, Admitted::Waiting(_)), "{admitted:?}");
    assert_eq!(
        store.run_view(second.id).await.unwrap().unwrap().state,
        RunState::Waiting
    );
    // Only the first run's start is on the queue.
    assert_eq!(queue.queue_depth("q1").await.unwrap().0, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_start_that_cannot_be_stored_leaves_no_run_behind() {
    let (store, queue, dir) = open().await;
    let file = store.path().to_path_buf();
    let other = Embedded::open(&EmbeddedConfig::new(&file)).await.unwrap();
    // Another process's connection: the message cannot be written.
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER boom BEFORE INSERT ON queue_messages BEGIN SELECT RAISE(ABORT, 'boom: no messages'); END",
    )
    .execute(&raw)
    .await
    .unwrap();
    let run = new_run("");
    let err = queue.record_and_start(&run, &queues()).await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(
        store.run_view(run.id).await.unwrap().is_none(),
        "the run was recorded without its start"
    );
    // A handle of its own is not this queue's store.
    assert!(queue.shares(&store) && queue.shares(&store.clone()));
    assert!(!queue.shares(&other));
    raw.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
