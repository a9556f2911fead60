//! How a connection waits for SQLite's one writer. SQLite's own busy
//! handler (`sqlite3_busy_timeout`) sleeps 1, 2, 5, 10, 15, 20, 25... ms
//! between tries: with a worker's slots and its producer writing at once,
//! every step waited milliseconds for a lock held for tens of microseconds
//! (measured: about three such sleeps per module execution, 2.8 ms each).
//! This one tries again after 50 µs, backing off to 1 ms only after the
//! first 10 ms of waiting, and gives up (`SQLITE_BUSY`) after the same busy
//! timeout.
//!
//! Each connection runs on a thread of its own (sqlx's SQLite worker), so
//! the sleep blocks only the connection that waits.
//!
//! The tracker's one place with `unsafe` code: sqlx exposes no busy
//! handler, only the raw handle to install one on.
#![allow(unsafe_code)]

use libsqlite3_sys::{sqlite3, sqlite3_busy_handler};
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::time::{Duration, Instant};

thread_local! {
    /// When the current wait began (count 0 of the handler).
    static SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The pause before try `count + 1` of a wait that began `waited` ago.
pub(crate) fn pause(waited: Duration) -> Duration {
    if waited < Duration::from_millis(10) {
        Duration::from_micros(50)
    } else if waited < Duration::from_millis(100) {
        Duration::from_micros(250)
    } else {
        Duration::from_millis(1)
    }
}

extern "C" fn on_busy(timeout_ms: *mut c_void, count: c_int) -> c_int {
    c_int::from(again(count, Duration::from_millis(timeout_ms as usize as u64)))
}

/// The busy handler's step, for both connections' handlers (`inline.rs`
/// has the other): at try `count` of a wait bounded by `limit`, whether to
/// try again, after pausing this thread.
pub(crate) fn again(count: c_int, limit: Duration) -> bool {
    let now = Instant::now();
    let since = SINCE.with(|s| {
        if count == 0 || s.get().is_none() {
            s.set(Some(now));
        }
        s.get().unwrap_or(now)
    });
    let waited = now - since;
    if waited >= limit {
        return false;
    }
    std::thread::sleep(pause(waited));
    true
}

/// Installs the handler on a connection (replacing its busy timeout).
pub(crate) async fn install(conn: &mut sqlx::SqliteConnection, timeout: Duration) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db: *mut sqlite3 = handle.as_raw_handle().as_ptr();
    let ms = timeout.as_millis().min(i32::MAX as u128) as usize;
    // SAFETY: `db` is this connection's open handle, held exclusively while
    // `handle` lives; the callback is a plain function that reads only its
    // argument (a number, not a pointer to anything) and a thread-local.
    let rc = unsafe { sqlite3_busy_handler(db, Some(on_busy), ms as *mut c_void) };
    match rc {
        0 => Ok(()),
        rc => Err(sqlx::Error::Configuration(
            format!("could not install the busy handler (SQLite error {rc})").into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::pause;
    use std::time::Duration;

    #[test]
    fn a_wait_tries_again_within_50_us_at_first_and_backs_off_to_1_ms() {
        assert_eq!(pause(Duration::ZERO), Duration::from_micros(50));
        assert_eq!(pause(Duration::from_millis(20)), Duration::from_micros(250));
        assert_eq!(pause(Duration::from_secs(5)), Duration::from_millis(1));
    }
}
