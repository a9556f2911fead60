//! Consuming a worker's queues with "prefetch = free slots".
//!
//! A worker with `concurrency` slots acknowledges an `exec_module` delivery
//! as soon as the step is claimed in PostgreSQL (RabbitMQ closes channels
//! that hold a delivery past `consumer_timeout`, and modules run for hours).
//! An acknowledged delivery no longer counts against the prefetch, so on its
//! own RabbitMQ would keep sending messages to a worker whose slots are all
//! busy, hiding them from idle workers. The inbox closes that gap, for
//! classic and quorum queues alike, with per-consumer prefetch only (quorum
//! queues refuse a channel's global QoS, and RabbitMQ fixes a consumer's
//! prefetch when it is created):
//!
//! - a consumer is created with prefetch = the slots neither taken by a
//!   running step nor held by a delivery handed out and not yet settled
//!   (`budget`), and only once every earlier consumer has ended and handed
//!   out all it received, so every delivery RabbitMQ still counts as
//!   unacknowledged is counted here as held;
//! - [`SlotControl::take`] (called before the step's delivery is
//!   acknowledged) turns the held delivery into a taken slot and cancels the
//!   live consumers, waiting for RabbitMQ's cancel-ok. AMQP applies a
//!   channel's methods in order, so the acknowledgement that follows can no
//!   longer make room for a delivery to them; `next` consumes again with the
//!   smaller budget once the canceled consumers have handed out what they
//!   held;
//! - [`SlotControl::free`] cancels the live consumers the same way, so that
//!   the next one is created with the larger budget.
//!
//! Hence, at every moment: taken slots + deliveries unsettled (held, or on
//! their way) <= concurrency. A slot change costs one cancel, one QoS and
//! one consume per queue (measured on RabbitMQ 3.10 on loopback: 0.9 to
//! 2.4 ms with a classic queue, 6 to 11 ms with a quorum queue, whose
//! consumer registration goes through its Raft log; the README has the
//! figures). A step waits only for the cancel.
//!
//! A worker serving several queues (`--queue etl,heavy`) has one consumer
//! per queue and splits the budget between them (prefetch 0 would mean "no
//! limit", so a queue gets at least 1 or no consumer). With fewer free slots
//! than queues, only as many queues as free slots are consumed, and the
//! choice rotates at every slot change and after [`ROTATE_AFTER`] without a
//! delivery, so no queue waits behind an idle one for long.

use crate::transport::{Acker, Inbox, Incoming, SlotControl, Slots};
use crate::{Broker, Result};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Notify};

/// With fewer free slots than queues: how long the consumed queues may stay
/// silent before the others get their turn.
pub const ROTATE_AFTER: Duration = Duration::from_secs(1);

/// Settles one delivery; while unsettled and not taken for a step, it counts
/// against the inbox's budget (`Flow::held`).
struct RabbitAcker {
    acker: lapin::Acker,
    slots: Arc<RabbitSlots>,
    /// The channel epoch it was delivered on (a delivery of a closed channel
    /// is no longer unacknowledged on the broker: it was returned).
    epoch: u64,
    /// The consumers that delivered it (`Flow::generation`).
    generation: u64,
    /// Still counted in `held`.
    holding: AtomicBool,
    /// For a put-back, published again: the broker, the queue it came from
    /// (every message goes through the default exchange, routed by its
    /// queue's name) and its type.
    broker: Broker,
    queue: String,
    kind: String,
}

impl RabbitAcker {
    async fn settled(&self) {
        if self.holding.swap(false, Ordering::AcqRel) {
            self.slots.unhold(self.epoch, self.generation).await;
        }
    }
}

#[async_trait::async_trait]
impl Acker for RabbitAcker {
    async fn ack(&self) -> Result<()> {
        self.acker.ack(BasicAckOptions::default()).await?;
        self.settled().await;
        Ok(())
    }

