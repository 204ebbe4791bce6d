//! Operability through the real binary: `/metrics` after a known workload (parsed with a real
//! Prometheus text-format parser), JSON logs, the log line of a rejected client naming its
//! address, and `--print-config`.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringmq_client::{Acks, Client, ProducerRecord, StartOffset, TopicConfig};
use support::{within, Broker};

fn scrape(address: &str) -> prometheus_parse::Scrape {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: ringmq\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).unwrap()
}

/// The value of `name` whose labels include every pair in `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| labels.iter().all(|(key, value)| sample.labels.get(key) == Some(value)))
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => value,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.last().map_or(0.0, |bucket| bucket.count)
            }
            _ => f64::NAN,
        })
        .collect();
    assert_eq!(matching.len(), 1, "{name} {labels:?}: {matching:?}");
    matching[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_was_produced_and_consumed() {
    let broker = Broker::start(&[]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("obs", TopicConfig::default().partitions(2)).await.unwrap();
        let producer = client.producer().acks(Acks::Written).build().await.unwrap();
        let mut deliveries = Vec::new();
        for sequence in 0..500u32 {
            let key = format!("key-{}", sequence % 7);
            let record = ProducerRecord::new("obs", b"a value of some bytes").key(key.as_bytes());
            deliveries.push(producer.send(record).await.unwrap());
        }
        for delivery in deliveries {
            delivery.await.unwrap();
        }
        producer.close().await.unwrap();
        let mut consumed = 0;
        for partition in 0..2 {
            let mut consumer = client
                .consumer("obs", partition)
                .start(StartOffset::Earliest)
                .max_wait(Duration::from_millis(20))
                .build()
                .await
                .unwrap();
            let end = consumer.high_watermark();
            while consumer.position() < end {
                consumer.next().await.unwrap();
                consumed += 1;
            }
        }
        assert_eq!(consumed, 500);
        let _ = client.describe_topic("missing").await.unwrap_err();
        // A group that has read nothing lags by everything.
        client.reset_group_offsets("lagging", "obs", StartOffset::Earliest).await.unwrap();

        let metrics = scrape(&broker.metrics);
        let topic = [("topic", "obs")];
        assert_eq!(value(&metrics, "ringmq_messages_in_total", &topic), 500.0);
        assert_eq!(value(&metrics, "ringmq_messages_out_total", &topic), 500.0);
        let bytes_in = value(&metrics, "ringmq_bytes_in_total", &topic);
        assert!(bytes_in > 500.0 * 21.0, "{bytes_in}");
        assert_eq!(
            value(&metrics, "ringmq_bytes_out_total", &topic),
            bytes_in,
            "every byte in was read once"
        );
        let next: f64 = (0..2)
            .map(|p| {
                value(
                    &metrics,
                    "ringmq_partition_next_offset",
                    &[("topic", "obs"), ("partition", &p.to_string())],
                )
            })
            .sum();
        assert_eq!(next, 500.0);
        let lag: f64 = (0..2)
            .map(|p| {
                value(
                    &metrics,
                    "ringmq_consumer_group_lag",
                    &[("group", "lagging"), ("topic", "obs"), ("partition", &p.to_string())],
                )
            })
            .sum();
        assert_eq!(lag, 500.0);
        assert_eq!(value(&metrics, "ringmq_errors_total", &[("code", "UnknownTopic")]), 1.0);
        assert_eq!(value(&metrics, "ringmq_errors_total", &[("code", "CorruptBatch")]), 0.0);
        assert!(
            value(&metrics, "ringmq_produce_duration_seconds", &[]) >= 1.0,
            "produce latency observed"
        );
        assert!(
            value(&metrics, "ringmq_fetch_duration_seconds", &[]) >= 2.0,
            "fetch latency observed"
        );
        assert!(value(&metrics, "ringmq_connections_open", &[]) >= 1.0);
        assert_eq!(
            value(&metrics, "ringmq_ring_capacity_bytes", &[("topic", "obs"), ("partition", "0")]),
            (8 << 20) as f64
        );
        assert!(value(&metrics, "ringmq_buffer_pool_buffers", &[]) >= 1.0);
        let types: HashMap<&str, &str> = [
            ("ringmq_messages_in_total", "counter"),
            ("ringmq_produce_duration_seconds", "histogram"),
            ("ringmq_partition_next_offset", "gauge"),
        ]
        .into_iter()
        .collect();
        for (name, kind) in types {
            let documented = metrics.docs.get(name).is_some_and(|help| !help.is_empty());
            assert!(documented, "{name} ({kind}) has HELP text");
        }

        // The Grafana dashboard shipped in deploy/ only uses metrics the broker serves.
        let dashboard = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana-dashboard.json"
        ))
        .unwrap();
        let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
        let mut used = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if let Some(name) = word.strip_prefix("ringmq_") {
                        used.push(format!(
                            "ringmq_{}",
                            name.trim_end_matches("_bucket").trim_end_matches("_count")
                        ));
                    }
                }
            }
        }
        assert!(used.len() > 10);
        for name in used {
            assert!(
                metrics.docs.contains_key(name.as_str()),
                "the dashboard uses {name}, which the broker does not serve"
            );
        }

        // Deleting the topic drops its series.
        client.delete_topic("obs").await.unwrap();
        let metrics = scrape(&broker.metrics);
        assert!(!metrics.samples.iter().any(|sample| sample.labels.get("topic") == Some("obs")));
    })
    .await;
}

#[test]
fn a_rejected_client_is_logged_with_its_address_in_json() {
    let broker = Broker::start(&["--log-format", "json"]);
    let mut stream = TcpStream::connect(&broker.address).unwrap();
    let local = stream.local_addr().unwrap().to_string();
    stream.write_all(b"definitely not a ringmq frame").unwrap();
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    std::thread::sleep(Duration::from_millis(200));
    let log = broker.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let rejected = lines
        .iter()
        .find(|line| line["fields"]["message"] == "rejected frame; closing the connection")
        .unwrap_or_else(|| panic!("no rejection logged: {log}"));
    assert_eq!(rejected["fields"]["peer"], local.as_str(), "the log names the client's address");
    assert_eq!(rejected["fields"]["code"], "MalformedFrame");
    assert!(lines.iter().any(|line| line["fields"]["message"] == "connection opened"
        && line["fields"]["peer"] == local.as_str()));
}

#[test]
fn print_config_shows_the_effective_settings() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--print-config", "--sync", "always", "--no-metrics"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("sync = \"always\"")
            && text.contains("metrics = false")
            && text.contains("listen = \"127.0.0.1:7878\""),
        "{text}"
    );
}
