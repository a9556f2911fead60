//! Consuming a queue with "prefetch = free slots".
//!
//! A worker with `concurrency` slots acknowledges an `exec_module` delivery
//! as soon as the step is claimed in PostgreSQL (RabbitMQ closes channels
//! that hold a delivery past `consumer_timeout`, and modules run for hours).
//! An acknowledged delivery no longer counts against the prefetch, so on its
//! own RabbitMQ would keep sending messages to a worker whose slots are all
//! busy, hiding them from idle workers. The inbox closes that gap: before the
//! caller acknowledges a claimed step it calls [`SlotControl::take`], which
//! lowers the channel prefetch to the remaining free slots, or cancels the
//! consumer when none remain; [`SlotControl::free`] raises it again. Because
//! AMQP applies a channel's methods in order, the lower limit is in force
//! before the acknowledgement that would otherwise make room for one more.
//!
//! A worker serving several queues (`--queue etl,heavy`) has one consumer
//! per queue on the same channel; the prefetch is the channel's (`global`),
//! so the free slots are shared by all of them.

use crate::transport::{Acker, Inbox, Incoming, SlotControl, Slots};
use crate::{Broker, Result};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::sync::Arc;
use tokio::sync::{Mutex, Notify};

struct RabbitAcker(lapin::Acker);

#[async_trait::async_trait]
impl Acker for RabbitAcker {
    async fn ack(&self) -> Result<()> {
        self.0.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Rejects without requeue: the queue's dead-letter settings move it to
    /// `<queue>.dead`, where an operator can inspect it.
    async fn dead_letter(&self) -> Result<()> {
        self.0
            .nack(BasicNackOptions {
                multiple: false,
                requeue: false,
            })
            .await?;
        Ok(())
    }

    async fn requeue(&self) -> Result<()> {
        self.0
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await?;
        Ok(())
    }
}

struct Flow {
    concurrency: u16,
    busy: u16,
    /// The live consumers' tags (one per queue); empty while canceled for
    /// lack of slots.
    consumer_tags: Vec<String>,
}

type Deliveries = futures_util::stream::SelectAll<
    futures_util::stream::BoxStream<'static, Option<std::result::Result<lapin::message::Delivery, lapin::Error>>>,
>;

/// The consumers of all the inbox's queues, read as one stream; each ends
/// with a `None` marker, so the inbox knows when one was canceled.
struct Consumers {
    deliveries: Deliveries,
    live: usize,
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

/// Taking and freeing slots from tasks: the prefetch follows the free ones.
pub struct RabbitSlots {
    channel: std::sync::RwLock<Channel>,
    flow: Mutex<Flow>,
    freed: Notify,
}

impl RabbitInbox {
    pub async fn open(broker: &Broker, queues: &[String], concurrency: u16, tag_prefix: &str) -> Result<RabbitInbox> {
        let channel = broker.create_channel().await?;
        let flow = Flow {
            concurrency: concurrency.max(1),
            busy: 0,
            consumer_tags: Vec::new(),
        };
        let slots = Arc::new(RabbitSlots {
            channel: std::sync::RwLock::new(channel.clone()),
            flow: Mutex::new(flow),
            freed: Notify::new(),
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
    async fn reopen(&mut self) -> Result<()> {
        let channel = self.broker.create_channel().await?;
        let mut flow = self.slots.flow.lock().await;
        flow.consumer_tags.clear();
        *self.slots.channel.write().unwrap_or_else(|p| p.into_inner()) = channel.clone();
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
            match consumers.deliveries.next().await {
                Some(Some(Ok(d))) => {
                    return Ok(Some(Incoming::new(d.data, Box::new(RabbitAcker(d.acker)))));
                }
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) | None => {
                    // Canceled by us for lack of slots: once every consumer
                    // has delivered what it holds, wait and resume. Any other
                    // cancel (broker side: a queue deleted) ends the inbox.
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
        for tag in std::mem::take(&mut flow.consumer_tags) {
            self.channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
        }
        // Keep the tags empty so a concurrent `SlotControl::free` does not resume.
        flow.concurrency = 0;
        Ok(())
    }

    async fn close(self: Box<Self>) {
        let _ = self.channel.close(200, "OK".into()).await;
    }
}

impl RabbitInbox {
    /// (Re)starts consuming once at least one slot is free.
    async fn resume(&mut self) -> Result<()> {
        loop {
            let notified = self.slots.freed.notified();
            {
                let mut flow = self.slots.flow.lock().await;
                if flow.busy < flow.concurrency {
                    let free = flow.concurrency - flow.busy;
                    self.channel.basic_qos(free, BasicQosOptions { global: true }).await?;
                    self.generation += 1;
                    let mut deliveries = Deliveries::new();
                    let mut tags = Vec::with_capacity(self.queues.len());
                    for queue in &self.queues {
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
                    flow.consumer_tags = tags;
                    self.consumer = Some(Consumers {
                        live: self.queues.len(),
                        deliveries,
                    });
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
}

#[async_trait::async_trait]
impl SlotControl for RabbitSlots {
    /// Takes a slot for a step that will run; call before acknowledging its
    /// delivery. Lowers the prefetch to the slots left, or cancels the
    /// consumer when none are left.
    async fn take(&self) -> Result<()> {
        let mut flow = self.flow.lock().await;
        flow.busy += 1;
        if flow.busy >= flow.concurrency {
            let channel = self.channel();
            for tag in std::mem::take(&mut flow.consumer_tags) {
                channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await?;
            }
        } else if !flow.consumer_tags.is_empty() {
            self.channel()
                .basic_qos(flow.concurrency - flow.busy, BasicQosOptions { global: true })
                .await?;
        }
        Ok(())
    }

    /// Frees a slot when its step is done.
    async fn free(&self) -> Result<()> {
        let mut flow = self.flow.lock().await;
        flow.busy = flow.busy.saturating_sub(1);
        if !flow.consumer_tags.is_empty() && flow.busy < flow.concurrency {
            self.channel()
                .basic_qos(flow.concurrency - flow.busy, BasicQosOptions { global: true })
                .await?;
        }
        drop(flow);
        self.freed.notify_one();
        Ok(())
    }

    async fn busy(&self) -> u16 {
        self.flow.lock().await.busy
    }
}
