//! The write connection's group flush (`writer.rs`): a write that must be
//! durable returns only once a flush of the log covers it; writes that
//! wait together share flushes; bookkeeping writes do not wait.

use super::super::{Embedded, EmbeddedConfig};
use super::Durability;
use uuid::Uuid;

async fn store() -> Embedded {
    let dir = std::env::temp_dir().join(format!("writer_{}", Uuid::now_v7().simple()));
    Embedded::open(&EmbeddedConfig::new(dir.join("scheduler.db")))
        .await
        .unwrap()
}

async fn flusher_state(t: &Embedded) -> (u64, u64, u64, std::path::PathBuf) {
    let flusher = t.turn().await.0.flusher.clone();
    flusher.state().await
}

async fn insert(t: &Embedded, durability: Durability, name: &str) {
    let name = name.to_string();
    t.turn()
        .await
        .write(durability, async |c| {
            sqlx::query("INSERT INTO queues (name, declared_at) VALUES (?, '2026-01-01T00:00:00Z')")
                .bind(&name)
                .execute(c)
                .await
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_write_returns_flushed_and_a_logged_one_does_not_wait() {
    let t = store().await;
    insert(&t, Durability::Flushed, "a").await;
    let (committed, flushed, flushes, wal) = flusher_state(&t).await;
    assert_eq!(
        (committed, flushed),
        (1, 1),
        "a flushed write returned before its flush"
    );
    assert_eq!(flushes, 1);
    // The flush is of the real log: a wrong path would "flush" nothing.
    assert!(wal.is_absolute(), "{}", wal.display());
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the flushed log {} is not the store's",
        wal.display()
    );

    insert(&t, Durability::Logged, "b").await;
    let (committed, flushed, flushes, _) = flusher_state(&t).await;
    assert_eq!(
        (committed, flushed, flushes),
        (2, 1, 1),
        "a logged write waited for a flush"
    );

    // The next durable write's flush covers the logged one before it.
    insert(&t, Durability::Flushed, "c").await;
    let (committed, flushed, _, _) = flusher_state(&t).await;
    assert_eq!((committed, flushed), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_writes_that_wait_together_share_flushes() {
    let t = store().await;
    const N: usize = 40;
    // Hold the turn while they all queue for it: each commits in turn, and
    // the flushes of those waiting together are shared.
    let turn = t.turn().await;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..N {
        let t = t.clone();
        writes.spawn(async move { insert(&t, Durability::Flushed, &format!("q{i}")).await });
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(turn);
    while let Some(done) = writes.join_next().await {
        done.unwrap();
    }
    let (committed, flushed, flushes, _) = flusher_state(&t).await;
    assert_eq!((committed, flushed), (N as u64, N as u64));
    assert!(flushes < N as u64, "{flushes} flushes for {N} commits waiting together");
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM queues WHERE name LIKE 'q%'")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(count, N as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_commit_is_durable_returns_while_another_flushes() {
    let t = store().await;
    insert(&t, Durability::Flushed, "a").await;
    let flusher = t.turn().await.0.flusher.clone();
    // Another task in the flusher's role, flushing later commits.
    let role = flusher.role.lock().await;
    let waited = tokio::time::timeout(std::time::Duration::from_secs(2), flusher.wait(1)).await;
    assert!(
        waited.is_ok(),
        "a waiter whose commit was durable queued behind the flush under way"
    );
    drop(role);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_behind_a_flush_all_wake_when_it_ends_and_one_flushes_for_them() {
    let t = store().await;
    for name in ["a", "b", "c"] {
        insert(&t, Durability::Logged, name).await;
    }
    let flusher = t.turn().await.0.flusher.clone();
    let (_, _, before, _) = flusher.state().await;
    // The role held by a flush that ends without covering them (a task
    // cancelled at its yield, say).
    let role = super::Role {
        held: Some(flusher.role.lock().await),
        ended: &flusher.flushes_ended,
    };
    let mut waiters = tokio::task::JoinSet::new();
    for seq in 1..=3 {
        let f = flusher.clone();
        waiters.spawn(async move { f.wait(seq).await });
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(waiters.len(), 3);
    assert!(waiters.try_join_next().is_none(), "a waiter returned before its flush");
    drop(role);
    let all = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(done) = waiters.join_next().await {
            done.unwrap();
        }
    })
    .await;
    assert!(all.is_ok(), "waiters slept past the end of the flush they waited for");
    let (committed, flushed, after, _) = flusher.state().await;
    assert_eq!((committed, flushed), (3, 3));
    assert_eq!(after - before, 1, "one flush for the three waiters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_before_its_commit_is_rolled_back_and_frees_the_turn() {
    let t = store().await;
    let mut tx = t.begin().await.unwrap();
    sqlx::query("INSERT INTO queues (name, declared_at) VALUES ('gone', '2026-01-01T00:00:00Z')")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    // The next write gets the turn and the lock, and sees nothing of it.
    insert(&t, Durability::Flushed, "kept").await;
    let names: Vec<(String,)> = sqlx::query_as("SELECT name FROM queues WHERE name IN ('gone', 'kept')")
        .fetch_all(&t.pool)
        .await
        .unwrap();
    assert_eq!(names, vec![("kept".to_string(),)]);
}

#[test]
fn a_flush_blocks_its_runtime_thread_only_while_flushes_are_quick_and_another_thread_runs_the_rest() {
    use super::on_runtime_thread;
    use std::time::Duration;
    assert!(
        on_runtime_thread(Duration::ZERO, 2),
        "the first flush, two runtime threads"
    );
    assert!(on_runtime_thread(Duration::from_micros(300), 4));
    assert!(
        !on_runtime_thread(Duration::from_micros(300), 1),
        "a runtime of one thread"
    );
    assert!(
        !on_runtime_thread(Duration::from_millis(1), 2),
        "a flush of 1 ms is not quick"
    );
    assert!(!on_runtime_thread(Duration::from_millis(30), 16), "a slow disk");
}

/// A run's start (`EmbeddedQueue::record_and_start`) and a publish ring
/// the queue's bell once their transaction commits, before its flush: a
/// worker takes the message while the log is flushed (the worker's own
/// flushed write, later in the log, covers it before any module starts).
/// Each returns only once its commit is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_delivered_while_it_is_flushed_and_its_publisher_returns_once_flushed() {
    // A start without a concurrency limit (the inline connection), one with
    // a limit (admitted in a transaction on the sqlx connection), a publish.
    for (sequence, publish) in [
        (r#"{"steps": [{"module_name": "m"}]}"#, false),
        (r#"{"max_concurrent": 2, "steps": [{"module_name": "m"}]}"#, false),
        (r#"{"steps": [{"module_name": "m"}]}"#, true),
    ] {
        delivered_while_flushing(sequence, publish).await;
    }
}

async fn delivered_while_flushing(sequence: &str, publish: bool) {
    use scheduler_broker::Transport;
    let t = store().await;
    let queue = super::super::queue::EmbeddedQueue::new(&t);
    let queues = vec!["q1".to_string()];
    let mut inbox = queue.consume(&queues, 2, "t").await.unwrap();
    // A first delivery does the inbox's housekeeping (a flushed write; the
    // next one is seconds away).
    queue.declare("q1").await.unwrap();
    let warm = scheduler_core::Message::StartEtl { run_id: Uuid::now_v7() };
    queue.publish("q1", &warm).await.unwrap();
    inbox.next().await.unwrap().unwrap().ack().await.unwrap();
    let flusher = t.turn().await.0.flusher.clone();
    // The flusher's role held: no flush ends until the test lets it.
    let role = super::Role {
        held: Some(flusher.role.lock().await),
        ended: &flusher.flushes_ended,
    };
    // The inbox waits for the bell (it also looks once a second on its own).
    let waiting = tokio::spawn(async move {
        let delivered = inbox.next().await;
        (inbox, delivered)
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let run = super::super::test_runs::new_run(sequence);
    let message = scheduler_core::Message::StartEtl { run_id: run.id };
    let sending = {
        let (queue, queues, message) = (queue.clone(), queues.clone(), message.clone());
        tokio::spawn(async move {
            match publish {
                true => queue.publish("q1", &message).await.map_err(|e| e.to_string()),
                false => match queue.record_and_start(&run, &queues).await {
                    Ok(crate::Admitted::Queued) => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            }
        })
    };
    let (inbox, delivered) = tokio::time::timeout(std::time::Duration::from_millis(600), waiting)
        .await
        .expect("the bell did not ring while the message's commit waited for its flush")
        .unwrap();
    let delivered = delivered.unwrap().unwrap();
    assert_eq!(scheduler_core::Message::decode(&delivered.data).unwrap(), message);
    // Well past the bell's wake-up: still waiting for its flush.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!sending.is_finished(), "returned before its commit was flushed");
    // The message's commit is among these (it was delivered).
    let (committed, flushed, _, _) = flusher.state().await;
    assert!(flushed < committed, "nothing was flushed while the role was held");
    drop(role);
    tokio::time::timeout(std::time::Duration::from_secs(5), sending)
        .await
        .expect("did not return once the flush could run")
        .unwrap()
        .unwrap();
    let (_, flushed, _, _) = flusher.state().await;
    assert!(flushed >= committed, "returned before its commit was flushed");
    delivered.ack().await.unwrap();
    inbox.close().await;
}
