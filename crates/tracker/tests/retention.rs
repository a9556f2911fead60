//! Retention against a real PostgreSQL (a database per test): which runs a
//! prune deletes and which it keeps, what goes with them, the dry run, the
//! batches, the alert events and their deliveries, and the storage
//! figures. History is written with the store's
//! own `create_run`, then aged and moved to its state by SQL of the test's
//! own, as years of use would leave it.

use chrono::{DateTime, Utc};
use scheduler_core::{Modules, Sequence};
use scheduler_tracker::{NewEvent, NewRun, PruneCounts, Retention, Store, Tracker, TrackerConfig};
use sqlx::migrate::MigrateDatabase;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(86_400);

struct Db {
    store: Tracker,
    sql: PgConnection,
}

async fn with_db<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let base = std::env::var("TEST_DATABASE_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let url = format!("{base}/retention_t_{}", Uuid::now_v7().simple());
    let store = Tracker::open(&TrackerConfig::new(&url)).await.unwrap();
    let sql = PgConnection::connect(&url).await.unwrap();
    test(Db {
        store: store.clone(),
        sql,
    })
    .await;
    Store::close(&store).await;
    let _ = sqlx::Postgres::force_drop_database(&url).await;
}

/// A run of `sequence` in `state`, created `age_days` ago and (when
/// `finished_days` is given) finished that many days ago, with `execs`
/// executions of its steps, each with two log rows.
struct Past {
    sequence: &'static str,
    state: &'static str,
    created_days: f64,
    finished_days: Option<f64>,
    execs: u32,
}

impl Past {
    fn new(state: &'static str, created_days: f64, finished_days: Option<f64>) -> Past {
        Past {
            sequence: "s",
            state,
            created_days,
            finished_days,
            execs: 2,
        }
    }
    fn of(mut self, sequence: &'static str) -> Past {
        self.sequence = sequence;
        self
    }
}

fn new_run() -> NewRun {
    let modules = Modules::parse("modules.json", r#"{"m": {"cmd": "./m.sh"}}"#).unwrap();
    let seq = Sequence::parse(
        "s",
        "etl_sequences/s.json",
        r#"[{"module_name": "m"}, {"module_name": "m"}]"#,
        &modules,
    )
    .unwrap();
    NewRun {
        id: Uuid::now_v7(),
        queue: "q1".into(),
        trigger: "test".into(),
        snapshot: seq.snapshot(&modules, "q1"),
        schedule: None,
        logical_date: None,
    }
}

impl Db {
    async fn past(&mut self, p: Past) -> Uuid {
        let run = new_run();
        let id = run.id;
        self.store.create_run(&run).await.unwrap();
        sqlx::query(
            "UPDATE runs SET sequence = $2, state = $3,
                    created_at = now() - make_interval(secs => $4 * 86400),
                    finished_at = CASE WHEN $5::float8 IS NULL THEN NULL
                                       ELSE now() - make_interval(secs => $5 * 86400) END
              WHERE id = $1",
        )
        .bind(id)
        .bind(p.sequence)
        .bind(p.state)
        .bind(p.created_days)
        .bind(p.finished_days)
        .execute(&mut self.sql)
        .await
        .unwrap();
        for step in 0..p.execs as i32 {
            self.exec(id, step, "succeeded").await;
        }
        id
    }

    /// An execution of `run` with two log rows (5 and 7 bytes).
    async fn exec(&mut self, run: Uuid, step: i32, state: &str) {
        sqlx::query(
            "INSERT INTO executions (run_id, step, attempt, module, argv, state)
             VALUES ($1, $2, 1, 'm', ARRAY['./m.sh'], $3)",
        )
        .bind(run)
        .bind(step)
        .bind(state)
        .execute(&mut self.sql)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO execution_logs (run_id, step, attempt, pos, stream, at, data)
             VALUES ($1, $2, 1, 0, 'stdout', now(), '\\x68656c6c6f'::bytea),
                    ($1, $2, 1, 5, 'stderr', now(), '\\x776f726c64210a'::bytea)",
        )
        .bind(run)
        .bind(step)
        .execute(&mut self.sql)
        .await
        .unwrap();
    }

    async fn exists(&mut self, run: Uuid) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1)")
            .bind(run)
            .fetch_one(&mut self.sql)
            .await
            .unwrap()
    }

    /// (runs, executions, log rows) in the database.
    async fn rows(&mut self) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM executions),
                    (SELECT count(*) FROM execution_logs)",
        )
        .fetch_one(&mut self.sql)
        .await
        .unwrap()
    }

    /// Executions and log rows of one run.
    async fn rows_of(&mut self, run: Uuid) -> (i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM executions WHERE run_id = $1),
                    (SELECT count(*) FROM execution_logs WHERE run_id = $1)",
        )
        .bind(run)
        .fetch_one(&mut self.sql)
        .await
        .unwrap()
    }

    /// Every batch until the bound is reached; the totals and the batches.
    async fn prune(&self, retention: Retention, batch: u32, dry_run: bool) -> (PruneCounts, usize) {
        let mut from = None;
        let mut total = PruneCounts::default();
        let mut batches = 0;
        loop {
            let b = self.store.prune_batch(&retention, from, batch, dry_run).await.unwrap();
            batches += 1;
            total += b.counts;
            match b.next {
                Some(next) => from = Some(next),
                None => return (total, batches),
            }
        }
    }
}

