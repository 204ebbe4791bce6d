//! Async client for the ringmq broker.
//!
//! - [`Client`]: a connection for administration (topics, stats).
//! - [`Producer`]: batches records per partition (linger time and batch size), picks partitions
//!   (key hash, else round robin), retries on connection loss, and gives a [`Delivery`] future per
//!   record that resolves to its offset; [`Producer::send_batch`] queues many records and gives
//!   one [`Deliveries`] handle for all of them (each record's result kept), and
//!   [`Producer::send_now`] sends what is queued without waiting for the linger or for any
//!   acknowledgement ([`Producer::flush`] waits for everything).
//! - [`Consumer`]: reads one partition from the earliest, latest or a given offset, long-polling
//!   for new records; [`Consumer::poll_max`] and [`Consumer::next_timeout`] bound how many
//!   records a call returns and how long it waits.
//! - [`GroupConsumer`]: a member of a consumer group: reads the partitions the broker assigns it
//!   and commits its progress (at-least-once).
//!
//! Producers and consumers come from a [`Client`] (sharing its address and options) or straight
//! from an address with [`Producer::builder`], [`Consumer::builder`] and
//! [`GroupConsumer::builder`], which open only their own connection.
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

// Unsafe code lives only in `local::map` (the read-only views of the broker's mapped ring).
#![deny(unsafe_code)]

pub mod access;
pub mod compression;
mod connection;
mod consumer;
mod error;
mod group;
mod local;
mod login;
mod producer;
mod tls;

use std::time::Duration;

use ringmq_protocol::group::{
    CommitOffsets, CommittedOffsets, Entries, GroupDescription, GroupList, GroupName, GroupTopic,
    PartitionOffset,
};
use ringmq_protocol::message::{BrokerStats, CreateTopic, TopicDescription, TopicList, TopicName};
use ringmq_protocol::Request;

pub use access::Rule;
pub use consumer::{Consumer, ConsumerBuilder, ConsumerRecord, StartOffset};
pub use error::ClientError;
pub use group::{GroupConsumer, GroupConsumerBuilder};
pub use local::{LocalBatch, LocalConsumer, LocalConsumerBuilder, LocalRecord};
pub use login::{Credentials, Scram, ScramLogin};
pub use producer::{Acknowledged, Deliveries, Delivery, Producer, ProducerBuilder, ProducerRecord};
pub use ringmq_protocol::{Acks, Compression, ErrorCode, Header};
pub use tls::Tls;

use connection::{Connection, Endpoint};

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

/// How to connect: the timeout of each call, TLS, a login, and busy-polling.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    timeout: Duration,
    tls: Option<Tls>,
    credentials: Option<Credentials>,
    busy_poll: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, tls: None, credentials: None, busy_poll: Duration::ZERO }
    }
}

impl ConnectOptions {
    /// Where and how a producer or consumer built without a [`Client`] connects.
    pub(crate) fn endpoint(&self, address: &str) -> Endpoint {
        Endpoint {
            address: address.to_owned(),
            tls: self.tls.clone(),
            credentials: self.credentials.clone(),
            busy_poll: self.busy_poll,
            local: None,
        }
    }

    /// The timeout of each call.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.timeout
    }

    /// The timeout of each call ([`DEFAULT_TIMEOUT`] unless set).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connect with TLS.
    #[must_use]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Log in with these credentials after the handshake (for a broker with `--auth required`).
    #[must_use]
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Busy-poll for up to `spin` before sleeping, each time a connection waits for the broker
    /// (an acknowledgement, a fetch's answer) [default: 0, off].
    ///
    /// While it waits, the connection's task checks its socket, yields to the runtime's other
    /// tasks and checks again, instead of parking the thread until the kernel wakes it. An
    /// answer that arrives within `spin` is picked up without a wake-up of a sleeping thread;
    /// the price is a thread kept busy (one CPU) for up to `spin` after every exchange. Worth
    /// it only with a core to spare for each busy-polling runtime thread: the README's
    /// *Latency* section measures it. The broker has the same option (`busy_poll_us`).
    /// `Duration::MAX` busy-polls for the whole of every wait.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use ringmq_client::{ConnectOptions, Consumer, StartOffset};
    ///
    /// # async fn example() -> Result<(), ringmq_client::ClientError> {
    /// let options = ConnectOptions::default().busy_poll(Duration::from_micros(50));
    /// let mut consumer = Consumer::builder("127.0.0.1:7878", options, "events", 0)
    ///     .start(StartOffset::Latest)
    ///     .build()
    ///     .await?;
    /// let record = consumer.next().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn busy_poll(mut self, spin: Duration) -> Self {
        self.busy_poll = spin;
        self
    }
}

