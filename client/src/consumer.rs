//! The consumer: reads one partition in order, long-polling for new records.
//!
//! A fetch answer is read into one buffer; each batch in it is validated (both CRCs, every
//! record) and its records are handed out as `Bytes` slices of that buffer, without copying.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use ringmq_protocol::message::{Fetch, FetchReply};
use ringmq_protocol::{BatchView, Batches, Opcode, Records, Request};

use crate::connection::{Connection, Endpoint};
use crate::{ClientError, DEFAULT_TIMEOUT};

/// Where a consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The earliest offset the partition still holds.
    Earliest,
    /// The next offset to be written: only new records.
    Latest,
    /// This offset.
    Offset(u64),
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The partition it was read from.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value (empty for a null value: see `value_is_null`).
    pub value: Bytes,
    /// Whether the value is null (Kafka's tombstone) rather than empty.
    pub value_is_null: bool,
    /// Headers, in order (a null header value reads as empty).
    pub headers: Vec<(String, Bytes)>,
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerBuilder {
    endpoint: Endpoint,
    topic: String,
    partition: u32,
    start: StartOffset,
    max_wait: Duration,
    max_bytes: u32,
    min_bytes: u32,
    timeout: Duration,
}

impl ConsumerBuilder {
    pub(crate) fn new(endpoint: &Endpoint, topic: &str, partition: u32) -> Self {
        Self {
            endpoint: endpoint.clone(),
            topic: topic.to_owned(),
            partition,
            start: StartOffset::Earliest,
            max_wait: Duration::from_millis(500),
            max_bytes: 1 << 20,
            min_bytes: 1,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Where to start [default: earliest].
    #[must_use]
    pub fn start(mut self, start: StartOffset) -> Self {
        self.start = start;
        self
    }

    /// How long one fetch waits at the broker for new records [default: 500 ms].
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Soft limit on the bytes of one fetch [default: 1 MiB].
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u32) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Answer a fetch only once this many bytes are available (or the long-poll wait ends)
    /// [default: 1, as soon as anything is]. Larger values mean fewer, fuller fetches: more
    /// throughput, more latency.
    #[must_use]
    pub fn min_bytes(mut self, min_bytes: u32) -> Self {
        self.min_bytes = min_bytes.max(1);
        self
    }

    /// Timeout of connecting and of each request (added to the long-poll wait) [default: 30 s].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects and resolves the start offset.
    ///
    /// # Errors
    ///
    /// A connection error, or [`ClientError::Broker`] with `UnknownTopic`, or
    /// [`ClientError::InvalidArgument`] for a partition the topic does not have.
    pub async fn build(self) -> Result<Consumer, ClientError> {
        let mut connection =
            Connection::open(&self.endpoint, self.timeout, "ringmq-client consumer").await?;
        let info = crate::describe(&mut connection, &self.topic).await?;
        let Some(state) = info.partitions.iter().find(|state| state.partition == self.partition)
        else {
            return Err(ClientError::InvalidArgument(format!(
                "topic {:?} has no partition {} (it has {})",
                self.topic,
                self.partition,
                info.partitions.len()
            )));
        };
        let position = match self.start {
            StartOffset::Earliest => state.earliest_offset,
            StartOffset::Latest => state.next_offset,
            StartOffset::Offset(offset) => offset,
        };
        Ok(Consumer {
            connection,
            topic: self.topic,
            partition: self.partition,
            position,
            max_wait: self.max_wait,
            max_bytes: self.max_bytes,
            min_bytes: self.min_bytes,
            timeout: self.timeout,
            records: VecDeque::new(),
            high_watermark: state.next_offset,
            prefetch: None,
        })
    }
}

/// A fetch sent ahead, not answered yet.
#[derive(Debug, Clone, Copy)]
struct Prefetch {
    correlation_id: u32,
    /// The offset it asks for.
    offset: u64,
    /// When it was sent: its answer is overdue `timeout + max_wait` later.
    sent: tokio::time::Instant,
}

/// Reads one partition from a position, in offset order.
#[derive(Debug)]
pub struct Consumer {
    connection: Connection,
    topic: String,
    partition: u32,
    position: u64,
    max_wait: Duration,
    max_bytes: u32,
    min_bytes: u32,
    timeout: Duration,
    records: VecDeque<ConsumerRecord>,
    high_watermark: u64,
    /// The next fetch, sent as soon as the last answer arrived, so the broker reads and sends
    /// while this side hands out records: its correlation id and the offset it asks for.
    prefetch: Option<Prefetch>,
}

impl Consumer {
    /// A consumer builder for one partition of `topic` on the broker at `address`, connecting
    /// as `options` say, without a [`crate::Client`] (and its admin connection).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), ringmq_client::ClientError> {
    /// use ringmq_client::{ConnectOptions, Consumer, StartOffset};
    /// let mut consumer = Consumer::builder("127.0.0.1:7878", ConnectOptions::default(), "events", 0)
    ///     .start(StartOffset::Earliest)
    ///     .build()
    ///     .await?;
    /// let first = consumer.next().await?;
    /// # let _ = first; Ok(()) }
    /// ```
    pub fn builder(
        address: &str,
        options: crate::ConnectOptions,
        topic: &str,
        partition: u32,
    ) -> ConsumerBuilder {
        ConsumerBuilder::new(&options.endpoint(address), topic, partition)
            .timeout(options.call_timeout())
    }

