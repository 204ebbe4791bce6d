//! Real Kafka clients against the real `ringmq` binary's Kafka listener, on loopback: kcat
//! (librdkafka's command-line tool), and the Python clients kafka-python and confluent-kafka
//! through the scripts in `tests/kafka/`. `.ci/run` installs them; run elsewhere without them,
//! these tests fail and say what to install, unless `RINGMQ_SKIP_KAFKA_CLIENTS=1`.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{workspace_binary, Broker};

/// Whether the tests needing `tool` run: it is installed, or skipping was asked for.
fn available(tool: &str, check: &[&str], install: &str) -> bool {
    if std::env::var_os("RINGMQ_SKIP_KAFKA_CLIENTS").is_some() {
        eprintln!("skipped: RINGMQ_SKIP_KAFKA_CLIENTS is set");
        return false;
    }
    let found = Command::new(tool)
        .args(check)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(found, "{tool} {check:?} failed: install {install} (.ci/run does), or set RINGMQ_SKIP_KAFKA_CLIENTS=1");
    true
}

fn kcat_available() -> bool {
    available("kcat", &["-V"], "kcat (apt-get install kcat)")
}

fn python_available(module: &str) -> bool {
    available(
        "python3",
        &["-c", &format!("import {module}")],
        "the Python Kafka clients (pip install kafka-python confluent-kafka lz4 python-snappy zstandard)",
    )
}

/// A broker for Kafka clients: groups form quickly.
fn broker() -> Broker {
    Broker::start(&["--group-initial-rebalance-delay-ms", "200"])
}

