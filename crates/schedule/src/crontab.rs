//! A crontab, read and planned as the modules, one-step sequences and
//! schedules that replace it, with a report line for each line of the file.
//! Pure: the caller reads the file and the project, says which names are
//! taken and which zone cron ran in, and writes what it chooses.
//!
//! A job's command is read by `shell` the way `/bin/sh` would. A plain
//! command becomes an argv run without a shell; a leading `cd DIR &&`
//! becomes the module's `cwd`; a trailing log redirect is dropped (the
//! scheduler records the output); anything else a shell is needed for keeps
//! a shell (`sh -c LINE`), and the report says why.

mod shell;

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The zone of schedules whose crontab sets no `CRON_TZ`/`TZ`.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    /// Where it came from, for the report ("--timezone", "the host's zone
    /// (/etc/timezone)").
    pub source: String,
}

/// What a crontab becomes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// One line per line of the crontab that is neither blank nor a comment,
    /// in file order, after one line about the timezone.
    pub report: Vec<String>,
}

/// One imported job: a module, its one-step sequence and its schedule, all
/// named `name`.
#[derive(Debug, Clone)]
pub struct Job {
    pub line: usize,
    pub name: String,
    pub module: ModuleEntry,
    pub schedule: ScheduleEntry,
}

/// A `modules.json` entry (fields in the order a reader expects).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleEntry {
    pub cmd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A `schedules.json` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleEntry {
    pub sequence: String,
    pub cron: String,
    pub timezone: String,
    pub description: String,
}

impl Plan {
    /// The `modules.json` entries: (name, pretty JSON), in file order.
    pub fn module_entries(&self) -> Vec<(String, String)> {
        self.jobs.iter().map(|j| (j.name.clone(), pretty(&j.module))).collect()
    }

    /// The `schedules.json` entries: (name, pretty JSON), in file order.
    pub fn schedule_entries(&self) -> Vec<(String, String)> {
        self.jobs
            .iter()
            .map(|j| (j.name.clone(), pretty(&j.schedule)))
            .collect()
    }

    /// The `modules.json` entries as one pretty JSON object.
    pub fn modules_json(&self) -> String {
        append_entries("{}", &self.module_entries()).unwrap_or_default()
    }

    /// The `schedules.json` entries as one pretty JSON object.
    pub fn schedules_json(&self) -> String {
        append_entries("{}", &self.schedule_entries()).unwrap_or_default()
    }
}

impl Job {
    /// `etl_sequences/<name>.json`: one step, the module.
    pub fn sequence_json(&self) -> String {
        format!("{}\n", pretty(&[serde_json::json!({"module_name": self.name})]))
    }
}

fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Adds `entries` (name, pretty JSON value) at the end of the JSON object
/// `text`, leaving every byte of what is there as it was (existing entries,
/// their order and layout); the new ones are indented by two spaces.
/// Refuses a text that is not one JSON object, and a name already in it.
pub fn append_entries(text: &str, entries: &[(String, String)]) -> Result<String, String> {
    let existing: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    if entries.is_empty() {
        return Ok(text.to_string());
    }
    if let Some((name, _)) = entries.iter().find(|(n, _)| existing.contains_key(n)) {
        return Err(format!("{name:?} is already there"));
    }
    // A valid object ends with its closing brace, once trailing blanks go.
    let body = text.trim_end().strip_suffix('}').ok_or("not a JSON object")?.trim_end();
    let mut out = body.to_string();
    for (i, (name, value)) in entries.iter().enumerate() {
        if i > 0 || !existing.is_empty() {
            out.push(',');
        }
        let key = serde_json::to_string(name).unwrap_or_default();
        let _ = write!(out, "\n  {key}: {}", value.trim_end().replace('\n', "\n  "));
    }
    out.push_str("\n}\n");
    Ok(out)
}

/// What the environment lines above a job left for it.
struct Context {
    env: BTreeMap<String, String>,
    zone: String,
    shell: String,
}

