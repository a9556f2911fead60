//! Module logs: every byte an execution writes, as rows of `execution_logs`
//! (a stretch of one stream, its byte offset `pos` in the whole output, and
//! when it was read). Written in batches by the worker's log shipper, apart
//! from the step's own commit; read by `scheduler logs` and the UI, from any
//! host, while the module runs and after.

use crate::executions::ExecKey;
use crate::{Result, Tracker};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

/// A stretch of output to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPiece {
    pub key: ExecKey,
    /// Byte offset in the execution's whole output (both streams, in order).
    pub pos: i64,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub at: DateTime<Utc>,
    pub data: Vec<u8>,
}

/// A recorded stretch of output, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct LogRow {
    pub pos: i64,
    pub stream: String,
    pub at: DateTime<Utc>,
    pub data: Vec<u8>,
}

impl LogRow {
    /// Where the next row starts when nothing was left out between them.
    pub fn end(&self) -> i64 {
        self.pos + self.data.len() as i64
    }
}

/// The line a reader shows where the cap left bytes out (or a worker's
/// memory bound dropped them while the database was away).
pub fn omitted_line(bytes: i64) -> String {
    let digits = bytes.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("… {grouped} bytes omitted …\n")
}

/// Records a batch of pieces, of any executions, in one statement. A piece
/// recorded already (a batch retried after an ambiguous failure) is left as
/// it is.
pub(crate) async fn append_logs(t: &Tracker, pieces: &[LogPiece]) -> Result<()> {
    if pieces.is_empty() {
        return Ok(());
    }
    let mut runs = Vec::with_capacity(pieces.len());
    let (mut steps, mut attempts, mut positions) = (Vec::new(), Vec::new(), Vec::new());
    let (mut streams, mut times, mut data) = (Vec::new(), Vec::new(), Vec::new());
    for p in pieces {
        runs.push(p.key.run_id);
        steps.push(p.key.step as i32);
        attempts.push(p.key.attempt as i32);
        positions.push(p.pos);
        streams.push(p.stream);
        times.push(p.at);
        data.push(p.data.as_slice());
    }
    sqlx::query(
        "INSERT INTO execution_logs (run_id, step, attempt, pos, stream, at, data)
         SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::bigint[], $5::text[], $6::timestamptz[], $7::bytea[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&runs)
    .bind(&steps)
    .bind(&attempts)
    .bind(&positions)
    .bind(&streams)
    .bind(&times)
    .bind(&data)
    .execute(&t.pool)
    .await?;
    Ok(())
}

/// Deletes the rows of the middle of a long log: those past the kept head
/// (`pos >= head_end`) that end before `keep_from`. Returns how many went.
pub(crate) async fn trim_log(t: &Tracker, key: ExecKey, head_end: i64, keep_from: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM execution_logs
          WHERE run_id = $1 AND step = $2 AND attempt = $3
            AND pos >= $4 AND pos + length(data) <= $5",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(head_end)
    .bind(keep_from)
    .execute(&t.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Marks the log complete: `total` bytes written by the module, of which
/// those not stored were omitted by the cap (or lost past the worker's
/// memory bound while the database was away).
pub(crate) async fn finish_log(t: &Tracker, key: ExecKey, total: i64) -> Result<()> {
    sqlx::query(
        "UPDATE executions SET log_bytes = $4,
                log_omitted = $4 - (SELECT coalesce(sum(length(data)), 0) FROM execution_logs
                                     WHERE run_id = $1 AND step = $2 AND attempt = $3)
          WHERE run_id = $1 AND step = $2 AND attempt = $3",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(total)
    .execute(&t.pool)
    .await?;
    Ok(())
}

/// The rows of one execution's log from byte `from` on, in order, at most
/// `limit` of them (a row holds at most 64 KiB).
pub(crate) async fn read_log(t: &Tracker, key: ExecKey, from: i64, limit: i64) -> Result<Vec<LogRow>> {
    Ok(sqlx::query_as::<_, LogRow>(
        "SELECT pos, stream, at, data FROM execution_logs
          WHERE run_id = $1 AND step = $2 AND attempt = $3 AND pos + length(data) > $4
            -- a row holds at most 64 KiB: the index range starts there
            AND pos > $4 - 65536
          ORDER BY pos LIMIT $5",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(from)
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}

/// Where each execution of a run stands for a log reader: its state and,
/// once its log is complete, how many bytes it wrote and how many the cap
/// left out (0 and 0 for a module that printed nothing: no row, no total
/// written, its execution's byte counts say so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct LogState {
    pub run_id: Uuid,
    pub step: i32,
    pub attempt: i32,
    pub module: String,
    pub state: String,
    pub log_bytes: Option<i64>,
    pub log_omitted: Option<i64>,
    /// The run's state: a reader following it stops once it is final.
    pub run_state: String,
}

pub(crate) async fn log_states(t: &Tracker, run_id: Uuid) -> Result<Vec<LogState>> {
    Ok(sqlx::query_as::<_, LogState>(
        "SELECT e.run_id, e.step, e.attempt, e.module, e.state,
                coalesce(e.log_bytes, CASE WHEN e.stdout_bytes + e.stderr_bytes = 0 THEN 0 END) AS log_bytes,
                coalesce(e.log_omitted, CASE WHEN e.stdout_bytes + e.stderr_bytes = 0 THEN 0 END) AS log_omitted,
                r.state AS run_state
           FROM runs r JOIN executions e ON e.run_id = r.id
          WHERE r.id = $1 ORDER BY e.step, e.attempt",
    )
    .bind(run_id)
    .fetch_all(&t.pool)
    .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn omitted_bytes_are_counted_with_thousands_separators() {
        assert_eq!(super::omitted_line(48_213_331), "… 48,213,331 bytes omitted …\n");
        assert_eq!(super::omitted_line(999), "… 999 bytes omitted …\n");
        assert_eq!(super::omitted_line(1000), "… 1,000 bytes omitted …\n");
    }
}
