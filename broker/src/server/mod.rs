//! The network side: accept loop, per-connection tasks, request handling.
//!
//! One task per connection reads frames into a pooled buffer, handles requests in order and
//! writes responses (see the `connection` module). The accept loop enforces the connection limit and, on
//! shutdown, stops accepting, lets connections finish their in-flight requests (up to the
//! shutdown timeout), then syncs every partition and writes clean-shutdown checkpoints.

mod connection;
mod request;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use ringmq_protocol::message::ErrorBody;
use ringmq_protocol::ErrorCode;

use crate::config::{self, Config};
use crate::groups::store::{GroupStore, StoreError};
use crate::groups::{Coordinator, GroupSettings};
use crate::log::{DataDir, StorageError};
use crate::metrics::{GroupLag, Metrics, PartitionGauges};
use crate::partition::{Partition, SyncPolicy};
use crate::pool::BufferPool;
use crate::topics::{TopicDefaults, TopicError, Topics};

/// Why the broker could not start or stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory could not be locked or opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A topic could not be opened or recovered.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The group state log could not be opened or replayed.
    #[error(transparent)]
    Groups(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The read buffer pool could not be built.
    #[error(transparent)]
    Pool(#[from] crate::pool::InvalidPool),
    /// A startup task failed.
    #[error("startup failed: {0}")]
    Startup(String),
}

/// Shared by every connection.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) topics: Arc<Topics>,
    pub(crate) groups: Arc<Coordinator>,
    pub(crate) pool: BufferPool,
    pub(crate) pool_available: Arc<Notify>,
    pub(crate) metrics: Arc<Metrics>,
}

/// A broker that has opened its data directory and bound its address, ready to serve.
#[derive(Debug)]
pub struct Broker {
    context: Arc<Context>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl Broker {
    /// Locks and opens the data directory (recovering every partition), builds the buffer pool,
    /// and binds the listen address.
    ///
    /// # Errors
    ///
    /// [`ServerError`] naming what failed.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let data_dir = config.data_dir.clone();
        let defaults = TopicDefaults {
            partition_count: config.partition_count_default,
            capacity: config.partition_capacity_default,
            batch_size_max: config.batch_size_max,
            prefault: config.prefault,
            capacity_max: config.partition_capacity_max,
            partition_count_max: config.partition_count_max,
            topic_count_max: config.topic_count_max,
        };
        let metrics = Arc::new(Metrics::new());
        let topic_metrics = Arc::clone(&metrics);
        let (group_capacity, sync, request_timeout) =
            (config.group_log_capacity, config.sync, config.request_timeout);
        let (topics, store) =
            tokio::task::spawn_blocking(move || -> Result<(Topics, GroupStore), ServerError> {
                let dir = DataDir::lock(&data_dir)?;
                let (store, replayed) = GroupStore::open(
                    &dir,
                    group_capacity,
                    defaults.prefault,
                    sync,
                    request_timeout,
                    topic_metrics.sync_histogram(),
                )?;
                tracing::info!(
                    records = replayed.records,
                    snapshots = replayed.snapshots,
                    committed_offsets = replayed.offsets,
                    "group state log replayed"
                );
                Ok((Topics::open(dir, defaults, topic_metrics)?, store))
            })
            .await
            .map_err(|error| ServerError::Startup(error.to_string()))??;
        let topics = Arc::new(topics);
        let groups = Arc::new(Coordinator::new(
            store,
            Arc::clone(&topics),
            GroupSettings {
                session_timeout_min: config.group_session_timeout_min,
                session_timeout_max: config.group_session_timeout_max,
            },
            Arc::clone(&metrics),
        ));
        groups.forget_missing_topics().await;
        let pool_available = Arc::new(Notify::new());
        let wake = Arc::clone(&pool_available);
        let buffer_size = config::read_buffer_size(config.frame_size_max);
        let buffer_count = usize::try_from(config.read_buffer_count)
            .expect("the read buffer count is at most 65 536");
        let pool =
            BufferPool::with_release_hook(buffer_size, buffer_count, move || wake.notify_one())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { address: config.listen, source })?;
        let metrics_listener = match config.metrics_address() {
            Some(address) => Some(
                crate::metrics::bind(address)
                    .await
                    .map_err(|source| ServerError::Bind { address, source })?,
            ),
            None => None,
        };
        let context = Arc::new(Context { config, topics, groups, pool, pool_available, metrics });
        Ok(Self { context, listener, metrics_listener })
    }

    /// The address of the metrics endpoint, if it is on.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    pub fn metrics_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.metrics_listener.as_ref().map(TcpListener::local_addr).transpose()
    }

    /// The address the broker listens on (the real port when configured with port 0).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The broker's topics (for in-process tests and tools).
    #[doc(hidden)]
    pub fn topics(&self) -> Arc<Topics> {
        Arc::clone(&self.context.topics)
    }

    /// The broker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.context.metrics)
    }

    /// Serves until `shutdown` completes, then stops gracefully.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Self { context, listener, metrics_listener } = self;
        let config = &context.config;
        let limit = Arc::new(Semaphore::new(config.connection_count_max as usize));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut background = JoinSet::new();
        if let SyncPolicy::Interval(interval) = config.sync {
            background.spawn(sync_every(Arc::clone(&context), interval, stop_rx.clone()));
        }
        if let Some(metrics_listener) = metrics_listener {
            let scraped = Arc::clone(&context);
            let render: crate::metrics::Render = Arc::new(move || {
                let context = Arc::clone(&scraped);
                Box::pin(async move { render_metrics(&context).await })
            });
            background.spawn(crate::metrics::serve_http(metrics_listener, render));
        }
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match Arc::clone(&limit).try_acquire_owned() {
                Ok(permit) => {
                    let context = Arc::clone(&context);
                    let stop = stop_rx.clone();
                    connections.spawn(async move {
                        connection::serve(stream, peer, context, stop).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    context.metrics.connection_refused();
                    tracing::warn!(%peer, limit = config.connection_count_max, "connection refused: at the connection limit");
                    connections.spawn(refuse(stream, config.connection_count_max));
                }
            }
        }
        drop(listener);
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(config.shutdown_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timeout: closing the remaining connections");
            connections.shutdown().await;
        }
        background.shutdown().await;
        let closing = Arc::clone(&context);
        let closed = tokio::task::spawn_blocking(move || {
            closing.topics.close_blocking();
            if let Err(error) = closing.groups.store().close_blocking() {
                tracing::error!(%error, "closing the group state log failed; it will recover by a full scan");
            }
        })
        .await;
        if let Err(error) = closed {
            tracing::error!(%error, "closing partitions failed");
        }
        tracing::info!("stopped");
    }
}

