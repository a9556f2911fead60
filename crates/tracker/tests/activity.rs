//! The reads behind `/metrics`' activity ([`Store::activity`]) and a
//! sequence's page ([`Store::sequence_history`]), against both
//! backends: a history written row by row with known times, durations,
//! memory, retries, stalls and slots, and the figures each read gives.

mod common;

use chrono::{DateTime, Utc};
use common::TestStore;
use scheduler_tracker::{ModuleHistogram, Store};
use std::time::Duration;
use uuid::Uuid;

async fn with_store<F, Fut>(test: F)
where
    F: Fn(TestStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    common::each_backend("activity_t", test).await;
}

/// A time as both backends take it as text: RFC 3339, UTC, "+00:00" (as
/// sqlx encodes a `DateTime<Utc>` for SQLite).
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

fn ago(secs: i64) -> String {
    ts(Utc::now() - chrono::Duration::seconds(secs))
}

/// A run of `sequence` created `ago_secs` ago, ended `state` (or running),
/// with one execution per `(step, attempt, module, state, duration_ms,
/// peak KiB, retry, stalled)`, each ending at the run's end.
/// `(step, attempt, module, state, duration_ms, peak KiB, retry, stalled)`.
type Exec<'a> = (i32, i32, &'a str, &'a str, i64, Option<i64>, i32, bool);

struct Row<'a> {
    sequence: &'a str,
    state: &'a str,
    ago_secs: i64,
    run_secs: i64,
    execs: Vec<Exec<'a>>,
}

/// The set-up SQL binds text: an empty string is NULL, a UUID goes in
/// as PostgreSQL's `uuid` or SQLite's 16-byte BLOB.
async fn insert(t: &TestStore, r: &Row<'_>) -> Uuid {
    let id = Uuid::now_v7();
    let started = ago(r.ago_secs);
    let ended = ago(r.ago_secs - r.run_secs);
    let finished = if r.state != "running" { ended.as_str() } else { "" };
    t.raw(
        "INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, created_at, started_at, finished_at)
         VALUES ($1::uuid, $2, $3, 'q', 'test', '{}', 3, $4::timestamptz, $4::timestamptz,
                 NULLIF($5, '')::timestamptz)",
        "INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, created_at, started_at, finished_at)
         VALUES (unhex(replace(?1, '-', '')), ?2, ?3, 'q', 'test', '{}', 3, ?4, ?4, NULLIF(?5, ''))",
        &[&id.to_string(), r.sequence, r.state, &started, finished],
    )
    .await;
    for (step, attempt, module, state, ms, kib, retry, stalled) in &r.execs {
        let done = *state != "running" && *state != "queued";
        let now = ts(Utc::now());
        t.raw(
            "INSERT INTO executions (run_id, step, attempt, module, argv, state, queued_at, started_at, finished_at,
                                     duration_ms, peak_rss_kib, retry, stalled_at)
             VALUES ($1::uuid, $2::int, $3::int, $4, '{}', $5, $6::timestamptz, $6::timestamptz,
                     NULLIF($7, '')::timestamptz, NULLIF($8, '')::bigint, NULLIF($9, '')::bigint, $10::int,
                     NULLIF($11, '')::timestamptz)",
            "INSERT INTO executions (run_id, step, attempt, module, argv, state, queued_at, started_at, finished_at,
                                     duration_ms, peak_rss_kib, retry, stalled_at)
             VALUES (unhex(replace(?1, '-', '')), ?2, ?3, ?4, '[]', ?5, ?6, ?6,
                     NULLIF(?7, ''), NULLIF(?8, ''), NULLIF(?9, ''), ?10, NULLIF(?11, ''))",
            &[
                &id.to_string(),
                &step.to_string(),
                &attempt.to_string(),
                module,
                state,
                &started,
                if done { &ended } else { "" },
                &if done { ms.to_string() } else { String::new() },
                &kib.map(|k| k.to_string()).unwrap_or_default(),
                &retry.to_string(),
                if *stalled { &now } else { "" },
            ],
        )
        .await;
    }
    id
}

