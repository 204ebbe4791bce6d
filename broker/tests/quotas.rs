//! Produce quotas through the real binary: a principal producing flat out is slowed to its quota
//! (not refused, not disconnected) while another principal on the same topic is not held back at
//! all, and both are counted per principal in `/metrics`.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_client::access::RuleOperation;
use ringmq_client::{Client, ConnectOptions, Credentials, ProducerRecord, Rule, TopicConfig};
use support::{within, Broker};

/// The produce quota of every principal, bytes per second.
const QUOTA: u64 = 1 << 20;
const RECORD: usize = 1024;

async fn log_in(broker: &Broker, user: &str, password: &str) -> Client {
    let options = ConnectOptions::default().credentials(Credentials::new(user, password));
    Client::connect_with(&broker.address, options).await.unwrap()
}

/// A counter of `/metrics` (0 when the series does not exist yet).
fn metric(address: &str, series: &str) -> f64 {
    support::metrics_text(address)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Producers sending `RECORD`-byte records to one partition flat out for a while, their
/// acknowledged bytes counted as the acknowledgements arrive.
struct FlatOut {
    acked: Arc<AtomicU64>,
    counting: tokio::task::JoinHandle<()>,
    sending: Vec<tokio::task::JoinHandle<ringmq_client::Producer>>,
}

impl FlatOut {
    fn start(
        producers: Vec<ringmq_client::Producer>,
        topic: &'static str,
        length: Duration,
    ) -> Self {
        let acked = Arc::new(AtomicU64::new(0));
        let (deliveries, mut arriving) = tokio::sync::mpsc::channel(1 << 16);
        let counting = tokio::spawn({
            let acked = Arc::clone(&acked);
            async move {
                while let Some(delivery) = arriving.recv().await {
                    let delivery: ringmq_client::Delivery = delivery;
                    delivery.await.unwrap();
                    acked.fetch_add(RECORD as u64, Ordering::Relaxed);
                }
            }
        });
        let started = Instant::now();
        let sending = producers
            .into_iter()
            .map(|producer| {
                let deliveries = deliveries.clone();
                tokio::spawn(async move {
                    let value = [b'b'; RECORD];
                    while started.elapsed() < length {
                        let record = ProducerRecord::new(topic, &value).partition(0);
                        let delivery = producer.send(record).await.unwrap();
                        if deliveries.send(delivery).await.is_err() {
                            break;
                        }
                    }
                    producer
                })
            })
            .collect();
        Self { acked, counting, sending }
    }

    /// Bytes acknowledged so far.
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Now, and the bytes acknowledged so far: where a rate is measured from.
    fn mark(&self) -> (Instant, u64) {
        (Instant::now(), self.acked())
    }

    /// Acknowledged bytes per second since `mark`.
    fn rate_since(&self, (from, from_bytes): (Instant, u64)) -> f64 {
        (self.acked() - from_bytes) as f64 / from.elapsed().as_secs_f64()
    }

    /// Waits for the senders to stop, every record to be acknowledged and counted; the bytes.
    async fn finish(self) -> u64 {
        for sender in self.sending {
            let producer = sender.await.unwrap();
            producer.flush().await.unwrap();
        }
        self.counting.await.unwrap();
        self.acked.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_produce_quota_is_slowed_to_it_and_another_is_not() {
    let quota = QUOTA.to_string();
    let broker = Broker::start_with_env(
        &["--auth", "required", "--produce-quota", &quota],
        &[("RINGMQ_ROOT_USER", "root"), ("RINGMQ_ROOT_PASSWORD", "root password")],
    );
    within(120, async {
        let mut root = log_in(&broker, "root", "root password").await;
        root.create_topic("metered", TopicConfig::default().partitions(2).capacity(64 << 20))
            .await
            .unwrap();
        root.add_user("bulk", "bulk password").await.unwrap();
        root.add_user("light", "light password").await.unwrap();
        root.add_rule(&Rule::topic("*", "metered", RuleOperation::Produce)).await.unwrap();

        // `bulk` produces flat out to partition 0 for 5 s; acknowledged bytes are counted as the
        // acknowledgements arrive.
        // Over two connections: the quota is the principal's, not each connection's.
        let mut producers = Vec::new();
        for _ in 0..2 {
            let bulk = log_in(&broker, "bulk", "bulk password").await;
            let producer = bulk
                .producer()
                .batch_bytes(16 << 10)
                .buffer_memory(256 << 10)
                .linger(Duration::from_millis(1))
                .build()
                .await
                .unwrap();
            producers.push(producer);
        }
        let flat_out = FlatOut::start(producers, "metered", Duration::from_secs(5));

        // The first second holds the burst (one second of quota); the rate is read after it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mark = flat_out.mark();

        // Meanwhile `light` produces 256 KiB to partition 1, within its own allowance.
        let light = log_in(&broker, "light", "light password").await;
        let light_producer = light.producer().build().await.unwrap();
        let value = [b'l'; RECORD];
        let mut pending = Vec::new();
        for _ in 0..256 {
            let record = ProducerRecord::new("metered", &value).partition(1);
            pending.push(light_producer.send(record).await.unwrap());
        }
        light_producer.flush().await.unwrap();
        for delivery in pending {
            delivery.await.unwrap();
        }

        tokio::time::sleep_until((mark.0 + Duration::from_secs(3)).into()).await;
        let rate = flat_out.rate_since(mark);
        let ratio = rate / QUOTA as f64;
        eprintln!("bulk acknowledged {rate:.0} B/s of record values over 3 s on two connections: {ratio:.3} x the quota");
        assert!((0.9..=1.1).contains(&ratio), "bulk's rate is {ratio:.3} x its quota");

        let acked = flat_out.finish().await;

        // Counted per principal: bulk was held back, light never was; both bytes counted.
        let throttle = |who: &str| {
            metric(
                &broker.metrics,
                &format!(
                    "ringmq_principal_throttle_seconds_total{{direction=\"produce\",principal=\"{who}\"}}"
                ),
            )
        };
        assert!(throttle("bulk") > 1.0, "bulk throttled {} s", throttle("bulk"));
        assert_eq!(throttle("light"), 0.0, "light was held back");
        let bytes_in = |who: &str| {
            metric(&broker.metrics, &format!("ringmq_principal_bytes_in_total{{principal=\"{who}\"}}"))
        };
        assert!(bytes_in("light") >= (256 * RECORD) as f64, "{}", bytes_in("light"));
        assert!(bytes_in("bulk") >= acked as f64);

        // Slowed, not refused: every acknowledged record of bulk's is in the partition.
        let info = root.describe_topic("metered").await.unwrap();
        let stored = info.partitions[0].next_offset;
        assert_eq!(stored * RECORD as u64, acked);
        assert_eq!(info.partitions[1].next_offset, 256);
    })
    .await;
}

/// A fetch quota: a consumer reading a backlog flat out is slowed to within 10 % of it, and
/// gets every record, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_over_its_fetch_quota_is_slowed_to_it() {
    let quota = QUOTA.to_string();
    let broker = Broker::start_with_env(
        &["--auth", "required", "--fetch-quota", &quota],
        &[("RINGMQ_ROOT_USER", "root"), ("RINGMQ_ROOT_PASSWORD", "root password")],
    );
    within(120, async {
        let mut root = log_in(&broker, "root", "root password").await;
        root.create_topic("backlog", TopicConfig::default().partitions(1).capacity(64 << 20))
            .await
            .unwrap();
        // 8 MiB of backlog (producing is not metered here).
        let producer = root.producer().build().await.unwrap();
        let count = 8 * 1024;
        for i in 0..count {
            let value = format!("{i:08}").repeat(RECORD / 8);
            producer
                .send(ProducerRecord::new("backlog", value.as_bytes()).partition(0))
                .await
                .unwrap();
        }
        producer.flush().await.unwrap();

        let mut consumer = root
            .consumer("backlog", 0)
            .start(ringmq_client::StartOffset::Earliest)
            .max_bytes(64 << 10)
            .build()
            .await
            .unwrap();
        let started = Instant::now();
        let (mut read, mut marks) = (0u64, Vec::new());
        while started.elapsed() < Duration::from_millis(4600) {
            for record in consumer.poll().await.unwrap() {
                assert_eq!(&record.value[..8], format!("{read:08}").as_bytes());
                read += 1;
            }
            let elapsed = started.elapsed();
            if marks.is_empty() && elapsed >= Duration::from_millis(1500)
                || marks.len() == 1 && elapsed >= Duration::from_millis(4500)
            {
                marks.push((Instant::now(), read * RECORD as u64));
            }
        }
        let [(from, from_bytes), (to, to_bytes)] = marks[..] else { panic!("{marks:?}") };
        let rate = (to_bytes - from_bytes) as f64 / (to - from).as_secs_f64();
        let ratio = rate / QUOTA as f64;
        eprintln!("fetched {rate:.0} B/s of record values over 3 s: {ratio:.3} x the quota");
        assert!((0.9..=1.1).contains(&ratio), "the consumer's rate is {ratio:.3} x its quota");
        assert!(read < count, "the whole backlog came through in {:?}", started.elapsed());
    })
    .await;
}

/// `principal_connection_count_max`: a principal's login past its limit is refused with one clear
/// error while other principals connect; a closed connection gives its seat back (the Kafka
/// port: `kafka_clients.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_at_its_connection_limit_is_refused_and_others_are_not() {
    let broker = Broker::start_with_env(
        &["--auth", "required", "--principal-connection-count-max", "2"],
        &[("RINGMQ_ROOT_USER", "root"), ("RINGMQ_ROOT_PASSWORD", "root password")],
    );
    within(60, async {
        let mut root = log_in(&broker, "root", "root password").await;
        root.add_user("app", "app password").await.unwrap();
        let options =
            || ConnectOptions::default().credentials(Credentials::new("app", "app password"));
        let first = Client::connect_with(&broker.address, options()).await.unwrap();
        let _second = Client::connect_with(&broker.address, options()).await.unwrap();
        let refused = Client::connect_with(&broker.address, options()).await.unwrap_err();
        assert_eq!(refused.code(), Some(ringmq_client::ErrorCode::TooManyConnections), "{refused}");
        assert!(
            refused.to_string().contains("\"app\" is at its limit of 2 open connections"),
            "{refused}"
        );
        // Another principal is not held back.
        let _root_again = log_in(&broker, "root", "root password").await;
        // A closed connection gives its seat back (once the broker has seen it close).
        drop(first);
        let mut again = None;
        for _ in 0..100 {
            match Client::connect_with(&broker.address, options()).await {
                Ok(client) => {
                    again = Some(client);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert!(again.is_some(), "the closed connection's seat never came back");
    })
    .await;
}

/// `principal_topic_bytes_max`: a principal may create topics up to its limit in ring bytes
/// (partitions × capacity), counted over its topics that still exist and across a restart; a
/// creation past it is refused before anything is allocated; a superuser is not held to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_creates_topics_up_to_its_topic_bytes() {
    let mut broker = Broker::start_with_env(
        &["--auth", "required", "--principal-topic-bytes-max", "3MiB"],
        &[("RINGMQ_ROOT_USER", "root"), ("RINGMQ_ROOT_PASSWORD", "root password")],
    );
    let two_mib = || TopicConfig::default().partitions(2).capacity(1 << 20);
    within(60, async {
        let mut root = log_in(&broker, "root", "root password").await;
        root.add_user("maker", "maker password").await.unwrap();
        root.add_rule(&Rule::cluster("maker", RuleOperation::Create)).await.unwrap();
        root.add_rule(&Rule::topic("maker", "*", RuleOperation::Delete)).await.unwrap();
        let mut maker = log_in(&broker, "maker", "maker password").await;
        maker.create_topic("first", two_mib()).await.unwrap();
        let refused = maker.create_topic("second", two_mib()).await.unwrap_err();
        assert_eq!(refused.code(), Some(ringmq_client::ErrorCode::Busy), "{refused}");
        let message = refused.to_string();
        assert!(message.contains("\"maker\" may hold 3145728 bytes"), "{message}");
        assert!(message.contains("holds 2097152"), "{message}");
        assert!(!broker.data_dir().join("second").exists(), "files of a refused topic");
        // Other principals have their own allowance; a superuser none.
        root.create_topic("big", TopicConfig::default().partitions(8).capacity(1 << 20))
            .await
            .unwrap();
        // Deleting a topic gives its bytes back.
        maker.delete_topic("first").await.unwrap();
        maker.create_topic("second", two_mib()).await.unwrap();
    })
    .await;
    broker.restart_same_port();
    within(60, async {
        let mut maker = log_in(&broker, "maker", "maker password").await;
        let refused = maker.create_topic("third", two_mib()).await.unwrap_err();
        assert!(refused.to_string().contains("holds 2097152"), "{refused}");
        let small = TopicConfig::default().partitions(1).capacity(1 << 20);
        maker.create_topic("third", small).await.unwrap();
    })
    .await;
}

/// A principal's own quotas, set by a superuser over the native port and the CLI, take the
/// broker defaults' place at once (for connections and topic bytes here; the rates share the
/// same buckets, which the unit tests cover), survive a restart, and go back to the defaults
/// when removed. A principal without `alter` on the cluster cannot raise its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principals_own_quotas_replace_the_defaults_at_once_and_after_a_restart() {
    use ringmq_client::access::{Quota, QuotaKind};
    let mut broker = Broker::start_with_env(
        &[
            "--auth",
            "required",
            "--principal-connection-count-max",
            "1",
            "--principal-topic-bytes-max",
            "1MiB",
            "--produce-quota",
            "1MiB",
        ],
        &[("RINGMQ_ROOT_USER", "root"), ("RINGMQ_ROOT_PASSWORD", "root password")],
    );
    let app = || ConnectOptions::default().credentials(Credentials::new("app", "app password"));
    let two_mib = || TopicConfig::default().partitions(2).capacity(1 << 20);
    within(60, async {
        let mut root = log_in(&broker, "root", "root password").await;
        root.add_user("app", "app password").await.unwrap();
        root.add_rule(&Rule::cluster("app", RuleOperation::Create)).await.unwrap();
        let mut first = Client::connect_with(&broker.address, app()).await.unwrap();
        let refused = Client::connect_with(&broker.address, app()).await.unwrap_err();
        assert!(refused.to_string().contains("limit of 1 open connections"), "{refused}");
        let error = first.create_topic("wide", two_mib()).await.unwrap_err();
        assert!(error.to_string().contains("may hold 1048576 bytes"), "{error}");

        // An administrator that is no superuser may set others' quotas, not a superuser's.
        root.add_user("ops", "ops password").await.unwrap();
        root.add_rule(&Rule::cluster("ops", RuleOperation::Alter)).await.unwrap();
        let mut ops = log_in(&broker, "ops", "ops password").await;
        let error = ops.set_quota(&Quota::new("root", QuotaKind::Produce, 1)).await.unwrap_err();
        assert_eq!(error.code(), Some(ringmq_client::ErrorCode::Unauthorized), "{error}");
        assert!(error.to_string().contains("only a superuser may change superuser"), "{error}");

        // The app may not give itself more.
        let error = first.set_quota(&Quota::new("app", QuotaKind::Connections, 9)).await;
        let error = error.unwrap_err();
        assert_eq!(error.code(), Some(ringmq_client::ErrorCode::Unauthorized), "{error}");

        ops.set_quota(&Quota::new("app", QuotaKind::Connections, 3)).await.unwrap();
        root.set_quota(&Quota::new("app", QuotaKind::TopicBytes, 4 << 20)).await.unwrap();
        // In force at once, for the connection it already has too.
        let _second = Client::connect_with(&broker.address, app()).await.unwrap();
        let _third = Client::connect_with(&broker.address, app()).await.unwrap();
        assert!(Client::connect_with(&broker.address, app()).await.is_err(), "a fourth");
        first.create_topic("wide", two_mib()).await.unwrap();

        // Out of range, or the defaults: refused, naming what is wrong.
        let error = root.set_quota(&Quota::new("app", QuotaKind::Connections, 100_001)).await;
        assert!(error.unwrap_err().to_string().contains("past its maximum of 100000"));
        let error = root.set_quota(&Quota::new("*", QuotaKind::Produce, 1)).await.unwrap_err();
        assert!(error.to_string().contains("change them in its configuration"), "{error}");
        let error = root.remove_quota("app", QuotaKind::Fetch).await.unwrap_err();
        assert!(error.to_string().contains("no fetch quota of its own"), "{error}");

        let quotas = root.list_quotas().await.unwrap();
        assert_eq!(
            quotas.defaults,
            [
                (QuotaKind::Produce, 1 << 20),
                (QuotaKind::Fetch, 0),
                (QuotaKind::Connections, 1),
                (QuotaKind::TopicBytes, 1 << 20)
            ]
        );
        assert_eq!(
            quotas.own,
            [
                Quota::new("app", QuotaKind::Connections, 3),
                Quota::new("app", QuotaKind::TopicBytes, 4 << 20)
            ]
        );
    })
    .await;

    broker.restart_same_port();
    let cli = support::workspace_binary("ringmq-cli", "ringmq-cli");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&cli)
            .args(["--broker", &broker.address, "--user", "root"])
            .args(args)
            .env("RINGMQ_PASSWORD", "root password")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), String::from_utf8(output.stdout).unwrap(), stderr)
    };
    within(60, async {
        // After the restart, the app's own quotas hold.
        let _first = Client::connect_with(&broker.address, app()).await.unwrap();
        let _second = Client::connect_with(&broker.address, app()).await.unwrap();
        let mut root = log_in(&broker, "root", "root password").await;
        assert_eq!(root.list_quotas().await.unwrap().own.len(), 2);
    })
    .await;

    let (ok, listed, stderr) = run(&["quota", "list"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines,
        [
            "principal\tproduce\tfetch\tconnections\ttopic-bytes",
            "*\t1048576\tnone\t1\t1048576",
            "app\tdefault\tdefault\t3\t4194304"
        ]
    );
    let (ok, _, stderr) = run(&["quota", "set", "ingest", "--produce", "50MiB", "--fetch", "0"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(&["quota", "remove", "app", "all"]);
    assert!(ok, "{stderr}");
    let (ok, listed, stderr) = run(&["quota", "list"]);
    assert!(ok, "{stderr}");
    assert_eq!(listed.lines().nth(2), Some("ingest\t52428800\tnone\tdefault\tdefault"));
    assert_eq!(listed.lines().count(), 3, "app is back to the defaults: {listed}");
    let (ok, _, stderr) = run(&["quota", "set", "ingest", "--connections", "100001"]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("past its maximum of 100000"), "{stderr}");
    let (ok, _, stderr) = run(&["quota", "set", "ingest"]);
    assert!(!ok && stderr.contains("--produce"), "a set with no quota: {stderr}");

    within(60, async {
        // Back to the default of one connection (the ones open stay).
        let _first = Client::connect_with(&broker.address, app()).await.unwrap();
        let refused = Client::connect_with(&broker.address, app()).await.unwrap_err();
        assert!(refused.to_string().contains("limit of 1 open connections"), "{refused}");
    })
    .await;
}

/// A principal's own produce quota, set while the broker has none, slows that principal to it
/// (within 10 %) from its next request on, on the connection it already has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principals_own_produce_quota_slows_it_to_that_rate() {
    use ringmq_client::access::{Quota, QuotaKind};
    const OWN: u64 = 512 << 10;
    let broker = Broker::start_with_env(
        &["--auth", "required"],
        &[("RINGMQ_ROOT_USER", "root"), ("RINGMQ_ROOT_PASSWORD", "root password")],
    );
    within(120, async {
        let mut root = log_in(&broker, "root", "root password").await;
        root.create_topic("metered", TopicConfig::default().partitions(1).capacity(64 << 20))
            .await
            .unwrap();
        root.add_user("bulk", "bulk password").await.unwrap();
        root.add_rule(&Rule::topic("bulk", "metered", RuleOperation::Produce)).await.unwrap();
        let bulk = log_in(&broker, "bulk", "bulk password").await;
        let producer = bulk
            .producer()
            .batch_bytes(16 << 10)
            .buffer_memory(256 << 10)
            .linger(Duration::from_millis(1))
            .build()
            .await
            .unwrap();
        root.set_quota(&Quota::new("bulk", QuotaKind::Produce, OWN)).await.unwrap();
        let flat_out = FlatOut::start(vec![producer], "metered", Duration::from_millis(4500));
        // The first second holds the burst; the rate is read after it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mark = flat_out.mark();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let rate = flat_out.rate_since(mark);
        let ratio = rate / OWN as f64;
        eprintln!("bulk acknowledged {rate:.0} B/s of record values: {ratio:.3} x its own quota");
        assert!((0.9..=1.1).contains(&ratio), "bulk's rate is {ratio:.3} x its own quota");
        flat_out.finish().await;
    })
    .await;
}
