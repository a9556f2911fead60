//! The embedded queue: the [`Transport`] of the zero-server mode, kept in the
//! same SQLite file as the record, in place of RabbitMQ.
//!
//! A message is a row of `queue_messages`: `ready` until an inbox takes it
//! (`taken`, with the inbox's id), deleted when acknowledged, `ready` again
//! when requeued, `dead` when dead-lettered (kept for an operator, as
//! `Q.dead` keeps them with RabbitMQ). A message taken more than
//! [`DELIVERY_LIMIT`] times (every consumer that took it died) is
//! dead-lettered instead of being handed out again: a poison message stops
//! there, as with a quorum queue's delivery limit.
//!
//! Waking up: a publish, once committed (before its flush, which it then
//! awaits: `record_and_start`), closes a write handle on the bell
//! file next to the store (`queue.bell`); every inbox watches it with
//! inotify, so a new message is taken within a millisecond or two, and an
//! idle inbox sleeps. It also looks every [`POLL`] on its own, which covers
//! what no bell announces: the messages of a consumer that died, and a bell
//! lost to a full inotify queue.
//!
//! A consumer that dies gives its messages back: each inbox refreshes its
//! row in `queue_consumers`; a row not refreshed for [`CONSUMER_TTL`] is
//! removed by whichever inbox looks next, and its taken messages are `ready`
//! again (the record of truth makes a duplicate delivery harmless).
//!
//! Slots: an inbox hands out a message only while its unsettled deliveries
//! plus its busy slots are fewer than its concurrency, the same promise as
//! RabbitMQ's "prefetch = free slots".

use super::{Durability, Embedded, Unflushed, inline, now};
use crate::slots::{Admitted, NewRun};
use scheduler_broker::{Acker, BrokerError, Inbox, Incoming, SlotControl, Slots, Transport};
use scheduler_core::Message;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use uuid::Uuid;

type Result<T> = std::result::Result<T, BrokerError>;

/// How often an idle inbox looks without being rung.
pub const POLL: Duration = Duration::from_secs(1);
/// A consumer silent this long is dead: its messages go back to the queue.
pub const CONSUMER_TTL: Duration = Duration::from_secs(15);
/// How often an inbox refreshes its consumer row.
const REFRESH: Duration = Duration::from_secs(3);
/// Deliveries of one message after which it is dead-lettered.
pub const DELIVERY_LIMIT: i64 = 20;

fn store_err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Store(e.to_string())
}

/// Declares queue `?1` (at `?2`); a queue declared already stays as it is.
const DECLARE: &str = "INSERT INTO queues (name, declared_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING";
/// Stores message body `?1` (at `?2`) on queue `?3`, if the queue exists.
const STORE: &str =
    "INSERT INTO queue_messages (queue, body, published_at) SELECT name, ?, ? FROM queues WHERE name = ?";

/// Notes run `?2` published at `?1`.
const PUBLISHED: &str = "UPDATE runs SET published_at = ? WHERE id = ?";

