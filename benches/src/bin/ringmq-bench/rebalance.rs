//! `--rebalance`: how long a consumer group takes to hand a departed member's partitions to the
//! others, when the member crashes (stops heartbeating) and when it leaves cleanly.
//!
//! Three members share the topic's partitions. Each round removes one member and measures, from
//! that moment, until the survivors hold every partition between them, as their own background
//! heartbeats report it (the bench only watches; it does not heartbeat for them). The target
//! (issue 6) is one session timeout plus one heartbeat interval; a clean leave is expected to take
//! about one heartbeat interval, since the survivors learn of it at their next heartbeat.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringmq_client::{Client, GroupConsumer, TopicConfig};

/// One way of leaving and the times measured.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) departure: &'static str,
    pub(crate) times: Vec<Duration>,
    pub(crate) target: Duration,
}

async fn member(
    client: &Client,
    group: &str,
    topic: &str,
    session: Duration,
) -> anyhow::Result<GroupConsumer> {
    Ok(client.group_consumer(group, topic).session_timeout(session).build().await?)
}

/// Waits (watching, not heartbeating) until `members` hold `partitions` partitions between them
/// with no overlap; returns when that was first seen.
async fn covered(
    members: &[GroupConsumer],
    partitions: u32,
    deadline: Duration,
) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        let held: Vec<u32> = members.iter().flat_map(GroupConsumer::assignment).collect();
        let unique: BTreeSet<u32> = held.iter().copied().collect();
        anyhow::ensure!(held.len() == unique.len(), "a partition is held twice: {held:?}");
        if unique.len() == partitions as usize {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "the group did not rebalance within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs `rounds` crash rounds and `rounds` leave rounds.
pub(crate) async fn measure(
    address: &str,
    partitions: u32,
    session: Duration,
    rounds: u32,
) -> anyhow::Result<Vec<Measured>> {
    let mut client = Client::connect(address).await?;
    let topic = format!("bench-rebalance-{}", std::process::id());
    client.create_topic(&topic, TopicConfig::default().partitions(partitions)).await?;
    let heartbeat = session / 3;
    let deadline = session * 4 + Duration::from_secs(5);
    let mut crash = Measured {
        departure: "crash (no heartbeat)",
        times: Vec::new(),
        target: session + heartbeat,
    };
    let mut leave =
        Measured { departure: "clean leave", times: Vec::new(), target: session + heartbeat };
    for round in 0..rounds {
        for crashing in [true, false] {
            let group = format!("bench-{round}-{crashing}");
            let mut members = Vec::new();
            for _ in 0..3 {
                members.push(member(&client, &group, &topic, session).await?);
            }
            // Settle first: every member has learned the final assignment.
            covered(&members, partitions, deadline).await.context("settling")?;
            while members.iter().any(|member| member.assignment().is_empty()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let departing = members.pop().context("three members")?;
            let started = Instant::now();
            if crashing {
                drop(departing);
            } else {
                departing.close().await?;
            }
            let done = covered(&members, partitions, deadline).await?;
            let took = done.duration_since(started);
            if crashing {
                crash.times.push(took)
            } else {
                leave.times.push(took)
            }
            for member in members {
                member.close().await?;
            }
        }
    }
    Ok(vec![crash, leave])
}

/// Prints one line per departure: min, median and max, against the target.
pub(crate) fn print(measured: &[Measured], partitions: u32, session: Duration) {
    println!("consumer group rebalance: 3 members, {partitions} partitions, session timeout {} ms, heartbeat every {} ms", session.as_millis(), (session / 3).as_millis());
    println!(
        "{:<22} {:>8} {:>10} {:>8} {:>8} {:>10}",
        "departure", "rounds", "min ms", "median", "max ms", "target ms"
    );
    for entry in measured {
        let mut times = entry.times.clone();
        times.sort();
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        let (min, median, max) = match times.as_slice() {
            [] => (0.0, 0.0, 0.0),
            all => (ms(all[0]), ms(all[all.len() / 2]), ms(all[all.len() - 1])),
        };
        let verdict = if times.iter().all(|time| *time <= entry.target) { "met" } else { "MISSED" };
        println!(
            "{:<22} {:>8} {:>10.0} {:>8.0} {:>8.0} {:>10.0} {verdict}",
            entry.departure,
            times.len(),
            min,
            median,
            max,
            ms(entry.target)
        );
    }
}
