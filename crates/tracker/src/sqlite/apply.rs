//! Mirrors `crate::apply` (PostgreSQL) for the embedded store: writing a
//! decision of the state machine whole or not at all.
//!
//! PostgreSQL writes it as one statement of data-modifying CTEs. SQLite has
//! none, so here it is one `BEGIN IMMEDIATE` transaction of the same parts,
//! in the same order, each a statement of its own; the atomicity is the
//! same (the transaction commits every part that applied, or, on an error,
//! none), and so is the rule between the parts: a part that does not apply
//! means nothing after it applies.
//!
//! 1. **close** the execution (compare-and-set on `running`, guarded by the
//!    worker id or by the lease being expired). Not applied: nothing else.
//! 2. **move** the run `from -> to` (compare-and-set), or, without a move,
//!    **read** it if it is `running`. Neither: the close (if any) is all
//!    that is written.
//! 3. a move to `canceled` cancels the run's queued executions (before the
//!    insert, as PostgreSQL's CTE sees the table as it was before the
//!    statement: the execution queued by this write is never among them).
//! 4. **queue** the next execution from the run's snapshot, optionally
//!    already claimed (`ON CONFLICT DO NOTHING`: a duplicate is a no-op).
//! 5. the events: `step_retrying` when the queued execution is a delayed
//!    retry of the attempt just closed (PostgreSQL's shape `CloseRetry`:
//!    only without a move); a run's `run_failed`, `run_recovered` and
//!    healthcheck pings when it moved (`MOVE_EVENTS`). The hot path (close,
//!    read, queue) issues none of these statements.

use super::apply_sql::{CLOSE, HEALTHCHECK, QueuedRow, RunRow, bind_close, move_sql, queue_sql, read_sql, written};
use super::{Embedded, Turn, now};
use crate::Result;
use crate::apply::{ClaimFor, Close, Write, Written};
use crate::executions::ExecResult;
use crate::runs::strip_nul;
use chrono::{DateTime, Utc};
use scheduler_core::RunState;
use sqlx::types::Json;
use sqlx::{Row, SqliteConnection};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::oneshot;

/// Writes `w` and returns once it is committed, in a group commit with the
/// writes of this process's other tasks that wait for the write turn at
/// the same time: the first to get the turn writes every waiting one, each
/// in a savepoint of one transaction, and commits them with one fsync (a
/// worker at concurrency 16 has several steps finishing at once; each
/// commit on its own cost an fsync, and the fsyncs set the pace). No write
/// waits for company: a task alone writes alone, at once.
///
/// A write that fails is rolled back to its savepoint and fails alone. When
/// the transaction itself fails (begin, a savepoint, the commit), nothing
/// of it was written: the leader gets the error, and each of the others
/// writes again on its own, so it sees its own outcome.
pub(crate) async fn apply_write(t: &Embedded, w: &Write<'_>) -> Result<Written> {
    let (answer, mut rx) = oneshot::channel();
    t.lock_batch().push(Pending {
        write: OwnedWrite::from(w),
        answer,
    });
    let turn = t.turn().await;
    let answered = match rx.try_recv() {
        // A leader wrote it while this task waited for the turn.
        Ok(answer) => answer,
        Err(_) => {
            // Still waiting in the batch: this task leads (its own write is
            // among those it takes: a leader answers before it gives the
            // turn back).
            let batch: Vec<Pending> = {
                let mut pending = t.lock_batch();
                let n = pending.len().min(BATCH_MAX);
                pending.drain(..n).collect()
            };
            lead(turn, batch).await;
            rx.await.unwrap_or(Answer::Alone)
        }
    };
    match answered {
        Answer::Written(result) => *result,
        Answer::Alone => apply_alone(t, w).await,
    }
}

/// At most this many writes in one group commit.
const BATCH_MAX: usize = 64;

/// A write waiting for its turn, owned so that another task may write it.
pub(crate) struct Pending {
    write: OwnedWrite,
    answer: oneshot::Sender<Answer>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("run_id", &self.write.run_id).finish()
    }
}

