//! The log shipper: every byte a module writes goes to the record, in
//! batches, on a path of its own. The executor's pipe readers hand each read
//! to an [`ExecLog`] (never blocking: it only appends to memory); one task per
//! worker writes what every running module produced in one statement every
//! `flush_every` (or sooner when 64 KiB wait), so a module that prints
//! nothing costs nothing, and a step's result and next step never wait for
//! its log.
//!
//! Bounds, per execution:
//! - stored: the first half of `cap` bytes (the head) and the last half (the
//!   tail); rows in between are deleted as the tail moves on, and a reader
//!   sees the gap in offsets as "… N bytes omitted …";
//! - in memory: the head not yet written (at most half of `cap`, only while
//!   the database is away) and at most the tail's size of the rest; past
//!   that the oldest waiting bytes after the head are dropped. Those are
//!   older than the newest half-cap bytes, so the cap would have left them
//!   out anyway: a flood faster than the database, or an outage, still
//!   leaves one gap, between head and tail. Nothing else is lost while the
//!   database is away: the batch is kept and written once it is back.
//!
//! A worker that dies loses what it had not written yet (at most
//! `flush_every` of output); its executions' logs stay without a total
//! (`log_bytes` is null), which readers report as incomplete.

use crate::stall::Activity;
use scheduler_executor::{LogSink, LogTap, Stream};
use scheduler_tracker::{ExecKey, LogPiece, Store};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// Longest row written: a longer burst of one stream becomes several rows.
const ROW_BYTES: usize = 64 * 1024;
/// Two reads of one stream this close together share a row (and its time).
const SAME_ROW_WITHIN: Duration = Duration::from_millis(50);
/// Statement size: a batch larger than this is written in several.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Rows beyond the tail are deleted once this much has piled up past it.
const TRIM_SLACK: i64 = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Bytes of one execution's log kept: its first half and its last half.
    /// 0 records nothing (only the tails of the execution record).
    pub cap: u64,
    /// How long output may wait in memory before it is written.
    pub flush_every: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            cap: 16 * 1024 * 1024,
            flush_every: Duration::from_millis(200),
        }
    }
}

impl LogLimits {
    fn head(&self) -> i64 {
        (self.cap / 2) as i64
    }
    fn tail(&self) -> i64 {
        self.cap as i64 - self.head()
    }
}

/// One worker's shipper: opens a log per execution, writes them all.
pub struct Shipper {
    store: Arc<dyn Store>,
    limits: LogLimits,
    open: Mutex<Vec<Arc<ExecLog>>>,
    wake: Notify,
    started: OnceLock<()>,
}

impl Shipper {
    pub fn new(store: Arc<dyn Store>, limits: LogLimits) -> Arc<Shipper> {
        Arc::new(Shipper {
            store,
            limits,
            open: Mutex::new(Vec::new()),
            wake: Notify::new(),
            started: OnceLock::new(),
        })
    }

    /// The sink for one execution's output, which also tells `activity`
    /// (the stall watch) when the module writes; `None` when logs are off
    /// and nothing is watched. The shipping task starts with the first log.
    pub fn open(self: &Arc<Self>, key: ExecKey, activity: Option<Arc<Activity>>) -> Option<LogTap> {
        if self.limits.cap == 0 {
            return activity.map(|activity| {
                LogTap(Arc::new(Writer {
                    log: None,
                    activity: Some(activity),
                    shipper: Arc::downgrade(self),
                }))
            });
        }
        self.started.get_or_init(|| {
            tokio::spawn(Arc::clone(self).ship());
        });
        let log = Arc::new(ExecLog {
            key,
            head: self.limits.head(),
            pending_cap: self.limits.tail() as usize,
            buf: Mutex::new(Buf::default()),
            closed: AtomicBool::new(false),
        });
        self.open.lock().unwrap().push(log.clone());
        Some(LogTap(Arc::new(Writer {
            log: Some(log),
            activity,
            shipper: Arc::downgrade(self),
        })))
    }

