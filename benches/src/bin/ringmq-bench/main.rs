//! `ringmq-bench`: end-to-end throughput and latency of a ringmq broker, with the broker's heap
//! allocations and bytes copied per message, CPU time per message and peak memory.
//!
//! With no `--broker` it starts the real `ringmq` binary (built beside this one) on a temporary
//! data directory and a free loopback port, so broker and bench are separate processes and each
//! one's CPU time and memory are its own. Run it in release mode:
//!
//! ```text
//! cargo run --release -p ringmq-benches --bin ringmq-bench -- --baseline
//! ```

mod broker;
mod chart;
#[cfg(feature = "kafka")]
mod kafka;
mod local;
mod plan;
mod rebalance;
mod report;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use ringmq_broker::metrics::process_usage;
use ringmq_client::Acks;
use ringmq_protocol::message::BrokerStats;

use plan::{Mode, Protocol, Workload};
use report::{Latency, Report};

#[derive(Debug, Parser)]
#[command(
    name = "ringmq-bench",
    version,
    about = "Measure a ringmq broker end to end: throughput, latency, allocations and copies per message"
)]
struct Args {
    /// Benchmark a broker already running here instead of starting one.
    #[arg(long, value_name = "ADDR")]
    broker: Option<String>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::EndToEnd)]
    mode: Mode,
    /// Which front end the clients use: native (ringmq-client) or kafka (librdkafka, through
    /// the broker's Kafka listener; needs a build with `--features kafka`).
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    protocol: Protocol,
    /// With --broker and --protocol kafka: the broker's Kafka listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9092")]
    kafka_broker: String,
    /// Producer tasks, each with its own connection.
    #[arg(long, default_value_t = 1, value_name = "N")]
    producers: usize,
    /// Consumer tasks, each reading its share of the partitions.
    #[arg(long, default_value_t = 1, value_name = "N")]
    consumers: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1, value_name = "N")]
    partitions: u32,
    /// Message size in bytes (at least 16: the send time and sequence number).
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    size: usize,
    /// Messages to send (after the warm-up).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Run for about this long instead of a count. A paced run (--rate, or a rate sweep) sends
    /// rate x SECS messages, 3 s worth when neither this nor --count is given; an unpaced one
    /// estimates the count from a short probe.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Messages sent before measuring, to reach a steady state.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    warmup: u64,
    /// Producer batch size, bytes.
    #[arg(long, default_value_t = 65_536, value_name = "BYTES")]
    batch_bytes: usize,
    /// Producer linger time, ms.
    #[arg(long, default_value_t = 1, value_name = "MS")]
    linger_ms: u64,
    /// Consumers' fetch.min_bytes: the broker answers once this much is available or 5 ms have
    /// passed [default: 1, answer as soon as anything is].
    #[arg(long, value_name = "BYTES")]
    fetch_min_bytes: Option<u32>,
    /// Requests each producer keeps in flight.
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_in_flight: usize,
    /// Durability each produce waits for: none, written or synced.
    #[arg(long, default_value = "written", value_parser = parse_acks)]
    acks: Acks,
    /// The broker's own sync policy when this tool starts it: none, always or interval=MS (sync every MS milliseconds).
    #[arg(long, default_value = "none", value_name = "POLICY")]
    sync: String,
    /// An extra flag for the broker this tool starts, e.g. --broker-arg=--no-metrics; repeat it
    /// for more.
    #[arg(long, value_name = "FLAG", allow_hyphen_values = true)]
    broker_arg: Vec<String>,
    /// Ring capacity per partition of the benchmark topic, e.g. 1GiB.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    capacity: u64,
    /// Target send rate across all producers, messages per second (for latency runs); latency
    /// is then measured from each message's scheduled send time.
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<u64>,
    /// With --rate, how each producer waits for a message's send time: thread (a thread per
    /// producer sleeps until the exact time: no bursts) or tokio (tokio's 1 ms timer, sending a
    /// millisecond's messages at once, as runs before 2026-12-02 did).
    #[arg(long, value_enum, default_value_t = plan::Pacer::Thread)]
    pacer: plan::Pacer,
    /// Also measure the yardsticks: the same bytes through a plain loopback socket, and written
    /// to the disk in batch-size writes with one fdatasync each (in --disk-dir), which synced
    /// produce is then read against.
    #[arg(long)]
    baseline: bool,
    /// Where --baseline's disk yardstick writes: a directory in the broker's data file system
    /// [default: the system's temporary directory, where the bench's own broker keeps its data].
    #[arg(long, value_name = "DIR")]
    disk_dir: Option<PathBuf>,
    /// Also run every measurement over TLS, right after the plaintext one, against a second
    /// broker this tool starts with a certificate it makes; prints both and their ratio
    /// (native protocol, a broker started by the bench).
    #[arg(long, conflicts_with = "broker")]
    tls: bool,
    /// With --tls: the TLS broker also requires logins (--auth required), and every connection
    /// logs in with SCRAM-SHA-256 as a user that is not a superuser, allowed the bench's topics
    /// by access rules (so every request passes the rule check).
    #[arg(long, requires = "tls")]
    scram: bool,
    /// Also run every measurement with the consumers on the broker's host reading the rings in
    /// place (ringmq-client's LocalConsumer, through the broker's local listener, which the
    /// bench's broker then has), right after the TCP one against the same broker; prints both
    /// and their ratio. An end-to-end run also measures the producers with no reader, the
    /// broker's CPU per message a local reader should leave unchanged (native protocol, a
    /// broker started by the bench).
    #[arg(long, conflicts_with_all = ["broker", "tls"])]
    local: bool,
    /// Run a series: sizes=64,256,1024,16384 (one run per message size) or
    /// rates=10k,20k,50k (one paced run per offered rate, msgs/s across all producers, at
    /// --size; each runs --duration seconds, 3 by default, unless --count is given).
    #[arg(long, value_name = "SERIES")]
    sweep: Option<String>,
    /// Write an SVG chart of the sweep: MB/s by message size (sizes=...), or latency
    /// percentiles against the offered rate (rates=...).
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// Print JSON (one object per run; an array for a sweep) instead of the table.
    #[arg(long)]
    json: bool,
    /// Print CSV instead of the table.
    #[arg(long)]
    csv: bool,
    /// Measure consumer group rebalances instead of throughput: ROUNDS rounds of a member
    /// crashing and of a member leaving, three members over --partitions partitions.
    #[arg(long, value_name = "ROUNDS")]
    rebalance: Option<u32>,
    /// Producers without idempotence (no producer id, no sequence numbers).
    #[arg(long)]
    no_idempotence: bool,
    /// Worker threads of the bench's own async runtime, which runs its clients (producers'
    /// connections and consumers); 0: one per CPU core. 1 is the client half of the
    /// latency-first configuration (with --broker-arg=--worker-threads=1 for the broker's).
    #[arg(long, default_value_t = 0, value_name = "N")]
    client_threads: usize,
    /// Busy-poll the bench's connections for up to this many µs before parking each time they
    /// wait for the broker (ringmq-client's `ConnectOptions::busy_poll`); 0: off. The broker's
    /// own is --broker-arg=--busy-poll-us=N.
    #[arg(long, default_value_t = 0, value_name = "US", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    client_busy_poll_us: u64,
    /// With --local: how long a local reader at the end of the data spins on the cursor page
    /// before it sleeps in a LocalWait (ringmq-client's `LocalConsumerBuilder::spin`), µs. A
    /// spin longer than the gap between messages never sleeps: a busy core for the lowest
    /// latency.
    #[arg(long, default_value_t = 50, value_name = "US", value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    local_spin_us: u64,
    /// Session timeout of the group members in --rebalance runs, ms.
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    session_timeout_ms: u64,
}

