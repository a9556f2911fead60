//! `scheduler completions bash|zsh|fish`: each script is loaded by the real
//! shell and completes the real subcommands and flags (bash and fish are
//! asked for completions as a user's Tab would; zsh, which can only
//! complete at a terminal, must load the script and define its function).
//! A shell that is not installed is reported and skipped (.ci/run installs
//! zsh and fish).

use std::process::Command;

fn script(shell: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn installed(shell: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {shell}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("{shell} is not installed: its completion script is not checked here");
    }
    found
}

fn written(shell: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("scheduler-completion-{}.{shell}", uuid::Uuid::now_v7()));
    std::fs::write(&path, script(shell)).unwrap();
    path
}

/// Runs `shell -c code` with `$SCRIPT` = the script's path; returns stdout.
fn run(shell: &str, code: &str, path: &std::path::Path) -> String {
    let out = Command::new(shell)
        .args(["-c", code])
        .env("SCRIPT", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{shell} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completes_subcommands_and_a_commands_flags() {
    if !installed("bash") {
        return;
    }
    let path = written("bash");
    // What bash's Tab does: set COMP_WORDS/COMP_CWORD, call the function
    // `complete -p` names, read COMPREPLY.
    let complete = r#"source "$SCRIPT"
        fn=$(complete -p scheduler | sed -E 's/.*-F ([^ ]+).*/\1/')
        ask() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=();
                "$fn" scheduler "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; printf '%s\n' "${COMPREPLY[@]}"; }
        echo "== wor"; ask scheduler wor
        echo "== worker --he"; ask scheduler worker --he
        echo "== he"; ask scheduler he"#;
    let out = run("bash", complete, &path);
    let section = |name: &str| -> Vec<String> {
        out.split(&format!("== {name}\n"))
            .nth(1)
            .unwrap_or_default()
            .lines()
            .take_while(|l| !l.starts_with("== "))
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert_eq!(section("wor"), ["worker"], "{out}");
    assert!(section("worker --he").contains(&"--health-file".to_string()), "{out}");
    assert!(section("he").contains(&"health".to_string()), "{out}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn fish_completes_subcommands_and_a_commands_flags() {
    if !installed("fish") {
        return;
    }
    let path = written("fish");
    let out = run(
        "fish",
        r#"source $SCRIPT; echo "== wor"; complete -C "scheduler wor"; echo "== beat"; complete -C "scheduler beat --"; echo "== worker --he"; complete -C "scheduler worker --he""#,
        &path,
    );
    let section = |name: &str| -> Vec<String> {
        out.split(&format!("== {name}\n"))
            .nth(1)
            .unwrap_or_default()
            .lines()
            .take_while(|l| !l.starts_with("== "))
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(section("wor"), ["worker"], "{out}");
    assert!(section("beat").contains(&"--tick-ms".to_string()), "{out}");
    assert!(section("worker --he").contains(&"--health-file".to_string()), "{out}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn zsh_loads_the_script_and_defines_its_completion_function() {
    let text = script("zsh");
    assert!(
        text.starts_with("#compdef scheduler"),
        "{}",
        &text[..80.min(text.len())]
    );
    for word in ["'worker:", "'health:", "'completions:", "--health-file"] {
        assert!(text.contains(word), "the zsh script lacks {word:?}");
    }
    if !installed("zsh") {
        return;
    }
    let path = written("zsh");
    run("zsh", r#"zsh -n "$SCRIPT""#, &path);
    let out = run(
        "zsh",
        r#"autoload -U compinit; compinit -u -D; source "$SCRIPT"; whence -w _scheduler"#,
        &path,
    );
    assert_eq!(out.trim(), "_scheduler: function");
    let _ = std::fs::remove_file(path);
}
