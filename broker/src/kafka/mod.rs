//! The Kafka listener: Kafka's wire protocol in front of the broker core, so Kafka clients and
//! tools (librdkafka and kcat, confluent-kafka, kafka-python, the Java client) work unmodified.
//!
//! A connection reads one request at a time (a 4-byte big-endian size, then the request) into a
//! pooled buffer, checks its body against the API's schema ([`guard`]), decodes it with the
//! `kafka-protocol` crate, calls the core and writes the response; requests of one connection are
//! answered in order, as Kafka's broker does. Record batches are Kafka's v2 batches, which are
//! ringmq's own: a produced batch is a slice of the pooled buffer, validated in place and copied
//! once into the ring; a fetch response is written with one vectored write, its batches straight
//! from the mapped ring ([`fetch`]). Every other response is encoded by the crate.
//!
//! Errors: a request whose size is over the frame limit, or whose header or body does not decode,
//! closes the connection with one log line naming the peer and the reason (the stream cannot be
//! trusted after it, and Kafka's broker does the same); an API or version this listener does not
//! serve closes it too, except `ApiVersions`, which is answered at version 0 with
//! `UNSUPPORTED_VERSION` and the versions served (KIP-511). Domain errors map to the Kafka code a
//! client acts on in one table ([`codes`]).

mod acls;
mod admin;
mod codes;
mod fetch;
mod groups;
mod guard;
mod quotas;
mod sasl;
mod wire;

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::stream::Stream;
use tokio::sync::{watch, Notify};

use crate::admission::Admission;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::core::{Caller, Core};
use crate::pool::{BufferPool, PooledBuffer};

/// The APIs served and their version ranges (what `ApiVersions` answers).
pub(crate) const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 4),
    (ApiKey::DeleteTopics, 1, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 2),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 3),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    // Version 0 is listed because librdkafka looks for it before it uses version 1 with
    // SaslAuthenticate; a v0 handshake (SASL tokens without Kafka framing after it) is answered
    // UNSUPPORTED_VERSION.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
];

/// The id of this broker in Kafka's metadata (a single node).
pub(crate) const NODE_ID: i32 = 0;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub(crate) struct KafkaSettings {
    /// Largest request accepted, bytes (after the size prefix).
    pub(crate) request_size_max: u32,
    pub(crate) idle_timeout: Duration,
    pub(crate) frame_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) auto_create_topics: bool,
    /// Host and port clients are told to connect to.
    pub(crate) advertised_host: String,
    pub(crate) advertised_port: i32,
    /// Whether a client must log in (or present a client certificate) before anything else.
    pub(crate) auth_required: bool,
}

/// What every Kafka connection shares.
#[derive(Debug)]
pub(crate) struct KafkaContext {
    pub(crate) core: Arc<Core>,
    pub(crate) pool: BufferPool,
    pub(crate) pool_available: Arc<Notify>,
    pub(crate) settings: KafkaSettings,
    /// TLS on the listener, if it is on (the native listener's certificate).
    pub(crate) tls: Option<Arc<crate::tls::Tls>>,
}

