//! Reading one execution's recorded log (`execution_logs`, through the
//! store) for the JSON API, the run page, its live stream and the download:
//! which execution a request names, the pieces of a byte window with every
//! gap the cap left reported exactly once, and where the last ~256 KiB of a
//! log start (a page never loads a whole 16 MiB log at once).
//!
//! Offsets are those of the record: `pos` is a byte's offset in the
//! execution's whole output (both streams, in the order read), so a reader
//! resumes from the `next` it was given, and bytes missing between two rows
//! were omitted by the cap (or lost while the database was away).

use crate::AppState;
use crate::error::Problem;
use chrono::{DateTime, Utc};
use scheduler_tracker::{ExecKey, LogState, Store, TrackerError};
use serde::Serialize;
use uuid::Uuid;

/// How much of a log a page loads at once: the last this many bytes first,
/// then as much again per "load earlier".
pub(crate) const TAIL_BYTES: i64 = 256 * 1024;
/// The store holds at most this much in one row; an offset probe is never
/// finer than that.
const ROW_MAX: i64 = 64 * 1024;
/// Bytes a read looks through (a stream filter skips the other stream's)
/// before it answers with what it has; the caller resumes from `next`.
const MAX_SCAN: usize = 8 * 1024 * 1024;

/// The execution a request names, and where its log stands.
pub(crate) async fn target(
    state: &AppState,
    run_id: Uuid,
    step: u32,
    attempt: Option<u32>,
) -> Result<(ExecKey, LogState), Problem> {
    let states = state.store.log_states(run_id).await?;
    if states.is_empty() && state.store.run_view(run_id).await?.is_none() {
        return Err(Problem::no_run(run_id));
    }
    let of_step = states.into_iter().filter(|s| s.step as u32 == step);
    let found = match attempt {
        Some(a) => of_step.into_iter().find(|s| s.attempt as u32 == a),
        None => of_step.max_by_key(|s| s.attempt),
    };
    let s = found.ok_or_else(|| {
        Problem::not_found(format!(
            "run {run_id} has no execution of step {step}{}; steps count from 0, attempts from 1, \
             and GET /api/v1/runs/{run_id} lists the executions it has",
            attempt.map(|a| format!(" attempt {a}")).unwrap_or_default()
        ))
    })?;
    let key = ExecKey {
        run_id,
        step: s.step as u32,
        attempt: s.attempt as u32,
    };
    Ok((key, s))
}

/// What to read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub from: i64,
    /// Whether `from` begins a line, when the caller knows (it read up to
    /// there); `None`: find out by reading from the byte before it, which
    /// costs the row holding that byte (up to 64 KiB) but no extra query.
    pub line_start: Option<bool>,
    /// Stop before this byte (a "load earlier" ends where the shown part begins).
    pub to: Option<i64>,
    /// One stream only; the other's bytes are skipped, not counted as omitted.
    pub stream: Option<&'static str>,
    pub max_pieces: usize,
    pub max_bytes: usize,
}

/// A stretch of one stream, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub pos: i64,
    pub stream: String,
    pub at: DateTime<Utc>,
    pub data: Vec<u8>,
    /// Bytes omitted between the previous piece (or `from`) and this one.
    pub omitted_before: i64,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub from: i64,
    /// Where to resume: every byte before it was returned, skipped (the
    /// other stream) or reported omitted.
    pub next: i64,
    pub pieces: Vec<Piece>,
    /// Bytes omitted after the last piece (or `from`) up to `next`: a gap
    /// no piece follows in this answer, such as bytes lost at the very end.
    pub omitted_after: i64,
    /// Whether `from` begins a line (the byte before it is a newline, was
    /// omitted, or there is none): the page marks where lines start.
    pub line_start: bool,
    /// Whether `next` begins a line, for the read that goes on from there.
    pub ends_line: bool,
}

impl Chunk {
    /// The log has no more to give: its total is known and reached.
    pub fn complete(&self, total: Option<i64>) -> bool {
        total.is_some_and(|t| self.next >= t)
    }
}