/// Runs a command with `stdin`, failing the test (with its output) if it fails or outlives
/// `timeout`.
fn run(command: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let pid = child.id();
    let (done, waited) = std::sync::mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if waited.recv_timeout(timeout).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    writer.join().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn kcat(broker: &Broker, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    run(Command::new("kcat").args(["-b", &broker.kafka]).args(args), stdin, Duration::from_secs(60))
        .stdout
}

fn cli(broker: &Broker, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let binary = workspace_binary("ringmq-cli", "ringmq-cli");
    run(
        Command::new(binary).args(args).args(["--broker", &broker.address]),
        stdin,
        Duration::from_secs(60),
    )
    .stdout
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("kafka")
}

/// Runs a script of `tests/kafka/` against the broker; returns its output.
fn script(broker: &Broker, name: &str, client: &str, extra: &[&str]) -> String {
    let output = run(
        Command::new("python3")
            .arg(scripts().join(name))
            .args([client, &broker.kafka])
            .args(extra)
            .env("PYTHONUNBUFFERED", "1"),
        b"",
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(stdout.lines().last() == Some("ok"), "{name} {client} did not finish:\n{stdout}");
    eprintln!("{stdout}");
    stdout
}

#[test]
fn kcat_lists_metadata_produces_a_file_and_consumes_from_an_offset() {
    if !kcat_available() {
        return;
    }
    let broker = broker();
    let file = tempfile::NamedTempFile::new().unwrap();
    let lines: Vec<String> = (0..1000).map(|i| format!("line {i:04}")).collect();
    std::fs::write(file.path(), lines.join("\n") + "\n").unwrap();
    // A file, one message per line, to partition 0 of a topic created on first use.
    kcat(&broker, &["-P", "-t", "kcat-file", "-p", "0", "-l", file.path().to_str().unwrap()], b"");

    let metadata = String::from_utf8(kcat(&broker, &["-L", "-t", "kcat-file"], b"")).unwrap();
    assert!(metadata.contains(&format!("broker 0 at {}", broker.kafka)), "{metadata}");
    assert!(metadata.contains("topic \"kcat-file\" with 1 partitions"), "{metadata}");

    let from_990 =
        kcat(&broker, &["-C", "-t", "kcat-file", "-o", "990", "-e", "-f", "%o %s\n"], b"");
    let expected: String = (990..1000).map(|i| format!("{i} line {i:04}\n")).collect();
    assert_eq!(String::from_utf8(from_990).unwrap(), expected);
    // A negative offset counts back from the end.
    let last_two = kcat(&broker, &["-C", "-t", "kcat-file", "-o", "-2", "-e", "-f", "%o\n"], b"");
    assert_eq!(String::from_utf8(last_two).unwrap(), "998\n999\n");
}

#[test]
fn kcat_keys_headers_and_timestamps_round_trip() {
    if !kcat_available() {
        return;
    }
    let broker = broker();
    let input = b"alpha:first\nbeta:second\n";
    kcat(&broker, &["-P", "-t", "kcat-keys", "-K:", "-H", "origin=kcat", "-H", "n=1"], input);
    let out = kcat(&broker, &["-C", "-t", "kcat-keys", "-e", "-f", "%k=%s|%h|%T\n"], b"");
    let out = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, (key, value)) in rows.iter().zip([("alpha", "first"), ("beta", "second")]) {
        let fields: Vec<&str> = row.split('|').collect();
        assert_eq!(fields[0], format!("{key}={value}"));
        assert_eq!(fields[1], "origin=kcat,n=1");
        let timestamp: i64 = fields[2].parse().unwrap();
        assert!(timestamp > 1_600_000_000_000, "a creation time in ms: {timestamp}");
    }
}

#[test]
fn a_kcat_consumer_group_commits_and_resumes() {
    if !kcat_available() {
        return;
    }
    let broker = broker();
    let first: String = (0..50).map(|i| format!("{i}\n")).collect();
    kcat(&broker, &["-P", "-t", "kcat-group"], first.as_bytes());
    let group = [
        "-G",
        "kcat-readers",
        "kcat-group",
        "-X",
        "auto.offset.reset=earliest",
        "-e",
        "-f",
        "%s\n",
    ];
    let read = kcat(&broker, &group, b"");
    assert_eq!(String::from_utf8(read).unwrap(), first);
    let second: String = (50..60).map(|i| format!("{i}\n")).collect();
    kcat(&broker, &["-P", "-t", "kcat-group"], second.as_bytes());
    // The group resumes from its commit: only the new messages.
    let read = kcat(&broker, &group, b"");
    assert_eq!(String::from_utf8(read).unwrap(), second);
    // The native CLI sees the Kafka group and its committed offset.
    let described = cli(&broker, &["group", "describe", "kcat-readers"], b"");
    let described = String::from_utf8(described).unwrap();
    assert!(described.contains("kcat-group") && described.contains("60"), "{described}");
}

#[test]
fn messages_from_ringmq_cli_are_read_byte_identical_by_kcat_and_back() {
    if !kcat_available() {
        return;
    }
    let broker = broker();
    // Bytes that trip encoders: multi-byte UTF-8, invalid UTF-8, control bytes, a carriage
    // return, format characters, a long line, an empty line.
    let mut lines: Vec<Vec<u8>> = vec![
        "héllo wörld ✓ 日本".as_bytes().to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01, 0x7f, b'x'],
        b"tab\there \\ backslash %s %d %% \"quoted\"".to_vec(),
        b"carriage return\r".to_vec(),
        Vec::new(),
        vec![b'z'; 10_000],
    ];
    lines.extend((0..200).map(|i| format!("numbered {i}").into_bytes()));
    let mut input = lines.join(&b'\n');
    input.push(b'\n');

    cli(&broker, &["topic", "create", "from-cli", "--partitions", "1"], b"");
    cli(&broker, &["produce", "from-cli"], &input);
    let read = kcat(&broker, &["-C", "-t", "from-cli", "-e", "-D", "\n", "-f", "%s\n"], b"");
    assert!(read == input, "kcat read what ringmq-cli produced, byte for byte");

    // kcat -P skips empty lines (its own rule); everything else must arrive as it was.
    lines.retain(|line| !line.is_empty());
    let mut input = lines.join(&b'\n');
    input.push(b'\n');
    kcat(&broker, &["-P", "-t", "from-kcat", "-p", "0"], &input);
    let read = cli(&broker, &["consume", "from-kcat"], b"");
    assert!(read == input, "ringmq-cli read what kcat produced, byte for byte");
}

