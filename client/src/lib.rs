//! Async client for the ringmq broker.
//!
//! - [`Client`]: a connection for administration (topics, stats).
//! - [`Producer`]: batches records per partition (linger time and batch size), picks partitions
//!   (key hash, else round robin), retries on connection loss, and gives a [`Delivery`] future per
//!   record that resolves to its offset.
//! - [`Consumer`]: reads one partition from the earliest, latest or a given offset, long-polling
//!   for new records.
//!
//! Every call has a timeout. Errors are [`ClientError`].
//!
//! ```no_run
//! use ringmq_client::{Client, ProducerRecord, StartOffset, TopicConfig};
//!
//! # async fn example() -> Result<(), ringmq_client::ClientError> {
//! let mut client = Client::connect("127.0.0.1:7878").await?;
//! client.create_topic("orders", TopicConfig::default().partitions(3)).await?;
//!
//! let producer = client.producer().build().await?;
//! let delivery = producer.send(ProducerRecord::new("orders", b"hello").key(b"customer-7")).await?;
//! let offset = delivery.await?;
//! println!("written at offset {offset:?}");
//!
//! let mut consumer = client.consumer("orders", 0).start(StartOffset::Earliest).build().await?;
//! let record = consumer.next().await?;
//! println!("{:?}: {:?}", record.offset, record.value);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod connection;
mod consumer;
mod error;
mod producer;

use std::time::Duration;

use ringmq_protocol::message::{BrokerStats, CreateTopic, TopicDescription, TopicList, TopicName};
use ringmq_protocol::Request;

pub use consumer::{Consumer, ConsumerBuilder, ConsumerRecord, StartOffset};
pub use error::ClientError;
pub use producer::{Delivery, Producer, ProducerBuilder, ProducerRecord};
pub use ringmq_protocol::{Acks, ErrorCode, Header};

use connection::Connection;

/// Default timeout of a call (connect, request, acknowledgement).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a new topic; unset fields take the broker's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicConfig {
    /// Number of partitions.
    pub partitions: Option<u32>,
    /// Ring capacity per partition, bytes: how much each partition retains.
    pub capacity: Option<u64>,
    /// Chunk size, bytes (the unit in which old data is reclaimed).
    pub chunk_size: Option<u32>,
}

impl TopicConfig {
    /// Sets the partition count.
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Sets the capacity per partition.
    #[must_use]
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self
    }
}

/// A topic as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    /// The name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
}

/// A topic's settings and each partition's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The name.
    pub name: String,
    /// Ring capacity per partition, bytes.
    pub capacity: u64,
    /// Chunk size, bytes.
    pub chunk_size: u32,
    /// Largest batch a partition accepts, bytes.
    pub batch_size_max: u32,
    /// Each partition's offsets.
    pub partitions: Vec<PartitionInfo>,
}

/// One partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition index.
    pub partition: u32,
    /// Earliest offset held.
    pub earliest_offset: u64,
    /// Offset the next record will get.
    pub next_offset: u64,
}

/// A connection to a broker for administration; also the factory of producers and consumers.
#[derive(Debug)]
pub struct Client {
    connection: Connection,
    address: String,
}

impl Client {
    /// Connects to the broker at `address` (`host:port`) and performs the handshake.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] or [`ClientError::Timeout`] if the broker cannot be reached.
    pub async fn connect(address: &str) -> Result<Self, ClientError> {
        Self::connect_with_timeout(address, DEFAULT_TIMEOUT).await
    }

    /// As [`Client::connect`], with a timeout for this and every later call.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn connect_with_timeout(
        address: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connection = Connection::open(address, timeout, "ringmq-client admin").await?;
        Ok(Self { connection, address: address.to_owned() })
    }

    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Largest record batch the broker accepts.
    pub fn batch_size_max(&self) -> u32 {
        self.connection.broker.batch_size_max
    }

    async fn call(&mut self, request: &Request<'_>) -> Result<bytes::Bytes, ClientError> {
        let timeout = self.connection.timeout;
        Ok(self.connection.call(request, timeout).await?.1)
    }

    /// As `call`, for reads, which are retried once on a connection found dead.
    async fn read(&mut self, request: &Request<'_>) -> Result<bytes::Bytes, ClientError> {
        let timeout = self.connection.timeout;
        Ok(self.connection.call_idempotent(request, timeout).await?.1)
    }

    /// Checks the broker answers.
    ///
    /// # Errors
    ///
    /// A connection error or timeout.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.read(&Request::Ping).await.map(drop)
    }

    /// Creates a topic. The broker allocates every partition's ring before answering, so this can
    /// take a while for large capacities.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `TopicExists`, `InvalidTopicName` or `InvalidRequest`.
    pub async fn create_topic(
        &mut self,
        name: &str,
        config: TopicConfig,
    ) -> Result<(), ClientError> {
        let request = Request::CreateTopic(CreateTopic {
            name,
            partition_count: config.partitions.unwrap_or(0),
            capacity: config.capacity.unwrap_or(0),
            chunk_size: config.chunk_size.unwrap_or(0),
        });
        self.call(&request).await.map(drop)
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `UnknownTopic`.
    pub async fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        self.call(&Request::DeleteTopic(TopicName { name })).await.map(drop)
    }

    /// Every topic, sorted by name.
    ///
    /// # Errors
    ///
    /// A connection error or timeout.
    pub async fn list_topics(&mut self) -> Result<Vec<TopicSummary>, ClientError> {
        let body = self.read(&Request::ListTopics).await?;
        let list = TopicList::decode(&body)?;
        Ok(list
            .iter()
            .map(|(name, partitions)| TopicSummary { name: name.to_owned(), partitions })
            .collect())
    }

    /// A topic's settings and its partitions' offsets.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `UnknownTopic`.
    pub async fn describe_topic(&mut self, name: &str) -> Result<TopicInfo, ClientError> {
        describe(&mut self.connection, name).await
    }

    /// The broker's counters.
    ///
    /// # Errors
    ///
    /// A connection error or timeout.
    pub async fn stats(&mut self) -> Result<BrokerStats, ClientError> {
        let body = self.read(&Request::Stats).await?;
        Ok(BrokerStats::decode(&body)?)
    }

    /// A producer builder for this broker (the producer opens its own connection).
    pub fn producer(&self) -> ProducerBuilder {
        ProducerBuilder::new(&self.address)
    }

    /// A consumer builder for one partition of `topic` (the consumer opens its own connection).
    pub fn consumer(&self, topic: &str, partition: u32) -> ConsumerBuilder {
        ConsumerBuilder::new(&self.address, topic, partition)
    }
}

pub(crate) async fn describe(
    connection: &mut Connection,
    name: &str,
) -> Result<TopicInfo, ClientError> {
    let timeout = connection.timeout;
    let (_, body) =
        connection.call_idempotent(&Request::DescribeTopic(TopicName { name }), timeout).await?;
    let description = TopicDescription::decode(&body)?;
    Ok(TopicInfo {
        name: description.name.to_owned(),
        capacity: description.capacity,
        chunk_size: description.chunk_size,
        batch_size_max: description.batch_size_max,
        partitions: description
            .partitions()
            .map(|state| PartitionInfo {
                partition: state.partition,
                earliest_offset: state.earliest_offset,
                next_offset: state.next_offset,
            })
            .collect(),
    })
}
