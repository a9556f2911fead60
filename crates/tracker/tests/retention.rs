//! Retention against each backend (a fresh store per test): which runs a
//! prune deletes and which it keeps, what goes with them, the dry run, the
//! batches, the alert events and their deliveries, and the storage
//! figures. History is written with the store's
//! own `create_run`, then aged and moved to its state by SQL of the test's
//! own, as years of use would leave it.

mod common;

use chrono::{DateTime, Utc};
use common::{Backend, TestStore};
use scheduler_tracker::{NewEvent, NewRun, PruneCounts, Retention};
use std::time::Duration;
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(86_400);

/// The store under test; `store` derefs to `dyn Store`.
struct Db {
    store: TestStore,
}

async fn with_db<F, Fut>(test: F)
where
    F: Fn(Db) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    common::each_backend("retention_t", |store| test(Db { store })).await;
}

/// A time as both backends take it as text: RFC 3339, UTC, "+00:00" (as
/// sqlx encodes a `DateTime<Utc>` for SQLite).
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

fn days_ago(days: f64) -> String {
    ts(Utc::now() - chrono::Duration::milliseconds((days * 86_400_000.0) as i64))
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
    common::run_of("s", r#"[{"module_name": "m"}, {"module_name": "m"}]"#)
}

/// The test's own SQL binds text: a UUID goes in as PostgreSQL's `uuid` or
/// SQLite's 16-byte BLOB, an empty string is NULL.
impl Db {
    async fn past(&mut self, p: Past) -> Uuid {
        let run = new_run();
        let id = run.id;
        self.store.create_run(&run).await.unwrap();
        let finished = p.finished_days.map(days_ago).unwrap_or_default();
        self.store
            .raw(
                "UPDATE runs SET sequence = $2, state = $3, created_at = $4::timestamptz,
                        finished_at = NULLIF($5, '')::timestamptz
                  WHERE id = $1::uuid",
                "UPDATE runs SET sequence = ?2, state = ?3, created_at = ?4, finished_at = NULLIF(?5, '')
                  WHERE id = unhex(replace(?1, '-', ''))",
                &[
                    &id.to_string(),
                    p.sequence,
                    p.state,
                    &days_ago(p.created_days),
                    &finished,
                ],
            )
            .await;
        for step in 0..p.execs as i32 {
            self.exec(id, step, "succeeded").await;
        }
        id
    }

    /// An execution of `run` with two log rows (5 and 7 bytes).
    async fn exec(&mut self, run: Uuid, step: i32, state: &str) {
        let (run, step, now) = (run.to_string(), step.to_string(), ts(Utc::now()));
        self.store
            .raw(
                "INSERT INTO executions (run_id, step, attempt, module, argv, state)
                 VALUES ($1::uuid, $2::int, 1, 'm', ARRAY['./m.sh'], $3)",
                "INSERT INTO executions (run_id, step, attempt, module, argv, state)
                 VALUES (unhex(replace(?1, '-', '')), ?2, 1, 'm', '[\"./m.sh\"]', ?3)",
                &[&run, &step, state],
            )
            .await;
        self.store
            .raw(
                "INSERT INTO execution_logs (run_id, step, attempt, pos, stream, at, data)
                 VALUES ($1::uuid, $2::int, 1, 0, 'stdout', $3::timestamptz, '\\x68656c6c6f'::bytea),
                        ($1::uuid, $2::int, 1, 5, 'stderr', $3::timestamptz, '\\x776f726c64210a'::bytea)",
                "INSERT INTO execution_logs (run_id, step, attempt, pos, stream, at, data)
                 VALUES (unhex(replace(?1, '-', '')), ?2, 1, 0, 'stdout', ?3, x'68656c6c6f'),
                        (unhex(replace(?1, '-', '')), ?2, 1, 5, 'stderr', ?3, x'776f726c64210a')",
                &[&run, &step, &now],
            )
            .await;
    }

    async fn count(&self, pg: &str, lite: &str, args: &[&str]) -> i64 {
        self.store.raw_i64(pg, lite, args).await
    }

    async fn exists(&mut self, run: Uuid) -> bool {
        self.count(
            "SELECT count(*) FROM runs WHERE id = $1::uuid",
            "SELECT count(*) FROM runs WHERE id = unhex(replace(?1, '-', ''))",
            &[&run.to_string()],
        )
        .await
            > 0
    }

    /// (runs, executions, log rows) in the database.
    async fn rows(&mut self) -> (i64, i64, i64) {
        let mut n = [0; 3];
        for (i, table) in ["runs", "executions", "execution_logs"].iter().enumerate() {
            let sql = format!("SELECT count(*) FROM {table}");
            n[i] = self.count(&sql, &sql, &[]).await;
        }
        (n[0], n[1], n[2])
    }

    /// Executions and log rows of one run.
    async fn rows_of(&mut self, run: Uuid) -> (i64, i64) {
        let run = run.to_string();
        let mut n = [0; 2];
        for (i, table) in ["executions", "execution_logs"].iter().enumerate() {
            n[i] = self
                .count(
                    &format!("SELECT count(*) FROM {table} WHERE run_id = $1::uuid"),
                    &format!("SELECT count(*) FROM {table} WHERE run_id = unhex(replace(?1, '-', ''))"),
                    &[&run],
                )
                .await;
        }
        (n[0], n[1])
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
        db.store
            .raw(
                "INSERT INTO schedule_slots (schedule, slot_at, fate, run_id)
                 VALUES ('nightly', $1::timestamptz, 'started', $2::uuid)",
                "INSERT INTO schedule_slots (schedule, slot_at, fate, run_id)
                 VALUES ('nightly', ?1, 'started', unhex(replace(?2, '-', '')))",
                &[&ts(slot), &run.to_string()],
            )
            .await;
        let (done, _) = db.prune(older_than(30), 500, false).await;
        assert_eq!(done.runs, 1);
        let sql = "SELECT count(*) FROM schedule_slots";
        assert_eq!(db.count(sql, sql, &[]).await, 1, "the slot stays");
        let sql = "SELECT count(*) FROM schedule_slots WHERE fate = 'started' AND run_id IS NULL";
        assert_eq!(db.count(sql, sql, &[]).await, 1, "without its run");
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

/// PostgreSQL: the prune skips the run an operator's retry holds locked,
/// never waiting for it. SQLite has one writer: the retry's transaction
/// holds the whole store, so the batch waits for it (within the busy
/// timeout) and then sees the run running again. On both, the retried run
/// is never deleted and the others go.
#[tokio::test]
async fn a_run_being_retried_is_never_deleted_and_on_postgresql_never_waited_for() {
    with_db(|mut db| async move {
        let retried = db.past(Past::new("failed", 40.0, Some(40.0))).await;
        let other = db.past(Past::new("failed", 41.0, Some(41.0))).await;
        let started = std::time::Instant::now();
        match db.store.backend {
            Backend::Postgres => {
                use sqlx::Connection;
                // An operator's retry in flight: the run's row is locked,
                // moving back to running, while the prune passes.
                let mut operator = sqlx::PgConnection::connect(&db.store.location).await.unwrap();
                let mut tx = operator.begin().await.unwrap();
                sqlx::query("UPDATE runs SET state = 'running', finished_at = NULL WHERE id = $1")
                    .bind(retried)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let (done, _) = db.prune(older_than(30), 500, false).await;
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the prune skipped the locked run"
                );
                assert_eq!(done.runs, 1);
                assert!(!db.exists(other).await);
                tx.commit().await.unwrap();
            }
            Backend::Sqlite => {
                use sqlx::Connection;
                let url = format!("sqlite://{}", db.store.location);
                let mut operator = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut operator).await.unwrap();
                sqlx::query("UPDATE runs SET state = 'running', finished_at = NULL WHERE id = ?1")
                    .bind(retried)
                    .execute(&mut operator)
                    .await
                    .unwrap();
                let pruner = Db {
                    store: db.store.clone(),
                };
                let prune = tokio::spawn(async move { pruner.prune(older_than(30), 500, false).await });
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert!(
                    !prune.is_finished(),
                    "one writer: the batch waits for the retry's commit"
                );
                sqlx::query("COMMIT").execute(&mut operator).await.unwrap();
                let (done, _) = prune.await.unwrap();
                assert!(started.elapsed() < Duration::from_secs(5));
                assert_eq!(done.runs, 1, "the retried run is running again when the batch reads it");
                assert!(!db.exists(other).await);
            }
        }

        let (done, _) = db.prune(older_than(30), 500, false).await;
        assert_eq!(done.runs, 0, "running again: not final");
        assert!(db.exists(retried).await);
    })
    .await;
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
        let routed_at = if routed { ts(Utc::now()) } else { String::new() };
        self.store
            .raw(
                "UPDATE events SET at = $2::timestamptz, routed_at = nullif($3, '')::timestamptz WHERE id = $1::bigint",
                "UPDATE events SET at = ?2, routed_at = nullif(?3, '') WHERE id = CAST(?1 AS INTEGER)",
                &[&id.to_string(), &days_ago(age_days), &routed_at],
            )
            .await;
        for (target, state) in deliveries {
            self.store
                .raw(
                    "INSERT INTO alert_deliveries (event_id, target, kind, subject, state, attempts)
                     VALUES ($1::bigint, $2, 'run_failed', 's', $3, 1)",
                    "INSERT INTO alert_deliveries (event_id, target, kind, subject, state, attempts)
                     VALUES (CAST(?1 AS INTEGER), ?2, 'run_failed', 's', ?3, 1)",
                    &[&id.to_string(), target, state],
                )
                .await;
            self.store
                .raw(
                    "INSERT INTO alert_attempts (event_id, target, attempt, outcome, elapsed_ms)
                     VALUES ($1::bigint, $2, 1, 'retry', 1.5)",
                    "INSERT INTO alert_attempts (event_id, target, attempt, outcome, elapsed_ms)
                     VALUES (CAST(?1 AS INTEGER), ?2, 1, 'retry', 1.5)",
                    &[&id.to_string(), target],
                )
                .await;
        }
        id
    }

    async fn event_exists(&mut self, id: i64) -> bool {
        self.store
            .raw_i64(
                "SELECT count(*) FROM events WHERE id = $1::bigint",
                "SELECT count(*) FROM events WHERE id = CAST(?1 AS INTEGER)",
                &[&id.to_string()],
            )
            .await
            == 1
    }

    /// (events, deliveries, attempts) in the database.
    async fn alert_rows(&mut self) -> (i64, i64, i64) {
        let mut counts = [0; 3];
        for (n, table) in counts.iter_mut().zip(["events", "alert_deliveries", "alert_attempts"]) {
            let sql = format!("SELECT count(*) FROM {table}");
            *n = self.store.raw_i64(&sql, &sql, &[]).await;
        }
        (counts[0], counts[1], counts[2])
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
        for sql in [
            "UPDATE alert_deliveries SET state = 'sent' WHERE state = 'pending'",
            "UPDATE alert_deliveries SET state = 'folded' WHERE state = 'held'",
        ] {
            db.store.raw(sql, sql, &[]).await;
        }
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
            db.store
                .raw(
                    "UPDATE alert_deliveries SET released_at = $2::timestamptz WHERE event_id = $1::bigint",
                    "UPDATE alert_deliveries SET released_at = ?2 WHERE event_id = CAST(?1 AS INTEGER)",
                    &[&id.to_string(), &days_ago(days)],
                )
                .await;
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
