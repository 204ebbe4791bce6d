//! The producer: per-partition batching, partitioning, pipelined sends and retries.
//!
//! `send` encodes the record straight into the open batch of its partition (one copy, into a
//! buffer reused from batch to batch) and returns a [`Delivery`]: a future that resolves to the
//! record's offset once the broker acknowledges its batch. A background task seals a batch when it
//! is full or its linger time has passed, sends it (frame head and batch in one vectored write,
//! up to `max_in_flight` requests pipelined on one connection) and matches the acknowledgements.
//!
//! Partitions: a record with a key goes to `crc32c(key) % partitions` (stable across clients and
//! restarts); a record without one goes to the topic's current "sticky" partition, which moves to
//! the next partition each time a keyless batch is sealed (round robin by batch, so batches stay
//! large). An explicit partition overrides both.
//!
//! On a lost connection, a timeout or a retriable broker error the batches in flight are sent
//! again, in order, after a backoff, until the delivery timeout.
//!
//! Idempotence (on by default, with `acks` written or synced): the producer gets a producer id
//! from the broker and stamps each batch with it, its epoch and a per-partition sequence number
//! (assigned when the batch is sealed). A batch resent after its acknowledgement was lost is
//! recognised by the broker and acknowledged with its original offset instead of being written
//! twice, so retries never duplicate. At most [`PRODUCER_WINDOW`] requests are in flight, the
//! number of batches the broker remembers per producer and partition. If a batch fails for good
//! (or expires), later batches of its partition would leave a gap in the sequence: the producer
//! then resolves every batch already sent (waiting for its answer, or resending it under its
//! original stamp after a lost connection, so one the broker did write is recognised), takes the
//! next epoch and renumbers only the batches the broker never wrote before sending on. Without idempotence delivery is at-least-once: a batch the
//! broker wrote but whose acknowledgement was lost is written again.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

use ringmq_protocol::batch::restamp_producer;
use ringmq_protocol::group::ProducerIdentity;
use ringmq_protocol::limits::PRODUCER_WINDOW;
use ringmq_protocol::message::{Produce, ProduceReply};
use ringmq_protocol::{
    Acks, BatchEncoder, Compression, EncodeError, ErrorCode, Header, Push, Record, Request,
};

use crate::connection::{check_status, Connection, Endpoint};
use crate::{ClientError, DEFAULT_TIMEOUT};

/// A record to send.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// A partition, or `None` to let the producer choose (by key, else round robin).
    pub partition: Option<u32>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Headers.
    pub headers: &'a [Header<'a>],
    /// Timestamp, ms since the Unix epoch; `None` for now.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    /// A record with a value, no key.
    pub fn new(topic: &'a str, value: &'a [u8]) -> Self {
        Self { topic, partition: None, key: None, value, headers: &[], timestamp: None }
    }

    /// Sets the key (which picks the partition unless one is set).
    #[must_use]
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sends to this partition.
    #[must_use]
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the headers.
    #[must_use]
    pub fn headers(mut self, headers: &'a [Header<'a>]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    endpoint: Endpoint,
    linger: Duration,
    batch_bytes: usize,
    acks: Acks,
    timeout: Duration,
    max_in_flight: usize,
    buffer_memory: usize,
    idempotent: bool,
    compression: Compression,
}

impl ProducerBuilder {
    pub(crate) fn new(endpoint: &Endpoint) -> Self {
        Self {
            endpoint: endpoint.clone(),
            linger: Duration::from_millis(5),
            batch_bytes: 64 << 10,
            acks: Acks::Written,
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: 16,
            buffer_memory: 32 << 20,
            idempotent: true,
            compression: Compression::None,
        }
    }

    /// How batches are compressed [default: none]. The broker stores them as they are sent, and
    /// consumers decompress them; a batch that would not get smaller is sent as it is.
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Whether retries may not duplicate records [default: true]; see the module docs. Has no
    /// effect with `acks = none`, which never retries.
    #[must_use]
    pub fn idempotence(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// How long a batch waits for more records before it is sent [default: 5 ms].
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Largest batch, bytes [default: 64 KiB; capped at the broker's batch limit].
    #[must_use]
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// Durability required before a record is acknowledged [default: written].
    #[must_use]
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// How long a record may take to be acknowledged, retries included [default: 30 s]; also the
    /// timeout of connecting and of the broker's own handling of one request.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Requests sent and not yet acknowledged, at most [default: 16; with idempotence at most
    /// 16, the batches the broker remembers per producer].
    #[must_use]
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests.max(1);
        self
    }

    /// Memory for batches not yet acknowledged; `send` waits when it is used up [default: 32 MiB].
    #[must_use]
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes;
        self
    }