/// Plans the import of crontab `text`. `taken` says whether a name is
/// already used by a module, a sequence or a schedule of the project; the
/// names chosen here are unique among themselves too.
pub fn plan(text: &str, zone: &Zone, taken: impl Fn(&str) -> bool) -> Plan {
    let mut report = vec![format!(
        "timezone: {}, {}; cron ran these jobs in the host's local time (CRON_TZ= in the crontab, \
         or --timezone, sets another)",
        zone.name, zone.source
    )];
    let mut ctx = Context {
        env: BTreeMap::new(),
        zone: zone.name.clone(),
        shell: "sh".into(),
    };
    let mut jobs: Vec<Job> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim_end_matches('\r').trim_start();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let said = if line.starts_with(|c: char| c == '@' || c == '*' || c.is_ascii_digit()) {
            match job(number, line, &ctx) {
                Ok(Some((mut job, notes))) => {
                    let base = job.name.clone();
                    job.name = unique(&base, |n| taken(n) || jobs.iter().any(|j| j.name == n));
                    job.schedule.sequence = job.name.clone();
                    let mut said = describe(&job, &notes);
                    if job.name != base {
                        let _ = write!(said, "; named {} because {base} is taken", job.name);
                    }
                    jobs.push(job);
                    said
                }
                Ok(None) => reboot(line),
                Err(why) => format!("skipped, malformed: {why}"),
            }
        } else {
            match env_line(line) {
                Some((name, value)) => setting(&mut ctx, &name, &value),
                None => "skipped, malformed: neither a job (five fields or @daily and the like, then a \
                         command) nor an environment line NAME=value"
                    .to_string(),
            }
        };
        report.push(format!("line {number}: {said}"));
    }
    Plan { jobs, report }
}

/// `NAME=value` as cron reads it: blanks around `=` allowed, the value
/// taken literally (no `$` expansion), one pair of enclosing quotes removed.
fn env_line(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once('=')?;
    let name = name.trim();
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return None;
    }
    let value = value.trim();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q)?.strip_suffix(*q))
        .unwrap_or(value);
    Some((name.to_string(), unquoted.to_string()))
}

/// Applies an environment line to what follows it; returns its report.
fn setting(ctx: &mut Context, name: &str, value: &str) -> String {
    match name {
        "MAILTO" => format!(
            "MAILTO={value}: not imported; failures are not mailed; see alerts (meanwhile \
             `scheduler runs --state failed` and the UI list them)"
        ),
        "SHELL" => {
            if value == "/bin/sh" || value.is_empty() {
                "SHELL=/bin/sh: cron's default; the modules that need a shell run sh -c".to_string()
            } else {
                ctx.shell = value.to_string();
                format!("SHELL={value}: the modules below that need a shell run {value} -c")
            }
        }
        "CRON_TZ" | "TZ" => {
            let also_env = name == "TZ";
            if also_env {
                ctx.env.insert(name.into(), value.into());
            }
            let env = if also_env {
                " and it goes into the env of the modules below"
            } else {
                ""
            };
            if value.parse::<chrono_tz::Tz>().is_ok() {
                ctx.zone = value.to_string();
                format!("{name}={value}: the schedules below use timezone {value}{env}")
            } else {
                format!(
                    "{name}={value}: not an IANA time zone name such as Europe/Madrid; the schedules below \
                     keep timezone {}{env}",
                    ctx.zone
                )
            }
        }
        _ => {
            ctx.env.insert(name.into(), value.into());
            let literal = if value.contains('$') {
                " (taken literally: cron does not expand $ in environment lines)"
            } else {
                ""
            };
            format!("{name}={value}: added to the env of the modules below{literal}")
        }
    }
}

fn reboot(line: &str) -> String {
    let command = line.split_once(char::is_whitespace).map_or("", |(_, c)| c.trim());
    format!(
        "skipped: @reboot is not a schedule; start `{command}` at boot another way, e.g. a systemd unit \
         (Type=oneshot or simple, WantedBy=multi-user.target)"
    )
}

