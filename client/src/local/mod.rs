//! Same-host consumers: read a partition straight from the broker's mapped ring, with no request,
//! syscall or copy through the kernel per fetch.
//!
//! A [`LocalConsumer`] connects to the broker's local listener (a Unix domain socket,
//! `--local-listen`), asks to open a partition (`LocalOpen`) and receives the ring file and its
//! cursor page as descriptors, which it maps read-only. From then on it reads batches itself,
//! following [`ringmq_protocol::local`]: each batch is copied once out of the mapping into the
//! consumer's own buffer, checked whole against the broker's concurrent writes (a seqlock per
//! chunk), validated (header, CRC-32C, records, its ring entry), and only then handed out.
//!
//! The broker never waits for a local reader: one that falls behind the partition's retention is
//! told so ([`ClientError::OffsetOutOfRange`], as over TCP). A reader that reaches the end spins
//! briefly on the cursor page, then sleeps in a `LocalWait` request on the socket, which the
//! broker answers when the partition grows; so an idle reader costs no CPU. If the broker
//! restarts, the reader notices when its socket closes, reconnects and opens the partition again
//! at its own offset; a broker that died outright (SIGKILL) never closes its page, so the reader
//! also checks every copy against the ring's incarnation, which the next broker steps before it
//! writes anything (see [`ringmq_protocol::local`], "A broker that dies").
//!
//! Batches come out as [`LocalBatch`]es that borrow the consumer (the next read needs `&mut`
//! again, so a batch cannot outlive the check that validated it); [`LocalConsumer::next`] and
//! [`LocalBatch::to_records`] give owned copies.

mod map;
pub(crate) mod socket;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_protocol::group::{
    CommitOffsets, CommittedOffsets, Entries, GroupTopic, PartitionOffset,
};
use ringmq_protocol::local::{self as protocol, Cursor, LocalReadError, PageLayout};
use ringmq_protocol::message::{Fetch, LocalOpen, LocalOpenReply, LocalWaitReply};
use ringmq_protocol::{BatchHeader, Records, Request};

use crate::connection::{Connection, Endpoint};
use crate::consumer::{push_records, ConsumerRecord, StartOffset};
use crate::{ClientError, ConnectOptions};

use map::Mapped;

/// How long a reader at the end spins on the cursor page before it sleeps [default: 50 µs].
const SPIN_DEFAULT: Duration = Duration::from_micros(50);
/// How long [`LocalConsumer::next_batch`] waits for data [default: 500 ms].
const MAX_WAIT_DEFAULT: Duration = Duration::from_millis(500);
/// A reader that reads without asking the broker anything pings it this often, so the broker's
/// idle timeout does not close its connection.
const KEEPALIVE: Duration = Duration::from_secs(60);
/// First pause between two openings of the partition within one read that found nothing to read
/// (a page closed or replaced again at once); it doubles up to [`REOPEN_PAUSE_MAX`].
const REOPEN_PAUSE: Duration = Duration::from_millis(1);
/// Longest pause between two such openings.
const REOPEN_PAUSE_MAX: Duration = Duration::from_millis(100);

/// Settings of a [`LocalConsumer`].
#[derive(Debug, Clone)]
pub struct LocalConsumerBuilder {
    path: PathBuf,
    topic: String,
    partition: u32,
    start: StartOffset,
    group: Option<String>,
    options: ConnectOptions,
    /// How to connect, when it comes from another builder's endpoint (a group member's) rather
    /// than from `options`: the endpoint (credentials, its `local` replaced by `path`) and the
    /// call timeout.
    endpoint: Option<(Endpoint, Duration)>,
    spin: Duration,
    max_wait: Duration,
}

impl LocalConsumerBuilder {
    /// A builder connecting as `endpoint` says (its credentials), to the local socket at `path`.
    pub(crate) fn over(
        endpoint: &Endpoint,
        path: &Path,
        topic: &str,
        partition: u32,
        timeout: Duration,
    ) -> Self {
        let mut endpoint = endpoint.clone();
        endpoint.address = path.display().to_string();
        endpoint.local = Some(path.to_owned());
        endpoint.tls = None;
        Self {
            endpoint: Some((endpoint, timeout)),
            ..LocalConsumer::builder(path, topic, partition)
        }
    }