    /// Connects and starts the producer's background task.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] or [`ClientError::Timeout`]; [`ClientError::InvalidArgument`] for
    /// a batch size the protocol cannot carry.
    pub async fn build(self) -> Result<Producer, ClientError> {
        let mut connection =
            Connection::open(&self.endpoint, self.timeout, "ringmq-client producer").await?;
        let idempotent = self.idempotent && self.acks != Acks::None;
        let producer =
            if idempotent { Some(init_producer(&mut connection, None).await?) } else { None };
        let max_in_flight =
            if idempotent { self.max_in_flight.min(PRODUCER_WINDOW) } else { self.max_in_flight };
        let broker_limit = connection.broker.batch_size_max as usize;
        let batch_bytes = self.batch_bytes.min(broker_limit);
        // Header plus one empty record: the smallest batch that can hold anything.
        if batch_bytes < 128 {
            return Err(ClientError::InvalidArgument(format!(
                "batch size {} is too small: at least 128 bytes",
                self.batch_bytes
            )));
        }
        let max_batches = (self.buffer_memory / batch_bytes).max(max_in_flight + 2);
        let inner = Arc::new(Inner {
            settings: Settings {
                linger: self.linger,
                batch_bytes,
                acks: self.acks,
                timeout: self.timeout,
                max_in_flight,
                max_batches,
            },
            endpoint: self.endpoint,
            state: Mutex::new(State {
                producer,
                compression: self.compression,
                ..State::default()
            }),
            wake: Notify::new(),
            space: Notify::new(),
            metadata: tokio::sync::Mutex::new(None),
        });
        let task = tokio::spawn(sender(Arc::clone(&inner), connection));
        Ok(Producer { inner, task: Some(task) })
    }
}

#[derive(Debug)]
struct Settings {
    linger: Duration,
    batch_bytes: usize,
    acks: Acks,
    timeout: Duration,
    max_in_flight: usize,
    max_batches: usize,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    endpoint: Endpoint,
    state: Mutex<State>,
    /// Wakes the sender task (a batch was sealed or opened, or the producer is closing).
    wake: Notify,
    /// Wakes `send` and `flush` callers (a batch completed).
    space: Notify,
    /// A connection for metadata (partition counts), opened on first use.
    metadata: tokio::sync::Mutex<Option<Connection>>,
}

#[derive(Debug, Default)]
struct State {
    /// Topics by name: one hash lookup per record.
    topics: HashMap<Arc<str>, TopicState>,
    ready: VecDeque<Sealed>,
    /// Batches open, ready or in flight.
    outstanding: usize,
    free_buffers: Vec<Vec<u8>>,
    closed: bool,
    /// The first error the broker reported about a batch sent with `acks=none`.
    unreported: Option<ClientError>,
    /// The producer id and epoch stamped on batches, when idempotent.
    producer: Option<ProducerIdentity>,
    /// How sealed batches are compressed.
    compression: Compression,
}

#[derive(Debug)]
struct TopicState {
    name: Arc<str>,
    partitions: u32,
    sticky: u32,
    /// The open batch of each partition.
    open: Vec<Option<OpenBatch>>,
    /// The sequence number the next sealed batch of each partition starts at (idempotence).
    sequences: Vec<i32>,
}

#[derive(Debug)]
struct OpenBatch {
    buffer: Vec<u8>,
    encoder: BatchEncoder,
    delivery: Arc<DeliveryState>,
    opened: Instant,
}

#[derive(Debug)]
struct Sealed {
    topic: Arc<str>,
    partition: u32,
    buffer: Vec<u8>,
    size: usize,
    record_count: u32,
    delivery: Arc<DeliveryState>,
    first_sent: Option<Instant>,
    sealed: Instant,
}

/// A producer. Cheap to share behind an `Arc`; `send` takes `&self`.
#[derive(Debug)]
pub struct Producer {
    inner: Arc<Inner>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Producer {
    /// A producer builder for the broker at `address`, connecting as `options` say, without a
    /// [`crate::Client`] (and its admin connection): the producer opens only its own.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), ringmq_client::ClientError> {
    /// use ringmq_client::{ConnectOptions, Producer, ProducerRecord};
    /// let producer = Producer::builder("127.0.0.1:7878", ConnectOptions::default()).build().await?;
    /// producer.send_and_wait(ProducerRecord::new("events", b"hello")).await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(address: &str, options: crate::ConnectOptions) -> ProducerBuilder {
        ProducerBuilder::new(&options.endpoint(address)).timeout(options.call_timeout())
    }

    /// Queues a record and returns its [`Delivery`]. Waits only while the producer's batch memory
    /// is used up (backpressure).
    ///
    /// # Errors
    ///
    /// [`ClientError::Broker`] with `UnknownTopic` for a topic that does not exist,
    /// [`ClientError::InvalidArgument`] for a partition out of range, [`ClientError::Encode`] for a
    /// record larger than a batch, [`ClientError::ProducerClosed`] after [`Producer::close`].
    pub async fn send(&self, record: ProducerRecord<'_>) -> Result<Delivery, ClientError> {
        self.queue(record, false).await
    }

    /// [`Producer::send`]; with `seal_when_full`, a send that finds the batch memory used up
    /// seals the open batches before it waits (they are to go out at once anyway), so it does
    /// not wait out their linger.
    async fn queue(
        &self,
        record: ProducerRecord<'_>,
        seal_when_full: bool,
    ) -> Result<Delivery, ClientError> {
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let encoded =
            Record { key: record.key, value: record.value, timestamp, headers: record.headers };
        loop {
            let space = self.inner.space.notified();
            let appended = {
                let mut state = self.lock();
                if state.closed {
                    return Err(ClientError::ProducerClosed);
                }
                state.append(&self.inner, &record, &encoded)?
            };
            match appended {
                Appended::Done(delivery) => return Ok(delivery),
                Appended::UnknownTopic => self.load_topic(record.topic).await?,
                Appended::NoRoom => {
                    // No room for a new batch: wait for one to complete.
                    if seal_when_full {
                        self.lock().seal_all();
                    }
                    self.inner.wake.notify_one();
                    space.await;
                }
            }
        }
    }

