//! The transport's promises against the real RabbitMQ, each run once per
//! queue type (`both_types!`): publish, consume, acknowledge; "never more
//! unsettled deliveries + taken slots than slots" through every slot change;
//! dead-lettering; redelivery after a consumer's crash; and, for quorum
//! queues, a poison message dead-lettered after the delivery limit. Queues
//! are unique per test and expire.

use scheduler_broker::{Broker, BrokerConfig, BrokerError, Inbox, Incoming, QueueType, Transport};
use std::time::{Duration, Instant};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// How long a consumer is given to (wrongly) receive one more delivery.
const QUIET: Duration = Duration::from_millis(700);

fn config(queue_type: QueueType) -> BrokerConfig {
    BrokerConfig {
        queue_expires_ms: Some(600_000),
        queue_type,
        ..BrokerConfig::new(AMQP_URL)
    }
}

async fn broker(queue_type: QueueType) -> Broker {
    Broker::connect(&config(queue_type), "broker-test").await.unwrap()
}

fn unique(name: &str) -> String {
    format!("bt-{name}-{}", uuid_suffix())
}

fn uuid_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

async fn publish_n(broker: &Broker, queue: &str, n: u8) {
    for i in 0..n {
        broker.publish_raw(queue, &[i], "t").await.unwrap();
    }
}

async fn next(inbox: &mut Box<dyn Inbox>) -> Incoming {
    tokio::time::timeout(Duration::from_secs(10), inbox.next())
        .await
        .expect("a delivery within 10 s")
        .unwrap()
        .expect("the consumer is live")
}

/// Nothing more is delivered for [`QUIET`].
async fn assert_quiet(inbox: &mut Box<dyn Inbox>, why: &str) {
    if let Ok(got) = tokio::time::timeout(QUIET, inbox.next()).await {
        let data = got.ok().flatten().map(|d| d.data);
        panic!("{why}: got a delivery {data:?}");
    }
}

