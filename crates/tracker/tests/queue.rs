//! The embedded queue (the zero-server mode's transport) against a real
//! SQLite file: the `Transport` contract RabbitMQ keeps, kept here too; and
//! the embedded mode's start, a run and its `start_etl` recorded in one
//! transaction (`EmbeddedQueue::record_and_start`).

mod common;

use scheduler_broker::{BrokerError, Transport};
use scheduler_core::{Message, RunState};
use scheduler_tracker::{Admitted, Embedded, EmbeddedConfig, EmbeddedQueue, NewRun, Store};
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn open() -> (Embedded, EmbeddedQueue, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("queue_t_{}", Uuid::now_v7().simple()));
    let store = Embedded::open(&EmbeddedConfig::new(dir.join("scheduler.db")))
        .await
        .unwrap();
    let queue = EmbeddedQueue::new(&store);
    (store, queue, dir)
}

fn start(run_id: Uuid) -> Message {
    Message::StartEtl { run_id }
}

/// The inbox's next delivery, within 5 s.
async fn next(inbox: &mut Box<dyn scheduler_broker::Inbox>) -> scheduler_broker::Incoming {
    tokio::time::timeout(Duration::from_secs(5), inbox.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn published_messages_are_delivered_in_order_and_an_ack_removes_them() {
    let (_store, queue, dir) = open().await;
    let err = queue.publish("nowhere", &start(Uuid::now_v7())).await.unwrap_err();
    assert!(matches!(err, BrokerError::Unroutable { .. }), "{err}");

    let mut inbox = queue.consume(&["q".into()], 4, "t").await.unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for id in &ids {
        queue.publish("q", &start(*id)).await.unwrap();
    }
    assert_eq!(queue.queue_depth("q").await.unwrap(), (3, 1));
    for id in &ids {
        let d = inbox.next().await.unwrap().unwrap();
        assert_eq!(Message::decode(&d.data).unwrap(), start(*id));
        d.ack().await.unwrap();
    }
    assert_eq!(queue.queue_depth("q").await.unwrap().0, 0);
    inbox.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_inbox_never_holds_more_than_its_free_slots_and_a_freed_slot_lets_the_next_in() {
    let (_store, queue, dir) = open().await;
    let mut inbox = queue.consume(&["q".into()], 2, "t").await.unwrap();
    for _ in 0..4 {
        queue.publish("q", &start(Uuid::now_v7())).await.unwrap();
    }
    let slots = inbox.slots();
    let a = inbox.next().await.unwrap().unwrap();
    slots.take(&a).await.unwrap();
    a.ack().await.unwrap();
    let b = inbox.next().await.unwrap().unwrap();
    // One slot busy, one delivery unsettled: no room for a third.
    let third = tokio::time::timeout(Duration::from_millis(300), inbox.next()).await;
    assert!(third.is_err(), "a third delivery with two slots in use");
    b.requeue().await.unwrap();
    let c = next(&mut inbox).await;
    c.ack().await.unwrap();
    slots.free().await.unwrap();
    inbox.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_consumer_that_closes_gives_its_unsettled_messages_back_and_dead_letters_are_kept() {
    let (_store, queue, dir) = open().await;
    let id = Uuid::now_v7();
    let mut first = queue.consume(&["q".into()], 1, "first").await.unwrap();
    queue.publish("q", &start(id)).await.unwrap();
    let held = first.next().await.unwrap().unwrap();
    drop(held);
    first.close().await;
    let mut second = queue.consume(&["q".into()], 1, "second").await.unwrap();
    let again = next(&mut second).await;
    assert_eq!(Message::decode(&again.data).unwrap(), start(id));
    again.dead_letter().await.unwrap();
    assert_eq!(queue.dead_letters("q").await.unwrap().len(), 1);
    assert_eq!(queue.queue_depth("q").await.unwrap().0, 0);
    second.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_message_put_back_unprocessed_is_not_counted_toward_the_delivery_limit_a_requeue_is() {
    let (_store, queue, dir) = open().await;
    let id = Uuid::now_v7();
    let mut inbox = queue.consume(&["q".into()], 1, "t").await.unwrap();
    queue.publish("q", &start(id)).await.unwrap();
    // Far more put-backs than the delivery limit: still delivered, uncounted.
    for _ in 0..scheduler_tracker::sqlite::queue::DELIVERY_LIMIT + 5 {
        let d = next(&mut inbox).await;
        assert_eq!(d.redeliveries(), 0);
        d.put_back().await.unwrap();
    }
    let d = next(&mut inbox).await;
    assert_eq!(Message::decode(&d.data).unwrap(), start(id));
    d.requeue().await.unwrap();
    let d = next(&mut inbox).await;
    assert_eq!(d.redeliveries(), 1, "a requeue counts");
    d.ack().await.unwrap();
    assert!(queue.dead_letters("q").await.unwrap().is_empty());
    inbox.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_waiting_inbox_is_rung_by_a_publish_from_another_handle_within_milliseconds() {
    let (store, queue, dir) = open().await;
    let mut inbox = queue.consume(&["q".into()], 1, "t").await.unwrap();
    // Another process's handle on the same file.
    let other_store = Embedded::open(&EmbeddedConfig::new(store.path())).await.unwrap();
    let other = EmbeddedQueue::new(&other_store);
    let mut waits = Vec::new();
    for _ in 0..20 {
        let publisher = other.clone();
        let sent = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            publisher.publish("q", &start(Uuid::now_v7())).await.unwrap();
        });
        let d = inbox.next().await.unwrap().unwrap();
        waits.push(sent.elapsed().saturating_sub(Duration::from_millis(20)));
        d.ack().await.unwrap();
    }
    waits.sort();
    eprintln!("pickup after publish: p50 {:?}, max {:?}", waits[10], waits[19]);
    // Far below the one-second poll: the bell woke it.
    assert!(waits[10] < Duration::from_millis(200), "p50 {:?}", waits[10]);
    inbox.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_queue_is_declared_once_per_handle_and_declared_again_after_a_publish_finds_it_gone() {
    let (_store, queue, dir) = open().await;
    queue.declare("q").await.unwrap();
    // The queue disappears behind the handle's back.
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("scheduler.db").display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM queues WHERE name = 'q'")
        .execute(&raw)
        .await
        .unwrap();
    // Declared already as far as this handle knows: no write.
    queue.declare("q").await.unwrap();
    let err = queue.publish("q", &start(Uuid::now_v7())).await.unwrap_err();
    assert!(matches!(err, BrokerError::Unroutable { .. }), "{err}");
    // The failed publish made the handle forget it: this declare writes it.
    queue.declare("q").await.unwrap();
    queue.publish("q", &start(Uuid::now_v7())).await.unwrap();
    assert_eq!(queue.queue_depth("q").await.unwrap().0, 1);
    raw.close().await;
    let _ = std::fs::remove_dir_all(dir);
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
    let d = next(&mut inbox).await;
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

/// A run whose sequence has no limit is recorded on the inline connection
/// (rusqlite), one with a limit through sqlx: their rows must read alike,
/// column by column, in the same encodings (UUIDs as 16-byte blobs, times
/// as RFC 3339 text with "+00:00", JSON as text).
#[tokio::test]
async fn a_start_recorded_inline_reads_as_one_recorded_through_sqlx() {
    let (store, queue, dir) = open().await;
    let logical = chrono::DateTime::parse_from_rfc3339("2026-11-29T03:00:00.123456Z")
        .unwrap()
        .to_utc();
    let mut inline = new_run("");
    let mut pooled = new_run(r#""max_concurrent": 5, "on_conflict": "queue","#);
    for run in [&mut inline, &mut pooled] {
        run.schedule = Some("nightly".into());
        run.logical_date = Some(logical);
        run.trigger = "beat".into();
    }
    assert_eq!(
        queue.record_and_start(&inline, &queues()).await.unwrap(),
        Admitted::Queued
    );
    assert_eq!(
        queue.record_and_start(&pooled, &queues()).await.unwrap(),
        Admitted::Queued
    );
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", store.path().display()))
        .await
        .unwrap();
    // Every column's type, and the shape of each time (its length and its
    // offset), per run: identical for both.
    let shape = "SELECT json_array(typeof(id), sequence, state, queue, trigger, typeof(snapshot), step_count,
                        typeof(note), typeof(created_at), length(created_at), substr(created_at, -6),
                        created_at = updated_at, typeof(finished_at), schedule, logical_date,
                        typeof(published_at), substr(published_at, -6))
                   FROM runs WHERE id = ?";
    let read = |id: Uuid| {
        let raw = &raw;
        async move {
            let (text,): (String,) = sqlx::query_as(shape).bind(id).fetch_one(raw).await.unwrap();
            serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
        }
    };
    let (a, b) = (read(inline.id).await, read(pooled.id).await);
    assert_eq!(a, b);
    assert_eq!(a[0], "blob");
    assert_eq!(a[10], "+00:00");
    assert_eq!(a[14], "2026-11-29T03:00:00.123456+00:00");
    // The snapshots are the same JSON but for the limit.
    let snapshot = |id: Uuid| {
        let raw = &raw;
        async move {
            let (text,): (String,) = sqlx::query_as("SELECT snapshot FROM runs WHERE id = ?")
                .bind(id)
                .fetch_one(raw)
                .await
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        }
    };
    assert_eq!(snapshot(inline.id).await["steps"], snapshot(pooled.id).await["steps"]);
    // Both read back through the store alike, and both starts are queued.
    let (x, y) = (
        store.run_detail(inline.id).await.unwrap().unwrap().run,
        store.run_detail(pooled.id).await.unwrap().unwrap().run,
    );
    assert_eq!(
        (x.state, x.logical_date, &x.schedule),
        (y.state, y.logical_date, &y.schedule)
    );
    assert_eq!(x.logical_date, Some(logical));
    assert_eq!(queue.queue_depth("q1").await.unwrap().0, 2);
    assert!(store.unpublished_runs(Duration::ZERO, 10).await.unwrap().is_empty());
    raw.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
