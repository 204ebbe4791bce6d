//! Connections between the nodes of a cluster: one TCP connection per node pair, shared by every
//! Raft group, requests and answers of both directions multiplexed on it ([`super::wire`]).
//!
//! The node with the lower id dials, the other accepts; a dialer whose connection drops dials
//! again (100 ms, doubling to 2 s). Each connection has one writer task that drains every frame
//! queued for the peer into one vectored write, so the heartbeats many groups send within a tick
//! leave in one system call, and one reader task that answers requests through the group they
//! name and hands answers to the request waiting for them.

use std::collections::{BTreeMap, HashMap};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::wire::{self, Header, Hello, Kind, Outgoing, WireError, HEADER_SIZE};

/// Frames queued for one peer before a sender waits.
const QUEUE: usize = 4096;
/// First wait before a dialer dials again; it doubles up to [`REDIAL_MAX`].
const REDIAL_MIN: Duration = Duration::from_millis(100);
const REDIAL_MAX: Duration = Duration::from_secs(2);
/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many bytes go into one vectored write.
const WRITE_BATCH: usize = 1 << 20;

/// A received frame: its header and its body as one buffer.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) header: Header,
    pub(crate) body: Bytes,
}

/// What answers a peer's requests for one group (its Raft, in `super::network`).
pub(crate) trait Handler: Send + Sync + 'static {
    /// The answer's body to `frame`, a request of this group, or why it was refused.
    fn serve(&self, frame: Frame) -> BoxFuture<'_, Result<Vec<Bytes>, String>>;
}

/// A boxed future of a [`Handler`] (one per request frame, not per entry).
pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Why a request to a peer got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No connection to the peer (it is down, or still being dialled).
    #[error("no connection to node {node} ({addr})")]
    Unreachable {
        /// The peer.
        node: u64,
        /// Its cluster address.
        addr: String,
    },
    /// The connection closed before the answer came.
    #[error("the connection to node {node} closed before it answered")]
    Closed {
        /// The peer.
        node: u64,
    },
    /// No answer within the request's time.
    #[error("node {node} did not answer within {after:?}")]
    Timeout {
        /// The peer.
        node: u64,
        /// The request's time.
        after: Duration,
    },
    /// The peer answered that no group there took the request.
    #[error("node {node} refused it: {reason}")]
    Refused {
        /// The peer.
        node: u64,
        /// Its message.
        reason: String,
    },
}

/// Settings of the cluster transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id.
    pub node: u64,
    /// The cluster's name (peers of another name are refused).
    pub cluster: String,
    /// Every node's cluster address, this node's included.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// The largest frame body a peer may send.
    pub frame_max: u32,
}

/// A live connection to one peer.
#[derive(Debug)]
struct Link {
    /// Frames to write.
    frames: mpsc::Sender<Outgoing>,
    /// Requests sent on this connection, waiting for their answers.
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Frame>>>>,
    /// Which connection this is (a newer one replaces it).
    generation: u64,
}

struct Inner {
    config: TransportConfig,
    links: Mutex<HashMap<u64, Link>>,
    groups: RwLock<HashMap<u64, Arc<dyn Handler>>>,
    next_id: AtomicU64,
    next_generation: AtomicU64,
    /// Set when the transport shuts down.
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Transport")
            .field("config", &self.config)
            .field("links", &self.links)
            .field("groups", &groups)
            .finish_non_exhaustive()
    }
}

/// The cluster transport of one node (cheap to clone).
#[derive(Debug, Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// The transport's tasks; dropping it does not stop them, [`TransportTasks::shutdown`] does.
#[derive(Debug)]
pub struct TransportTasks {
    transport: Transport,
    tasks: JoinSet<()>,
}

