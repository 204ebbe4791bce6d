//! Durability over the network, with the broker in process so a disk failure can be injected:
//! `acks=synced` is answered only after the sync that covers the batch returned, and a failed
//! sync stops the partition (it refuses writes and says why) instead of acknowledging.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

use std::time::Duration;

use ringmq_broker::config::Config;
use ringmq_broker::server::Broker;
use ringmq_client::{Acks, Client, ErrorCode, ProducerRecord, StartOffset, TopicConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_poisons_the_partition_instead_of_acknowledging() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        prefault: false,
        partition_capacity_default: 4 << 20,
        metrics: false,
        kafka: false,
        ..Config::default()
    };
    let broker = Broker::start(config).await.unwrap();
    let address = broker.local_addr().unwrap().to_string();
    let topics = broker.topics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(broker.serve(async {
        let _ = stopped.await;
    }));

    let mut client = Client::connect(&address).await.unwrap();
    client.create_topic("durable", TopicConfig::default()).await.unwrap();
    let synced =
        client.producer().acks(Acks::Synced).timeout(Duration::from_secs(5)).build().await.unwrap();
    let offset = synced.send_and_wait(ProducerRecord::new("durable", b"on disk")).await.unwrap();
    assert_eq!(offset, Some(0));
    let log = topics.get("durable").unwrap().partitions()[0].log().clone();
    assert_eq!(log.durable_offset(), 1, "acknowledged as synced only once durable");

    log.inject_sync_failure();
    let error =
        synced.send_and_wait(ProducerRecord::new("durable", b"never durable")).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::PartitionPoisoned), "{error}");
    assert!(error.to_string().contains("msync"), "{error}");
    assert_eq!(log.durable_offset(), 1, "nothing acknowledged as durable after the failure");

    // The partition refuses writes from now on, at every durability level, and says why.
    let written = client.producer().acks(Acks::Written).build().await.unwrap();
    let error =
        written.send_and_wait(ProducerRecord::new("durable", b"refused")).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::PartitionPoisoned), "{error}");
    // Reads go on: what was stored is still served.
    let mut consumer =
        client.consumer("durable", 0).start(StartOffset::Earliest).build().await.unwrap();
    assert_eq!(&consumer.next().await.unwrap().value[..], b"on disk");

    drop(stop);
    server.await.unwrap();
}
