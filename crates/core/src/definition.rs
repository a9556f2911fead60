//! ETL definitions: a sequence file (`etl_sequences/<name>.json`, an ordered
//! list of steps) and the module table (`modules.json`), parsed from text and
//! validated once, at the edge. A [`Sequence`] that exists is valid against the
//! [`Modules`] it was checked with; a [`Snapshot`] freezes both for one run.

use crate::policy::{Concurrency, OnConflict, check_queue};
use crate::retry::{RetryPolicy, RetrySettings, take_settings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Everything that can be wrong with a definition. `Display` names the file,
/// the position and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Shape { file: String, message: String },
    #[error("{file}: the sequence has no steps; add at least one {{\"module_name\": ...}} step")]
    Empty { file: String },
    #[error(
        "{file}: step {index} uses module {module:?}, which modules.json does not define \
         (known modules: {known}); add it to modules.json or fix the name"
    )]
    UnknownModule {
        file: String,
        index: usize,
        module: String,
        known: String,
    },
    #[error("{file}: step {index}: {message}")]
    BadStep {
        file: String,
        index: usize,
        message: String,
    },
    #[error("{file}: module {module:?}: {message}")]
    BadModule {
        file: String,
        module: String,
        message: String,
    },
    #[error(
        "invalid sequence name {name:?}: use letters, digits, '_', '-' and '.', \
         as in etl_sequences/<name>.json"
    )]
    BadName { name: String },
}

/// One step as written in a sequence file. Empty strings mean "not given".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub module_name: String,
    #[serde(default)]
    pub input: String,
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub conf: String,
    /// The queue this step runs on, over the module's and the sequence's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Overrides of the module's stall watch for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stall: Option<OnStall>,
    /// Overrides of the module's retry policy for this step.
    #[serde(skip)]
    pub retry: RetrySettings,
}

impl Step {
    /// The arguments after the command: each flag only when its field is
    /// non-empty, values passed verbatim (no shell ever sees them).
    pub fn arguments(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, value) in [
            ("--input", &self.input),
            ("--output", &self.output),
            ("--config", &self.conf),
        ] {
            if !value.is_empty() {
                args.push(flag.to_string());
                args.push(value.clone());
            }
        }
        args
    }
}

/// How to run one module: the program (and fixed leading arguments), an
/// optional timeout after which the whole process group is killed, its
/// retry policy, and where and with what environment it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleDef {
    /// `cmd[0]` is the program; the rest are fixed arguments placed before
    /// the `--input/--output/--config` flags.
    pub cmd: Vec<String>,
    /// Seconds; `None` means the worker's default applies.
    pub timeout_secs: Option<u64>,
    /// The retry settings as written (steps may override them).
    #[serde(default)]
    pub retry: RetrySettings,
    /// The queue its steps run on unless a step names another.
    #[serde(default)]
    pub queue: Option<String>,
    /// The working directory, absolute or relative to the project directory
    /// (which it replaces); a relative program path resolves against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Added to the module's environment (the worker's `ETL_*` win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A step with a local `output` that exits 0 without writing it fails
    /// (the output contract); `false` opts out.
    #[serde(default = "yes")]
    pub check_output: bool,
    /// No output byte and no growth of the output file for this long marks
    /// the execution stalled; `on_stall` says what else happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_secs: Option<u64>,
    #[serde(default)]
    pub on_stall: OnStall,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

/// What a stalled execution gets: flagged (and an event), or also stopped
/// and handled as a failure (its retries apply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStall {
    #[default]
    Flag,
    Kill,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    cmd: RawCmd,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "yes")]
    check_output: bool,
    #[serde(default)]
    stall_secs: Option<u64>,
    #[serde(default)]
    on_stall: OnStall,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCmd {
    Program(String),
    Argv(Vec<String>),
}

/// The module table from `modules.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Modules(BTreeMap<String, ModuleDef>);

