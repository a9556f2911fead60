//! Output capture: bounded whatever the volume, and lossy for bad UTF-8.

mod common;

use std::time::{Duration, Instant};

use common::{TestDir, run};
use scheduler_executor::Ending;

#[tokio::test]
async fn a_200_mb_flood_is_counted_but_only_the_tail_is_kept() {
    let dir = TestDir::new();
    let mut spec = dir.spec(&["/bin/sh", "-c", "yes abcdefghi | head -c 200000000; echo err >&2"]);
    spec.tail_bytes = 1000;
    let started = Instant::now();
    let outcome = run(spec).await;
    assert_eq!(outcome.ending, Ending::Exited(0));
    assert_eq!(outcome.stdout_bytes, 200_000_000);
    let marker = "[... 199999000 bytes omitted]\n";
    assert!(
        outcome.stdout_tail.starts_with(marker),
        "{:?}",
        &outcome.stdout_tail[..40]
    );
    assert_eq!(outcome.stdout_tail.len(), marker.len() + 1000);
    // 200_000_000 is a multiple of the 10-byte line, so the stream ends on a whole line.
    assert!(outcome.stdout_tail.ends_with("abcdefghi\nabcdefghi\n"));
    assert_eq!((outcome.stderr_tail.as_str(), outcome.stderr_bytes), ("err\n", 4));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn invalid_utf8_is_captured_lossily() {
    let dir = TestDir::new();
    let outcome = run(dir.spec(&["/bin/sh", "-c", r"printf 'ok \377\376 end\n'; printf '\200' >&2"])).await;
    assert_eq!(outcome.ending, Ending::Exited(0));
    assert_eq!(outcome.stdout_tail, "ok \u{FFFD}\u{FFFD} end\n");
    assert_eq!(outcome.stdout_bytes, 10);
    assert_eq!((outcome.stderr_tail.as_str(), outcome.stderr_bytes), ("\u{FFFD}", 1));
}