    /// Queues every record of `records` and sends them at once (see [`Producer::send_now`]),
    /// with one handle that resolves when all are acknowledged (or failed), with each record's
    /// result still there. A record `send` refuses (an unknown topic, a record too large) is not
    /// queued and has that error in its place; the others go on.
    ///
    /// ```no_run
    /// # async fn example(producer: ringmq_client::Producer) -> Result<(), ringmq_client::ClientError> {
    /// use ringmq_client::ProducerRecord;
    /// let values: Vec<Vec<u8>> = (0..1000).map(|n| format!("event {n}").into_bytes()).collect();
    /// let records = values.iter().map(|value| ProducerRecord::new("events", value));
    /// let acknowledged = producer.send_batch(records).await.await;
    /// if let Some(error) = acknowledged.first_error() {
    ///     eprintln!("{} of {} failed, first: {error}", acknowledged.failed(), acknowledged.len());
    /// }
    /// let last = acknowledged.result(999)?; // its offset (None with acks = none)
    /// # let _ = last; Ok(()) }
    /// ```
    pub async fn send_batch<'r>(
        &self,
        records: impl IntoIterator<Item = ProducerRecord<'r>>,
    ) -> Deliveries {
        let mut deliveries = Deliveries::default();
        for record in records {
            match self.queue(record, true).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(error) => deliveries.push_failed(error),
            }
        }
        self.send_now();
        deliveries
    }

    /// Seals every open batch and hands it to the sender at once, without waiting for the
    /// linger or for any acknowledgement (unlike [`Producer::flush`], which waits for every
    /// record queued). Use it once per batch of records while batches are pipelined.
    ///
    /// ```no_run
    /// # async fn example(producer: ringmq_client::Producer) -> Result<(), ringmq_client::ClientError> {
    /// use ringmq_client::ProducerRecord;
    /// let delivery = producer.send(ProducerRecord::new("events", b"now")).await?;
    /// producer.send_now(); // goes out now, not after the linger
    /// delivery.await?;
    /// # Ok(()) }
    /// ```
    pub fn send_now(&self) {
        self.lock().seal_all();
        self.inner.wake.notify_one();
    }

    /// Sends a record and waits for its acknowledgement: its offset (`None` with `acks = none`).
    ///
    /// # Errors
    ///
    /// As [`Producer::send`], and the delivery's error.
    pub async fn send_and_wait(
        &self,
        record: ProducerRecord<'_>,
    ) -> Result<Option<u64>, ClientError> {
        self.send(record).await?.await
    }

    /// Sends every queued record now and waits until all are acknowledged (or failed).
    ///
    /// # Errors
    ///
    /// With `acks = none`, the first error the broker reported about a batch since the last
    /// flush (those batches have no [`Delivery`] to carry it). Acknowledged batches report their
    /// errors through their deliveries.
    pub async fn flush(&self) -> Result<(), ClientError> {
        loop {
            let space = self.inner.space.notified();
            {
                let mut state = self.lock();
                state.seal_all();
                if state.outstanding == 0 {
                    return state.unreported.take().map_or(Ok(()), Err);
                }
            }
            self.inner.wake.notify_one();
            space.await;
        }
    }

    /// Flushes, then stops the background task. Later sends fail with
    /// [`ClientError::ProducerClosed`].
    ///
    /// # Errors
    ///
    /// As [`Producer::flush`].
    pub async fn close(mut self) -> Result<(), ClientError> {
        let flushed = self.flush().await;
        self.lock().closed = true;
        self.inner.wake.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        flushed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Learns a topic's partition count from the broker.
    async fn load_topic(&self, topic: &str) -> Result<(), ClientError> {
        let mut metadata = self.inner.metadata.lock().await;
        if metadata.is_none() {
            let timeout = self.inner.settings.timeout;
            *metadata = Some(
                Connection::open(&self.inner.endpoint, timeout, "ringmq-client producer metadata")
                    .await?,
            );
        }
        let connection = metadata.as_mut().expect("opened above");
        let info = match crate::describe(connection, topic).await {
            Ok(info) => info,
            Err(error) => {
                if error.is_retriable() {
                    *metadata = None;
                }
                return Err(error);
            }
        };
        let partitions = u32::try_from(info.partitions.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(topic);
        self.lock().topics.entry(Arc::clone(&name)).or_insert_with(|| TopicState {
            name,
            partitions,
            sticky: 0,
            open: (0..partitions).map(|_| None).collect(),
            sequences: vec![0; partitions as usize],
        });
        Ok(())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Unsent records are not silently lost while the task still runs: it keeps sending until
        // everything queued is acknowledged, then exits because the producer is closed.
        self.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

/// What [`State::append`] did.
enum Appended {
    Done(Delivery),
    /// The topic's partition count is not known yet.
    UnknownTopic,
    /// A new batch is needed but the batch memory is used up.
    NoRoom,
}

impl State {
    /// Appends `record` to its partition's open batch, sealing and opening batches as needed.
    fn append(
        &mut self,
        inner: &Inner,
        record: &ProducerRecord<'_>,
        encoded: &Record<'_>,
    ) -> Result<Appended, ClientError> {
        let State { topics, ready, outstanding, free_buffers, producer, compression, .. } = self;
        let producer = *producer;
        let Some(topic) = topics.get_mut(record.topic) else { return Ok(Appended::UnknownTopic) };
        let partition = match (record.partition, record.key) {
            (Some(partition), _) if partition >= topic.partitions => {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {:?} has no partition {partition} (it has {})",
                    record.topic, topic.partitions
                )));
            }
            (Some(partition), _) => partition,
            (None, Some(key)) => crc32c::crc32c(key) % topic.partitions,
            (None, None) => topic.sticky,
        };
        let slot = partition as usize;
        for _ in 0..2 {
            if topic.open[slot].is_none() {
                if *outstanding >= inner.settings.max_batches {
                    return Ok(Appended::NoRoom);
                }
                // Recycled buffers keep their length: the encoder overwrites what it uses, so a
                // batch costs no memset.
                let buffer =
                    free_buffers.pop().unwrap_or_else(|| vec![0; inner.settings.batch_bytes]);
                let encoder = BatchEncoder::new(inner.settings.batch_bytes, encoded.timestamp)?;
                topic.open[slot] = Some(OpenBatch {
                    buffer,
                    encoder,
                    delivery: Arc::new(DeliveryState::default()),
                    opened: Instant::now(),
                });
                *outstanding += 1;
                inner.wake.notify_one();
            }
            let batch = topic.open[slot].as_mut().expect("opened above");
            match batch.encoder.push(&mut batch.buffer, encoded) {
                Ok(Push::Appended) => {
                    let delivery = Delivery {
                        state: Arc::clone(&batch.delivery),
                        index: batch.encoder.record_count() - 1,
                    };
                    if batch.encoder.size() + 32 > inner.settings.batch_bytes {
                        seal(topic, slot, ready, free_buffers, outstanding, producer, *compression);
                        inner.wake.notify_one();
                    }
                    return Ok(Appended::Done(delivery));
                }
                Ok(Push::Full) | Err(EncodeError::TimestampOutOfRange { .. })
                    if !batch.encoder.is_empty() =>
                {
                    seal(topic, slot, ready, free_buffers, outstanding, producer, *compression);
                    inner.wake.notify_one();
                }
                Ok(Push::Full) => unreachable!("an empty batch takes any record that fits a batch"),
                Err(error) => return Err(error.into()),
            }
        }
        Err(ClientError::InvalidArgument("record does not fit in a new batch".to_owned()))
    }

    fn seal_all(&mut self) {
        let State { topics, ready, outstanding, free_buffers, producer, compression, .. } = self;
        for topic in topics.values_mut() {
            for slot in 0..topic.open.len() {
                seal(topic, slot, ready, free_buffers, outstanding, *producer, *compression);
            }
        }
    }

    /// Seals batches whose linger time has passed; returns when the next one will.
    fn seal_lingered(&mut self, linger: Duration) -> Option<Instant> {
        let now = Instant::now();
        let State { topics, ready, outstanding, free_buffers, producer, compression, .. } = self;
        let mut next: Option<Instant> = None;
        for topic in topics.values_mut() {
            for slot in 0..topic.open.len() {
                let Some(batch) = &topic.open[slot] else { continue };
                let due = batch.opened + linger;
                if due <= now {
                    seal(topic, slot, ready, free_buffers, outstanding, *producer, *compression);
                } else {
                    next = Some(next.map_or(due, |next| next.min(due)));
                }
            }
        }
        next
    }

    fn finish(&mut self, batch: Sealed, result: Result<Option<u64>, ClientError>) {
        batch.delivery.complete(result);
        self.free_buffers.push(batch.buffer);
        self.outstanding -= 1;
    }

    /// Takes the new epoch `producer` and renumbers every sealed batch not yet acknowledged
    /// (`held` first, then the ready queue) from sequence 0 per partition.
    fn renumber(&mut self, producer: ProducerIdentity, held: &mut VecDeque<Sealed>) {
        while let Some(batch) = held.pop_back() {
            self.ready.push_front(batch);
        }
        for topic in self.topics.values_mut() {
            topic.sequences.iter_mut().for_each(|sequence| *sequence = 0);
        }
        let State { topics, ready, .. } = self;
        for batch in ready.iter_mut() {
            let Some(topic) = topics.get_mut(&batch.topic) else { continue };
            let Some(sequence) = topic.sequences.get_mut(batch.partition as usize) else {
                continue;
            };
            // A sealed batch is well formed: restamping it cannot fail.
            let _ = restamp_producer(
                &mut batch.buffer[..batch.size],
                producer.producer_id,
                producer.producer_epoch,
                *sequence,
            );
            *sequence = next_sequence(*sequence, batch.record_count);
        }
        self.producer = Some(producer);
    }
}

