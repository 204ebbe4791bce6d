//! Consumer groups end to end, with the real binary: assignment without overlap or gap as
//! members join and leave, resuming after the last commit across a broker crash, a member killed
//! mid-stream replaced with nothing skipped, and the CLI's group commands.

#![allow(clippy::unwrap_used, reason = "tests fail on error")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ringmq_client::{Client, GroupConsumer, ProducerRecord, TopicConfig};
use support::{within, Broker};

const SESSION: Duration = Duration::from_millis(1500);

async fn member(client: &Client, group: &str, topic: &str) -> GroupConsumer {
    client
        .group_consumer(group, topic)
        .session_timeout(SESSION)
        .max_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap()
}

/// Heartbeats every member until the assignment covers every partition exactly once; returns
/// each member's partitions.
async fn settled(members: &[&GroupConsumer], partitions: u32) -> Vec<Vec<u32>> {
    loop {
        let mut assigned = Vec::new();
        for member in members {
            assigned.push(member.refresh().await.unwrap());
        }
        let all: Vec<u32> = assigned.iter().flatten().copied().collect();
        let unique: BTreeSet<u32> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a partition held by two members: {assigned:?}");
        if unique.len() == partitions as usize {
            return assigned;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn produce(address: &str, topic: &str, count: usize) {
    let client = Client::connect(address).await.unwrap();
    let producer = client.producer().build().await.unwrap();
    let mut deliveries = Vec::new();
    for index in 0..count {
        let key = format!("k{index}");
        let value = format!("v{index}");
        deliveries.push(
            producer
                .send(ProducerRecord::new(topic, value.as_bytes()).key(key.as_bytes()))
                .await
                .unwrap(),
        );
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await.unwrap();
}

/// Every (partition, offset) the topic holds.
async fn all_positions(client: &mut Client, topic: &str) -> BTreeSet<(u32, u64)> {
    let info = client.describe_topic(topic).await.unwrap();
    info.partitions
        .iter()
        .flat_map(|state| {
            (state.earliest_offset..state.next_offset).map(|offset| (state.partition, offset))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_six_partitions_without_overlap_or_gap_as_they_join_and_leave() {
    let broker = Broker::start(&[]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("six", TopicConfig::default().partitions(6)).await.unwrap();
        let first = member(&client, "split", "six").await;
        assert_eq!(first.assignment(), [0, 1, 2, 3, 4, 5]);
        let second = member(&client, "split", "six").await;
        let two = settled(&[&first, &second], 6).await;
        assert_eq!(two, [vec![0, 1, 2], vec![3, 4, 5]]);
        let third = member(&client, "split", "six").await;
        let three = settled(&[&first, &second, &third], 6).await;
        assert_eq!(three.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2], "{three:?}");

        let described = client.describe_group("split").await.unwrap();
        assert_eq!((described.topic.as_str(), described.members.len()), ("six", 3));

        // A member that leaves hands its partitions over at once.
        let leaving = third.assignment();
        third.close().await.unwrap();
        let after = settled(&[&first, &second], 6).await;
        let taken: BTreeSet<u32> = after.iter().flatten().copied().collect();
        assert!(leaving.iter().all(|partition| taken.contains(partition)), "{after:?}");
        assert_eq!(client.describe_group("split").await.unwrap().members.len(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_group_resumes_after_its_last_commit_even_across_a_broker_crash() {
    let mut broker = Broker::start(&[]);
    within(90, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("resume", TopicConfig::default().partitions(3)).await.unwrap();
        produce(&broker.address, "resume", 300).await;
        let mut consumer = client
            .group_consumer("billing", "resume")
            .auto_commit(None)
            .max_wait(Duration::from_millis(50))
            .build()
            .await
            .unwrap();
        let mut first = BTreeSet::new();
        for _ in 0..120 {
            let record = consumer.next().await.unwrap();
            first.insert((record.partition, record.offset));
        }
        consumer.commit().await.unwrap();
        consumer.close().await.unwrap();

        broker.restart_same_port();
        let mut client = Client::connect(&broker.address).await.unwrap();
        let committed = client.committed_offsets("billing", "resume").await.unwrap();
        let per_partition: BTreeMap<u32, u64> = committed.into_iter().collect();
        for (partition, offset) in &first {
            assert!(per_partition[partition] > *offset, "commit covers {partition}/{offset}");
        }

        let mut second = member(&client, "billing", "resume").await;
        let mut rest = BTreeSet::new();
        while first.len() + rest.len() < 300 {
            let record = second.next().await.unwrap();
            assert!(
                !first.contains(&(record.partition, record.offset)),
                "{}/{} was committed, yet delivered again",
                record.partition,
                record.offset
            );
            assert!(rest.insert((record.partition, record.offset)), "delivered twice");
        }
        let everything: BTreeSet<_> = first.union(&rest).copied().collect();
        assert_eq!(everything, all_positions(&mut client, "resume").await);
        second.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_stream_is_replaced_and_nothing_is_skipped() {
    let broker = Broker::start(&[]);
    let cli = support::workspace_binary("ringmq-cli", "ringmq-cli");
    within(120, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("jobs", TopicConfig::default().partitions(4)).await.unwrap();
        // Records keep arriving for about two seconds while the first member works.
        let address = broker.address.clone();
        let producing = tokio::spawn(async move {
            for _ in 0..30 {
                produce(&address, "jobs", 100).await;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        });

        // A CLI member prints (partition, offset) and commits what it printed about every
        // second; kill -9 it part-way through.
        let mut child = Command::new(&cli)
            .args(["--broker", &broker.address, "consume", "jobs", "--group", "workers"])
            .args(["--follow", "--format", "offset", "--session-timeout-ms", "1000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut printed = BTreeSet::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let mut fields = line.split('\t');
                let partition: u32 = fields.next().unwrap().parse().unwrap();
                let offset: u64 = fields.next().unwrap().parse().unwrap();
                printed.insert((partition, offset));
            }
            printed
        });
        tokio::time::sleep(Duration::from_millis(1600)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let printed = reader.join().unwrap();
        producing.await.unwrap();
        let committed: BTreeMap<u32, u64> =
            client.committed_offsets("workers", "jobs").await.unwrap().into_iter().collect();
        assert!(!committed.is_empty(), "the killed member committed before it died");
        let everything = all_positions(&mut client, "jobs").await;
        assert!(
            printed.len() < everything.len(),
            "killed mid-stream: {} of {}",
            printed.len(),
            everything.len()
        );

        // The replacement gets the dead member's partitions once its session expires and
        // resumes from the last commit: together they miss nothing.
        let mut replacement = member(&client, "workers", "jobs").await;
        let mut seen = printed.clone();
        let mut resumed: BTreeMap<u32, u64> = BTreeMap::new();
        while !everything.is_subset(&seen) {
            let record = replacement.next().await.unwrap();
            resumed.entry(record.partition).or_insert(record.offset);
            seen.insert((record.partition, record.offset));
        }
        for (partition, first) in &resumed {
            let commit = committed.get(partition).copied().unwrap_or(0);
            assert_eq!(*first, commit, "partition {partition} resumed at its commit");
        }
        replacement.close().await.unwrap();
    })
    .await;
}

#[test]
fn cli_lists_describes_and_resets_groups_with_one_line_errors() {
    let broker = Broker::start(&[]);
    let cli = support::workspace_binary("ringmq-cli", "ringmq-cli");
    let run = |args: &[&str]| {
        let output =
            Command::new(&cli).arg("--broker").arg(&broker.address).args(args).output().unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (ok, _, error) = run(&["topic", "create", "events", "--partitions", "2"]);
    assert!(ok, "{error}");
    let lines: String = (0..10).map(|index| format!("event {index}\n")).collect();
    let mut producer = Command::new(&cli)
        .args(["--broker", &broker.address, "produce", "events", "--partition", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut producer.stdin.take().unwrap(), lines.as_bytes()).unwrap();
    assert!(producer.wait().unwrap().success());

    let (ok, out, error) =
        run(&["consume", "events", "--group", "audit", "--count", "4", "--idle-ms", "3000"]);
    assert!(ok, "{error}");
    assert_eq!(out, "event 0\nevent 1\nevent 2\nevent 3\n");
    let (ok, out, _) = run(&["group", "list"]);
    assert!(ok);
    assert!(out.lines().any(|line| line.starts_with("audit\t")), "{out}");
    let (ok, out, _) = run(&["group", "describe", "audit"]);
    assert!(ok);
    assert!(out.contains("members 0"), "{out}");
    assert!(
        out.lines().any(|line| line == "events\t0\t4\t10\t6"),
        "committed 4 of 10, lag 6: {out}"
    );

    // The next run resumes after what was printed.
    let (ok, out, error) = run(&["consume", "events", "--group", "audit", "--idle-ms", "1500"]);
    assert!(ok, "{error}");
    assert_eq!(out.lines().next(), Some("event 4"), "{out}");
    assert_eq!(out.lines().count(), 6);

    let (ok, out, error) = run(&["group", "reset", "audit", "--to", "earliest"]);
    assert!(ok, "{error}");
    assert!(out.contains("reset group audit on events: 2 partition(s)"), "{out}");
    let (ok, out, _) = run(&["consume", "events", "--group", "audit", "--count", "1"]);
    assert!(ok);
    assert_eq!(out, "event 0\n");

    // SIGTERM (a service manager stopping it) commits what was printed and leaves the group at
    // once, rather than holding its partitions until its session expires.
    let mut follower = Command::new(&cli)
        .args(["--broker", &broker.address, "consume", "events", "--group", "term", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = BufReader::new(follower.stdout.take().unwrap());
    for _ in 0..10 {
        let mut line = String::new();
        printed.read_line(&mut line).unwrap();
    }
    let status = Command::new("kill").args(["-TERM", &follower.id().to_string()]).status();
    assert!(status.unwrap().success());
    assert!(follower.wait().unwrap().success(), "a SIGTERM ends a consumer cleanly");
    let (ok, out, _) = run(&["group", "describe", "term"]);
    assert!(ok);
    assert!(out.contains("members 0"), "left the group: {out}");
    assert!(out.lines().any(|line| line == "events\t0\t10\t10\t0"), "committed: {out}");

    for (args, expected) in [
        (
            &["group", "reset", "audit", "--to", "sideways"][..],
            "expected earliest, latest or an offset",
        ),
        (&["group", "reset", "audit", "--to", "99"][..], "past the end"),
        (&["group", "describe", "no/such"][..], "invalid group name"),
        (&["consume", "nope", "--group", "audit"][..], "topic \"nope\" does not exist"),
        (&["consume", "events", "--group", "audit", "--partition", "1"][..], "cannot be used with"),
    ] {
        let (ok, _, error) = run(args);
        assert!(!ok, "{args:?} should fail");
        assert!(error.contains(expected), "{args:?}: {error}");
        assert_eq!(error.trim_end().lines().count(), 1, "one line: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_heartbeat_for_a_session_lets_go_and_joins_again() {
    // The broker is frozen (SIGSTOP) for longer than the session: the member's heartbeats go
    // unanswered, so it must stop treating its partitions as its own; once the broker answers
    // again it joins as a new member and gets them back.
    let broker = Broker::start(&[]);
    within(60, async {
        let mut client = Client::connect(&broker.address).await.unwrap();
        client.create_topic("frozen", TopicConfig::default().partitions(2)).await.unwrap();
        let consumer = member(&client, "cold", "frozen").await;
        assert_eq!(settled(&[&consumer], 2).await, [vec![0, 1]]);
        let before = consumer.member_id();

        broker.freeze();
        let frozen = tokio::time::Instant::now();
        while !consumer.assignment().is_empty() {
            assert!(frozen.elapsed() < SESSION * 4, "still holds {:?}", consumer.assignment());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(frozen.elapsed() >= SESSION, "let go before its session could have expired");
        broker.signal("CONT");

        assert_eq!(settled(&[&consumer], 2).await, [vec![0, 1]]);
        assert_ne!(consumer.member_id(), before, "joined again as a new member");
        consumer.close().await.unwrap();
    })
    .await;
}
