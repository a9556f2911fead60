//! Connecting to RabbitMQ, declaring a queue and its dead-letter queue, and
//! publishing with confirms.
//!
//! Topology, per queue name `Q` (default `etl`): a durable queue `Q` of the
//! configured [`QueueType`] whose rejected messages go (through the default
//! exchange) to the durable queue `Q.dead`, of the same type. A quorum `Q`
//! also dead-letters a message returned more than `delivery_limit` times
//! (requeued, or left unacknowledged by a consumer that died): a poison
//! message that kills every worker ends in `Q.dead` instead of looping.
//! Messages are published to the default exchange with routing key `Q`,
//! persistent, `mandatory` (an unroutable message is an error, not a silent
//! drop).

use crate::{BrokerError, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use scheduler_core::Message;
use scheduler_core::redact_url;
use std::sync::{Arc, RwLock};

/// The pauses before publishing again a message RabbitMQ refused.
pub const NACK_PAUSES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(20),
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(500),
];

/// The kind of RabbitMQ queue declared for `Q` and `Q.dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// Replicated with Raft: the queue survives the loss of a minority of a
    /// cluster's nodes, and a delivery limit dead-letters poison messages.
    /// RabbitMQ's recommendation for durable queues.
    #[default]
    Quorum,
    /// A queue on one node: unavailable while that node is down.
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "quorum" => Ok(QueueType::Quorum),
            "classic" => Ok(QueueType::Classic),
            other => Err(format!("unknown queue type {other:?}: expected quorum or classic")),
        }
    }
}

/// Returns of one message (requeues, and deliveries left unacknowledged by
/// a consumer that died) after which a quorum queue dead-letters it. A
/// claimed step's delivery is acknowledged before its module runs, so a
/// worker killed mid-module does not count; what counts is a crash between
/// delivery and claim, and a handler requeueing while PostgreSQL is away
/// (`requeue_later` waits longer after each return, so 20 returns span
/// minutes of outage, not seconds).
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub url: String,
    /// `x-expires` for declared queues (tests: leftovers vanish). `None` in
    /// production: a queue outlives its workers.
    pub queue_expires_ms: Option<u32>,
    /// The type of every queue this process declares; a queue that exists
    /// with the other type is refused by RabbitMQ ([`BrokerError::QueueType`]).
    pub queue_type: QueueType,
    /// Quorum queues only: `x-delivery-limit`.
    pub delivery_limit: u32,
}

impl BrokerConfig {
    pub fn new(url: impl Into<String>) -> Self {
        BrokerConfig {
            url: url.into(),
            queue_expires_ms: None,
            queue_type: QueueType::default(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }
}

/// A connection and a publishing channel in confirm mode; cheap to clone.
/// [`Broker::reconnect`] replaces the connection for every clone.
#[derive(Clone)]
pub struct Broker {
    current: Arc<RwLock<Arc<Inner>>>,
    name: Arc<str>,
}

struct Inner {
    connection: Connection,
    publisher: Channel,
    config: BrokerConfig,
    /// Queues this connection declared: declared again only after a
    /// reconnect (a new `Inner`). A queue deleted or expired since is
    /// declared again by the publish that finds it gone (`Unroutable`).
    declared: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Inner {
    async fn open(config: &BrokerConfig, name: &str) -> Result<Inner> {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let connection = Connection::connect(&config.url, props)
            .await
            .map_err(|source| BrokerError::Connect {
                url: redact_url(&config.url),
                source,
            })?;
        let publisher = connection.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Inner {
            connection,
            publisher,
            config: config.clone(),
            declared: Default::default(),
        })
    }
}

impl Inner {
    fn is_declared(&self, queue: &str) -> bool {
        self.declared.lock().unwrap_or_else(|p| p.into_inner()).contains(queue)
    }

    fn forget(&self, queue: &str) {
        self.declared.lock().unwrap_or_else(|p| p.into_inner()).remove(queue);
    }
}

/// One durable queue; RabbitMQ's refusal of an existing queue of the other
/// type (or other arguments) becomes [`BrokerError::QueueType`].
async fn declare_one(ch: &Channel, queue: &str, config: &BrokerConfig, args: FieldTable) -> Result<()> {
    match ch
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_precondition_failed(&e) => Err(BrokerError::QueueType {
            queue: queue.into(),
            wanted: config.queue_type,
            detail: e.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(amqp) if amqp.kind() == &lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::PRECONDITIONFAILED)
    )
}

impl Broker {
    /// The settings this broker declares queues with.
    pub fn config(&self) -> BrokerConfig {
        self.inner().config.clone()
    }

    /// Connects; `name` shows in the RabbitMQ connection list.
    pub async fn connect(config: &BrokerConfig, name: &str) -> Result<Broker> {
        let inner = Inner::open(config, name).await?;
        Ok(Broker {
            current: Arc::new(RwLock::new(Arc::new(inner))),
            name: name.into(),
        })
    }

    /// Opens a new connection (after the broker went away) and makes every
    /// clone of this handle use it.
    pub async fn reconnect(&self) -> Result<()> {
        let config = self.inner().config.clone();
        let inner = Inner::open(&config, &self.name).await?;
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(inner),
        );
        let _ = old.connection.close(200, "reconnected".into()).await;
        Ok(())
    }

    fn inner(&self) -> Arc<Inner> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Declares `queue` and `queue.dead` (idempotent), on a channel of their
    /// own: RabbitMQ closes the channel of a refused declare, and the
    /// publishing channel must outlive it. Once per queue and connection:
    /// four round trips (open, two declares, close) saved on every start.
    pub async fn declare(&self, queue: &str) -> Result<()> {
        let inner = self.inner();
        if inner.is_declared(queue) {
            return Ok(());
        }
        let declared = self.declare_now(&inner, queue).await;
        if declared.is_ok() {
            inner
                .declared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(queue.to_string());
        }
        declared
    }

    async fn declare_now(&self, inner: &Inner, queue: &str) -> Result<()> {
        let config = &inner.config;
        let ch = inner.connection.create_channel().await?;
        let dead = format!("{queue}.dead");
        let declared = async {
            declare_one(&ch, &dead, config, self.base_args(config)).await?;
            let mut args = self.base_args(config);
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(dead.as_str().into()),
            );
            if config.queue_type == QueueType::Quorum {
                args.insert("x-delivery-limit".into(), AMQPValue::LongUInt(config.delivery_limit));
            }
            declare_one(&ch, queue, config, args).await
        }
        .await;
        let _ = ch.close(200, "OK".into()).await;
        declared
    }