#[tokio::test]
async fn activity_counts_the_last_window_by_sequence_and_module_and_every_missed_slot() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        // Within the hour: a success, a failure retried once, a run still
        // going with a stalled step; two hours ago: a failure (outside).
        let rows = [
            Row {
                sequence: "nightly",
                state: "succeeded",
                ago_secs: 600,
                run_secs: 100,
                execs: vec![
                    (0, 1, "extract", "succeeded", 800, Some(20_000), 0, false),
                    (1, 1, "load", "succeeded", 42_000, Some(900_000), 0, false),
                ],
            },
            Row {
                sequence: "nightly",
                state: "failed",
                ago_secs: 300,
                run_secs: 60,
                execs: vec![
                    (0, 1, "extract", "failed", 2_000, Some(30_000), 0, false),
                    (0, 2, "extract", "failed", 7_000, None, 1, true),
                ],
            },
            Row {
                sequence: "hourly",
                state: "running",
                ago_secs: 120,
                run_secs: 0,
                execs: vec![(0, 1, "extract", "running", 0, None, 0, true)],
            },
            Row {
                sequence: "hourly",
                state: "failed",
                ago_secs: 7200,
                run_secs: 10,
                execs: vec![(0, 1, "extract", "failed", 10_000, Some(1), 1, true)],
            },
        ];
        for r in &rows {
            insert(&t, r).await;
        }
        // The stall watch's events: one within the hour (its step wrote
        // again since), one two hours ago.
        for (module, mins) in [("load", 5), ("extract", 120)] {
            t.raw(
                "INSERT INTO events (kind, sequence, step, attempt, detail, at)
                 VALUES ('step_stalled', 'nightly', 1, 1, jsonb_build_object('module', $1::text), $2::timestamptz)",
                "INSERT INTO events (kind, sequence, step, attempt, detail, at)
                 VALUES ('step_stalled', 'nightly', 1, 1, json_object('module', ?1), ?2)",
                &[module, &ago(mins * 60)],
            )
            .await;
        }
        s.register_schedules(&["nightly_at_2".into(), "quiet".into()])
            .await
            .unwrap();
        let at = |h: i64| chrono::Utc::now() - chrono::Duration::hours(h);
        for (h, fate) in [
            (1, "missed"),
            (2, "missed"),
            (3, "skipped"),
            (4, "coalesced"),
            (5, "started"),
        ] {
            assert!(s.record_slot("nightly_at_2", at(h), fate, None).await.unwrap());
        }

        let a = s
            .activity(Duration::from_secs(3600), &[1000, 10_000], &[65_536, 1_048_576])
            .await
            .unwrap();
        let n = |v: &[(String, String, i64)]| -> Vec<(String, String, i64)> { v.to_vec() };
        let row = |a: &str, b: &str, c: i64| (a.to_string(), b.to_string(), c);
        assert_eq!(
            n(&a.runs_finished),
            [row("nightly", "failed", 1), row("nightly", "succeeded", 1)]
        );
        assert_eq!(n(&a.retries), [row("nightly", "extract", 1)]);
        assert_eq!(n(&a.stalls), [row("nightly", "load", 1)]);
        assert_eq!(n(&a.stalled_now), [row("hourly", "extract", 1)]);
        assert_eq!(
            a.durations,
            [
                ModuleHistogram {
                    module: "extract".into(),
                    le: vec![(1000, 1), (10_000, 3)],
                    count: 3,
                    sum: 9_800,
                },
                ModuleHistogram {
                    module: "load".into(),
                    le: vec![(1000, 0), (10_000, 0)],
                    count: 1,
                    sum: 42_000,
                }
            ]
        );
        // The attempt the kernel did not account for is left out.
        assert_eq!(a.peak_memory[0].le, vec![(65_536, 2), (1_048_576, 2)]);
        assert_eq!((a.peak_memory[0].count, a.peak_memory[0].sum), (2, 50_000));
        assert_eq!(a.peak_memory[1].le, vec![(65_536, 0), (1_048_576, 1)]);
        assert_eq!(
            a.slots,
            [("nightly_at_2".to_string(), 2, 1), ("quiet".to_string(), 0, 0)]
        );
    })
    .await;
}

#[tokio::test]
async fn a_sequence_history_is_its_newest_runs_and_the_median_of_each_step() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        // Six runs, oldest first: step 0 takes 1..6 s, step 1 10 s (one
        // failure, retried and succeeded).
        for i in 1..=6i64 {
            let mut execs = vec![(0, 1, "extract", "succeeded", i * 1000, Some(i * 1024), 0, false)];
            if i == 4 {
                execs.push((1, 1, "load", "failed", 3000, None, 0, false));
                execs.push((1, 2, "load", "succeeded", 10_000, Some(4096), 1, false));
            } else {
                execs.push((1, 1, "load", "succeeded", 10_000, Some(4096), 0, false));
            }
            let r = Row {
                sequence: "nightly",
                state: "succeeded",
                ago_secs: 1000 - i * 100,
                run_secs: 20,
                execs,
            };
            insert(&t, &r).await;
        }
        let other = Row {
            sequence: "other",
            state: "failed",
            ago_secs: 10,
            run_secs: 1,
            execs: vec![(0, 1, "x", "failed", 1, None, 0, false)],
        };
        insert(&t, &other).await;

        let h = s.sequence_history("nightly", 5).await.unwrap();
        assert_eq!(h.runs.len(), 5, "the newest five");
        assert!(
            h.runs.windows(2).all(|w| w[0].created_at > w[1].created_at),
            "newest first"
        );
        assert!(h.runs.iter().all(|r| r.sequence == "nightly"));
        assert_eq!(h.steps.len(), 2);
        let (first, second) = (&h.steps[0], &h.steps[1]);
        // Runs 2..=6: 2, 3, 4, 5, 6 s.
        assert_eq!((first.step, first.module.as_str()), (0, "extract"));
        assert_eq!(
            (first.succeeded, first.median_ms, first.p95_ms),
            (5, Some(4000), Some(6000))
        );
        assert_eq!(first.median_peak_rss_kib, Some(4 * 1024));
        assert_eq!((second.succeeded, second.failed, second.retries), (5, 1, 1));
        assert_eq!(
            second.median_ms,
            Some(10_000),
            "the failed attempt is not a duration of the step"
        );
        assert!(s.sequence_history("nope", 50).await.unwrap().runs.is_empty());
    })
    .await;
}