    /// Writes what is waiting, and finishes the closed logs, within `bound`
    /// (a worker about to exit).
    pub async fn flush(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while !self.open.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            if self.pass().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn ship(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let pause = if failures == 0 {
                self.limits.flush_every
            } else {
                // The database is away: try again, less and less often.
                Duration::from_millis(250 * u64::from(failures.min(8)))
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified(), if failures == 0 => {}
            }
            match self.pass().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, "module output not written yet; kept in memory and tried again");
                    }
                }
            }
        }
    }

    /// One pass: write every waiting piece, trim long logs, finish the
    /// closed ones.
    async fn pass(&self) -> Result<(), scheduler_tracker::TrackerError> {
        let logs: Vec<Arc<ExecLog>> = self.open.lock().unwrap().clone();
        if logs.is_empty() {
            return Ok(());
        }
        // Read `closed` before taking the pieces: a closed log gets no more.
        let taken: Vec<(Arc<ExecLog>, bool, Vec<Piece>)> = logs
            .into_iter()
            .map(|log| {
                let closed = log.closed.load(Ordering::Acquire);
                let pieces = log.take();
                (log, closed, pieces)
            })
            .collect();
        // The pieces move into the batch (a flood is not copied); what is
        // sent is kept until the statement succeeds.
        let mut ends: Vec<Option<i64>> = Vec::with_capacity(taken.len());
        let mut batch: Vec<LogPiece> = Vec::new();
        let mut sent: Vec<LogPiece> = Vec::new();
        let mut size = 0;
        let mut result = Ok(());
        let mut logs = Vec::with_capacity(taken.len());
        for (log, closed, pieces) in taken {
            ends.push(pieces.last().map(|p| p.pos + p.data.len() as i64));
            for p in pieces {
                size += p.data.len();
                batch.push(LogPiece {
                    key: log.key,
                    pos: p.pos,
                    stream: p.stream.as_str(),
                    at: p.at.into(),
                    data: p.data,
                });
                if size >= BATCH_BYTES && result.is_ok() {
                    result = self.store.append_logs(&batch).await;
                    sent.append(&mut batch);
                    size = 0;
                }
            }
            logs.push((log, closed));
        }
        if result.is_ok() {
            result = self.store.append_logs(&batch).await;
        }
        if let Err(e) = result {
            // Keep everything for the next pass (rows written already are
            // skipped then: the insert ignores a row it holds).
            sent.append(&mut batch);
            for (log, _) in &logs {
                let mine = sent
                    .iter()
                    .filter(|p| p.key == log.key)
                    .map(|p| Piece {
                        stream: if p.stream == "stderr" {
                            Stream::Stderr
                        } else {
                            Stream::Stdout
                        },
                        at: p.at.into(),
                        pos: p.pos,
                        data: p.data.clone(),
                    })
                    .collect();
                log.put_back(mine);
            }
            return Err(e);
        }
        drop(sent);
        for ((log, closed), end) in logs.iter().zip(ends) {
            if let Some(end) = end {
                log.buf.lock().unwrap().written_to = end;
            }
            let slack = if *closed { 0 } else { TRIM_SLACK };
            self.trim(log, slack).await?;
            if *closed {
                // A module that printed nothing costs no statement: its
                // execution's byte counts (0) say its log is complete.
                let total = log.buf.lock().unwrap().next_pos;
                if total > 0 {
                    self.store.finish_log(log.key, total).await?;
                }
                self.open.lock().unwrap().retain(|l| !Arc::ptr_eq(l, log));
            }
        }
        Ok(())
    }

    /// Deletes the rows that fell out of the tail, once `slack` bytes
    /// have piled up past it.
    async fn trim(&self, log: &ExecLog, slack: i64) -> Result<(), scheduler_tracker::TrackerError> {
        let (written_to, trimmed_to) = {
            let b = log.buf.lock().unwrap();
            (b.written_to, b.trimmed_to.max(log.head))
        };
        let keep_from = written_to - self.limits.tail();
        if keep_from - trimmed_to > slack && keep_from > log.head {
            self.store.trim_log(log.key, log.head, keep_from).await?;
            log.buf.lock().unwrap().trimmed_to = keep_from;
        }
        Ok(())
    }
}

