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

/// Collects what the executor hands to a log sink, and when it lets go.
#[derive(Default)]
struct Collect {
    pieces: std::sync::Mutex<Vec<(scheduler_executor::Stream, Vec<u8>)>>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl scheduler_executor::LogSink for Collect {
    fn write(&self, stream: scheduler_executor::Stream, bytes: &[u8], _at: std::time::SystemTime) {
        self.pieces.lock().unwrap().push((stream, bytes.to_vec()));
    }
}

impl Drop for Collect {
    fn drop(&mut self) {
        let pieces = self.pieces.lock().unwrap();
        let of = |s| {
            pieces
                .iter()
                .filter(|p| p.0 == s)
                .flat_map(|p| p.1.clone())
                .collect::<Vec<u8>>()
        };
        assert_eq!(of(scheduler_executor::Stream::Stdout).len(), 3_000_000);
        assert_eq!(of(scheduler_executor::Stream::Stderr), b"err \xff\n");
        self.dropped.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_log_sink_gets_every_byte_of_both_streams_and_is_dropped_when_they_end() {
    let dir = TestDir::new();
    let mut spec = dir.spec(&[
        "/bin/sh",
        "-c",
        r"yes abcdefghi | head -c 3000000; printf 'err \377\n' >&2",
    ]);
    spec.tail_bytes = 10;
    let sink = Collect::default();
    let dropped = sink.dropped.clone();
    spec.log = Some(scheduler_executor::LogTap(std::sync::Arc::new(sink)));
    let outcome = run(spec).await;
    assert_eq!(outcome.ending, Ending::Exited(0));
    assert_eq!(outcome.stdout_bytes, 3_000_000);
    // The sink's own Drop checked what it got (a failed check there panics this test).
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the sink was not let go"
    );
}