/// A connection to a broker for administration; also the factory of producers and consumers.
#[derive(Debug)]
pub struct Client {
    connection: Connection,
    endpoint: Endpoint,
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
        Self::connect_with(address, ConnectOptions::default().timeout(timeout)).await
    }

    /// As [`Client::connect`], over TLS. The producers and consumers this client builds connect
    /// the same way.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`]; a failed TLS handshake (a certificate the CAs do not vouch for, or
    /// one that does not name the address's host) is [`ClientError::Connect`].
    pub async fn connect_tls(address: &str, tls: Tls) -> Result<Self, ClientError> {
        Self::connect_with(address, ConnectOptions::default().tls(tls)).await
    }

    /// Connects as `options` say (timeout, TLS, login). The producers and consumers this client
    /// builds connect the same way, and start from the same timeout (their builders can change
    /// it).
    ///
    /// ```no_run
    /// use ringmq_client::{Client, ConnectOptions, Credentials, Tls};
    ///
    /// # async fn example() -> Result<(), ringmq_client::ClientError> {
    /// let options = ConnectOptions::default()
    ///     .tls(Tls::with_ca_file("ca.pem".as_ref())?)
    ///     .credentials(Credentials::new("alice", "correct horse"));
    /// let mut client = Client::connect_with("broker.example:7878", options).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::connect_tls`]; a refused login is [`ClientError::Broker`] with
    /// `Unauthenticated` ("wrong user name or password").
    pub async fn connect_with(address: &str, options: ConnectOptions) -> Result<Self, ClientError> {
        let ConnectOptions { timeout, tls, credentials, busy_poll } = options;
        let endpoint =
            Endpoint { address: address.to_owned(), tls, credentials, busy_poll, local: None };
        let connection = Connection::open(&endpoint, timeout, "ringmq-client admin").await?;
        Ok(Self { connection, endpoint })
    }

    /// Connects to the broker's local listener, the Unix domain socket at `path`
    /// (`--local-listen`), for a client on the broker's own host. Every request works there as
    /// over TCP; producers and consumers made from this client connect the same way. TLS in
    /// `options` is not used (the socket never leaves the host); a login is.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] if nothing listens at `path`; a refused login as
    /// [`Client::connect_with`].
    pub async fn connect_local(
        path: impl AsRef<std::path::Path>,
        options: ConnectOptions,
    ) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let ConnectOptions { timeout, credentials, busy_poll, .. } = options;
        let endpoint = Endpoint {
            address: path.display().to_string(),
            tls: None,
            credentials,
            busy_poll,
            local: Some(path.to_owned()),
        };
        let connection = Connection::open(&endpoint, timeout, "ringmq-client admin").await?;
        Ok(Self { connection, endpoint })
    }

    /// How this client connects (its timeout, TLS, login and busy-polling), for another
    /// connection alike.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            timeout: self.connection.timeout,
            tls: self.endpoint.tls.clone(),
            credentials: self.endpoint.credentials.clone(),
            busy_poll: self.endpoint.busy_poll,
        }
    }

    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.endpoint.address
    }

    /// The TLS settings this client connects with, if any.
    pub fn tls(&self) -> Option<&Tls> {
        self.endpoint.tls.as_ref()
    }

    /// The timeout of each call (but [`Client::create_topic`]'s answer).
    pub fn timeout(&self) -> Duration {
        self.connection.timeout
    }

    /// Largest record batch the broker accepts.
    pub fn batch_size_max(&self) -> u32 {
        self.connection.broker.batch_size_max
    }

    async fn call(&mut self, request: &Request<'_>) -> Result<bytes::Bytes, ClientError> {
        let timeout = self.connection.timeout;
        Ok(self.connection.call(request, timeout).await?.1)
    }

    /// Sends any request and returns the body of its answer: for tests and tools that exercise
    /// the protocol itself (every other call is a typed wrapper of this).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with the broker's code and message, or a connection error.
    #[doc(hidden)]
    pub async fn raw_call(&mut self, request: &Request<'_>) -> Result<bytes::Bytes, ClientError> {
        self.call(request).await
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
    /// take a while for large capacities (about as long as writing that many bytes to the disk):
    /// the call waits for the answer as long as it takes, with no timeout (the broker's
    /// `Stats` shows the progress, [`BrokerStats::creating_written_bytes`], to another
    /// connection; `ringmq-cli topic create` does so). The broker goes on with every other
    /// request meanwhile.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `TopicExists`, `InvalidTopicName`, `InvalidRequest`, `Busy`
    /// (a limit: topics, ring bytes, disk space) or `ShuttingDown` (the broker stopped before the
    /// topic was made; nothing of it is left).
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
        // No deadline: a broker that stops answering closes the connection, which ends the call.
        self.connection.call(&request, Duration::MAX).await.map(drop)
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
        ProducerBuilder::new(&self.endpoint).timeout(self.connection.timeout)
    }

    /// A consumer builder for one partition of `topic` (the consumer opens its own connection).
    pub fn consumer(&self, topic: &str, partition: u32) -> ConsumerBuilder {
        ConsumerBuilder::new(&self.endpoint, topic, partition).timeout(self.connection.timeout)
    }

    /// A builder for a member of consumer group `group` reading `topic`.
    pub fn group_consumer(&self, group: &str, topic: &str) -> GroupConsumerBuilder {
        GroupConsumerBuilder::new(&self.endpoint, group, topic).timeout(self.connection.timeout)
    }

    /// Every consumer group with members or committed offsets, sorted by name.
    ///
    /// # Errors
    ///
    /// A connection error or timeout.
    pub async fn list_groups(&mut self) -> Result<Vec<GroupListing>, ClientError> {
        let body = self.read(&Request::ListGroups).await?;
        let list = GroupList::decode(&body)?;
        Ok(list
            .groups
            .iter()
            .map(|summary| GroupListing {
                group: summary.group.to_owned(),
                topic: summary.topic.to_owned(),
                members: summary.members,
                generation: summary.generation,
            })
            .collect())
    }

    /// A group's members, their partitions, and its committed offsets with each partition's end.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `InvalidRequest` for a bad group name.
    pub async fn describe_group(&mut self, group: &str) -> Result<GroupInfo, ClientError> {
        let body = self.read(&Request::DescribeGroup(GroupName { group })).await?;
        let description = GroupDescription::decode(&body)?;
        Ok(GroupInfo {
            group: description.group.to_owned(),
            topic: description.topic.to_owned(),
            generation: description.generation,
            members: description
                .members
                .iter()
                .map(|member| GroupMember {
                    member_id: member.member_id.to_owned(),
                    client: member.client.to_owned(),
                    generation: member.generation,
                    partitions: member.partitions.iter().collect(),
                })
                .collect(),
            offsets: description
                .offsets
                .iter()
                .map(|entry| GroupOffset {
                    topic: entry.topic.to_owned(),
                    partition: entry.partition,
                    committed: entry.committed,
                    end: entry.end,
                    lag: entry.lag(),
                })
                .collect(),
        })
    }

    /// The committed offsets of `group` on `topic`: `(partition, offset)`.
    ///
    /// # Errors
    ///
    /// A connection error or timeout.
    pub async fn committed_offsets(
        &mut self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<(u32, u64)>, ClientError> {
        let body = self.read(&Request::FetchCommitted(GroupTopic { group, topic })).await?;
        let offsets = CommittedOffsets::decode(&body)?;
        Ok(offsets.offsets.iter().map(|entry| (entry.partition, entry.offset)).collect())
    }

    /// Sets `group`'s committed offset on every partition of `topic` to its earliest or latest
    /// offset, or to `StartOffset::Offset(n)` (at most each partition's end). The group must
    /// have no live members. Returns the offsets committed.
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `GroupNotEmpty` while members are connected, `UnknownTopic`,
    /// or `InvalidRequest` for an offset past a partition's end.
    pub async fn reset_group_offsets(
        &mut self,
        group: &str,
        topic: &str,
        to: StartOffset,
    ) -> Result<Vec<(u32, u64)>, ClientError> {
        let info = self.describe_topic(topic).await?;
        let offsets: Vec<PartitionOffset> = info
            .partitions
            .iter()
            .map(|state| PartitionOffset {
                partition: state.partition,
                offset: match to {
                    StartOffset::Earliest => state.earliest_offset,
                    StartOffset::Latest => state.next_offset,
                    StartOffset::Offset(offset) => offset,
                },
            })
            .collect();
        let request = Request::CommitOffsets(CommitOffsets {
            group,
            topic,
            member_id: "",
            generation: 0,
            offsets: Entries::from_slice(&offsets),
        });
        self.call(&request).await?;
        Ok(offsets.iter().map(|entry| (entry.partition, entry.offset)).collect())
    }
}

/// A consumer group, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group.
    pub group: String,
    /// The topic its members consume (empty without members).
    pub topic: String,
    /// Live members.
    pub members: u32,
    /// Current generation.
    pub generation: u32,
}

/// A consumer group, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group.
    pub group: String,
    /// The topic its members consume (empty without members).
    pub topic: String,
    /// Current generation.
    pub generation: u32,
    /// Live members.
    pub members: Vec<GroupMember>,
    /// Committed offsets.
    pub offsets: Vec<GroupOffset>,
}

/// A member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Its id.
    pub member_id: String,
    /// The address it last heartbeated from.
    pub client: String,
    /// The generation it last learned.
    pub generation: u32,
    /// The partitions it holds.
    pub partitions: Vec<u32>,
}

/// A group's committed offset on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The committed offset: the next record the group will read.
    pub committed: u64,
    /// The partition's next offset.
    pub end: u64,
    /// Records between them.
    pub lag: u64,
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
