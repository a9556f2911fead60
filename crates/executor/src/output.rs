//! The two pipe readers: a bounded tail of each stream, and each line forwarded to `tracing`.
//!
//! Memory does not grow with output: a pipe is read in chunks of up to 64 KiB, the tail keeps at most
//! `tail_bytes`, and the only line kept is the current partial one, capped at [`MAX_LINE`].

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{LogTap, Stream};

/// Longest line forwarded to `tracing`; the rest of a longer line is dropped.
pub(crate) const MAX_LINE: usize = 4096;
const CHUNK: usize = 64 * 1024;
/// The first reads' buffer, until one fills it.
const SMALL: usize = 2048;

/// The last `cap` bytes of a stream and how many bytes it had in total.
pub(crate) struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
    total: u64,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Self {
        Tail {
            buf: VecDeque::new(),
            cap,
            total: 0,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + chunk.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(chunk);
    }

    /// Lossy UTF-8, prefixed with `[... N bytes omitted]\n` when bytes were dropped.
    pub(crate) fn finish(mut self) -> (String, u64) {
        let bytes = self.buf.make_contiguous();
        let mut omitted = self.total - bytes.len() as u64;
        let mut start = 0;
        if omitted > 0 {
            // Do not start in the middle of a UTF-8 sequence: its continuation bytes would show as U+FFFD.
            while start < bytes.len().min(3) && bytes[start] & 0b1100_0000 == 0b1000_0000 {
                start += 1;
            }
            omitted += start as u64;
        }
        let text = String::from_utf8_lossy(&bytes[start..]);
        let text = if omitted > 0 {
            format!("[... {omitted} bytes omitted]\n{text}")
        } else {
            text.into_owned()
        };
        (text, self.total)
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Splits a byte stream into lines, keeping at most [`MAX_LINE`] bytes of the current one.
#[derive(Default)]
pub(crate) struct Lines {
    partial: Vec<u8>,
    /// Bytes were seen since the last newline, so there is a (maybe empty after capping) line to emit.
    open: bool,
}

impl Lines {
    /// Calls `emit` for each line completed by `chunk`, without the `\n` (nor a `\r` before it).
    pub(crate) fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.append(&rest[..i]);
            self.emit(&mut emit);
            rest = &rest[i + 1..];
        }
        self.append(rest);
    }

    /// Emits the last line if the stream did not end with a newline.
    pub(crate) fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.open {
            self.emit(&mut emit);
        }
    }

    /// Drops the partial line: used while nobody listens, so no stale fragment is logged later.
    pub(crate) fn reset(&mut self) {
        self.partial.clear();
        self.open = false;
    }

    fn append(&mut self, bytes: &[u8]) {
        self.open |= !bytes.is_empty();
        let room = MAX_LINE - self.partial.len();
        self.partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self, emit: &mut impl FnMut(&[u8])) {
        let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
        emit(line);
        self.reset();
    }
}

/// What one reader collected.
pub(crate) struct Captured {
    pub(crate) tail: String,
    pub(crate) bytes: u64,
}

/// The stdout and stderr reader tasks of one execution.
pub(crate) struct Readers {
    stdout: JoinHandle<Captured>,
    stderr: JoinHandle<Captured>,
    /// Cancelled by each reader when it reaches EOF, so the wait for EOF can be bounded and retried.
    stdout_eof: CancellationToken,
    stderr_eof: CancellationToken,
    /// Makes the readers stop and return what they have; cancelled on drop too.
    stop: DropGuard,
}

impl Readers {
    pub(crate) fn start<O, E>(stdout: O, stderr: E, tail_bytes: usize, label: &str, log: Option<LogTap>) -> Self
    where
        O: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let stop = CancellationToken::new();
        let (stdout_eof, stderr_eof) = (CancellationToken::new(), CancellationToken::new());
        let stdout = tokio::spawn(read(
            stdout,
            Stream::Stdout,
            tail_bytes,
            label.to_owned(),
            log.clone(),
            stop.clone(),
            stdout_eof.clone(),
        ));
        let stderr = tokio::spawn(read(
            stderr,
            Stream::Stderr,
            tail_bytes,
            label.to_owned(),
            log.clone(),
            stop.clone(),
            stderr_eof.clone(),
        ));
        // Each reader drops its clone of the sink when its pipe is done.
        drop(log);
        Readers {
            stdout,
            stderr,
            stdout_eof,
            stderr_eof,
            stop: stop.drop_guard(),
        }
    }

    /// Waits up to `bound` for both pipes to reach EOF; false if a pipe is still held open.
    pub(crate) async fn wait_eof(&self, bound: Duration) -> bool {
        let both = async {
            self.stdout_eof.cancelled().await;
            self.stderr_eof.cancelled().await;
        };
        tokio::time::timeout(bound, both).await.is_ok()
    }

    /// Stops both readers, keeping what they read so far.
    pub(crate) async fn finish(self) -> (Captured, Captured) {
        drop(self.stop);
        (join(self.stdout).await, join(self.stderr).await)
    }
}