impl Modules {
    /// Parses `modules.json`: `{"<name>": {"cmd": "./x.sh"}}`, where `cmd` is
    /// one program path (taken verbatim, never split on spaces) or a list
    /// `["python3", "load.py"]`; `timeout_secs`, `queue`, `cwd` (a directory)
    /// and `env` (an object of strings) are optional.
    pub fn parse(file: &str, text: &str) -> Result<Modules, DefinitionError> {
        let raw: BTreeMap<String, serde_json::Value> = parse_json(
            file,
            text,
            "an object mapping each module name to {\"cmd\": \"./program\"}",
        )?;
        let mut modules = BTreeMap::new();
        for (name, value) in raw {
            let bad = |message: String| DefinitionError::BadModule {
                file: file.to_string(),
                module: name.clone(),
                message,
            };
            if name.trim().is_empty() {
                return Err(bad("a module name must not be empty".into()));
            }
            let mut value = value;
            let retry = match value.as_object_mut() {
                Some(object) => take_settings(object).map_err(&bad)?,
                None => RetrySettings::default(),
            };
            RetryPolicy::default().with(&retry).map_err(&bad)?;
            let module: RawModule = serde_json::from_value(value).map_err(|e| {
                bad(format!(
                    "{e}; expected {{\"cmd\": \"./program\"}} or {{\"cmd\": [\"program\", \"arg\"], \"timeout_secs\": 600, \
                     \"cwd\": \"dir\", \"env\": {{\"NAME\": \"value\"}}, \"check_output\": false, \"stall_secs\": 600, \
                     \"on_stall\": \"flag\" or \"kill\"}}"
                ))
            })?;
            let cmd = match module.cmd {
                RawCmd::Program(p) => vec![p],
                RawCmd::Argv(v) => v,
            };
            if cmd.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(bad("\"cmd\" is empty; give the path of the program to run".into()));
            }
            if module.timeout_secs == Some(0) {
                return Err(bad(
                    "\"timeout_secs\" must be at least 1 (leave it out for the worker's default)".into(),
                ));
            }
            if let Some(queue) = &module.queue {
                check_queue(queue).map_err(|e| bad(format!("\"queue\": {e}")))?;
            }
            check_cwd_and_env(module.cwd.as_deref(), &module.env).map_err(&bad)?;
            if module.stall_secs == Some(0) {
                return Err(bad(
                    "\"stall_secs\" must be at least 1 (leave it out: no stall watch)".into()
                ));
            }
            modules.insert(
                name,
                ModuleDef {
                    cmd,
                    timeout_secs: module.timeout_secs,
                    retry,
                    queue: module.queue,
                    cwd: module.cwd,
                    env: module.env,
                    check_output: module.check_output,
                    stall_secs: module.stall_secs,
                    on_stall: module.on_stall,
                },
            );
        }
        Ok(Modules(modules))
    }

    pub fn get(&self, name: &str) -> Option<&ModuleDef> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &ModuleDef)> {
        self.0.iter()
    }

    pub fn names(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }

    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Modules {
        Modules(
            pairs
                .iter()
                .map(|(n, c)| {
                    (
                        n.to_string(),
                        ModuleDef {
                            cmd: vec![c.to_string()],
                            timeout_secs: None,
                            retry: RetrySettings::default(),
                            queue: None,
                            cwd: None,
                            env: BTreeMap::new(),
                            check_output: true,
                            stall_secs: None,
                            on_stall: OnStall::Flag,
                        },
                    )
                })
                .collect(),
        )
    }
}

/// A validated sequence: non-empty, every step names a known module.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    name: String,
    steps: Vec<Step>,
    /// The queue of its runs and steps, unless a module or step names one.
    queue: Option<String>,
    concurrency: Concurrency,
    /// Pinged at each run's start, success and failure (a dead-man's switch).
    healthcheck_url: Option<String>,
}

/// What a sequence file may hold besides its steps, in its object form.
const SEQUENCE_FIELDS: &str = "\"steps\", \"queue\", \"max_concurrent\", \"on_conflict\", \"healthcheck_url\"";

const SEQUENCE_SHAPE: &str = "a list of steps [{\"module_name\": \"extract\", \"input\": \"\", \"output\": \"\", \"conf\": \"\"}], \
     or an object {\"steps\": [...], \"queue\": \"heavy\", \"max_concurrent\": 1, \"on_conflict\": \"queue\"}";

