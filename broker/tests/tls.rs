//! TLS on the client listeners, end to end: the real `ringmq` binary with certificates made in
//! the test (rcgen), `ringmq-client` and `ringmq-cli` over TLS, mutual TLS with the principal
//! from the client certificate's subject, clients that are refused (plain TCP, an untrusted CA,
//! no client certificate), a reload of the certificate on SIGHUP, and bad TLS settings.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::time::Duration;

use ringmq_client::{Client, ProducerRecord, StartOffset, Tls, TopicConfig};
use support::certs::{Authority, Identity};
use support::{within, Broker};

/// Produces `count` records to partition 0 of `topic` and reads them back, over `tls`.
async fn round_trip(address: &str, tls: &Tls, topic: &str, count: usize) {
    let mut client = Client::connect_tls(address, tls.clone()).await.unwrap();
    client.create_topic(topic, TopicConfig::default().partitions(1)).await.unwrap();
    let producer = client.producer().build().await.unwrap();
    let mut deliveries = Vec::new();
    for index in 0..count {
        let value = format!("record {index} over tls {}", "x".repeat(index % 500));
        let record = ProducerRecord::new(topic, value.as_bytes()).partition(0);
        deliveries.push(producer.send(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let mut consumer =
        client.consumer(topic, 0).start(StartOffset::Earliest).build().await.unwrap();
    for index in 0..count {
        let record = consumer.next().await.unwrap();
        let expected = format!("record {index} over tls {}", "x".repeat(index % 500));
        assert_eq!(record.offset, index as u64);
        assert_eq!(&record.value[..], expected.as_bytes());
    }
}

/// A broker that requires client certificates from a CA made in `dir`, with `extra` flags; the
/// CA and a client certificate for `CN=writer, O=ringmq tests`.
fn mutual_tls_broker(dir: &std::path::Path, extra: &[&str]) -> (Broker, Authority, Identity) {
    let authority = Authority::new(dir, "ca");
    let server = authority.broker("broker");
    let writer = authority.client("writer", "writer");
    let mut flags = vec![
        "--tls-cert",
        server.cert_file.to_str().unwrap(),
        "--tls-key",
        server.key_file.to_str().unwrap(),
        "--tls-client-ca",
        authority.cert_file.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    // The writer is the superuser (with `--auth required` it may do anything).
    let env = [("RINGMQ_ROOT_USER", "CN=writer, O=ringmq tests")];
    (Broker::start_with_env(&flags, &env), authority, writer)
}

fn wait_for_log(broker: &Broker, text: &str) {
    for _ in 0..500 {
        if broker.log().contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the broker never logged {text:?}; its log:\n{}", broker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_work_over_tls_and_plain_or_untrusted_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "ca");
    let server = authority.broker("broker");
    let stranger = Authority::new(dir.path(), "stranger-ca");
    let broker = Broker::start(&[
        "--tls-cert",
        server.cert_file.to_str().unwrap(),
        "--tls-key",
        server.key_file.to_str().unwrap(),
    ]);
    let tls = Tls::with_ca_file(&authority.cert_file).unwrap();
    within(60, async {
        let mut held = Client::connect_tls(&broker.address, tls.clone()).await.unwrap();
        round_trip(&broker.address, &tls, "secure", 2000).await;

        let plain = Client::connect_with_timeout(&broker.address, Duration::from_secs(5)).await;
        assert!(plain.is_err(), "a plain TCP client gets no answer from a TLS listener");
        let untrusted = Tls::with_ca_file(&stranger.cert_file).unwrap();
        let error = Client::connect_tls(&broker.address, untrusted).await.unwrap_err();
        assert!(error.to_string().contains("UnknownIssuer"), "{error}");

        // None of that harmed the connection already open.
        held.ping().await.unwrap();
        assert_eq!(held.list_topics().await.unwrap().len(), 1);
    })
    .await;
    let log = broker.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    // The broker counts a failed handshake when it notices, which may be just after the client.
    let mut scraped = support::metrics_text(&broker.metrics);
    for _ in 0..100 {
        if scraped.contains("ringmq_tls_handshakes_failed_total 2") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        scraped = support::metrics_text(&broker.metrics);
    }
    assert!(scraped.contains("ringmq_tls_handshakes_failed_total 2"), "{scraped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_and_names_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, authority, writer) = mutual_tls_broker(dir.path(), &[]);
    within(60, async {
        let identity = Some((writer.cert_file.as_path(), writer.key_file.as_path()));
        let tls = Tls::from_files(&authority.cert_file, identity).unwrap();
        round_trip(&broker.address, &tls, "mutual", 100).await;

        let anonymous = Tls::with_ca_file(&authority.cert_file).unwrap();
        let refused = async {
            let mut client = Client::connect_tls(&broker.address, anonymous).await?;
            client.ping().await
        };
        assert!(refused.await.is_err(), "a client without a certificate is refused");
    })
    .await;
    let log = broker.log();
    assert!(log.contains("principal=CN=writer, O=ringmq tests"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let first = Authority::new(dir.path(), "first-ca");
    let second = Authority::new(dir.path(), "second-ca");
    let served = first.broker("served");
    let broker = Broker::start(&[
        "--tls-cert",
        served.cert_file.to_str().unwrap(),
        "--tls-key",
        served.key_file.to_str().unwrap(),
    ]);
    let trusts_first = Tls::with_ca_file(&first.cert_file).unwrap();
    let trusts_second = Tls::with_ca_file(&second.cert_file).unwrap();
    let mut held =
        within(30, Client::connect_tls(&broker.address, trusts_first.clone())).await.unwrap();

    let replacement = second.broker("replacement");
    std::fs::copy(&replacement.cert_file, &served.cert_file).unwrap();
    std::fs::copy(&replacement.key_file, &served.key_file).unwrap();
    broker.signal("HUP");
    wait_for_log(&broker, "TLS certificate and key reloaded");
    within(60, async {
        round_trip(&broker.address, &trusts_second, "reloaded", 50).await;
        assert!(Client::connect_tls(&broker.address, trusts_first.clone()).await.is_err());
        held.ping().await.unwrap();
    })
    .await;

    std::fs::write(&served.key_file, "not a key").unwrap();
    broker.signal("HUP");
    wait_for_log(&broker, "TLS reload failed; the old certificate stays");
    within(30, async {
        let mut client = Client::connect_tls(&broker.address, trusts_second).await.unwrap();
        client.ping().await.unwrap();
    })
    .await;
}

#[test]
fn bad_tls_settings_are_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["--listen", "127.0.0.1:0", "--kafka", "false", "--metrics", "false"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["--tls-key", "/nonexistent/key.pem"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--tls-key") && stderr.contains("given without"), "{stderr}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let output = run(&["--tls-cert", garbage.to_str().unwrap(), "--tls-key", "/nonexistent"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("garbage.pem") && stderr.contains("no PEM certificate"), "{stderr}");
}

/// `--auth required` on the native port: a client with a certificate from the client CA is
/// authenticated by it and works; a client with neither a certificate nor a login gets
/// `Unauthenticated` for its first request after the handshake, one clear message, and the
/// connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_required_lets_in_only_authenticated_native_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, authority, writer) = mutual_tls_broker(dir.path(), &["--auth", "required"]);
    within(60, async {
        let identity = Some((writer.cert_file.as_path(), writer.key_file.as_path()));
        let tls = Tls::from_files(&authority.cert_file, identity).unwrap();
        round_trip(&broker.address, &tls, "authenticated", 100).await;
    })
    .await;

    let open = Broker::start(&["--auth", "required"]);
    within(60, async {
        // The handshake is answered (it tells the client the limits); nothing else is.
        let mut anonymous = Client::connect(&open.address).await.unwrap();
        let error = anonymous.list_topics().await.unwrap_err();
        assert_eq!(error.code(), Some(ringmq_client::ErrorCode::Unauthenticated), "{error}");
        assert!(error.to_string().contains("requires authentication"), "{error}");
    })
    .await;
    assert!(open.log().contains("native request before authentication"));
}

/// Native logins with SCRAM: `ringmq-client` logs in with SCRAM-SHA-256 and SCRAM-SHA-512 (its
/// producers and consumers too) and checks the broker's signature; a wrong password, an
/// unknown user and garbage in the exchange get `Unauthenticated` and a closed connection, and
/// right after a failure the address is refused logins for a while (doubling);
/// `ringmq-cli --user` takes the password from `RINGMQ_PASSWORD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_log_in_with_scram() {
    use ringmq_client::{ConnectOptions, Credentials, ErrorCode, Scram};
    let broker = Broker::start_with_env(
        &["--auth", "required"],
        &[("RINGMQ_ROOT_USER", "admin"), ("RINGMQ_ROOT_PASSWORD", "pencil case")],
    );
    within(60, async {
        for mechanism in [Scram::Sha256, Scram::Sha512] {
            let login = Credentials::new("admin", "pencil case").with_mechanism(mechanism);
            let options = ConnectOptions::default().credentials(login);
            let mut client = Client::connect_with(&broker.address, options).await.unwrap();
            let topic = format!("scram-{mechanism:?}");
            client.create_topic(&topic, TopicConfig::default().partitions(1)).await.unwrap();
            let producer = client.producer().build().await.unwrap();
            let delivery =
                producer.send(ProducerRecord::new(&topic, b"hello").partition(0)).await.unwrap();
            delivery.await.unwrap();
            let mut consumer =
                client.consumer(&topic, 0).start(StartOffset::Earliest).build().await.unwrap();
            assert_eq!(&consumer.next().await.unwrap().value[..], b"hello");
        }
        let log_in = |user: &str, password: &str| {
            let options = ConnectOptions::default().credentials(Credentials::new(user, password));
            Client::connect_with(&broker.address, options)
        };
        let error = log_in("admin", "wrong").await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Unauthenticated), "{error}");
        assert!(error.to_string().contains("wrong user name or password"), "{error}");
        // Right after a failure the address is refused logins for 0.5 s, the right password too.
        let error = log_in("admin", "pencil case").await.unwrap_err();
        assert!(error.to_string().contains("too many failed logins"), "{error}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        // An unknown user: the same answer as a wrong password.
        let error = log_in("nobody", "pencil case").await.unwrap_err();
        assert!(error.to_string().contains("wrong user name or password"), "{error}");
        // The second failure within a minute: refused for 1 s.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    })
    .await;

    // Garbage as the client's first SCRAM message.
    let mut raw = std::net::TcpStream::connect(&broker.address).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut frame = Vec::new();
    let garbage = ringmq_protocol::message::Authenticate {
        mechanism: "SCRAM-SHA-256",
        message: b"\x00\xff,,=not scram",
    };
    ringmq_protocol::Request::Authenticate(garbage).encode_frame(1, &mut frame).unwrap();
    std::io::Write::write_all(&mut raw, &frame).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw, &mut answer);
    let head = ringmq_protocol::FrameHead::decode(&answer, u32::MAX).unwrap();
    assert_eq!(head.status, ErrorCode::Unauthenticated.as_u16());
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("malformed authentication message"), "{text}");
    // The third failure within a minute: refused for 2 s.
    std::thread::sleep(Duration::from_millis(2100));

    let cli = support::workspace_binary("ringmq-cli", "ringmq-cli");
    let run = |password: Option<&str>| {
        let mut command = std::process::Command::new(&cli);
        command.args(["--broker", &broker.address, "--user", "admin", "topic", "list"]);
        match password {
            Some(password) => command.env("RINGMQ_PASSWORD", password),
            None => command.env_remove("RINGMQ_PASSWORD"),
        };
        command.output().unwrap()
    };
    let listed = run(Some("pencil case"));
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("scram-Sha256"));
    let wrong = run(Some("wrong"));
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("wrong user name or password"), "{stderr}");
    let missing = run(None);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("RINGMQ_PASSWORD"));
    assert!(!broker.log().contains("pencil"), "the broker never logs a password");
}
