//! A TCP proxy between clients and the broker that cuts connections on purpose: every
//! `cut_every`-th response frame the broker sends back is dropped and both sides are closed. A
//! produce the broker has written then loses its acknowledgement, which is exactly when a retry
//! could write it twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use ringmq_protocol::limits::FRAME_HEADER_SIZE;
use ringmq_protocol::FrameHead;

pub(crate) struct Proxy {
    /// Where clients connect.
    pub(crate) address: String,
    upstream: Arc<Mutex<String>>,
    chunks: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`.
    pub(crate) async fn start(upstream: &str, cut_every: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let upstream = Arc::new(Mutex::new(upstream.to_owned()));
        let (chunks, cuts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = tokio::spawn({
            let (upstream, chunks, cuts) =
                (Arc::clone(&upstream), Arc::clone(&chunks), Arc::clone(&cuts));
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let target = upstream.lock().unwrap().clone();
                    let (chunks, cuts) = (Arc::clone(&chunks), Arc::clone(&cuts));
                    tokio::spawn(async move {
                        let Ok(broker) = TcpStream::connect(&target).await else { return };
                        forward(client, broker, cut_every, &chunks, &cuts).await;
                    });
                }
            }
        });
        Self { address, upstream, chunks, cuts, task }
    }

    /// Connections cut so far.
    pub(crate) fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    /// Response frames seen from the broker so far.
    pub(crate) fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::Relaxed)
    }

    /// Sends new connections to `upstream` (after a broker restart on another port).
    pub(crate) fn set_upstream(&self, upstream: &str) {
        *self.upstream.lock().unwrap() = upstream.to_owned();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    client: TcpStream,
    broker: TcpStream,
    cut_every: u64,
    chunks: &AtomicU64,
    cuts: &AtomicU64,
) {
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut broker_read, mut broker_write) = broker.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
    };
    let downstream = async {
        let mut pending: Vec<u8> = Vec::with_capacity(128 << 10);
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let read = match broker_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            pending.extend_from_slice(&buffer[..read]);
            // Forward whole frames, one at a time, so a cut always drops whole responses.
            while pending.len() >= FRAME_HEADER_SIZE {
                let head = FrameHead::decode(&pending[..FRAME_HEADER_SIZE], u32::MAX).unwrap();
                let size = FRAME_HEADER_SIZE + head.body_len();
                if pending.len() < size {
                    break;
                }
                let frame = chunks.fetch_add(1, Ordering::Relaxed) + 1;
                if frame.is_multiple_of(cut_every) {
                    cuts.fetch_add(1, Ordering::Relaxed);
                    return; // Drop the frame; both directions close below.
                }
                if client_write.write_all(&pending[..size]).await.is_err() {
                    return;
                }
                pending.drain(..size);
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