    /// The offset of the next record [`Consumer::next`] returns.
    pub fn position(&self) -> u64 {
        self.records.front().map_or(self.position, |record| record.offset)
    }

    /// The partition's next offset as of the last fetch (the end of the log).
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// Moves to `offset`; records already fetched are dropped.
    pub fn seek(&mut self, offset: u64) {
        self.records.clear();
        self.position = offset;
    }

    /// The next record, waiting (long-polling) until one is written.
    ///
    /// # Errors
    ///
    /// [`ClientError::OffsetOutOfRange`] if the position was reclaimed (seek to its `earliest`
    /// to go on), a connection error or timeout, or [`ClientError::Protocol`] for a batch that
    /// fails validation.
    pub async fn next(&mut self) -> Result<ConsumerRecord, ClientError> {
        loop {
            if let Some(record) = self.records.pop_front() {
                return Ok(record);
            }
            self.fetch(self.max_wait).await?;
        }
    }

    /// The next record, or `None` if none arrives within `limit`. Giving up costs nothing: a
    /// fetch already asked for stays pending on the connection and answers a later call.
    ///
    /// ```no_run
    /// # async fn example(mut consumer: ringmq_client::Consumer) -> Result<(), ringmq_client::ClientError> {
    /// use std::time::Duration;
    /// while let Some(record) = consumer.next_timeout(Duration::from_millis(100)).await? {
    ///     println!("{}: {} bytes", record.offset, record.value.len());
    /// }
    /// // Nothing for 100 ms: do something else, then come back.
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Consumer::next`].
    pub async fn next_timeout(
        &mut self,
        limit: Duration,
    ) -> Result<Option<ConsumerRecord>, ClientError> {
        let deadline = deadline_after(limit);
        loop {
            if let Some(record) = self.records.pop_front() {
                return Ok(Some(record));
            }
            if !self.fetch_before(deadline).await? {
                return Ok(None);
            }
        }
    }

    /// Fetches once (waiting up to the long-poll time) and returns the records received, which
    /// may be none: everything one fetch brought. See [`Consumer::poll_max`] for a bounded
    /// count and wait.
    ///
    /// # Errors
    ///
    /// As [`Consumer::next`].
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.records.is_empty() {
            self.fetch(self.max_wait).await?;
        }
        Ok(self.records.drain(..).collect())
    }

    /// At most `max_records` records, waiting at most `limit` for the first (none: an empty
    /// `Vec`); records fetched beyond `max_records` wait for the next call.
    ///
    /// ```no_run
    /// # async fn example(mut consumer: ringmq_client::Consumer) -> Result<(), ringmq_client::ClientError> {
    /// use std::time::Duration;
    /// let records = consumer.poll_max(500, Duration::from_millis(50)).await?;
    /// assert!(records.len() <= 500);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Consumer::next`].
    pub async fn poll_max(
        &mut self,
        max_records: usize,
        limit: Duration,
    ) -> Result<Vec<ConsumerRecord>, ClientError> {
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let deadline = deadline_after(limit);
        while self.records.is_empty() {
            if !self.fetch_before(deadline).await? {
                break;
            }
        }
        let count = self.records.len().min(max_records);
        Ok(self.records.drain(..count).collect())
    }

    /// Fetches once if an answer can come by `deadline`: `false` (nothing changed) if the fetch
    /// already asked for has not answered by then. A new fetch long-polls no longer than what
    /// is left (none at all once the deadline has passed: it answers with what is there).
    ///
    /// # Errors
    ///
    /// As [`Consumer::next`]; [`ClientError::Timeout`] once the pending fetch is overdue (its
    /// long poll and the call timeout have passed with no answer: a dead connection, which the
    /// next call replaces).
    async fn fetch_before(&mut self, deadline: tokio::time::Instant) -> Result<bool, ClientError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.prefetch {
            Some(pending) if pending.offset == self.position => {
                let overdue_after = self.timeout + self.max_wait;
                let overdue = pending.sent + overdue_after;
                let until = deadline.min(overdue);
                match tokio::time::timeout_at(until, self.connection.frame_arrived()).await {
                    // Arrived: the fetch below reads it at once.
                    Ok(Ok(())) => self.fetch(self.max_wait).await?,
                    // The connection failed: the fetch below asks again, on a new one, for no
                    // longer than what is left.
                    Ok(Err(_)) => self.fetch(self.max_wait.min(left)).await?,
                    Err(_) if tokio::time::Instant::now() >= overdue => {
                        // The connection counts as broken (an answer is outstanding), so the
                        // next call starts on a fresh one.
                        self.prefetch = None;
                        return Err(ClientError::Timeout {
                            operation: "fetch",
                            after: overdue_after,
                        });
                    }
                    // Not yet: the fetch stays pending, the connection in step.
                    Err(_) => return Ok(false),
                }
            }
            _ => self.fetch(self.max_wait.min(left)).await?,
        }
        Ok(true)
    }

