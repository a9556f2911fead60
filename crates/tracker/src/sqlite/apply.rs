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

use super::apply_sql::{
    CLOSE, HEALTHCHECK, QueuedRow, RunRow, close_values, move_sql, queue_sql, queue_values, read_sql, read_values,
    written,
};
use super::inline::{execute, first, int, opt, text, time, uuid};
use super::{Embedded, Turn, now};
use crate::Result;
use crate::apply::{ClaimFor, Close, Write, Written};
use crate::executions::ExecResult;
use crate::runs::strip_nul;
use chrono::{DateTime, Utc};
use rusqlite::TransactionBehavior;
use scheduler_core::RunState;
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
    let group = turn
        .inline(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut results = Vec::with_capacity(batch.len());
            for p in &batch {
                if batch.len() == 1 {
                    // Alone: no savepoint; a write that fails is not
                    // committed (the transaction rolls back when dropped).
                    let result = apply_on(&tx, &p.write.as_write());
                    let failed = result.is_err();
                    results.push(result);
                    if failed {
                        return Ok(results);
                    }
                    continue;
                }
                tx.execute_batch("SAVEPOINT w")?;
                let result = apply_on(&tx, &p.write.as_write());
                if result.is_err() {
                    tx.execute_batch("ROLLBACK TO w")?;
                }
                tx.execute_batch("RELEASE w")?;
                results.push(result);
            }
            tx.commit()?;
            Ok(results)
        })
        .await;
    match group {
        Ok(results) => {
            for (p, result) in batch.into_iter().zip(results) {
                let _ = p.answer.send(Answer::Written(Box::new(result)));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(p) = batch.into_iter().next() {
                let _ = p.answer.send(Answer::Written(Box::new(Err(e))));
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
    t.turn()
        .await
        .inline(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let written = apply_on(&tx, w)?;
            tx.commit()?;
            Ok(written)
        })
        .await
}

static READ: LazyLock<String> = LazyLock::new(|| read_sql(""));
static MOVE: LazyLock<String> = LazyLock::new(move_sql);
static QUEUE: LazyLock<String> = LazyLock::new(|| queue_sql(""));

/// [`apply_write`] on the inline connection, inside the caller's `BEGIN
/// IMMEDIATE` transaction.
pub(crate) fn apply_on(conn: &rusqlite::Connection, w: &Write<'_>) -> Result<Written> {
    let now = now();
    let plan = w.plan;
    let delayed = plan.queue.and_then(|q| q.delay);

    // 1. Close.
    if let Some(close) = w.close
        && !close_execution(conn, w.run_id, close, now)?
    {
        return Ok(Written::default());
    }

    // 2. Move, or read.
    let step = plan.queue.map(|q| q.step);
    let run = match plan.run {
        Some(m) => {
            let values = [
                uuid(w.run_id),
                opt(step, int),
                text(m.from.as_str()),
                text(m.to.as_str()),
                opt(plan.failure.as_ref().map(|f| f.step), int),
                opt(plan.failure.as_ref().map(|f| strip_nul(&f.reason)), text),
                time(now),
            ];
            first(conn, &MOVE, &values, RunRow::inline)?
        }
        // Read, not written: updating the run on every step would rewrite
        // its row and every index on it.
        None => first(conn, &READ, &read_values(w.run_id, step), RunRow::inline)?,
    };
    let Some(run) = run else {
        return Ok(Written {
            closed: true,
            ..Written::default()
        });
    };

    // 3. A run moved to `canceled` takes its queued executions with it.
    if plan.run.is_some_and(|m| m.to == RunState::Canceled) {
        execute(
            conn,
            "UPDATE executions SET state = 'canceled', finished_at = $2 WHERE run_id = $1 AND state = 'queued'",
            &[uuid(w.run_id), time(now)],
        )?;
    }

    // 4. Queue.
    let queued = match plan.queue {
        None => None,
        Some(q) => first(
            conn,
            &QUEUE,
            &queue_values(w.run_id, q, w.claim_for, now),
            QueuedRow::inline,
        )?,
    };

    // 5. Events.
    let retrying = matches!(w.close, Some(Close::Finish { .. })) && delayed.is_some();
    if retrying
        && plan.run.is_none()
        && let (Some(q), Some(Close::Finish { key, result, .. }), Some(queue)) = (plan.queue, w.close, &queued)
    {
        execute(
            conn,
            "INSERT INTO events (kind, sequence, run_id, step, attempt, message, detail, at)
             SELECT 'step_retrying', sequence, id, $2, $3, $4,
                    json_patch('{}', json_object(
                        'module', $5, 'retry', $6, 'next_attempt', $7,
                        'retries', json_extract(snapshot, '$.steps[' || $8 || '].retry.retries'),
                        'due_at', $9, 'exit_code', $10)),
                    $11
               FROM runs WHERE id = $1",
            &[
                uuid(w.run_id),
                int(key.step),
                int(key.attempt),
                opt(result.error.as_deref().map(strip_nul), text),
                text(queue.module.as_str()),
                int(queue.retry),
                int(q.attempt),
                int(q.step),
                opt(delayed.map(|d| after(now, d)), time),
                opt(result.exit_code, int),
                time(now),
            ],
        )?;
    }
    if let Some(m) = plan.run {
        move_events(conn, w, m.from, m.to, &run.sequence, now)?;
    }

    Ok(written(run, queued))
}

/// Closes a running execution: the holder's result, or recovery's
/// `abandoned` once its lease expired. True if it applied.
fn close_execution(
    conn: &rusqlite::Connection,
    run_id: uuid::Uuid,
    close: Close<'_>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let finished = matches!(close, Close::Finish { .. });
    let key = match close {
        Close::Finish { key, .. } | Close::Abandon { key, .. } => key,
    };
    let started_at = first(conn, CLOSE, &close_values(run_id, close, now), |row| {
        Ok(row.get::<_, Option<String>>(0)?)
    })?;
    let Some(started_at) = started_at else {
        return Ok(false);
    };
    if !finished {
        // PostgreSQL computes an abandoned attempt's duration in SQL
        // (`now() - started_at`); times here are computed in Rust.
        let started_at = started_at.and_then(|s| DateTime::parse_from_rfc3339(&s).ok());
        let ms = started_at.map(|s| now.signed_duration_since(s).num_milliseconds());
        execute(
            conn,
            "UPDATE executions SET duration_ms = $4 WHERE run_id = $1 AND step = $2 AND attempt = $3",
            &[uuid(run_id), int(key.step), int(key.attempt), opt(ms, int)],
        )?;
    }
    Ok(true)
}

/// The events of a run move (PostgreSQL's `MOVE_EVENTS`): a run that
/// failed, a sequence green again after failing (`failing_sequences` holds
/// the streak; the success deletes its row), and the healthcheck pings of a
/// run whose snapshot names a `healthcheck_url` (start from `queued`,
/// success, fail). Called only after the move applied.
fn move_events(
    conn: &rusqlite::Connection,
    w: &Write<'_>,
    from: RunState,
    to: RunState,
    sequence: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let plan = w.plan;
    let failed_step = plan.failure.as_ref().map(|f| f.step);
    let reason = plan.failure.as_ref().map(|f| strip_nul(&f.reason));
    if to == RunState::Failed {
        execute(
            conn,
            "INSERT INTO failing_sequences AS fs (sequence, since, failures, last_run) VALUES ($1, $2, 1, $3)
             ON CONFLICT (sequence) DO UPDATE SET failures = fs.failures + 1, last_run = excluded.last_run",
            &[text(sequence), time(now), uuid(w.run_id)],
        )?;
        execute(
            conn,
            "INSERT INTO events (kind, sequence, run_id, step, message, detail, at)
             SELECT 'run_failed', sequence, id, $2, $3,
                    json_patch('{}', json_object('module', json_extract(snapshot, '$.steps[' || $2 || '].module_name'),
                                                 'schedule', json_extract(snapshot, '$.schedule'))),
                    $4
               FROM runs WHERE id = $1",
            &[
                uuid(w.run_id),
                opt(failed_step, int),
                opt(reason.clone(), text),
                time(now),
            ],
        )?;
    }
    if to == RunState::Succeeded {
        let green = first(
            conn,
            "DELETE FROM failing_sequences WHERE sequence = $1 RETURNING since, failures",
            &[text(sequence)],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
        )?;
        if let Some((since, failures)) = green {
            execute(
                conn,
                "INSERT INTO events (kind, sequence, run_id, detail, at)
                 VALUES ('run_recovered', $1, $2, json_object('failing_since', $3, 'failures', $4), $5)",
                &[text(sequence), uuid(w.run_id), text(since), int(failures), time(now)],
            )?;
        }
    }
    if (from, to) == (RunState::Queued, RunState::Running) || matches!(to, RunState::Succeeded | RunState::Failed) {
        let kind = match to {
            RunState::Running => "healthcheck_start",
            RunState::Succeeded => "healthcheck_success",
            _ => "healthcheck_fail",
        };
        execute(
            conn,
            HEALTHCHECK,
            &[
                uuid(w.run_id),
                text(kind),
                opt(reason.filter(|_| to == RunState::Failed), text),
                time(now),
            ],
        )?;
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