impl TransportTasks {
    /// Closes the listener and every connection and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        self.transport.inner.stop.send_replace(true);
        self.transport.inner.links.lock().unwrap_or_else(PoisonError::into_inner).clear();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Transport {
    /// Starts the transport on `listener` (bound to this node's cluster address): accepts the
    /// peers of lower ids and dials those of higher ids.
    pub fn start(config: TransportConfig, listener: TcpListener) -> (Self, TransportTasks) {
        let (stop, _) = watch::channel(false);
        let transport = Self {
            inner: Arc::new(Inner {
                config,
                links: Mutex::new(HashMap::new()),
                groups: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                next_generation: AtomicU64::new(1),
                stop,
            }),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(transport.clone().accept(listener));
        let node = transport.inner.config.node;
        for (&peer, &addr) in transport.inner.config.peers.range(node + 1..) {
            tasks.spawn(transport.clone().dial(peer, addr));
        }
        (transport.clone(), TransportTasks { transport, tasks })
    }

    /// This node's id.
    pub fn node(&self) -> u64 {
        self.inner.config.node
    }

    /// Routes the requests of `group` to `handler`.
    pub(crate) fn add_group(&self, group: u64, handler: Arc<dyn Handler>) {
        self.inner.groups.write().unwrap_or_else(PoisonError::into_inner).insert(group, handler);
    }

    /// Stops routing to `group`.
    pub fn remove_group(&self, group: u64) {
        self.inner.groups.write().unwrap_or_else(PoisonError::into_inner).remove(&group);
    }

    fn addr_of(&self, node: u64) -> String {
        self.inner
            .config
            .peers
            .get(&node)
            .map_or_else(|| "no address".to_owned(), ToString::to_string)
    }

    /// Sends a request to `node` and waits at most `timeout` for its answer.
    pub(crate) async fn call(
        &self,
        node: u64,
        group: u64,
        kind: Kind,
        body: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<Frame, CallError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        let frames = {
            let links = self.inner.links.lock().unwrap_or_else(PoisonError::into_inner);
            let link = links
                .get(&node)
                .ok_or_else(|| CallError::Unreachable { node, addr: self.addr_of(node) })?;
            link.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, answer);
            link.frames.clone()
        };
        let frame = Outgoing::new(kind, false, group, id, body);
        if frames.send(frame).await.is_err() {
            return Err(CallError::Closed { node });
        }
        let frame = match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) => return Err(CallError::Closed { node }),
            Err(_) => {
                self.forget(node, id);
                return Err(CallError::Timeout { node, after: timeout });
            }
        };
        if frame.header.kind == Kind::Failure {
            let reason = String::from_utf8_lossy(&frame.body).into_owned();
            return Err(CallError::Refused { node, reason });
        }
        Ok(frame)
    }

    /// Drops the wait for request `id` to `node` (it timed out).
    fn forget(&self, node: u64, id: u64) {
        let links = self.inner.links.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = links.get(&node) {
            link.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        }
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Accepts connections from the peers of lower ids.
    async fn accept(self, listener: TcpListener) {
        let mut stop = self.stopped();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|&stopped| stopped) => return,
            };
            match accepted {
                Ok((stream, from)) => {
                    let transport = self.clone();
                    tokio::spawn(async move {
                        if let Err(error) = transport.greet_accepted(stream).await {
                            tracing::warn!(%from, "cluster connection refused: {error}");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!("cluster listener: {error}");
                    tokio::time::sleep(REDIAL_MIN).await;
                }
            }
        }
    }

    async fn greet_accepted(self, mut stream: TcpStream) -> Result<(), String> {
        stream.set_nodelay(true).map_err(|error| error.to_string())?;
        let hello = tokio::time::timeout(
            HELLO_TIMEOUT,
            read_hello(&mut stream, self.inner.config.frame_max),
        )
        .await
        .map_err(|_| "no hello within 5 s".to_owned())??;
        let config = &self.inner.config;
        if hello.cluster != config.cluster {
            return Err(format!(
                "node {} is in cluster {:?}, this node in {:?}",
                hello.node, hello.cluster, config.cluster
            ));
        }
        if !config.peers.contains_key(&hello.node) || hello.node >= config.node {
            return Err(format!(
                "node {} is not a peer that dials node {} (peers dial the nodes of higher ids)",
                hello.node, config.node
            ));
        }
        write_hello(&mut stream, config).await.map_err(|error| error.to_string())?;
        tracing::info!(peer = hello.node, "cluster connection accepted");
        self.run_link(hello.node, stream).await;
        Ok(())
    }

    /// Dials `peer` and keeps a connection to it while the transport runs.
    async fn dial(self, peer: u64, addr: SocketAddr) {
        let mut stop = self.stopped();
        let mut wait = REDIAL_MIN;
        loop {
            let attempt = async {
                let mut stream =
                    TcpStream::connect(addr).await.map_err(|error| error.to_string())?;
                stream.set_nodelay(true).map_err(|error| error.to_string())?;
                write_hello(&mut stream, &self.inner.config)
                    .await
                    .map_err(|error| error.to_string())?;
                let hello = tokio::time::timeout(
                    HELLO_TIMEOUT,
                    read_hello(&mut stream, self.inner.config.frame_max),
                )
                .await
                .map_err(|_| "no hello within 5 s".to_owned())??;
                if hello.node != peer || hello.cluster != self.inner.config.cluster {
                    return Err(format!(
                        "{addr} is node {} of cluster {:?}, not node {peer} of {:?}",
                        hello.node, hello.cluster, self.inner.config.cluster
                    ));
                }
                Ok(stream)
            };
            let connected = tokio::select! {
                connected = attempt => connected,
                _ = stop.wait_for(|&stopped| stopped) => return,
            };
            match connected {
                Ok(stream) => {
                    tracing::info!(peer, %addr, "cluster connection up");
                    wait = REDIAL_MIN;
                    tokio::select! {
                        () = self.clone().run_link(peer, stream) => {}
                        _ = stop.wait_for(|&stopped| stopped) => return,
                    }
                    tracing::info!(peer, %addr, "cluster connection down");
                }
                Err(error) => tracing::debug!(peer, %addr, "dialing: {error}"),
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|&stopped| stopped) => return,
            }
            wait = (wait * 2).min(REDIAL_MAX);
        }
    }

    /// Runs one connection to `peer` until it fails or a newer one replaces it.
    async fn run_link(self, peer: u64, stream: TcpStream) {
        let (read, write) = stream.into_split();
        let (frames, queued) = mpsc::channel(QUEUE);
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let link = Link { frames: frames.clone(), pending: Arc::clone(&pending), generation };
        self.inner.links.lock().unwrap_or_else(PoisonError::into_inner).insert(peer, link);
        let mut stop = self.stopped();
        tokio::select! {
            result = write_frames(write, queued) => {
                if let Err(error) = result {
                    tracing::debug!(peer, "cluster connection: writing: {error}");
                }
            }
            result = self.read_frames(peer, read, frames, &pending) => {
                if let Err(error) = result {
                    tracing::warn!(peer, "cluster connection: {error}");
                }
            }
            _ = stop.wait_for(|&stopped| stopped) => {}
        }
        let mut links = self.inner.links.lock().unwrap_or_else(PoisonError::into_inner);
        if links.get(&peer).is_some_and(|link| link.generation == generation) {
            links.remove(&peer);
        }
        // Requests still waiting on this connection fail now (their senders drop).
        pending.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    async fn read_frames(
        &self,
        peer: u64,
        mut read: OwnedReadHalf,
        frames: mpsc::Sender<Outgoing>,
        pending: &Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    ) -> Result<(), String> {
        loop {
            let frame = match read_frame(&mut read, self.inner.config.frame_max).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(error) => return Err(error),
            };
            if frame.header.response || frame.header.kind == Kind::Failure {
                let waiting =
                    pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&frame.header.id);
                // None: the request timed out meanwhile.
                if let Some(waiting) = waiting {
                    let _ = waiting.send(frame);
                }
                continue;
            }
            let handler = self
                .inner
                .groups
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&frame.header.group)
                .cloned();
            let frames = frames.clone();
            tokio::spawn(async move {
                let header = frame.header;
                let answer = match handler {
                    Some(handler) => handler.serve(frame).await,
                    None => Err(format!("node has no group {}", header.group)),
                };
                let outgoing = match answer {
                    Ok(body) => Outgoing::new(header.kind, true, header.group, header.id, body),
                    Err(reason) => {
                        tracing::debug!(
                            peer,
                            group = header.group,
                            "refused a {:?}: {reason}",
                            header.kind
                        );
                        Outgoing::new(
                            Kind::Failure,
                            true,
                            header.group,
                            header.id,
                            vec![Bytes::from(reason)],
                        )
                    }
                };
                let _ = frames.send(outgoing).await;
            });
        }
    }
}