    /// Where the consumer starts [default: [`StartOffset::Earliest`]]; with
    /// [`LocalConsumerBuilder::group`], only where the group has no committed offset.
    #[must_use]
    pub fn start(mut self, start: StartOffset) -> Self {
        self.start = start;
        self
    }

    /// Resume from `group`'s committed offset for the partition, and commit to it with
    /// [`LocalConsumer::commit`]. The group must have no live members (a standalone consumer's
    /// commits, as Kafka's `assign` consumers make).
    #[must_use]
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }

    /// How to connect: timeout of each call, credentials.
    #[must_use]
    pub fn options(mut self, options: ConnectOptions) -> Self {
        self.options = options;
        self.endpoint = None;
        self
    }

    /// How long a reader at the end of the partition checks the cursor page before it sleeps
    /// until the broker wakes it [default: 50 µs]. Longer spins pick up data sooner after a
    /// pause, at the price of a busy core for that long.
    #[must_use]
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// How long [`LocalConsumer::next_batch`] waits for data before it answers `None`
    /// [default: 500 ms].
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Connects, opens the partition and maps it.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] if nothing listens at the path, [`ClientError::Broker`] for an
    /// unknown topic or partition or a refused permission, [`ClientError::OffsetOutOfRange`]
    /// for a start offset the partition does not hold.
    pub async fn build(self) -> Result<LocalConsumer, ClientError> {
        let (endpoint, timeout) = match &self.endpoint {
            Some((endpoint, timeout)) => (endpoint.clone(), *timeout),
            None => {
                let mut endpoint = self.options.endpoint(&self.path.display().to_string());
                endpoint.local = Some(self.path.clone());
                (endpoint, self.options.call_timeout())
            }
        };
        let mut connection = Connection::open(&endpoint, timeout, "ringmq-client local").await?;
        let committed = match &self.group {
            Some(group) => {
                committed_offset(&mut connection, group, &self.topic, self.partition, timeout)
                    .await?
            }
            None => None,
        };
        let offset = match (committed, self.start) {
            (Some(offset), _) | (None, StartOffset::Offset(offset)) => offset,
            // Earliest or latest: the broker's answer to an offset of 0 says where both are.
            (None, start) => {
                let probe = open(&mut connection, &self.topic, self.partition, 0, timeout).await;
                let reply = match probe {
                    Ok((reply, _)) => reply,
                    Err(ClientError::OffsetOutOfRange { earliest, next, .. }) => LocalOpenReply {
                        position: 0,
                        offset: 0,
                        entry: 0,
                        earliest_offset: earliest,
                        next_offset: next,
                        batch_size_max: 0,
                    },
                    Err(error) => return Err(error),
                };
                match start {
                    StartOffset::Latest => reply.next_offset,
                    _ => reply.earliest_offset,
                }
            }
        };
        let mut consumer = LocalConsumer {
            connection,
            topic: self.topic,
            partition: self.partition,
            group: self.group,
            opened: None,
            cursor: Cursor::at_chunk_start(0, 0),
            position: offset,
            high_watermark: 0,
            buffer: Vec::new(),
            decompressed: Vec::new(),
            records: VecDeque::new(),
            spin: self.spin,
            max_wait: self.max_wait,
            timeout,
            last_request: Instant::now(),
            reopened: 0,
            opened_once: false,
            batches: 0,
            waits: 0,
        };
        consumer.open_at(offset).await?;
        Ok(consumer)
    }
}

/// The partition's files, mapped, and what the cursor page says about them.
#[derive(Debug)]
struct Opened {
    ring: Mapped,
    page: Mapped,
    layout: PageLayout,
    batch_size_max: u32,
    /// The connection's [`Connection::reconnects`] when it brought the files: a later value means
    /// the broker may have restarted since, so the files are opened again.
    connection: u64,
}