/// The sequence number after a batch of `count` records starting at `sequence` (wraps after
/// `i32::MAX`, as the broker expects).
fn next_sequence(sequence: i32, count: u32) -> i32 {
    let next = (i64::from(sequence) + i64::from(count)).rem_euclid(i64::from(i32::MAX) + 1);
    i32::try_from(next).unwrap_or(0)
}

/// Asks the broker for a producer id (`None`) or the next epoch of `current`.
async fn init_producer(
    connection: &mut Connection,
    current: Option<ProducerIdentity>,
) -> Result<ProducerIdentity, ClientError> {
    let fresh = ProducerIdentity { producer_id: -1, producer_epoch: 0 };
    let timeout = connection.timeout;
    let request = current.unwrap_or(fresh);
    let body = match connection.call(&Request::InitProducer(request), timeout).await {
        Ok((_, body)) => body,
        // A broker that never handed out this id (its data directory was replaced): start over
        // with a new one.
        Err(ClientError::Broker { code: ErrorCode::InvalidRequest, .. }) if current.is_some() => {
            connection.call(&Request::InitProducer(fresh), timeout).await?.1
        }
        Err(error) => return Err(error),
    };
    Ok(ProducerIdentity::decode(&body, "init producer response")?)
}

/// Finishes the open batch of `topic`'s partition `slot` and queues it; moves the topic's sticky
/// partition on.
fn seal(
    topic: &mut TopicState,
    slot: usize,
    ready: &mut VecDeque<Sealed>,
    free_buffers: &mut Vec<Vec<u8>>,
    outstanding: &mut usize,
    producer: Option<ProducerIdentity>,
    compression: Compression,
) {
    let Some(batch) = topic.open[slot].take() else { return };
    let partition = slot as u32;
    if topic.sticky == partition {
        topic.sticky = (partition + 1) % topic.partitions.max(1);
    }
    let mut encoder = batch.encoder;
    let record_count = encoder.record_count();
    if let (Some(producer), false) = (producer, encoder.is_empty()) {
        let sequence = &mut topic.sequences[slot];
        encoder.set_producer(producer.producer_id, producer.producer_epoch, *sequence);
        *sequence = next_sequence(*sequence, record_count);
    }
    let mut buffer = batch.buffer;
    let Ok(size) = finish(&encoder, &mut buffer, compression) else {
        // An empty batch (its only record was refused): nothing to send.
        free_buffers.push(buffer);
        *outstanding -= 1;
        batch.delivery.complete(Ok(None));
        return;
    };
    ready.push_back(Sealed {
        topic: Arc::clone(&topic.name),
        partition,
        buffer,
        size,
        record_count,
        delivery: batch.delivery,
        first_sent: None,
        sealed: Instant::now(),
    });
}

