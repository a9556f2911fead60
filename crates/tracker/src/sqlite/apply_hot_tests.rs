//! The step's write script (`apply_hot.rs`) against the general path it
//! replaces for that shape: the same rows and the same answer; nothing
//! written when the close does not apply; nothing queued for a run no
//! longer running; nothing left open when a statement fails midway.

use super::apply::apply_on;
use super::apply_hot::{apply_hot, is_hot};
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
    assert!(is_hot(w));
    t.turn().await.script(async |c| apply_hot(c, w).await).await
}

async fn general(t: &Embedded, w: &Write<'_>) -> crate::Result<Written> {
    let mut tx = t.begin().await?;
    let written = apply_on(&mut tx, w).await?;
    tx.commit().await?;
    Ok(written)
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
async fn the_script_writes_what_the_general_path_writes_and_answers_the_same() {
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
        let (a, b) = (started(&t, worker).await, started(&t, worker).await);
        let by_script = hot(&t, &write(a, worker, &r, &plan, claim_for)).await.unwrap();
        let by_general = general(&t, &write(b, worker, &r, &plan, claim_for)).await.unwrap();
        assert_eq!(format!("{by_script:?}"), format!("{by_general:?}"));
        assert!(by_script.closed && by_script.run && by_script.queued, "{by_script:?}");
        assert_eq!(by_script.claimed.is_some(), claim);
        let (rows_a, rows_b) = (rows(&t, a).await, rows(&t, b).await);
        assert_eq!(rows_a, rows_b);
        assert_eq!(rows_a.len(), 2, "{rows_a:?}");
        // Replayed (a duplicate): the close no longer applies.
        let again = hot(&t, &write(a, worker, &r, &plan, claim_for)).await.unwrap();
        assert!(!again.closed, "{again:?}");
        assert_eq!(rows(&t, a).await, rows_a);
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
async fn a_script_that_fails_midway_is_rolled_back_and_the_connection_writes_again() {
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
    // The close (the script's second statement) went with it.
    assert_eq!(rows(&t, run).await, before);
    sqlx::query("DROP TRIGGER boom").execute(&t.pool).await.unwrap();
    // Nothing was left open: the next script begins its own transaction.
    let written = hot(&t, &write(run, worker, &r, &plan, None)).await.unwrap();
    assert!(written.closed && written.queued, "{written:?}");
}
