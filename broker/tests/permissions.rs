//! Authorization on the real broker: every native request kind tried by a principal without
//! rules is refused (`Unauthorized`) and changes nothing; rules added over the network take
//! effect on the next request and survive a restart; a principal without produce permission is
//! refused while another goes on; users and rules are managed by `ringmq-cli`.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::time::Duration;

use ringmq_client::access::RuleOperation;
use ringmq_client::{
    Client, ClientError, ConnectOptions, Credentials, ErrorCode, ProducerRecord, Rule, StartOffset,
    TopicConfig,
};
use ringmq_protocol::access::{
    QuotaEntry, QuotaKind, QuotaTarget, RuleEntry, RulePattern, RuleResource, ScramKeys, SetUser,
    UserName,
};
use ringmq_protocol::group::{
    CommitOffsets, Entries, GroupName, GroupTopic, Heartbeat, JoinGroup, LeaveGroup,
    PartitionOffset, ProducerIdentity,
};
use ringmq_protocol::message::{
    Authenticate, CreateTopic, Fetch, Handshake, LocalOpen, Produce, TopicName,
};
use ringmq_protocol::{Acks, BatchEncoder, Opcode, Push, Record, Request};
use support::{within, Broker};

const ROOT: (&str, &str) = ("root", "root password");

async fn log_in(broker: &Broker, user: &str, password: &str) -> Result<Client, ClientError> {
    let options = ConnectOptions::default().credentials(Credentials::new(user, password));
    Client::connect_with(&broker.address, options).await
}

fn batch() -> Vec<u8> {
    let mut buffer = vec![0u8; 256];
    let mut encoder = BatchEncoder::new(buffer.len(), 1).unwrap();
    let pushed = encoder.push(&mut buffer, &Record::value(b"intruder", 1)).unwrap();
    assert_eq!(pushed, Push::Appended);
    let size = encoder.finish(&mut buffer).unwrap();
    buffer.truncate(size);
    buffer
}

/// What the broker holds, as its superuser sees it: topics and their offsets, groups and their
/// offsets, users and rules, and the data directory's file names and sizes.
async fn state(root: &mut Client, broker: &Broker) -> String {
    let mut state = String::new();
    for topic in root.list_topics().await.unwrap() {
        let info = root.describe_topic(&topic.name).await.unwrap();
        state += &format!("topic {} {:?}\n", topic.name, info.partitions);
    }
    for group in root.list_groups().await.unwrap() {
        let offsets = root.committed_offsets(&group.group, "orders").await.unwrap();
        state += &format!("group {} {offsets:?}\n", group.group);
    }
    state += &format!("users {:?}\n", root.list_users().await.unwrap());
    state += &format!("rules {:?}\n", root.list_rules().await.unwrap());
    state += &format!("quotas {:?}\n", root.list_quotas().await.unwrap());
    let mut files = Vec::new();
    let mut dirs = vec![broker.data_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(format!("{} {}", entry.path().display(), metadata.len()));
            }
        }
    }
    files.sort();
    state + &files.join("\n")
}

/// What a principal without rules gets for each request kind.
#[derive(Clone, Copy)]
enum Expected {
    /// Answered: the request needs no permission (a handshake, a ping).
    Answered,
    /// Answered with an empty list: it lists only what the principal may describe.
    Filtered,
    /// Refused with this code.
    Refused(ErrorCode),
}