/// A job line: `Ok(None)` for `@reboot`, `Err` for a malformed line.
fn job(number: usize, line: &str, ctx: &Context) -> Result<Option<(Job, Vec<String>)>, String> {
    let (cron, command) = if line.starts_with('@') {
        let (alias, command) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let cron = match alias.to_ascii_lowercase().as_str() {
            "@reboot" => return Ok(None),
            "@midnight" => "@daily".to_string(),
            "@annually" => "@yearly".to_string(),
            a @ ("@hourly" | "@daily" | "@weekly" | "@monthly" | "@yearly") => a.to_string(),
            _ => {
                return Err(format!(
                    "{alias} is not a cron nickname (@hourly, @daily, @weekly, @monthly, @yearly, @annually, \
                     @midnight, @reboot)"
                ));
            }
        };
        (cron, command)
    } else {
        let mut rest = line;
        let mut fields = Vec::with_capacity(5);
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        (fields.join(" "), rest)
    };
    crate::parse_cron(&cron)?;
    let command = command.trim();
    if command.is_empty() {
        return Err(format!("{cron:?} is followed by no command"));
    }
    let found = shell::command_of(command, &ctx.shell)?;
    let mut env = ctx.env.clone();
    env.extend(found.env);
    let job = Job {
        line: number,
        name: found.name,
        module: ModuleEntry {
            cmd: found.cmd,
            cwd: found.cwd,
            env,
        },
        schedule: ScheduleEntry {
            sequence: String::new(),
            cron,
            timezone: ctx.zone.clone(),
            description: command.to_string(),
        },
    };
    Ok(Some((job, found.notes)))
}

fn describe(job: &Job, notes: &[String]) -> String {
    let argv = serde_json::to_string(&job.module.cmd).unwrap_or_default();
    let mut said = format!(
        "{} (module, sequence, schedule {:?} in {}): {argv}",
        job.name, job.schedule.cron, job.schedule.timezone
    );
    if let Some(cwd) = &job.module.cwd {
        let _ = write!(said, " in {cwd}");
    }
    for note in notes {
        let _ = write!(said, "; {note}");
    }
    said
}