/// Ready messages in `queue`, once the count settles at `want` (a quorum
/// queue answers from its Raft state, a moment behind).
async fn wait_depth(broker: &Broker, queue: &str, want: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ready, _) = broker.queue_depth(queue).await.unwrap();
        if ready == want {
            return;
        }
        assert!(Instant::now() < deadline, "{queue}: {ready} ready, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

macro_rules! both_types {
    ($($name:ident),* $(,)?) => {
        mod classic { $(#[tokio::test] async fn $name() { super::$name(scheduler_broker::QueueType::Classic).await } )* }
        mod quorum { $(#[tokio::test] async fn $name() { super::$name(scheduler_broker::QueueType::Quorum).await } )* }
    };
}

both_types!(
    published_messages_are_consumed_and_acknowledged_once,
    deliveries_plus_taken_slots_never_exceed_the_slots,
    slots_are_shared_by_the_queues_of_one_worker,
    a_dead_lettered_message_lands_in_the_dead_queue,
    a_consumer_that_dies_gives_its_deliveries_back,
    a_queue_deleted_behind_the_connections_back_is_declared_again_after_an_unroutable_publish,
    a_held_delivery_keeps_its_room_after_the_connection_is_replaced,
    a_delivery_held_through_a_slot_change_gives_its_room_back_when_settled,
);

/// Three slots. Runs hold their deliveries; one outlives the hold and takes
/// a slot, so the consumer is replaced, its prefetch now excluding the
/// delivery another run still holds. When that run settles, its room comes
/// back at once, not at the next slot change.
async fn a_delivery_held_through_a_slot_change_gives_its_room_back_when_settled(t: QueueType) {
    let b = broker(t).await;
    let q = unique("through");
    b.declare(&q).await.unwrap();
    publish_n(&b, &q, 6).await;
    let mut inbox = b.consume(std::slice::from_ref(&q), 3, "t").await.unwrap();
    let slots = inbox.slots();
    let long = next(&mut inbox).await;
    let short = next(&mut inbox).await;
    let duplicate = next(&mut inbox).await;
    slots.take(&long).await.unwrap();
    long.ack().await.unwrap();
    duplicate.ack().await.unwrap();
    let d = next(&mut inbox).await;
    assert_quiet(&mut inbox, "1 running step + 2 unsettled deliveries fill 3 slots").await;
    short.ack().await.unwrap();
    let e = next(&mut inbox).await;
    assert_quiet(&mut inbox, "1 running step + 2 unsettled deliveries fill 3 slots").await;
    for x in [d, e] {
        x.ack().await.unwrap();
    }
    slots.free().await.unwrap();
    inbox.close().await;
    b.delete_queue(&q).await.unwrap();
}

/// A worker runs a short run with its delivery unsettled (the delivery is
/// what holds the slot). When the connection is replaced meanwhile, the
/// broker gives that delivery back and the inbox stops counting it; the
/// run is told, and takes a slot (as the worker does): the new consumer
/// gets only the other slot until the run frees it.
async fn a_held_delivery_keeps_its_room_after_the_connection_is_replaced(t: QueueType) {
    let b = broker(t).await;
    let q = unique("held");
    b.declare(&q).await.unwrap();
    publish_n(&b, &q, 4).await;
    let mut inbox = b.consume(std::slice::from_ref(&q), 2, "t").await.unwrap();
    let slots = inbox.slots();
    let running = next(&mut inbox).await;
    let told = tokio::spawn(slots.replaced());
    let other = next(&mut inbox).await;
    other.ack().await.unwrap();
    // The connection goes (a broker restart, the stall watchdog).
    b.reconnect().await.unwrap();
    inbox.reopen().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), told)
        .await
        .expect("the run is told its delivery no longer counts")
        .unwrap();
    slots.take(&running).await.unwrap();
    let d = next(&mut inbox).await;
    assert_quiet(&mut inbox, "1 running step + 1 unsettled delivery fill 2 slots").await;
    // The run ends: settling fails on the old channel; its slot frees.
    let _ = running.ack().await;
    slots.free().await.unwrap();
    let e = next(&mut inbox).await;
    assert_quiet(&mut inbox, "2 unsettled deliveries fill 2 slots").await;
    for x in [d, e] {
        x.ack().await.unwrap();
    }
    inbox.close().await;
    b.delete_queue(&q).await.unwrap();
}

/// A connection declares a queue once; if the queue goes away (an operator
/// deletes it, `x-expires`), the publish says `Unroutable` and the next
/// declare really declares it again (what `publish_noted` does).
async fn a_queue_deleted_behind_the_connections_back_is_declared_again_after_an_unroutable_publish(t: QueueType) {
    let b = broker(t).await;
    let q = unique("gone");
    b.declare(&q).await.unwrap();
    b.declare(&q).await.unwrap(); // once per connection: no round trip
    let other = broker(t).await;
    other.delete_queue(&q).await.unwrap();
    let lost = b.publish_raw(&q, b"x", "t").await;
    assert!(matches!(lost, Err(BrokerError::Unroutable { .. })), "{lost:?}");
    b.declare(&q).await.unwrap();
    b.publish_raw(&q, b"y", "t").await.unwrap();
    assert_eq!(b.queue_depth(&q).await.unwrap().0, 1);
    b.delete_queue(&q).await.unwrap();
    other.close().await;
    b.close().await;
}

async fn published_messages_are_consumed_and_acknowledged_once(t: QueueType) {
    let b = broker(t).await;
    let q = unique("ack");
    b.declare(&q).await.unwrap();
    b.declare(&q).await.unwrap(); // idempotent
    publish_n(&b, &q, 3).await;
    let mut inbox = b.consume(std::slice::from_ref(&q), 4, "t").await.unwrap();
    let mut seen = vec![];
    for _ in 0..3 {
        let d = next(&mut inbox).await;
        seen.push(d.data[0]);
        d.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
    assert_quiet(&mut inbox, "acknowledged messages must not come back").await;
    inbox.close().await;
    wait_depth(&b, &q, 0).await;
    b.delete_queue(&q).await.unwrap();
}

/// The promise the worker's "prefetch = free slots" rests on: with 3
/// slots, after taking slots for steps (and acknowledging their
/// deliveries), only the free slots' worth of messages is delivered; the
/// rest stays ready in the queue for other workers; each freed slot lets
/// exactly one more through.
async fn deliveries_plus_taken_slots_never_exceed_the_slots(t: QueueType) {
    let b = broker(t).await;
    let q = unique("slots");
    b.declare(&q).await.unwrap();
    publish_n(&b, &q, 8).await;
    let mut inbox = b.consume(std::slice::from_ref(&q), 3, "t").await.unwrap();
    let slots = inbox.slots();
    // Three deliveries, none settled: the slots are full.
    let d1 = next(&mut inbox).await;
    let d2 = next(&mut inbox).await;
    let d3 = next(&mut inbox).await;
    assert_quiet(&mut inbox, "3 unsettled deliveries fill 3 slots").await;
    // Two become running steps (slot taken, then acknowledged, as the worker
    // does); one is a duplicate, acknowledged without a slot.
    slots.take(&d1).await.unwrap();
    d1.ack().await.unwrap();
    slots.take(&d2).await.unwrap();
    d2.ack().await.unwrap();
    d3.ack().await.unwrap();
    // One slot left: exactly one more delivery.
    let d4 = next(&mut inbox).await;
    assert_quiet(&mut inbox, "2 running steps + 1 unsettled delivery fill 3 slots").await;
    slots.take(&d4).await.unwrap();
    d4.ack().await.unwrap();
    assert_eq!(slots.busy().await, 3);
    assert_quiet(&mut inbox, "3 running steps fill 3 slots").await;
    wait_depth(&b, &q, 4).await;
    // A step ends: one more.
    slots.free().await.unwrap();
    let d5 = next(&mut inbox).await;
    assert_quiet(&mut inbox, "2 running steps + 1 unsettled delivery fill 3 slots").await;
    // Requeued: it comes back, still within the slots.
    d5.requeue().await.unwrap();
    let d6 = next(&mut inbox).await;
    assert_quiet(&mut inbox, "after a requeue, still one free slot").await;
    d6.ack().await.unwrap();
    // Every step ends: three at once.
    for _ in 0..3 {
        slots.free().await.unwrap();
    }
    let mut rest = vec![];
    for _ in 0..3 {
        rest.push(next(&mut inbox).await);
    }
    assert_quiet(&mut inbox, "3 free slots, 3 deliveries").await;
    for d in &rest {
        d.ack().await.unwrap();
    }
    inbox.close().await;
    b.delete_queue(&q).await.unwrap();
}

/// Two queues, one slot: each queue gets its turn, never two deliveries.
async fn slots_are_shared_by_the_queues_of_one_worker(t: QueueType) {
    let b = broker(t).await;
    let (qa, qb) = (unique("qa"), unique("qb"));
    b.declare(&qa).await.unwrap();
    b.declare(&qb).await.unwrap();
    publish_n(&b, &qb, 2).await;
    let mut inbox = b.consume(&[qa.clone(), qb.clone()], 1, "t").await.unwrap();
    let slots = inbox.slots();
    // Only qb has work: it is reached even if qa's turn comes first.
    let d = next(&mut inbox).await;
    assert_quiet(&mut inbox, "one slot, one unsettled delivery").await;
    slots.take(&d).await.unwrap();
    d.ack().await.unwrap();
    publish_n(&b, &qa, 1).await;
    assert_quiet(&mut inbox, "the only slot runs a step").await;
    slots.free().await.unwrap();
    let d = next(&mut inbox).await;
    d.ack().await.unwrap();
    let d = next(&mut inbox).await;
    d.ack().await.unwrap();
    assert_quiet(&mut inbox, "both queues drained").await;
    inbox.close().await;
    b.delete_queue(&qa).await.unwrap();
    b.delete_queue(&qb).await.unwrap();
}

async fn a_dead_lettered_message_lands_in_the_dead_queue(t: QueueType) {
    let b = broker(t).await;
    let q = unique("dlq");
    b.declare(&q).await.unwrap();
    publish_n(&b, &q, 1).await;
    let mut inbox = b.consume(std::slice::from_ref(&q), 1, "t").await.unwrap();
    next(&mut inbox).await.dead_letter().await.unwrap();
    wait_depth(&b, &format!("{q}.dead"), 1).await;
    wait_depth(&b, &q, 0).await;
    inbox.close().await;
    b.delete_queue(&q).await.unwrap();
}

/// A worker killed before settling: its connection closes and RabbitMQ
/// hands the delivery to another consumer.
async fn a_consumer_that_dies_gives_its_deliveries_back(t: QueueType) {
    let b = broker(t).await;
    let q = unique("crash");
    b.declare(&q).await.unwrap();
    publish_n(&b, &q, 1).await;
    let doomed = broker(t).await;
    let mut inbox = doomed.consume(std::slice::from_ref(&q), 1, "doomed").await.unwrap();
    let d = next(&mut inbox).await;
    doomed.close().await;
    drop(d);
    let mut survivor = b.consume(std::slice::from_ref(&q), 1, "survivor").await.unwrap();
    let again = next(&mut survivor).await;
    assert_eq!(again.data, [0]);
    if t == QueueType::Quorum {
        assert_eq!(again.redeliveries(), 1, "quorum queues count the return");
    }
    again.ack().await.unwrap();
    survivor.close().await;
    b.delete_queue(&q).await.unwrap();
}

/// A message that every consumer returns (requeued, or left unsettled by a
/// consumer that crashed) is moved to `Q.dead` once returned more than the
/// delivery limit, instead of looping for ever.
#[tokio::test]
async fn quorum_a_poison_message_is_dead_lettered_after_the_delivery_limit() {
    let config = BrokerConfig {
        delivery_limit: 3,
        ..config(QueueType::Quorum)
    };
    let b = Broker::connect(&config, "broker-test").await.unwrap();
    let q = unique("poison");
    b.declare(&q).await.unwrap();
    b.publish_raw(&q, b"poison", "t").await.unwrap();
    // Returns 1 and 2: consumers that die holding it.
    for _ in 0..2 {
        let doomed = Broker::connect(&config, "doomed").await.unwrap();
        let mut inbox = doomed.consume(std::slice::from_ref(&q), 1, "doomed").await.unwrap();
        let _held = next(&mut inbox).await;
        doomed.close().await;
    }
    // Return 3: requeued. Then the delivery at the limit, requeued too.
    let mut inbox = b.consume(std::slice::from_ref(&q), 1, "t").await.unwrap();
    let d = next(&mut inbox).await;
    assert_eq!(d.redeliveries(), 2);
    d.requeue().await.unwrap();
    let d = next(&mut inbox).await;
    assert_eq!(d.redeliveries(), 3, "the last delivery before the dead queue");
    d.requeue().await.unwrap();
    assert_quiet(&mut inbox, "returned past the limit: dead-lettered, not delivered").await;
    wait_depth(&b, &format!("{q}.dead"), 1).await;
    wait_depth(&b, &q, 0).await;
    inbox.close().await;
    b.delete_queue(&q).await.unwrap();
}

/// A delivery put back unprocessed (its worker had no module slot in time)
/// is not a return: put back more times than the delivery limit, it is
/// still delivered, uncounted, one copy, with its body and type, and never
/// dead-lettered. A requeue of the same message is counted.
#[tokio::test]
async fn quorum_a_message_put_back_is_not_counted_toward_the_delivery_limit() {
    let config = BrokerConfig {
        delivery_limit: 2,
        ..config(QueueType::Quorum)
    };
    let b = Broker::connect(&config, "broker-test").await.unwrap();
    let q = unique("put-back");
    b.declare(&q).await.unwrap();
    b.publish_raw(&q, b"step", "exec_module").await.unwrap();
    let mut inbox = b.consume(std::slice::from_ref(&q), 1, "t").await.unwrap();
    for _ in 0..5 {
        let d = next(&mut inbox).await;
        assert_eq!(d.data, b"step");
        assert_eq!(d.redeliveries(), 0, "a put-back is not counted");
        d.put_back().await.unwrap();
    }
    let d = next(&mut inbox).await;
    assert_eq!((d.data.as_slice(), d.redeliveries()), (b"step".as_slice(), 0));
    d.requeue().await.unwrap();
    let d = next(&mut inbox).await;
    assert_eq!(d.redeliveries(), 1, "a requeue is counted");
    d.ack().await.unwrap();
    assert_quiet(&mut inbox, "one copy only").await;
    wait_depth(&b, &format!("{q}.dead"), 0).await;
    inbox.close().await;
    b.delete_queue(&q).await.unwrap();
}

/// A queue's type cannot change in place: declaring it with the other type
/// is a clear error naming the setting, and the connection stays usable.
#[tokio::test]
async fn declaring_an_existing_queue_with_the_other_type_says_what_to_do() {
    for (existing, wanted) in [
        (QueueType::Classic, QueueType::Quorum),
        (QueueType::Quorum, QueueType::Classic),
    ] {
        let q = unique("mismatch");
        broker(existing).await.declare(&q).await.unwrap();
        let b = broker(wanted).await;
        let err = b.declare(&q).await.unwrap_err();
        assert!(matches!(err, BrokerError::QueueType { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("--queue-type") && text.contains(&q) && text.contains("x-queue-type"),
            "{text}"
        );
        // The publishing channel survived the refused declare.
        b.publish_raw(&q, b"x", "t").await.unwrap();
        b.delete_queue(&q).await.unwrap();
    }
}

/// A negative confirm is published again after a pause, and reported only
/// when it lasts: a queue full with `x-overflow: reject-publish` refuses,
/// then takes the message once a consumer made room.
#[tokio::test]
async fn a_refused_publish_is_tried_again_and_reported_when_the_refusal_lasts() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let b = broker(QueueType::Classic).await;
    let q = unique("full");
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    b.publish_raw(&q, b"first", "t").await.unwrap();
    // Full, and nobody makes room: refused after the pauses.
    let started = Instant::now();
    match b.publish_raw(&q, b"refused", "t").await {
        Err(BrokerError::Nacked { .. }) => {}
        other => panic!("want Nacked, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    // Full, and a consumer takes the first message 50 ms later: stored.
    let taker = tokio::spawn({
        let ch = ch.clone();
        let q = q.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let got = ch
                .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .expect("the first message");
            got.delivery.data
        }
    });
    b.publish_raw(&q, b"second", "t").await.unwrap();
    assert_eq!(taker.await.unwrap(), b"first");
    let left = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the second message, stored on a later try");
    assert_eq!(left.delivery.data, b"second");
    b.delete_queue(&q).await.unwrap();
}