/// Every native request kind, tried by a principal without rules: refused, or answered with
/// nothing it may not see, and nothing on the broker changed. The loop runs over `Opcode::ALL`
/// and the match's only wildcard (`Opcode` is non-exhaustive) fails the test, so a new request
/// kind cannot be added until it says here what a principal without rules gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_native_request_kind_is_refused_without_a_rule_and_changes_nothing() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("local.sock");
    let broker = Broker::start_with_env(
        &["--auth", "required", "--local-listen", socket.to_str().unwrap()],
        &[("RINGMQ_ROOT_USER", ROOT.0), ("RINGMQ_ROOT_PASSWORD", ROOT.1)],
    );
    within(120, async {
        let mut root = log_in(&broker, ROOT.0, ROOT.1).await.unwrap();
        let config = TopicConfig::default().partitions(1).capacity(1 << 20);
        root.create_topic("orders", config).await.unwrap();
        let producer = root.producer().build().await.unwrap();
        let delivery =
            producer.send(ProducerRecord::new("orders", b"kept").partition(0)).await.unwrap();
        delivery.await.unwrap();
        root.add_user("mallory", "mallory password").await.unwrap();
        let before = state(&mut root, &broker).await;

        let mut mallory = log_in(&broker, "mallory", "mallory password").await.unwrap();
        // The same principal on the local socket, where LocalOpen is served.
        let options =
            ConnectOptions::default().credentials(Credentials::new("mallory", "mallory password"));
        let mut mallory_local = Client::connect_local(&socket, options).await.unwrap();
        let batch = batch();
        let offsets = [PartitionOffset { partition: 0, offset: 0 }];
        let keys = ScramKeys {
            salt: &[7; 24],
            iterations: 4096,
            stored_key: &[1; 32],
            server_key: &[2; 32],
        };
        let keys512 = ScramKeys {
            salt: &[7; 24],
            iterations: 4096,
            stored_key: &[1; 64],
            server_key: &[2; 64],
        };
        let unauthorized = Expected::Refused(ErrorCode::Unauthorized);
        for &opcode in Opcode::ALL {
            let (request, expected) = match opcode {
                Opcode::Handshake => (
                    Request::Handshake(Handshake {
                        version_min: 1,
                        version_max: 1,
                        client_name: "test",
                    }),
                    Expected::Answered,
                ),
                Opcode::Ping => (Request::Ping, Expected::Answered),
                Opcode::CreateTopic => (
                    Request::CreateTopic(CreateTopic {
                        name: "mallorys",
                        partition_count: 1,
                        capacity: 1 << 20,
                        chunk_size: 0,
                    }),
                    Expected::Refused(ErrorCode::Unauthorized),
                ),
                Opcode::DeleteTopic => {
                    (Request::DeleteTopic(TopicName { name: "orders" }), unauthorized)
                }
                Opcode::ListTopics => (Request::ListTopics, Expected::Filtered),
                Opcode::DescribeTopic => {
                    (Request::DescribeTopic(TopicName { name: "orders" }), unauthorized)
                }
                Opcode::Produce => (
                    Request::Produce(Produce {
                        topic: "orders",
                        partition: 0,
                        acks: Acks::Written,
                        timeout_ms: 0,
                        batch: &batch,
                    }),
                    unauthorized,
                ),
                Opcode::Fetch => (
                    Request::Fetch(Fetch {
                        topic: "orders",
                        partition: 0,
                        offset: 0,
                        max_bytes: 1 << 16,
                        max_wait_ms: 0,
                        min_bytes: 1,
                    }),
                    unauthorized,
                ),
                Opcode::CommitOffsets => (
                    Request::CommitOffsets(CommitOffsets {
                        group: "readers",
                        topic: "orders",
                        member_id: "",
                        generation: 0,
                        offsets: Entries::from_slice(&offsets),
                    }),
                    unauthorized,
                ),
                Opcode::FetchCommitted => (
                    Request::FetchCommitted(GroupTopic { group: "readers", topic: "orders" }),
                    unauthorized,
                ),
                Opcode::Stats => (Request::Stats, unauthorized),
                Opcode::JoinGroup => (
                    Request::JoinGroup(JoinGroup {
                        group: "readers",
                        topic: "orders",
                        member_id: "",
                        session_timeout_ms: 10_000,
                    }),
                    unauthorized,
                ),
                Opcode::Heartbeat => (
                    Request::Heartbeat(Heartbeat {
                        group: "readers",
                        member_id: "m",
                        generation: 1,
                    }),
                    unauthorized,
                ),
                Opcode::LeaveGroup => (
                    Request::LeaveGroup(LeaveGroup { group: "readers", member_id: "m" }),
                    unauthorized,
                ),
                Opcode::ListGroups => (Request::ListGroups, Expected::Filtered),
                Opcode::DescribeGroup => {
                    (Request::DescribeGroup(GroupName { group: "readers" }), unauthorized)
                }
                Opcode::InitProducer => (
                    Request::InitProducer(ProducerIdentity { producer_id: -1, producer_epoch: -1 }),
                    unauthorized,
                ),
                // Tried last (it closes the connection): a second login is refused.
                Opcode::Authenticate => continue,
                Opcode::ListUsers => (Request::ListUsers, unauthorized),
                Opcode::SetUser => (
                    Request::SetUser(SetUser {
                        name: "mallory2",
                        replace: false,
                        sha256: keys.clone(),
                        sha512: keys512.clone(),
                    }),
                    unauthorized,
                ),
                Opcode::RemoveUser => {
                    (Request::RemoveUser(UserName { name: ROOT.0 }), unauthorized)
                }
                Opcode::ListRules => (Request::ListRules, unauthorized),
                Opcode::AddRule | Opcode::RemoveRule => {
                    let rule = RuleEntry {
                        principal: "mallory",
                        resource: RuleResource::Superuser,
                        pattern: RulePattern::Literal,
                        name: "",
                        operation: RuleOperation::All,
                    };
                    let request = if opcode == Opcode::AddRule {
                        Request::AddRule(rule)
                    } else {
                        Request::RemoveRule(rule)
                    };
                    (request, unauthorized)
                }
                Opcode::ListQuotas => (Request::ListQuotas, unauthorized),
                Opcode::SetQuota => (
                    Request::SetQuota(QuotaEntry {
                        principal: "mallory",
                        kind: QuotaKind::Produce,
                        value: 0,
                    }),
                    unauthorized,
                ),
                Opcode::RemoveQuota => (
                    Request::RemoveQuota(QuotaTarget {
                        principal: "mallory",
                        kind: QuotaKind::Produce,
                    }),
                    unauthorized,
                ),
                Opcode::LocalWait => (
                    Request::LocalWait(Fetch {
                        topic: "orders",
                        partition: 0,
                        offset: 0,
                        max_bytes: 1,
                        max_wait_ms: 0,
                        min_bytes: 1,
                    }),
                    unauthorized,
                ),
                Opcode::LocalOpen => {
                    let open =
                        Request::LocalOpen(LocalOpen { topic: "orders", partition: 0, offset: 0 });
                    let error = mallory_local.raw_call(&open).await.expect_err("LocalOpen");
                    assert_eq!(error.code(), Some(ErrorCode::Unauthorized), "{error}");
                    assert!(error.to_string().contains("mallory"), "{error}");
                    continue;
                }
                _ => panic!("{opcode:?} has no expectation in this test"),
            };
            let answer = mallory.raw_call(&request).await;
            match expected {
                Expected::Answered => {
                    answer.unwrap_or_else(|error| panic!("{opcode:?}: {error}"));
                }
                Expected::Filtered => {
                    let body = answer.unwrap_or_else(|error| panic!("{opcode:?}: {error}"));
                    assert_eq!(&body[..4], [0, 0, 0, 0], "{opcode:?} lists nothing");
                }
                Expected::Refused(code) => {
                    let error = answer.expect_err(opcode.name());
                    assert_eq!(error.code(), Some(code), "{opcode:?}: {error}");
                    assert!(error.to_string().contains("mallory"), "{opcode:?}: {error}");
                }
            }
        }
        let again = Request::Authenticate(Authenticate {
            mechanism: "SCRAM-SHA-256",
            message: b"n,,n=root,r=x",
        });
        let error = mallory.raw_call(&again).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Unauthenticated), "{error}");

        assert_eq!(state(&mut root, &broker).await, before, "nothing changed");
    })
    .await;
    assert!(!broker.log().contains("mallory password"), "no password in the log");
}

