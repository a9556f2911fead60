//! The command-line grammar. Every setting is a flag and an environment
//! variable (clap's `env`), with defaults that match the local services and
//! docker-compose.yml.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "scheduler",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SCHEDULER_GIT_COMMIT"), ")"),
    after_help = "Exit codes: 0 ok; 1 a run failed, or what was asked does not apply (no such run, nothing to retry); \
                  2 usage or definition error; 3 PostgreSQL or RabbitMQ unreachable.",
    about = "A distributed ETL scheduler: run ETL sequences on RabbitMQ workers, tracked in PostgreSQL"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Project directory holding modules.json and etl_sequences/ (modules run here).
    #[arg(long, global = true, env = "SCHEDULER_PROJECT", default_value = ".")]
    pub project: PathBuf,
    /// The store of record. Unset (with AMQP_URL unset too): the embedded
    /// store, `.scheduler/scheduler.db` in the project, no server needed.
    /// `sqlite://PATH`: the embedded store in that file. `postgres://…` (with
    /// AMQP_URL): the distributed mode (the database is created if missing).
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// RabbitMQ URL, for the distributed mode (with a postgres:// DATABASE_URL),
    /// e.g. amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long, global = true, env = "AMQP_URL")]
    pub amqp_url: Option<String>,
    /// Queue: the one a started run goes to (unless its sequence names one);
    /// for a worker, the comma-separated queues it serves (etl,heavy).
    #[arg(long, global = true, env = "SCHEDULER_QUEUE", default_value = "etl")]
    pub queue: String,
    /// Type of the queues this command declares (the queue and its `.dead`):
    /// quorum (replicated, a delivery limit for poison messages) or classic.
    /// An existing queue keeps its type: see the README to move one.
    #[arg(long, global = true, env = "SCHEDULER_QUEUE_TYPE", default_value = "quorum")]
    pub queue_type: scheduler_broker::QueueType,
    /// Quorum queues: returns of a message (requeues, a consumer dying
    /// before settling it) after which RabbitMQ moves it to the `.dead` queue.
    #[arg(long, global = true, env = "SCHEDULER_DELIVERY_LIMIT", default_value_t = scheduler_broker::DEFAULT_DELIVERY_LIMIT)]
    pub delivery_limit: u32,
    /// Log format on stderr: text or json.
    #[arg(long, global = true, env = "SCHEDULER_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// `x-expires` (ms) for declared queues; for tests, so leftovers vanish.
    #[arg(long, global = true, env = "SCHEDULER_QUEUE_EXPIRES_MS", hide = true)]
    pub queue_expires_ms: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Record a run of a sequence and queue it; prints the run id.
    Start {
        /// Sequence name: etl_sequences/<SEQUENCE>.json
        sequence: String,
        /// Recorded as who/what triggered the run (default cli:<user>@<host>).
        #[arg(long, env = "SCHEDULER_TRIGGER")]
        trigger: Option<String>,
        /// The run's logical date for its placeholders and ETL_LOGICAL_DATE:
        /// a day (2026-11-01, midnight UTC) or an RFC 3339 time; default now.
        #[arg(long)]
        logical_date: Option<String>,
    },
    /// Consume the queue and run modules until SIGTERM / Ctrl-C.
    Worker(WorkerArgs),
    /// Fire the slots of schedules.json until SIGTERM (re-read on SIGHUP). Any
    /// number may run at once, on any hosts: each slot fires once.
    Beat {
        /// Milliseconds between two looks for due slots.
        #[arg(long, env = "SCHEDULER_BEAT_TICK_MS", default_value_t = 250)]
        tick_ms: u64,
        /// A slot older than this when a scheduler finds it passed while none
        /// ran: its schedule's catch-up policy decides.
        #[arg(long, env = "SCHEDULER_BEAT_ON_TIME_SECS", default_value_t = 10, hide = true)]
        on_time_secs: u64,
        /// Seconds after which a fired slot whose run has not started is flagged late.
        #[arg(long, env = "SCHEDULER_BEAT_LATE_AFTER_SECS", default_value_t = 60)]
        late_after_secs: u64,
    },
    /// One run per slot of a schedule in an interval (each recorded in the
    /// ledger as backfilled, obeying the sequence's concurrency policy);
    /// slots that already have a fate are left alone, so running it twice
    /// creates nothing more.
    Backfill {
        schedule: String,
        /// First day (YYYY-MM-DD, in the schedule's timezone) or RFC 3339 time.
        #[arg(long)]
        from: String,
        /// Last day, included (YYYY-MM-DD), or RFC 3339 time; at most now.
        #[arg(long)]
        to: String,
    },
    /// List the schedules (cron, timezone, next fire time, last slot and its
    /// fate, paused or not); pause or resume one.
    Schedules {
        #[command(subcommand)]
        action: Option<SchedulesAction>,
        #[arg(long)]
        json: bool,
    },
    /// Print the modules, sequences and schedules that would replace a
    /// crontab, with a report line per crontab line; --write adds them to
    /// the project, never overwriting a name. Exit 1 if nothing is importable.
    ImportCrontab {
        /// The crontab file (`crontab -l > FILE`).
        file: PathBuf,
        /// Write them into the project (--project) instead of printing them.
        #[arg(long)]
        write: bool,
        /// The IANA zone cron ran the jobs in, for schedules whose crontab
        /// sets no CRON_TZ (default: the host's zone, else UTC).
        #[arg(long)]
        timezone: Option<String>,
    },
    /// Start a run and work on it in this process until it ends (exit 0 if it succeeded).
    Run {
        sequence: String,
        #[command(flatten)]
        worker: WorkerArgs,
        /// Give up waiting after this many seconds (exit 1).
        #[arg(long)]
        wait_timeout: Option<u64>,
    },
    /// List recent runs, newest first.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        sequence: Option<String>,
        /// Only the runs this schedule started (its slots and backfills).
        #[arg(long)]
        schedule: Option<String>,
        /// waiting, queued, running, succeeded, failed, canceled or skipped
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one run and every execution of its steps.
    Show {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a run's module output from the record (any host, while it runs
    /// and after): every step in order, or one step's latest (or given) attempt.
    Logs {
        run_id: String,
        /// The step, from 1 as `show` numbers them.
        #[arg(long)]
        step: Option<u32>,
        /// The attempt of that step (default its latest).
        #[arg(long, requires = "step")]
        attempt: Option<u32>,
        /// Keep printing as the modules write, until the run ends.
        #[arg(short, long)]
        follow: bool,
        /// Only stdout or only stderr.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Delete finished runs older than a bound, with their executions and logs,
    /// in small batches that never lock out running work (never a run that is
    /// not final); --dry-run says what it would delete.
    Prune(crate::commands::prune::PruneArgs),
    /// Probe a worker: exit 0 if the worker writing --file (its --health-file)
    /// reached its database and its broker within --max-age seconds, 1 if not.
    Health {
        /// The worker's --health-file.
        #[arg(long, env = "SCHEDULER_HEALTH_FILE")]
        file: PathBuf,
        /// The reconnect budget in seconds (default: two of the worker's leases, 60 s).
        #[arg(long)]
        max_age: Option<u64>,
    },
    /// Print the shell completion script for bash, zsh or fish (also elvish,
    /// powershell): `scheduler completions bash > /etc/bash_completion.d/scheduler`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), from the same definitions as the parser:
    /// `scheduler man > /usr/local/share/man/man1/scheduler.1`.
    Man,
    /// Retry a failed run from its failed step (a new attempt of that step),
    /// as the UI's Retry button does; exit 1 if it does not apply.
    Retry {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a waiting, queued or running run, as the UI's Cancel button
    /// does (a running module is stopped); exit 1 if it does not apply.
    Cancel {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Recent alert deliveries (target, event, outcome); `alerts test TARGET`
    /// sends a test alert now and reports the answer; `alerts run` delivers
    /// alerts from this process.
    Alerts(crate::commands::alerts::AlertsArgs),
    /// Check modules.json, every sequence, and every module's command.
    Validate,
    /// Apply the database migrations (every command also does this on start).
    Migrate,
    /// Serve the monitoring web UI and JSON API (/api/v1, /healthz, /metrics).
    Ui {
        /// Address to listen on; anything but loopback requires --token.
        #[arg(long, env = "SCHEDULER_UI_BIND", default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Access token required by every request (Bearer header or /login?token=).
        #[arg(long, env = "SCHEDULER_UI_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Fill a database with a million runs and measure the UI's server-side latency.
    BenchUi {
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
        #[arg(long, default_value_t = 10)]
        steps_per_run: u32,
        #[arg(long, default_value_t = 200)]
        samples: u32,
        /// The benchmark's own database (its name must contain "bench").
        #[arg(long, env = "SCHEDULER_UI_BENCH_DATABASE_URL", default_value = scheduler_bench::ui::DEFAULT_DATABASE_URL)]
        bench_database_url: String,
    },
    /// Fill a database with a million runs, then prune half of them while a worker runs a
    /// stream of short runs: the prune's time, and step latencies before and during it.
    #[command(hide = true)]
    BenchPrune {
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
        #[arg(long, default_value_t = 10)]
        steps_per_run: u32,
        /// Seconds the stream runs before the prune starts (the baseline).
        #[arg(long, default_value_t = 30)]
        baseline_secs: u64,
        /// The benchmark's own database (its name must contain "bench").
        #[arg(long, env = "SCHEDULER_PRUNE_BENCH_DATABASE_URL", default_value = scheduler_bench::prune::DEFAULT_DATABASE_URL)]
        bench_database_url: String,
    },
    /// A module printing 50 MB as fast as it can, alternately under a worker and to /dev/null:
    /// both medians, their ratio (the target: at most 1.10 on a release build), the worker's peak RSS.
    #[command(hide = true)]
    BenchFlood {
        /// Runs of each kind.
        #[arg(long, default_value_t = 9)]
        reps: u32,
        /// Bytes the module prints.
        #[arg(long, default_value_t = 50_000_000)]
        bytes: u64,
        /// The benchmark's own database (its name must contain "bench").
        #[arg(long, env = "SCHEDULER_FLOOD_BENCH_DATABASE_URL", default_value = scheduler_bench::flood::DEFAULT_DATABASE_URL)]
        bench_database_url: String,
    },
    /// Measure dispatch throughput and overhead through the real broker and database.
    Bench(crate::commands::bench::BenchArgs),
    /// Started by each worker beside itself: when the worker dies (even by
    /// SIGKILL), stops the modules it was running. Not for direct use.
    #[command(hide = true)]
    Keeper {
        #[arg(long)]
        worker_id: String,
        #[arg(long, default_value_t = 10_000)]
        grace_ms: u64,
        /// Stop the worker's modules once it has been frozen this long.
        #[arg(long, default_value_t = 15_000)]
        freeze_ms: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum SchedulesAction {
    /// Pause a schedule: its slots are recorded as paused until it is resumed.
    Pause {
        name: String,
        /// Why, for whoever looks at it next.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Resume a paused schedule: its next slot fires as usual.
    Resume { name: String },
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Also fire the slots of schedules.json in this process (small setups).
    #[arg(long, env = "SCHEDULER_WORKER_BEAT")]
    pub beat: bool,
    /// Modules run at once.
    #[arg(short = 'c', long, env = "SCHEDULER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    /// Runs held in flight beyond --concurrency while modules are short (under 50 ms), so that
    /// recording one step overlaps another run's module; never more modules than --concurrency.
    /// Default: the concurrency. 0 keeps at most --concurrency runs in flight.
    #[arg(long, env = "SCHEDULER_EXTRA_RUNS")]
    pub extra_runs: Option<u16>,
    /// Seconds running modules may take to finish after SIGTERM before they are stopped and handed back.
    #[arg(long, env = "SCHEDULER_DRAIN_TIMEOUT", default_value_t = 60)]
    pub drain_timeout: u64,
    /// Seconds a claimed step is held without a heartbeat (heartbeats every third of it).
    #[arg(long, env = "SCHEDULER_LEASE", default_value_t = 30)]
    pub lease: u64,
    /// Default module timeout in seconds (0 = none); modules.json "timeout_secs" overrides it.
    #[arg(long, env = "SCHEDULER_MODULE_TIMEOUT", default_value_t = 0)]
    pub module_timeout: u64,
    /// Bytes of each execution's whole log recorded (its first and last
    /// halves; the middle of a longer one is counted, not kept); 0 records
    /// only the last 16 KiB of each stream with the execution.
    #[arg(long, env = "SCHEDULER_LOG_CAP", default_value_t = 16 * 1024 * 1024)]
    pub log_cap: u64,
    /// Seconds between SIGTERM and SIGKILL when a module's process group is stopped.
    #[arg(long, env = "SCHEDULER_KILL_GRACE", default_value_t = 10)]
    pub kill_grace: u64,
    /// Attempts of one step lost to a dead or cut-off worker before the run fails
    /// (counted apart from the step's own `retries` after failures).
    #[arg(long, env = "SCHEDULER_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Seconds between recovery passes (one worker at a time runs them): how soon
    /// a due retry is published and a dead worker's step is attempted again.
    #[arg(long, env = "SCHEDULER_REAP_EVERY", default_value_t = 5)]
    pub reap_every: u64,
    /// Seconds before recovery republishes unpublished work or re-decides a stuck run.
    #[arg(long, env = "SCHEDULER_REPUBLISH_AFTER", default_value_t = 10, hide = true)]
    pub republish_after: u64,
    /// Seconds a consumer with free slots may receive nothing while its queue has ready messages
    /// before it is rebuilt.
    #[arg(long, env = "SCHEDULER_STALL_AFTER", default_value_t = 30, hide = true)]
    pub stall_after: u64,
    /// Delete finished runs older than this (30d, 12h, 90m, 45s) from the recovery loop:
    /// a few batches every few minutes, by one worker at a time. Off unless set.
    #[arg(long, env = "SCHEDULER_PRUNE_OLDER_THAN", value_parser = crate::commands::prune::parse_age)]
    pub prune_older_than: Option<std::time::Duration>,
    /// With --prune-older-than: keep the N newest runs of each sequence whatever their age.
    #[arg(long, env = "SCHEDULER_PRUNE_KEEP_LAST")]
    pub prune_keep_last: Option<u32>,
    /// Seconds between two prune passes of the recovery loop.
    #[arg(long, env = "SCHEDULER_PRUNE_EVERY", default_value_t = 300, hide = true)]
    pub prune_every: u64,
    /// Rewrite this file at every heartbeat with whether the worker reaches its
    /// database and broker, for `scheduler health` (a liveness/readiness probe).
    #[arg(long, env = "SCHEDULER_HEALTH_FILE")]
    pub health_file: Option<PathBuf>,
    /// Stop (as on SIGTERM) when the process PID, which started this one,
    /// dies, even killed outright (`scheduler bench` starts its worker so).
    #[arg(long, value_name = "PID", hide = true)]
    pub stop_with_parent: Option<u32>,
}