fn fetch_min_bytes(args: &Args) -> u32 {
    args.fetch_min_bytes.unwrap_or(1)
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "none" => Ok(Acks::None),
        "written" => Ok(Acks::Written),
        "synced" => Ok(Acks::Synced),
        _ => Err(format!("expected none, written or synced, got {text:?}")),
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("expected a size like 1GiB, got {text:?}"))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if args.client_threads > 0 {
        runtime.worker_threads(args.client_threads);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Said before a broker is started for nothing.
    if args.protocol == Protocol::Kafka && !cfg!(feature = "kafka") {
        anyhow::bail!(plan::NO_KAFKA);
    }
    let points = sweep_points(&args)?;
    let broker_args = vec![
        "--sync".to_owned(),
        args.sync.clone(),
        "--partition-capacity-default".to_owned(),
        args.capacity.to_string(),
        "--read-buffer-count".to_owned(),
        "256".to_owned(),
    ]
    .into_iter()
    .chain(args.broker_arg.iter().cloned())
    .collect::<Vec<_>>();
    if args.tls && args.protocol == Protocol::Kafka {
        anyhow::bail!("--tls measures the native protocol; leave out --protocol kafka");
    }
    if args.local && args.protocol == Protocol::Kafka {
        anyhow::bail!("--local measures the native protocol; leave out --protocol kafka");
    }
    if args.local && args.mode == Mode::Produce {
        anyhow::bail!("--local measures consumers: use --mode consume or --mode end-to-end");
    }
    // The local listener's socket, in a directory of its own that lives as long as the broker.
    let local_dir = match args.local {
        false => None,
        true => Some(tempfile::Builder::new().prefix("ringmq-bench-local-").tempdir()?),
    };
    let local_socket = local_dir.as_ref().map(|dir| dir.path().join("local.sock"));
    let mut broker_args = broker_args;
    let tls_broker = match args.tls {
        false => None,
        true => {
            let broker_args = broker_args.clone();
            let scram = args.scram;
            let secure =
                tokio::task::spawn_blocking(move || broker::TlsBroker::start(&broker_args, scram))
                    .await??;
            secure.provision().await?;
            Some(secure)
        }
    };
    if let Some(socket) = &local_socket {
        broker_args.extend(["--local-listen".to_owned(), socket.display().to_string()]);
    }
    let started = match &args.broker {
        Some(_) => None,
        None => Some(
            tokio::task::spawn_blocking(move || broker::BrokerProcess::start(&broker_args))
                .await??,
        ),
    };
    let address = args
        .broker
        .clone()
        .or_else(|| started.as_ref().map(|broker| broker.address.clone()))
        .context("broker address")?;
    let kafka_address = match &started {
        Some(broker) => broker.kafka.clone(),
        None => args.kafka_broker.clone(),
    };
    if let Some(rounds) = args.rebalance {
        let session = Duration::from_millis(args.session_timeout_ms);
        let measured = rebalance::measure(&address, args.partitions, session, rounds).await?;
        rebalance::print(&measured, args.partitions, session);
        return Ok(());
    }
    let broker_label = match &args.broker {
        Some(address) => format!("external at {address}"),
        None if args.broker_arg.is_empty() => format!("ringmq started by the bench at {address}"),
        None => {
            format!("ringmq started by the bench at {address} with {}", args.broker_arg.join(" "))
        }
    };
    let host = broker::host_description();
    let commit = broker::commit();
    let mut reports = Vec::new();
    for (index, point) in points.iter().copied().enumerate() {
        let size = point.size;
        let count = match (args.count, args.duration, point.rate) {
            (Some(count), _, _) => count,
            (None, seconds, Some(rate)) => {
                // Paced: the rate says how many messages fill the time.
                ((rate as f64 * seconds.unwrap_or(RATE_SWEEP_SECONDS)) as u64).max(1000)
            }
            (None, Some(seconds), None) => {
                estimate_count(&address, &kafka_address, &args, size, seconds, index).await?
            }
            (None, None, None) => (512 << 20) / size.max(16) as u64,
        };
        let topic = format!("bench-{}-{size}-{index}", std::process::id());
        let workload = Workload {
            rate: point.rate,
            ..workload_from(&args, topic, size, count, &kafka_address)
        };
        let baseline = if args.baseline {
            let bytes = count * size as u64;
            let tcp = tokio::task::spawn_blocking(move || workload::baseline(bytes)).await??;
            let dir = args.disk_dir.clone().unwrap_or_else(std::env::temp_dir);
            let batch = workload.batch_bytes;
            let disk =
                tokio::task::spawn_blocking(move || workload::disk_baseline(&dir, bytes, batch))
                    .await??;
            Some(Yardsticks { tcp, disk })
        } else {
            None
        };
        let report =
            measure(&address, &args, &workload, baseline, &broker_label, &host, &commit).await?;
        if !args.json && !args.csv {
            if index > 0 {
                println!();
            }
            println!("{}", report.table());
        }
        if let Some(secure) = &tls_broker {
            let mut over_tls = workload.clone();
            over_tls.topic = format!("{}-tls", workload.topic);
            over_tls.tls = Some(secure.tls.clone());
            over_tls.credentials = secure.client_login();
            let label =
                format!("ringmq with TLS started by the bench at {}", secure.broker.address);
            let tls_report =
                measure(&secure.broker.address, &args, &over_tls, None, &label, &host, &commit)
                    .await?;
            if !args.json && !args.csv {
                println!("\n{}", tls_report.table());
                println!("{}", tls_ratio(&report, &tls_report));
            }
            reports.push(report.clone());
            reports.push(tls_report);
            continue;
        }
        if let Some(socket) = &local_socket {
            let local = Workload {
                topic: format!("{}-local", workload.topic),
                local: Some(socket.clone()),
                ..workload.clone()
            };
            let label = format!("{broker_label}, consumers on its local listener");
            let local_report =
                measure(&address, &args, &local, None, &label, &host, &commit).await?;
            if !args.json && !args.csv {
                println!("\n{}", local_report.table());
            }
            let unread = match workload.mode {
                Mode::EndToEnd => {
                    let unread = Workload {
                        topic: format!("{}-unread", workload.topic),
                        mode: Mode::Produce,
                        ..workload.clone()
                    };
                    let label = format!("{broker_label}, no consumer");
                    let unread_report =
                        measure(&address, &args, &unread, None, &label, &host, &commit).await?;
                    if !args.json && !args.csv {
                        println!("\n{}", unread_report.table());
                    }
                    Some(unread_report)
                }
                _ => None,
            };
            if !args.json && !args.csv {
                println!("{}", local_ratio(&report, &local_report, unread.as_ref()));
            }
            reports.push(report);
            reports.push(local_report);
            reports.extend(unread);
            continue;
        }
        reports.push(report);
    }
    if args.json {
        let text = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(&reports)?
        };
        println!("{text}");
    }
    if args.csv {
        println!("{}", Report::csv_header());
        for report in &reports {
            println!("{}", report.csv_row());
        }
    }
    if let Some(path) = &args.chart {
        let series = match &args.sweep {
            Some(sweep) if sweep.starts_with("rates=") => chart::Series::Rates,
            _ => chart::Series::Sizes,
        };
        chart::draw(path, series, &reports)?;
        eprintln!("chart written to {}", path.display());
    }
    drop(started);
    drop(local_dir);
    Ok(())
}

