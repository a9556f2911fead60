//! The step's own write (a result recorded, the next step queued, no run
//! move: every step but a run's last) in one call to SQLite's thread.
//!
//! sqlx runs each SQLite connection on a thread of its own; every statement
//! is a message to that thread and an answer back, about 50-70 µs each on
//! these machines (measured in a worker, runs one at a time: `BEGIN
//! IMMEDIATE` 68 µs p50, close + read + queue 210 µs, the commit about
//! 60 µs before its flush). The general path (`apply.rs`) makes five such
//! calls for this write. Here the same statements, from the same texts,
//! go as one script: `BEGIN IMMEDIATE; close; read; queue; COMMIT`, one
//! call whose answer streams back each statement's rows.
//!
//! What the general path decides between statements the script decides in
//! SQL, with the same outcome: the read and the queue apply only if the
//! close changed its row (`changes() = 1`: SQLite's count of the rows the
//! last completed `INSERT`, `UPDATE` or `DELETE` changed, here the close's;
//! a `SELECT` does not reset it), and the queue only while the run is
//! `running`, as the read requires. So a close that does not apply writes
//! nothing, and a run no longer running gets nothing queued.
//!
//! A script that fails midway leaves its transaction open: the write turn
//! rolls it back before anyone else writes (`Turn::script`).
//!
//! sqlx marks several statements in one prepared query as deprecated (only
//! its SQLite driver runs them); the build breaks, loudly, the day it goes,
//! and the general path is the fallback to return to.

use super::apply::after;
use super::apply_sql::{CLOSE, QueuedRow, RunRow, bind_close, queue_sql, read_sql, written};
use super::now;
use crate::Result;
use crate::apply::{Close, Write, Written};
use futures_util::TryStreamExt;
use sqlx::types::Json;
use sqlx::{Either, FromRow, SqliteConnection};
use std::sync::LazyLock;

/// Whether `w` is the hot shape: a worker's result (not recovery's
/// abandon), no run move, the next step queued now (not a delayed retry,
/// which writes an event too).
pub(super) fn is_hot(w: &Write<'_>) -> bool {
    matches!(w.close, Some(Close::Finish { .. }))
        && w.plan.run.is_none()
        && w.plan.queue.is_some_and(|q| q.delay.is_none())
}

/// The gate of the read and the queue: the close applied.
const CLOSED: &str = " AND changes() = 1";

/// The parameters of the read and the queue, renumbered after [`CLOSE`]'s
/// `$1..$36`: the run (`$1`) and the time (`$35`) are the close's; the
/// queued step's from `$37` on.
const RENUMBER: [(u32, u32); 9] = [
    (1, 1),
    (2, 37),
    (3, 38),
    (4, 39),
    (5, 40),
    (6, 41),
    (7, 42),
    (8, 43),
    (9, 35),
];

static SCRIPT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "BEGIN IMMEDIATE;\n{CLOSE};\n{};\n{};\nCOMMIT",
        renumber(&read_sql(CLOSED), &RENUMBER),
        renumber(&queue_sql(&format!(" AND state = 'running'{CLOSED}")), &RENUMBER),
    )
});

/// Writes `w` (of the hot shape, [`is_hot`]) on `conn`, outside any
/// transaction: the script opens and commits its own.
pub(super) async fn apply_hot(conn: &mut SqliteConnection, w: &Write<'_>) -> Result<Written> {
    let (Some(close), Some(q)) = (w.close, w.plan.queue) else {
        unreachable!("apply_hot is called only for the hot shape (is_hot)")
    };
    let now = now();
    let claim = w.claim_for;
    let query = bind_close(sqlx::query(sqlx::AssertSqlSafe(SCRIPT.as_str())), w.run_id, close, now)
        .bind(q.step as i32)
        .bind(q.attempt as i32)
        .bind(claim.map(|c| c.worker_id))
        .bind(claim.map(|c| after(now, c.lease)))
        .bind(q.retry as i32)
        .bind(None::<chrono::DateTime<chrono::Utc>>)
        .bind(Json(claim.map_or(&[][..], |c| c.queues)));
    // Statement 0 is the BEGIN; each statement's rows come before its end.
    let (mut statement, mut closed, mut run, mut queued) = (0, false, None::<RunRow>, None::<QueuedRow>);
    #[allow(deprecated)]
    let mut answers = query.fetch_many(&mut *conn);
    while let Some(answer) = answers.try_next().await? {
        match answer {
            Either::Left(_) => statement += 1,
            Either::Right(row) => match statement {
                1 => closed = true,
                2 => run = Some(RunRow::from_row(&row)?),
                3 => queued = Some(QueuedRow::from_row(&row)?),
                _ => {}
            },
        }
    }
    if statement != 5 {
        return Err(sqlx::Error::Protocol(format!(
            "the step's write script ended after {statement} of 5 statements"
        ))
        .into());
    }
    Ok(match (closed, run) {
        (false, _) => Written::default(),
        (true, None) => Written {
            closed: true,
            ..Written::default()
        },
        (true, Some(run)) => written(run, queued),
    })
}

/// `sql` with each `$n` of `map` renamed (a `$` not followed by a digit,
/// as in a JSON path, is left alone).
fn renumber(sql: &str, map: &[(u32, u32)]) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after_sign = &rest[at + 1..];
        let digits = after_sign.bytes().take_while(u8::is_ascii_digit).count();
        match after_sign[..digits].parse::<u32>() {
            Ok(n) => {
                let to = map.iter().find(|(from, _)| *from == n).map_or(n, |(_, to)| *to);
                out.push('$');
                out.push_str(&to.to_string());
            }
            Err(_) => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &after_sign[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{RENUMBER, SCRIPT, renumber};

    #[test]
    fn renumbering_renames_whole_parameters_and_leaves_json_paths_alone() {
        let sql = "SELECT $1, $10, $2, '$.steps[' || $2 || ']', $";
        assert_eq!(
            renumber(sql, &[(1, 5), (2, 37)]),
            "SELECT $5, $10, $37, '$.steps[' || $37 || ']', $"
        );
    }

    #[test]
    fn the_script_uses_each_parameter_of_the_queued_step_and_no_other() {
        let script = &*SCRIPT;
        for n in 37..=43 {
            assert!(script.contains(&format!("${n}")), "${n} unused");
        }
        assert!(!script.contains("$44"));
        // The read and the queue keep the run and the time of the close.
        let tail = &script[script.find("RETURNING started_at").unwrap()..];
        assert!(tail.contains("id = $1 ") && tail.contains("$35"));
        for (from, _) in RENUMBER.iter().filter(|(from, to)| from != to && *from != 9) {
            assert!(!tail.contains(&format!("${from},")), "${from} left unrenumbered");
        }
    }
}