async fn write_hello(stream: &mut TcpStream, config: &TransportConfig) -> std::io::Result<()> {
    let hello = Hello { node: config.node, cluster: config.cluster.clone() };
    let frame = Outgoing::new(Kind::Hello, false, 0, 0, vec![wire::json(&hello)]);
    write_all(stream, &[frame]).await
}

async fn read_hello(stream: &mut TcpStream, frame_max: u32) -> Result<Hello, String> {
    let frame =
        read_frame(stream, frame_max).await?.ok_or_else(|| "closed before its hello".to_owned())?;
    if frame.header.kind != Kind::Hello {
        return Err(format!("a {:?} frame before the hello", frame.header.kind));
    }
    wire::from_json(Kind::Hello, &frame.body).map_err(|error| error.to_string())
}

/// Reads one frame; `None` at a clean end of stream between frames.
async fn read_frame<R: AsyncReadExt + Unpin>(
    read: &mut R,
    frame_max: u32,
) -> Result<Option<Frame>, String> {
    let mut head = [0; HEADER_SIZE];
    match read.read_exact(&mut head).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.to_string()),
    }
    let header = Header::parse(&head, frame_max).map_err(|error: WireError| error.to_string())?;
    let mut body = wire::body_buffer(header.size);
    read.read_exact(&mut body)
        .await
        .map_err(|error| format!("reading a {}-byte body: {error}", header.size))?;
    Ok(Some(Frame { header, body: body.freeze() }))
}