/// Rules added and removed over the network take effect on the next request, on both the
/// native and the Kafka port, survive a restart, and a principal without produce permission is
/// refused while another on the same topic goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_take_effect_at_once_and_survive_a_restart() {
    let mut broker = Broker::start_with_env(
        &["--auth", "required"],
        &[("RINGMQ_ROOT_USER", ROOT.0), ("RINGMQ_ROOT_PASSWORD", ROOT.1)],
    );
    within(120, async {
        let mut root = log_in(&broker, ROOT.0, ROOT.1).await.unwrap();
        root.create_topic("orders", TopicConfig::default().partitions(1)).await.unwrap();
        root.create_topic("secret", TopicConfig::default().partitions(1)).await.unwrap();
        root.add_user("writer", "writer password").await.unwrap();
        root.add_user("reader", "reader password").await.unwrap();
        root.add_rule(&Rule::topic("writer", "orders", RuleOperation::Produce)).await.unwrap();
        root.add_rule(&Rule::topic("reader", "ord", RuleOperation::Consume).prefixed())
            .await
            .unwrap();
        // An operation that means nothing on the resource is refused with what is wrong.
        let error =
            root.add_rule(&Rule::group("reader", "g", RuleOperation::Produce)).await.unwrap_err();
        assert!(error.to_string().contains("not an operation on a group"), "{error}");

        let writer = log_in(&broker, "writer", "writer password").await.unwrap();
        let producer = writer.producer().build().await.unwrap();
        producer
            .send(ProducerRecord::new("orders", b"one").partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
        let refused = producer.send(ProducerRecord::new("secret", b"no").partition(0)).await;
        let error = match refused {
            Ok(delivery) => delivery.await.unwrap_err(),
            Err(error) => error,
        };
        assert_eq!(error.code(), Some(ErrorCode::Unauthorized), "{error}");

        let mut reader = log_in(&broker, "reader", "reader password").await.unwrap();
        let topics: Vec<String> =
            reader.list_topics().await.unwrap().into_iter().map(|topic| topic.name).collect();
        assert_eq!(topics, ["orders"], "the reader sees only what it may describe");
        let mut consumer =
            reader.consumer("orders", 0).start(StartOffset::Earliest).build().await.unwrap();
        assert_eq!(&consumer.next().await.unwrap().value[..], b"one");
        // The reader may not produce while the writer goes on.
        let reader_producer = reader.producer().build().await;
        let error = match reader_producer {
            Err(error) => error,
            Ok(producer) => {
                match producer.send(ProducerRecord::new("orders", b"x").partition(0)).await {
                    Ok(delivery) => delivery.await.unwrap_err(),
                    Err(error) => error,
                }
            }
        };
        assert_eq!(error.code(), Some(ErrorCode::Unauthorized), "{error}");
        producer
            .send(ProducerRecord::new("orders", b"two").partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(&consumer.next().await.unwrap().value[..], b"two");

        // Removed: in force for the next request, on the connections already open.
        root.remove_rule(&Rule::topic("writer", "orders", RuleOperation::Produce)).await.unwrap();
        let error = match producer.send(ProducerRecord::new("orders", b"3").partition(0)).await {
            Ok(delivery) => delivery.await.unwrap_err(),
            Err(error) => error,
        };
        assert_eq!(error.code(), Some(ErrorCode::Unauthorized), "{error}");
        root.add_rule(&Rule::topic("writer", "*", RuleOperation::All)).await.unwrap();
        // The last superuser stays.
        let error = root.remove_rule(&Rule::superuser(ROOT.0)).await.unwrap_err();
        assert!(error.to_string().contains("last superuser"), "{error}");
    })
    .await;

    broker.restart_same_port();
    within(60, async {
        let mut root = log_in(&broker, ROOT.0, ROOT.1).await.unwrap();
        let rules = root.list_rules().await.unwrap();
        assert!(rules.contains(&Rule::superuser(ROOT.0)), "{rules:?}");
        assert!(rules.contains(&Rule::topic("writer", "*", RuleOperation::All)), "{rules:?}");
        assert!(!rules.contains(&Rule::topic("writer", "orders", RuleOperation::Produce)));
        let mut writer = log_in(&broker, "writer", "writer password").await.unwrap();
        writer.delete_topic("secret").await.unwrap();
        let names: Vec<String> =
            root.list_topics().await.unwrap().into_iter().map(|topic| topic.name).collect();
        assert_eq!(names, ["orders"]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    })
    .await;
}

/// `ringmq-cli user` and `ringmq-cli acl`: a superuser adds a user (password on stdin), lets it
/// produce to a prefix, lists both; the user is refused what it was not given, with one line.
#[test]
fn users_and_rules_are_managed_with_the_cli() {
    let broker = Broker::start_with_env(
        &["--auth", "required"],
        &[("RINGMQ_ROOT_USER", ROOT.0), ("RINGMQ_ROOT_PASSWORD", ROOT.1)],
    );
    let cli = support::workspace_binary("ringmq-cli", "ringmq-cli");
    let run = |user: (&str, &str), args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut command = std::process::Command::new(&cli);
        command.args(["--broker", &broker.address, "--user", user.0]).args(args);
        command.env("RINGMQ_PASSWORD", user.1);
        command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = |output: std::process::Output| {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    ok(run(ROOT, &["user", "add", "app", "--password-stdin"], "app password\n"));
    ok(run(ROOT, &["topic", "create", "app.events", "--partitions", "1"], ""));
    let rule = ["--principal", "app", "--topic", "app.", "--prefix", "--operation", "produce"];
    ok(run(ROOT, &[&["acl", "add"][..], &rule].concat(), ""));
    let users = ok(run(ROOT, &["user", "list"], ""));
    assert_eq!(users.lines().collect::<Vec<_>>(), ["app", "root"]);
    let rules = ok(run(ROOT, &["acl", "list"], ""));
    assert!(rules.contains("root\tsuperuser"), "{rules}");
    assert!(rules.contains("app\ttopic\tprefix\tapp.\tproduce"), "{rules}");

    let app = ("app", "app password");
    ok(run(app, &["produce", "app.events", "--partition", "0"], "hello\n"));
    let refused = run(app, &["user", "list"], "");
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not allowed to describe cluster"), "{stderr}");

    ok(run(ROOT, &["user", "passwd", "app", "--password-stdin"], "new password\n"));
    let old = run(app, &["topic", "list"], "");
    assert!(String::from_utf8_lossy(&old.stderr).contains("wrong user name or password"));
    std::thread::sleep(Duration::from_millis(700));
    ok(run(ROOT, &[&["acl", "remove"][..], &rule].concat(), ""));
    ok(run(ROOT, &["user", "remove", "app"], ""));
    assert_eq!(ok(run(ROOT, &["user", "list"], "")).trim(), "root");
    let missing = run(ROOT, &["user", "add", "x"], "");
    assert!(!missing.status.success(), "--password-stdin is required");
}

/// With `auth = off` nothing enforces rules, so nobody may manage users or rules (whoever did
/// could make themselves a superuser before authentication is turned on); a superuser's account
/// and the list of superusers are changed only by a superuser, whatever else a principal may
/// alter; `ANONYMOUS` is no user's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_superusers_are_guarded() {
    let open = Broker::start(&[]);
    within(60, async {
        let mut anyone = Client::connect(&open.address).await.unwrap();
        let refusals = [
            anyone.add_user("mallory", "mallory password").await.unwrap_err(),
            anyone.add_rule(&Rule::superuser("mallory")).await.unwrap_err(),
            anyone.list_users().await.unwrap_err(),
            anyone.list_rules().await.unwrap_err(),
        ];
        for error in refusals {
            assert_eq!(error.code(), Some(ErrorCode::Unauthorized), "{error}");
            assert!(error.to_string().contains("auth = required"), "{error}");
        }
    })
    .await;
    for file in [".users.toml", ".permissions.toml"] {
        let kept = std::fs::read_to_string(open.data_dir().join(file)).unwrap_or_default();
        assert!(!kept.contains("mallory"), "{file}: {kept}");
    }
    drop(open);

    let broker = Broker::start_with_env(
        &["--auth", "required"],
        &[("RINGMQ_ROOT_USER", ROOT.0), ("RINGMQ_ROOT_PASSWORD", ROOT.1)],
    );
    within(60, async {
        let mut root = log_in(&broker, ROOT.0, ROOT.1).await.unwrap();
        root.add_user("ops", "ops password").await.unwrap();
        root.add_rule(&Rule::cluster("ops", RuleOperation::All)).await.unwrap();
        let error = root.add_user("ANONYMOUS", "a password").await.unwrap_err();
        assert!(error.to_string().contains("ANONYMOUS"), "{error}");

        let mut ops = log_in(&broker, "ops", "ops password").await.unwrap();
        // Allowed to alter the cluster: ordinary users are its to manage.
        ops.add_user("worker", "worker password").await.unwrap();
        ops.set_password("worker", "new worker password").await.unwrap();
        ops.remove_user("worker").await.unwrap();
        // Not the superuser's account, nor the list of superusers.
        let refusals = [
            ops.remove_user(ROOT.0).await.unwrap_err(),
            ops.set_password(ROOT.0, "taken over").await.unwrap_err(),
            ops.add_rule(&Rule::superuser("ops")).await.unwrap_err(),
            ops.remove_rule(&Rule::superuser(ROOT.0)).await.unwrap_err(),
        ];
        for error in refusals {
            assert_eq!(error.code(), Some(ErrorCode::Unauthorized), "{error}");
            assert!(error.to_string().contains("not a superuser"), "{error}");
        }
        // Nothing changed: root logs in with its password and is still the only superuser.
        let mut again = log_in(&broker, ROOT.0, ROOT.1).await.unwrap();
        let superusers: Vec<Rule> = again
            .list_rules()
            .await
            .unwrap()
            .into_iter()
            .filter(|rule| rule.resource == ringmq_client::access::RuleResource::Superuser)
            .collect();
        assert_eq!(superusers, [Rule::superuser(ROOT.0)]);
    })
    .await;
}