fn older_than(days: u64) -> Retention {
    Retention {
        older_than: DAY * days as u32,
        keep_last: None,
    }
}

#[tokio::test]
async fn only_final_runs_finished_before_the_bound_go_with_their_executions_and_logs() {
    with_db(|mut db| async move {
        let mut gone = Vec::new();
        for state in ["succeeded", "failed", "canceled", "skipped"] {
            gone.push(db.past(Past::new(state, 40.0, Some(39.0))).await);
        }
        // Turned away before it ever started: no finished_at, its creation counts.
        gone.push(db.past(Past::new("skipped", 40.0, None)).await);

        let mut kept = Vec::new();
        for state in ["waiting", "queued", "running"] {
            kept.push(db.past(Past::new(state, 40.0, None)).await);
        }
        // Recent; and old but finished recently (an hours-long run, or retried).
        kept.push(db.past(Past::new("succeeded", 2.0, Some(1.0))).await);
        kept.push(db.past(Past::new("failed", 40.0, Some(1.0))).await);
        // Canceled, its module still being stopped: it holds its sequence's slot.
        let stopping = db.past(Past::new("canceled", 40.0, Some(39.0))).await;
        db.exec(stopping, 2, "running").await;
        kept.push(stopping);

        let (runs, execs, logs) = db.rows().await;
        let (dry, _) = db.prune(older_than(30), 500, true).await;
        assert_eq!(
            dry,
            PruneCounts {
                runs: 5,
                executions: 10,
                log_rows: 20,
                log_bytes: 5 * 2 * 12,
                ..PruneCounts::default()
            }
        );
        assert_eq!(db.rows().await, (runs, execs, logs), "a dry run deletes nothing");

        let (done, _) = db.prune(older_than(30), 500, false).await;
        assert_eq!(done, dry, "the dry run counted what the prune deleted");
        for id in &gone {
            assert!(!db.exists(*id).await, "final and old: deleted");
            assert_eq!(db.rows_of(*id).await, (0, 0), "its executions and logs with it");
        }
        for id in &kept {
            assert!(db.exists(*id).await, "{id} must stay");
            assert!(db.rows_of(*id).await.0 >= 2);
        }
        assert_eq!(db.rows().await, (runs - 5, execs - 10, logs - 20));

        let (again, batches) = db.prune(older_than(30), 500, false).await;
        assert_eq!(
            (again, batches),
            (PruneCounts::default(), 1),
            "nothing more the second time"
        );
    })
    .await;
}

#[tokio::test]
async fn a_pruned_runs_schedule_slot_stays_and_lets_go_of_it() {
    with_db(|mut db| async move {
        let run = db.past(Past::new("succeeded", 40.0, Some(40.0))).await;
        let slot: DateTime<Utc> = Utc::now() - chrono::Duration::days(40);
        sqlx::query(
            "INSERT INTO schedule_slots (schedule, slot_at, fate, run_id) VALUES ('nightly', $1, 'started', $2)",
        )
        .bind(slot)
        .bind(run)
        .execute(&mut db.sql)
        .await
        .unwrap();
        let (done, _) = db.prune(older_than(30), 500, false).await;
        assert_eq!(done.runs, 1);
        let slots: Vec<(String, Option<Uuid>)> = sqlx::query_as("SELECT fate, run_id FROM schedule_slots")
            .fetch_all(&mut db.sql)
            .await
            .unwrap();
        assert_eq!(slots, vec![("started".to_string(), None)]);
    })
    .await;
}