impl Sequence {
    /// Checks that `name` can be a sequence file name (no path tricks).
    pub fn check_name(name: &str) -> Result<(), DefinitionError> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok {
            Ok(())
        } else {
            Err(DefinitionError::BadName { name: name.to_string() })
        }
    }

    /// Parses a sequence file's text and validates it against `modules`:
    /// a plain list of steps, or the object form with the sequence's queue
    /// and concurrency policy.
    pub fn parse(name: &str, file: &str, text: &str, modules: &Modules) -> Result<Sequence, DefinitionError> {
        Sequence::check_name(name)?;
        let shape = |message: String| DefinitionError::Shape {
            file: file.to_string(),
            message,
        };
        let value: serde_json::Value = parse_json(file, text, SEQUENCE_SHAPE)?;
        let (raw, queue, concurrency, healthcheck_url) = match value {
            serde_json::Value::Array(steps) => (steps, None, Concurrency::default(), None),
            serde_json::Value::Object(mut object) => {
                let steps = match object.remove("steps") {
                    Some(serde_json::Value::Array(steps)) => steps,
                    Some(other) => {
                        return Err(shape(format!(
                            "\"steps\" must be a list of steps, found {}",
                            json_kind(&other)
                        )));
                    }
                    None => return Err(shape("the object form needs \"steps\": [...]".into())),
                };
                let (queue, concurrency) = take_sequence_settings(&mut object).map_err(shape)?;
                let healthcheck_url = match object.remove("healthcheck_url") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(url)) => {
                        check_healthcheck_url(&url).map_err(|e| shape(format!("\"healthcheck_url\": {e}")))?;
                        Some(url)
                    }
                    Some(other) => return Err(shape(format!("\"healthcheck_url\" must be a URL string, not {other}"))),
                };
                if let Some(field) = object.keys().next() {
                    return Err(shape(format!(
                        "unknown field {field:?}; a sequence object has {SEQUENCE_FIELDS}"
                    )));
                }
                (steps, queue, concurrency, healthcheck_url)
            }
            other => return Err(shape(format!("expected {SEQUENCE_SHAPE}, found {}", json_kind(&other)))),
        };
        if raw.is_empty() {
            return Err(DefinitionError::Empty { file: file.to_string() });
        }
        let mut steps = Vec::with_capacity(raw.len());
        for (index, value) in raw.into_iter().enumerate() {
            steps.push(parse_step(file, index, value, modules)?);
        }
        Ok(Sequence {
            name: name.to_string(),
            steps,
            queue,
            concurrency,
            healthcheck_url,
        })
    }

    /// The URL pinged at each run's start, success and failure, if any.
    pub fn healthcheck_url(&self) -> Option<&str> {
        self.healthcheck_url.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The sequence's own queue, if its file names one.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    pub fn concurrency(&self) -> Concurrency {
        self.concurrency
    }

    /// The queue of a run of this sequence (its `start_etl`, `end_etl`,
    /// `error_handler`, and every step that names no other): the sequence's
    /// own, else the one the run was started with.
    pub fn run_queue(&self, start_queue: &str) -> String {
        self.queue.clone().unwrap_or_else(|| start_queue.to_string())
    }

    /// Freezes this sequence and the commands it resolves to, so that a run
    /// stays reproducible however the files change afterwards. Each step's
    /// queue is resolved here, the most specific first: the step's, its
    /// module's, then `run_queue`.
    pub fn snapshot(&self, modules: &Modules, run_queue: &str) -> Snapshot {
        self.snapshot_for(modules, run_queue, &crate::placeholder::Values::new())
    }

    /// [`Sequence::snapshot`] with the run's placeholder values filled into
    /// each step's `input`, `output` and `conf` (and so its argv).
    pub fn snapshot_for(&self, modules: &Modules, run_queue: &str, values: &crate::placeholder::Values) -> Snapshot {
        let fill = |text: &str| crate::placeholder::fill(text, values);
        let steps = self
            .steps
            .iter()
            .map(|step| {
                // Present by construction: `parse` checked every module name.
                let module = modules.get(&step.module_name).cloned().unwrap_or(ModuleDef {
                    cmd: vec![],
                    timeout_secs: None,
                    retry: RetrySettings::default(),
                    queue: None,
                    cwd: None,
                    env: BTreeMap::new(),
                    check_output: true,
                    stall_secs: None,
                    on_stall: OnStall::Flag,
                });
                let queue = step
                    .queue
                    .clone()
                    .or(module.queue)
                    .unwrap_or_else(|| run_queue.to_string());
                // Checked by `parse`; the defaults otherwise.
                let retry = RetryPolicy::default()
                    .with(&module.retry)
                    .and_then(|p| p.with(&step.retry))
                    .unwrap_or_default();
                let step = Step {
                    input: fill(&step.input),
                    output: fill(&step.output),
                    conf: fill(&step.conf),
                    ..step.clone()
                };
                let mut argv = module.cmd.clone();
                argv.extend(step.arguments());
                SnapshotStep {
                    module_name: step.module_name.clone(),
                    input: step.input.clone(),
                    output: step.output.clone(),
                    conf: step.conf.clone(),
                    cmd: module.cmd,
                    argv,
                    timeout_secs: module.timeout_secs,
                    retry,
                    queue: Some(queue),
                    cwd: module.cwd,
                    env: module.env,
                    check_output: module.check_output,
                    stall_secs: step.stall_secs.or(module.stall_secs),
                    on_stall: step.on_stall.unwrap_or(module.on_stall),
                }
            })
            .collect();
        Snapshot {
            sequence: self.name.clone(),
            steps,
            concurrency: self.concurrency,
            schedule: None,
            logical_date: values.get("ts").cloned(),
            healthcheck_url: self.healthcheck_url.clone(),
        }
    }
}

