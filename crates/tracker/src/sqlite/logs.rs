//! Mirrors `crate::logs` (PostgreSQL) for the embedded store.

use super::Embedded;
use crate::Result;
use crate::executions::ExecKey;
use crate::logs::{LogPiece, LogRow, LogState};
use uuid::Uuid;

/// Records a batch of pieces, of any executions, in one multi-row INSERT
/// (PostgreSQL: one `unnest` of arrays). A piece recorded already (a batch
/// retried after an ambiguous failure) is left as it is. Split in chunks so
/// a statement stays under SQLite's 32,766 bound parameters.
///
/// Measured on a batch of 100 pieces of 200 bytes (`synchronous = FULL`,
/// WAL, debug build): one multi-row INSERT 6-9 ms a batch, one transaction
/// of 100 single-row INSERTs 27-32 ms (each statement is a round trip to
/// SQLite's worker thread; the commit's fsync is the same for both).
pub(crate) async fn append_logs(t: &Embedded, pieces: &[LogPiece]) -> Result<()> {
    if pieces.is_empty() {
        return Ok(());
    }
    // 7 parameters a row.
    const ROWS: usize = 4_000;
    let mut tx = t.begin().await?;
    for chunk in pieces.chunks(ROWS) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO execution_logs (run_id, step, attempt, pos, stream, at, data) ",
        );
        insert.push_values(chunk, |mut row, p| {
            row.push_bind(p.key.run_id)
                .push_bind(p.key.step as i32)
                .push_bind(p.key.attempt as i32)
                .push_bind(p.pos)
                .push_bind(p.stream)
                .push_bind(p.at)
                .push_bind(p.data.as_slice());
        });
        insert.push(" ON CONFLICT DO NOTHING");
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes the rows of the middle of a long log: those past the kept head
/// (`pos >= head_end`) that end before `keep_from`. Returns how many went.
pub(crate) async fn trim_log(t: &Embedded, key: ExecKey, head_end: i64, keep_from: i64) -> Result<u64> {
    let done = t
        .write(async |c| {
            sqlx::query(
                "DELETE FROM execution_logs
          WHERE run_id = ?1 AND step = ?2 AND attempt = ?3
            AND pos >= ?4 AND pos + length(data) <= ?5",
            )
            .bind(key.run_id)
            .bind(key.step as i32)
            .bind(key.attempt as i32)
            .bind(head_end)
            .bind(keep_from)
            .execute(c)
            .await
        })
        .await?;
    Ok(done.rows_affected())
}

/// Marks the log complete: `total` bytes written by the module, of which
/// those not stored were omitted by the cap (or lost past the worker's
/// memory bound while the store was away).
pub(crate) async fn finish_log(t: &Embedded, key: ExecKey, total: i64) -> Result<()> {
    t.write(async |c| {
        sqlx::query(
            "UPDATE executions SET log_bytes = ?4,
                log_omitted = ?4 - (SELECT coalesce(sum(length(data)), 0) FROM execution_logs
                                     WHERE run_id = ?1 AND step = ?2 AND attempt = ?3)
          WHERE run_id = ?1 AND step = ?2 AND attempt = ?3",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(total)
        .execute(c)
        .await
    })
    .await?;
    Ok(())
}

/// The rows of one execution's log from byte `from` on, in order, at most
/// `limit` of them (a row holds at most 64 KiB). `length()` of a BLOB is its
/// size in bytes, as PostgreSQL's of a `bytea`.
pub(crate) async fn read_log(t: &Embedded, key: ExecKey, from: i64, limit: i64) -> Result<Vec<LogRow>> {
    Ok(sqlx::query_as::<_, LogRow>(
        "SELECT pos, stream, at, data FROM execution_logs
          WHERE run_id = ?1 AND step = ?2 AND attempt = ?3 AND pos + length(data) > ?4
            -- a row holds at most 64 KiB: the index range starts there
            AND pos > ?4 - 65536
          ORDER BY pos LIMIT ?5",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(from)
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}

/// Where each execution of a run stands for a log reader (see
/// `crate::logs::log_states`).
pub(crate) async fn log_states(t: &Embedded, run_id: Uuid) -> Result<Vec<LogState>> {
    Ok(sqlx::query_as::<_, LogState>(
        "SELECT e.run_id, e.step, e.attempt, e.module, e.state,
                coalesce(e.log_bytes, CASE WHEN e.stdout_bytes + e.stderr_bytes = 0 THEN 0 END) AS log_bytes,
                coalesce(e.log_omitted, CASE WHEN e.stdout_bytes + e.stderr_bytes = 0 THEN 0 END) AS log_omitted,
                r.state AS run_state
           FROM runs r JOIN executions e ON e.run_id = r.id
          WHERE r.id = ?1 ORDER BY e.step, e.attempt",
    )
    .bind(run_id)
    .fetch_all(&t.pool)
    .await?)
}
