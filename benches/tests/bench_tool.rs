//! `ringmq-bench` runs against the real broker and its counters are right: every message it sends
//! is counted in by the broker, consumed back out, copied exactly once on the way in and never on
//! the way out. Figures (speed) are not asserted here: they belong in the benchmark report.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(["--json", "--warmup", "500", "--capacity", "16MiB"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn end_to_end_counters_add_up() {
    let report =
        bench(&["--mode", "end-to-end", "--count", "20000", "--size", "512", "--baseline"]);
    for key in [
        "produce_msgs_per_s",
        "produce_mb_per_s",
        "consume_msgs_per_s",
        "consume_mb_per_s",
        "baseline_mb_per_s",
        "broker_allocs_per_msg",
        "produce_copy_ratio",
        "fetch_copy_ratio",
    ] {
        assert!(report[key].as_f64().is_some_and(|value| value >= 0.0), "{key}: {}", report[key]);
    }
    for key in ["p50", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][key].as_f64().is_some_and(|value| value > 0.0),
            "latency {key}"
        );
    }
    assert_eq!(report["latency_us"]["samples"], 20000, "one latency sample per message");
    assert_eq!(report["broker_records_in"], 20000);
    assert!(report["broker_records_out"].as_u64().unwrap() >= 20000);
    assert_eq!(report["produce_copy_ratio"].as_f64().unwrap(), 1.0, "one copy into the log");
    assert_eq!(
        report["fetch_copy_ratio"].as_f64().unwrap(),
        0.0,
        "fetches written from the mapping"
    );
    let bytes_in = report["broker_bytes_in"].as_u64().unwrap();
    assert!(bytes_in > 20000 * 512 && bytes_in < 20000 * 600, "batch bytes in: {bytes_in}");
}

#[test]
fn sweep_writes_a_chart_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args([
            "--mode",
            "produce",
            "--count",
            "5000",
            "--warmup",
            "0",
            "--capacity",
            "16MiB",
            "--csv",
            "--sweep",
            "sizes=64,1024",
            "--chart",
        ])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let csv = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("mode,message_size"));
    assert!(lines[0].ends_with(",protocol,transport,disk_mb_per_s,target_rate"), "{}", lines[0]);
    assert!(lines[1].starts_with("produce,64,5000"), "{}", lines[1]);
    // No --baseline: no disk yardstick; no --rate: no target rate.
    assert!(lines[1].ends_with(",native,tcp,,"), "{}", lines[1]);
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("throughput by message size"));
}

/// A rate sweep is one paced run per rate, each `rate x --duration` messages long, and its chart
/// is the latency percentiles against the offered rate, naming the run it shows.
#[test]
fn rate_sweep_charts_latency_against_the_offered_rate() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("latency.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(["--warmup", "200", "--capacity", "16MiB", "--size", "256", "--linger-ms", "0"])
        .args(["--duration", "0.5", "--sweep", "rates=2k,4000", "--json", "--chart"])
        .arg(&chart)
        .args(["--client-threads", "1", "--broker-arg=--worker-threads=1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    for (report, rate) in reports.iter().zip([2000, 4000]) {
        assert_eq!(report["target_rate"], rate);
        assert_eq!(report["messages"], rate / 2, "rate x 0.5 s");
        assert_eq!(report["latency_us"]["samples"], rate / 2);
        assert_eq!(report["broker_records_in"], rate / 2);
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("against offered rate"), "{svg}");
    for named in [
        "p50",
        "p99",
        "p99.9",
        "256 B, 1 producer(s) + 1 consumer(s)",
        "broker --worker-threads=1, client threads 1",
    ] {
        assert!(svg.contains(named), "the chart names {named}");
    }
}

#[test]
fn a_bad_sweep_is_one_line() {
    for (sweep, said) in [
        ("rates=10k,fast", "bad rate \"fast\" in --sweep"),
        ("rates=0", "a rate is 1 to 10^9 msgs/s"),
        ("speeds=1,2", "--sweep takes sizes="),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
            .args(["--sweep", sweep])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(said), "{sweep}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn bad_arguments_are_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(["--size", "8", "--count", "10"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--size must be at least 16 bytes"), "{stderr}");
}

