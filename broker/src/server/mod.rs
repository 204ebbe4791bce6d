//! The network side: accept loop, per-connection tasks, request handling.
//!
//! One task per connection reads frames into a pooled buffer, handles requests in order and
//! writes responses (see the `connection` module). The accept loop enforces the connection limit and, on
//! shutdown, stops accepting, lets connections finish their in-flight requests (up to the
//! shutdown timeout), then syncs every partition and writes clean-shutdown checkpoints.

mod connection;
mod local;
mod request;
mod response;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::admission::{Admission, Refused};

use ringmq_protocol::message::ErrorBody;
use ringmq_protocol::ErrorCode;

use crate::config::{self, Config};
use crate::core::{Core, OpenError};
use crate::kafka::{KafkaContext, KafkaSettings};
use crate::metrics::Metrics;
use crate::partition::SyncPolicy;
use crate::pool::BufferPool;
use crate::tls::{Tls, TlsError, TlsFiles};

/// Why the broker could not start or stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory, a topic or the group state log could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
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
    /// The TLS certificate, key or client CA file could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The local listener's socket could not be made.
    #[error("cannot listen on the local socket {}: {problem}", path.display())]
    LocalListen {
        /// The socket's path.
        path: std::path::PathBuf,
        /// What went wrong.
        problem: String,
    },
}

/// Shared by every connection.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) core: Arc<Core>,
    pub(crate) pool: BufferPool,
    pub(crate) pool_available: Arc<Notify>,
    /// TLS on the client listeners, if it is on.
    pub(crate) tls: Option<Arc<Tls>>,
}

/// A broker that has opened its data directory and bound its address, ready to serve.
#[derive(Debug)]
pub struct Broker {
    context: Arc<Context>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    kafka: Option<(TcpListener, Arc<KafkaContext>)>,
    local: Option<local::LocalListener>,
}

impl Broker {
    /// Locks and opens the data directory (recovering every partition), builds the buffer pool,
    /// and binds the listen address.
    ///
    /// # Errors
    ///
    /// [`ServerError`] naming what failed.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let metrics = Arc::new(Metrics::new());
        let core = Arc::new(Core::open(&config, metrics).await?);
        let pool_available = Arc::new(Notify::new());
        let wake = Arc::clone(&pool_available);
        let buffer_size = config::read_buffer_size(config.frame_size_max);
        let buffer_count = usize::try_from(config.read_buffer_count)
            .expect("the read buffer count is at most 65 536");
        let pool =
            BufferPool::with_release_hook(buffer_size, buffer_count, move || wake.notify_one())?;
        let tls = match config.tls_cert.as_os_str().is_empty() {
            true => None,
            false => {
                let client_ca = config.tls_client_ca.clone();
                let files = TlsFiles {
                    cert: config.tls_cert.clone(),
                    key: config.tls_key.clone(),
                    client_ca: (!client_ca.as_os_str().is_empty()).then_some(client_ca),
                };
                Some(Arc::new(Tls::load(files)?))
            }
        };
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
        let kafka = match config.kafka {
            false => None,
            true => {
                let address = config.kafka_listen;
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|source| ServerError::Bind { address, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| ServerError::Bind { address, source })?;
                let advertised_host = match config.kafka_advertised_host.as_str() {
                    "" => bound.ip().to_string(),
                    host => host.to_owned(),
                };
                let settings = KafkaSettings {
                    request_size_max: config.frame_size_max,
                    idle_timeout: config.idle_timeout,
                    frame_timeout: config.frame_timeout,
                    write_timeout: config.write_timeout,
                    request_timeout: config.request_timeout,
                    auto_create_topics: config.kafka_auto_create_topics,
                    advertised_host,
                    advertised_port: i32::from(bound.port()),
                    auth_required: config.auth == crate::config::AuthMode::Required,
                };
                let context = KafkaContext {
                    core: Arc::clone(&core),
                    pool: pool.clone(),
                    pool_available: Arc::clone(&pool_available),
                    settings,
                    tls: tls.clone(),
                };
                Some((listener, Arc::new(context)))
            }
        };
        let local = match config.local_listen_path() {
            Some(path) => Some(local::LocalListener::bind(path, config.local_listen_mode.0)?),
            None => None,
        };
        let context = Arc::new(Context { config, core, pool, pool_available, tls });
        Ok(Self { context, listener, metrics_listener, kafka, local })
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