async fn join(handle: JoinHandle<Captured>) -> Captured {
    handle.await.unwrap_or_else(|e| {
        // Only a panic in our own reader gets here; the run record should still be written.
        tracing::error!(error = %e, "output reader failed");
        Captured {
            tail: format!("[output lost: reader failed: {e}]"),
            bytes: 0,
        }
    })
}

async fn read<R: AsyncRead + Unpin>(
    mut pipe: R,
    stream: Stream,
    tail_bytes: usize,
    label: String,
    log: Option<LogTap>,
    stop: CancellationToken,
    eof: CancellationToken,
) -> Captured {
    // Most modules print little or nothing: the first reads go to a small
    // buffer in the task itself; the 64 KiB one is allocated (and zeroed)
    // only once a read fills the small one. Allocating and zeroing two per
    // module execution showed in a profile of a no-op module's bench (1 % of
    // the machine's samples, zeroing and the allocator's consolidation);
    // without them, 1175 / 1202 -> 1225 / 1238 executions per second (two
    // pairs alternating, embedded, `-c 2`).
    let mut small = [0u8; SMALL];
    let mut big: Vec<u8> = Vec::new();
    let mut tail = Tail::new(tail_bytes);
    let mut lines = Lines::default();
    let trace = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        tracing::info!(target: "module_output", label = %label, stream = stream.as_str(), "{line}");
    };
    loop {
        let buf: &mut [u8] = if big.is_empty() { &mut small } else { &mut big };
        let n = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            n = pipe.read(buf) => n,
        };
        match n {
            Ok(0) => {
                eof.cancel();
                break;
            }
            Ok(n) => {
                let chunk = if big.is_empty() { &small[..n] } else { &big[..n] };
                tail.push(chunk);
                if let Some(tap) = &log {
                    tap.0.write(stream, chunk, std::time::SystemTime::now());
                }
                // Checked per chunk so a flood costs nothing when module output is filtered out.
                if tracing::enabled!(target: "module_output", tracing::Level::INFO) {
                    lines.feed(chunk, trace);
                } else {
                    lines.reset();
                }
                if n == SMALL && big.is_empty() {
                    big = vec![0u8; CHUNK];
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(label = %label, stream = stream.as_str(), error = %e, "could not read module output");
                eof.cancel();
                break;
            }
        }
    }
    lines.flush(trace);
    let (tail, bytes) = tail.finish();
    Captured { tail, bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(cap: usize, chunks: &[&[u8]]) -> (String, u64) {
        let mut tail = Tail::new(cap);
        chunks.iter().for_each(|c| tail.push(c));
        tail.finish()
    }

    #[test]
    fn tail_keeps_the_last_bytes_and_says_how_many_were_omitted() {
        assert_eq!(tail_of(10, &[b"hello"]), ("hello".into(), 5));
        assert_eq!(tail_of(5, &[b"hel", b"lo"]), ("hello".into(), 5));
        assert_eq!(
            tail_of(4, &[b"hel", b"lo", b"!"]),
            ("[... 2 bytes omitted]\nllo!".into(), 6)
        );
        assert_eq!(tail_of(3, &[b"0123456789"]), ("[... 7 bytes omitted]\n789".into(), 10));
        assert_eq!(tail_of(0, &[b"abc"]), ("[... 3 bytes omitted]\n".into(), 3));
        assert_eq!(tail_of(0, &[]), (String::new(), 0));
    }

    #[test]
    fn tail_is_lossy_and_does_not_start_inside_a_utf8_sequence() {
        assert_eq!(tail_of(10, &[b"a\xffb"]).0, "a\u{FFFD}b");
        // "é" is C3 A9: keeping 2 bytes of "xxé!" would start at A9.
        assert_eq!(tail_of(2, &["xxé!".as_bytes()]).0, "[... 4 bytes omitted]\n!");
        assert_eq!(tail_of(3, &["xxé!".as_bytes()]).0, "[... 2 bytes omitted]\né!");
    }

    #[test]
    fn tail_memory_does_not_grow_with_output() {
        let mut tail = Tail::new(1000);
        let chunk = [b'x'; 700];
        for _ in 0..10_000 {
            tail.push(&chunk);
        }
        assert!(tail.capacity() <= 4096, "capacity {}", tail.capacity());
        assert_eq!(tail.finish().1, 7_000_000);
    }

    fn lines_of(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.feed(chunk, |l| out.push(l.to_vec()));
        }
        lines.flush(|l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_are_split_across_chunks_and_crlf_is_trimmed() {
        let got = lines_of(&[b"one\ntw", b"o\r\n\nthr", b"ee"]);
        assert_eq!(
            got,
            vec![b"one".to_vec(), b"two".to_vec(), b"".to_vec(), b"three".to_vec()]
        );
        assert_eq!(lines_of(&[b"a\n"]), vec![b"a".to_vec()]);
        assert!(lines_of(&[]).is_empty());
    }

    #[test]
    fn long_lines_are_cut_at_max_line_and_do_not_leak_into_the_next() {
        let long = vec![b'x'; MAX_LINE * 3];
        let got = lines_of(&[&long, &long, b"\nnext\n"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE);
        assert_eq!(got[1], b"next");
    }
}