/// Accepts Kafka connections until `stop` turns true; the connection limits are shared with the
/// native listener.
pub(crate) async fn serve(
    listener: TcpListener,
    context: Arc<KafkaContext>,
    admission: Arc<Admission>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "kafka accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let admitted = match admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refused) => {
                // Kafka has no answer before a request: the connection is closed, and the
                // client retries with its backoff.
                context.core.metrics().connection_refused();
                tracing::warn!(%peer, protocol = "kafka", reason = %refused, "connection refused");
                continue;
            }
        };
        let context = Arc::clone(&context);
        let stop = stop.clone();
        connections.spawn(async move {
            let tls = context.tls.as_deref();
            let stream =
                match crate::tls::accept(stream, tls, context.settings.frame_timeout).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        context.core.metrics().tls_handshake_failed();
                        tracing::info!(%peer, protocol = "kafka", %error, "TLS handshake failed");
                        return;
                    }
                };
            context.core.metrics().connection_opened();
            match stream.certificate_subject() {
                Some(subject) => {
                    tracing::info!(%peer, protocol = "kafka", principal = %subject, "connection opened");
                }
                None => tracing::info!(%peer, protocol = "kafka", tls = tls.is_some(), "connection opened"),
            }
            let session = match stream.certificate_subject() {
                Some(subject) => sasl::Session::Authenticated(Caller::authenticated(&subject)),
                None => sasl::Session::Anonymous,
            };
            let seat = match context.core.seat(&session.caller()) {
                Ok(seat) => seat,
                Err(refused) => {
                    context.core.metrics().connection_refused();
                    tracing::warn!(%peer, protocol = "kafka", reason = %refused, "connection refused");
                    crate::metrics::Metrics::add(&context.core.metrics().connections_closed, 1);
                    return;
                }
            };
            let tls = matches!(stream, Stream::Tls(_));
            let mut connection = Connection {
                stream,
                peer,
                context: &context,
                stop,
                session,
                tls,
                throttled_until: None,
                seat,
                anonymous: Caller::anonymous(),
            };
            let reason = connection.run().await;
            crate::metrics::Metrics::add(&context.core.metrics().connections_closed, 1);
            tracing::info!(%peer, protocol = "kafka", %reason, "connection closed");
            drop(admitted);
        });
    }
    // The accept loop stops first; connections finish the request they are on.
    while connections.join_next().await.is_some() {}
}

/// A request frame in a pooled buffer, shared as `Bytes` so decoded fields (record batches
/// included) are slices of it, not copies.
struct Frame {
    buffer: PooledBuffer,
    len: usize,
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

/// A decoded request: its header and body.
pub(crate) struct Request {
    pub(crate) api: ApiKey,
    pub(crate) version: i16,
    /// The client's id (a slice of the request frame: no copy).
    pub(crate) client_id: kafka_protocol::protocol::StrBytes,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Who the request comes from.
    pub(crate) caller: Caller,
    /// How long the connection must wait before its next request (a quota's wait).
    pub(crate) throttle: Throttle,
}

/// A quota's wait for a connection, set by the handlers of a request (nanoseconds).
#[derive(Debug, Default)]
pub(crate) struct Throttle(std::sync::atomic::AtomicU64);

impl Throttle {
    /// Makes the wait at least `wait`.
    pub(crate) fn hold(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_max(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// The wait.
    pub(crate) fn wait(&self) -> Duration {
        Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The wait as Kafka's `throttle_time_ms`.
    pub(crate) fn millis(&self) -> i32 {
        i32::try_from(self.wait().as_millis()).unwrap_or(i32::MAX)
    }
}

impl Request {
    /// The client's IP address, as Kafka names a member's host.
    pub(crate) fn client_host(&self) -> String {
        self.peer.ip().to_string()
    }
}

/// What a handler answers.
pub(crate) enum Answer {
    /// No response (a produce with `acks = 0`).
    Nothing,
    /// A response body encoded by the crate.
    Body(BytesMut),
    /// A fetch response, written from the mapped ring.
    Fetch(fetch::FetchAnswer),
}

struct Connection<'c> {
    stream: Stream,
    peer: SocketAddr,
    context: &'c KafkaContext,
    stop: watch::Receiver<bool>,
    session: sasl::Session,
    tls: bool,
    /// Until when the next request waits: the principal is over a quota.
    throttled_until: Option<Instant>,
    /// The connection counted against its principal's connection limit.
    seat: Option<crate::core::Seat>,
    /// Who its requests come from before a login (or on a broker without authentication).
    anonymous: Caller,
}

impl Connection<'_> {
    async fn run(&mut self) -> String {
        loop {
            if let Some(until) = self.throttled_until.take() {
                // Over a quota: the answer went out; the next request waits (KIP-219's muting).
                tokio::select! {
                    _ = self.stop.changed() => return "broker shutting down".to_owned(),
                    () = tokio::time::sleep_until(until) => {}
                }
            }
            let settings = &self.context.settings;
            let mut size = [0u8; 4];
            let read = tokio::select! {
                _ = self.stop.changed() => return "broker shutting down".to_owned(),
                read = tokio::time::timeout(settings.idle_timeout, self.stream.read_exact(&mut size)) => read,
            };
            match read {
                Err(_) => return "idle timeout".to_owned(),
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return "closed by the client".to_owned()
                }
                Ok(Err(error)) => return error.to_string(),
                Ok(Ok(_)) => {}
            }
            let size = i32::from_be_bytes(size);
            let limit = settings.request_size_max;
            let Some(size) =
                usize::try_from(size).ok().filter(|size| (8..=limit as usize).contains(size))
            else {
                self.context.core.metrics().error(ringmq_protocol::ErrorCode::FrameTooLarge);
                tracing::warn!(peer = %self.peer, size, limit, "kafka request of a size outside 8 to the limit; closing the connection");
                return format!("request of {size} bytes (the limit is {limit})");
            };
            let frame = match self.read_frame(size).await {
                Ok(frame) => frame,
                Err(reason) => return reason,
            };
            match self.handle(frame).await {
                Ok(()) => {}
                Err(reason) => return reason,
            }
        }
    }