/// A consumer of one partition on the broker's own host, reading the ring in place.
///
/// ```no_run
/// use ringmq_client::LocalConsumer;
///
/// # async fn example() -> Result<(), ringmq_client::ClientError> {
/// let mut consumer = LocalConsumer::builder("/run/ringmq/local.sock", "events", 0).build().await?;
/// while let Some(batch) = consumer.next_batch().await? {
///     for record in batch.records()? {
///         println!("{}: {:?}", record.offset, record.value);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LocalConsumer {
    connection: Connection,
    topic: String,
    partition: u32,
    group: Option<String>,
    opened: Option<Opened>,
    /// Where the next batch is read.
    cursor: Cursor,
    /// The next offset handed out: records below it are skipped.
    position: u64,
    high_watermark: u64,
    /// The last batch read, copied out of the ring and validated.
    buffer: Vec<u8>,
    /// The last batch's records, decompressed (for a compressed batch).
    decompressed: Vec<u8>,
    /// Owned records not handed out yet, for [`LocalConsumer::next`].
    records: VecDeque<ConsumerRecord>,
    spin: Duration,
    max_wait: Duration,
    timeout: Duration,
    last_request: Instant,
    reopened: u64,
    opened_once: bool,
    /// Batches handed out by [`LocalConsumer::next_batch`].
    batches: u64,
    /// `LocalWait` requests sent (sleeps at the end of the partition).
    waits: u64,
}

/// A batch read from the ring, validated: a view of the consumer's own copy, which lives until
/// the consumer reads again.
#[derive(Debug)]
pub struct LocalBatch<'a> {
    bytes: &'a [u8],
    header: &'a BatchHeader,
    records: &'a [u8],
    from: u64,
    partition: u32,
}

/// A record of a [`LocalBatch`], borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct LocalRecord<'a> {
    /// Its offset.
    pub offset: u64,
    /// Timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value (`None`: a null value, Kafka's tombstone).
    pub value: Option<&'a [u8]>,
}

impl<'a> LocalBatch<'a> {
    /// The batch's bytes: Kafka's RecordBatch v2 exactly as the producer sent it and the broker
    /// stored it (base offset and leader epoch stamped).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Offset of the batch's first record (which may be before the consumer's position: see
    /// [`LocalBatch::records`]).
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset()
    }

    /// Offset after the batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.header.next_offset()
    }

    /// The records at or after the consumer's position when the batch was read.
    ///
    /// # Errors
    ///
    /// [`ClientError::Protocol`] for records that do not decode (not possible for a batch the
    /// consumer validated, but checked rather than assumed).
    pub fn records(&self) -> Result<impl Iterator<Item = LocalRecord<'a>> + 'a, ClientError> {
        let base = self.header.base_offset();
        let from = self.from;
        let records = Records::checked(self.records, self.header)?;
        Ok(records
            .map(move |record| LocalRecord {
                offset: base + u64::from(record.offset_delta),
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
            })
            .filter(move |record| record.offset >= from))
    }

    /// The records at or after the consumer's position, copied into owned records (headers
    /// included).
    ///
    /// # Errors
    ///
    /// As [`LocalBatch::records`]; [`ClientError::Codec`] for a compressed batch that does not
    /// decompress.
    pub fn to_records(&self) -> Result<Vec<ConsumerRecord>, ClientError> {
        // One copy, which the records' keys and values then share.
        let copy = Bytes::copy_from_slice(self.bytes);
        let view = ringmq_protocol::BatchView::validate(&copy, u32::MAX)?;
        let mut out = VecDeque::new();
        push_records(&view, &copy, self.partition, self.from, &mut out)?;
        Ok(out.into())
    }
}

impl LocalConsumer {
    /// A consumer of `partition` of `topic` through the broker's local socket at `path`.
    pub fn builder(path: impl AsRef<Path>, topic: &str, partition: u32) -> LocalConsumerBuilder {
        LocalConsumerBuilder {
            path: path.as_ref().to_owned(),
            topic: topic.to_owned(),
            partition,
            start: StartOffset::Earliest,
            group: None,
            options: ConnectOptions::default(),
            endpoint: None,
            spin: SPIN_DEFAULT,
            max_wait: MAX_WAIT_DEFAULT,
        }
    }

    /// The offset of the next record the consumer hands out (what [`LocalConsumer::commit`]
    /// commits).
    pub fn position(&self) -> u64 {
        self.records.front().map_or(self.position, |record| record.offset)
    }

