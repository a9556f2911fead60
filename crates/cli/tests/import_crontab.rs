//! `scheduler import-crontab` through the real binary: the plan and report
//! of the issue's sample crontab, `--write` into a project that `scheduler
//! validate` then accepts, a second `--write` that only adds `_2` names, and
//! an imported job run end to end in its `cd` directory with the crontab's
//! environment (first run, and a retry claimed from its message).

mod common;

use common::Env;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

const SAMPLE: &str = r"# sync
0 * * * * cd /srv/copycat && python3 sync_s3_es.py --bucket raw >> /var/log/copycat/sync.log 2>&1
*/2 * * * * /usr/bin/python3 /srv/limits/recompute.py
30 2 * * * /srv/scan/scanner.sh && /srv/scan/daily.sh && /srv/scan/updater.sh > /srv/scan/logs/$(date +\%F).log 2>&1
@reboot /srv/agent/start.sh
";

fn import(env: &Env, crontab: &str, extra: &[&str]) -> Output {
    let path = env.project.join("crontab.txt");
    std::fs::write(&path, crontab).unwrap();
    let mut args = vec!["import-crontab", path.to_str().unwrap(), "--timezone", "Europe/Madrid"];
    args.extend(extra);
    env.run(&args)
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The printed parts: a `# <title>` line, then its text.
fn sections(printed: &str) -> Vec<(String, String)> {
    let mut parts: Vec<(String, String)> = Vec::new();
    for line in printed.lines() {
        match (line.strip_prefix("# "), parts.last_mut()) {
            (Some(title), _) => parts.push((title.to_string(), String::new())),
            (None, Some((_, body))) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => panic!("text before the first part: {line}"),
        }
    }
    parts
}

#[test]
fn the_sample_crontab_prints_its_modules_sequences_schedules_and_a_report() {
    let env = Env::new(&[], &[]);
    let printed = stdout(&import(&env, SAMPLE, &[]));
    let parts = sections(&printed);
    let titles: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        titles,
        [
            "modules.json: entries to add",
            "etl_sequences/sync_s3_es.json",
            "etl_sequences/recompute.json",
            "etl_sequences/scanner.json",
            "schedules.json: entries to add",
            "report",
        ]
    );
    let modules: Value = serde_json::from_str(&parts[0].1).unwrap();
    assert_eq!(
        modules,
        json!({
            "sync_s3_es": {"cmd": ["python3", "sync_s3_es.py", "--bucket", "raw"], "cwd": "/srv/copycat"},
            "recompute": {"cmd": ["/usr/bin/python3", "/srv/limits/recompute.py"]},
            "scanner": {"cmd": ["sh", "-c",
                "/srv/scan/scanner.sh && /srv/scan/daily.sh && /srv/scan/updater.sh > /srv/scan/logs/$(date +%F).log 2>&1"]}
        })
    );
    let sequence: Value = serde_json::from_str(&parts[1].1).unwrap();
    assert_eq!(sequence, json!([{"module_name": "sync_s3_es"}]));
    let schedules: Value = serde_json::from_str(&parts[4].1).unwrap();
    assert_eq!(
        schedules["sync_s3_es"],
        json!({"sequence": "sync_s3_es", "cron": "0 * * * *", "timezone": "Europe/Madrid",
               "description": "cd /srv/copycat && python3 sync_s3_es.py --bucket raw >> /var/log/copycat/sync.log 2>&1"})
    );
    assert_eq!(schedules["recompute"]["cron"], "*/2 * * * *");
    assert_eq!(schedules["scanner"]["cron"], "30 2 * * *");
    let report: Vec<&str> = parts[5].1.lines().collect();
    assert_eq!(
        report[..5],
        [
            "timezone: Europe/Madrid, from --timezone; cron ran these jobs in the host's local time \
             (CRON_TZ= in the crontab, or --timezone, sets another)",
            "line 2: sync_s3_es (module, sequence, schedule \"0 * * * *\" in Europe/Madrid): \
             [\"python3\",\"sync_s3_es.py\",\"--bucket\",\"raw\"] in /srv/copycat; its output is now recorded by \
             the scheduler (`scheduler show RUN`) instead of appended to /var/log/copycat/sync.log",
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
    assert!(report.last().unwrap().starts_with("nothing was written"), "{report:?}");
    assert_eq!(env.read("modules.json"), "{}", "without --write nothing changes");
    assert!(!env.project.join("schedules.json").exists());
}

#[test]
fn write_adds_to_the_project_validates_and_a_second_write_only_adds_2_names() {
    // An existing module takes the name "recompute" already.
    let env = Env::new(&[("recompute", "#!/bin/sh\n")], &[]);
    let before = env.read("modules.json");
    let first = stdout(&import(&env, SAMPLE, &["--write"]));
    assert!(
        first.contains("wrote modules.json: added sync_s3_es, recompute_2, scanner"),
        "{first}"
    );
    assert!(
        first.contains("named recompute_2 because recompute is taken"),
        "{first}"
    );
    let validated = env.run(&["validate"]);
    assert!(
        validated.status.success(),
        "validate: {}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let said = String::from_utf8_lossy(&validated.stdout);
    assert!(said.contains("3 sequence(s) and 3 schedule(s)"), "{said}");
    // The cd of the sample does not exist here: said, not refused.
    assert!(
        String::from_utf8_lossy(&validated.stderr).contains("its cwd /srv/copycat does not exist here"),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let modules = env.read("modules.json");
    let kept = before.trim_end().strip_suffix('}').unwrap();
    assert!(
        modules.starts_with(kept),
        "the existing entry is kept as it was:\n{modules}"
    );
    let (modules_1, schedules_1) = (modules, env.read("schedules.json"));
    let sequence_1 = env.read("etl_sequences/sync_s3_es.json");

    let second = stdout(&import(&env, SAMPLE, &["--write"]));
    assert!(
        second.contains("wrote modules.json: added sync_s3_es_2, recompute_3, scanner_2"),
        "{second}"
    );
    for (file, old) in [("modules.json", &modules_1), ("schedules.json", &schedules_1)] {
        let new = env.read(file);
        assert!(
            new.starts_with(old.trim_end().strip_suffix('}').unwrap().trim_end()),
            "{file}: what was there is kept, in its order:\n{new}"
        );
        let parsed: serde_json::Map<String, Value> = serde_json::from_str(&new).unwrap();
        let old: serde_json::Map<String, Value> = serde_json::from_str(old).unwrap();
        for (name, value) in &old {
            assert_eq!(&parsed[name], value, "{file}: {name} unchanged");
        }
        assert!(parsed.contains_key("sync_s3_es_2") && parsed.contains_key("scanner_2"));
    }
    assert_eq!(env.read("etl_sequences/sync_s3_es.json"), sequence_1);
    assert_eq!(
        serde_json::from_str::<Value>(&env.read("etl_sequences/scanner_2.json")).unwrap(),
        json!([{"module_name": "scanner_2"}])
    );
    let validated = env.run(&["validate"]);
    assert!(validated.status.success());
    assert!(String::from_utf8_lossy(&validated.stdout).contains("6 sequence(s) and 6 schedule(s)"));
}

#[test]
fn a_crontab_with_nothing_to_import_exits_1_and_writes_nothing() {
    let env = Env::new(&[], &[]);
    let out = import(
        &env,
        "# nothing\nMAILTO=ops\n@reboot /srv/agent/start.sh\n0 2 * * ./x\n",
        &["--write"],
    );
    assert_eq!(out.status.code(), Some(1));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("line 3: skipped: @reboot"), "{printed}");
    assert!(printed.contains("line 4: skipped, malformed:"), "{printed}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to import"));
    assert_eq!(env.read("modules.json"), "{}");
    assert!(!env.project.join("schedules.json").exists());
    let unreadable = env.run(&["import-crontab", "/nonexistent/crontab"]);
    assert_eq!(unreadable.status.code(), Some(2));
}

/// Writes `sub/job.sh`: fails once if `fail_first`, then records its
/// argument, `$FOO` and its directory in `sub/ran.txt`.
fn job_in_subdir(env: &Env, fail_first: bool) {
    let sub = env.project.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let fail = if fail_first {
        "if [ ! -e failed-once ]; then touch failed-once; exit 1; fi\n"
    } else {
        ""
    };
    let script =
        format!("#!/bin/sh\n{fail}echo \"$1 ${{FOO-unset}} $(pwd -P) $ETL_STEP\" > ran.txt\necho to-the-log\n");
    let path = sub.join("job.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const CRONTAB: &str = "FOO=bar\nMAILTO=\"\"\n* * * * * cd sub && ./job.sh hello >> job.log 2>&1\n";

fn ran(env: &Env) -> String {
    let sub = env.project.join("sub").canonicalize().unwrap();
    assert_eq!(env.read("sub/ran.txt"), format!("hello bar {} 0\n", sub.display()));
    assert!(
        !env.project.join("sub/job.log").exists(),
        "the output goes to the scheduler, not to the log"
    );
    sub.display().to_string()
}

#[test]
fn an_imported_job_runs_in_its_cd_directory_with_the_crontab_environment() {
    let env = Env::new(&[], &[]);
    job_in_subdir(&env, false);
    let printed = stdout(&import(&env, CRONTAB, &["--write"]));
    assert!(
        printed.contains("line 1: FOO=bar: added to the env of the modules below"),
        "{printed}"
    );
    assert!(
        printed.contains("the cwd is now relative to the project directory"),
        "{printed}"
    );
    let module: Value = serde_json::from_str(&env.read("modules.json")).unwrap();
    assert_eq!(
        module["job"],
        json!({"cmd": ["./job.sh", "hello"], "cwd": "sub", "env": {"FOO": "bar"}})
    );
    let validated = env.run(&["validate"]);
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let out = env.run(&["run", "job"]);
    assert!(
        out.status.success(),
        "scheduler run job: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ran(&env);
    let runs: Value = serde_json::from_slice(&env.run(&["runs", "--json"]).stdout).unwrap();
    let detail = env.show(runs[0]["id"].as_str().unwrap().parse().unwrap());
    let step = &detail["snapshot"]["steps"][0];
    assert_eq!((&step["cwd"], &step["env"]["FOO"]), (&json!("sub"), &json!("bar")));
    let tail = detail["executions"][0]["stdout_tail"].as_str().unwrap_or_default();
    assert!(tail.contains("to-the-log"), "{detail:#}");
}

#[test]
fn a_retried_imported_job_is_claimed_from_its_message_with_the_same_cwd_and_env() {
    let env = Env::new(&[], &[]);
    job_in_subdir(&env, true);
    stdout(&import(&env, CRONTAB, &["--write"]));
    // A retry is published by recovery and claimed by a worker from its
    // message: the other way a step reaches a worker.
    let mut modules: Value = serde_json::from_str(&env.read("modules.json")).unwrap();
    modules["job"]["retries"] = json!(1);
    modules["job"]["retry_delay_secs"] = json!(0.1);
    std::fs::write(env.project.join("modules.json"), modules.to_string()).unwrap();
    let out = env.run(&["run", "job", "--reap-every", "1", "--wait-timeout", "60"]);
    assert!(
        out.status.success(),
        "scheduler run job: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.project.join("sub/failed-once").exists());
    ran(&env);
    let runs: Value = serde_json::from_slice(&env.run(&["runs", "--json"]).stdout).unwrap();
    let detail = env.show(runs[0]["id"].as_str().unwrap().parse().unwrap());
    let states: Vec<&str> = detail["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "succeeded"], "{detail:#}");
}