    /// The address of the Kafka listener, if it is on.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    pub fn kafka_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.kafka.as_ref().map(|(listener, _)| listener.local_addr()).transpose()
    }

    /// The broker's topics (for in-process tests and tools).
    #[doc(hidden)]
    pub fn topics(&self) -> Arc<crate::topics::Topics> {
        self.context.core.topics()
    }

    /// The broker core (for in-process tests and benchmarks).
    #[doc(hidden)]
    pub fn core(&self) -> Arc<Core> {
        Arc::clone(&self.context.core)
    }

    /// Adds the first user (the superuser named by `RINGMQ_ROOT_USER`) if there are none yet;
    /// whether it did.
    ///
    /// # Errors
    ///
    /// A bad name or password, or the users file could not be written.
    pub fn bootstrap_user(
        &self,
        name: &str,
        password: &str,
    ) -> Result<bool, crate::auth::users::UsersError> {
        self.context.core.bootstrap_user(name, password)
    }

    /// Makes `principal` the first superuser if there is none yet; whether it did.
    ///
    /// # Errors
    ///
    /// An invalid principal, or the permissions file could not be written.
    pub fn bootstrap_superuser(
        &self,
        principal: &str,
    ) -> Result<bool, crate::auth::permissions::PermissionsError> {
        self.context.core.bootstrap_superuser(principal)
    }

    /// The client listeners' TLS configuration, if TLS is on: [`Tls::reload`] it on SIGHUP.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.context.tls.clone()
    }

    /// The broker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(self.context.core.metrics())
    }

    /// Serves until `shutdown` completes, then stops gracefully.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Self { context, listener, metrics_listener, kafka, local } = self;
        let config = &context.config;
        let admission =
            Admission::new(config.connection_count_max, config.connection_count_per_address_max);
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
                Box::pin(async move { context.core.render_metrics(context.pool.stats()).await })
            });
            background.spawn(crate::metrics::serve_http(metrics_listener, render));
        }
        if kafka.is_some() {
            // Kafka groups' deadlines (sessions, join and sync phases), ten times a second.
            let core = Arc::clone(&context.core);
            background.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    core.kafka_group_upkeep().await;
                }
            });
        }
        if let Some((kafka_listener, kafka_context)) = kafka {
            // With the connections: shutdown waits for it (and its connections) to finish.
            let stop = stop_rx.clone();
            connections.spawn(crate::kafka::serve(
                kafka_listener,
                kafka_context,
                Arc::clone(&admission),
                stop,
            ));
        }
        if let Some(local) = local {
            // With the connections, as the Kafka listener: shutdown waits for it to finish.
            let (context, admission, stop) =
                (Arc::clone(&context), Arc::clone(&admission), stop_rx.clone());
            connections.spawn(local.serve(context, admission, stop));
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
            match admission.admit(peer.ip()) {
                Ok(admitted) => {
                    let context = Arc::clone(&context);
                    let stop = stop_rx.clone();
                    connections.spawn(async move {
                        let tls = context.tls.as_deref();
                        match crate::tls::accept(stream, tls, context.config.frame_timeout).await {
                            Ok(stream) => connection::serve(stream, peer, context, stop).await,
                            Err(error) => {
                                context.core.metrics().tls_handshake_failed();
                                tracing::info!(%peer, %error, "TLS handshake failed");
                            }
                        }
                        drop(admitted);
                    });
                }
                Err(refused) => {
                    context.core.metrics().connection_refused();
                    tracing::warn!(%peer, reason = %refused, "connection refused");
                    // A TLS client could not read a plain answer: it is only closed.
                    if context.tls.is_none() {
                        connections.spawn(refuse(stream, refused));
                    }
                }
            }
        }
        drop(listener);
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        context.core.stop_creating();
        let drained = tokio::time::timeout(config.shutdown_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timeout: closing the remaining connections");
            connections.shutdown().await;
        }
        background.shutdown().await;
        let closing = Arc::clone(&context.core);
        let closed = tokio::task::spawn_blocking(move || closing.close_blocking()).await;
        if let Err(error) = closed {
            tracing::error!(%error, "closing partitions failed");
        }
        tracing::info!("stopped");
    }
}

/// Answers a connection over a limit with `TooManyConnections` and closes it.
async fn refuse(stream: TcpStream, refused: Refused) {
    let mut frame = Vec::with_capacity(128);
    let message = refused.to_string();
    ErrorBody { message: &message, earliest_offset: 0, next_offset: 0 }.encode_frame(
        0,
        ErrorCode::TooManyConnections,
        0,
        &mut frame,
    );
    let mut stream = crate::stream::Stream::Plain(stream);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
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
        context.core.sync_all();
    }
}
