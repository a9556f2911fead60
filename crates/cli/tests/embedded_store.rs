//! Bad input of the embedded mode only: the store's directory cannot be
//! made, the file is garbage or from a newer version, another project's file,
//! a full disk. Each is a clear error that says what to do, exit code 3, and
//! what was recorded before is still there once the cause is gone. These
//! always run the binary with no URL, whatever `SCHEDULER_TEST_MODE` says.

mod common;

use common::{Env, LEDGER_MODULE, seq};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `scheduler args…` in `project`, in the embedded mode; `store` picks
/// another file (`DATABASE_URL=sqlite://…`).
fn run_in(project: &Path, store: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scheduler"));
    c.env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .env("SCHEDULER_PROJECT", project)
        .env("RUST_LOG", "warn")
        .current_dir(project)
        .stdin(Stdio::null());
    if let Some(path) = store {
        c.env("DATABASE_URL", format!("sqlite://{}", path.display()));
    }
    c.args(args).output().unwrap()
}

fn project() -> Env {
    Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&["ok"]))])
}

/// Starts a run of `s` (queued: no worker); its id.
fn record_a_run(project: &Path, store: Option<&Path>) -> String {
    let out = run_in(project, store, &["start", "s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The ids `runs --json` lists.
fn listed(project: &Path, store: Option<&Path>) -> Vec<String> {
    let out = run_in(project, store, &["runs", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts `out` failed with exit code 3 and an error naming every one of
/// `says`; returns the error.
fn refused(out: &Output, says: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{err}");
    for s in says {
        assert!(err.contains(s), "the error should say {s:?}:\n{err}");
    }
    assert!(!err.contains("database is locked"), "{err}");
    eprintln!("{}", err.trim());
    err
}

#[test]
fn a_store_directory_that_cannot_be_made_is_refused_saying_where_else_to_put_it() {
    let env = project();
    // A file where the store's directory should be: root can write anywhere,
    // but not make a directory there.
    std::fs::write(env.project.join(".scheduler"), "not a directory").unwrap();
    let out = run_in(&env.project, None, &["start", "s"]);
    refused(
        &out,
        &[".scheduler", "cannot create the directory", "DATABASE_URL=sqlite://"],
    );
    assert_eq!(
        std::fs::read_to_string(env.project.join(".scheduler")).unwrap(),
        "not a directory",
        "the file in the way is left alone"
    );
}

#[test]
fn a_store_on_a_read_only_filesystem_is_refused_and_keeps_its_runs() {
    let env = project();
    let run = record_a_run(&env.project, None);
    let dir = env.project.join(".scheduler");
    let d = dir.to_str().unwrap();
    // Root ignores file modes: a read-only bind mount is what stops it.
    let bound = Command::new("mount").args(["--bind", d, d]).status();
    if !bound.is_ok_and(|s| s.success()) {
        eprintln!("cannot bind-mount here (not root, or no mount namespace): not tested");
        return;
    }
    let ro = Command::new("mount").args(["-o", "remount,ro,bind", d]).status();
    let out = run_in(&env.project, None, &["start", "s"]);
    let _ = Command::new("umount").arg(d).status();
    assert!(ro.unwrap().success(), "remount read-only");
    refused(
        &out,
        &[
            "scheduler.db",
            "read-only",
            "make them writable",
            "DATABASE_URL=sqlite://",
        ],
    );
    assert_eq!(listed(&env.project, None), vec![run]);
}

#[test]
fn a_corrupt_store_is_refused_and_left_as_it_was() {
    let env = project();
    let path = env.store_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let out = run_in(&env.project, None, &["runs"]);
    refused(&out, &["scheduler.db", "not a scheduler store", "move it aside"]);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the damaged file is not touched"
    );
}

#[test]
fn a_store_written_by_a_newer_version_is_refused_and_keeps_its_runs() {
    let env = project();
    let run = record_a_run(&env.project, None);
    let path = env.store_path();
    let future = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                  VALUES (99991231000000, 'from the future', 1, X'00', 0)";
    store_sql(&path, future);
    let out = run_in(&env.project, None, &["runs"]);
    refused(
        &out,
        &["newer version of scheduler", "99991231000000", "Upgrade scheduler"],
    );
    store_sql(&path, "DELETE FROM _sqlx_migrations WHERE version = 99991231000000");
    assert_eq!(listed(&env.project, None), vec![run], "nothing lost");
}

#[test]
fn another_projects_store_is_refused_and_keeps_that_projects_runs() {
    let mine = project();
    let run = record_a_run(&mine.project, None);
    let other = project();
    let out = run_in(&other.project, Some(&mine.store_path()), &["start", "s"]);
    let err = refused(&out, &["belongs to the project at", "DATABASE_URL=sqlite://"]);
    assert!(
        err.contains(&std::fs::canonicalize(&mine.project).unwrap().display().to_string()),
        "{err}"
    );
    assert_eq!(listed(&mine.project, None), vec![run], "nothing lost, nothing added");
}

#[test]
fn a_full_disk_is_refused_saying_so_and_keeps_what_was_recorded() {
    let env = project();
    let dir = env.project.join("small");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", d])
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("cannot mount a small tmpfs here (not root?): not tested");
        return;
    }
    let store = dir.join("scheduler.db");
    let outcome = std::panic::catch_unwind(|| {
        let run = record_a_run(&env.project, Some(&store));
        // Fill the filesystem to the last byte.
        let filler = dir.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
            .stderr(Stdio::null())
            .status();
        let out = run_in(&env.project, Some(&store), &["start", "s"]);
        // SQLITE_FULL where a page is written; SQLITE_IOERR where the WAL's
        // index cannot grow, as it opens.
        refused(&out, &["full", "run the command again"]);
        std::fs::remove_file(&filler).unwrap();
        assert_eq!(listed(&env.project, Some(&store)), vec![run], "nothing lost");
    });
    let _ = Command::new("umount").arg(d).status();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_start_whose_start_etl_cannot_be_stored_records_no_run() {
    // The run and its start_etl are one transaction in this mode: a run is
    // never recorded without the message that starts it.
    let env = project();
    let first = record_a_run(&env.project, None);
    let db = env.project.join(".scheduler/scheduler.db");
    store_sql(
        &db,
        "CREATE TRIGGER refuse BEFORE INSERT ON queue_messages BEGIN SELECT RAISE(ABORT, 'the queue refuses'); END",
    );
    let out = run_in(&env.project, None, &["start", "s"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("the queue refuses"), "{err}");
    assert!(out.stdout.is_empty(), "a run id was printed");
    assert_eq!(
        listed(&env.project, None),
        vec![first.clone()],
        "a run was recorded without its start"
    );
    store_sql(&db, "DROP TRIGGER refuse");
    let second = record_a_run(&env.project, None);
    let mut both = listed(&env.project, None);
    both.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(both, expected);
}

/// One statement on the store file, from outside the binary.
fn store_sql(path: &Path, sql: &'static str) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use sqlx::Connection;
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
            let mut c = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        });
}