/// Reads the window. `total` is the log's final size when it is complete
/// (`executions.log_bytes`): bytes missing at its end are then reported
/// as omitted, and `next` reaches it.
pub(crate) async fn read(
    store: &dyn Store,
    key: ExecKey,
    w: Window,
    total: Option<i64>,
) -> Result<Chunk, TrackerError> {
    let mut c = Chunk {
        from: w.from,
        next: w.from,
        pieces: Vec::new(),
        omitted_after: 0,
        line_start: w.line_start.unwrap_or(true),
        ends_line: true,
    };
    if w.to.is_some_and(|to| to <= w.from) {
        c.ends_line = c.line_start;
        return Ok(c);
    }
    let mut probing = w.from > 0 && w.line_start.is_none();
    let mut cursor = if probing { w.from - 1 } else { w.from };
    let (mut gap, mut bytes, mut scanned) = (0i64, 0usize, 0usize);
    let (mut rows_seen, mut row_bytes) = (0usize, 0usize);
    let mut full = false;
    'read: loop {
        // Few rows while they may be big (a flood's rows hold 64 KiB), many
        // once they turn out to be lines.
        let small_rows = rows_seen > 0 && row_bytes / rows_seen < 4096;
        let wanted = i64::try_from(w.max_pieces).unwrap_or(i64::MAX).saturating_add(1);
        let page = (if small_rows { 256 } else { 32 }).min(wanted);
        let rows = store.read_log(key, cursor, page).await?;
        let last_page = (rows.len() as i64) < page;
        for row in rows {
            cursor = row.end();
            rows_seen += 1;
            row_bytes += row.data.len();
            if probing {
                probing = false;
                if row.pos < w.from {
                    c.line_start = row.data[(w.from - 1 - row.pos) as usize] == b'\n';
                    if row.end() <= w.from {
                        continue;
                    }
                }
            }
            if w.to.is_some_and(|to| row.pos >= to) {
                break 'read;
            }
            if row.pos > c.next {
                gap += row.pos - c.next;
            }
            let skip = (c.next - row.pos).max(0) as usize;
            let stop =
                w.to.map_or(row.data.len(), |to| ((to - row.pos) as usize).min(row.data.len()));
            if skip < stop {
                if w.stream.is_none_or(|s| s == row.stream) {
                    c.pieces.push(Piece {
                        pos: row.pos + skip as i64,
                        stream: row.stream,
                        at: row.at,
                        data: row.data[skip..stop].to_vec(),
                        omitted_before: std::mem::take(&mut gap),
                    });
                    bytes += stop - skip;
                }
                scanned += stop - skip;
            }
            c.next = c.next.max(row.pos + stop as i64);
            if c.pieces.len() >= w.max_pieces || bytes >= w.max_bytes || scanned >= MAX_SCAN {
                full = true;
                break 'read;
            }
        }
        if last_page {
            break;
        }
    }
    if !full {
        // Nothing more is recorded before `to` (which lies before a later
        // row) or before the complete log's end: that stretch was omitted.
        let end = match (w.to, total) {
            (Some(to), Some(t)) => Some(to.min(t)),
            (Some(to), None) => Some(to),
            (None, t) => t,
        };
        if let Some(end) = end
            && end > c.next
        {
            gap += end - c.next;
            c.next = end;
        }
    }
    c.omitted_after = gap;
    c.ends_line = match c.pieces.last() {
        _ if gap > 0 => true,
        Some(p) => p.data.ends_with(b"\n"),
        None => c.line_start,
    };
    Ok(c)
}

