//! A step's write on the inline connection (`apply.rs`, `inline.rs`): the
//! close and the next step queued (claimed or not); nothing written when
//! the close does not apply; nothing queued for a run no longer running;
//! nothing left open when a statement fails midway; a lock held by another
//! process waited for past the inline wait.

use super::apply::apply_write;
use super::{Embedded, EmbeddedConfig};
use crate::{ClaimFor, Close, ExecKey, ExecResult, Write, Written};
use scheduler_core::ExecState;
use scheduler_core::machine::{Plan, StepAttempt};
use std::time::Duration;
use uuid::Uuid;

const QUEUES: &[&str] = &["q1"];

async fn store() -> Embedded {
    let dir = std::env::temp_dir().join(format!("apply_hot_{}", Uuid::now_v7().simple()));
    Embedded::open(&EmbeddedConfig::new(dir.join("scheduler.db")))
        .await
        .unwrap()
}

/// A three-step run, started, its first step claimed by `worker`.
async fn started(t: &Embedded, worker: Uuid) -> Uuid {
    let run = super::test_runs::new_run(
        r#"[{"module_name": "m", "input": "", "output": "a", "conf": ""},
            {"module_name": "n", "input": "a", "output": "b", "conf": "c.json"},
            {"module_name": "m", "input": "b", "output": "", "conf": ""}]"#,
    );
    super::test_runs::start_claimed(t, &run, worker).await;
    run.id
}

fn result() -> ExecResult {
    ExecResult {
        exit_code: Some(0),
        duration_ms: 12,
        stdout_tail: "done\n".into(),
        stdout_bytes: 5,
        pid: Some(4242),
        warnings: vec!["its input was missing".into()],
        ..ExecResult::new(ExecState::Succeeded)
    }
}

/// Step 0's result, step 1 queued (claimed by `worker` when `claim`).
fn next_step() -> Plan {
    Plan {
        queue: Some(StepAttempt::at(1, 1)),
        ..Plan::default()
    }
}

async fn hot(t: &Embedded, w: &Write<'_>) -> crate::Result<Written> {
    apply_write(t, w).await
}

/// The run's executions, every column but the run's id and the times
/// (`lease_until` as whether it is set).
async fn rows(t: &Embedded, run_id: Uuid) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT json_array(step, attempt, module, argv, timeout_secs, state, exit_code, lease_until IS NOT NULL,
                           queue, stdout_tail, warnings, pid, retry, hex(worker_id), error, duration_ms)
           FROM executions WHERE run_id = ? ORDER BY step, attempt",
    )
    .bind(run_id)
    .fetch_all(&t.pool)
    .await
    .unwrap();
    rows.into_iter().map(|(r,)| r).collect()
}