    /// Reads a request of `size` bytes into a pooled buffer, within the frame timeout.
    async fn read_frame(&mut self, size: usize) -> Result<Bytes, String> {
        let context = self.context;
        let deadline = Instant::now() + context.settings.request_timeout;
        let mut buffer = loop {
            let available = context.pool_available.notified();
            match context.pool.try_acquire() {
                Ok(buffer) => break buffer,
                Err(exhausted) => {
                    if tokio::time::timeout_at(deadline, available).await.is_err() {
                        return Err(format!("no read buffer became free: {exhausted}"));
                    }
                }
            }
        };
        if size > buffer.len() {
            return Err(format!("request of {size} bytes is larger than a read buffer"));
        }
        let read = tokio::time::timeout(
            context.settings.frame_timeout,
            self.stream.read_exact(&mut buffer[..size]),
        )
        .await;
        match read {
            Err(_) => Err("a request did not arrive whole within the frame timeout".to_owned()),
            Ok(Err(error)) => Err(error.to_string()),
            Ok(Ok(_)) => Ok(Bytes::from_owner(Frame { buffer, len: size })),
        }
    }

    /// Decodes one request, handles it and writes its answer. `Err` closes the connection.
    async fn handle(&mut self, frame: Bytes) -> Result<(), String> {
        let peer = self.peer;
        let parsed = parse(frame).map_err(|reason| {
            tracing::warn!(%peer, %reason, "malformed kafka request; closing the connection");
            reason
        })?;
        let (correlation_id, api, version, header, body) = match parsed {
            Parsed::Request { correlation_id, api, version, header, body } => {
                (correlation_id, api, version, header, body)
            }
            Parsed::UnsupportedApiVersions { correlation_id } => {
                // KIP-511: a v0 body with a v0 header, saying which versions are served.
                let body = admin::api_versions(
                    kafka_protocol::error::ResponseError::UnsupportedVersion.code(),
                );
                return self.write_body(correlation_id, ApiKey::ApiVersions, 0, body?).await;
            }
        };
        let request = Request {
            api,
            version,
            client_id: header.client_id.unwrap_or_default(),
            peer: self.peer,
            caller: match &self.session {
                sasl::Session::Authenticated(caller) => caller.clone(),
                // One anonymous caller per connection, so its quota usage is looked up once.
                _ => self.anonymous.clone(),
            },
            throttle: Throttle::default(),
        };
        let before_login =
            !matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
        if before_login && self.context.settings.auth_required && !self.session.is_authenticated() {
            tracing::warn!(%peer, api = ?api, "kafka request before authentication; closing the connection");
            self.context.core.metrics().authentication_failed();
            return Err(format!("{api:?} before authentication"));
        }
        if let RequestKind::SaslAuthenticate(body) = &body {
            let answered =
                sasl::authenticate(self.context, &mut self.session, &request, body).await?;
            if answered.seat.is_some() {
                self.seat = answered.seat;
            }
            self.write_body(correlation_id, api, version, answered.body).await?;
            return answered.close.map_or(Ok(()), Err);
        }
        let answer = self.dispatch(&request, body).await?;
        let throttle = request.throttle.wait();
        if !throttle.is_zero() {
            self.throttled_until = Some(Instant::now() + throttle);
        }
        match answer {
            Answer::Nothing => Ok(()),
            Answer::Body(body) => self.write_body(correlation_id, api, version, body).await,
            Answer::Fetch(answer) => {
                let written = fetch::write(
                    &mut self.stream,
                    (correlation_id, api, version),
                    answer,
                    self.context,
                    self.context.settings.write_timeout,
                )
                .await;
                written.map_err(|error| error.to_string())
            }
        }
    }