/// How long each run of a rate sweep lasts without `--count` or `--duration`, seconds.
const RATE_SWEEP_SECONDS: f64 = 3.0;

/// One run of a series: its message size and, for a paced run, its offered rate.
#[derive(Debug, Clone, Copy)]
struct Point {
    size: usize,
    rate: Option<u64>,
}

/// The runs `--sweep` asks for (one, from `--size` and `--rate`, without it).
fn sweep_points(args: &Args) -> anyhow::Result<Vec<Point>> {
    let Some(series) = &args.sweep else {
        return Ok(vec![Point { size: args.size, rate: args.rate }]);
    };
    fn list(text: &str) -> Vec<&str> {
        text.split(',').map(str::trim).collect()
    }
    if let Some(sizes) = series.strip_prefix("sizes=") {
        return list(sizes)
            .into_iter()
            .map(|size| {
                size.parse::<usize>()
                    .map(|size| Point { size, rate: args.rate })
                    .with_context(|| format!("bad size {size:?} in --sweep"))
            })
            .collect();
    }
    if let Some(rates) = series.strip_prefix("rates=") {
        return list(rates)
            .into_iter()
            .map(|rate| {
                parse_rate(rate)
                    .map(|rate| Point { size: args.size, rate: Some(rate) })
                    .with_context(|| format!("bad rate {rate:?} in --sweep"))
            })
            .collect();
    }
    anyhow::bail!("--sweep takes sizes=<bytes>,<bytes>,... or rates=<msgs/s>,<msgs/s>,...")
}