/// `base`, or `base_2`, `base_3`... whichever is free first.
fn unique(base: &str, taken: impl Fn(&str) -> bool) -> String {
    (1..)
        .map(|n| {
            if n == 1 {
                base.to_string()
            } else {
                format!("{base}_{n}")
            }
        })
        .find(|name| !taken(name))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r"# sync
0 * * * * cd /srv/copycat && python3 sync_s3_es.py --bucket raw >> /var/log/copycat/sync.log 2>&1
*/2 * * * * /usr/bin/python3 /srv/limits/recompute.py
30 2 * * * /srv/scan/scanner.sh && /srv/scan/daily.sh && /srv/scan/updater.sh > /srv/scan/logs/$(date +\%F).log 2>&1
@reboot /srv/agent/start.sh
";

    fn zone() -> Zone {
        Zone {
            name: "Europe/Madrid".into(),
            source: "--timezone".into(),
        }
    }

    fn one(line: &str) -> Job {
        let p = plan(line, &zone(), |_| false);
        assert_eq!(p.jobs.len(), 1, "{:#?}", p.report);
        p.jobs[0].clone()
    }

    #[test]
    fn the_sample_crontab_becomes_three_jobs_and_a_skipped_reboot() {
        let p = plan(SAMPLE, &zone(), |_| false);
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["sync_s3_es", "recompute", "scanner"]);
        let sync = &p.jobs[0];
        assert_eq!(sync.module.cmd, ["python3", "sync_s3_es.py", "--bucket", "raw"]);
        assert_eq!(sync.module.cwd.as_deref(), Some("/srv/copycat"));
        assert_eq!(sync.schedule.cron, "0 * * * *");
        assert_eq!(sync.schedule.timezone, "Europe/Madrid");
        assert_eq!(sync.schedule.sequence, "sync_s3_es");
        assert_eq!(
            sync.schedule.description,
            "cd /srv/copycat && python3 sync_s3_es.py --bucket raw >> /var/log/copycat/sync.log 2>&1"
        );
        assert_eq!(p.jobs[1].module.cmd, ["/usr/bin/python3", "/srv/limits/recompute.py"]);
        assert_eq!(p.jobs[1].schedule.cron, "*/2 * * * *");
        assert_eq!(
            p.jobs[2].module.cmd,
            [
                "sh",
                "-c",
                "/srv/scan/scanner.sh && /srv/scan/daily.sh && /srv/scan/updater.sh > /srv/scan/logs/$(date +%F).log 2>&1"
            ]
        );
        assert_eq!(
            p.report,
            [
                "timezone: Europe/Madrid, --timezone; cron ran these jobs in the host's local time \
                 (CRON_TZ= in the crontab, or --timezone, sets another)",
                "line 2: sync_s3_es (module, sequence, schedule \"0 * * * *\" in Europe/Madrid): \
                 [\"python3\",\"sync_s3_es.py\",\"--bucket\",\"raw\"] in /srv/copycat; its output is now recorded \
                 by the scheduler (`scheduler show RUN`) instead of appended to /var/log/copycat/sync.log",
                "line 3: recompute (module, sequence, schedule \"*/2 * * * *\" in Europe/Madrid): \
                 [\"/usr/bin/python3\",\"/srv/limits/recompute.py\"]",
                "line 4: scanner (module, sequence, schedule \"30 2 * * *\" in Europe/Madrid): [\"sh\",\"-c\",\
                 \"/srv/scan/scanner.sh && /srv/scan/daily.sh && /srv/scan/updater.sh > /srv/scan/logs/$(date +%F).log \
                 2>&1\"]; needs a shell: an && chain of 3 commands (it could become a 3-step sequence), \
                 $(…) command substitution",
                "line 5: skipped: @reboot is not a schedule; start `/srv/agent/start.sh` at boot another way, \
                 e.g. a systemd unit (Type=oneshot or simple, WantedBy=multi-user.target)",
            ]
        );
    }

    #[test]
    fn every_planned_file_validates_with_the_schedule_parser() {
        let p = plan(SAMPLE, &zone(), |_| false);
        let names: Vec<String> = p.jobs.iter().map(|j| j.name.clone()).collect();
        let schedules = crate::parse("schedules.json", &p.schedules_json(), |s| names.iter().any(|n| n == s)).unwrap();
        assert_eq!(schedules.len(), 3);
        let modules: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&p.modules_json()).unwrap();
        assert_eq!(
            modules.keys().collect::<Vec<_>>(),
            ["recompute", "scanner", "sync_s3_es"]
        );
        let seq: serde_json::Value = serde_json::from_str(&p.jobs[0].sequence_json()).unwrap();
        assert_eq!(seq, serde_json::json!([{"module_name": "sync_s3_es"}]));
    }

    #[test]
    fn environment_lines_reach_the_modules_after_them() {
        let p = plan(
            "MAILTO=ops@example.com\nSHELL=/bin/bash\n* * * * * ./first\nFOO = \"a b\"\nPATH=$PATH:/opt\n\
             CRON_TZ=America/New_York\n0 3 * * * FOO=over ./second | cat\n0 4 * * * BAR=1 ./third\nTZ=Mars/Base\n",
            &zone(),
            |_| false,
        );
        let [first, second, third] = &p.jobs[..] else {
            panic!("{:#?}", p.report)
        };
        assert!(first.module.env.is_empty());
        assert_eq!(first.schedule.timezone, "Europe/Madrid");
        assert_eq!(second.module.env["FOO"], "a b");
        assert_eq!(second.module.env["PATH"], "$PATH:/opt");
        assert_eq!(
            second.module.cmd[0], "/bin/bash",
            "SHELL runs the lines that need a shell"
        );
        assert_eq!(second.schedule.timezone, "America/New_York");
        assert_eq!(third.module.env["BAR"], "1", "an assignment before the program");
        assert_eq!(third.module.env["FOO"], "a b");
        assert!(!third.module.env.contains_key("MAILTO") && !third.module.env.contains_key("CRON_TZ"));
        let report = p.report.join("\n");
        for expected in [
            "line 1: MAILTO=ops@example.com: not imported; failures are not mailed; see alerts",
            "line 2: SHELL=/bin/bash: the modules below that need a shell run /bin/bash -c",
            "line 4: FOO=a b: added to the env of the modules below",
            "line 5: PATH=$PATH:/opt: added to the env of the modules below (taken literally",
            "line 6: CRON_TZ=America/New_York: the schedules below use timezone America/New_York",
            "line 8: third",
            "BAR (set before the command) go into its env",
            "line 9: TZ=Mars/Base: not an IANA time zone name",
        ] {
            assert!(report.contains(expected), "{expected:?} in\n{report}");
        }
    }

    #[test]
    fn names_are_made_valid_and_unique() {
        let p = plan(
            "@hourly python3 -m etl.jobs.sync\n@hourly /usr/bin/env python3 /x/my job.v2.py\n\
             @daily ./my-job.sh\n@daily ./my-job.sh --again\n@daily bash -c 'echo hi'\n@daily ./.hidden\n",
            &zone(),
            |n| n == "my-job",
        );
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["sync", "my", "my-job_2", "my-job_3", "bash", "hidden"]);
        assert!(
            p.report[3].ends_with("named my-job_2 because my-job is taken"),
            "{}",
            p.report[3]
        );
        for job in &p.jobs {
            assert_eq!(job.schedule.sequence, job.name);
        }
    }

    #[test]
    fn nicknames_map_to_what_the_schedule_parser_takes() {
        for (nick, cron) in [
            ("@hourly", "@hourly"),
            ("@daily", "@daily"),
            ("@midnight", "@daily"),
            ("@weekly", "@weekly"),
            ("@monthly", "@monthly"),
            ("@yearly", "@yearly"),
            ("@ANNUALLY", "@yearly"),
        ] {
            let job = one(&format!("{nick} ./a"));
            assert_eq!(job.schedule.cron, cron);
            crate::parse_cron(&job.schedule.cron).unwrap();
        }
        assert_eq!(one("0\t2  * * sun,sat   ./a  x").schedule.cron, "0 2 * * sun,sat");
    }

    #[test]
    fn malformed_lines_are_reported_by_number_and_the_rest_imported() {
        let p = plan(
            "0 2 * * ./a\n@fortnightly ./b\n61 * * * * ./c\n* * * * *\nhello world\n* * * * * ./d 'open\n@daily ./ok\n",
            &zone(),
            |_| false,
        );
        assert_eq!(p.jobs.len(), 1);
        assert_eq!(p.jobs[0].line, 7);
        let report = p.report.join("\n");
        for expected in [
            "line 1: skipped, malformed: \"cron\" \"0 2 * * ./a\" is not a valid cron expression",
            "line 2: skipped, malformed: @fortnightly is not a cron nickname",
            "line 3: skipped, malformed: \"cron\" \"61 * * * *\"",
            "line 4: skipped, malformed: \"* * * * *\" is followed by no command",
            "line 5: skipped, malformed: neither a job",
            "line 6: skipped, malformed: an unterminated ' quote",
        ] {
            assert!(report.contains(expected), "{expected:?} in\n{report}");
        }
    }

    #[test]
    fn entries_are_appended_leaving_the_existing_text_as_it_was() {
        let entry = |name: &str| (name.to_string(), "{\n  \"cmd\": \"./x\"\n}".to_string());
        assert_eq!(
            append_entries("{}", &[entry("a"), entry("b")]).unwrap(),
            "{\n  \"a\": {\n    \"cmd\": \"./x\"\n  },\n  \"b\": {\n    \"cmd\": \"./x\"\n  }\n}\n"
        );
        let existing = "{\n  \"z\": {\"cmd\": \"./z\",   \"timeout_secs\": 5},\n  \"m\": {\"cmd\": \"./m\"}\n}\n";
        let merged = append_entries(existing, &[entry("a")]).unwrap();
        assert_eq!(
            merged,
            "{\n  \"z\": {\"cmd\": \"./z\",   \"timeout_secs\": 5},\n  \"m\": {\"cmd\": \"./m\"},\n  \"a\": {\n    \"cmd\": \"./x\"\n  }\n}\n"
        );
        assert_eq!(
            append_entries("{\"q\":1}", &[entry("a")]).unwrap(),
            "{\"q\":1,\n  \"a\": {\n    \"cmd\": \"./x\"\n  }\n}\n"
        );
        assert!(
            append_entries("[]", &[entry("a")])
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            append_entries("{\"a\": 1}", &[entry("a")])
                .unwrap_err()
                .contains("\"a\" is already there")
        );
    }
}
