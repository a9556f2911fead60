//! Worker settings, with the defaults a production deployment wants.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Modules this worker runs at once (its slots).
    pub concurrency: u16,
    /// Runs it may hold in flight beyond its module slots while modules are
    /// short, so that recording one step overlaps another run's module
    /// (`permits.rs`); 0: as many runs as slots.
    pub extra_runs: u16,
    /// The queues it consumes (one channel, one prefetch for all). A step
    /// on another queue is published there, never run here.
    pub queues: Vec<String>,
    /// How long a claimed step stays ours without a heartbeat renewing it.
    pub lease: Duration,
    /// How often the worker heartbeats (and renews leases): lease / 3.
    pub heartbeat_every: Duration,
    /// On SIGTERM, how long running modules may take to finish before they
    /// are stopped and handed back.
    pub drain_timeout: Duration,
    /// Timeout for modules that set none in modules.json (`None`: no limit).
    pub default_timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL of a module's process group.
    pub kill_grace: Duration,
    /// Bytes of each of stdout/stderr kept with the execution record.
    pub tail_bytes: usize,
    /// The whole log of each execution: its cap and how often it is written.
    pub logs: crate::logs::LogLimits,
    /// How often recovery runs (on the one worker holding the reaper lease).
    pub reap_every: Duration,
    /// How old unpublished or stuck work must be before recovery acts on it.
    pub republish_after: Duration,
    /// Executions of one step before a lost worker fails the run.
    pub max_attempts: u32,
    /// Retention the recovery loop applies on its own (`None`, the
    /// default: it deletes nothing): finished runs older than a bound go, a
    /// bounded number of batches per pass.
    pub prune: Option<scheduler_tracker::Retention>,
    /// How often the worker holding the reaper lease prunes.
    pub prune_every: Duration,
    /// How long a consumer with free slots may receive nothing while its
    /// queue has ready messages before it is considered stalled and rebuilt.
    pub stall_after: Duration,
    /// The command that runs the keeper (`scheduler keeper`), which stops
    /// this worker's modules if it dies; `None` runs without one.
    pub keeper: Option<Vec<std::ffi::OsString>>,
    /// Environment the keeper needs beyond the worker's (where the store
    /// is, to report the worker's death).
    pub keeper_env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    /// How often the alert sender looks for events to deliver (one worker
    /// at a time, under the alert lease); `None`: this worker sends none.
    pub alerts_every: Option<Duration>,
    /// Where the heartbeat writes the worker's health for a probe
    /// (`scheduler health`); `None`: nowhere.
    pub health_file: Option<std::path::PathBuf>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 4,
            extra_runs: 0,
            queues: vec![scheduler_core::DEFAULT_QUEUE.into()],
            lease: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(60),
            default_timeout: None,
            kill_grace: Duration::from_secs(10),
            tail_bytes: 16 * 1024,
            logs: crate::logs::LogLimits::default(),
            reap_every: Duration::from_secs(5),
            republish_after: Duration::from_secs(10),
            max_attempts: 3,
            prune: None,
            prune_every: Duration::from_secs(300),
            stall_after: Duration::from_secs(30),
            keeper: None,
            keeper_env: Vec::new(),
            alerts_every: Some(Duration::from_secs(1)),
            health_file: None,
        }
    }
}
