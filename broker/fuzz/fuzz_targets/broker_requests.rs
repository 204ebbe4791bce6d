//! Arbitrary bytes sent to a real broker, running in this process, over a loopback connection.
//! After each input a ping must be answered (or the broker may close the connection on a bad
//! frame, and the next input reconnects). Any panic in the broker aborts the process (the fuzzer's
//! panic hook), every response must decode, and the broker must keep serving new connections.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringmq_broker::config::Config;
use ringmq_broker::server::Broker;
use ringmq_protocol::message::{CreateTopic, ErrorBody, TopicList, TopicName};
use ringmq_protocol::{FrameHead, FrameKind, Request};

const PING_ID: u32 = 0xFFFF_FF00;

struct Harness {
    address: String,
    connection: Mutex<Option<TcpStream>>,
    inputs: AtomicU64,
    _runtime: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let data = tempfile::tempdir().expect("temporary directory");
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: data.path().join("data"),
            partition_capacity_default: 64 << 10,
            partition_capacity_max: 256 << 10,
            partition_count_max: 4,
            frame_size_max: 64 << 10,
            batch_size_max: 32 << 10,
            read_buffer_count: 8,
            frame_timeout: Duration::from_millis(10),
            fetch_wait_max: Duration::ZERO,
            write_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            prefault: false,
            metrics: false,
            kafka: false,
            group_log_capacity: 16 << 20,
            ..Config::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let broker = runtime.block_on(Broker::start(config)).expect("broker starts");
        let address = broker.local_addr().expect("address").to_string();
        runtime.spawn(broker.serve(std::future::pending::<()>()));
        let harness = Harness {
            address,
            connection: Mutex::new(None),
            inputs: AtomicU64::new(0),
            _runtime: runtime,
            _data: data,
        };
        let mut setup = harness.connect();
        call(
            &mut setup,
            &Request::CreateTopic(CreateTopic {
                name: "t",
                partition_count: 2,
                capacity: 0,
                chunk_size: 0,
            }),
        );
        harness
    })
}

impl Harness {
    fn connect(&self) -> TcpStream {
        let stream =
            TcpStream::connect(&self.address).expect("the broker keeps accepting connections");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        stream.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Deletes every topic but "t", so a long run cannot fill the disk with fuzzed topics.
    fn clean_up(&self) {
        let mut stream = self.connect();
        let body = call(&mut stream, &Request::ListTopics);
        let Ok(list) = TopicList::decode(&body) else { return };
        let names: Vec<String> =
            list.iter().map(|(name, _)| name.to_owned()).filter(|name| name != "t").collect();
        for name in names {
            call(&mut stream, &Request::DeleteTopic(TopicName { name: &name }));
        }
    }
}

/// Sends one request and returns the body of its response (success or error).
fn call(stream: &mut TcpStream, request: &Request<'_>) -> Vec<u8> {
    let mut frame = Vec::new();
    request.encode_frame(7, &mut frame).expect("encode");
    stream.write_all(&frame).expect("write");
    let (head, body) = read_frame(stream).expect("the broker answers a well-formed request");
    assert_eq!(head.correlation_id, 7);
    body
}

/// Reads one response frame; `None` when the broker closed the connection.
fn read_frame(stream: &mut TcpStream) -> Option<(FrameHead, Vec<u8>)> {
    let mut header = [0u8; 20];
    stream.read_exact(&mut header).ok()?;
    let head = FrameHead::decode(&header, u32::MAX).expect("the broker sends valid frame headers");
    assert_eq!(head.kind, FrameKind::Response);
    let mut body = vec![0u8; head.body_len()];
    stream.read_exact(&mut body).ok()?;
    if head.status != 0 {
        ErrorBody::decode(&body).expect("error responses carry a valid error body");
    }
    Some((head, body))
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    if harness.inputs.fetch_add(1, Ordering::Relaxed) % 2000 == 1999 {
        harness.clean_up();
    }
    let mut guard = harness.connection.lock().expect("lock");
    let stream = guard.get_or_insert_with(|| harness.connect());
    let mut ping = Vec::new();
    Request::Ping.encode_frame(PING_ID, &mut ping).expect("encode");
    if stream.write_all(data).and_then(|()| stream.write_all(&ping)).is_err() {
        *guard = None;
        return;
    }
    loop {
        match read_frame(stream) {
            Some((head, _)) if head.correlation_id == PING_ID && head.status == 0 => return,
            Some(_) => {}
            None => {
                // Closed (a bad frame, or our ping completed a partial frame): reconnect next time.
                *guard = None;
                return;
            }
        }
    }
});