fn write<'a>(
    run_id: Uuid,
    worker: Uuid,
    result: &'a ExecResult,
    plan: &'a Plan,
    claim: Option<ClaimFor<'a>>,
) -> Write<'a> {
    Write {
        run_id,
        close: Some(Close::Finish {
            key: ExecKey {
                run_id,
                step: 0,
                attempt: 1,
            },
            worker_id: worker,
            result,
        }),
        plan,
        claim_for: claim,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_s_write_closes_it_and_queues_the_next_claimed_or_not_and_a_replay_writes_nothing() {
    let t = store().await;
    let worker = Uuid::now_v7();
    let queues: Vec<String> = QUEUES.iter().map(|q| q.to_string()).collect();
    let (r, plan) = (result(), next_step());
    for claim in [true, false] {
        let claim_for = claim.then_some(ClaimFor {
            worker_id: worker,
            lease: Duration::from_secs(30),
            queues: &queues,
        });
        let run = started(&t, worker).await;
        let written = hot(&t, &write(run, worker, &r, &plan, claim_for)).await.unwrap();
        assert!(written.closed && written.run && written.queued, "{written:?}");
        assert_eq!(written.claimed.is_some(), claim);
        if let Some(c) = &written.claimed {
            assert_eq!((c.module.as_str(), c.argv.len(), c.step_count), ("n", 7, 3), "{c:?}");
        }
        let rows = rows(&t, run).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        let hex = worker.simple().to_string().to_uppercase();
        assert_eq!(
            rows[0],
            format!(
                r#"[0,1,"m","[\"./m.sh\",\"--output\",\"a\"]",null,"succeeded",0,0,"q1","done\n","[\"its input was missing\"]",4242,0,"{hex}",null,12]"#
            )
        );
        let state = if claim { "running" } else { "queued" };
        assert!(rows[1].starts_with(r#"[1,1,"n","#), "{rows:?}");
        assert!(
            rows[1].contains(&format!(r#""{state}",null,{},"q1""#, claim as u8)),
            "{rows:?}"
        );
        // Replayed (a duplicate): the close no longer applies.
        let again = hot(&t, &write(run, worker, &r, &plan, claim_for)).await.unwrap();
        assert!(!again.closed, "{again:?}");
        assert_eq!(super::apply_tests::rows(&t, run).await, rows);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_does_not_apply_writes_nothing() {
    let t = store().await;
    let (worker, other) = (Uuid::now_v7(), Uuid::now_v7());
    let run = started(&t, worker).await;
    let before = rows(&t, run).await;
    let (r, plan) = (result(), next_step());
    let written = hot(&t, &write(run, other, &r, &plan, None)).await.unwrap();
    assert!(!written.closed && !written.run && !written.queued, "{written:?}");
    assert_eq!(rows(&t, run).await, before, "another worker's result was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_no_longer_running_gets_its_step_closed_and_nothing_queued() {
    let t = store().await;
    let worker = Uuid::now_v7();
    let run = started(&t, worker).await;
    sqlx::query("UPDATE runs SET state = 'canceled' WHERE id = ?")
        .bind(run)
        .execute(&t.pool)
        .await
        .unwrap();
    let (r, plan) = (result(), next_step());
    let written = hot(&t, &write(run, worker, &r, &plan, None)).await.unwrap();
    assert!(written.closed && !written.run && !written.queued, "{written:?}");
    let rows = rows(&t, run).await;
    assert_eq!(rows.len(), 1, "a step was queued for a canceled run: {rows:?}");
    assert!(rows[0].contains("\"succeeded\""), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_write_that_fails_midway_is_rolled_back_and_the_connection_writes_again() {
    let t = store().await;
    let worker = Uuid::now_v7();
    let run = started(&t, worker).await;
    sqlx::query(
        "CREATE TRIGGER boom BEFORE INSERT ON executions WHEN NEW.step = 1 \
         BEGIN SELECT RAISE(ABORT, 'boom: no second step'); END",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let before = rows(&t, run).await;
    let (r, plan) = (result(), next_step());
    let err = hot(&t, &write(run, worker, &r, &plan, None)).await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    // The close (before the failing insert) went with it.
    assert_eq!(rows(&t, run).await, before);
    sqlx::query("DROP TRIGGER boom").execute(&t.pool).await.unwrap();
    // Nothing was left open: the next write begins its own transaction.
    let written = hot(&t, &write(run, worker, &r, &plan, None)).await.unwrap();
    assert!(written.closed && written.queued, "{written:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_process_past_the_inline_wait_is_waited_for_not_failed() {
    let t = store().await;
    let worker = Uuid::now_v7();
    let run = started(&t, worker).await;
    // Another process's writer: a connection of its own, holding SQLite's
    // write lock 50 ms, 25 times the inline wait.
    let other = rusqlite::Connection::open(t.path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let held = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        other.execute_batch("COMMIT").unwrap();
    });
    let started_at = std::time::Instant::now();
    let (r, plan) = (result(), next_step());
    let written = hot(&t, &write(run, worker, &r, &plan, None)).await.unwrap();
    assert!(written.closed && written.queued, "{written:?}");
    assert!(
        started_at.elapsed() >= Duration::from_millis(40),
        "{:?}",
        started_at.elapsed()
    );
    held.join().unwrap();
}