    /// `x-queue-type` and `x-expires`, for `Q` and `Q.dead` alike.
    fn base_args(&self, config: &BrokerConfig) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(config.queue_type.as_str().into()),
        );
        if let Some(ms) = config.queue_expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        args
    }

    /// Publishes `message` to `queue` and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, message: &Message) -> Result<()> {
        self.publish_raw(queue, &message.encode(), message.kind()).await
    }

    /// Publishes arbitrary bytes (tests use it to inject malformed input).
    ///
    /// A negative confirm means the message was not stored, and can be
    /// passing: a quorum queue declared a moment ago may refuse a publish
    /// before its leader is elected (seen under load). It is published
    /// again after [`NACK_PAUSES`]; then the refusal is the error.
    pub async fn publish_raw(&self, queue: &str, payload: &[u8], kind: &str) -> Result<()> {
        let mut pauses = NACK_PAUSES.iter();
        loop {
            match self.publish_once(queue, payload, kind).await {
                Err(BrokerError::Nacked { .. }) if let Some(pause) = pauses.next() => {
                    tracing::warn!(
                        queue,
                        ?pause,
                        "RabbitMQ refused the message (negative confirm); publishing it again"
                    );
                    tokio::time::sleep(*pause).await;
                }
                other => return other,
            }
        }
    }

    async fn publish_once(&self, queue: &str, payload: &[u8], kind: &str) -> Result<()> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(kind.into());
        let confirm = self
            .inner()
            .publisher
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                payload,
                props,
            )
            .await?
            .await?;
        match confirm {
            lapin::Confirmation::Ack(None) => Ok(()),
            lapin::Confirmation::Ack(Some(_)) => {
                // Gone (deleted, expired): the next declare declares it again.
                self.inner().forget(queue);
                Err(BrokerError::Unroutable { queue: queue.into() })
            }
            _ => Err(BrokerError::Nacked { queue: queue.into() }),
        }
    }

    pub(crate) async fn create_channel(&self) -> Result<Channel> {
        Ok(self.inner().connection.create_channel().await?)
    }

    /// Number of messages ready in `queue` and its consumer count (passive
    /// declare: fails if the queue does not exist).
    pub async fn queue_depth(&self, queue: &str) -> Result<(u32, u32)> {
        let ch = self.create_channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = ch.close(200, "OK".into()).await;
        Ok((q.message_count(), q.consumer_count()))
    }

    /// Deletes a queue and its dead-letter queue (tests).
    pub async fn delete_queue(&self, queue: &str) -> Result<()> {
        let inner = self.inner();
        inner.forget(queue);
        let ch = &inner.publisher;
        for q in [queue.to_string(), format!("{queue}.dead")] {
            ch.queue_delete(q.as_str().into(), Default::default()).await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        let _ = self.inner().connection.close(200, "OK".into()).await;
    }
}

#[async_trait::async_trait]
impl crate::Transport for Broker {
    async fn declare(&self, queue: &str) -> Result<()> {
        Broker::declare(self, queue).await
    }
    async fn publish(&self, queue: &str, message: &Message) -> Result<()> {
        Broker::publish(self, queue, message).await
    }
    async fn queue_depth(&self, queue: &str) -> Result<(u32, u32)> {
        Broker::queue_depth(self, queue).await
    }
    async fn consume(&self, queues: &[String], concurrency: u16, name: &str) -> Result<Box<dyn crate::Inbox>> {
        Ok(Box::new(
            crate::RabbitInbox::open(self, queues, concurrency, name).await?,
        ))
    }
    async fn reconnect(&self) -> Result<()> {
        Broker::reconnect(self).await
    }
    async fn close(&self) {
        Broker::close(self).await
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