    async fn dispatch(&mut self, request: &Request, body: RequestKind) -> Result<Answer, String> {
        let context = self.context;
        let version = request.version;
        // `Err` closes the connection: a response that did not encode (logged where it failed)
        // or a held group request the broker's shutdown ended.
        let encode = |result: Result<BytesMut, String>| result.map(Answer::Body);
        match body {
            RequestKind::ApiVersions(_) => encode(admin::api_versions_at(version)),
            RequestKind::SaslHandshake(body) => {
                encode(sasl::handshake(&mut self.session, &body, self.tls, version))
            }
            RequestKind::Metadata(body) => encode(admin::metadata(context, request, &body).await),
            RequestKind::Produce(body) => admin::produce(context, request, body).await,
            RequestKind::Fetch(body) => Ok(fetch::fetch(context, request, body).await),
            RequestKind::ListOffsets(body) => encode(admin::list_offsets(context, request, &body)),
            RequestKind::FindCoordinator(body) => {
                encode(admin::find_coordinator(context, request, &body))
            }
            RequestKind::InitProducerId(body) => {
                encode(admin::init_producer_id(context, request, &body).await)
            }
            RequestKind::CreateTopics(body) => {
                encode(admin::create_topics(context, request, body).await)
            }
            RequestKind::DeleteTopics(body) => {
                encode(admin::delete_topics(context, request, &body).await)
            }
            RequestKind::DescribeConfigs(body) => {
                encode(admin::describe_configs(context, request, &body))
            }
            RequestKind::DescribeAcls(body) => encode(acls::describe(context, request, &body)),
            RequestKind::CreateAcls(body) => encode(acls::create(context, request, &body).await),
            RequestKind::DeleteAcls(body) => encode(acls::delete(context, request, &body).await),
            RequestKind::DescribeClientQuotas(body) => {
                encode(quotas::describe(context, request, &body))
            }
            RequestKind::AlterClientQuotas(body) => {
                encode(quotas::alter(context, request, &body).await)
            }
            RequestKind::JoinGroup(body) => {
                encode(groups::join_group(context, request, body, &mut self.stop).await)
            }
            RequestKind::SyncGroup(body) => {
                encode(groups::sync_group(context, request, body, &mut self.stop).await)
            }
            RequestKind::Heartbeat(body) => {
                encode(groups::heartbeat(context, request, &body).await)
            }
            RequestKind::LeaveGroup(body) => {
                encode(groups::leave_group(context, request, &body).await)
            }
            RequestKind::OffsetCommit(body) => {
                encode(groups::offset_commit(context, request, &body).await)
            }
            RequestKind::OffsetFetch(body) => {
                encode(groups::offset_fetch(context, request, &body).await)
            }
            RequestKind::ListGroups(body) => {
                encode(groups::list_groups(context, request, &body).await)
            }
            RequestKind::DescribeGroups(body) => {
                encode(groups::describe_groups(context, request, &body).await)
            }
            _ => Err(format!("{:?} is not served by this broker", request.api)),
        }
    }

