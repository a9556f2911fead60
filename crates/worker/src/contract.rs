//! The output contract and the input check: what a step's declared paths
//! were when its module started and ended.
//!
//! - An `input` that does not exist when the step starts is a warning in
//!   the step's record, never a failure (it may be a URL, a glob, or made by
//!   something else).
//! - A step with a local `output` whose module exits 0 without having
//!   written it (missing, or not modified since the module started) fails:
//!   "exited 0 but did not write data/x.csv". Its size, modification time
//!   and SHA-256 are recorded (streamed; above [`HASH_CAP`] only size and
//!   time). A module opts out with `"check_output": false`.

use scheduler_tracker::OutputFacts;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How far a file's time may lag the module's start and still count as written by it.
const MTIME_SLACK: std::time::Duration = std::time::Duration::from_millis(50);

/// Files larger than this are not hashed (size and time only).
pub const HASH_CAP: u64 = 1024 * 1024 * 1024;

/// Whether `p` names a local file: no URL scheme (`s3://`, `https://`),
/// no glob characters.
pub fn is_local(p: &str) -> bool {
    !p.is_empty() && !p.contains("://") && !p.contains(['*', '?', '['])
}

/// The path a module sees for `p`: relative ones are relative to its cwd.
pub fn resolve(cwd: &Path, p: &str) -> PathBuf {
    cwd.join(p)
}

/// The warning for an input that is not there when the step starts.
pub fn missing_input(cwd: &Path, input: &str) -> Option<String> {
    (is_local(input) && !resolve(cwd, input).exists())
        .then(|| format!("input {input} did not exist when the step started"))
}

/// What the module left at `output`: `Err(reason)` when it did not write
/// it (missing, or unchanged since `started`).
pub fn check_output(cwd: &Path, output: &str, started: SystemTime) -> Result<OutputFacts, String> {
    let path = resolve(cwd, output);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("exited 0 but did not write {output}"));
        }
        Err(e) => return Err(format!("exited 0 but its output {output} cannot be read: {e}")),
    };
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    // A file older than the module is the previous run's. File times come
    // from the kernel's coarse clock, which lags the precise one by up to a
    // tick (4-10 ms): a file written within `MTIME_SLACK` of the start
    // counts as written by the step.
    if mtime + MTIME_SLACK < started && !meta.is_dir() {
        return Err(format!(
            "exited 0 but did not write {output} (it is older than the step: left from before)"
        ));
    }
    let sha256 = if meta.is_file() && meta.len() <= HASH_CAP {
        hash(&path).ok()
    } else {
        None
    };
    Ok(OutputFacts {
        path: output.to_string(),
        bytes: meta.len() as i64,
        mtime: mtime.into(),
        sha256,
    })
}

/// Streams the file through SHA-256.
fn hash(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("contract-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn urls_and_globs_are_not_local_files() {
        assert!(is_local("data/x.csv"));
        assert!(is_local("/tmp/x"));
        assert!(!is_local("s3://bucket/key"));
        assert!(!is_local("https://example.org/x"));
        assert!(!is_local("data/*.csv"));
        assert!(!is_local(""));
    }

    #[test]
    fn a_missing_input_is_a_warning() {
        let d = dir();
        assert_eq!(
            missing_input(&d, "in.csv").as_deref(),
            Some("input in.csv did not exist when the step started")
        );
        std::fs::write(d.join("in.csv"), "x").unwrap();
        assert_eq!(missing_input(&d, "in.csv"), None);
        assert_eq!(missing_input(&d, "s3://b/k"), None);
    }

    #[test]
    fn an_output_not_written_fails_and_a_written_one_is_hashed() {
        let d = dir();
        let before = SystemTime::now() - Duration::from_secs(5);
        assert_eq!(
            check_output(&d, "out.csv", before).unwrap_err(),
            "exited 0 but did not write out.csv"
        );
        std::fs::write(d.join("out.csv"), "abc").unwrap();
        let facts = check_output(&d, "out.csv", before).unwrap();
        assert_eq!(facts.bytes, 3);
        assert_eq!(
            facts.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        // Left from before the step started: not written by it.
        let later = SystemTime::now() + Duration::from_secs(5);
        assert!(
            check_output(&d, "out.csv", later)
                .unwrap_err()
                .contains("older than the step")
        );
    }
}