/// `GET /api/v1/runs/{id}/log`'s answer (its shape is documented in `api`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LogPage {
    run_id: Uuid,
    /// Counting from 0.
    step: u32,
    /// Counting from 1.
    attempt: u32,
    /// The byte offset this answer starts at.
    from: i64,
    /// Where the next answer starts: pass it back as `from`.
    next: i64,
    /// The whole log is recorded and `next` reached its end; until then,
    /// poll (fewer pieces than `limit` is no sign of the end).
    complete: bool,
    /// Every byte the module wrote, once its whole log is recorded.
    log_bytes: Option<i64>,
    /// How many of them the cap left out.
    log_omitted: Option<i64>,
    pieces: Vec<PieceOut>,
    /// Bytes left out between the last piece and `next`.
    omitted_after: i64,
}

/// A stretch of one stream as it was read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = LogPiece)]
struct PieceOut {
    /// Its byte offset in the execution's whole output.
    pos: i64,
    /// `stdout` or `stderr`.
    stream: String,
    at: DateTime<Utc>,
    /// The bytes as UTF-8, invalid sequences replaced by U+FFFD.
    text: String,
    /// Bytes left out by the cap (or lost while the database was away)
    /// between the previous piece (or `from`) and this one.
    omitted_before: i64,
}

impl LogPage {
    pub fn new(key: ExecKey, state: &LogState, c: Chunk) -> LogPage {
        LogPage {
            run_id: key.run_id,
            step: key.step,
            attempt: key.attempt,
            from: c.from,
            next: c.next,
            complete: c.complete(state.log_bytes),
            log_bytes: state.log_bytes,
            log_omitted: state.log_omitted,
            omitted_after: c.omitted_after,
            pieces: c
                .pieces
                .into_iter()
                .map(|p| PieceOut {
                    pos: p.pos,
                    stream: p.stream,
                    at: p.at,
                    text: String::from_utf8_lossy(&p.data).into_owned(),
                    omitted_before: p.omitted_before,
                })
                .collect(),
        }
    }
}

/// Where to start showing the last [`TAIL_BYTES`] before `end` (the log's
/// end when `None`): the start of the row holding that byte, so no
/// character is cut and at most a row more is shown.
pub(crate) async fn tail_start(store: &dyn Store, key: ExecKey, end: Option<i64>) -> Result<i64, TrackerError> {
    let end = match end {
        Some(e) => e,
        None => log_end(store, key).await?,
    };
    let x = end - TAIL_BYTES;
    if x <= 0 {
        return Ok(0);
    }
    // The row holding `x` (or, when `x` was omitted, the next one): a row
    // is at most 64 KiB, so that much more at most.
    let rows = store.read_log(key, x, 1).await?;
    Ok(rows.first().map_or(x, |r| r.pos))
}

/// Where a log still being written ends (as far as it is recorded). The
/// store answers "any row ending after x?": double x until none does, halve
/// the interval down to a row's size, then read the rows of that last
/// stretch. A log under 256 KiB takes one query; a 16 MiB one about
/// fifteen, each an index scan of the execution's rows.
async fn log_end(store: &dyn Store, key: ExecKey) -> Result<i64, TrackerError> {
    let beyond = |x: i64| async move { Ok::<_, TrackerError>(!store.read_log(key, x, 1).await?.is_empty()) };
    let mut hi = TAIL_BYTES;
    if !beyond(hi).await? {
        return Ok(hi);
    }
    let mut lo = hi;
    hi *= 2;
    while beyond(hi).await? {
        lo = hi;
        hi = hi.saturating_mul(2);
    }
    while hi - lo > ROW_MAX {
        let mid = lo + (hi - lo) / 2;
        if beyond(mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // The rows ending after `lo` hold at most 128 KiB; tiny rows may be
    // too many to read, and then `hi` is near enough.
    const LAST_ROWS: i64 = 1024;
    let rows = store.read_log(key, lo, LAST_ROWS).await?;
    Ok(match rows.last() {
        Some(r) if (rows.len() as i64) < LAST_ROWS => r.end(),
        _ => hi,
    })
}

/// Whether an execution no longer runs (so its log will grow no more once
/// its worker's last batch is written).
pub(crate) fn finished(exec_state: &str) -> bool {
    !matches!(exec_state, "queued" | "running")
}
