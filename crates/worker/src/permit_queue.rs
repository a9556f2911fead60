//! The module permits themselves: N of them, and two queues of steps
//! waiting for one. A permit that comes free goes to the step that waited
//! longest among the **continuations** (the next steps of runs this worker
//! holds, already claimed in the write that recorded their previous step),
//! and only when none waits to a **fresh delivery** (a `start_etl` or an
//! `exec_module`, not yet claimed).
//!
//! Why continuations first: a continuation that waits too long is closed
//! as `abandoned` and handed back through the broker as its next attempt (a
//! write, a message, an attempt on its run's page), while a fresh delivery
//! that waits too long is only put back on its queue, unclaimed, for any
//! worker. Serving runs already in flight first also ends them sooner.
//! (tokio's semaphore serves its waiters in one FIFO queue.)
//!
//! A permit is given back when dropped; a waiter that stops waiting (its
//! timeout) leaves its place, and a permit sent to it as it left comes back
//! with the channel's drop. So the N permits are never lost nor doubled
//! (tested below, with waiters that give up at random).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Which queue a step waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// The next step of a run in flight here, claimed already: served first.
    Continuation,
    /// A delivery not yet claimed.
    Fresh,
}

/// N module permits and the steps waiting for one.
#[derive(Debug)]
pub struct PermitQueue {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: usize,
    continuations: VecDeque<oneshot::Sender<Permit>>,
    fresh: VecDeque<oneshot::Sender<Permit>>,
}

/// One module permit, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    queue: Option<Arc<PermitQueue>>,
}

impl PermitQueue {
    pub fn new(permits: usize) -> Arc<PermitQueue> {
        Arc::new(PermitQueue {
            state: Mutex::new(State {
                free: permits,
                continuations: VecDeque::new(),
                fresh: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit now if one is free (none is while steps wait: a permit that
    /// comes free goes to them), else within `at_most`; `None` past that.
    pub async fn acquire(self: &Arc<Self>, who: Waiter, at_most: Duration) -> Option<Permit> {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 {
                st.free -= 1;
                return Some(self.permit());
            }
            let (tx, rx) = oneshot::channel();
            let line = match who {
                Waiter::Continuation => &mut st.continuations,
                Waiter::Fresh => &mut st.fresh,
            };
            // Places left by waiters that gave up.
            line.retain(|tx| !tx.is_closed());
            line.push_back(tx);
            rx
        };
        match tokio::time::timeout(at_most, rx).await {
            Ok(Ok(permit)) => Some(permit),
            // Dropping `rx` closes the place; a permit sent meanwhile is
            // dropped with the channel, which gives it back.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Permits free now (none while steps wait).
    #[cfg(test)]
    fn available(&self) -> usize {
        self.lock().free
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            queue: Some(self.clone()),
        }
    }

    /// A permit came back: to the first continuation still waiting, else
    /// to the first fresh delivery, else free.
    fn release(self: &Arc<Self>) {
        let mut st = self.lock();
        loop {
            let next = match st.continuations.pop_front() {
                Some(tx) => Some(tx),
                None => st.fresh.pop_front(),
            };
            let Some(tx) = next else {
                st.free += 1;
                return;
            };
            if let Err(mut unsent) = tx.send(self.permit()) {
                // That waiter gave up: disarm this copy (its drop must not
                // release again, under the lock) and try the next.
                unsent.queue = None;
            } else {
                return;
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_freed_permit_goes_to_a_waiting_continuation_before_an_earlier_fresh_delivery() {
        let q = PermitQueue::new(1);
        let held = q.acquire(Waiter::Fresh, LONG).await.expect("one is free");
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        // A step that starts waiting now and says when it is served.
        let waiting = |who: Waiter, name: &'static str| {
            let (q, tx) = (q.clone(), order_tx.clone());
            tokio::spawn(async move {
                let p = q.acquire(who, LONG).await;
                tx.send(name).unwrap();
                p
            })
        };
        let fresh = waiting(Waiter::Fresh, "fresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let next = waiting(Waiter::Continuation, "continuation");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(q.available(), 0);
        drop(held);
        assert_eq!(
            order.recv().await,
            Some("continuation"),
            "the continuation is served first"
        );
        drop(next.await.unwrap().expect("the continuation got a permit"));
        assert_eq!(order.recv().await, Some("fresh"), "then the fresh delivery");
        drop(fresh.await.unwrap().expect("the fresh delivery got one"));
        assert_eq!(q.available(), 1, "the permit came back");
    }

    #[tokio::test]
    async fn a_waiter_past_its_bound_gets_none_and_leaves_its_place() {
        let q = PermitQueue::new(1);
        let held = q.acquire(Waiter::Continuation, LONG).await.unwrap();
        let started = std::time::Instant::now();
        assert!(q.acquire(Waiter::Fresh, Duration::from_millis(30)).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
        drop(held);
        assert_eq!(q.available(), 1, "nobody waits any more: the permit is free");
    }

    /// Many steps acquire and hold permits for a while, some giving up at
    /// random: never more than N held at once, and all N back at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn permits_are_never_lost_nor_doubled_when_waiters_give_up() {
        const N: usize = 3;
        let q = PermitQueue::new(N);
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..400u64 {
            let (q, held, most) = (q.clone(), held.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let who = if i % 3 == 0 {
                    Waiter::Continuation
                } else {
                    Waiter::Fresh
                };
                // Bounds from 0.1 to 2 ms: many give up, some just as a
                // permit is sent to them.
                let bound = Duration::from_micros(100 + (i * 7919) % 1900);
                if let Some(p) = q.acquire(who, bound).await {
                    let now = held.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_micros(50 + (i * 104_729) % 400)).await;
                    held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    drop(p);
                    true
                } else {
                    false
                }
            }));
        }
        let mut got = 0;
        for t in tasks {
            got += usize::from(t.await.unwrap());
        }
        assert!(
            most.load(std::sync::atomic::Ordering::SeqCst) <= N,
            "never more than N at once"
        );
        assert!(got >= N, "some got permits: {got}");
        assert!(got < 400, "some gave up (the test's point): {got}");
        assert_eq!(q.available(), N, "every permit came back");
    }
}
