//! `SCHEDULER_SPAWN=posix_spawn`: modules started by tokio's `posix_spawn`
//! instead of `vfork.rs` (also the way on a kernel without `CLONE_PIDFD`).
//! One test: the setting is read once per process, before any spawn.
#![allow(unsafe_code)]

mod common;

use common::{TestDir, run};
use scheduler_executor::{Ending, spawn};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn with_posix_spawn_a_module_runs_is_accounted_and_fails_the_same_ways() {
    // SAFETY: the only test of this binary, before any thread reads the environment.
    unsafe { std::env::set_var("SCHEDULER_SPAWN", "posix_spawn") };
    let dir = TestDir::new();
    dir.script(
        "env.sh",
        r#"echo "$ETL_X|$(pwd)"; cat; echo "out"; echo "err" >&2; exit 3"#,
    );
    let mut spec = dir.spec(&["./env.sh"]);
    spec.env = vec![("ETL_X".into(), "x".into())];
    let outcome = run(spec).await;
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(outcome.ending, Ending::Exited(3));
    assert_eq!(outcome.stdout_tail, format!("x|{}\nout\n", cwd.display()));
    assert_eq!(outcome.stderr_tail, "err\n");
    assert!(outcome.usage.is_some(), "the pidfd path reaps with wait4 here too");

    // The process group, and the signal state the module starts with.
    let running = spawn(dir.spec(&["/bin/cat", "/proc/self/stat", "/proc/self/status"]))
        .await
        .unwrap();
    let pid = running.pid();
    assert!(!running.started_with_clone());
    let outcome = running.wait(CancellationToken::new()).await;
    let pgrp: u32 = outcome
        .stdout_tail
        .lines()
        .next()
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid);
    let blocked = outcome.stdout_tail.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    assert!(blocked.ends_with("0000000000000000"), "{blocked}");

    let bad = dir.file("bad.sh", "#!/no/such/interpreter\n");
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let e = spawn(dir.spec(&["./bad.sh"])).await.err().expect("refused");
    let msg = format!(
        "{e}: {}",
        std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
    );
    assert!(msg.contains("#! line"), "{msg}");

    // The wall time runs from the spawn's start here too.
    common::assert_wall_time_covers_the_exec(&dir).await;
}