    async fn write_body(
        &mut self,
        correlation_id: i32,
        api: ApiKey,
        version: i16,
        body: BytesMut,
    ) -> Result<(), String> {
        let head = ResponseHead::new(correlation_id, api, version, body.len())?;
        let mut slices = [IoSlice::new(head.bytes()), IoSlice::new(&body)];
        let write = self.stream.write_all_vectored(&mut slices);
        match tokio::time::timeout(self.context.settings.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => {
                Err("the client did not read its response within the write timeout".to_owned())
            }
        }
    }
}

/// A response's size prefix and header, on the stack: the correlation id, and from the flexible
/// versions an empty set of tagged fields.
pub(crate) struct ResponseHead {
    bytes: [u8; 9],
    len: usize,
}

impl ResponseHead {
    /// The head of a response to `api` at `version` whose body is `body_len` bytes.
    pub(crate) fn new(
        correlation_id: i32,
        api: ApiKey,
        version: i16,
        body_len: usize,
    ) -> Result<Self, String> {
        let flexible = api.response_header_version(version) >= 1;
        let header_len = if flexible { 5 } else { 4 };
        let size = i32::try_from(header_len + body_len)
            .map_err(|_| format!("a response of {body_len} bytes is over 2 GiB"))?;
        let mut bytes = [0u8; 9];
        bytes[..4].copy_from_slice(&size.to_be_bytes());
        bytes[4..8].copy_from_slice(&correlation_id.to_be_bytes());
        // bytes[8] stays 0: no tagged fields.
        Ok(Self { bytes, len: 4 + header_len })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A request frame, parsed.
#[allow(
    clippy::large_enum_variant,
    reason = "one per request, moved once into the handler; boxing would allocate per request"
)]
pub(crate) enum Parsed {
    /// A request of a served API and version, decoded.
    Request {
        correlation_id: i32,
        api: ApiKey,
        version: i16,
        header: RequestHeader,
        body: RequestKind,
    },
    /// `ApiVersions` at a version not served: answered at version 0 (KIP-511).
    UnsupportedApiVersions { correlation_id: i32 },
}

/// Parses a request frame (after its size prefix): the API and version must be served, the
/// header must decode, the body must pass the schema [`guard`] and decode. `Err` says what was
/// wrong; the connection is closed then.
pub(crate) fn parse(mut frame: Bytes) -> Result<Parsed, String> {
    let Some(head) = frame.get(..8) else {
        return Err(format!("a request of {} bytes is shorter than a header", frame.len()));
    };
    let api_key = i16::from_be_bytes([head[0], head[1]]);
    let version = i16::from_be_bytes([head[2], head[3]]);
    let correlation_id = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let Ok(api) = ApiKey::try_from(api_key) else {
        return Err(format!("unknown API key {api_key}"));
    };
    let served = SERVED.iter().find(|(served, ..)| *served == api);
    let Some(&(_, min, max)) = served else {
        return Err(format!("{api:?} is not served by this broker"));
    };
    if !(min..=max).contains(&version) {
        if api == ApiKey::ApiVersions {
            return Ok(Parsed::UnsupportedApiVersions { correlation_id });
        }
        return Err(format!("{api:?} version {version} is not served (versions {min} to {max})"));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|error| format!("{api:?} v{version} header: {error}"))?;
    guard::check(api, version, &frame)
        .map_err(|error| format!("{api:?} v{version} body: {error}"))?;
    let body = RequestKind::decode(api, &mut frame, version)
        .map_err(|error| format!("{api:?} v{version} body: {error:#}"))?;
    Ok(Parsed::Request { correlation_id, api, version, header, body })
}

/// The request parsing of the Kafka listener, for the fuzz target: `Err` for a request the
/// listener would close the connection on.
#[doc(hidden)]
pub fn parse_for_fuzzing(frame: &[u8]) -> Result<(), String> {
    parse(Bytes::copy_from_slice(frame)).map(drop)
}

/// Encodes a response body at `version`.
pub(crate) fn encoded<M: Encodable>(message: &M, version: i16) -> Result<BytesMut, String> {
    let failed = |error: String| {
        let message = std::any::type_name::<M>().rsplit("::").next().unwrap_or_default();
        tracing::error!(message, version, %error, "a kafka response did not encode");
        format!("encoding the {message} v{version} response failed: {error}")
    };
    // Sized first: one allocation, not one per doubling.
    let size = message.compute_size(version).map_err(|error| failed(format!("{error:#}")))?;
    let mut body = BytesMut::with_capacity(size);
    message.encode(&mut body, version).map_err(|error| failed(format!("{error:#}")))?;
    Ok(body)
}