/// What the executor writes to: appends, never blocks; dropped by the
/// executor when the module's pipes are done, which closes the log.
struct Writer {
    log: Option<Arc<ExecLog>>,
    activity: Option<Arc<Activity>>,
    shipper: std::sync::Weak<Shipper>,
}

impl LogSink for Writer {
    fn write(&self, stream: Stream, bytes: &[u8], at: SystemTime) {
        if let Some(activity) = &self.activity {
            activity.touch();
        }
        if let Some(log) = &self.log
            && log.write(stream, bytes, at) >= ROW_BYTES
            && let Some(shipper) = self.shipper.upgrade()
        {
            shipper.wake.notify_one();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.closed.store(true, Ordering::Release);
            if let Some(shipper) = self.shipper.upgrade() {
                shipper.wake.notify_one();
            }
        }
    }
}

/// One execution's log while its module runs and until it is all written.
pub struct ExecLog {
    key: ExecKey,
    /// Bytes of the head: always kept.
    head: i64,
    /// Bytes after the head it may hold while they cannot be written.
    pending_cap: usize,
    buf: Mutex<Buf>,
    closed: AtomicBool,
}

#[derive(Default)]
struct Buf {
    pending: VecDeque<Piece>,
    /// Bytes in `pending` at or past the head.
    pending_tail: usize,
    /// Bytes the module wrote so far (the next piece's `pos`).
    next_pos: i64,
    /// Where the written rows end.
    written_to: i64,
    /// Rows ending before this were deleted (the middle of a long log).
    trimmed_to: i64,
}

struct Piece {
    stream: Stream,
    at: SystemTime,
    pos: i64,
    data: Vec<u8>,
}

impl ExecLog {
    /// Appends a read; returns the bytes waiting, for the caller to wake the
    /// shipper when a row's worth is ready.
    fn write(&self, stream: Stream, mut bytes: &[u8], at: SystemTime) -> usize {
        let mut b = self.buf.lock().unwrap();
        let waiting = b.pending.iter().map(|p| p.data.len()).sum::<usize>() + bytes.len();
        while !bytes.is_empty() {
            let pos = b.next_pos;
            if let Some(last) = b.pending.back_mut()
                && last.stream == stream
                && last.data.len() < ROW_BYTES
                && at.duration_since(last.at).unwrap_or_default() < SAME_ROW_WITHIN
            {
                let n = bytes.len().min(ROW_BYTES - last.data.len());
                last.data.extend_from_slice(&bytes[..n]);
                b.next_pos += n as i64;
                if pos >= self.head {
                    b.pending_tail += n;
                }
                bytes = &bytes[n..];
                continue;
            }
            let n = bytes.len().min(ROW_BYTES);
            b.pending.push_back(Piece {
                stream,
                at,
                pos,
                data: bytes[..n].to_vec(),
            });
            b.next_pos += n as i64;
            if pos >= self.head {
                b.pending_tail += n;
            }
            bytes = &bytes[n..];
        }
        self.bound(&mut b);
        waiting
    }

    /// Drops the oldest waiting pieces after the head while more than
    /// `pending_cap` bytes of them wait (the database is away, or slower
    /// than a flood); a reader sees the gap as omitted bytes.
    fn bound(&self, b: &mut Buf) {
        while b.pending_tail > self.pending_cap && b.pending.len() > 1 {
            let Some(i) = b.pending.iter().position(|p| p.pos >= self.head) else {
                break;
            };
            if i + 1 == b.pending.len() {
                break;
            }
            let dropped = b.pending.remove(i).expect("index in range");
            b.pending_tail -= dropped.data.len();
        }
    }

