//! The embedded store's group commit ([`super::apply::apply_write`]):
//! writes that wait for the write turn together are committed together,
//! each as if alone.

use super::{Embedded, EmbeddedConfig};
use crate::{Close, ExecKey, ExecResult, NewRun, Store, Write};
use scheduler_core::machine::{Plan, RunMove};
use scheduler_core::{ExecState, RunState};
use std::time::Duration;
use uuid::Uuid;

fn new_run() -> NewRun {
    super::test_runs::new_run(r#"[{"module_name": "m", "input": "", "output": "", "conf": ""}]"#)
}

fn key(run_id: Uuid) -> ExecKey {
    ExecKey {
        run_id,
        step: 0,
        attempt: 1,
    }
}

fn succeeded() -> ExecResult {
    ExecResult {
        exit_code: Some(0),
        ..ExecResult::new(ExecState::Succeeded)
    }
}

/// The plan of a one-step run's end.
fn ending() -> Plan {
    Plan {
        run: Some(RunMove {
            from: RunState::Running,
            to: RunState::Succeeded,
        }),
        ..Plan::default()
    }
}

/// The write of a one-step run's end by the worker holding its execution.
fn finish<'a>(run_id: Uuid, worker_id: Uuid, result: &'a ExecResult, end: &'a Plan) -> Write<'a> {
    Write {
        run_id,
        close: Some(Close::Finish {
            key: key(run_id),
            worker_id,
            result,
        }),
        plan: end,
        claim_for: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_waiting_together_commit_together_and_one_that_fails_fails_alone() {
    let dir = std::env::temp_dir().join(format!("group_commit_{}", Uuid::now_v7().simple()));
    let t = Embedded::open(&EmbeddedConfig::new(dir.join("scheduler.db")))
        .await
        .unwrap();
    let worker = Uuid::now_v7();
    const N: usize = 12;
    const DOOMED: usize = 5;
    let runs: Vec<NewRun> = (0..N).map(|_| new_run()).collect();
    for run in &runs {
        super::test_runs::start_claimed(&t, run, worker).await;
    }
    // One run's end cannot be written.
    let hex: String = runs[DOOMED].id.as_bytes().iter().map(|b| format!("{b:02X}")).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER boom BEFORE UPDATE ON runs WHEN NEW.id = X'{hex}' AND NEW.state = 'succeeded' \
         BEGIN SELECT RAISE(ABORT, 'boom: this run cannot end'); END"
    )))
    .execute(&t.pool)
    .await
    .unwrap();

    // Every end waits for the turn this test holds: one group.
    let turn = t.turn().await;
    let tasks: Vec<_> = runs
        .iter()
        .map(|run| {
            let t = t.clone();
            let id = run.id;
            tokio::spawn(async move {
                let (ok, end) = (succeeded(), ending());
                t.apply(&finish(id, worker, &ok, &end)).await.map(|w| w.complete(&end))
            })
        })
        .collect();
    let waited = std::time::Instant::now();
    while t.lock_batch().len() < N {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the writes never all waited"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(turn);
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        let states = t.exec_states(key(runs[i].id)).await.unwrap();
        if i == DOOMED {
            let err = result.expect_err("the doomed run's end was written");
            assert!(err.to_string().contains("boom"), "{err}");
            // Its close, in the same write, was rolled back with it.
            assert_eq!(states, Some((RunState::Running, Some(ExecState::Running))));
        } else {
            assert!(result.unwrap(), "run {i}'s end did not apply whole");
            assert_eq!(states, Some((RunState::Succeeded, Some(ExecState::Succeeded))));
        }
    }
    assert!(t.lock_batch().is_empty());

    // Alone, a write that fails is not half written either.
    let (ok, end) = (succeeded(), ending());
    let id = runs[DOOMED].id;
    let alone = finish(id, worker, &ok, &end);
    assert!(t.apply(&alone).await.is_err());
    assert_eq!(
        t.exec_states(key(id)).await.unwrap(),
        Some((RunState::Running, Some(ExecState::Running)))
    );
    sqlx::query("DROP TRIGGER boom").execute(&t.pool).await.unwrap();
    assert!(t.apply(&alone).await.unwrap().complete(&end));
    t.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