enum Answer {
    Written(Box<Result<Written>>),
    /// The group's transaction failed, nothing of it was written: write
    /// again alone.
    Alone,
}

/// [`Write`] with what it borrows owned.
struct OwnedWrite {
    run_id: uuid::Uuid,
    close: Option<OwnedClose>,
    plan: scheduler_core::machine::Plan,
    claim_for: Option<(uuid::Uuid, Duration, Vec<String>)>,
}

enum OwnedClose {
    Finish {
        key: crate::executions::ExecKey,
        worker_id: uuid::Uuid,
        result: Box<ExecResult>,
    },
    Abandon {
        key: crate::executions::ExecKey,
        reason: String,
    },
}

impl OwnedWrite {
    fn from(w: &Write<'_>) -> OwnedWrite {
        OwnedWrite {
            run_id: w.run_id,
            close: w.close.map(|c| match c {
                Close::Finish { key, worker_id, result } => OwnedClose::Finish {
                    key,
                    worker_id,
                    result: Box::new(result.clone()),
                },
                Close::Abandon { key, reason } => OwnedClose::Abandon {
                    key,
                    reason: reason.to_string(),
                },
            }),
            plan: w.plan.clone(),
            claim_for: w.claim_for.map(|c| (c.worker_id, c.lease, c.queues.to_vec())),
        }
    }

    fn as_write(&self) -> Write<'_> {
        Write {
            run_id: self.run_id,
            close: self.close.as_ref().map(|c| match c {
                OwnedClose::Finish { key, worker_id, result } => Close::Finish {
                    key: *key,
                    worker_id: *worker_id,
                    result,
                },
                OwnedClose::Abandon { key, reason } => Close::Abandon { key: *key, reason },
            }),
            plan: &self.plan,
            claim_for: self.claim_for.as_ref().map(|(worker_id, lease, queues)| ClaimFor {
                worker_id: *worker_id,
                lease: *lease,
                queues,
            }),
        }
    }
}