/// A healthcheck URL: `http(s)://host...`, no spaces; a run pings it
/// (`/start`, success, `/fail`) through the alert sender.
pub fn check_healthcheck_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} is not a URL with a host (and no spaces)"));
    }
    Ok(())
}

/// What a run executes, frozen when it was triggered. Stored as JSON with the
/// run; `argv` is exactly what the worker passes to `execve` (the program is
/// resolved against the worker's project directory when relative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub sequence: String,
    pub steps: Vec<SnapshotStep>,
    /// The sequence's concurrency policy when the run was triggered.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// The schedule that started the run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Pinged when the run starts, succeeds and fails: its schedule's, else
    /// its sequence's (recorded as events with the run's moves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck_url: Option<String>,
    /// The run's logical date (RFC 3339, in its schedule's timezone): its
    /// slot, or the time (or date) it was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStep {
    pub module_name: String,
    pub input: String,
    pub output: String,
    pub conf: String,
    pub cmd: Vec<String>,
    pub argv: Vec<String>,
    pub timeout_secs: Option<u64>,
    /// The effective retry policy (module, then step). Runs recorded before
    /// retries existed have none: no retry.
    #[serde(default = "no_retry")]
    pub retry: RetryPolicy,
    /// The queue the step runs on. Runs recorded before routing existed
    /// have none: the run's queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The module's working directory (absolute, or relative to the
    /// worker's project directory); none: the project directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The module's own environment additions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Whether a local `output` must be written for an exit 0 to succeed.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub check_output: bool,
    /// The stall watch (none: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_secs: Option<u64>,
    #[serde(default)]
    pub on_stall: OnStall,
}

fn no_retry() -> RetryPolicy {
    RetryPolicy::default()
}

/// A module's `cwd` and `env`: what `chdir` and the environment can take.
fn check_cwd_and_env(cwd: Option<&str>, env: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(cwd) = cwd {
        if cwd.trim().is_empty() {
            return Err("\"cwd\" is empty; give a directory, or leave it out to run in the project directory".into());
        }
        if cwd.contains('\0') {
            return Err("\"cwd\" contains a NUL byte".into());
        }
    }
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!(
                "\"env\": {name:?} is not a variable name; a name is not empty and has no '=' or NUL"
            ));
        }
        if value.contains('\0') {
            return Err(format!("\"env\": the value of {name} contains a NUL byte"));
        }
    }
    Ok(())
}

/// One step of a sequence file, checked against `modules`.
fn parse_step(
    file: &str,
    index: usize,
    mut value: serde_json::Value,
    modules: &Modules,
) -> Result<Step, DefinitionError> {
    let bad = |message: String| DefinitionError::BadStep {
        file: file.to_string(),
        index,
        message,
    };
    let retry = match value.as_object_mut() {
        Some(object) => take_settings(object).map_err(bad)?,
        None => RetrySettings::default(),
    };
    let mut step: Step = serde_json::from_value(value).map_err(|e| {
        bad(format!(
            "{e}; a step has \"module_name\" and optional \"input\", \"output\", \"conf\" strings, \
             a \"queue\", \"stall_secs\", \"on_stall\" and retry settings"
        ))
    })?;
    if step.module_name.trim().is_empty() {
        return Err(bad("\"module_name\" is empty".into()));
    }
    let Some(module) = modules.get(&step.module_name) else {
        return Err(DefinitionError::UnknownModule {
            file: file.to_string(),
            index,
            module: step.module_name,
            known: modules.names(),
        });
    };
    RetryPolicy::default()
        .with(&module.retry)
        .and_then(|p| p.with(&retry))
        .map_err(bad)?;
    step.retry = retry;
    if let Some(queue) = &step.queue {
        check_queue(queue).map_err(|e| bad(format!("\"queue\": {e}")))?;
    }
    if step.stall_secs == Some(0) {
        return Err(bad(
            "\"stall_secs\" must be at least 1 (leave it out for the module's)".into()
        ));
    }
    for (field, value) in [("input", &step.input), ("output", &step.output), ("conf", &step.conf)] {
        if value.contains('\0') {
            return Err(bad(format!("\"{field}\" contains a NUL byte")));
        }
        crate::placeholder::check(value).map_err(|e| bad(format!("\"{field}\": {e}")))?;
    }
    Ok(step)
}