    /// Rejects without requeue: the queue's dead-letter settings move it to
    /// `<queue>.dead`, where an operator can inspect it.
    async fn dead_letter(&self) -> Result<()> {
        self.acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: false,
            })
            .await?;
        self.settled().await;
        Ok(())
    }

    async fn requeue(&self) -> Result<()> {
        self.acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await?;
        self.settled().await;
        Ok(())
    }

    /// A copy published to the same queue (confirmed), then the delivery
    /// acknowledged: a quorum queue counts every requeue toward its
    /// delivery limit (`x-delivery-count`), and a message put back often
    /// enough would be dead-lettered without ever having been worked on.
    /// A crash between the two leaves both copies, and the claim's
    /// compare-and-set drops the second. If the copy cannot be published,
    /// a requeue (counted).
    async fn put_back(&self, data: &[u8]) -> Result<()> {
        match self.broker.publish_raw(&self.queue, data, &self.kind).await {
            Ok(()) => self.ack().await,
            Err(e) => {
                tracing::warn!(queue = %self.queue, error = %e, "could not publish a put-back message again; requeueing it (counted toward the delivery limit)");
                self.requeue().await
            }
        }
    }

    fn release_hold(&self) -> Option<u64> {
        self.holding.swap(false, Ordering::AcqRel).then_some(self.epoch)
    }
}

struct Flow {
    concurrency: u16,
    /// Slots taken by running steps.
    busy: u16,
    /// Deliveries handed out by `next` on the current channel, neither
    /// settled nor taken for a step.
    held: u16,
    /// Bumped when the channel is replaced: older deliveries are void.
    epoch: u64,
    /// The live consumers' tags (one per consumed queue); empty once we
    /// canceled them.
    consumer_tags: Vec<String>,
    /// Which consumers those are: a delivery of earlier ones is not in
    /// their prefetch, so settling it must replace them to give its room.
    generation: u64,
}

impl Flow {
    /// Slots a new consumer may be given.
    fn budget(&self) -> u16 {
        self.concurrency.saturating_sub(self.busy).saturating_sub(self.held)
    }
}

type Deliveries = futures_util::stream::SelectAll<
    futures_util::stream::BoxStream<'static, Option<std::result::Result<lapin::message::Delivery, lapin::Error>>>,
>;

/// The consumers of the inbox's queues, read as one stream; each ends with
/// a `None` marker, so the inbox knows when all of them have ended.
struct Consumers {
    deliveries: Deliveries,
    live: usize,
    /// Some queues got no consumer (fewer free slots than queues).
    partial: bool,
}

/// The consuming side of a worker's queues. `next` is called by one loop; slots are
/// taken and freed by the tasks running steps (through a clone of the
/// [`Slots`] handle).
pub struct RabbitInbox {
    broker: Broker,
    channel: Channel,
    queues: Vec<String>,
    tag_prefix: String,
    generation: u64,
    consumer: Option<Consumers>,
    slots: Arc<RabbitSlots>,
}

/// Taking and freeing slots from tasks; each change replaces the consumers.
pub struct RabbitSlots {
    channel: std::sync::RwLock<Channel>,
    flow: Mutex<Flow>,
    /// A slot freed or a held delivery settled: `next` may consume again.
    freed: Notify,
    /// The channel epoch, told to the runs holding their deliveries
    /// ([`SlotControl::replaced`]).
    replaced: tokio::sync::watch::Sender<u64>,
}

impl RabbitInbox {
    pub async fn open(broker: &Broker, queues: &[String], concurrency: u16, tag_prefix: &str) -> Result<RabbitInbox> {
        let channel = broker.create_channel().await?;
        let flow = Flow {
            concurrency: concurrency.max(1),
            busy: 0,
            held: 0,
            epoch: 0,
            consumer_tags: Vec::new(),
            generation: 0,
        };
        let slots = Arc::new(RabbitSlots {
            channel: std::sync::RwLock::new(channel.clone()),
            flow: Mutex::new(flow),
            freed: Notify::new(),
            replaced: tokio::sync::watch::Sender::new(0),
        });
        Ok(RabbitInbox {
            broker: broker.clone(),
            channel,
            queues: queues.to_vec(),
            tag_prefix: tag_prefix.to_string(),
            generation: 0,
            consumer: None,
            slots,
        })
    }
}

#[async_trait::async_trait]
impl Inbox for RabbitInbox {
    /// After the broker connection was replaced: a new channel, the same
    /// slots (running steps keep theirs), consuming again on the next `next`.
    /// Deliveries of the old channel went back to their queues.
    async fn reopen(&mut self) -> Result<()> {
        let channel = self.broker.create_channel().await?;
        let mut flow = self.slots.flow.lock().await;
        flow.consumer_tags.clear();
        flow.held = 0;
        flow.epoch += 1;
        *self.slots.channel.write().unwrap_or_else(|p| p.into_inner()) = channel.clone();
        // The runs holding deliveries of the old channel take slots now.
        self.slots.replaced.send_replace(flow.epoch);
        self.channel = channel;
        self.consumer = None;
        Ok(())
    }

    fn slots(&self) -> Slots {
        Slots::new(self.slots.clone())
    }