/// A rate in messages per second: `20000`, `20k` or `1.5M`; at least 1.
fn parse_rate(text: &str) -> anyhow::Result<u64> {
    let (number, scale) = match text.char_indices().last() {
        Some((at, 'k' | 'K')) => (&text[..at], 1e3),
        Some((at, 'm' | 'M')) => (&text[..at], 1e6),
        _ => (text, 1.0),
    };
    let value: f64 = number.parse().context("expected a number of msgs/s such as 20000 or 20k")?;
    let rate = (value * scale).round();
    anyhow::ensure!((1.0..=1e9).contains(&rate), "a rate is 1 to 10^9 msgs/s");
    Ok(rate as u64)
}

/// What `--baseline` measured, MB/s.
#[derive(Debug, Clone, Copy)]
struct Yardsticks {
    /// The same bytes through a loopback socket.
    tcp: f64,
    /// The same bytes written in batch-size writes, one `fdatasync` each.
    disk: f64,
}

/// Runs one workload and turns it, and the broker's counters, into a report.
#[allow(clippy::too_many_arguments, reason = "everything a report names")]
async fn measure(
    address: &str,
    args: &Args,
    workload: &Workload,
    baseline: Option<Yardsticks>,
    broker_label: &str,
    host: &str,
    commit: &str,
) -> anyhow::Result<Report> {
    let mut admin = workload::connect(address, workload).await?;
    let progress = Arc::new(AtomicU64::new(0));
    let bar = ProgressBar::new(workload.count);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} msgs ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("{:?} {} B", workload.mode, workload.size));
    let ticker = {
        let bar = bar.clone();
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            // Shown only on runs longer than a second or two.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            loop {
                bar.set_position(progress.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    workload::prepare(address, workload).await?;
    let before = admin.stats().await?;
    let bench_before = process_usage();
    let measured = workload::run(address, workload, &progress).await?;
    let bench_after = process_usage();
    let after = admin.stats().await?;
    // Gone once measured: a series would otherwise pile up rings the kernel must write back
    // (their pages are dirty from the pre-fault) while the later runs are measured.
    admin
        .delete_topic(&workload.topic)
        .await
        .with_context(|| format!("deleting the bench topic {}", workload.topic))?;
    ticker.abort();
    bar.finish_and_clear();

    let delta = |pick: fn(&BrokerStats) -> u64| pick(&after).saturating_sub(pick(&before)) as f64;
    let messages_in = delta(|stats| stats.records_in).max(1.0);
    if workload.mode != Mode::Consume && (messages_in as u64) < workload.count {
        // Every message sent must have been counted in by the broker.
        anyhow::bail!("the broker counted {messages_in} records in, {} were sent", workload.count);
    }
    let moved = workload.count as f64;
    let bytes = workload.size as f64;
    let per_second = |phase: Option<plan::Phase>| {
        phase.map(|phase| phase.messages as f64 / phase.seconds.max(1e-9))
    };
    let produce_msgs = per_second(measured.produce);
    let consume_msgs = per_second(measured.consume);
    let consume_mb = consume_msgs.map(|msgs| msgs * bytes / 1e6);
    let latency = &measured.latency;
    let quantile = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        mode: workload.mode,
        protocol: workload.protocol,
        transport: match (&workload.tls, &workload.credentials, &workload.local) {
            (Some(_), Some(_), _) => "tls-scram",
            (Some(_), None, _) => "tls",
            (None, _, Some(_)) => "local",
            _ => "tcp",
        },
        local_batches: measured.local_reads.map(|reads| reads.batches),
        local_waits: measured.local_reads.map(|reads| reads.waits),
        message_size: workload.size,
        messages: workload.count,
        producers: workload.producers,
        consumers: workload.consumers,
        partitions: workload.partitions,
        acks: workload.acks.name().to_owned(),
        broker_sync: if args.broker.is_some() {
            "as configured".to_owned()
        } else {
            args.sync.clone()
        },
        batch_bytes: workload.batch_bytes,
        linger_ms: args.linger_ms,
        fetch_min_bytes: workload.fetch_min_bytes,
        target_rate: workload.rate,
        produce_msgs_per_s: produce_msgs,
        produce_mb_per_s: produce_msgs.map(|msgs| msgs * bytes / 1e6),
        consume_msgs_per_s: consume_msgs,
        consume_mb_per_s: consume_mb,
        baseline_mb_per_s: baseline.map(|yardsticks| yardsticks.tcp),
        consume_of_baseline: consume_mb
            .zip(baseline)
            .map(|(consume, yardsticks)| consume / yardsticks.tcp),
        disk_mb_per_s: baseline.map(|yardsticks| yardsticks.disk),
        produce_of_disk: produce_msgs
            .map(|msgs| msgs * bytes / 1e6)
            .zip(baseline)
            .map(|(produce, yardsticks)| produce / yardsticks.disk),
        latency_kind: if workload.mode == Mode::Produce {
            "produce to ack, 1 in 16 sampled"
        } else {
            "send to receive"
        },
        latency_us: Latency {
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max: latency.max() as f64 / 1000.0,
            samples: latency.len(),
        },
        // Per message moved: in (produce, end to end) or out (consume only).
        broker_allocs_per_msg: delta(|stats| stats.allocations)
            / messages_in.max(delta(|stats| stats.records_out)).max(moved),
        produce_copy_ratio: ratio(
            delta(|stats| stats.produce_copy_bytes),
            delta(|stats| stats.bytes_in),
        ),
        fetch_copy_ratio: ratio(
            delta(|stats| stats.fetch_copy_bytes),
            delta(|stats| stats.bytes_out),
        ),
        broker_cpu_s_per_million_msgs: delta(|stats| stats.cpu_time_us) / 1e6 / moved * 1e6,
        bench_cpu_s_per_million_msgs: bench_after
            .cpu_time_us
            .saturating_sub(bench_before.cpu_time_us) as f64
            / 1e6
            / moved
            * 1e6,
        broker_peak_rss_bytes: after.peak_rss_bytes,
        broker_records_in: delta(|stats| stats.records_in) as u64,
        broker_records_out: delta(|stats| stats.records_out) as u64,
        broker_bytes_in: delta(|stats| stats.bytes_in) as u64,
        broker_bytes_out: delta(|stats| stats.bytes_out) as u64,
        broker: broker_label.to_owned(),
        client_threads: args.client_threads,
        client_busy_poll_us: args.client_busy_poll_us,
        host: host.to_owned(),
        commit: commit.to_owned(),
    };
    Ok(report)
}