/// The metrics page: every partition's gauges, the pool's and the groups' lags, read now.
async fn render_metrics(context: &Context) -> String {
    let lags = context.groups.lags().await;
    let lags: Vec<GroupLag<'_>> = lags
        .iter()
        .map(|lag| GroupLag {
            group: &lag.key.group,
            topic: &lag.key.topic,
            partition: lag.key.partition,
            records: lag.records,
        })
        .collect();
    let topics = context.topics.all();
    let partitions: Vec<PartitionGauges<'_>> = topics
        .iter()
        .flat_map(|topic| topic.partitions().iter().map(move |partition| (topic, partition)))
        .map(|(topic, partition)| {
            let log = partition.log();
            PartitionGauges {
                topic: topic.name(),
                partition: partition.index(),
                capacity: log.capacity(),
                used_bytes: log.used_bytes(),
                wraps: log.published_end() / log.capacity().max(1),
                earliest_offset: log.earliest_offset(),
                next_offset: log.next_offset(),
                durable_offset: log.durable_offset(),
            }
        })
        .collect();
    context.metrics.render(&partitions, context.pool.stats(), &lags)
}

/// Answers a connection over the limit with `TooManyConnections` and closes it.
async fn refuse(stream: TcpStream, limit: u32) {
    let mut frame = Vec::with_capacity(128);
    let message = format!("the broker is at its limit of {limit} connections; try again later");
    ErrorBody { message: &message, earliest_offset: 0, next_offset: 0 }.encode_frame(
        0,
        ErrorCode::TooManyConnections,
        0,
        &mut frame,
    );
    let _ =
        tokio::time::timeout(Duration::from_secs(1), connection::write_all(&stream, &frame)).await;
}

/// The `interval` sync policy: sync every partition with unsynced data (the group state log
/// included), every interval.
async fn sync_every(context: Arc<Context>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let sync = |partition: &Arc<Partition>| {
            let end = partition.log().published_end();
            if end > partition.synced_position() {
                partition.request_sync(end);
            }
        };
        for topic in context.topics.all() {
            topic.partitions().iter().for_each(sync);
        }
        sync(context.groups.store().partition());
    }
}