/// The embedded queue, in the store's file: it reads through the store's
/// pool and writes on its write connection (the write turn).
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    store: Embedded,
    bell: PathBuf,
    /// Queues this handle declared: a queue is declared once per handle, as
    /// a broker connection does (`Broker::declare`); a publish that finds
    /// its queue gone forgets it.
    declared: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl EmbeddedQueue {
    pub fn new(store: &Embedded) -> EmbeddedQueue {
        let bell = store
            .path()
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("queue.bell");
        EmbeddedQueue {
            store: store.clone(),
            bell,
            declared: Arc::default(),
        }
    }

    /// Wakes every inbox watching the bell.
    fn ring(&self) {
        // Closing a handle opened for writing is the IN_CLOSE_WRITE the
        // inboxes wait for; the file stays empty.
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.bell)
        {
            tracing::debug!(error = %e, bell = %self.bell.display(), "cannot ring the queue's bell; consumers look within a second anyway");
        }
    }

    fn declared(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.declared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores bytes as they are on `queue` (tests of malformed messages).
    ///
    /// As for a start (`record_and_start`): the bell rings once the message
    /// is committed, and this returns once it is flushed.
    pub async fn publish_raw(&self, queue: &str, body: &[u8]) -> Result<()> {
        let (stored, unflushed) = self
            .store
            .turn()
            .await
            .write_unflushed(async |c| sqlx::query(STORE).bind(body).bind(now()).bind(queue).execute(c).await)
            .await
            .map_err(store_err)?;
        if stored.rows_affected() == 0 {
            // Nothing stored, nothing to flush.
            self.declared().remove(queue);
            return Err(BrokerError::Unroutable { queue: queue.into() });
        }
        self.ring();
        unflushed.flushed().await;
        Ok(())
    }

    /// Whether this queue is `store`'s own: the same file, through the same
    /// handle (its write turn).
    pub fn shares(&self, store: &Embedded) -> bool {
        self.store.same_handle(store)
    }

    /// Records `run` and, when its sequence admits it (`queued`), its
    /// `start_etl` in one transaction: the run and the message its start
    /// needs commit together, with one flush, so no crash leaves a run
    /// recorded but unpublished (the window recovery closes in the
    /// distributed mode). `queues` (the run's own first) are declared in it
    /// too.
    ///
    /// The bell rings once the transaction commits, before its flush, and
    /// this returns once the flush ends: a worker takes the message while
    /// the log is flushed. No module of the run starts before the run is
    /// on disk all the same: the worker's claim of its first step waits for
    /// a flush of its own, later in the log, which covers this commit (the
    /// log is flushed in order).
    pub async fn record_and_start(&self, run: &NewRun, queues: &[String]) -> crate::Result<Admitted> {
        // The run's own queue every time: declared before by this handle,
        // its row may have gone since.
        let declaring: Vec<&String> = {
            let declared = self.declared();
            queues
                .iter()
                .filter(|q| **q == run.queue || !declared.contains(*q))
                .collect()
        };
        if !run.snapshot.concurrency.is_limited() {
            let unflushed = self.record_and_start_inline(run, &declaring).await?;
            self.declared().extend(declaring.into_iter().cloned());
            self.ring();
            unflushed.flushed().await;
            return Ok(Admitted::Queued);
        }
        let mut tx = self.store.begin().await?;
        let at = now();
        for queue in &declaring {
            sqlx::query(DECLARE)
                .bind(queue.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        let admitted = super::slots::admit_in(&mut tx, run).await?;
        let start = admitted == Admitted::Queued;
        if start {
            sqlx::query(STORE)
                .bind(Message::StartEtl { run_id: run.id }.encode())
                .bind(at)
                .bind(&run.queue)
                .execute(&mut *tx)
                .await?;
            sqlx::query(PUBLISHED).bind(at).bind(run.id).execute(&mut *tx).await?;
        }
        let unflushed = tx.commit_unflushed().await?;
        self.declared().extend(declaring.into_iter().cloned());
        if start {
            self.ring();
        }
        unflushed.flushed().await;
        Ok(admitted)
    }

    /// [`EmbeddedQueue::record_and_start`] of a run whose sequence has no
    /// concurrency limit (always admitted: nothing to read first), on the
    /// inline connection (`inline.rs`): the same statements in one
    /// `BEGIN IMMEDIATE` transaction, run on the caller's thread instead of
    /// five hops to sqlx's connection thread and back. Many runs started
    /// at once by one process (the UI, the beat, a burst of `start`s through
    /// the API, the bench) took most of their CPU in those hops.
    async fn record_and_start_inline(&self, run: &NewRun, declaring: &[&String]) -> crate::Result<Unflushed> {
        let body = Message::StartEtl { run_id: run.id }.encode();
        let ((), unflushed) = self
            .store
            .turn()
            .await
            .inline_unflushed(|c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let at = now();
                for queue in declaring {
                    inline::execute(&tx, DECLARE, &[inline::text(queue.as_str()), inline::time(at)])?;
                }
                super::slots::insert_queued_inline(&tx, run, at)?;
                let start = [
                    inline::Value::Blob(body.clone()),
                    inline::time(at),
                    inline::text(run.queue.as_str()),
                ];
                inline::execute(&tx, STORE, &start)?;
                inline::execute(&tx, PUBLISHED, &[inline::time(at), inline::uuid(run.id)])?;
                tx.commit()?;
                Ok(())
            })
            .await?;
        Ok(unflushed)
    }

    /// Messages dead-lettered on `queue` (for tools and tests).
    pub async fn dead_letters(&self, queue: &str) -> Result<Vec<Vec<u8>>> {
        let rows: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT body FROM queue_messages WHERE queue = ? AND state = 'dead' ORDER BY id")
                .bind(queue)
                .fetch_all(&self.store.pool)
                .await
                .map_err(store_err)?;
        Ok(rows.into_iter().map(|(b,)| b).collect())
    }
}

#[async_trait::async_trait]
impl Transport for EmbeddedQueue {
    async fn declare(&self, queue: &str) -> Result<()> {
        if self.declared().contains(queue) {
            return Ok(());
        }
        self.store
            .write(async |c| sqlx::query(DECLARE).bind(queue).bind(now()).execute(c).await)
            .await
            .map_err(store_err)?;
        self.declared().insert(queue.to_string());
        Ok(())
    }

    async fn publish(&self, queue: &str, message: &Message) -> Result<()> {
        self.publish_raw(queue, &message.encode()).await
    }

    async fn queue_depth(&self, queue: &str) -> Result<(u32, u32)> {
        let alive = now() - chrono::Duration::from_std(CONSUMER_TTL).unwrap_or_default();
        let (ready, consumers): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM queue_messages WHERE queue = ?1 AND state = 'ready'), \
                    (SELECT count(*) FROM queue_consumers c, json_each(c.queues) q \
                      WHERE q.value = ?1 AND c.seen_at > ?2)",
        )
        .bind(queue)
        .bind(alive)
        .fetch_one(&self.store.pool)
        .await
        .map_err(store_err)?;
        Ok((ready as u32, consumers as u32))
    }

    async fn consume(&self, queues: &[String], concurrency: u16, name: &str) -> Result<Box<dyn Inbox>> {
        for queue in queues {
            self.declare(queue).await?;
        }
        let bell = Bell::watch(&self.bell).map_err(|e| {
            tracing::warn!(error = %e, bell = %self.bell.display(), "cannot watch the queue's bell; looking every second instead");
            e
        });
        let inbox = EmbeddedInbox {
            queue: self.clone(),
            id: Uuid::now_v7(),
            name: name.to_string(),
            queues: serde_json::to_string(queues).map_err(store_err)?,
            bell: bell.ok(),
            flow: Arc::new(Flow {
                state: Mutex::new(FlowState {
                    concurrency,
                    busy: 0,
                    unsettled: 0,
                }),
                changed: Notify::new(),
            }),
            refreshed: None,
            stopped: false,
        };
        inbox.register().await?;
        Ok(Box::new(inbox))
    }

    async fn reconnect(&self) -> Result<()> {
        Ok(())
    }

    async fn close(&self) {}

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// inotify on the bell file.
struct Bell(AsyncFd<InotifyFd>);

