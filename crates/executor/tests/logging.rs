//! Output lines forwarded to `tracing`.
//!
//! Alone in its test binary on purpose: `tracing` caches each callsite's interest process-wide, and a
//! sibling test that reached the reader's callsites first on a thread without a subscriber would cache
//! "never" and blind the subscriber installed here.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{TestDir, run};
use scheduler_executor::Ending;

/// Collects everything a `fmt` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// current_thread runtime: the reader tasks run on this thread, where the subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn each_output_line_is_logged_with_its_label_and_stream() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let dir = TestDir::new();
    let script = concat!(
        r"printf 'first\nsecond\r\n'; printf 'to stderr\n' >&2; ",
        r"head -c 10000 /dev/zero | tr '\0' y; printf '\377 no newline'"
    );
    let mut spec = dir.spec(&["/bin/sh", "-c", script]);
    spec.log_label = "run=r1 step=1 module=extract".into();
    let outcome = run(spec).await;
    assert_eq!(outcome.ending, Ending::Exited(0));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("module_output")).collect();
    assert_eq!(lines.len(), 4, "{logs}");
    let find = |text: &str| {
        lines
            .iter()
            .find(|l| l.contains(text))
            .copied()
            .unwrap_or_else(|| panic!("{text}: {logs}"))
    };
    for (text, stream) in [("first", "stdout"), ("second", "stdout"), ("to stderr", "stderr")] {
        let line = find(text);
        assert!(line.contains("label=run=r1 step=1 module=extract"), "{line}");
        assert!(line.contains(&format!("stream=\"{stream}\"")), "{line}");
    }
    assert!(!find("second").contains('\r'));
    // The long last line is cut at 4096 bytes and its tail (with the invalid byte) is dropped.
    let long = find("yyyy");
    assert!(
        long.contains(&"y".repeat(4096)) && !long.contains(&"y".repeat(4097)),
        "{}",
        long.len()
    );
    assert!(!logs.contains("no newline"));
}