/// Takes the sequence-level settings out of the object form.
fn take_sequence_settings(
    object: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(Option<String>, Concurrency), String> {
    let queue = match object.remove("queue") {
        None => None,
        Some(serde_json::Value::String(q)) => {
            check_queue(&q).map_err(|e| format!("\"queue\": {e}"))?;
            Some(q)
        }
        Some(other) => return Err(format!("\"queue\" must be a string such as \"heavy\", not {other}")),
    };
    let max_concurrent = match object.remove("max_concurrent") {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 && n <= u32::MAX as u64 => Some(n as u32),
            _ => {
                return Err(format!(
                    "\"max_concurrent\" must be a whole number of at least 1 (leave it out for no limit), not {value}"
                ));
            }
        },
    };
    let on_conflict = match object.remove("on_conflict") {
        None => OnConflict::default(),
        Some(serde_json::Value::String(s)) => OnConflict::parse(&s)?,
        Some(other) => return Err(format!("\"on_conflict\" must be a string, not {other}")),
    };
    Ok((
        queue,
        Concurrency {
            max_concurrent,
            on_conflict,
        },
    ))
}

fn parse_json<T: serde::de::DeserializeOwned>(file: &str, text: &str, expected: &str) -> Result<T, DefinitionError> {
    // Syntax first, so the position points at the broken character.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DefinitionError::Syntax {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: e.to_string().split(" at line").next().unwrap_or_default().to_string(),
    })?;
    let kind = json_kind(&value);
    serde_json::from_value(value).map_err(|_| DefinitionError::Shape {
        file: file.to_string(),
        message: format!("expected {expected}, found {kind}"),
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.steps.iter().map(|s| s.module_name.as_str()).collect();
        write!(f, "{} ({})", self.name, names.join(" -> "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules() -> Modules {
        Modules::from_pairs(&[("extract", "./extract.sh"), ("load", "./load.sh")])
    }

    fn check_err(text: &str, expected: &str) {
        let err = Sequence::parse("s", "etl_sequences/s.json", text, &modules())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "error {err:?} should contain {expected:?}");
        assert!(
            err.starts_with("etl_sequences/s.json"),
            "error {err:?} should name the file"
        );
    }

    #[test]
    fn a_valid_sequence_parses_and_builds_argv_with_only_given_flags() {
        let text = r#"[{"module_name":"extract","input":"","output":"out dir/a b.csv","conf":""},
                       {"module_name":"load","input":"x;$(rm -rf /)","output":"","conf":"c.json"}]"#;
        let seq = Sequence::parse("s", "f", text, &modules()).unwrap();
        let snap = seq.snapshot(&modules(), "etl");
        assert_eq!(snap.steps[0].argv, ["./extract.sh", "--output", "out dir/a b.csv"]);
        assert_eq!(
            snap.steps[1].argv,
            ["./load.sh", "--input", "x;$(rm -rf /)", "--config", "c.json"]
        );
    }

    #[test]
    fn missing_optional_fields_mean_not_given() {
        let seq = Sequence::parse("s", "f", r#"[{"module_name":"load"}]"#, &modules()).unwrap();
        assert_eq!(seq.snapshot(&modules(), "etl").steps[0].argv, ["./load.sh"]);
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        check_err("[\n{\"module_name\": \"extract\",}\n]", "line 2, column");
    }

    #[test]
    fn an_object_without_steps_says_what_is_expected() {
        check_err(r#"{"module_name":"extract"}"#, "the object form needs \"steps\"");
        check_err(r#""extract""#, "expected a list of steps");
        check_err(r#"{"steps":{"module_name":"extract"}}"#, "\"steps\" must be a list");
    }

    #[test]
    fn the_object_form_sets_the_queue_and_the_concurrency_policy() {
        let text = r#"{"queue":"light","max_concurrent":1,"on_conflict":"queue_one",
                       "steps":[{"module_name":"extract"},{"module_name":"load","queue":"heavy"}]}"#;
        let seq = Sequence::parse("s", "f", text, &modules()).unwrap();
        assert_eq!(seq.run_queue("etl"), "light");
        assert_eq!(seq.concurrency().max_concurrent, Some(1));
        assert_eq!(seq.concurrency().on_conflict, OnConflict::QueueOne);
        let snap = seq.snapshot(&modules(), &seq.run_queue("etl"));
        let queues: Vec<_> = snap.steps.iter().map(|s| s.queue.as_deref().unwrap()).collect();
        assert_eq!(queues, ["light", "heavy"]);
        assert_eq!(snap.concurrency, seq.concurrency());
    }

    #[test]
    fn the_most_specific_queue_wins_step_module_sequence_start() {
        let mods = Modules::parse(
            "modules.json",
            r#"{"extract":{"cmd":"./e"},"load":{"cmd":"./l","queue":"db"},"big":{"cmd":"./b","queue":"db"}}"#,
        )
        .unwrap();
        let text = r#"[{"module_name":"extract"},{"module_name":"load"},{"module_name":"big","queue":"heavy"}]"#;
        let seq = Sequence::parse("s", "f", text, &mods).unwrap();
        assert_eq!(seq.run_queue("from-start"), "from-start");
        let snap = seq.snapshot(&mods, &seq.run_queue("from-start"));
        let queues: Vec<_> = snap.steps.iter().map(|s| s.queue.as_deref().unwrap()).collect();
        assert_eq!(queues, ["from-start", "db", "heavy"]);
    }

    #[test]
    fn bad_policies_name_the_field_and_what_to_write() {
        let list = r#"[{"module_name":"extract"}]"#;
        let obj = |extra: &str| format!(r#"{{{extra}, "steps": {list}}}"#);
        check_err(
            &obj(r#""max_concurrent": 0"#),
            "\"max_concurrent\" must be a whole number of at least 1",
        );
        check_err(&obj(r#""max_concurrent": "one""#), "\"max_concurrent\" must be");
        check_err(
            &obj(r#""on_conflict": "skipp""#),
            "expected one of: queue, queue_one, skip, cancel_running",
        );
        check_err(
            &obj(r#""queue": "amq.gen""#),
            "\"queue\": queue \"amq.gen\" starts with \"amq.\"",
        );
        check_err(&obj(r#""queue": "a b""#), "not a valid queue name");
        check_err(&obj(r#""max_concurent": 1"#), "unknown field \"max_concurent\"");
        check_err(
            r#"[{"module_name":"extract","queue":"x.dead"}]"#,
            "step 0: \"queue\": queue \"x.dead\" ends with \".dead\"",
        );
    }

    #[test]
    fn a_sequence_may_name_a_healthcheck_url_frozen_in_its_snapshot() {
        let text = r#"{"healthcheck_url": "https://hc.example/ping/abc", "steps": [{"module_name":"extract"}]}"#;
        let seq = Sequence::parse("s", "f", text, &modules()).unwrap();
        assert_eq!(seq.healthcheck_url(), Some("https://hc.example/ping/abc"));
        let snap = seq.snapshot(&modules(), "etl");
        assert_eq!(snap.healthcheck_url.as_deref(), Some("https://hc.example/ping/abc"));
        let plain = Sequence::parse("s", "f", r#"[{"module_name":"extract"}]"#, &modules()).unwrap();
        let json = serde_json::to_value(plain.snapshot(&modules(), "etl")).unwrap();
        assert!(
            json.get("healthcheck_url").is_none(),
            "none: the stored JSON is unchanged"
        );
        check_err(
            r#"{"healthcheck_url": "hc.example/x", "steps": [{"module_name":"extract"}]}"#,
            "\"healthcheck_url\": \"hc.example/x\" is not an http:// or https:// URL",
        );
    }

    #[test]
    fn an_empty_sequence_is_refused() {
        check_err("[]", "has no steps");
    }

    #[test]
    fn an_unknown_module_names_the_step_and_the_known_modules() {
        check_err(
            r#"[{"module_name":"extract"},{"module_name":"transfrom"}]"#,
            "step 1 uses module \"transfrom\"",
        );
        check_err(r#"[{"module_name":"transfrom"}]"#, "known modules: extract, load");
    }

    #[test]
    fn unknown_fields_are_refused() {
        check_err(r#"[{"module_name":"extract","inptu":"x"}]"#, "unknown field `inptu`");
    }

    #[test]
    fn an_empty_module_name_is_refused() {
        check_err(r#"[{"module_name":""}]"#, "\"module_name\" is empty");
    }

    #[test]
    fn sequence_names_cannot_escape_the_directory() {
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(Sequence::check_name(bad).is_err(), "{bad:?}");
        }
        Sequence::check_name("dummy_etl-2.v1").unwrap();
    }

    #[test]
    fn modules_accept_a_program_or_an_argv_list_and_a_timeout() {
        let m = Modules::parse(
            "modules.json",
            r#"{"a":{"cmd":"./a b.sh"},"b":{"cmd":["python3","b.py"],"timeout_secs":5}}"#,
        )
        .unwrap();
        assert_eq!(m.get("a").unwrap().cmd, ["./a b.sh"]);
        assert_eq!(m.get("b").unwrap().cmd, ["python3", "b.py"]);
        assert_eq!(m.get("b").unwrap().timeout_secs, Some(5));
    }

    #[test]
    fn a_module_cwd_and_env_reach_the_snapshot_and_old_snapshots_still_read() {
        let mods = Modules::parse(
            "modules.json",
            r#"{"job":{"cmd":["./job.sh","hello"],"cwd":"sub dir","env":{"FOO":"bar","PATH":"/bin"}},"plain":{"cmd":"./p"}}"#,
        )
        .unwrap();
        let seq = Sequence::parse("s", "f", r#"[{"module_name":"job"},{"module_name":"plain"}]"#, &mods).unwrap();
        let snap = seq.snapshot(&mods, "etl");
        assert_eq!(snap.steps[0].cwd.as_deref(), Some("sub dir"));
        assert_eq!(snap.steps[0].env["FOO"], "bar");
        assert_eq!(snap.steps[0].argv, ["./job.sh", "hello"]);
        // Steps without them say nothing, so the stored JSON is unchanged.
        let json = serde_json::to_value(&snap).unwrap();
        assert!(json["steps"][1].get("cwd").is_none() && json["steps"][1].get("env").is_none());
        assert_eq!(json["steps"][0]["env"]["PATH"], "/bin");
        let back: Snapshot = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, snap);
        let mut old = json;
        for step in old["steps"].as_array_mut().unwrap() {
            let step = step.as_object_mut().unwrap();
            step.remove("cwd");
            step.remove("env");
        }
        let old: Snapshot = serde_json::from_value(old).unwrap();
        assert_eq!((old.steps[0].cwd.as_ref(), old.steps[0].env.len()), (None, 0));
    }

    #[test]
    fn bad_modules_say_which_module_and_what_to_fix() {
        let err = |t: &str| Modules::parse("modules.json", t).unwrap_err().to_string();
        assert!(err(r#"{"a":{"cmd":""}}"#).contains("module \"a\": \"cmd\" is empty"));
        assert!(err(r#"{"a":{"command":"x"}}"#).contains("module \"a\""));
        assert!(err(r#"{"a":{"cmd":"x","timeout_secs":0}}"#).contains("at least 1"));
        assert!(err(r#"{"a":{"cmd":"x","queue":""}}"#).contains("module \"a\": \"queue\""));
        assert!(err(r#"{"a":{"cmd":"x","cwd":" "}}"#).contains("module \"a\": \"cwd\" is empty"));
        assert!(err(r#"{"a":{"cmd":"x","env":{"A=B":"c"}}}"#).contains("\"env\": \"A=B\" is not a variable name"));
        assert!(err(r#"{"a":{"cmd":"x","env":{"":"c"}}}"#).contains("is not a variable name"));
        assert!(err(r#"{"a":{"cmd":"x","env":{"A":1}}}"#).contains("module \"a\""));
        assert!(err(r#"["a"]"#).contains("expected an object"));
        assert!(err("{").contains("modules.json: invalid JSON at line 1"));
    }
}