/// Writes `batch` in one transaction (the caller holds the write turn) and
/// answers each.
async fn lead(turn: Turn, batch: Vec<Pending>) {
    if let [p] = &batch[..]
        && super::apply_hot::is_hot(&p.write.as_write())
    {
        let w = p.write.as_write();
        let result = turn.script(async |c| super::apply_hot::apply_hot(c, &w).await).await;
        if let Some(p) = batch.into_iter().next() {
            let _ = p.answer.send(Answer::Written(Box::new(result)));
        }
        return;
    }
    let mut results = Vec::with_capacity(batch.len());
    let group = async {
        let mut tx = turn.begin().await?;
        for p in &batch {
            if batch.len() == 1 {
                // Alone: no savepoint; a write that fails is not committed
                // (the transaction rolls back when dropped).
                let result = apply_on(&mut tx, &p.write.as_write()).await;
                let failed = result.is_err();
                results.push(result);
                if failed {
                    return Ok(());
                }
                continue;
            }
            sqlx::query("SAVEPOINT w").execute(&mut *tx).await?;
            let result = apply_on(&mut tx, &p.write.as_write()).await;
            if result.is_err() {
                sqlx::query("ROLLBACK TO w").execute(&mut *tx).await?;
            }
            sqlx::query("RELEASE w").execute(&mut *tx).await?;
            results.push(result);
        }
        tx.commit().await
    };
    match group.await {
        Ok(()) => {
            for (p, result) in batch.into_iter().zip(results) {
                let _ = p.answer.send(Answer::Written(Box::new(result)));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(p) = batch.into_iter().next() {
                let _ = p.answer.send(Answer::Written(Box::new(Err(e.into()))));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, writes = batch.len(), "a group commit failed; each of its writes is written again alone");
            for p in batch {
                let _ = p.answer.send(Answer::Alone);
            }
        }
    }
}

/// [`apply_write`] in a transaction of its own.
async fn apply_alone(t: &Embedded, w: &Write<'_>) -> Result<Written> {
    let mut tx = t.begin().await?;
    let written = apply_on(&mut tx, w).await?;
    tx.commit().await?;
    Ok(written)
}

/// [`apply_write`] on a given connection, inside the caller's `BEGIN
/// IMMEDIATE` transaction.
pub(crate) async fn apply_on(conn: &mut SqliteConnection, w: &Write<'_>) -> Result<Written> {
    let now = now();
    let plan = w.plan;
    let delayed = plan.queue.and_then(|q| q.delay);

    // 1. Close.
    if let Some(close) = w.close
        && !close_execution(conn, w.run_id, close, now).await?
    {
        return Ok(Written::default());
    }

    // 2. Move, or read.
    let step = plan.queue.map(|q| q.step as i32);
    let run: Option<RunRow> = match plan.run {
        Some(m) => {
            static MOVE: LazyLock<String> = LazyLock::new(move_sql);
            sqlx::query_as(sqlx::AssertSqlSafe(MOVE.as_str()))
                .bind(w.run_id)
                .bind(step)
                .bind(m.from.as_str())
                .bind(m.to.as_str())
                .bind(plan.failure.as_ref().map(|f| f.step as i32))
                .bind(plan.failure.as_ref().map(|f| strip_nul(&f.reason)))
                .bind(now)
                .fetch_optional(&mut *conn)
                .await?
        }
        // Read, not written: updating the run on every step would rewrite
        // its row and every index on it.
        None => {
            static READ: LazyLock<String> = LazyLock::new(|| read_sql(""));
            sqlx::query_as(sqlx::AssertSqlSafe(READ.as_str()))
                .bind(w.run_id)
                .bind(step)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    let Some(run) = run else {
        return Ok(Written {
            closed: true,
            ..Written::default()
        });
    };

    // 3. A run moved to `canceled` takes its queued executions with it.
    if plan.run.is_some_and(|m| m.to == RunState::Canceled) {
        sqlx::query(
            "UPDATE executions SET state = 'canceled', finished_at = $2 WHERE run_id = $1 AND state = 'queued'",
        )
        .bind(w.run_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }

    // 4. Queue.
    let queued: Option<QueuedRow> = match plan.queue {
        None => None,
        Some(q) => {
            let claim = w.claim_for.filter(|_| delayed.is_none());
            let lease_until = claim.map(|c| after(now, c.lease));
            let due_at = delayed.map(|d| after(now, d));
            let queues = Json(claim.map_or(&[][..], |c| c.queues));
            static QUEUE: LazyLock<String> = LazyLock::new(|| queue_sql(""));
            sqlx::query_as(sqlx::AssertSqlSafe(QUEUE.as_str()))
                .bind(w.run_id)
                .bind(q.step as i32)
                .bind(q.attempt as i32)
                .bind(claim.map(|c| c.worker_id))
                .bind(lease_until)
                .bind(q.retry as i32)
                .bind(due_at)
                .bind(queues)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await?
        }
    };

    // 5. Events.
    let retrying = matches!(w.close, Some(Close::Finish { .. })) && delayed.is_some();
    if retrying
        && plan.run.is_none()
        && let (Some(q), Some(Close::Finish { key, result, .. }), Some(queue)) = (plan.queue, w.close, &queued)
    {
        sqlx::query(
            "INSERT INTO events (kind, sequence, run_id, step, attempt, message, detail, at)
             SELECT 'step_retrying', sequence, id, $2, $3, $4,
                    json_patch('{}', json_object(
                        'module', $5, 'retry', $6, 'next_attempt', $7,
                        'retries', json_extract(snapshot, '$.steps[' || $8 || '].retry.retries'),
                        'due_at', $9, 'exit_code', $10)),
                    $11
               FROM runs WHERE id = $1",
        )
        .bind(w.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(result.error.as_deref().map(strip_nul))
        .bind(&queue.module)
        .bind(queue.retry)
        .bind(q.attempt as i32)
        .bind(q.step as i32)
        .bind(delayed.map(|d| after(now, d)))
        .bind(result.exit_code)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(m) = plan.run {
        move_events(conn, w, m.from, m.to, &run.sequence, now).await?;
    }

    Ok(written(run, queued))
}

/// Closes a running execution: the holder's result, or recovery's
/// `abandoned` once its lease expired. True if it applied.
async fn close_execution(
    conn: &mut SqliteConnection,
    run_id: uuid::Uuid,
    close: Close<'_>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let finished = matches!(close, Close::Finish { .. });
    let key = match close {
        Close::Finish { key, .. } | Close::Abandon { key, .. } => key,
    };
    let closed = bind_close(sqlx::query(CLOSE), run_id, close, now)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = closed else {
        return Ok(false);
    };
    let started_at: Option<DateTime<Utc>> = row.try_get(0)?;
    if !finished {
        // PostgreSQL computes an abandoned attempt's duration in SQL
        // (`now() - started_at`); times here are computed in Rust.
        let ms = started_at.map(|s| (now - s).num_milliseconds());
        sqlx::query("UPDATE executions SET duration_ms = $4 WHERE run_id = $1 AND step = $2 AND attempt = $3")
            .bind(run_id)
            .bind(key.step as i32)
            .bind(key.attempt as i32)
            .bind(ms)
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

/// The events of a run move (PostgreSQL's `MOVE_EVENTS`): a run that
/// failed, a sequence green again after failing (`failing_sequences` holds
/// the streak; the success deletes its row), and the healthcheck pings of a
/// run whose snapshot names a `healthcheck_url` (start from `queued`,
/// success, fail). Called only after the move applied.
async fn move_events(
    conn: &mut SqliteConnection,
    w: &Write<'_>,
    from: RunState,
    to: RunState,
    sequence: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let plan = w.plan;
    let failed_step = plan.failure.as_ref().map(|f| f.step as i32);
    let reason = plan.failure.as_ref().map(|f| strip_nul(&f.reason));
    if to == RunState::Failed {
        sqlx::query(
            "INSERT INTO failing_sequences AS fs (sequence, since, failures, last_run) VALUES ($1, $2, 1, $3)
             ON CONFLICT (sequence) DO UPDATE SET failures = fs.failures + 1, last_run = excluded.last_run",
        )
        .bind(sequence)
        .bind(now)
        .bind(w.run_id)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO events (kind, sequence, run_id, step, message, detail, at)
             SELECT 'run_failed', sequence, id, $2, $3,
                    json_patch('{}', json_object('module', json_extract(snapshot, '$.steps[' || $2 || '].module_name'),
                                                 'schedule', json_extract(snapshot, '$.schedule'))),
                    $4
               FROM runs WHERE id = $1",
        )
        .bind(w.run_id)
        .bind(failed_step)
        .bind(reason.clone())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if to == RunState::Succeeded {
        let green: Option<(String, i64)> =
            sqlx::query_as("DELETE FROM failing_sequences WHERE sequence = $1 RETURNING since, failures")
                .bind(sequence)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some((since, failures)) = green {
            sqlx::query(
                "INSERT INTO events (kind, sequence, run_id, detail, at)
                 VALUES ('run_recovered', $1, $2, json_object('failing_since', $3, 'failures', $4), $5)",
            )
            .bind(sequence)
            .bind(w.run_id)
            .bind(since)
            .bind(failures)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
    }
    if (from, to) == (RunState::Queued, RunState::Running) || matches!(to, RunState::Succeeded | RunState::Failed) {
        let kind = match to {
            RunState::Running => "healthcheck_start",
            RunState::Succeeded => "healthcheck_success",
            _ => "healthcheck_fail",
        };
        sqlx::query(HEALTHCHECK)
            .bind(w.run_id)
            .bind(kind)
            .bind(reason.filter(|_| to == RunState::Failed))
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `now` plus a lease or a delay (saturating: a span beyond chrono's range
/// ends at the latest time it holds).
pub(crate) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