struct InotifyFd(nix::sys::inotify::Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Bell {
    fn watch(path: &Path) -> Result<Bell> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(store_err)?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(store_err)?;
        inotify
            .add_watch(path, AddWatchFlags::IN_CLOSE_WRITE)
            .map_err(store_err)?;
        // `new` is deprecated for types whose fd might change or close under
        // it; `InotifyFd` owns its inotify fd for its whole life, so the
        // safe constructor is sound here (the replacement is `unsafe`).
        #[allow(deprecated)]
        let fd = AsyncFd::new(InotifyFd(inotify)).map_err(store_err)?;
        Ok(Bell(fd))
    }

    /// Waits for a ring, or `bound`.
    async fn wait(&self, bound: Duration) {
        let _ = tokio::time::timeout(bound, async {
            loop {
                let Ok(mut ready) = self.0.readable().await else {
                    return;
                };
                match ready.get_inner().0.read_events() {
                    Ok(_) => return,
                    Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}

struct FlowState {
    concurrency: u16,
    busy: u16,
    unsettled: u16,
}

struct Flow {
    state: Mutex<FlowState>,
    changed: Notify,
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlowState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_room(&self) -> bool {
        let s = self.lock();
        s.busy + s.unsettled < s.concurrency
    }

    fn settled(&self) {
        let mut s = self.lock();
        s.unsettled = s.unsettled.saturating_sub(1);
        drop(s);
        self.changed.notify_waiters();
    }
}

#[async_trait::async_trait]
impl SlotControl for Flow {
    /// The delivery keeps counting until it is settled (a moment later):
    /// counting it twice meanwhile is the safe side of the promise.
    async fn take(&self, _held: Option<u64>) -> Result<()> {
        self.lock().busy += 1;
        Ok(())
    }

    async fn free(&self) -> Result<()> {
        let mut s = self.lock();
        s.busy = s.busy.saturating_sub(1);
        drop(s);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn busy(&self) -> u16 {
        self.lock().busy
    }
}

struct EmbeddedInbox {
    queue: EmbeddedQueue,
    id: Uuid,
    name: String,
    /// The queues served, as a JSON array (bound to `json_each`).
    queues: String,
    bell: Option<Bell>,
    flow: Arc<Flow>,
    refreshed: Option<tokio::time::Instant>,
    stopped: bool,
}

impl EmbeddedInbox {
    /// Writes (or refreshes) this consumer's row; without a flush of its own
    /// (lost in a machine crash, the consumer is gone with the machine).
    async fn register(&self) -> Result<()> {
        self.queue
            .store
            .write_as(Durability::Logged, async |c| {
                sqlx::query(
                    "INSERT INTO queue_consumers (id, name, pid, queues, seen_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                )
                .bind(self.id)
                .bind(&self.name)
                .bind(std::process::id() as i64)
                .bind(&self.queues)
                .bind(now())
                .execute(c)
                .await
            })
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// Refreshes this consumer's row and gives back the messages of the
    /// consumers that stopped refreshing theirs.
    async fn housekeeping(&mut self) -> Result<()> {
        if self.refreshed.is_some_and(|at| at.elapsed() < REFRESH) {
            return Ok(());
        }
        self.register().await?;
        let dead_before = now() - chrono::Duration::from_std(CONSUMER_TTL).unwrap_or_default();
        let mut tx = self.queue.store.begin().await.map_err(store_err)?;
        let returned = sqlx::query(
            "UPDATE queue_messages SET state = 'ready', consumer = NULL, taken_at = NULL \
             WHERE state = 'taken' AND consumer IN (SELECT id FROM queue_consumers WHERE seen_at < ?)",
        )
        .bind(dead_before)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?
        .rows_affected();
        sqlx::query("DELETE FROM queue_consumers WHERE seen_at < ?")
            .bind(dead_before)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        if returned > 0 {
            tracing::warn!(
                messages = returned,
                "messages held by a consumer that stopped (its process died) are back in the queue"
            );
        }
        self.refreshed = Some(tokio::time::Instant::now());
        Ok(())
    }

    /// Takes the oldest ready message of the served queues, if any.
    async fn take_one(&self) -> Result<Option<(i64, Vec<u8>, i64)>> {
        loop {
            let taken = self
                .queue
                .store
                .turn()
                .await
                .inline_as(Durability::Logged, |c| {
                    inline::first(
                        c,
                        "UPDATE queue_messages SET state = 'taken', consumer = ?1, taken_at = ?2, deliveries = deliveries + 1 \
                         WHERE id = (SELECT id FROM queue_messages \
                                      WHERE state = 'ready' AND queue IN (SELECT value FROM json_each(?3)) \
                                      ORDER BY id LIMIT 1) \
                           AND state = 'ready' \
                         RETURNING id, body, deliveries",
                        &[inline::uuid(self.id), inline::time(now()), inline::text(self.queues.as_str())],
                        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?, row.get::<_, i64>(2)?)),
                    )
                })
                .await
                .map_err(store_err)?;
            let Some((id, body, deliveries)) = taken else {
                return Ok(None);
            };
            if deliveries > DELIVERY_LIMIT {
                self.queue
                    .store
                    .write(async |c| {
                        sqlx::query("UPDATE queue_messages SET state = 'dead', consumer = NULL WHERE id = ?")
                            .bind(id)
                            .execute(c)
                            .await
                    })
                    .await
                    .map_err(store_err)?;
                tracing::error!(
                    message_id = id,
                    deliveries,
                    "a message was delivered {DELIVERY_LIMIT} times without being settled (each consumer died); dead-lettered"
                );
                continue;
            }
            return Ok(Some((id, body, deliveries)));
        }
    }
}

#[async_trait::async_trait]
impl Inbox for EmbeddedInbox {
    async fn next(&mut self) -> Result<Option<Incoming>> {
        loop {
            if self.stopped {
                std::future::pending::<()>().await;
            }
            let flow = self.flow.clone();
            let changed = flow.changed.notified();
            if !flow.has_room() {
                changed.await;
                continue;
            }
            self.housekeeping().await?;
            if let Some((id, body, deliveries)) = self.take_one().await? {
                self.flow.lock().unsettled += 1;
                let acker = EmbeddedAcker {
                    id,
                    consumer: self.id,
                    flow: self.flow.clone(),
                    queue: self.queue.clone(),
                };
                let redeliveries = u32::try_from(deliveries - 1).unwrap_or(0);
                return Ok(Some(
                    Incoming::new(body, Box::new(acker)).with_redeliveries(redeliveries),
                ));
            }
            match &self.bell {
                Some(bell) => bell.wait(POLL).await,
                None => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn slots(&self) -> Slots {
        Slots::new(self.flow.clone())
    }

    async fn reopen(&mut self) -> Result<()> {
        self.refreshed = None;
        self.register().await
    }

    async fn stop(&mut self) -> Result<()> {
        self.stopped = true;
        Ok(())
    }

    async fn close(self: Box<Self>) {
        // Like a closed AMQP channel: what this consumer holds unsettled goes
        // back to the queue.
        let back = self
            .queue
            .store
            .write(async |c| {
                sqlx::query(
                    "UPDATE queue_messages SET state = 'ready', consumer = NULL, taken_at = NULL \
             WHERE state = 'taken' AND consumer = ?",
                )
                .bind(self.id)
                .execute(c)
                .await
            })
            .await;
        let _ = self
            .queue
            .store
            .write(async |c| {
                sqlx::query("DELETE FROM queue_consumers WHERE id = ?")
                    .bind(self.id)
                    .execute(c)
                    .await
            })
            .await;
        if back.is_ok_and(|r| r.rows_affected() > 0) {
            self.queue.ring();
        }
    }
}

struct EmbeddedAcker {
    id: i64,
    consumer: Uuid,
    flow: Arc<Flow>,
    queue: EmbeddedQueue,
}

impl EmbeddedAcker {
    /// Settles the message. An ack or a requeue commits without a flush of
    /// its own: lost in a machine crash, the message is delivered again and
    /// its claim drops it (see `writer.rs`). A dead-lettering is flushed.
    async fn settle(&self, sql: &'static str, durability: Durability) -> Result<()> {
        let result = self
            .queue
            .store
            .turn()
            .await
            .inline_as(durability, |c| {
                inline::execute(c, sql, &[inline::Value::Integer(self.id), inline::uuid(self.consumer)])
            })
            .await
            .map_err(store_err);
        self.flow.settled();
        result.map(|_| ())
    }
}

#[async_trait::async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self) -> Result<()> {
        self.settle(
            "DELETE FROM queue_messages WHERE id = ? AND consumer = ? AND state = 'taken'",
            Durability::Logged,
        )
        .await
    }

    async fn requeue(&self) -> Result<()> {
        self.settle(
            "UPDATE queue_messages SET state = 'ready', consumer = NULL, taken_at = NULL \
             WHERE id = ? AND consumer = ? AND state = 'taken'",
            Durability::Logged,
        )
        .await?;
        self.queue.ring();
        Ok(())
    }

    /// A requeue whose delivery does not count toward [`DELIVERY_LIMIT`]:
    /// the consumer never worked on it.
    async fn put_back(&self, _data: &[u8]) -> Result<()> {
        self.settle(
            "UPDATE queue_messages SET state = 'ready', consumer = NULL, taken_at = NULL, \
             deliveries = MAX(deliveries - 1, 0) WHERE id = ? AND consumer = ? AND state = 'taken'",
            Durability::Logged,
        )
        .await?;
        self.queue.ring();
        Ok(())
    }

    async fn dead_letter(&self) -> Result<()> {
        self.settle(
            "UPDATE queue_messages SET state = 'dead', consumer = NULL \
             WHERE id = ? AND consumer = ? AND state = 'taken'",
            Durability::Flushed,
        )
        .await
    }
}
