//! Resolving programs, and the errors a user sees when a module cannot be started.

mod common;

use common::TestDir;
use scheduler_executor::{SpawnError, resolve_program, spawn};

#[test]
fn missing_relative_program_is_not_found_and_the_message_says_where_we_looked() {
    let dir = TestDir::new();
    let err = resolve_program("./x.sh", dir.path()).unwrap_err();
    let expected = dir.path().join("./x.sh");
    assert!(matches!(&err, SpawnError::NotFound { program, resolved } if program == "./x.sh" && *resolved == expected));
    assert_eq!(
        err.to_string(),
        format!(
            "command \"./x.sh\" not found (looked for {}); check the \"cmd\" of this module in modules.json",
            expected.display()
        )
    );
}

#[test]
fn file_without_execute_bit_is_not_executable_and_the_message_says_chmod() {
    let dir = TestDir::new();
    let path = dir.file("x.sh", "#!/bin/sh\necho hi\n");
    let err = resolve_program("./x.sh", dir.path()).unwrap_err();
    assert!(matches!(err, SpawnError::NotExecutable { .. }), "{err:?}");
    let resolved = dir.path().join("./x.sh");
    assert_eq!(
        err.to_string(),
        format!(
            "command \"./x.sh\" ({}) is not executable; run chmod +x {}",
            resolved.display(),
            resolved.display()
        )
    );
    // spawn reports the same error, before starting anything.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(spawn(dir.spec(&[path.to_str().unwrap()]))).err().unwrap();
    assert!(matches!(err, SpawnError::NotExecutable { .. }), "{err:?}");
}

#[test]
fn absolute_paths_symlinks_and_path_lookup_resolve_to_the_file() {
    let dir = TestDir::new();
    let script = dir.script("real.sh", "exit 0");
    assert_eq!(
        resolve_program(script.to_str().unwrap(), std::path::Path::new("/")).unwrap(),
        script
    );
    std::os::unix::fs::symlink(&script, dir.path().join("link")).unwrap();
    assert_eq!(
        resolve_program("./link", dir.path()).unwrap(),
        dir.path().join("./link")
    );
    let sh = resolve_program("sh", dir.path()).unwrap();
    assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
}

#[test]
fn unknown_program_on_path_is_not_found_and_empty_commands_are_rejected() {
    let dir = TestDir::new();
    let err = resolve_program("no-such-program-hopefully", dir.path()).unwrap_err();
    assert!(matches!(err, SpawnError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("not found in any directory of $PATH"), "{err}");
    assert!(matches!(resolve_program("", dir.path()), Err(SpawnError::EmptyArgv)));
}

#[tokio::test]
async fn empty_argv_is_rejected() {
    let dir = TestDir::new();
    let err = spawn(dir.spec(&[])).await.err().unwrap();
    assert!(matches!(err, SpawnError::EmptyArgv));
    assert!(err.to_string().contains("modules.json"));
}

#[tokio::test]
async fn a_directory_or_a_missing_cwd_is_an_io_error_that_names_the_path() {
    let dir = TestDir::new();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let err = resolve_program("./sub", dir.path()).unwrap_err();
    assert!(matches!(&err, SpawnError::Io { source, .. } if source.to_string().contains("not a regular file")));

    let mut spec = dir.spec(&["/bin/sh", "-c", "true"]);
    spec.cwd = dir.path().join("missing");
    let err = spawn(spec).await.err().unwrap();
    assert!(matches!(&err, SpawnError::Io { source, .. } if source.to_string().contains("working directory")));
}

#[tokio::test]
async fn script_with_a_missing_interpreter_says_to_check_its_shebang() {
    let dir = TestDir::new();
    let path = dir.file("bad.sh", "#!/no/such/interpreter\n");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = spawn(dir.spec(&["./bad.sh"])).await.err().unwrap();
    assert!(
        matches!(&err, SpawnError::Io { source, .. } if source.to_string().contains("#! line")),
        "{err:?}"
    );
}

/// The spawning thread reads the child's failure report without waiting
/// (`vfork.rs`): it must still find every report, with other spawns racing
/// it on other threads (whose children inherit its pipe until they exec).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_racing_other_spawns_on_other_threads_are_each_reported() {
    let dir = std::sync::Arc::new(TestDir::new());
    let bad = dir.file("bad.sh", "#!/no/such/interpreter\n");
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir.script("ok.sh", "exit 0");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let dir = dir.clone();
        tasks.push(tokio::spawn(async move {
            let failing = i % 2 == 0;
            let spec = dir.spec(&[if failing { "./bad.sh" } else { "./ok.sh" }]);
            match scheduler_executor::spawn(spec).await {
                Ok(running) => {
                    assert!(running.started_with_clone(), "the clone path is the one under test");
                    let outcome = running.wait(tokio_util::sync::CancellationToken::new()).await;
                    (failing, Some(outcome.exit_code))
                }
                Err(e) => {
                    assert!(
                        matches!(&e, SpawnError::Io { source, .. } if source.to_string().contains("#! line")),
                        "{e:?}"
                    );
                    (failing, None)
                }
            }
        }));
    }
    for task in tasks {
        let (failing, exit) = task.await.unwrap();
        if failing {
            assert_eq!(exit, None, "a failed exec was taken for a started module");
        } else {
            assert_eq!(exit, Some(Some(0)), "a started module");
        }
    }
}