#[test]
fn kafka_python_round_trips_100k_messages_and_every_codec() {
    if python_available("kafka") {
        script(&broker(), "roundtrip.py", "kafka-python", &[]);
    }
}

#[test]
fn confluent_kafka_round_trips_100k_messages_and_every_codec() {
    if python_available("confluent_kafka") {
        script(&broker(), "roundtrip.py", "confluent-kafka", &[]);
    }
}

fn group_member_killed(client: &str) {
    let broker = broker();
    let work = tempfile::tempdir().unwrap();
    script(&broker, "group_kill.py", client, &[work.path().to_str().unwrap()]);
}

#[test]
fn kafka_python_group_member_killed_its_partitions_resume_from_the_commit() {
    if python_available("kafka") {
        group_member_killed("kafka-python");
    }
}

#[test]
fn confluent_kafka_group_member_killed_its_partitions_resume_from_the_commit() {
    if python_available("confluent_kafka") {
        group_member_killed("confluent-kafka");
    }
}

fn static_member_restarted(client: &str) {
    let broker = broker();
    let work = tempfile::tempdir().unwrap();
    script(&broker, "static_member.py", client, &[work.path().to_str().unwrap()]);
}

#[test]
fn kafka_python_static_member_restarted_keeps_its_partitions() {
    if python_available("kafka") {
        static_member_restarted("kafka-python");
    }
}

#[test]
fn confluent_kafka_static_member_restarted_keeps_its_partitions() {
    if python_available("confluent_kafka") {
        static_member_restarted("confluent-kafka");
    }
}

/// Runs `idempotent_restart.py`, killing the broker (SIGKILL) and starting it again on the same
/// data and ports once a third of the messages are acknowledged.
fn idempotent_producer_across_a_kill(client: &str) {
    let mut broker = broker();
    let mut child = Command::new("python3")
        .arg(scripts().join("idempotent_restart.py"))
        .args([client, &broker.kafka])
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut killed, mut output) = (false, String::new());
    for line in stdout.lines() {
        let line = line.unwrap();
        output.push_str(&line);
        output.push('\n');
        let acked = line.strip_prefix("acked ").and_then(|count| count.parse::<u32>().ok());
        if !killed && acked.is_some_and(|count| count >= 6000) {
            broker.restart_same_port();
            killed = true;
        }
        assert!(Instant::now() < deadline, "the producer took over 300 s:\n{output}");
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(killed, "the broker was never killed:\n{output}");
    assert!(status.success() && output.ends_with("ok\n"), "{output}\n{stderr}\n{}", broker.log());
    eprintln!("{output}");
}

#[test]
fn kafka_python_idempotent_producer_across_a_broker_kill_stores_each_message_once() {
    if python_available("kafka") {
        idempotent_producer_across_a_kill("kafka-python");
    }
}

#[test]
fn confluent_kafka_idempotent_producer_across_a_broker_kill_stores_each_message_once() {
    if python_available("confluent_kafka") {
        idempotent_producer_across_a_kill("confluent-kafka");
    }
}

