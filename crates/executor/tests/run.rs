//! What a module sees (argv, env, cwd, stdin, process group) and how its ending is reported.

mod common;

use common::{TestDir, run};
use scheduler_executor::{Ending, spawn};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn arguments_reach_the_module_verbatim() {
    let dir = TestDir::new();
    dir.script("args.sh", r#"printf '%s\0' "$@""#);
    let args = [
        "plain",
        "with space",
        "",
        "'single' \"double\"",
        "a;b && c | d",
        "$(touch pwned) `touch pwned` $HOME",
        "line1\nline2",
        "non-ascii: é ü 漢字 🦀",
        "*",
        "-n",
    ];
    let mut argv = vec!["./args.sh"];
    argv.extend(args);
    let outcome = run(dir.spec(&argv)).await;
    assert_eq!(outcome.ending, Ending::Exited(0), "{}", outcome.stderr_tail);
    let expected: String = args.iter().map(|a| format!("{a}\0")).collect();
    assert_eq!(outcome.stdout_tail, expected);
    assert!(
        !dir.path().join("pwned").exists(),
        "an argument was interpreted by a shell"
    );
}

#[tokio::test]
async fn env_cwd_and_a_null_stdin_reach_the_module() {
    let dir = TestDir::new();
    dir.script(
        "env.sh",
        r#"echo "$ETL_RUN_ID|$ETL_STEP|$(pwd)"; cat; echo "stdin done""#,
    );
    let mut spec = dir.spec(&["./env.sh"]);
    spec.env = vec![("ETL_RUN_ID".into(), "run 42".into()), ("ETL_STEP".into(), "1".into())];
    let outcome = run(spec).await;
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(outcome.stdout_tail, format!("run 42|1|{}\nstdin done\n", cwd.display()));
    assert!(outcome.succeeded());
}

#[tokio::test]
async fn a_path_in_spec_env_is_used_to_find_the_program() {
    let dir = TestDir::new();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    dir.script("bin/only-here", "echo found");
    let mut spec = dir.spec(&["only-here"]);
    spec.env = vec![(
        "PATH".into(),
        format!("{}:/usr/bin:/bin", dir.path().join("bin").display()),
    )];
    assert_eq!(run(spec).await.stdout_tail, "found\n");
}

#[tokio::test]
async fn pid_is_the_process_group_id() {
    let dir = TestDir::new();
    // Field 5 of /proc/<pid>/stat is the process group; the command name ("sh") has no spaces.
    dir.script("pgid.sh", "cut -d' ' -f1,5 /proc/$$/stat");
    let running = spawn(dir.spec(&["./pgid.sh"])).await.unwrap();
    assert!(running.started_with_clone(), "this kernel has CLONE_PIDFD (Linux 5.2+)");
    let pid = running.pid();
    let outcome = running.wait(CancellationToken::new()).await;
    assert_eq!(outcome.stdout_tail, format!("{pid} {pid}\n"));
    assert!(pid != std::process::id());
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let dir = TestDir::new();
    let outcome = run(dir.spec(&["/bin/sh", "-c", "echo oops >&2; exit 3"])).await;
    assert_eq!(outcome.ending, Ending::Exited(3));
    assert_eq!((outcome.exit_code, outcome.signal), (Some(3), None));
    assert_eq!(outcome.describe(), "exit code 3");
    assert_eq!((outcome.stderr_tail.as_str(), outcome.stderr_bytes), ("oops\n", 5));
    assert!(!outcome.succeeded());
    assert!(outcome.leftover.is_none());
}

#[tokio::test]
async fn a_module_killed_by_a_signal_is_reported_as_signaled() {
    let dir = TestDir::new();
    dir.script("suicide.sh", "echo before; kill -9 $$");
    let outcome = run(dir.spec(&["./suicide.sh"])).await;
    assert_eq!(outcome.ending, Ending::Signaled(9));
    assert_eq!((outcome.exit_code, outcome.signal), (None, Some(9)));
    // Our own kills are timeouts or cancels: this SIGKILL came from elsewhere.
    assert!(!outcome.oom_killed);
    assert_eq!(
        outcome.describe(),
        "killed by SIGKILL from outside the scheduler: out of memory?"
    );
    assert_eq!(outcome.stdout_tail, "before\n");
}

#[tokio::test]
async fn the_kernel_accounts_peak_memory_and_cpu_of_the_module_and_its_children() {
    let dir = common::TestDir::new();
    // A child that touches ~64 MiB and burns some CPU, waited for by the shell.
    let script = "python3 -c 'b = bytearray(64 * 1024 * 1024); s = 0\nfor i in range(0, len(b), 4096): b[i] = 1\nfor i in range(2000000): s += i'";
    let outcome = common::run(dir.spec(&["/bin/sh", "-c", script])).await;
    assert_eq!(
        outcome.ending,
        scheduler_executor::Ending::Exited(0),
        "{}",
        outcome.stderr_tail
    );
    let usage = outcome.usage.expect("accounting from wait4 (Linux 5.3+)");
    let rss = usage.max_rss_kib.expect("above the test process's own peak");
    assert!((64 * 1024..1024 * 1024).contains(&rss), "peak RSS {rss} KiB");
    assert!(
        usage.user_cpu + usage.system_cpu >= std::time::Duration::from_millis(20),
        "{usage:?}"
    );
}

/// The child shares the worker's memory until it execs (`vfork.rs`), with
/// every signal blocked: the module must still start with none blocked,
/// and with `SIGPIPE` at its default although Rust's runtime ignores it here.
#[tokio::test]
async fn a_module_starts_with_no_signal_blocked_and_sigpipe_at_its_default() {
    // A handler of this process's own, which must not reach the module either.
    let _term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).unwrap();
    let dir = TestDir::new();
    // cat itself, no shell between (which would change them): its status
    // shows what it inherited.
    let outcome = run(dir.spec(&["/bin/cat", "/proc/self/status"])).await;
    assert!(outcome.succeeded(), "{}", outcome.describe());
    let mask = |name: &str| {
        let line = outcome.stdout_tail.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{}", outcome.stdout_tail);
    let bit = |sig: i32| 1u64 << (sig - 1);
    assert_eq!(mask("SigIgn:") & bit(libc::SIGPIPE), 0, "{}", outcome.stdout_tail);
    assert_eq!(
        mask("SigCgt:"),
        0,
        "handlers do not survive exec: {}",
        outcome.stdout_tail
    );
}

#[tokio::test]
async fn the_module_inherits_the_environment_with_the_spec_env_over_it() {
    let dir = TestDir::new();
    dir.script("env.sh", r#"echo "$HOME|$ETL_X""#);
    let mut spec = dir.spec(&["./env.sh"]);
    spec.env = vec![
        ("ETL_X".into(), "first".into()),
        ("ETL_X".into(), "last".into()),
        ("HOME".into(), "/elsewhere".into()),
    ];
    assert_eq!(run(spec).await.stdout_tail, "/elsewhere|last\n");
    let outcome = run(dir.spec(&["./env.sh"])).await;
    assert_eq!(
        outcome.stdout_tail,
        format!("{}|\n", std::env::var("HOME").unwrap_or_default())
    );
}

#[tokio::test]
async fn a_nul_byte_in_an_argument_or_the_env_is_refused_with_what_to_fix() {
    let dir = TestDir::new();
    dir.script("ok.sh", "exit 0");
    let e = spawn(dir.spec(&["./ok.sh", "a\0b"])).await.err().expect("refused");
    let msg = format!(
        "{e}: {}",
        std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
    );
    assert!(msg.contains("NUL byte") && msg.contains("command"), "{msg}");
    let mut spec = dir.spec(&["./ok.sh"]);
    spec.env = vec![("ETL_BAD".into(), "x\0y".into())];
    let e = spawn(spec).await.err().expect("refused");
    let msg = format!(
        "{e}: {}",
        std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
    );
    assert!(msg.contains("ETL_BAD contains a NUL byte"), "{msg}");
}