#[cfg(not(feature = "kafka"))]
#[test]
fn kafka_mode_without_the_feature_says_how_to_build_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(["--protocol", "kafka", "--count", "10"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--features kafka"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The Kafka mode (librdkafka through the broker's Kafka listener) counts the same way: one copy
/// in, none out. Run with `cargo test -p ringmq-benches --features kafka --test bench_tool`.
#[cfg(feature = "kafka")]
#[test]
fn kafka_mode_counters_add_up() {
    let report = bench(&[
        "--protocol",
        "kafka",
        "--mode",
        "end-to-end",
        "--count",
        "20000",
        "--size",
        "512",
        "--no-idempotence",
    ]);
    assert_eq!(report["protocol"], "kafka");
    assert_eq!(report["latency_us"]["samples"], 20000, "one latency sample per message");
    assert_eq!(report["broker_records_in"], 20000);
    assert!(report["broker_records_out"].as_u64().unwrap() >= 20000);
    assert_eq!(report["produce_copy_ratio"].as_f64().unwrap(), 1.0, "one copy into the log");
    assert_eq!(report["fetch_copy_ratio"].as_f64().unwrap(), 0.0, "fetches from the mapping");
    assert!(report["consume_msgs_per_s"].as_f64().is_some_and(|value| value > 0.0));
}

/// `--tls` runs the same workload over TLS against a second broker, right after the plaintext
/// run: two reports, the second over TLS, each with every message counted in and out.
#[test]
fn tls_runs_beside_the_plaintext_run() {
    let reports = bench(&["--tls", "--mode", "end-to-end", "--count", "5000", "--size", "256"]);
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["transport"], "tcp");
    assert_eq!(reports[1]["transport"], "tls");
    for report in reports {
        assert_eq!(report["broker_records_in"], 5000);
        assert!(report["broker_records_out"].as_u64().unwrap() >= 5000);
        assert_eq!(report["latency_us"]["samples"], 5000);
    }
    assert!(reports[1]["broker"].as_str().unwrap().contains("with TLS"));
}

/// `--local` runs the same workload again with the consumers reading the rings in place through
/// the broker's local listener, then (end to end) with no consumer: three reports, the local
/// one with every message received and none of it fetched from the broker.
#[test]
fn local_runs_beside_the_tcp_run() {
    let reports = bench(&["--local", "--mode", "end-to-end", "--count", "5000", "--size", "256"]);
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0]["transport"], "tcp");
    assert_eq!(reports[1]["transport"], "local");
    assert_eq!(reports[2]["mode"], "produce");
    for report in reports {
        assert_eq!(report["broker_records_in"], 5000);
    }
    assert!(reports[0]["broker_records_out"].as_u64().unwrap() >= 5000);
    // Local readers fetch nothing: the broker hands out no record.
    assert_eq!(reports[1]["broker_records_out"], 0);
    assert_eq!(reports[1]["latency_us"]["samples"], 5000);
    assert!(reports[1]["local_batches"].as_u64().unwrap() > 0);
    assert!(reports[1]["local_waits"].is_u64());
    assert_eq!(reports[2]["broker_records_out"], 0);
}

/// A consume-only `--local` run reads the prepared messages from the mapped ring.
#[test]
fn local_consume_reads_every_message() {
    let reports = bench(&["--local", "--mode", "consume", "--count", "5000", "--size", "256"]);
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1]["transport"], "local");
    assert!(reports[1]["consume_msgs_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(reports[1]["broker_records_out"], 0);
}

/// `--local` with a mode that has no consumer is refused in one line.
#[test]
fn local_without_consumers_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(["--local", "--mode", "produce"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--local measures consumers"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