/// The Kafka listener over TLS: kcat (librdkafka) and kafka-python with `security.protocol=SSL`
/// and the test's CA, against the broker's certificate for 127.0.0.1, which the metadata
/// advertises; a plain client gets nothing.
#[test]
fn kcat_and_kafka_python_produce_and_consume_over_tls() {
    if !kcat_available() || !python_available("kafka") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let authority = support::certs::Authority::new(dir.path(), "ca");
    let server = authority.broker("broker");
    let broker = Broker::start(&[
        "--tls-cert",
        server.cert_file.to_str().unwrap(),
        "--tls-key",
        server.key_file.to_str().unwrap(),
    ]);
    let ca = format!("ssl.ca.location={}", authority.cert_file.display());
    let ssl = ["-X", "security.protocol=SSL", "-X", &ca];
    let lines: String = (0..500).map(|i| format!("secret line {i:03}\n")).collect();
    kcat(&broker, &[&ssl[..], &["-P", "-t", "tls-kcat", "-p", "0"]].concat(), lines.as_bytes());
    let read = kcat(&broker, &[&ssl[..], &["-C", "-t", "tls-kcat", "-e", "-q"]].concat(), b"");
    assert_eq!(String::from_utf8(read).unwrap(), lines);

    // kafka-python reads what kcat wrote and writes more, which kcat reads.
    let program = r#"
import sys
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
address, ca = sys.argv[1], sys.argv[2]
consumer = KafkaConsumer(bootstrap_servers=address, security_protocol="SSL", ssl_cafile=ca,
                         auto_offset_reset="earliest", consumer_timeout_ms=10000)
consumer.assign([TopicPartition("tls-kcat", 0)])
values = [message.value.decode() for _, message in zip(range(500), consumer)]
assert values == ["secret line %03d" % i for i in range(500)], values[:3]
producer = KafkaProducer(bootstrap_servers=address, security_protocol="SSL", ssl_cafile=ca,
                         acks="all")
for i in range(100):
    producer.send("tls-kcat", value=("python line %03d" % i).encode(), partition=0)
producer.flush()
print("ok")
"#;
    let ca_file = authority.cert_file.to_str().unwrap();
    let output = run(
        Command::new("python3").args(["-c", program, &broker.kafka, ca_file]),
        b"",
        Duration::from_secs(120),
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    let tail = kcat(
        &broker,
        &[&ssl[..], &["-C", "-t", "tls-kcat", "-o", "500", "-e", "-q"]].concat(),
        b"",
    );
    let expected: String = (0..100).map(|i| format!("python line {i:03}\n")).collect();
    assert_eq!(String::from_utf8(tail).unwrap(), expected);
    assert!(broker.log().contains("protocol=\"kafka\" tls=true"), "{}", broker.log());
}

/// A broker with TLS and `--auth required`, its first user from `RINGMQ_ROOT_USER`.
fn authenticating_broker(dir: &Path) -> (Broker, PathBuf) {
    let authority = support::certs::Authority::new(dir, "ca");
    let server = authority.broker("broker");
    let broker = Broker::start_with_env(
        &[
            "--tls-cert",
            server.cert_file.to_str().unwrap(),
            "--tls-key",
            server.key_file.to_str().unwrap(),
            "--auth",
            "required",
            "--group-initial-rebalance-delay-ms",
            "200",
        ],
        &[("RINGMQ_ROOT_USER", "admin"), ("RINGMQ_ROOT_PASSWORD", "s3cret pass")],
    );
    (broker, authority.cert_file)
}

/// Runs kcat over SASL_SSL as admin with `login` (mechanism, password); whether it succeeded and
/// its output.
fn kcat_sasl(broker: &Broker, ca: &Path, login: (&str, &str), args: &[&str]) -> (bool, Vec<u8>) {
    let ca = format!("ssl.ca.location={}", ca.display());
    let mechanism = format!("sasl.mechanisms={}", login.0);
    let password = format!("sasl.password={}", login.1);
    let mut command = Command::new("kcat");
    command.args(["-b", &broker.kafka, "-X", "security.protocol=SASL_SSL", "-X", &ca]);
    command.args(["-X", &mechanism, "-X", "sasl.username=admin", "-X", &password]);
    command.args(args).stdin(Stdio::null());
    let output = command.output().unwrap();
    (output.status.success(), output.stdout)
}

/// `--auth required` on the Kafka listener: kcat logs in with SCRAM-SHA-512 and with PLAIN over
/// TLS and produces and consumes; a wrong password and a client without SASL get nothing, and
/// each refusal is logged and counted; the password appears nowhere in the log or the data
/// directory.
#[test]
fn kcat_logs_in_with_scram_sha_512_and_plain_and_a_wrong_password_gets_nothing() {
    if !kcat_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, ca) = authenticating_broker(dir.path());
    let lines: String = (0..200).map(|i| format!("authenticated line {i:03}\n")).collect();
    let mut producer = Command::new("kcat")
        .args(["-b", &broker.kafka, "-X", "security.protocol=SASL_SSL"])
        .args(["-X", &format!("ssl.ca.location={}", ca.display())])
        .args(["-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=admin"])
        .args(["-X", "sasl.password=s3cret pass", "-P", "-t", "guarded", "-p", "0"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    producer.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(producer.wait().unwrap().success());
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let (ok, read) = kcat_sasl(
            &broker,
            &ca,
            (mechanism, "s3cret pass"),
            &["-C", "-t", "guarded", "-e", "-q"],
        );
        assert!(ok, "{mechanism}");
        assert_eq!(String::from_utf8(read).unwrap(), lines, "{mechanism}");
    }
    let (ok, _) = kcat_sasl(&broker, &ca, ("SCRAM-SHA-512", "wrong"), &["-m", "3", "-L"]);
    assert!(!ok, "a wrong password gets no metadata");
    let no_sasl = Command::new("kcat")
        .args(["-b", &broker.kafka, "-X", "security.protocol=SSL", "-m", "3"])
        .args(["-X", &format!("ssl.ca.location={}", ca.display()), "-L"])
        .output()
        .unwrap();
    assert!(!no_sasl.status.success(), "a client without SASL gets no metadata");
    let log = broker.log();
    assert!(log.contains("first user added from RINGMQ_ROOT_USER"), "{log}");
    assert!(log.contains("authentication failed for user \"admin\": wrong user name or password"));
    assert!(log.contains("kafka request before authentication"), "{log}");
    assert!(!log.contains("s3cret"), "the broker never logs a password");
    let users = std::fs::read_to_string(broker.data_dir.join(".users.toml")).unwrap();
    assert!(!users.contains("s3cret"), "only salted keys are stored");
}

/// kafka-python logs in with PLAIN over TLS and with SCRAM-SHA-256, produces and consumes. (A
/// wrong password is the kcat test's: kafka-python retries a refused bootstrap for 30 s.)
#[test]
fn kafka_python_logs_in_with_plain_and_scram_sha_256() {
    if !python_available("kafka") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, ca) = authenticating_broker(dir.path());
    let program = r#"
import sys
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
address, ca = sys.argv[1], sys.argv[2]
def settings(mechanism, password):
    return dict(bootstrap_servers=address, security_protocol="SASL_SSL", ssl_cafile=ca,
                sasl_mechanism=mechanism, sasl_plain_username="admin",
                sasl_plain_password=password)
producer = KafkaProducer(acks="all", **settings("PLAIN", "s3cret pass"))
for i in range(100):
    producer.send("python-guarded", value=("plain %03d" % i).encode(), partition=0)
producer.flush()
producer.close()
consumer = KafkaConsumer(auto_offset_reset="earliest", consumer_timeout_ms=10000,
                         **settings("SCRAM-SHA-256", "s3cret pass"))
consumer.assign([TopicPartition("python-guarded", 0)])
values = [message.value.decode() for _, message in zip(range(100), consumer)]
assert values == ["plain %03d" % i for i in range(100)], values[:3]
consumer.close()
print("ok")
"#;
    let output = run(
        Command::new("python3").args(["-c", program, &broker.kafka, ca.to_str().unwrap()]),
        b"",
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
    let log = broker.log();
    assert!(log.contains("protocol=\"kafka\" principal=admin") && log.contains("authenticated"));
}

/// Kafka's ACL APIs and the rules behind them, with kafka-python over SASL_SSL: the superuser
/// creates an ACL letting `writer` write one topic; `writer` produces, `reader` (no rule) is
/// refused with TopicAuthorizationFailed and its metadata does not list the topic; the ACL is
/// described and deleted, and `writer` is refused from then on.
#[test]
fn kafka_python_manages_acls_and_a_principal_without_one_is_refused() {
    if !python_available("kafka") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, ca) = authenticating_broker(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let login = ringmq_client::Credentials::new("admin", "s3cret pass");
        let tls = ringmq_client::Tls::with_ca_file(&ca).unwrap();
        let options = ringmq_client::ConnectOptions::default().credentials(login).tls(tls);
        let address = broker.address.replace("127.0.0.1", "localhost");
        let mut admin = ringmq_client::Client::connect_with(&address, options).await.unwrap();
        admin.add_user("writer", "writer pass").await.unwrap();
        admin.add_user("reader", "reader pass").await.unwrap();
        let config = ringmq_client::TopicConfig::default().partitions(1);
        admin.create_topic("acl-orders", config).await.unwrap();
    });
    let program = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
