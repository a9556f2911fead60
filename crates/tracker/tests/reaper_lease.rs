//! The reaper lease, on each backend: one holder at a time, renewable by
//! its holder, taken over only once it has lapsed.

mod common;

use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long past its TTL a lapsed lease may take to be taken over.
const LAPSE_SLACK: Duration = Duration::from_secs(10);

#[tokio::test]
async fn only_one_reaper_holds_the_lease_until_it_lapses() {
    common::each_backend("scheduler_t_lease", |store| async move {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ttl = Duration::from_secs(2);

        assert!(store.take_reaper_lease(a, ttl).await.unwrap(), "a free lease is taken");
        assert!(
            !store.take_reaper_lease(b, ttl).await.unwrap(),
            "held by a: b must wait"
        );
        let renewed = Instant::now();
        assert!(store.take_reaper_lease(a, ttl).await.unwrap(), "the holder renews it");

        // Ten workers racing for a held lease: none gets it.
        let racers: Vec<_> = (0..10)
            .map(|_| {
                let s = store.arc();
                tokio::spawn(async move { s.take_reaper_lease(Uuid::now_v7(), ttl).await.unwrap() })
            })
            .collect();
        for r in racers {
            assert!(!r.await.unwrap());
        }

        // a stops renewing (it died): ten racers try again and again until
        // one round has a winner, which must come once the lease lapsed, not
        // before, and alone.
        let deadline = renewed + ttl + LAPSE_SLACK;
        let (winners, taken_after) = loop {
            let racers: Vec<_> = (0..10)
                .map(|_| {
                    let s = store.arc();
                    tokio::spawn(async move { s.take_reaper_lease(Uuid::now_v7(), ttl).await.unwrap() })
                })
                .collect();
            let mut winners = 0;
            for r in racers {
                winners += r.await.unwrap() as usize;
            }
            let elapsed = renewed.elapsed();
            if winners > 0 {
                break (winners, elapsed);
            }
            assert!(
                Instant::now() < deadline,
                "nobody took the lease {elapsed:?} after a's last renewal (TTL {ttl:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            taken_after >= ttl,
            "the lease was taken {taken_after:?} after a's last renewal, before its TTL ({ttl:?}) lapsed"
        );
        assert_eq!(winners, 1, "exactly one reaper after the lapse");
        assert!(!store.take_reaper_lease(a, ttl).await.unwrap(), "a lost it");
    })
    .await;
}
