//! Live pages: server-sent event streams that say "something changed", after
//! which the page re-fetches its own fragment (htmx `hx-trigger="sse:change"`).
//! The truth stays in PostgreSQL; an event carries no data worth trusting.
//!
//! `/events` (the runs list) shares one poller among all open pages: it reads
//! [`scheduler_tracker::Store::runs_fingerprint`] once a second while at least one page
//! listens, and stops when the last one leaves. `/runs/{id}/events` polls
//! that run's own fingerprint (a primary-key lookup) per open page.
//!
//! Every stream ends when the server shuts down: a graceful shutdown waits
//! for open connections, and these never end on their own.

use crate::AppState;
use crate::error::PageError;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

pub(crate) const POLL_EVERY: Duration = Duration::from_secs(1);

/// The shared runs-list poller.
pub(crate) struct Live {
    fingerprint: watch::Sender<String>,
    polling: AtomicBool,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            fingerprint: watch::Sender::new(String::new()),
            polling: AtomicBool::new(false),
        }
    }
}

pub(crate) async fn runs_events(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.live.fingerprint.subscribe();
    ensure_polling(&state);
    let changes = WatchStream::from_changes(rx).map(|_| Ok(Event::default().event("change").data("runs")));
    Sse::new(changes.take_until(state.shutdown.clone().cancelled_owned())).keep_alive(KeepAlive::default())
}

fn ensure_polling(state: &AppState) {
    if state.live.polling.swap(true, Ordering::AcqRel) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let live = &state.live;
        loop {
            if live.fingerprint.receiver_count() == 0 || state.shutdown.is_cancelled() {
                live.polling.store(false, Ordering::Release);
                // A page may have subscribed between the check and the
                // store and seen `polling` still set: take over for it.
                if live.fingerprint.receiver_count() == 0
                    || state.shutdown.is_cancelled()
                    || live.polling.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
            match state.store.runs_fingerprint().await {
                Ok(f) => {
                    live.fingerprint.send_if_modified(|old| {
                        // The first reading is the baseline, not a change.
                        let changed = !old.is_empty() && *old != f;
                        *old = f;
                        changed
                    });
                }
                Err(e) => tracing::debug!(error = %e, "live runs poll failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = state.shutdown.cancelled() => {}
            }
        }
    });
}

pub(crate) async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let run_id = crate::params::run_id(&id)?;
    let first = state
        .store
        .run_fingerprint(run_id)
        .await?
        .ok_or_else(|| crate::error::Problem::no_run(run_id))?;
    let store = state.store.clone();
    let changes = futures_util::stream::unfold((store, first), move |(store, last)| async move {
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            match store.run_fingerprint(run_id).await {
                Ok(Some(now)) if now != last => {
                    let event = Event::default().event("change").data("run");
                    return Some((Ok(event), (store, now)));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, %run_id, "live run poll failed; retrying"),
            }
        }
    });
    Ok(Sse::new(changes.take_until(state.shutdown.clone().cancelled_owned())).keep_alive(KeepAlive::default()))
}