#[tokio::test]
async fn keep_last_keeps_the_newest_runs_of_each_sequence_whatever_their_age() {
    with_db(|mut db| async move {
        // a: five old runs (the newest is still running); b: two old runs.
        let mut a = Vec::new();
        for (i, state) in ["succeeded", "failed", "succeeded", "canceled", "running"]
            .iter()
            .enumerate()
        {
            let age = 50.0 - i as f64;
            let finished = (*state != "running").then_some(age);
            a.push(db.past(Past::new(state, age, finished).of("a")).await);
        }
        let b: Vec<Uuid> = vec![
            db.past(Past::new("succeeded", 60.0, Some(60.0)).of("b")).await,
            db.past(Past::new("succeeded", 59.0, Some(59.0)).of("b")).await,
        ];
        let keep3 = Retention {
            older_than: DAY * 30,
            keep_last: Some(3),
        };
        let (dry, _) = db.prune(keep3, 500, true).await;
        assert_eq!(dry.runs, 2, "a's two oldest; b has no more than three");
        let (done, _) = db.prune(keep3, 500, false).await;
        assert_eq!(done.runs, 2);
        for (id, stays) in a
            .iter()
            .zip([false, false, true, true, true])
            .chain(b.iter().zip([true, true]))
        {
            assert_eq!(db.exists(*id).await, stays, "{id}");
        }

        // Keeping one: the running run is a's newest, so all its final runs may go.
        let keep1 = Retention {
            older_than: DAY * 30,
            keep_last: Some(1),
        };
        let (done, _) = db.prune(keep1, 500, false).await;
        assert_eq!(done.runs, 3, "a's two finished ones left and b's older one");
        assert!(db.exists(a[4]).await && db.exists(b[1]).await);
        assert_eq!(db.rows().await.0, 2);
    })
    .await;
}

#[tokio::test]
async fn a_prune_goes_in_batches_and_stops_at_the_bound() {
    with_db(|mut db| async move {
        let mut old = Vec::new();
        for i in 0..5 {
            old.push(
                db.past(Past::new("succeeded", 40.0 + i as f64, Some(40.0 + i as f64)))
                    .await,
            );
        }
        let young = db.past(Past::new("succeeded", 3.0, Some(3.0))).await;

        let first = db.store.prune_batch(&older_than(30), None, 2, false).await.unwrap();
        assert_eq!((first.counts.runs, first.scanned), (2, 2));
        assert!(first.next.is_some(), "more may follow a full batch");
        assert!(!db.exists(old[4]).await && !db.exists(old[3]).await, "oldest first");
        assert!(first.bound < Utc::now() - chrono::Duration::days(29));

        let (rest, batches) = {
            let mut from = first.next;
            let mut total = PruneCounts::default();
            let mut batches = 0;
            while let Some(cursor) = from {
                let b = db
                    .store
                    .prune_batch(&older_than(30), Some(cursor), 2, false)
                    .await
                    .unwrap();
                assert!(b.counts.runs <= 2);
                total += b.counts;
                batches += 1;
                from = b.next;
            }
            (total, batches)
        };
        assert_eq!((rest.runs, rest.executions, batches), (3, 6, 2), "2 + 2 + 1");
        assert!(db.exists(young).await);
        assert_eq!(db.rows().await, (1, 2, 4));
    })
    .await;
}

#[tokio::test]
async fn a_run_being_written_is_skipped_not_waited_for_and_a_retried_run_is_never_deleted() {
    with_db(|mut db| async move {
        let retried = db.past(Past::new("failed", 40.0, Some(40.0))).await;
        let other = db.past(Past::new("failed", 41.0, Some(41.0))).await;
        // An operator's retry in flight: the run's row is locked, moving back
        // to running, while the prune passes.
        let base = std::env::var("TEST_DATABASE_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let url = format!("{base}/{}", current_db(&mut db.sql).await);
        let mut operator = PgConnection::connect(&url).await.unwrap();
        let mut tx = operator.begin().await.unwrap();
        sqlx::query("UPDATE runs SET state = 'running', finished_at = NULL WHERE id = $1")
            .bind(retried)
            .execute(&mut *tx)
            .await
            .unwrap();

        let started = std::time::Instant::now();
        let (done, _) = db.prune(older_than(30), 500, false).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the prune skipped the locked run"
        );
        assert_eq!(done.runs, 1);
        assert!(!db.exists(other).await);
        tx.commit().await.unwrap();

        let (done, _) = db.prune(older_than(30), 500, false).await;
        assert_eq!(done.runs, 0, "running again: not final");
        assert!(db.exists(retried).await);
    })
    .await;
}

