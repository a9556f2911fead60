//! `scheduler bench-ui`: fills a database of its own with a year of
//! synthetic history (1,000,000 runs, 10,000,000 executions by default) and
//! measures the server-side latency of the UI's pages and API calls: the
//! runs page, a run's page (its timeline included), a sequence's page (its
//! last 50 runs charted), the API and `/metrics`.
//!
//! The router is driven in process (`tower::ServiceExt::oneshot`), so a
//! sample is the time from the call to the last byte of the body read: the
//! handler, its SQL and its rendering, without the network or a browser.
//! The fill is set-based SQL in [`crate::fill`], written in
//! parallel batches, and skipped when the database already holds the runs.

use crate::BenchDb;
use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::BodyExt;
use scheduler_broker::{Broker, BrokerConfig};
use scheduler_tracker::{Store, Tracker, TrackerConfig};
use scheduler_ui::{AppState, UiConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceExt;
use uuid::Uuid;

/// The benchmark's own database: never the scheduler's.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/scheduler_ui_bench";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Runs written per SQL statement.
const BATCH_RUNS: u64 = 50_000;
/// Statements in flight at once (one per core of a small machine).
const FILL_PARALLEL: u64 = 2;
/// The target the issue sets for the runs page, which the run and the
/// sequence pages are held to as well.
const PAGE_P95: Duration = Duration::from_millis(50);
/// The pages held to [`PAGE_P95`].
const TARGETED: &[&str] = &["GET / (first page)", "GET /runs/{id}", "GET /sequences/{name}"];

#[derive(Debug, Clone)]
pub struct BenchUiArgs {
    /// Runs to fill the database with.
    pub runs: u64,
    /// Steps of every run, and execution rows per run.
    pub steps_per_run: u32,
    /// Timed requests per page or API call.
    pub samples: u32,
    /// The benchmark's own database (created when missing); its name must
    /// contain `bench`, so the scheduler's database is never filled.
    pub database_url: String,
    /// RabbitMQ, which the UI's state needs (`/metrics` reads queue depths).
    pub amqp_url: String,
}

impl Default for BenchUiArgs {
    fn default() -> Self {
        BenchUiArgs {
            runs: 1_000_000,
            steps_per_run: 10,
            samples: 200,
            database_url: DEFAULT_DATABASE_URL.into(),
            amqp_url: DEFAULT_AMQP_URL.into(),
        }
    }
}

pub async fn bench(args: BenchUiArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.steps_per_run == 0 || args.samples == 0 {
        bail!("runs, steps per run and samples must all be at least 1");
    }
    let db_name = args
        .database_url
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or("");
    if !db_name.contains("bench") {
        bail!(
            "refusing to fill database {db_name:?}: the benchmark writes a million synthetic runs, so it only uses a \
             database of its own whose name contains \"bench\" (default: {DEFAULT_DATABASE_URL})"
        );
    }
    let config = TrackerConfig::new(&args.database_url);
    let tracker = Tracker::open(&config).await?;
    let db = BenchDb::connect(&args.database_url).await?;
    let want_execs = args.runs * args.steps_per_run as u64;
    let (runs, execs) = db.bench_counts().await?;
    if runs as u64 >= args.runs && execs as u64 >= want_execs {
        println!("database {db_name} already holds {runs} runs and {execs} executions: skipping the fill");
    } else if runs > 0 {
        bail!(
            "database {db_name} holds {runs} runs and {execs} executions, fewer than asked: a partial fill. \
             Drop it (DROP DATABASE {db_name} WITH (FORCE)) and run again"
        );
    } else {
        println!(
            "filling {db_name}: {} runs, {} executions ({} per statement, {} in parallel)",
            args.runs, want_execs, BATCH_RUNS, FILL_PARALLEL
        );
        let took = fill(&db, args.runs, args.steps_per_run, true).await?;
        println!("filled in {:.1} s", took.as_secs_f64());
    }
    let t = Instant::now();
    db.bench_vacuum_analyze().await?;
    println!("VACUUM (ANALYZE) in {:.1} s", t.elapsed().as_secs_f64());

    let project = std::env::temp_dir().join(format!("scheduler-bench-ui-{}", Uuid::now_v7().simple()));
    let result = measure(&args, tracker.clone(), &db, &project).await;
    let _ = std::fs::remove_dir_all(&project);
    tracker.close().await;
    db.close().await;
    result
}

/// Writes `runs` runs of `steps_per_run` steps (and as many executions per
/// run) into an empty database; returns how long it took.
pub async fn fill(db: &BenchDb, runs: u64, steps_per_run: u32, progress: bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    // Whole milliseconds: the run ids carry their creation time in ms.
    let newest = DateTime::<Utc>::from_timestamp_millis(Utc::now().timestamp_millis() - 60_000).context("clock")?;
    db.bench_fill_workers().await?;
    let next = Arc::new(AtomicU64::new(1));
    let written = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..FILL_PARALLEL {
        let (db, next, written) = (db.clone(), next.clone(), written.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH_RUNS, Ordering::SeqCst);
                if first > runs {
                    return anyhow::Ok(());
                }
                let last = (first + BATCH_RUNS - 1).min(runs);
                db.bench_fill_batch(first, last, runs, steps_per_run, newest)
                    .await
                    .with_context(|| format!("filling runs {first}..={last}"))?;
                let done = written.fetch_add(last - first + 1, Ordering::SeqCst) + last - first + 1;
                if progress {
                    println!(
                        "  {done:>9} / {runs} runs written ({:.1} s)",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("a fill task panicked")??;
    }
    Ok(start.elapsed())
}

/// One line of the results table: a name and how to build the i-th URI.
struct Case {
    name: &'static str,
    uri: Box<dyn Fn(usize) -> String>,
}

async fn measure(args: &BenchUiArgs, tracker: Tracker, db: &BenchDb, project: &std::path::Path) -> anyhow::Result<()> {
    let sample = db.bench_sample_runs(args.samples.max(20)).await?;
    if sample.is_empty() {
        bail!("the database holds no runs to open");
    }
    let mut sequences: Vec<String> = sample.iter().map(|(_, _, s)| s.clone()).collect();
    sequences.sort();
    sequences.dedup();
    // The runs page lists the project's sequences in its filter.
    std::fs::create_dir_all(project.join("etl_sequences")).context("creating the bench project")?;
    std::fs::write(project.join("modules.json"), "{}")?;
    for s in &sequences {
        std::fs::write(project.join("etl_sequences").join(format!("{s}.json")), "[]")?;
    }
    let broker = Broker::connect(&BrokerConfig::new(&args.amqp_url), "scheduler-bench-ui")
        .await
        .context("the UI's state needs RabbitMQ (for /metrics' queue depths)")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let store: Arc<dyn Store> = Arc::new(tracker);
    let state = AppState::new(
        store,
        Arc::new(broker.clone()),
        scheduler_producer::Project::new(project)?,
        UiConfig {
            bind: "127.0.0.1:0".parse()?,
            token: None,
            queue: "etl".into(),
        },
        shutdown.clone(),
    );
    let router = scheduler_ui::router(state);

    let cases = cases(sample);
    println!(
        "\n{} samples each, server-side (router in process, call to last body byte), ms:",
        args.samples
    );
    println!("{:<36} {:>8} {:>8} {:>8} {:>8}", "request", "p50", "p95", "p99", "max");
    let p95s = time_cases(&router, &cases, args.samples).await?;
    shutdown.cancel();
    broker.close().await;
    println!();
    for (name, p95) in p95s.iter().filter(|(n, _)| TARGETED.contains(n)) {
        let verdict = if *p95 < PAGE_P95 { "met" } else { "MISSED" };
        println!(
            "target: {name} p95 under {} ms: {verdict} ({:.2} ms)",
            PAGE_P95.as_millis(),
            p95.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

/// The requests timed: each case builds its i-th URI from the sampled runs
/// (cursor, id, sequence) and a state to filter on.
fn cases(sample: Vec<(DateTime<Utc>, Uuid, String)>) -> Vec<Case> {
    let runs: Arc<Vec<(String, Uuid, String)>> = Arc::new(
        sample
            .into_iter()
            .map(|(t, id, s)| {
                (
                    format!("{}_{id}", t.to_rfc3339_opts(SecondsFormat::Micros, true)),
                    id,
                    s,
                )
            })
            .collect(),
    );
    // The i-th sampled run: (cursor, id, sequence), and the state filtered on.
    let at = |runs: &Arc<Vec<(String, Uuid, String)>>, i: usize| runs[i % runs.len()].clone();
    let state = |i: usize| ["failed", "succeeded", "canceled"][i % 3];
    let case = |name: &'static str, uri: Box<dyn Fn(usize) -> String>| Case { name, uri };
    let r = || runs.clone();
    let cases = vec![
        case("GET / (first page)", Box::new(|_| "/".into())),
        case("GET /?sequence&state", {
            let r = r();
            Box::new(move |i| format!("/?sequence={}&state={}", at(&r, i).2, state(i)))
        }),
        case("GET /?sequence&state&before (deep)", {
            let r = r();
            Box::new(move |i| {
                let (c, _, s) = at(&r, i);
                format!("/?sequence={s}&state={}&before={c}", state(i))
            })
        }),
        case("GET /?before (deep)", {
            let r = r();
            Box::new(move |i| format!("/?before={}", at(&r, i).0))
        }),
        case("GET /runs/{id}", {
            let r = r();
            Box::new(move |i| format!("/runs/{}", at(&r, i).1))
        }),
        case("GET /runs/{id}/body (live)", {
            let r = r();
            Box::new(move |i| format!("/runs/{}/body", at(&r, i).1))
        }),
        case("GET /sequences/{name}", {
            let r = r();
            Box::new(move |i| format!("/sequences/{}", at(&r, i).2))
        }),
        case("GET /api/v1/runs", Box::new(|_| "/api/v1/runs".into())),
        case("GET /api/v1/runs?sequence&state", {
            let r = r();
            Box::new(move |i| format!("/api/v1/runs?sequence={}&state={}", at(&r, i).2, state(i)))
        }),
        case("GET /api/v1/runs?..&before (deep)", {
            let r = r();
            Box::new(move |i| {
                let (c, _, s) = at(&r, i);
                format!("/api/v1/runs?sequence={s}&state={}&before={c}", state(i))
            })
        }),
        case("GET /api/v1/runs/{id}", {
            let r = r();
            Box::new(move |i| format!("/api/v1/runs/{}", at(&r, i).1))
        }),
        case("GET /metrics", Box::new(|_| "/metrics".into())),
    ];

    cases
}

/// Times every case (`samples` requests each, after a warm-up) and prints a
/// line per case; returns each case's p95.
async fn time_cases(router: &Router, cases: &[Case], samples: u32) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    let mut p95s = Vec::with_capacity(cases.len());
    for c in cases {
        // Warm-up: prepared statements, connections.
        for i in 0..5 {
            get(router, &(c.uri)(i + 1000)).await?;
        }
        let mut times = Vec::with_capacity(samples as usize);
        for i in 0..samples as usize {
            let uri = (c.uri)(i);
            let (took, _) = get(router, &uri).await?;
            times.push(took);
        }
        times.sort();
        let p = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<36} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            c.name,
            ms(p(0.50)),
            ms(p(0.95)),
            ms(p(0.99)),
            ms(*times.last().unwrap_or(&Duration::ZERO))
        );
        p95s.push((c.name, p(0.95)));
    }
    Ok(p95s)
}

/// One request; its time from the call to the last byte of the body.
async fn get(router: &Router, uri: &str) -> anyhow::Result<(Duration, usize)> {
    let req = Request::builder()
        .uri(uri)
        .header("host", "127.0.0.1:8080")
        .body(Body::empty())?;
    let start = Instant::now();
    let res = router.clone().oneshot(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    let took = start.elapsed();
    if status != StatusCode::OK {
        bail!("GET {uri} answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((took, body.len()))
}