    /// The next message. Waits for a free slot when all are busy. `None`
    /// means the consumer was canceled by the broker (queue deleted) or the
    /// channel closed; `Err` is a broker failure.
    async fn next(&mut self) -> Result<Option<Incoming>> {
        loop {
            if self.consumer.is_none() {
                self.resume().await?;
            }
            let Some(consumers) = self.consumer.as_mut() else {
                continue;
            };
            let next = if consumers.partial {
                match tokio::time::timeout(ROTATE_AFTER, consumers.deliveries.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // The consumed queues are silent: give the others
                        // their turn (the canceled streams end, then resume).
                        self.slots.cancel_live(&mut *self.slots.flow.lock().await).await?;
                        continue;
                    }
                }
            } else {
                consumers.deliveries.next().await
            };
            match next {
                Some(Some(Ok(d))) => {
                    let (epoch, generation) = {
                        let mut flow = self.slots.flow.lock().await;
                        flow.held += 1;
                        (flow.epoch, flow.generation)
                    };
                    let redeliveries = delivery_count(&d);
                    if redeliveries > 0 {
                        self.warn_near_limit(&d, redeliveries);
                    }
                    let acker = RabbitAcker {
                        acker: d.acker,
                        slots: self.slots.clone(),
                        epoch,
                        generation,
                        holding: AtomicBool::new(true),
                        broker: self.broker.clone(),
                        queue: d.routing_key.to_string(),
                        kind: d.properties.kind().as_ref().map(|k| k.to_string()).unwrap_or_default(),
                    };
                    return Ok(Some(
                        Incoming::new(d.data, Box::new(acker)).with_redeliveries(redeliveries),
                    ));
                }
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) | None => {
                    // Canceled by us (a slot change): once every consumer
                    // has handed out what it received, resume with the new
                    // budget. Any other cancel (broker side: a queue
                    // deleted) ends the inbox.
                    if !self.slots.flow.lock().await.consumer_tags.is_empty() {
                        self.consumer = None;
                        return Ok(None);
                    }
                    consumers.live = consumers.live.saturating_sub(1);
                    if consumers.live == 0 {
                        self.consumer = None;
                    }
                }
            }
        }
    }

    /// Stops consuming (shutdown): no new deliveries after this returns.
    async fn stop(&mut self) -> Result<()> {
        let mut flow = self.slots.flow.lock().await;
        // Zero slots: neither `free` nor `resume` consumes again.
        flow.concurrency = 0;
        self.slots.cancel_live(&mut flow).await
    }

    async fn close(self: Box<Self>) {
        let _ = self.channel.close(200, "OK".into()).await;
    }
}

/// `x-delivery-count`: set by quorum queues on a message delivered before.
fn delivery_count(d: &lapin::message::Delivery) -> u32 {
    let count = d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => n,
        _ => 0,
    }
}

/// Prefetch per queue: the budget split as evenly as it goes, the remainder
/// (or, with fewer slots than queues, the slots themselves) to the queues
/// whose turn it is (`turn` rotates). 0: no consumer for that queue.
fn split(budget: u16, queues: usize, turn: u64) -> Vec<u16> {
    let n = queues.max(1);
    let each = budget as usize / n;
    let extra = budget as usize % n;
    let first = (turn % n as u64) as usize;
    (0..n)
        .map(|i| {
            let rank = (i + n - first) % n;
            (each + usize::from(rank < extra)) as u16
        })
        .collect()
}

impl RabbitInbox {
    /// A quorum queue dead-letters a message returned more than its delivery
    /// limit: say so on the last delivery it gets, so the operator who finds
    /// it in `Q.dead` can tell why from the log of the worker that had it.
    fn warn_near_limit(&self, d: &lapin::message::Delivery, redeliveries: u32) {
        let limit = self.broker.config().delivery_limit;
        if redeliveries >= limit {
            let queue = d.routing_key.as_str();
            tracing::warn!(
                queue,
                redeliveries,
                limit,
                "delivery limit reached: if this message is returned once more (requeued, or its worker \
                 dies before settling it), RabbitMQ dead-letters it to {queue}.dead"
            );
        }
    }