/// Finishes a batch in `buffer`: compressed, unless it would not fit its buffer so (incompressible
/// records), then as it is.
fn finish(
    encoder: &BatchEncoder,
    buffer: &mut [u8],
    compression: Compression,
) -> Result<usize, EncodeError> {
    if compression != Compression::None && !encoder.is_empty() {
        let mut packed = Vec::new();
        let compressed =
            crate::compression::compress(compression, encoder.record_bytes(buffer), &mut packed);
        if compressed.is_ok() {
            if let Ok(size) = encoder.finish_compressed(compression, &packed, buffer) {
                return Ok(size);
            }
        }
    }
    encoder.finish(buffer)
}

/// A batch sent and not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    correlation_id: u32,
    batch: Sealed,
}

/// The background task: seals lingered batches, sends ready ones, matches acknowledgements,
/// reconnects and retries.
async fn sender(inner: Arc<Inner>, connection: Connection) {
    let settings = &inner.settings;
    let mut connection = Some(connection);
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(settings.max_in_flight);
    let mut head = Vec::with_capacity(512);
    let mut backoff = BACKOFF_MIN;
    let mut retry_at: Option<Instant> = None;
    let mut last_error: Option<ClientError> = None;
    let far = || Instant::now() + Duration::from_secs(3600);
    let idempotent = lock(&inner).producer.is_some();
    // A batch failed for good (or expired) in this epoch: later ones of its partition come back
    // out of sequence and wait in `held` until the next epoch renumbers them.
    let mut reset_pending = false;
    let mut held: VecDeque<Sealed> = VecDeque::new();
    loop {
        let wake = inner.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let (next_linger, has_ready, done, failed) = {
            let mut state = lock(&inner);
            let next = state.seal_lingered(settings.linger);
            let failed = fail_expired(
                &mut state,
                &mut held,
                &in_flight,
                settings.timeout,
                last_error.as_ref(),
            );
            (next, !state.ready.is_empty(), state.closed && state.outstanding == 0, failed)
        };
        if failed {
            reset_pending |= idempotent;
            inner.space.notify_waiters();
        }
        if done {
            return;
        }
        let backing_off = retry_at.is_some_and(|at| Instant::now() < at);
        if connection.is_none() && (has_ready || reset_pending) && !backing_off {
            match Connection::open(&inner.endpoint, settings.timeout, "ringmq-client producer")
                .await
            {
                Ok(opened) => {
                    connection = Some(opened);
                    retry_at = None;
                }
                Err(error) => {
                    last_error = Some(error);
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        // Renumber only once every batch whose fate is unknown (sent, then requeued after a lost
        // connection or a timeout) has been resolved under its original stamp: restamping one the
        // broker did write would write it twice.
        let unresolved = lock(&inner).ready.front().is_some_and(|batch| batch.first_sent.is_some());
        if let (true, true, false, Some(open), false) =
            (reset_pending, in_flight.is_empty(), unresolved, connection.as_mut(), backing_off)
        {
            let current = lock(&inner).producer;
            match init_producer(open, current).await {
                Ok(next) => {
                    lock(&inner).renumber(next, &mut held);
                    reset_pending = false;
                }
                Err(error) => {
                    last_error = Some(error);
                    connection = None;
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        // Send ready batches while the pipeline has room. While a renumbering waits, only batches
        // sent before go out, under their original stamps: the broker acknowledges each one it
        // already wrote with its offset and refuses the others as out of sequence (then `held`).
        if let (Some(open), false) = (connection.as_mut(), backing_off) {
            let mut finished_any = false;
            let mut broken = None;
            while in_flight.len() < settings.max_in_flight {
                let next = {
                    let mut state = lock(&inner);
                    let resend = state.ready.front().is_some_and(|b| b.first_sent.is_some());
                    if reset_pending && !resend {
                        None
                    } else {
                        state.ready.pop_front()
                    }
                };
                let Some(mut batch) = next else { break };
                let correlation_id = open.correlation_id();
                head.clear();
                let produce = Produce {
                    topic: &batch.topic,
                    partition: batch.partition,
                    acks: settings.acks,
                    timeout_ms: u32::try_from(settings.timeout.as_millis()).unwrap_or(u32::MAX),
                    batch: &batch.buffer[..batch.size],
                };
                if let Err(error) = produce.encode_frame_head(correlation_id, &mut head) {
                    lock(&inner).finish(batch, Err(error.into()));
                    finished_any = true;
                    continue;
                }
                batch.first_sent.get_or_insert_with(Instant::now);
                let written = tokio::time::timeout(
                    settings.timeout,
                    open.write_two(&head, &batch.buffer[..batch.size]),
                )
                .await;
                let written = written.unwrap_or(Err(ClientError::Timeout {
                    operation: "sending a batch",
                    after: settings.timeout,
                }));
                match written {
                    Ok(()) if settings.acks == Acks::None => {
                        lock(&inner).finish(batch, Ok(None));
                        finished_any = true;
                    }
                    Ok(()) => in_flight.push_back(InFlight { correlation_id, batch }),
                    Err(error) => {
                        in_flight.push_back(InFlight { correlation_id, batch });
                        broken = Some(error);
                        break;
                    }
                }
            }
            if finished_any {
                inner.space.notify_waiters();
            }
            if let Some(error) = broken {
                requeue(&inner, &mut in_flight);
                connection = None;
                last_error = Some(error);
                continue;
            }
        }
        // Wait for an acknowledgement (or an error about an unacknowledged batch), new work, the
        // next linger deadline, the end of a backoff, or the oldest acknowledgement's deadline.
        let linger_deadline = next_linger.unwrap_or_else(far);
        let ack_deadline = in_flight
            .front()
            .and_then(|front| front.batch.first_sent)
            .map_or_else(far, |sent| sent + settings.timeout);
        let retry_deadline = retry_at.unwrap_or_else(far);
        let connected = connection.is_some();
        tokio::select! {
            () = &mut wake => {}
            () = tokio::time::sleep_until(linger_deadline.min(retry_deadline)) => {}
            () = tokio::time::sleep_until(ack_deadline), if !in_flight.is_empty() => {
                last_error = Some(ClientError::Timeout { operation: "waiting for an acknowledgement", after: settings.timeout });
                requeue(&inner, &mut in_flight);
                connection = None;
            }
            frame = read_ack(connection.as_mut()), if connected => {
                match frame {
                    Ok((correlation_id, result)) => match in_flight.front() {
                        Some(front) if front.correlation_id == correlation_id => {
                            let entry = in_flight.pop_front().expect("front exists");
                            match result {
                                Err(error) if error.is_retriable() => {
                                    // Start over on a fresh connection after a backoff, so no
                                    // late answer to the old requests can be mistaken for a new one.
                                    last_error = Some(error);
                                    in_flight.push_front(entry);
                                    requeue(&inner, &mut in_flight);
                                    connection = None;
                                    retry_at = Some(Instant::now() + backoff);
                                    backoff = (backoff * 2).min(BACKOFF_MAX);
                                }
                                Err(ClientError::Broker { code: ErrorCode::OutOfOrderSequence, .. })
                                    if reset_pending =>
                                {
                                    // Not written: the gap before it is. Renumbered and sent
                                    // again in the next epoch.
                                    held.push_back(entry.batch);
                                }
                                Err(error) if idempotent => {
                                    reset_pending = true;
                                    lock(&inner).finish(entry.batch, Err(error));
                                    inner.space.notify_waiters();
                                }
                                result => {
                                    backoff = BACKOFF_MIN;
                                    lock(&inner).finish(entry.batch, result.map(Some));
                                    inner.space.notify_waiters();
                                }
                            }
                        }
                        _ => {
                            // An answer to no request in flight: an error about a batch sent with
                            // acks=none. Keep it for `flush` to report.
                            if let Err(error) = result {
                                lock(&inner).unreported.get_or_insert(error);
                            }
                            if !in_flight.is_empty() {
                                // Out of step with the requests in flight: start over.
                                requeue(&inner, &mut in_flight);
                                connection = None;
                            }
                        }
                    },
                    Err(error) => {
                        last_error = Some(error);
                        requeue(&inner, &mut in_flight);
                        connection = None;
                    }
                }
            }
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, State> {
    inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads one answer: its correlation id and the base offset or the broker's error. Waits as long
/// as it takes; the caller bounds the wait by the oldest request's deadline.
async fn read_ack(
    connection: Option<&mut Connection>,
) -> Result<(u32, Result<u64, ClientError>), ClientError> {
    let Some(connection) = connection else {
        return std::future::pending().await;
    };
    let (head, body) = connection.read_frame().await?;
    let result =
        check_status(&head, &body).and_then(|()| Ok(ProduceReply::decode(&body)?.base_offset));
    Ok((head.correlation_id, result))
}

/// Puts every in-flight batch back at the front of the ready queue, in order, to resend.
fn requeue(inner: &Inner, in_flight: &mut VecDeque<InFlight>) {
    let mut state = lock(inner);
    while let Some(entry) = in_flight.pop_back() {
        state.ready.push_front(entry.batch);
    }
}

/// Fails held and ready batches that have waited longer than the delivery timeout (only when
/// none are in flight, so a later batch never fails while an earlier one may still succeed).
/// Returns whether any failed.
fn fail_expired(
    state: &mut State,
    held: &mut VecDeque<Sealed>,
    in_flight: &VecDeque<InFlight>,
    timeout: Duration,
    last_error: Option<&ClientError>,
) -> bool {
    let now = Instant::now();
    let expired =
        |batch: &Sealed| now.duration_since(batch.first_sent.unwrap_or(batch.sealed)) > timeout;
    let error = || {
        last_error
            .cloned()
            .unwrap_or(ClientError::Timeout { operation: "delivering a batch", after: timeout })
    };
    let mut failed = false;
    while in_flight.is_empty() && held.front().is_some_and(expired) {
        let batch = held.pop_front().expect("front exists");
        state.finish(batch, Err(error()));
        failed = true;
    }
    while in_flight.is_empty() && held.is_empty() && state.ready.front().is_some_and(expired) {
        let batch = state.ready.pop_front().expect("front exists");
        state.finish(batch, Err(error()));
        failed = true;
    }
    failed
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// The shared outcome of one batch.
#[derive(Debug, Default)]
struct DeliveryState {
    result: OnceLock<Result<Option<u64>, ClientError>>,
    wakers: Mutex<Vec<Waker>>,
}

impl DeliveryState {
    /// The outcome of the batch's record `at`, once the batch has one.
    fn outcome_of(&self, at: u64) -> Option<Result<Option<u64>, ClientError>> {
        let outcome = self.result.get()?;
        Some(outcome.clone().map(|base| base.map(|base| base + at)))
    }

    /// Has `waker` woken when the batch completes (once, however often it is polled).
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !wakers.iter().any(|known| known.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn complete(&self, result: Result<Option<u64>, ClientError>) {
        let _ = self.result.set(result);
        let wakers = std::mem::take(
            &mut *self.wakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The acknowledgements of many records (see [`Producer::send_batch`], or collect
/// [`Delivery`]s): a future that resolves once, when every record is acknowledged or failed, to
/// [`Acknowledged`]. Records of one internal batch share one outcome, so awaiting a thousand
/// records that went out in a few batches waits on a few outcomes, not a thousand futures.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// Runs of consecutive records of one batch: its outcome, the first record's index in the
    /// batch, how many; or a record refused before it was queued.
    runs: Vec<Run>,
    /// The first run not known to be resolved.
    waiting: usize,
}

#[derive(Debug)]
enum Run {
    Queued { state: Arc<DeliveryState>, first: u32, count: u32 },
    Refused(ClientError),
}

impl Deliveries {
    /// Adds one record's delivery.
    pub fn push(&mut self, delivery: Delivery) {
        if let Some(Run::Queued { state, first, count }) = self.runs.last_mut() {
            if Arc::ptr_eq(state, &delivery.state) && *first + *count == delivery.index {
                *count += 1;
                return;
            }
        }
        self.runs.push(Run::Queued { state: delivery.state, first: delivery.index, count: 1 });
    }

    /// Adds a record that was refused before it was queued, with its error.
    pub fn push_failed(&mut self, error: ClientError) {
        self.runs.push(Run::Refused(error));
    }

    /// How many records.
    #[must_use]
    pub fn len(&self) -> usize {
        records_in(&self.runs)
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// How many records `runs` hold.
fn records_in(runs: &[Run]) -> usize {
    runs.iter().map(Run::count).sum()
}

impl Run {
    /// The result of the run's record `at` (from 0), once its batch is resolved.
    fn result(&self, at: usize) -> Result<Option<u64>, ClientError> {
        match self {
            Run::Refused(error) => Err(error.clone()),
            Run::Queued { state, first, .. } => state
                .outcome_of(u64::from(*first) + at as u64)
                .expect("resolved before Acknowledged"),
        }
    }

    fn count(&self) -> usize {
        match self {
            Run::Queued { count, .. } => *count as usize,
            Run::Refused(_) => 1,
        }
    }
}

impl FromIterator<Delivery> for Deliveries {
    fn from_iter<I: IntoIterator<Item = Delivery>>(deliveries: I) -> Self {
        let mut all = Self::default();
        deliveries.into_iter().for_each(|delivery| all.push(delivery));
        all
    }
}

impl Future for Deliveries {
    type Output = Acknowledged;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Acknowledged> {
        while let Some(run) = self.runs.get(self.waiting) {
            if let Run::Queued { state, .. } = run {
                if state.result.get().is_none() {
                    state.register(cx.waker());
                    // Completed between the check and the registration: go on.
                    if state.result.get().is_none() {
                        return Poll::Pending;
                    }
                }
            }
            self.waiting += 1;
        }
        // Empty again: records pushed after this are awaited afresh.
        self.waiting = 0;
        Poll::Ready(Acknowledged { runs: std::mem::take(&mut self.runs) })
    }
}

/// Every record of a [`Deliveries`], acknowledged or failed, in the order they were added.
#[derive(Debug)]
pub struct Acknowledged {
    runs: Vec<Run>,
}

impl Acknowledged {
    /// How many records.
    #[must_use]
    pub fn len(&self) -> usize {
        records_in(&self.runs)
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The result of record `index` (in the order added): its offset (`None` with
    /// `acks = none`), or the error that made it fail.
    ///
    /// # Errors
    ///
    /// The record's error; [`ClientError::InvalidArgument`] for an index past the last.
    pub fn result(&self, index: usize) -> Result<Option<u64>, ClientError> {
        let mut left = index;
        for run in &self.runs {
            if left < run.count() {
                return run.result(left);
            }
            left -= run.count();
        }
        Err(ClientError::InvalidArgument(format!(
            "record {index} of {}: there is none",
            self.len()
        )))
    }

    /// Every record's result, in order.
    pub fn results(&self) -> impl Iterator<Item = Result<Option<u64>, ClientError>> + '_ {
        self.runs.iter().flat_map(|run| (0..run.count()).map(move |at| run.result(at)))
    }

    /// How many records failed.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.runs
            .iter()
            .filter(|run| match run {
                Run::Refused(_) => true,
                Run::Queued { state, .. } => state.result.get().is_some_and(Result::is_err),
            })
            .map(Run::count)
            .sum()
    }

    /// The first error, if any record failed.
    #[must_use]
    pub fn first_error(&self) -> Option<&ClientError> {
        self.runs.iter().find_map(|run| match run {
            Run::Refused(error) => Some(error),
            Run::Queued { state, .. } => {
                state.result.get().and_then(|result| result.as_ref().err())
            }
        })
    }
}

/// The acknowledgement of one record: resolves to its offset (`None` with `acks = none`) or the
/// error that made its batch fail.
#[derive(Debug, Clone)]
pub struct Delivery {
    state: Arc<DeliveryState>,
    index: u32,
}

impl Future for Delivery {
    type Output = Result<Option<u64>, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let at = u64::from(self.index);
        if let Some(result) = self.state.outcome_of(at) {
            return Poll::Ready(result);
        }
        self.state.register(cx.waker());
        // Completed between the check and the registration: ready now.
        self.state.outcome_of(at).map_or(Poll::Pending, Poll::Ready)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn delivery(state: &Arc<DeliveryState>, index: u32) -> Delivery {
        Delivery { state: Arc::clone(state), index }
    }

    #[test]
    fn deliveries_resolve_once_all_runs_have_and_keep_each_result() {
        assert!(Deliveries::default().now_or_never().is_some_and(|done| done.is_empty()));
        let (first, second) = (Arc::new(DeliveryState::default()), Arc::default());
        let mut all = Deliveries::default();
        all.push(delivery(&first, 0));
        all.push(delivery(&first, 1));
        all.push_failed(ClientError::ProducerClosed);
        all.push(delivery(&second, 0));
        assert_eq!(all.len(), 4);
        assert!((&mut all).now_or_never().is_none());
        first.complete(Ok(Some(10)));
        assert!((&mut all).now_or_never().is_none(), "the second batch is not acknowledged");
        second.complete(Err(ClientError::ProducerClosed));
        let done = (&mut all).now_or_never().expect("every batch resolved");
        let results: Vec<_> = done.results().map(|result| result.ok()).collect();
        assert_eq!(results, [Some(Some(10)), Some(Some(11)), None, None]);
        assert_eq!(done.failed(), 2);
        assert_eq!(done.result(1).unwrap(), Some(11));
        assert!(done.result(4).is_err());
        // Records pushed after it resolved are awaited afresh.
        let third = Arc::new(DeliveryState::default());
        all.push(delivery(&third, 0));
        assert!((&mut all).now_or_never().is_none());
        third.complete(Ok(None));
        let again = all.now_or_never().unwrap();
        assert_eq!(again.results().map(Result::unwrap).collect::<Vec<_>>(), [None]);
    }
}