    /// The partition's next offset as the consumer last learned it (at its last read or wait).
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// How many times the consumer opened the partition again (after a broker restart, or a
    /// seek).
    pub fn reopened(&self) -> u64 {
        self.reopened
    }

    /// Batches [`LocalConsumer::next_batch`] has handed out (directly or for
    /// [`LocalConsumer::next`]).
    pub fn batches_read(&self) -> u64 {
        self.batches
    }

    /// `LocalWait` requests sent: each is a sleep at the end of the partition, and the only
    /// request (so the only syscalls) a reader makes in steady state. A reader that never
    /// catches up with the writer sends none.
    pub fn waits(&self) -> u64 {
        self.waits
    }

    /// Moves the consumer to `offset`: the next read asks the broker where it lies.
    pub fn seek(&mut self, offset: u64) {
        self.position = offset;
        self.opened = None;
        self.records.clear();
    }

    /// The next batch holding records at or after the position, waiting up to the consumer's
    /// `max_wait` for one; `None` if none came. Advances the position past it. (Records
    /// [`LocalConsumer::next`] read ahead and has not handed out yet are dropped: use one or the
    /// other.)
    ///
    /// # Errors
    ///
    /// [`ClientError::OffsetOutOfRange`] when the broker reclaimed the position before it was
    /// read (the consumer fell behind retention; [`LocalConsumer::seek`] to go on);
    /// [`ClientError::Broker`] with `CorruptBatch` for bytes in the ring that are not the batch
    /// expected (never handed out); the connection's errors while reopening.
    pub async fn next_batch(&mut self) -> Result<Option<LocalBatch<'_>>, ClientError> {
        if let Some(record) = self.records.front() {
            self.position = record.offset;
            self.records.clear();
            self.opened = None;
        }
        let Some(size) = self.fill().await? else { return Ok(None) };
        let bytes = self.buffer.get(..size).unwrap_or_default();
        let header = BatchHeader::peek(bytes)?;
        let records = if header.compression() == Some(ringmq_protocol::Compression::None) {
            bytes.get(ringmq_protocol::limits::BATCH_HEADER_SIZE..).unwrap_or_default()
        } else {
            self.decompressed = crate::compression::decompress(
                header.compression().unwrap_or(ringmq_protocol::Compression::None),
                bytes.get(ringmq_protocol::limits::BATCH_HEADER_SIZE..).unwrap_or_default(),
            )?;
            &self.decompressed
        };
        let from = std::mem::replace(&mut self.position, header.next_offset());
        self.batches += 1;
        Ok(Some(LocalBatch { bytes, header, records, from, partition: self.partition }))
    }

    /// The next record, owned; waits as [`LocalConsumer::next_batch`] does, then again, until
    /// one comes.
    ///
    /// # Errors
    ///
    /// As [`LocalConsumer::next_batch`].
    pub async fn next(&mut self) -> Result<ConsumerRecord, ClientError> {
        loop {
            if let Some(record) = self.records.pop_front() {
                return Ok(record);
            }
            if let Some(batch) = self.next_batch().await? {
                let records = batch.to_records()?;
                self.records.extend(records);
            }
        }
    }

    /// Commits the position to the consumer's group (see [`LocalConsumerBuilder::group`]), over
    /// the local socket.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidArgument`] without a group; the broker's refusal (a group with live
    /// members, a missing permission).
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let Some(group) = self.group.clone() else {
            return Err(ClientError::InvalidArgument(
                "commit needs a group: build the consumer with .group(name)".to_owned(),
            ));
        };
        let offsets = [PartitionOffset { partition: self.partition, offset: self.position() }];
        let request = Request::CommitOffsets(CommitOffsets {
            group: &group,
            topic: &self.topic,
            member_id: "",
            generation: 0,
            offsets: Entries::from_slice(&offsets),
        });
        self.connection.call(&request, self.timeout).await?;
        self.last_request = Instant::now();
        Ok(())
    }

    /// Reads the next batch at or after the position into the buffer: its size. Waits, reopens
    /// and skips as needed; `None` after `max_wait` with nothing new.
    async fn fill(&mut self) -> Result<Option<usize>, ClientError> {
        let deadline = Instant::now() + self.max_wait;
        let mut spin_until = Instant::now() + self.spin;
        let mut opened_here = 0u32;
        let mut pause = REOPEN_PAUSE;
        loop {
            if self
                .opened
                .as_ref()
                .is_some_and(|opened| opened.connection != self.connection.reconnects())
            {
                // Another call (a commit) reconnected: the broker that shared these files may be
                // gone.
                self.opened = None;
            }
            if self.opened.is_none() {
                if opened_here > 0 {
                    // Opened in this read already and found nothing to read: the page was closed
                    // or replaced again at once (a partition being deleted, a broker restarting).
                    // Pause, within the read's time, rather than ask in a tight loop.
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    tokio::time::sleep(pause.min(deadline - now)).await;
                    pause = (pause * 2).min(REOPEN_PAUSE_MAX);
                }
                opened_here += 1;
                self.open_at(self.position).await?;
            }
            if self.last_request.elapsed() >= KEEPALIVE {
                let answer = self.connection.call(&Request::Ping, self.timeout).await;
                self.last_request = Instant::now();
                if let Err(error) = answer {
                    // The broker went away (its page is no longer written): open again, on a
                    // new connection, from the position.
                    self.opened = None;
                    if !matches!(error, ClientError::Closed { .. } | ClientError::Io { .. }) {
                        return Err(error);
                    }
                    continue;
                }
            }
            let Some(opened) = &self.opened else { continue };
            let page = opened.page.words();
            let read = protocol::read_batch(
                page,
                opened.ring.words(),
                &opened.layout,
                &mut self.cursor,
                &mut self.buffer,
                opened.batch_size_max,
            );
            match read {
                Ok(Some(batch)) => {
                    self.high_watermark = self.high_watermark.max(batch.next_offset());
                    if batch.next_offset() <= self.position {
                        // Before the position (the chunk's start, after an open): skip it.
                        continue;
                    }
                    return Ok(Some(batch.as_bytes().len()));
                }
                Ok(None) => {
                    if protocol::is_closed(page)
                        || !protocol::is_current(opened.ring.words(), &opened.layout)
                    {
                        // The broker closed the partition (shutdown, deletion), or died and
                        // another broker opened the ring: ask again.
                        self.opened = None;
                        continue;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    if now < spin_until {
                        std::hint::spin_loop();
                        tokio::task::yield_now().await;
                        continue;
                    }
                    self.wait(deadline - now).await?;
                    spin_until = Instant::now() + self.spin;
                }
                Err(LocalReadError::Lapped { .. }) => {
                    // Ask the broker where the position now is: out of range, most likely.
                    self.opened = None;
                }
                Err(LocalReadError::Replaced { .. }) => {
                    // The page's broker died and another opened the ring: ask the one that runs.
                    self.opened = None;
                }
                Err(error) => {
                    return Err(ClientError::Broker {
                        code: ringmq_protocol::ErrorCode::CorruptBatch,
                        message: format!(
                            "local read of {}/{}: {error}",
                            self.topic, self.partition
                        ),
                    });
                }
            }
        }
    }

    /// Sleeps in a `LocalWait` until the partition holds data at the cursor (or `limit`). A
    /// connection that failed (the broker restarted) is replaced and the partition opened again.
    async fn wait(&mut self, limit: Duration) -> Result<(), ClientError> {
        let request = Request::LocalWait(Fetch {
            topic: &self.topic,
            partition: self.partition,
            offset: self.cursor.offset,
            max_bytes: 1,
            max_wait_ms: u32::try_from(limit.as_millis()).unwrap_or(u32::MAX).max(1),
            min_bytes: 1,
        });
        let timeout = self.timeout + limit;
        self.waits += 1;
        let answer = self.connection.call(&request, timeout).await;
        self.last_request = Instant::now();
        match answer {
            Ok((_, body)) => {
                let reply = LocalWaitReply::decode(&body)?;
                self.high_watermark = reply.next_offset;
                Ok(())
            }
            Err(ClientError::Closed { .. } | ClientError::Io { .. }) => {
                // The broker went away: the next read reconnects and opens the partition again.
                self.opened = None;
                Ok(())
            }
            Err(ClientError::OffsetOutOfRange { .. }) => {
                self.opened = None;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Opens the partition at `offset` and maps its files.
    async fn open_at(&mut self, offset: u64) -> Result<(), ClientError> {
        let (reply, opened) =
            match open(&mut self.connection, &self.topic, self.partition, offset, self.timeout)
                .await
            {
                // The connection was dead (a broker restart): once more, on a new one.
                Err(ClientError::Closed { .. } | ClientError::Io { .. }) => {
                    open(&mut self.connection, &self.topic, self.partition, offset, self.timeout)
                        .await?
                }
                result => result?,
            };
        self.last_request = Instant::now();
        self.cursor = Cursor { position: reply.position, offset: reply.offset, entry: reply.entry };
        self.high_watermark = reply.next_offset;
        if self.opened_once {
            self.reopened += 1;
        }
        self.opened_once = true;
        self.opened = Some(opened);
        Ok(())
    }
}

/// Sends a `LocalOpen` and maps the files that come with the answer.
async fn open(
    connection: &mut Connection,
    topic: &str,
    partition: u32,
    offset: u64,
    timeout: Duration,
) -> Result<(LocalOpenReply, Opened), ClientError> {
    let request = Request::LocalOpen(LocalOpen { topic, partition, offset });
    // Descriptors from an earlier, abandoned answer must not be taken for these.
    drop(connection.take_descriptors());
    let (_, body) = connection.call(&request, timeout).await?;
    let reply = LocalOpenReply::decode(&body)?;
    let mut descriptors = connection.take_descriptors().into_iter();
    let (Some(ring), Some(page), None) =
        (descriptors.next(), descriptors.next(), descriptors.next())
    else {
        return Err(ClientError::InvalidArgument(
            "the broker's LocalOpen answer did not bring the ring file and its cursor page (is this the local socket?)"
                .to_owned(),
        ));
    };
    let broker_uid = match connection.peer_uid() {
        Some(Ok(uid)) => uid,
        Some(Err(error)) => {
            return Err(ClientError::InvalidArgument(format!(
                "cannot tell which user the broker at the local socket runs as: {error}"
            )))
        }
        None => {
            return Err(ClientError::InvalidArgument(
                "same-host reading needs the broker's local socket, not a TCP connection"
                    .to_owned(),
            ))
        }
    };
    check_files(&ring, &page, broker_uid)?;
    let reconnects = connection.reconnects();
    let mapping_error = |what: &str, error: std::io::Error| {
        ClientError::InvalidArgument(format!("cannot map the partition's {what}: {error}"))
    };
    let ring = Mapped::map(ring).map_err(|error| mapping_error("ring file", error))?;
    let page = Mapped::map(page).map_err(|error| mapping_error("cursor page", error))?;
    let layout = PageLayout::read(page.words(), ring.words()).map_err(|error| {
        ClientError::InvalidArgument(format!("the partition's cursor page: {error}"))
    })?;
    Ok((
        reply,
        Opened { ring, page, layout, batch_size_max: reply.batch_size_max, connection: reconnects },
    ))
}

/// Checks the files a `LocalOpen` answer brought before they are mapped, so that neither can
/// shrink under the mapping (a load past a file's end would kill the reader with `SIGBUS`): the
/// ring must be what a broker's ring file is (a regular file with one link, of the user at the
/// other end of the socket as `SO_PEERCRED` reports it, writable by that user only), which only
/// that user can truncate; the cursor page must carry the seals against shrinking and growing.
/// What the reader trusts is the socket's path: the process listening there is the peer these
/// checks are made against, so the path belongs in a directory only the broker's user can write.
fn check_files(
    ring: &std::os::fd::OwnedFd,
    page: &std::os::fd::OwnedFd,
    broker_uid: u32,
) -> Result<(), ClientError> {
    use rustix::fs::{FileType, SealFlags};
    let refused = |what: String| {
        ClientError::InvalidArgument(format!("refusing to map the partition's files: {what}"))
    };
    let stat = rustix::fs::fstat(ring).map_err(|error| refused(format!("ring file: {error}")))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(refused("the ring file is not a regular file".to_owned()));
    }
    if stat.st_uid != broker_uid {
        return Err(refused(format!(
            "the ring file belongs to user {}, the broker runs as user {broker_uid}",
            stat.st_uid
        )));
    }
    if stat.st_nlink != 1 {
        return Err(refused(format!(
            "the ring file has {} links (a broker's ring has one)",
            stat.st_nlink
        )));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(refused(format!(
            "the ring file is writable by others (mode {:o})",
            stat.st_mode & 0o7777
        )));
    }
    let seals = rustix::fs::fcntl_get_seals(page)
        .map_err(|error| refused(format!("the cursor page is not a sealed memfd ({error})")))?;
    if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
        return Err(refused("the cursor page is not sealed against resizing".to_owned()));
    }
    Ok(())
}

/// The group's committed offset for the partition, if it has one.
async fn committed_offset(
    connection: &mut Connection,
    group: &str,
    topic: &str,
    partition: u32,
    timeout: Duration,
) -> Result<Option<u64>, ClientError> {
    let (_, body) =
        connection.call(&Request::FetchCommitted(GroupTopic { group, topic }), timeout).await?;
    let offsets = CommittedOffsets::decode(&body)?;
    Ok(offsets.offsets.iter().find(|entry| entry.partition == partition).map(|entry| entry.offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{MemfdFlags, SealFlags};
    use std::os::fd::OwnedFd;

    fn memfd(seals: SealFlags) -> OwnedFd {
        let fd = rustix::fs::memfd_create("ringmq-client-test", MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        if !seals.is_empty() {
            rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
        }
        fd
    }

    /// A regular file of this user in `dir`, with one link and mode 0600.
    fn regular_file(dir: &std::path::Path, name: &str) -> OwnedFd {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(dir.join(name))
            .unwrap();
        OwnedFd::from(file)
    }

    /// The files a broker hands a reader are checked before they are mapped: a ring that is not
    /// a regular file of the broker's user, or a page that could shrink, is refused by name.
    #[test]
    fn files_that_could_shrink_under_the_mapping_are_refused() {
        let uid = rustix::process::getuid().as_raw();
        let dir = std::env::temp_dir().join(format!("ringmq-client-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ring = regular_file(&dir, "ring");
        let sealed = memfd(SealFlags::SHRINK | SealFlags::GROW);
        check_files(&ring, &sealed, uid).unwrap();

        let refusal = |result: Result<(), ClientError>| result.unwrap_err().to_string();
        let error = refusal(check_files(&ring, &sealed, uid.wrapping_add(1)));
        assert!(error.contains("belongs to user"), "{error}");
        let error = refusal(check_files(&ring, &memfd(SealFlags::GROW), uid));
        assert!(error.contains("not sealed against resizing"), "{error}");
        // A plain file as the page: `F_GET_SEALS` fails on most filesystems, and on tmpfs it
        // answers without the seals; refused either way.
        let error = refusal(check_files(&ring, &regular_file(&dir, "page"), uid));
        assert!(error.contains("refusing to map") && error.contains("cursor page"), "{error}");
        let directory = OwnedFd::from(std::fs::File::open(&dir).unwrap());
        let error = refusal(check_files(&directory, &sealed, uid));
        assert!(error.contains("not a regular file"), "{error}");
        // Not what a broker's ring is: a second link, or writable by others.
        std::fs::hard_link(dir.join("ring"), dir.join("ring-link")).unwrap();
        let error = refusal(check_files(&ring, &sealed, uid));
        assert!(error.contains("2 links"), "{error}");
        std::fs::remove_file(dir.join("ring-link")).unwrap();
        rustix::fs::fchmod(&ring, rustix::fs::Mode::from_raw_mode(0o666)).unwrap();
        let error = refusal(check_files(&ring, &sealed, uid));
        assert!(error.contains("writable by others"), "{error}");
        // An unlinked file (or a memfd) is no broker's ring either.
        std::fs::remove_dir_all(&dir).unwrap();
        let error = refusal(check_files(&ring, &sealed, uid));
        assert!(error.contains("0 links"), "{error}");
        let error = refusal(check_files(&memfd(SealFlags::empty()), &sealed, uid));
        assert!(error.contains("0 links"), "{error}");
    }
}
