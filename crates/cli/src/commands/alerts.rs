//! `scheduler alerts`: the recent deliveries of alerts (target, event,
//! outcome); `alerts test TARGET` sends a test event to a target of
//! alerts.json at once and reports the answer; `alerts run` delivers alerts
//! from this process (workers already do, one at a time, under a lease).

use crate::cli::Global;
use crate::connect;
use scheduler_alerts::{Event, EventKind, send};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub action: Option<AlertsAction>,
    /// How many deliveries to list, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    /// JSON output (the deliveries, or `test`'s answer).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum AlertsAction {
    /// Send a test event to TARGET (a target of alerts.json) now and print
    /// its answer: status, the start of the body, the time it took. Exit 1
    /// if it was not delivered.
    Test { target: String },
    /// Deliver alerts from this process until SIGTERM / Ctrl-C (every
    /// worker already does, one at a time; this is for hosts without one).
    Run {
        /// Milliseconds between two looks for events to deliver.
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
    },
}

pub async fn alerts(g: &Global, args: &AlertsArgs) -> anyhow::Result<ExitCode> {
    match &args.action {
        Some(AlertsAction::Test { target }) => test(g, target, args.json).await,
        Some(AlertsAction::Run { every_ms }) => run(g, *every_ms).await,
        None => list(g, args.limit, args.json).await,
    }
}

async fn test(g: &Global, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    let config = scheduler_alerts::sender::load(project.dir()).map_err(anyhow::Error::msg)?;
    let Some(target) = config.target(name) else {
        anyhow::bail!(
            "alerts.json has no target {name:?} (targets: {}); add it, or pick one of those",
            config.names()
        );
    };
    let event = Event {
        id: 0,
        kind: EventKind::Test,
        at: chrono::Utc::now(),
        sequence: None,
        run_id: None,
        step: None,
        attempt: None,
        schedule: None,
        slot_at: None,
        worker_id: None,
        message: Some(format!(
            "target {name} works (sent by {})",
            scheduler_producer::default_trigger("cli")
        )),
        detail: serde_json::json!({}),
    };
    let attempt = send::send(&config, target, &event, None, &send::process_env).await;
    let delivered = attempt.answer == scheduler_alerts::Answer::Delivered;
    if json {
        let out = serde_json::json!({
            "target": name,
            "type": target.kind_name(),
            "delivered": delivered,
            "answer": format!("{:?}", attempt.answer).to_lowercase(),
            "status": attempt.status,
            "body": attempt.excerpt,
            "elapsed_ms": attempt.elapsed.as_secs_f64() * 1000.0,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let status = attempt.status.map(|s| format!(" {s}")).unwrap_or_default();
        let what = match (delivered, attempt.answer) {
            (true, _) => "delivered".to_string(),
            (false, scheduler_alerts::Answer::Transient) => "not delivered (would be retried)".into(),
            (false, _) => "not delivered (would not be retried)".into(),
        };
        println!(
            "target {name} ({}): {what}, answer{status} in {}",
            target.kind_name(),
            ms(attempt.elapsed)
        );
        if !attempt.excerpt.is_empty() {
            println!("  {}", attempt.excerpt.replace('\n', "\n  "));
        }
    }
    Ok(if delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn run(g: &Global, every_ms: u64) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    // Said now, not at the first pass.
    scheduler_alerts::sender::load(project.dir()).map_err(anyhow::Error::msg)?;
    let store = connect::store(g, 2).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        token.cancel();
    });
    let config = scheduler_alerts::sender::SenderConfig {
        every: Duration::from_millis(every_ms.max(50)),
        ..scheduler_alerts::sender::SenderConfig::new(project.dir())
    };
    let id = uuid::Uuid::now_v7();
    tracing::info!(sender = %id, "delivering alerts until SIGTERM");
    scheduler_alerts::sender::run(store, id, config, stop).await;
    Ok(ExitCode::SUCCESS)
}

async fn list(g: &Global, limit: i64, json: bool) -> anyhow::Result<ExitCode> {
    let store = connect::store(g, 1).await?;
    let deliveries = store.recent_deliveries(limit.clamp(1, 1000)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&deliveries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if deliveries.is_empty() {
        println!("no alert deliveries yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<16} {:<19} {:<20} {:<8} {:>8}  ANSWER",
        "WHEN (UTC)", "TARGET", "EVENT", "ABOUT", "STATE", "ATTEMPTS"
    );
    for d in deliveries {
        let answer = match (d.last_status, &d.last_error) {
            (Some(s), Some(e)) => format!("{s} {}", one_line(e)),
            (Some(s), None) => s.to_string(),
            (None, Some(e)) => one_line(e),
            (None, None) if d.folded > 0 => format!("{} more counted into it", d.folded),
            (None, None) => String::new(),
        };
        println!(
            "{:<20} {:<16} {:<19} {:<20} {:<8} {:>8}  {answer}",
            d.created_at.format("%Y-%m-%d %H:%M:%S"),
            d.target,
            d.kind,
            if d.subject.is_empty() { "-" } else { &d.subject },
            d.state,
            d.attempts
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}
