//! One execution = one attempt of one step. A worker claims it with a
//! compare-and-set `queued -> running` that also sets its lease, records the
//! module's pid, and finishes it with a compare-and-set `running -> <result>`
//! guarded by its own worker id, so a worker whose lease was taken away can
//! never overwrite the result of the attempt that replaced it. Each finds
//! its row by key only, the state it expects written `IS NOT DISTINCT FROM`
//! so that no index on `state` can serve it instead (`apply.rs`).

use crate::runs::parse_state;
use crate::{Result, Tracker};
use scheduler_core::{ExecState, RetryPolicy, RunState};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExecKey {
    pub run_id: Uuid,
    pub step: u32,
    pub attempt: u32,
}

impl std::fmt::Display for ExecKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {} step {} attempt {}", self.run_id, self.step, self.attempt)
    }
}

/// What a worker needs to run a claimed execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub module: String,
    pub argv: Vec<String>,
    pub timeout_secs: Option<u64>,
    pub sequence: String,
    pub step_count: u32,
    /// Retries of the step's failures this execution is (0: none).
    pub retry: u32,
    /// The run's logical date (RFC 3339) and schedule, for the module's
    /// `ETL_LOGICAL_DATE` and `ETL_SCHEDULE`.
    pub logical_date: Option<String>,
    pub schedule: Option<String>,
    /// The module's working directory and environment additions, from the
    /// run's snapshot (none: the project directory, nothing added).
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    /// What the worker watches while the module runs and checks after it.
    pub watch: StepWatch,
}

/// The parts of a snapshot step the worker watches and checks: the paths
/// it was given (placeholders filled), the output contract, the stall watch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct StepWatch {
    #[serde(default)]
    pub input: String,
    #[serde(default)]
    pub output: String,
    #[serde(default = "yes")]
    pub check_output: bool,
    #[serde(default)]
    pub stall_secs: Option<u64>,
    #[serde(default)]
    pub on_stall: scheduler_core::OnStall,
}

impl Default for StepWatch {
    fn default() -> Self {
        StepWatch {
            input: String::new(),
            output: String::new(),
            check_output: true,
            stall_secs: None,
            on_stall: scheduler_core::OnStall::Flag,
        }
    }
}

fn yes() -> bool {
    true
}

/// A snapshot step, decoded for its [`StepWatch`] only.
pub(crate) type StepDef = sqlx::types::Json<StepWatch>;

/// [`Claimed`] as a statement returns it.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimedRow {
    pub module: String,
    pub argv: Vec<String>,
    pub timeout_secs: Option<i64>,
    pub sequence: String,
    pub step_count: i32,
    pub retry: i32,
    pub logical_date: Option<String>,
    pub schedule: Option<String>,
    pub cwd: Option<String>,
    pub env: Option<ModuleEnv>,
    pub step_def: Option<StepDef>,
}

/// A snapshot step's `env` object, decoded strictly (a value that is not a
/// string is an error, never a guess).
pub(crate) type ModuleEnv = sqlx::types::Json<std::collections::BTreeMap<String, String>>;

/// The pairs of a snapshot step's `env`, in name order.
pub(crate) fn env_pairs(env: Option<ModuleEnv>) -> Vec<(String, String)> {
    env.map(|e| e.0.into_iter().collect()).unwrap_or_default()
}

impl From<ClaimedRow> for Claimed {
    fn from(r: ClaimedRow) -> Claimed {
        Claimed {
            module: r.module,
            argv: r.argv,
            timeout_secs: r.timeout_secs.map(|t| t.max(0) as u64),
            sequence: r.sequence,
            step_count: r.step_count.max(0) as u32,
            retry: r.retry.max(0) as u32,
            logical_date: r.logical_date,
            schedule: r.schedule,
            cwd: r.cwd,
            env: env_pairs(r.env),
            watch: r.step_def.map(|d| d.0).unwrap_or_default(),
        }
    }
}

/// The recorded result of an execution.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub state: ExecState,
    pub duration_ms: i64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
    /// From spawn to exit, to the microsecond.
    pub wall_us: Option<i64>,
    /// The kernel's accounting of the module and the children it waited for.
    pub peak_rss_kib: Option<i64>,
    pub user_cpu_us: Option<i64>,
    pub sys_cpu_us: Option<i64>,
    /// The declared local output as the module left it (exit 0 only).
    pub output: Option<OutputFacts>,
    /// What did not fail the step but should be seen (an input missing).
    pub warnings: Vec<String>,
    /// The module's process (group leader), recorded with the result; a
    /// module that runs for long has it recorded while it runs, too.
    pub pid: Option<u32>,
}

/// A step's output file after its module exited 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFacts {
    pub path: String,
    pub bytes: i64,
    pub mtime: chrono::DateTime<chrono::Utc>,
    /// Hex SHA-256, unless the file is larger than the hashing cap.
    pub sha256: Option<String>,
}

impl ExecResult {
    /// An execution that ended in `state`, with nothing else known yet.
    pub fn new(state: ExecState) -> ExecResult {
        ExecResult {
            state,
            duration_ms: 0,
            exit_code: None,
            signal: None,
            error: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            wall_us: None,
            peak_rss_kib: None,
            user_cpu_us: None,
            sys_cpu_us: None,
            output: None,
            warnings: Vec::new(),
            pid: None,
        }
    }
}