async fn current_db(sql: &mut PgConnection) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(sql)
        .await
        .unwrap()
}

#[tokio::test]
async fn storage_figures_count_what_is_kept() {
    with_db(|mut db| async move {
        let empty = db.store.storage_figures().await.unwrap();
        assert_eq!((empty.runs, empty.executions, empty.log_rows), (0, 0, 0));
        assert!(!empty.estimated);
        for _ in 0..3 {
            db.past(Past::new("succeeded", 1.0, Some(1.0))).await;
        }
        let f = db.store.storage_figures().await.unwrap();
        assert_eq!((f.runs, f.executions, f.log_rows, f.estimated), (3, 6, 12, false));
        assert!(f.log_bytes > 0 && f.database_bytes > f.log_bytes, "{f:?}");
    })
    .await;
}

impl Db {
    /// A `run_failed` event of `run` recorded `age_days` ago, routed to one
    /// delivery per `(target, state)` given (none: routed to no target, or
    /// not routed at all when `routed` is false).
    async fn event(&mut self, run: Uuid, age_days: f64, routed: bool, deliveries: &[(&str, &str)]) -> i64 {
        let id = self
            .store
            .record_event(&NewEvent {
                kind: "run_failed".into(),
                sequence: Some("s".into()),
                run_id: Some(run),
                message: Some("exit code 1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        sqlx::query(
            "UPDATE events SET at = now() - make_interval(secs => $2 * 86400),
                    routed_at = CASE WHEN $3 THEN now() END WHERE id = $1",
        )
        .bind(id)
        .bind(age_days)
        .bind(routed)
        .execute(&mut self.sql)
        .await
        .unwrap();
        for (target, state) in deliveries {
            sqlx::query(
                "INSERT INTO alert_deliveries (event_id, target, kind, subject, state, attempts)
                 VALUES ($1, $2, 'run_failed', 's', $3, 1)",
            )
            .bind(id)
            .bind(target)
            .bind(state)
            .execute(&mut self.sql)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO alert_attempts (event_id, target, attempt, outcome, elapsed_ms)
                 VALUES ($1, $2, 1, 'retry', 1.5)",
            )
            .bind(id)
            .bind(target)
            .execute(&mut self.sql)
            .await
            .unwrap();
        }
        id
    }

    async fn event_exists(&mut self, id: i64) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE id = $1)")
            .bind(id)
            .fetch_one(&mut self.sql)
            .await
            .unwrap()
    }

    /// (events, deliveries, attempts) in the database.
    async fn alert_rows(&mut self) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM alert_deliveries),
                    (SELECT count(*) FROM alert_attempts)",
        )
        .fetch_one(&mut self.sql)
        .await
        .unwrap()
    }

    /// Every batch of events until the bound is reached.
    async fn prune_events(&self, older_than: Duration, batch: u32, dry_run: bool) -> (PruneCounts, usize) {
        let mut from = None;
        let mut total = PruneCounts::default();
        let mut batches = 0;
        loop {
            let b = self
                .store
                .prune_events_batch(older_than, from, batch, dry_run)
                .await
                .unwrap();
            batches += 1;
            total += b.counts;
            match b.next {
                Some(next) => from = Some(next),
                None => return (total, batches),
            }
        }
    }
}

