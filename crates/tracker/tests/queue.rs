//! The embedded queue (the zero-server mode's transport) against a real
//! SQLite file: the `Transport` contract RabbitMQ keeps, kept here too.

use scheduler_broker::{BrokerError, Transport};
use scheduler_core::Message;
use scheduler_tracker::{Embedded, EmbeddedConfig, EmbeddedQueue};
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
    let c = tokio::time::timeout(Duration::from_secs(2), inbox.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
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
    let again = tokio::time::timeout(Duration::from_secs(3), second.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(Message::decode(&again.data).unwrap(), start(id));
    again.dead_letter().await.unwrap();
    assert_eq!(queue.dead_letters("q").await.unwrap().len(), 1);
    assert_eq!(queue.queue_depth("q").await.unwrap().0, 0);
    second.close().await;
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
