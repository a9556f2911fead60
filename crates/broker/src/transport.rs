//! [`Transport`]: how messages travel, as the worker, the producer and the UI
//! see it. They hold an `Arc<dyn Transport>`; RabbitMQ ([`crate::Broker`]) is
//! one implementation, and a queue kept in the embedded store can be another.
//!
//! The contract every implementation keeps:
//! - [`Transport::publish`] returns only once the message is stored durably
//!   (RabbitMQ: a publisher confirm on a durable queue); an unknown queue is
//!   an error, never a silent drop;
//! - a delivery stays owned by its consumer until it is acknowledged,
//!   requeued or dead-lettered; a consumer that dies gives its unacknowledged
//!   deliveries back;
//! - an [`Inbox`] never hands out more deliveries than its free [`Slots`]:
//!   a slot taken for a step that runs after its delivery was acknowledged
//!   keeps counting, and unsettled deliveries plus taken slots never exceed
//!   the slots (RabbitMQ: each new consumer's prefetch is the free slots
//!   left, and the consumer is replaced when that changes).
//!
//! A trait object rather than generics, for the reason the store gives
//! (`scheduler_tracker::store`): non-generic callers, one boxed future per
//! call, nothing next to a network round trip.

use crate::Result;
use scheduler_core::Message;
use std::sync::Arc;

#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Makes sure `queue` (and where its rejected messages go) exists.
    async fn declare(&self, queue: &str) -> Result<()>;
    /// Stores `message` on `queue`; returns once it is durably stored.
    async fn publish(&self, queue: &str, message: &Message) -> Result<()>;
    /// Messages ready in `queue` and its consumer count.
    async fn queue_depth(&self, queue: &str) -> Result<(u32, u32)>;
    /// Starts consuming `queues` with `concurrency` slots shared by all of
    /// them; `name` identifies the consumer in the transport's own tools.
    async fn consume(&self, queues: &[String], concurrency: u16, name: &str) -> Result<Box<dyn Inbox>>;
    /// Replaces the connection (after a loss, or a stalled consumer); open
    /// inboxes fail and are reopened with [`Inbox::reopen`].
    async fn reconnect(&self) -> Result<()>;
    async fn close(&self);
    /// The transport itself, for a caller that does better with a given one
    /// (the embedded queue records a run and its start in one transaction).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The consuming side of a worker's queues, read by one loop.
#[async_trait::async_trait]
pub trait Inbox: Send {
    /// The next delivery; waits while every slot is busy. `None`: the
    /// consumer was canceled from the other side (queue deleted); `Err`: the
    /// connection failed. Either way, reconnect and [`Inbox::reopen`].
    async fn next(&mut self) -> Result<Option<Incoming>>;
    /// The handle the tasks running steps take and free slots with.
    fn slots(&self) -> Slots;
    /// After [`Transport::reconnect`]: consume again, with the same slots
    /// (running steps keep theirs).
    async fn reopen(&mut self) -> Result<()>;
    /// Stops consuming (shutdown): no delivery after this returns.
    async fn stop(&mut self) -> Result<()>;
    async fn close(self: Box<Self>);
}

/// Settles one delivery.
#[async_trait::async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<()>;
    /// Back to the queue, for any consumer.
    async fn requeue(&self) -> Result<()>;
    /// Back to the queue unprocessed: this consumer took it but had no
    /// room to run it after all. Not counted toward the queue's delivery
    /// limit, as a [`Acker::requeue`] is: the message was never worked on.
    /// `data` is the delivery's body (RabbitMQ publishes it again). By
    /// default, a requeue.
    async fn put_back(&self, data: &[u8]) -> Result<()> {
        let _ = data;
        self.requeue().await
    }
    /// Out of the queue for good, kept where an operator can inspect it.
    async fn dead_letter(&self) -> Result<()>;
    /// The delivery's step took a slot: from now on the slot counts, not
    /// the delivery. Returns the token [`SlotControl::take`] is given.
    fn release_hold(&self) -> Option<u64> {
        None
    }
}

/// One delivery. Dropping it unsettled leaves it with this consumer until
/// its connection closes (then it is delivered again).
pub struct Incoming {
    pub data: Vec<u8>,
    acker: Box<dyn Acker>,
    redeliveries: u32,
}

impl Incoming {
    pub fn new(data: Vec<u8>, acker: Box<dyn Acker>) -> Incoming {
        Incoming {
            data,
            acker,
            redeliveries: 0,
        }
    }
    pub async fn ack(&self) -> Result<()> {
        self.acker.ack().await
    }
    pub async fn requeue(&self) -> Result<()> {
        self.acker.requeue().await
    }
    /// Back to the queue unprocessed ([`Acker::put_back`]).
    pub async fn put_back(&self) -> Result<()> {
        self.acker.put_back(&self.data).await
    }
    pub async fn dead_letter(&self) -> Result<()> {
        self.acker.dead_letter().await
    }
    /// How many times the broker delivered this message before (RabbitMQ
    /// quorum queues' `x-delivery-count`; 0 where the transport does not
    /// count).
    pub fn redeliveries(&self) -> u32 {
        self.redeliveries
    }
    pub fn with_redeliveries(mut self, redeliveries: u32) -> Incoming {
        self.redeliveries = redeliveries;
        self
    }
}

/// A consumer's capacity, shared by the tasks running its steps.
#[async_trait::async_trait]
pub trait SlotControl: Send + Sync {
    /// Takes a slot for a step that will run; call before acknowledging its
    /// delivery. `held`: what the delivery's [`Acker::release_hold`] gave.
    async fn take(&self, held: Option<u64>) -> Result<()>;
    /// Frees a slot when its step is done.
    async fn free(&self) -> Result<()>;
    async fn busy(&self) -> u16;
    /// Changes when the deliveries handed out so far stop counting against
    /// the slots (RabbitMQ: the channel was replaced, and they went back to
    /// their queues): a run still holding one takes a slot then. `None`
    /// where that never happens.
    fn replaced(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Handle on an inbox's slots; cheap to clone.
#[derive(Clone)]
pub struct Slots(Arc<dyn SlotControl>);

impl Slots {
    pub fn new(control: Arc<dyn SlotControl>) -> Slots {
        Slots(control)
    }
    /// Takes a slot for the step of `delivery`; call before acknowledging it.
    pub async fn take(&self, delivery: &Incoming) -> Result<()> {
        self.0.take(delivery.acker.release_hold()).await
    }
    /// Takes a slot for no delivery: narrows the consumer's budget until
    /// [`Slots::free`] gives it back.
    pub async fn reserve(&self) -> Result<()> {
        self.0.take(None).await
    }
    pub async fn free(&self) -> Result<()> {
        self.0.free().await
    }
    pub async fn busy(&self) -> u16 {
        self.0.busy().await
    }
    /// Resolves once the deliveries handed out before this call stop
    /// counting against the slots ([`SlotControl::replaced`]); never where
    /// they cannot. Watches from the call on, not from the first poll.
    pub fn replaced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let watch = self.0.replaced();
        async move {
            let told = match watch {
                Some(mut epoch) => epoch.changed().await.is_ok(),
                None => false,
            };
            if !told {
                std::future::pending::<()>().await;
            }
        }
    }
}