    /// The records as a stream that never ends on its own (it long-polls); it yields an error
    /// and goes on polling after it.
    pub fn into_stream(self) -> impl Stream<Item = Result<ConsumerRecord, ClientError>> {
        futures_util::stream::unfold(self, |mut consumer| async move {
            let next = consumer.next().await;
            Some((next, consumer))
        })
    }

    /// Fetches once, long-polling up to `max_wait` (a fetch already asked for waits its own),
    /// then asks for what follows with the consumer's own long-poll time.
    async fn fetch(&mut self, max_wait: Duration) -> Result<(), ClientError> {
        let timeout = self.timeout + self.max_wait;
        let first_wait_ms = u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX);
        let max_wait_ms = u32::try_from(self.max_wait.as_millis()).unwrap_or(u32::MAX);
        let position = self.position;
        let request = Request::Fetch(Fetch {
            topic: &self.topic,
            partition: self.partition,
            offset: position,
            max_bytes: self.max_bytes,
            max_wait_ms: first_wait_ms,
            min_bytes: self.min_bytes,
        });
        let body = match self.prefetch.take() {
            Some(Prefetch { correlation_id, offset, .. }) if offset == position => {
                match self.connection.receive(correlation_id, Opcode::Fetch, timeout).await {
                    Ok((_, body)) => body,
                    // The connection died under the prefetch (a broker restart): ask again on a
                    // new one.
                    Err(ClientError::Closed { .. } | ClientError::Io { .. }) => {
                        self.connection.call(&request, timeout).await?.1
                    }
                    Err(error) => return Err(error),
                }
            }
            // None sent, or one for another position (after a seek): its answer is unread, so
            // the connection is replaced first.
            _ => self.connection.call_idempotent(&request, timeout).await?.1,
        };
        let reply = FetchReply::decode(&body)?;
        self.high_watermark = reply.next_offset;
        for batch in Batches::new(reply.batches, u32::MAX) {
            let batch = batch?;
            push_records(&batch, &body, self.partition, self.position, &mut self.records)?;
            self.position = self.position.max(batch.next_offset());
        }
        // Ask for what follows now: the broker reads and sends it while these records are handed
        // out. A failed send only means the next fetch goes out then, on a new connection.
        let next = Request::Fetch(Fetch {
            topic: &self.topic,
            partition: self.partition,
            offset: self.position,
            max_bytes: self.max_bytes,
            max_wait_ms,
            min_bytes: self.min_bytes,
        });
        if let Ok(correlation_id) = self.connection.send(&next, self.timeout).await {
            let sent = tokio::time::Instant::now();
            self.prefetch = Some(Prefetch { correlation_id, offset: self.position, sent });
        }
        Ok(())
    }
}

/// `limit` from now (far in the future for a limit too long to add).
fn deadline_after(limit: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(limit).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Appends the records of `batch` at or after offset `from` to `out`. An uncompressed batch's
/// keys and values are slices of `body` (the response they came in, no copy); a compressed one is
/// decompressed once and its records are slices of that.
pub(crate) fn push_records(
    batch: &BatchView<'_>,
    body: &Bytes,
    partition: u32,
    from: u64,
    out: &mut VecDeque<ConsumerRecord>,
) -> Result<(), ClientError> {
    let decompressed;
    let (records, source) = match batch.records() {
        Some(records) => (records, body),
        None => {
            decompressed = Bytes::from(crate::compression::decompress(
                batch.compression(),
                batch.record_bytes(),
            )?);
            (Records::checked(&decompressed, batch.header())?, &decompressed)
        }
    };
    let base = batch.base_offset();
    for record in records {
        let offset = base + u64::from(record.offset_delta);
        if offset < from {
            continue;
        }
        let headers = record
            .headers
            .map(|header| {
                let value = header.value.map_or_else(Bytes::new, |value| source.slice_ref(value));
                (header.name.to_owned(), value)
            })
            .collect();
        out.push_back(ConsumerRecord {
            partition,
            offset,
            timestamp: record.timestamp,
            key: record.key.map(|key| source.slice_ref(key)),
            value: record.value.map_or_else(Bytes::new, |value| source.slice_ref(value)),
            value_is_null: record.value.is_none(),
            headers,
        });
    }
    Ok(())
}
