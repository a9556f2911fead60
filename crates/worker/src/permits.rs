//! Module slots apart from runs in flight.
//!
//! `--concurrency N` bounds the modules running at once: a step holds one of
//! N permits from just before its spawn until its module is reaped, not while
//! it records its result. A worker given `extra_runs` E > 0 may hold up to
//! N + E runs in flight (deliveries), so that while one run records its step
//! (its write and its flush) another run's module uses the permit it gave up.
//! With no-op modules this took the embedded worker at `-c 2` from 42-45 %
//! to 51-55 % of the bare parallel spawn rate (same sitting, alternating).
//!
//! The extra runs are worth their cost only while modules are short, and a
//! run waiting for a permit behind long modules holds work another worker
//! could do. So the extra room is **open** only while modules are short:
//! - it starts closed (E slots of the inbox taken);
//! - it opens after [`OPEN_AFTER`] modules in a row ran under [`SHORT`];
//! - it closes as soon as a module runs [`SHORT`] or longer, or a step
//!   waited [`WAIT_AT_MOST`] for a permit.
//!
//! While closed, at most N runs are in flight, so a step never waits for a
//! permit (each run in flight holds or will hold one of the N). A step that
//! waits past [`WAIT_AT_MOST`] all the same (modules turned long while the
//! room was open) gives its work back: a fresh delivery is put back before
//! it is claimed (not counted toward the queue's delivery limit), a claimed continuation is handed back as its next attempt
//! (`step.rs`).

use crate::permit_queue::{Permit, PermitQueue, Waiter};
use scheduler_broker::Slots;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// A module running at least this long closes the extra room.
pub const SHORT: Duration = Duration::from_millis(50);
/// Modules in a row under [`SHORT`] before the extra room opens.
pub const OPEN_AFTER: u32 = 8;
/// The longest a step waits for a permit before it gives its work back.
pub const WAIT_AT_MOST: Duration = Duration::from_millis(250);

/// The worker's module permits, and the extra room's state.
pub struct Permits {
    modules: Arc<PermitQueue>,
    extra: u16,
    slots: Slots,
    room: Mutex<Room>,
}

#[derive(Debug, Default)]
struct Room {
    open: bool,
    /// Modules in a row under [`SHORT`].
    short: u32,
    /// The E slots taken while closed (taken at [`Permits::start`]).
    taken: bool,
}

/// Whether the extra room should change, after one module's run time.
/// Pure: the rule of the module docs.
fn after_module(open: bool, short_streak: u32, took: Duration) -> (bool, u32) {
    if took >= SHORT {
        return (false, 0);
    }
    let streak = short_streak.saturating_add(1);
    (open || streak >= OPEN_AFTER, streak)
}

impl Permits {
    /// `concurrency` permits; `extra` runs beyond them while the room is
    /// open (the inbox must have been opened with `concurrency + extra`).
    pub fn new(concurrency: u16, extra: u16, slots: Slots) -> Permits {
        Permits {
            modules: PermitQueue::new(concurrency.max(1) as usize),
            extra,
            slots,
            room: Mutex::new(Room::default()),
        }
    }

    /// Closes the extra room before the first delivery.
    pub async fn start(&self) {
        let mut room = self.room.lock().await;
        self.close(&mut room).await;
    }

    /// A permit for one module: at once if one is free, else within
    /// [`WAIT_AT_MOST`] (continuations served before fresh deliveries:
    /// `permit_queue.rs`); `None` (and the room closed) past that.
    pub async fn acquire(&self, who: Waiter) -> Option<Permit> {
        match self.modules.acquire(who, WAIT_AT_MOST).await {
            Some(permit) => Some(permit),
            None => {
                tracing::info!(
                    waited = ?WAIT_AT_MOST,
                    "no module slot came free: giving the step back, and taking no more runs than slots until modules are short again"
                );
                let mut room = self.room.lock().await;
                room.short = 0;
                self.close(&mut room).await;
                None
            }
        }
    }

    /// Tells how long a module ran (from spawn to its reaping).
    pub async fn ended(&self, took: Duration) {
        if self.extra == 0 {
            return;
        }
        let mut room = self.room.lock().await;
        let (open, streak) = after_module(room.open, room.short, took);
        room.short = streak;
        match (room.open, open) {
            (false, true) => self.open(&mut room).await,
            (true, false) => {
                tracing::info!(?took, "a module ran long: holding no more runs than module slots");
                self.close(&mut room).await
            }
            _ => {}
        }
    }

    async fn close(&self, room: &mut Room) {
        room.open = false;
        if self.extra == 0 || room.taken {
            return;
        }
        room.taken = true;
        for _ in 0..self.extra {
            if let Err(e) = self.slots.reserve().await {
                tracing::warn!(error = %e, "could not narrow the consumer to the module slots");
            }
        }
    }

    async fn open(&self, room: &mut Room) {
        room.open = true;
        if !room.taken {
            return;
        }
        room.taken = false;
        for _ in 0..self.extra {
            if let Err(e) = self.slots.free().await {
                tracing::warn!(error = %e, "could not widen the consumer beyond the module slots");
            }
        }
        tracing::info!(
            "modules are short: holding up to {} runs beyond the module slots, so that recording overlaps modules",
            self.extra
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_opens_after_a_streak_of_short_modules_and_closes_on_a_long_one() {
        let quick = Duration::from_millis(1);
        let (mut open, mut streak) = (false, 0);
        for i in 1..OPEN_AFTER {
            (open, streak) = after_module(open, streak, quick);
            assert!(!open, "closed after {i} short modules");
        }
        (open, streak) = after_module(open, streak, quick);
        assert!(open, "open after {OPEN_AFTER} short modules");
        (open, streak) = after_module(open, streak, SHORT);
        assert_eq!(
            (open, streak),
            (false, 0),
            "a module of SHORT closes it and resets the streak"
        );
        (open, _) = after_module(open, streak, quick);
        assert!(!open, "one short module does not reopen it");
    }
}