    /// (Re)starts consuming once the budget allows at least one delivery.
    async fn resume(&mut self) -> Result<()> {
        loop {
            let notified = self.slots.freed.notified();
            {
                let mut flow = self.slots.flow.lock().await;
                let budget = flow.budget();
                if budget > 0 {
                    self.generation += 1;
                    let shares = split(budget, self.queues.len(), self.generation);
                    let mut deliveries = Deliveries::new();
                    let mut tags = Vec::with_capacity(self.queues.len());
                    for (queue, &share) in self.queues.iter().zip(&shares) {
                        if share == 0 {
                            continue;
                        }
                        // Per consumer (`global: false`): applies to the
                        // consumers created after it, i.e. the next one.
                        self.channel.basic_qos(share, BasicQosOptions { global: false }).await?;
                        let tag = format!("{}-{}-{queue}", self.tag_prefix, self.generation);
                        let consumer: Consumer = self
                            .channel
                            .basic_consume(
                                queue.as_str().into(),
                                tag.as_str().into(),
                                BasicConsumeOptions::default(),
                                FieldTable::default(),
                            )
                            .await?;
                        deliveries.push(
                            consumer
                                .map(Some)
                                .chain(futures_util::stream::once(async { None }))
                                .boxed(),
                        );
                        tags.push(tag);
                    }
                    self.consumer = Some(Consumers {
                        live: tags.len(),
                        partial: tags.len() < self.queues.len(),
                        deliveries,
                    });
                    flow.consumer_tags = tags;
                    flow.generation = self.generation;
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}

impl RabbitSlots {
    fn channel(&self) -> Channel {
        self.channel.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Cancels the live consumers and waits for each cancel-ok: RabbitMQ
    /// sends them nothing after it, and what they received before it is in
    /// their streams, which then end.
    async fn cancel_live(&self, flow: &mut Flow) -> Result<()> {
        let channel = self.channel();
        for tag in std::mem::take(&mut flow.consumer_tags) {
            channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
        }
        Ok(())
    }

    /// A held delivery was settled: its room is free. The live consumers'
    /// prefetch counted it if they delivered it (the broker sees the room);
    /// if earlier consumers did, they are replaced, with the room.
    async fn unhold(&self, epoch: u64, generation: u64) {
        let mut flow = self.flow.lock().await;
        if flow.epoch == epoch {
            flow.held = flow.held.saturating_sub(1);
            if generation != flow.generation
                && !flow.consumer_tags.is_empty()
                && let Err(e) = self.cancel_live(&mut flow).await
            {
                tracing::warn!(error = %e, "could not replace the consumers after a delivery of earlier ones was settled");
            }
        }
        drop(flow);
        self.freed.notify_one();
    }
}

#[async_trait::async_trait]
impl SlotControl for RabbitSlots {
    /// Takes a slot for a step that will run; call before acknowledging its
    /// delivery. The delivery stops counting as held and the slot counts
    /// instead; the live consumers are canceled before this returns, so the
    /// acknowledgement cannot make room for one more delivery to them.
    async fn take(&self, held: Option<u64>) -> Result<()> {
        let mut flow = self.flow.lock().await;
        flow.busy += 1;
        if held.is_some_and(|epoch| epoch == flow.epoch) {
            flow.held = flow.held.saturating_sub(1);
        }
        self.cancel_live(&mut flow).await
    }

    /// Frees a slot when its step is done; the consumers are replaced by
    /// ones with the larger budget.
    async fn free(&self) -> Result<()> {
        let mut flow = self.flow.lock().await;
        flow.busy = flow.busy.saturating_sub(1);
        let canceled = self.cancel_live(&mut flow).await;
        drop(flow);
        self.freed.notify_one();
        canceled
    }

    async fn busy(&self) -> u16 {
        self.flow.lock().await.busy
    }

    /// Resolves when the channel is replaced: its deliveries went back to
    /// their queues, and no longer count against the slots.
    fn replaced(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.replaced.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn the_budget_is_split_evenly_and_never_exceeded() {
        assert_eq!(split(4, 1, 7), vec![4]);
        assert_eq!(split(5, 2, 0), vec![3, 2]);
        assert_eq!(split(5, 2, 1), vec![2, 3]);
        for budget in 0..10 {
            for queues in 1..5 {
                for turn in 0..5 {
                    let shares = split(budget, queues, turn);
                    assert_eq!(shares.iter().sum::<u16>(), budget);
                }
            }
        }
    }

    #[test]
    fn with_fewer_slots_than_queues_the_turn_rotates() {
        assert_eq!(split(1, 3, 0), vec![1, 0, 0]);
        assert_eq!(split(1, 3, 1), vec![0, 1, 0]);
        assert_eq!(split(1, 3, 2), vec![0, 0, 1]);
        assert_eq!(split(2, 3, 2), vec![1, 0, 1]);
    }
}
