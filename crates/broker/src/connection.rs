//! Connecting to RabbitMQ, declaring a queue and its dead-letter queue, and
//! publishing with confirms.
//!
//! Topology, per queue name `Q` (default `etl`): a durable classic queue `Q`
//! whose rejected messages go (through the default exchange) to the durable
//! queue `Q.dead`. Messages are published to the default exchange with
//! routing key `Q`, persistent, `mandatory` (an unroutable message is an
//! error, not a silent drop).

use crate::{BrokerError, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use scheduler_core::Message;
use scheduler_core::redact_url;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub url: String,
    /// `x-expires` for declared queues (tests: leftovers vanish). `None` in
    /// production: a queue outlives its workers.
    pub queue_expires_ms: Option<u32>,
}

impl BrokerConfig {
    pub fn new(url: impl Into<String>) -> Self {
        BrokerConfig {
            url: url.into(),
            queue_expires_ms: None,
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
        })
    }
}

impl Broker {
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

    /// Declares `queue` and `queue.dead` (idempotent).
    pub async fn declare(&self, queue: &str) -> Result<()> {
        let inner = self.inner();
        let ch = &inner.publisher;
        let dead = format!("{queue}.dead");
        ch.queue_declare(dead.as_str().into(), QueueDeclareOptions::durable(), self.expiry())
            .await?;
        let mut args = self.expiry();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead.as_str().into()),
        );
        ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
            .await?;
        Ok(())
    }

    fn expiry(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(ms) = self.inner().config.queue_expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        args
    }

    /// Publishes `message` to `queue` and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, message: &Message) -> Result<()> {
        self.publish_raw(queue, &message.encode(), message.kind()).await
    }

    /// Publishes arbitrary bytes (tests use it to inject malformed input).
    pub async fn publish_raw(&self, queue: &str, payload: &[u8], kind: &str) -> Result<()> {
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
            lapin::Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable { queue: queue.into() }),
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
}
