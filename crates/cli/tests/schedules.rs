//! Schedules through the real binary and PostgreSQL: several `scheduler
//! beat` processes fire each slot exactly once, and a beat that was away
//! catches up as each schedule's policy says.

mod common;

use chrono::{DateTime, Utc};
use common::{Env, LEDGER_MODULE, seq};
use std::process::{Child, Stdio};
use std::time::Duration;
use uuid::Uuid;

fn spawn_beat(env: &Env, n: usize) -> Child {
    let log = std::fs::File::create(env.project.join(format!("beat-{n}.log"))).unwrap();
    env.cmd()
        .args(["beat", "--tick-ms", "100", "--on-time-secs", "2"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stop(mut beat: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(beat.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    beat.wait().unwrap();
}

type Ledger = Vec<(String, DateTime<Utc>, String, Option<Uuid>)>;
/// Each run's id, schedule and logical date.
type Runs = Vec<(Uuid, Option<String>, Option<DateTime<Utc>>)>;

/// The slot ledger and, for each slot's run, its schedule and logical date.
fn ledger(env: &Env) -> (Ledger, Runs) {
    (
        env.rows("SELECT schedule, slot_at, fate, run_id FROM schedule_slots ORDER BY schedule, slot_at"),
        env.rows("SELECT id, schedule, logical_date FROM runs ORDER BY created_at"),
    )
}

fn lags_ms(env: &Env, beats: usize) -> Vec<i64> {
    let mut lags: Vec<i64> = (0..beats)
        .flat_map(|n| {
            std::fs::read_to_string(env.project.join(format!("beat-{n}.log")))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split("lag_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
                .collect::<Vec<i64>>()
        })
        .collect();
    lags.sort();
    lags
}

#[test]
fn three_beats_fire_every_second_slot_exactly_once_for_30_seconds() {
    let mut env = Env::new(&[("tick", LEDGER_MODULE)], &[("tick", &seq(&["tick"]))]);
    std::fs::write(
        env.project.join("schedules.json"),
        r#"{"every_second": {"sequence": "tick", "cron": "* * * * * *"}}"#,
    )
    .unwrap();
    env.spawn_worker(&["-c", "8"]);
    let beats: Vec<Child> = (0..3).map(|n| spawn_beat(&env, n)).collect();
    std::thread::sleep(Duration::from_secs(30));
    beats.into_iter().for_each(stop);
    let (slots, runs) = ledger(&env);
    assert!(slots.len() >= 25, "{} slots in 30 s: {slots:?}", slots.len());
    for pair in slots.windows(2) {
        assert_eq!(
            (pair[1].1 - pair[0].1).num_seconds(),
            1,
            "a slot missing or doubled: {pair:?}"
        );
    }
    assert!(slots.iter().all(|s| s.2 == "started"), "{slots:?}");
    assert_eq!(runs.len(), slots.len(), "one run per slot, no more");
    for (schedule, slot, _, run) in &slots {
        let run = runs.iter().find(|r| Some(r.0) == *run).expect("the slot's run exists");
        assert_eq!((run.1.as_deref(), run.2), (Some(schedule.as_str()), Some(*slot)));
    }
    let lags = lags_ms(&env, 3);
    assert_eq!(lags.len(), slots.len(), "each slot fired by exactly one beat");
    let (p50, max) = (lags[lags.len() / 2], lags[lags.len() - 1]);
    eprintln!("slot lag over {} slots: p50 {p50} ms, max {max} ms", lags.len());
    assert!(
        max < 1000,
        "a slot fired more than a second late: p50 {p50} ms, max {max} ms"
    );
}

#[test]
fn a_beat_that_was_away_catches_up_as_each_policy_says() {
    let env = Env::new(&[("tick", LEDGER_MODULE)], &[("tick", &seq(&["tick"]))]);
    std::fs::write(
        env.project.join("schedules.json"),
        r#"{"latest": {"sequence": "tick", "cron": "* * * * * *"},
            "all": {"sequence": "tick", "cron": "* * * * * *", "catchup": "all"},
            "none": {"sequence": "tick", "cron": "* * * * * *", "catchup": "none"}}"#,
    )
    .unwrap();
    let beat = spawn_beat(&env, 0);
    std::thread::sleep(Duration::from_secs(3));
    stop(beat);
    // Away for 6 s: about 6 slots of each schedule pass with no scheduler.
    std::thread::sleep(Duration::from_secs(6));
    let beat = spawn_beat(&env, 1);
    std::thread::sleep(Duration::from_secs(3));
    stop(beat);
    let (slots, _) = ledger(&env);
    let fates =
        |schedule: &str| -> Vec<String> { slots.iter().filter(|s| s.0 == schedule).map(|s| s.2.clone()).collect() };
    for schedule in ["latest", "all", "none"] {
        let of: Vec<_> = slots.iter().filter(|s| s.0 == schedule).collect();
        for pair in of.windows(2) {
            assert_eq!(
                (pair[1].1 - pair[0].1).num_seconds(),
                1,
                "{schedule}: every slot has a fate: {of:?}"
            );
        }
    }
    let count = |schedule: &str, fate: &str| fates(schedule).iter().filter(|f| *f == fate).count();
    // The slots of the gap older than the 2 s "on time" bound (about 4).
    let gap = count("none", "missed");
    assert!((3..=7).contains(&gap), "none: {:?}", fates("none"));
    assert_eq!(count("all", "started"), fates("all").len(), "all: {:?}", fates("all"));
    assert!(count("latest", "coalesced") >= gap - 1, "latest: {:?}", fates("latest"));
    assert_eq!(count("latest", "missed") + count("all", "missed"), 0);
}

#[test]
fn a_paused_schedule_records_its_slots_as_paused_and_resumes() {
    let env = Env::new(&[("tick", LEDGER_MODULE)], &[("tick", &seq(&["tick"]))]);
    std::fs::write(
        env.project.join("schedules.json"),
        r#"{"every_second": {"sequence": "tick", "cron": "* * * * * *", "description": "test"}}"#,
    )
    .unwrap();
    let out = env.run(&["schedules", "pause", "nope"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no schedule named \"nope\" in schedules.json (known: every_second)")
    );
    let beat = spawn_beat(&env, 0);
    std::thread::sleep(Duration::from_secs(2));
    let out = env.run(&["schedules", "pause", "every_second", "--note", "upstream maintenance"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_secs(3));
    let listed = String::from_utf8_lossy(&env.run(&["schedules"]).stdout).into_owned();
    assert!(
        listed.contains("paused by cli:") && listed.contains("upstream maintenance"),
        "{listed}"
    );
    assert!(env.run(&["schedules", "resume", "every_second"]).status.success());
    std::thread::sleep(Duration::from_secs(2));
    stop(beat);
    let (slots, _) = ledger(&env);
    let fates: Vec<&str> = slots.iter().map(|s| s.2.as_str()).collect();
    for pair in slots.windows(2) {
        assert_eq!(
            (pair[1].1 - pair[0].1).num_seconds(),
            1,
            "every slot has a fate: {fates:?}"
        );
    }
    // started..., paused (about 3), started... in that order.
    let first_paused = fates.iter().position(|f| *f == "paused").expect("paused slots");
    let last_paused = fates.iter().rposition(|f| *f == "paused").unwrap();
    assert!(last_paused - first_paused + 1 >= 2, "{fates:?}");
    assert!(fates[..first_paused].iter().all(|f| *f == "started"), "{fates:?}");
    assert!(
        fates[first_paused..=last_paused].iter().all(|f| *f == "paused"),
        "{fates:?}"
    );
    assert!(
        !fates[last_paused + 1..].is_empty() && fates[last_paused + 1..].iter().all(|f| *f == "started"),
        "{fates:?}"
    );
    let json: serde_json::Value = serde_json::from_slice(&env.run(&["schedules", "--json"]).stdout).unwrap();
    assert_eq!(json[0]["name"], "every_second");
    assert_eq!(json[0]["paused"], false);
    assert_eq!(json[0]["last_fate"], "started");
    assert!(json[0]["next_fire"].is_string());
}

#[test]
fn a_backfill_creates_one_run_per_slot_once_and_obeys_the_concurrency_policy() {
    let env = Env::new(&[("tick", LEDGER_MODULE)], &[("tick", &seq(&["tick"]))]);
    std::fs::write(
        env.project.join("etl_sequences/one.json"),
        r#"{"max_concurrent": 1, "on_conflict": "skip", "steps": [{"module_name": "tick"}]}"#,
    )
    .unwrap();
    std::fs::write(
        env.project.join("schedules.json"),
        r#"{"daily": {"sequence": "tick", "cron": "0 6 * * *", "timezone": "Europe/Madrid"},
            "daily_one": {"sequence": "one", "cron": "0 6 * * *"}}"#,
    )
    .unwrap();
    let out = env.run(&["backfill", "daily", "--from", "2026-11-01", "--to", "2026-11-07"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        said.contains("7 slot(s)") && said.contains("7 run(s) created"),
        "{said}"
    );
    let out = env.run(&["backfill", "daily", "--from", "2026-11-01", "--to", "2026-11-07"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("0 run(s) created") && said.contains("7 already had a fate"),
        "{said}"
    );
    let (slots, runs) = ledger(&env);
    assert_eq!(slots.len(), 7);
    assert!(slots.iter().all(|s| s.2 == "backfilled"));
    assert_eq!(runs.len(), 7);
    // 06:00 in Madrid is 05:00 UTC in November.
    assert_eq!(slots[0].1.to_rfc3339(), "2026-11-01T05:00:00+00:00");
    // `runs --schedule` lists that schedule's runs only, with their slot.
    let listed: serde_json::Value =
        serde_json::from_slice(&env.run(&["runs", "--schedule", "daily", "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 7, "{listed:#}");
    let table = String::from_utf8_lossy(&env.run(&["runs", "--schedule", "daily"]).stdout).into_owned();
    assert!(table.contains("schedule:daily for 2026-11-07 05:00:00"), "{table}");
    let none = String::from_utf8_lossy(&env.run(&["runs", "--schedule", "daily_one"]).stdout).into_owned();
    assert!(none.contains("no runs recorded yet"), "{none}");
    // With no worker, the first run holds the only slot: the others are skipped.
    let out = env.run(&["backfill", "daily_one", "--from", "2026-11-01", "--to", "2026-11-03"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("1 run(s) created, 2 skipped by the concurrency policy"),
        "{said}"
    );
    let (slots, _) = ledger(&env);
    let fates: Vec<&str> = slots
        .iter()
        .filter(|s| s.0 == "daily_one")
        .map(|s| s.2.as_str())
        .collect();
    assert_eq!(fates, ["backfilled", "skipped", "skipped"]);
    let shown = String::from_utf8_lossy(&env.run(&["show", &slots[0].3.unwrap().to_string()]).stdout).into_owned();
    assert!(
        shown.contains("schedule  daily, slot 2026-11-01 05:00:00 UTC"),
        "{shown}"
    );
    let bad = env.run(&["backfill", "daily", "--from", "yesterday", "--to", "2026-11-07"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from: \"yesterday\" is neither a day"));
}

#[test]
fn a_scheduled_run_gets_its_logical_date_in_placeholders_and_environment() {
    // It writes its --output ($4), as the output contract asks.
    let module = "#!/bin/sh\necho \"$ETL_LOGICAL_DATE $ETL_SCHEDULE $ETL_RUN_ID $*\" >> ledger.txt\nmkdir -p out && : > \"$4\"\n";
    let steps = r#"[{"module_name": "m", "input": "in/{{ ds }}.csv", "output": "out/{{ds_nodash}}-{{ run_id }}",
                     "conf": "{{ yesterday_ds }}..{{ tomorrow_ds }}|{{ ts }}|{{ sequence }}"}]"#;
    let mut env = Env::new(&[("m", module)], &[("tick", steps)]);
    std::fs::write(
        env.project.join("schedules.json"),
        r#"{"daily": {"sequence": "tick", "cron": "0 6 * * *", "timezone": "Europe/Madrid"}}"#,
    )
    .unwrap();
    env.spawn_worker(&[]);
    let out = env.run(&["backfill", "daily", "--from", "2026-11-01", "--to", "2026-11-01"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (slots, _) = ledger(&env);
    let run = slots[0].3.unwrap();
    let v = env.wait_final(run, Duration::from_secs(60));
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(v["schedule"], "daily");
    assert_eq!(v["logical_date"], "2026-11-01T05:00:00Z");
    assert_eq!(
        env.read("ledger.txt").trim(),
        format!(
            "2026-11-01T06:00:00+01:00 daily {run} --input in/2026-11-01.csv --output out/20261101-{run} \
             --config 2026-10-31..2026-11-02|2026-11-01T06:00:00+01:00|tick"
        )
    );
    // A manual start for a given day fills them with that day.
    let out = env.run(&["start", "tick", "--logical-date", "2026-11-01"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manual: Uuid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let v = env.wait_final(manual, Duration::from_secs(60));
    assert_eq!(
        (&v["logical_date"], &v["schedule"]),
        (&serde_json::json!("2026-11-01T00:00:00Z"), &serde_json::Value::Null)
    );
    let line = env.read("ledger.txt").lines().nth(1).unwrap().to_string();
    assert!(
        line.starts_with("2026-11-01T00:00:00+00:00  ") && line.contains("--input in/2026-11-01.csv"),
        "{line}"
    );
    let out = env.run(&["start", "tick", "--logical-date", "last tuesday"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--logical-date \"last tuesday\": write a day"));
    // A bad placeholder is refused.
    std::fs::write(
        env.project.join("etl_sequences/bad.json"),
        r#"[{"module_name": "m", "output": "out/{{ dss }}"}]"#,
    )
    .unwrap();
    let out = env.run(&["start", "bad"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("step 0: \"output\": unknown placeholder {{ dss }}"),
        "{err}"
    );
}

#[test]
fn a_slot_whose_run_does_not_start_is_flagged_late_once() {
    let env = Env::new(&[("tick", LEDGER_MODULE)], &[("tick", &seq(&["tick"]))]);
    std::fs::write(
        env.project.join("schedules.json"),
        r#"{"every_second": {"sequence": "tick", "cron": "* * * * * *"}}"#,
    )
    .unwrap();
    // No worker: the runs stay queued.
    let log = std::fs::File::create(env.project.join("beat-0.log")).unwrap();
    let beat = env
        .cmd()
        .args(["beat", "--tick-ms", "100", "--late-after-secs", "2"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    stop(beat);
    let log = std::fs::read_to_string(env.project.join("beat-0.log")).unwrap();
    let warned = log.matches("slot late: its run has not started").count();
    assert!(warned >= 1, "{log}");
    let json: serde_json::Value = serde_json::from_slice(&env.run(&["schedules", "--json"]).stdout).unwrap();
    assert_eq!(json[0]["last_fate"], "started");
    let flagged = env.sql("SELECT count(*) FROM schedule_slots WHERE late_at IS NOT NULL");
    assert_eq!(
        flagged as usize, warned,
        "each late slot is flagged (and warned about) once"
    );
}