/// Writes queued frames, as many as are queued (up to [`WRITE_BATCH`] bytes) per write.
async fn write_frames(
    mut write: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Outgoing>,
) -> std::io::Result<()> {
    let mut round = Vec::new();
    while let Some(first) = queued.recv().await {
        let mut bytes = first.len();
        round.push(first);
        while bytes < WRITE_BATCH {
            match queued.try_recv() {
                Ok(frame) => {
                    bytes += frame.len();
                    round.push(frame);
                }
                Err(_) => break,
            }
        }
        write_all(&mut write, &round).await?;
        round.clear();
    }
    Ok(())
}

/// Writes `frames` with vectored writes until every byte is out.
async fn write_all<W: AsyncWrite + Unpin>(
    write: &mut W,
    frames: &[Outgoing],
) -> std::io::Result<()> {
    let mut pieces: Vec<&[u8]> = Vec::with_capacity(frames.len() * 3);
    for frame in frames {
        pieces.push(&frame.header);
        pieces.extend(frame.body.iter().map(|piece| &piece[..]).filter(|piece| !piece.is_empty()));
    }
    let mut first = 0;
    let mut skip = 0;
    while first < pieces.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&pieces[first][skip..]))
            .chain(pieces[first + 1..].iter().take(1023).map(|piece| IoSlice::new(piece)))
            .collect();
        let mut written = write.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let left = pieces[first].len() - skip;
            if written >= left {
                written -= left;
                first += 1;
                skip = 0;
            } else {
                skip += written;
                written = 0;
            }
        }
    }
    write.flush().await
}