    fn take(&self) -> Vec<Piece> {
        let mut b = self.buf.lock().unwrap();
        b.pending_tail = 0;
        b.pending.drain(..).collect()
    }

    /// Puts back pieces a failed write took, before what came since.
    fn put_back(&self, pieces: Vec<Piece>) {
        let mut b = self.buf.lock().unwrap();
        for p in pieces.into_iter().rev() {
            if p.pos >= self.head {
                b.pending_tail += p.data.len();
            }
            b.pending.push_front(p);
        }
        self.bound(&mut b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn log(head: i64) -> ExecLog {
        ExecLog {
            key: ExecKey {
                run_id: Uuid::nil(),
                step: 0,
                attempt: 1,
            },
            head,
            pending_cap: 4 * ROW_BYTES,
            buf: Mutex::new(Buf::default()),
            closed: AtomicBool::new(false),
        }
    }

    fn layout(l: &ExecLog) -> Vec<(i64, &'static str, usize)> {
        l.buf
            .lock()
            .unwrap()
            .pending
            .iter()
            .map(|p| (p.pos, p.stream.as_str(), p.data.len()))
            .collect()
    }

    #[test]
    fn reads_close_together_share_a_row_and_streams_never_do() {
        let l = log(1 << 20);
        let t = SystemTime::UNIX_EPOCH;
        l.write(Stream::Stdout, b"one\n", t);
        l.write(Stream::Stdout, b"two\n", t + Duration::from_millis(10));
        l.write(Stream::Stderr, b"oops\n", t + Duration::from_millis(20));
        l.write(Stream::Stdout, b"three\n", t + Duration::from_millis(30));
        // A second later: a row of its own, with its own time.
        l.write(Stream::Stdout, b"later\n", t + Duration::from_secs(1));
        assert_eq!(
            layout(&l),
            [(0, "stdout", 8), (8, "stderr", 5), (13, "stdout", 6), (19, "stdout", 6)]
        );
    }

    #[test]
    fn a_burst_is_cut_into_rows_of_at_most_64_kib() {
        let l = log(1 << 30);
        let burst = vec![b'x'; 150 * 1024];
        l.write(Stream::Stdout, &burst, SystemTime::UNIX_EPOCH);
        assert_eq!(
            layout(&l),
            [
                (0, "stdout", 65536),
                (65536, "stdout", 65536),
                (131072, "stdout", 22528)
            ]
        );
    }

    #[test]
    fn memory_is_bounded_past_the_head_keeping_the_newest_bytes() {
        let l = log(1000);
        let t = SystemTime::UNIX_EPOCH;
        let chunk = vec![b'y'; ROW_BYTES];
        // 1000 head bytes, then far more than the pending bound.
        l.write(Stream::Stdout, &[b'h'; 1000], t);
        for i in 0..200u64 {
            l.write(Stream::Stdout, &chunk, t + Duration::from_secs(i + 1));
        }
        let b = l.buf.lock().unwrap();
        let kept: usize = b.pending.iter().map(|p| p.data.len()).sum();
        assert!(kept <= 1000 + 4 * ROW_BYTES, "kept {kept}");
        assert_eq!(b.pending.front().unwrap().pos, 0, "the head is never dropped");
        let last = b.pending.back().unwrap();
        assert_eq!(last.pos + last.data.len() as i64, 1000 + 200 * ROW_BYTES as i64);
        assert_eq!(b.next_pos, 1000 + 200 * ROW_BYTES as i64);
    }

    #[test]
    fn pieces_put_back_after_a_failed_write_come_first() {
        let l = log(1 << 20);
        let t = SystemTime::UNIX_EPOCH;
        l.write(Stream::Stdout, b"a\n", t);
        let taken = l.take();
        l.write(Stream::Stderr, b"b\n", t);
        l.put_back(taken);
        assert_eq!(layout(&l), [(0, "stdout", 2), (2, "stderr", 2)]);
    }
}