/// The TLS run's throughput as a fraction of the plaintext run's, measured in the same invocation.
fn tls_ratio(plain: &Report, tls: &Report) -> String {
    let part = |name: &str, plain: Option<f64>, tls: Option<f64>| {
        plain.zip(tls).map(|(plain, tls)| format!("{name} {:.2}", tls / plain.max(1e-9)))
    };
    let parts: Vec<String> = [
        part("produce", plain.produce_msgs_per_s, tls.produce_msgs_per_s),
        part("consume", plain.consume_msgs_per_s, tls.consume_msgs_per_s),
        part(
            "p99 latency",
            Some(plain.latency_us.p99).filter(|_| plain.latency_us.samples > 0),
            Some(tls.latency_us.p99).filter(|_| tls.latency_us.samples > 0),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!("{:<34} {}", "TLS / plaintext", parts.join(", "))
}

/// The local readers' run against the TCP consumers' (and, end to end, the producers' alone),
/// measured in the same invocation against the same broker.
fn local_ratio(tcp: &Report, local: &Report, unread: Option<&Report>) -> String {
    let mut parts = Vec::new();
    if let (Some(tcp), Some(local)) = (tcp.consume_msgs_per_s, local.consume_msgs_per_s) {
        parts.push(format!("consume {:.2}", local / tcp.max(1e-9)));
    }
    if tcp.latency_us.samples > 0 && local.latency_us.samples > 0 && tcp.mode != Mode::Produce {
        parts.push(format!(
            "p99 latency {:.2}",
            local.latency_us.p99 / tcp.latency_us.p99.max(1e-9)
        ));
    }
    let mut text = format!("{:<34} {}", "local / TCP", parts.join(", "));
    if let Some(unread) = unread {
        text.push_str(&format!(
            "\n{:<34} no consumer {:.2}, local consumer {:.2}, TCP consumer {:.2}",
            "broker CPU s per million msgs",
            unread.broker_cpu_s_per_million_msgs,
            local.broker_cpu_s_per_million_msgs,
            tcp.broker_cpu_s_per_million_msgs,
        ));
    }
    text
}

/// `part / whole`, or 0 when nothing moved.
fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole
    } else {
        0.0
    }
}