/// Claims a queued execution of a running run. `None` means it was not
/// claimable; [`crate::Store::exec_states`] tells why.
pub(crate) async fn claim(t: &Tracker, key: ExecKey, worker_id: Uuid, lease: Duration) -> Result<Option<Claimed>> {
    let row: Option<ClaimedRow> = sqlx::query_as(
        "UPDATE executions e
            SET state = 'running', worker_id = $4, started_at = now(),
                lease_until = now() + make_interval(secs => $5)
           FROM runs r
          WHERE e.run_id = $1 AND e.step = $2 AND e.attempt = $3 AND e.state IS NOT DISTINCT FROM 'queued'
            AND r.id = e.run_id AND r.state IS NOT DISTINCT FROM 'running'
      RETURNING e.module, e.argv, e.timeout_secs, r.sequence, r.step_count, e.retry,
                r.snapshot->>'logical_date' AS logical_date, r.snapshot->>'schedule' AS schedule,
                r.snapshot->'steps'->(e.step)->>'cwd' AS cwd, r.snapshot->'steps'->(e.step)->'env' AS env,
                r.snapshot->'steps'->(e.step) AS step_def",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(worker_id)
    .bind(lease.as_secs_f64())
    .fetch_optional(&t.pool)
    .await?;
    Ok(row.map(Claimed::from))
}

/// The run's state and the execution's state (if it exists).
pub(crate) async fn exec_states(t: &Tracker, key: ExecKey) -> Result<Option<(RunState, Option<ExecState>)>> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT r.state AS run_state, e.state AS exec_state
           FROM runs r LEFT JOIN executions e ON e.run_id = r.id AND e.step = $2 AND e.attempt = $3
          WHERE r.id = $1",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .fetch_optional(&t.pool)
    .await?;
    row.map(|(run, exec)| Ok((parse_state(run)?, exec.map(parse_state).transpose()?)))
        .transpose()
}

/// Marks a queued execution of a run that ended as canceled.
pub(crate) async fn cancel_queued(t: &Tracker, key: ExecKey) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE executions SET state = 'canceled', finished_at = now()
          WHERE run_id = $1 AND step = $2 AND attempt = $3 AND state IS NOT DISTINCT FROM 'queued'",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .execute(&t.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the module's pid (also its process group id).
pub(crate) async fn record_pid(t: &Tracker, key: ExecKey, worker_id: Uuid, pid: u32) -> Result<()> {
    sqlx::query(
        "UPDATE executions SET pid = $5
          WHERE run_id = $1 AND step = $2 AND attempt = $3 AND worker_id = $4 AND state IS NOT DISTINCT FROM 'running'",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(worker_id)
    .bind(pid as i32)
    .execute(&t.relaxed)
    .await?;
    Ok(())
}

/// Notes that the broker confirmed this execution's `exec_module`.
pub(crate) async fn mark_exec_published(t: &Tracker, key: ExecKey) -> Result<()> {
    sqlx::query(
        "UPDATE executions SET published_at = coalesce(published_at, now())
          WHERE run_id = $1 AND step = $2 AND attempt = $3",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .execute(&t.relaxed)
    .await?;
    Ok(())
}

/// The retry policy of a run's step, from its snapshot; read only when a
/// step failed, so that the hot path never decodes it. Runs recorded before
/// retries existed have none: the defaults (no retry).
pub(crate) async fn retry_policy(t: &Tracker, run_id: Uuid, step: u32) -> Result<RetryPolicy> {
    let policy: Option<Option<sqlx::types::Json<RetryPolicy>>> =
        sqlx::query_scalar("SELECT snapshot->'steps'->($2::int)->'retry' FROM runs WHERE id = $1")
            .bind(run_id)
            .bind(step as i32)
            .fetch_optional(&t.pool)
            .await?;
    Ok(policy.flatten().map(|p| p.0).unwrap_or_default())
}

/// Marks a running execution stalled (its module wrote nothing for its
/// `stall_secs`), or no longer stalled once it writes again. False when it
/// is not running (any more) or already so marked.
pub(crate) async fn mark_stalled(t: &Tracker, key: ExecKey, stalled: bool) -> Result<bool> {
    // Marking it stalled records `step_stalled` (alerts) in the same
    // statement: told once per stall, never for a mark that did not apply.
    let (done,): (i64,) = sqlx::query_as(
        "WITH m AS (
            UPDATE executions SET stalled_at = CASE WHEN $4 THEN now() END
             WHERE run_id = $1 AND step = $2 AND attempt = $3 AND state IS NOT DISTINCT FROM 'running'
               AND (stalled_at IS NULL) = $4
         RETURNING run_id, step, attempt, module
         ), ev AS (
            INSERT INTO events (kind, sequence, run_id, step, attempt, message, detail)
            SELECT 'step_stalled', r.sequence, m.run_id, m.step, m.attempt,
                   'no output for ' || coalesce(s.def->>'stall_secs', '?') || ' s'
                       || CASE WHEN s.def->>'on_stall' = 'kill' THEN '; stopped, handled as a failure' ELSE '' END,
                   jsonb_strip_nulls(jsonb_build_object('module', m.module, 'stall_secs', (s.def->>'stall_secs')::bigint,
                                                        'on_stall', s.def->>'on_stall'))
              FROM m JOIN runs r ON r.id = m.run_id
                     CROSS JOIN LATERAL (SELECT r.snapshot->'steps'->m.step AS def) s
             WHERE $4
         )
         SELECT count(*) FROM m",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(stalled)
    .fetch_one(&t.pool)
    .await?;
    Ok(done == 1)
}