from kafka.admin import (KafkaAdminClient, ACL, ACLFilter, ACLOperation, ACLPermissionType,
                         ResourcePattern, ResourcePatternFilter, ResourceType, ACLResourcePatternType)
from kafka.errors import TopicAuthorizationFailedError
address, ca = sys.argv[1], sys.argv[2]
def settings(user, password):
    return dict(bootstrap_servers=address, security_protocol="SASL_SSL", ssl_cafile=ca,
                sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=user,
                sasl_plain_password=password)
admin = KafkaAdminClient(**settings("admin", "s3cret pass"))
acl = ACL(principal="User:writer", host="*", operation=ACLOperation.WRITE,
          permission_type=ACLPermissionType.ALLOW,
          resource_pattern=ResourcePattern(ResourceType.TOPIC, "acl-orders"))
result = admin.create_acls([acl])
assert not result["failed"], result
found, error = admin.describe_acls(ACLFilter(principal="User:writer", host="*",
    operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
    resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
assert [(a.principal, a.operation, a.resource_pattern.resource_name) for a in found] == \
    [("User:writer", ACLOperation.WRITE, "acl-orders")], found
print("described", len(found))

writer = KafkaProducer(acks="all", max_block_ms=10000, **settings("writer", "writer pass"))
writer.send("acl-orders", value=b"allowed", partition=0).get(timeout=30)
print("writer produced")
reader = KafkaProducer(acks="all", max_block_ms=5000, **settings("reader", "reader pass"))
try:
    reader.send("acl-orders", value=b"refused", partition=0).get(timeout=30)
    raise SystemExit("the reader produced without a rule")
except TopicAuthorizationFailedError as error:
    print("reader refused:", error)
consumer = KafkaConsumer(**settings("reader", "reader pass"))
assert "acl-orders" not in consumer.topics(), consumer.topics()
consumer.close()

deleted = admin.delete_acls([ACLFilter(principal="User:writer", host="*",
    operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
    resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, "acl-orders",
                                           ACLResourcePatternType.LITERAL))])
assert len(deleted[0][1]) == 1, deleted
late = KafkaProducer(acks="all", max_block_ms=5000, **settings("writer", "writer pass"))
try:
    late.send("acl-orders", value=b"late", partition=0).get(timeout=30)
    raise SystemExit("the writer produced after its ACL was deleted")
except TopicAuthorizationFailedError:
    print("writer refused after the delete")
print("ok")
"#;
    let kafka = broker.kafka.replace("127.0.0.1", "localhost");
    let output = run(
        Command::new("python3").args(["-c", program, &kafka, ca.to_str().unwrap()]),
        b"",
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}\n{stderr}");
    // One message in the topic: the writer's.
    if kcat_available() {
        let (ok, read) = kcat_sasl(
            &broker,
            &ca,
            ("SCRAM-SHA-512", "s3cret pass"),
            &["-C", "-t", "acl-orders", "-e", "-q"],
        );
        assert!(ok);
        assert_eq!(String::from_utf8(read).unwrap(), "allowed\n");
    }
}

