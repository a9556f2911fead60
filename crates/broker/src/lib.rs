//! The broker: all AMQP (RabbitMQ) of the scheduler. Declaring the queues,
//! publishing messages durably with publisher confirms, and an [`Inbox`] that
//! consumes a queue with flow control matched to a worker's free slots.
//!
//! # Layout
//! - [`transport`]: the [`Transport`] and [`Inbox`] traits every caller
//!   uses, implemented here for RabbitMQ.
//! - [`connection`]: [`Broker`]: connecting, the queue topology, publishing.
//! - [`inbox`]: [`RabbitInbox`]: consuming with "prefetch = free slots".
//!
//! Architecture invariants: RabbitMQ is only the transport; nothing here
//! decides anything about runs. A publish returns only once the broker has
//! confirmed it (the message is on a durable queue). A delivery is never
//! held while a module runs: the worker acknowledges once the step is claimed
//! in PostgreSQL, and the [`Inbox`] lowers the prefetch so that acknowledged
//! but still running steps keep counting against the worker's capacity.

pub mod connection;
pub mod inbox;
pub mod transport;

pub use connection::{Broker, BrokerConfig, DEFAULT_DELIVERY_LIMIT, QueueType};
pub use inbox::RabbitInbox;
pub use transport::{Acker, Inbox, Incoming, SlotControl, Slots, Transport};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot connect to RabbitMQ at {url}: {source}. Start RabbitMQ, or point AMQP_URL \
         (or --amqp-url) at a running broker"
    )]
    Connect { url: String, source: lapin::Error },
    #[error("RabbitMQ refused the message for queue {queue:?} (negative publisher confirm); it was not stored")]
    Nacked { queue: String },
    #[error(
        "queue {queue:?} does not exist on the broker, so the message could not be routed; start a worker for it, or declare it"
    )]
    Unroutable { queue: String },
    #[error(
        "queue {queue:?} exists on RabbitMQ with other settings than a {wanted} queue \
         ({detail}). A queue's type cannot change in place: run every command with the \
         queue's current type (--queue-type / SCHEDULER_QUEUE_TYPE), or move the queue \
         (README: \"Moving a classic queue to quorum\")"
    )]
    QueueType {
        queue: String,
        wanted: connection::QueueType,
        detail: String,
    },
    #[error("RabbitMQ error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the embedded queue (in the SQLite store) failed: {0}")]
    Store(String),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