/// For `--duration`: a short probe at this size, scaled to the requested time.
/// The workload the flags describe, for one message size and count.
fn workload_from(args: &Args, topic: String, size: usize, count: u64, kafka: &str) -> Workload {
    Workload {
        tls: None,
        credentials: None,
        busy_poll: Duration::from_micros(args.client_busy_poll_us),
        local_spin: Duration::from_micros(args.local_spin_us),
        mode: args.mode,
        topic,
        producers: args.producers,
        consumers: args.consumers,
        partitions: args.partitions,
        capacity: args.capacity,
        size,
        count,
        warmup: args.warmup,
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms),
        acks: args.acks,
        rate: args.rate,
        pacer: args.pacer,
        max_in_flight: args.max_in_flight,
        idempotence: !args.no_idempotence,
        fetch_min_bytes: fetch_min_bytes(args),
        protocol: args.protocol,
        kafka_address: kafka.to_owned(),
        local: None,
    }
}

async fn estimate_count(
    address: &str,
    kafka: &str,
    args: &Args,
    size: usize,
    seconds: f64,
    index: usize,
) -> anyhow::Result<u64> {
    let topic = format!("bench-probe-{}-{size}-{index}", std::process::id());
    let probe = Workload {
        mode: Mode::Produce,
        consumers: 1,
        warmup: 0,
        fetch_min_bytes: 1,
        ..workload_from(args, topic, size, 20_000, kafka)
    };
    workload::prepare(address, &probe).await?;
    let started = std::time::Instant::now();
    workload::run(address, &probe, &Arc::new(AtomicU64::new(0))).await?;
    let rate = probe.count as f64 / started.elapsed().as_secs_f64().max(1e-6);
    Ok(((rate * seconds) as u64).max(1000))
}
