//! "The UI never runs a module" is enforced by the build, not by a
//! convention: neither the UI nor the producer it starts runs through may
//! depend, even indirectly, on the worker or the executor (process
//! spawning), nor on nix's process control (`process`, `signal`; the
//! tracker's embedded queue uses its `inotify` only). Their
//! dev-dependencies (the UI's tests run a real worker) are not part of what
//! ships.

use std::process::Command;

fn normal_tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal,features",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn neither_the_ui_nor_the_producer_can_run_a_module() {
    for package in ["scheduler-ui", "scheduler-producer"] {
        let tree = normal_tree(package);
        assert!(tree.contains(package), "{tree}");
        assert!(tree.contains("scheduler-tracker"), "the tree was read: {tree}");
        let forbidden = [
            "scheduler-worker",
            "scheduler-executor",
            "nix feature \"process\"",
            "nix feature \"signal\"",
        ];
        for forbidden in forbidden {
            assert!(
                !tree.lines().any(|l| l.starts_with(forbidden)),
                "{package} depends on {forbidden}:\n{tree}"
            );
        }
    }
}
