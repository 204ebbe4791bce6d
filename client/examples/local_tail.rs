//! Reads a partition through the broker's local listener, as a consumer on the broker's host
//! does, and says what it took: records, batches, and the `LocalWait` requests (the reader's only
//! requests, made when it reaches the end and sleeps).
//!
//! ```text
//! ringmq --local-listen /tmp/ringmq.sock &
//! cargo run --release -p ringmq-client --example local_tail -- /tmp/ringmq.sock events 0 100000
//! ```
//!
//! Arguments: the socket, the topic, the partition, and how many records to read from the
//! partition's earliest offset. One thread, so that `strace -c -f` of it counts the reader's own
//! system calls and nothing else's: after the open they stay constant however many records it
//! reads while data is there.

use std::process::ExitCode;

use ringmq_client::{LocalConsumer, StartOffset};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, topic, partition, count] = args.as_slice() else {
        eprintln!("usage: local_tail SOCKET TOPIC PARTITION COUNT");
        return ExitCode::FAILURE;
    };
    let (Ok(partition), Ok(count)) = (partition.parse::<u32>(), count.parse::<u64>()) else {
        eprintln!("error: PARTITION and COUNT are numbers");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let read = runtime.block_on(async {
        let mut consumer = LocalConsumer::builder(socket, topic, partition)
            .start(StartOffset::Earliest)
            .build()
            .await?;
        let (mut records, mut bytes) = (0u64, 0u64);
        let started = std::time::Instant::now();
        while records < count {
            let Some(batch) = consumer.next_batch().await? else { continue };
            for record in batch.records()? {
                bytes += record.value.map_or(0, |value| value.len() as u64);
                records += 1;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok::<_, ringmq_client::ClientError>((records, bytes, seconds, consumer))
    });
    match read {
        Ok((records, bytes, seconds, consumer)) => {
            println!(
                "{records} records ({bytes} value bytes) in {} batches, {} LocalWait requests, {seconds:.3} s ({:.0} records/s)",
                consumer.batches_read(),
                consumer.waits(),
                records as f64 / seconds.max(1e-9),
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