#[tokio::test]
async fn old_events_go_with_their_deliveries_once_delivered_or_given_up_never_pending_or_held() {
    with_db(|mut db| async move {
        let run = db.past(Past::new("failed", 40.0, Some(39.0))).await;
        let mut gone = vec![
            db.event(run, 40.0, true, &[("hook", "sent"), ("mail", "failed")]).await,
            db.event(run, 40.0, true, &[("hook", "folded")]).await,
            // Wanted by no target: routed to none.
            db.event(run, 40.0, true, &[]).await,
        ];
        let kept = vec![
            // Still to be sent (or retried) to one of its targets.
            db.event(run, 40.0, true, &[("hook", "sent"), ("mail", "pending")])
                .await,
            // Held for its target's max_frequency, to be folded into the next.
            db.event(run, 40.0, true, &[("hook", "held")]).await,
            // Not routed yet: its deliveries do not exist yet.
            db.event(run, 40.0, false, &[]).await,
            // Recent.
            db.event(run, 1.0, true, &[("hook", "sent")]).await,
        ];
        let (events, deliveries, attempts) = db.alert_rows().await;
        let (dry, _) = db.prune_events(DAY * 30, 2, true).await;
        assert_eq!(
            dry,
            PruneCounts {
                events: 3,
                deliveries: 3,
                ..PruneCounts::default()
            }
        );
        assert_eq!(
            db.alert_rows().await,
            (events, deliveries, attempts),
            "a dry run deletes nothing"
        );

        // In batches of 2: the kept ones in between do not stop it.
        let (done, batches) = db.prune_events(DAY * 30, 2, false).await;
        assert_eq!(done, dry, "the dry run counted what the prune deleted");
        assert_eq!(batches, 4, "6 old events in batches of 2, and the last one empty");
        assert_eq!(db.alert_rows().await, (events - 3, deliveries - 3, attempts - 3));
        for id in &gone {
            assert!(!db.event_exists(*id).await, "old and delivered: deleted");
        }
        for id in &kept {
            assert!(db.event_exists(*id).await, "event {id} must stay");
        }

        // Pruning runs leaves events alone: an event (delivered or not)
        // outlives its run, and a pending one is still delivered.
        let (runs, _) = db.prune(older_than(30), 500, false).await;
        assert_eq!((runs.runs, runs.events), (1, 0));
        assert!(!db.exists(run).await);
        for id in &kept {
            assert!(db.event_exists(*id).await, "event {id} outlives its run");
        }
        let recent = db.store.recent_deliveries(10).await.unwrap();
        assert!(
            recent.iter().any(|d| d.state == "pending" && d.run_id == Some(run)),
            "the pending delivery of a pruned run is still listed: {recent:?}"
        );

        // Once the pending one is sent and the held one folded, they go too.
        gone.clear();
        sqlx::query("UPDATE alert_deliveries SET state = 'sent' WHERE state = 'pending'")
            .execute(&mut db.sql)
            .await
            .unwrap();
        sqlx::query("UPDATE alert_deliveries SET state = 'folded' WHERE state = 'held'")
            .execute(&mut db.sql)
            .await
            .unwrap();
        let (done, _) = db.prune_events(DAY * 30, 500, false).await;
        assert_eq!((done.events, done.deliveries), (2, 3), "{done:?}");
        assert!(db.event_exists(kept[2]).await && db.event_exists(kept[3]).await);
    })
    .await;
}

#[tokio::test]
async fn the_newest_alert_let_go_per_target_kind_and_subject_stays_for_its_max_frequency() {
    with_db(|mut db| async move {
        let run = db.past(Past::new("failed", 40.0, Some(39.0))).await;
        let older = db.event(run, 40.0, true, &[("hook", "sent")]).await;
        let newest = db.event(run, 39.0, true, &[("hook", "sent")]).await;
        let elsewhere = db.event(run, 39.0, true, &[("mail", "failed")]).await;
        for (id, days) in [(older, 40.0), (newest, 39.0), (elsewhere, 39.0)] {
            sqlx::query("UPDATE alert_deliveries SET released_at = now() - make_interval(secs => $2 * 86400) WHERE event_id = $1")
                .bind(id)
                .bind(days)
                .execute(&mut db.sql)
                .await
                .unwrap();
        }
        let (done, _) = db.prune_events(DAY * 30, 500, false).await;
        assert_eq!(done.events, 1, "{done:?}");
        assert!(!db.event_exists(older).await);
        assert!(
            db.event_exists(newest).await && db.event_exists(elsewhere).await,
            "the last one each target was sent of run_failed for s is what its max_frequency counts from"
        );
        let last = db.store.recent_deliveries(10).await.unwrap();
        assert_eq!(last.len(), 2, "{last:?}");
    })
    .await;
}