/// A produce quota on the Kafka port: kafka-python producing flat out is slowed to within 10 %
/// of the principal's quota, and is told so in `throttle_time_ms` (its own throttle metric).
#[test]
fn kafka_python_over_its_produce_quota_is_slowed_to_it_and_told() {
    if !python_available("kafka") {
        return;
    }
    let broker = Broker::start_with_env(
        &["--auth", "required", "--produce-quota", "1048576"],
        &[("RINGMQ_ROOT_USER", "admin"), ("RINGMQ_ROOT_PASSWORD", "s3cret pass")],
    );
    let program = r#"
import sys, time
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
login = dict(bootstrap_servers=sys.argv[1], security_protocol="SASL_PLAINTEXT",
             sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="admin",
             sasl_plain_password="s3cret pass")
KafkaAdminClient(**login).create_topics([NewTopic("kmetered", 1, 1)])
producer = KafkaProducer(acks=1, linger_ms=1, batch_size=16384, max_block_ms=30000, **login)
acked = [0]
def counted(_):
    acked[0] += 1024
value = b"k" * 1024
start = time.time()
marks = []
sent = 0
while time.time() - start < 5:
    # Flat out, with at most 256 KiB unacknowledged (kafka-python's buffer has no bound).
    if sent - acked[0] >= 256 * 1024:
        time.sleep(0.001)
    else:
        producer.send("kmetered", value=value, partition=0).add_callback(counted)
        sent += 1024
    elapsed = time.time() - start
    if len(marks) == 0 and elapsed >= 1.5 or len(marks) == 1 and elapsed >= 4.5:
        marks.append((time.time(), acked[0]))
producer.flush()
(t1, b1), (t2, b2) = marks
rate = (b2 - b1) / (t2 - t1)
throttle = max(value for group in producer.metrics().values() for name, value in group.items()
               if name == "throttle-time-max")
print("rate", rate / 1048576, "throttle_max_ms", throttle)
assert 0.9 <= rate / 1048576 <= 1.1, rate
assert throttle > 0, throttle
print("ok")
"#;
    let output = run(
        Command::new("python3").args(["-c", program, &broker.kafka]),
        b"",
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}\n{stderr}");
}

/// `principal_connection_count_max` on the Kafka port: with the principal's one connection held
/// on the native port, kcat logging in as it is refused with the reason.
#[test]
fn kcat_past_its_principals_connection_limit_is_refused() {
    if !kcat_available() {
        return;
    }
    let broker = Broker::start_with_env(
        &["--auth", "required", "--principal-connection-count-max", "1"],
        &[("RINGMQ_ROOT_USER", "admin"), ("RINGMQ_ROOT_PASSWORD", "s3cret pass")],
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let login = ringmq_client::Credentials::new("admin", "s3cret pass");
    let options = ringmq_client::ConnectOptions::default().credentials(login);
    let held =
        runtime.block_on(ringmq_client::Client::connect_with(&broker.address, options)).unwrap();
    let output = Command::new("kcat")
        .args(["-b", &broker.kafka, "-X", "security.protocol=SASL_PLAINTEXT"])
        .args(["-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=admin"])
        .args(["-X", "sasl.password=s3cret pass", "-L", "-m", "5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "kcat listed metadata past the limit");
    assert!(stderr.contains("\"admin\" is at its limit of 1 open connections"), "{stderr}");
    drop(held);
}
