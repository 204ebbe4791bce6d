//! Arbitrary bytes sent to the Kafka listener of a real broker running in this process, over a
//! loopback connection, each input followed by an `ApiVersions` request that must be answered,
//! unless the broker closed the connection on a bad request (the next input reconnects) or holds
//! a group request the input made (the connection is dropped after a few seconds). Any panic in
//! the broker aborts the process, and the broker must keep accepting connections.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringmq_broker::config::Config;
use ringmq_broker::server::Broker;

const PING_ID: i32 = 0x7FFF_FF00;

struct Harness {
    address: String,
    connection: Mutex<Option<TcpStream>>,
    _runtime: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let data = tempfile::tempdir().expect("temporary directory");
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            kafka_listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: data.path().join("data"),
            partition_capacity_default: 64 << 10,
            partition_capacity_max: 256 << 10,
            partition_count_max: 4,
            topic_count_max: 8,
            frame_size_max: 64 << 10,
            batch_size_max: 32 << 10,
            read_buffer_count: 8,
            frame_timeout: Duration::from_millis(10),
            fetch_wait_max: Duration::ZERO,
            write_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            group_session_timeout_min: Duration::from_millis(10),
            group_session_timeout_max: Duration::from_secs(1),
            group_initial_rebalance_delay: Duration::ZERO,
            prefault: false,
            metrics: false,
            group_log_capacity: 16 << 20,
            ..Config::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let broker = runtime.block_on(Broker::start(config)).expect("broker starts");
        let address = broker.kafka_addr().expect("address").expect("kafka is on").to_string();
        runtime.spawn(broker.serve(std::future::pending::<()>()));
        Harness { address, connection: Mutex::new(None), _runtime: runtime, _data: data }
    })
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("the broker keeps accepting connections");
    stream.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    stream.set_write_timeout(Some(Duration::from_secs(3))).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// `ApiVersions` v0 with a null client id, size-prefixed.
fn ping() -> Vec<u8> {
    let mut request = Vec::with_capacity(14);
    request.extend_from_slice(&10i32.to_be_bytes());
    request.extend_from_slice(&18i16.to_be_bytes());
    request.extend_from_slice(&0i16.to_be_bytes());
    request.extend_from_slice(&PING_ID.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes());
    request
}

/// Reads one response frame: its correlation id, or `None` if the connection closed or stalled.
fn read_frame(stream: &mut TcpStream) -> Option<i32> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let size = usize::try_from(i32::from_be_bytes(size)).expect("response sizes are positive");
    assert!(size >= 4, "a response holds at least its correlation id");
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body).ok()?;
    Some(i32::from_be_bytes([body[0], body[1], body[2], body[3]]))
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let mut guard = harness.connection.lock().expect("lock");
    let stream = guard.get_or_insert_with(|| connect(&harness.address));
    if stream.write_all(data).and_then(|()| stream.write_all(&ping())).is_err() {
        *guard = None;
        return;
    }
    loop {
        match read_frame(stream) {
            Some(PING_ID) => return,
            Some(_) => {}
            None => {
                *guard = None;
                return;
            }
        }
    }
});
