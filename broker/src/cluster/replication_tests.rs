//! A partition group on three nodes in this process, each with its own ring, its own transport on
//! a loopback port and openraft: entries replicate over TCP, every replica's ring holds the same
//! bytes, a follower refuses writes naming the leader, a stopped leader is replaced, and the
//! stopped node, restarted on its data, catches up. (The cluster of real `ringmq` processes is
//! tested in `broker/tests/` once the broker runs groups.)

#![allow(clippy::unwrap_used, reason = "tests stop loudly")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft};
use ringmq_protocol::BatchHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tests::{batch, replica, Replica};
use super::wire::{self, Hello, Kind, Outgoing};
use super::{
    Batch, GroupTiming, PartitionGroup, PartitionRaft, Transport, TransportConfig, TransportTasks,
    WriteError,
};
use crate::log::{Log, OpenMode};

const GROUP: u64 = 7;
/// Long enough not to time out on this shared 2-core machine under a parallel test run.
const WAIT: Duration = Duration::from_secs(30);

struct Node {
    id: u64,
    /// Holds the data directory's lock while the node runs.
    _replica: Replica,
    group: PartitionGroup,
    raft: Raft<PartitionRaft>,
    log: Log,
    transport: Transport,
    tasks: TransportTasks,
}

impl Node {
    async fn start(
        id: u64,
        root: &Path,
        peers: &BTreeMap<u64, SocketAddr>,
        listener: TcpListener,
        chunks: u64,
    ) -> Self {
        let dir = root.join(id.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let replica = replica(&dir, chunks);
        let mode = if replica.ring().exists() { OpenMode::Existing } else { OpenMode::Create };
        let (store, machine) = replica.open(mode);
        let log = store.log().clone();
        let config = TransportConfig {
            node: id,
            cluster: "test".to_owned(),
            peers: peers.clone(),
            frame_max: 16 << 20,
        };
        let (transport, tasks) = Transport::start(config, listener);
        let timing = GroupTiming {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
        };
        let group = PartitionGroup::start(GROUP, &transport, store, machine, timing).await.unwrap();
        let raft = group.raft().clone();
        Self { id, _replica: replica, group, raft, log, transport, tasks }
    }

    async fn stop(self) {
        self.group.shutdown(&self.transport).await;
        self.tasks.shutdown().await;
    }
}

/// The leader all of `nodes` agree on.
async fn leader(nodes: &[&Node]) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let leaders: Vec<Option<u64>> =
            nodes.iter().map(|node| node.raft.metrics().borrow().current_leader).collect();
        if let Some(Some(leader)) = leaders.first() {
            if leaders.iter().all(|seen| seen == &Some(*leader))
                && nodes.iter().any(|node| node.id == *leader)
            {
                return *leader;
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every committed batch of `log` from offset `from` on (a batch boundary), as bytes.
fn committed(log: &Log, from: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut offset = from;
    while offset < log.next_offset() {
        let outcome = log.read(offset, 1 << 20).unwrap();
        let mut rest = &outcome.batches[..];
        while let Ok(header) = BatchHeader::peek(rest) {
            let size = header.batch_len();
            if header.base_offset() >= offset {
                bytes.extend_from_slice(&rest[..size]);
                offset = header.next_offset();
            }
            rest = &rest[size..];
        }
    }
    bytes
}

/// Waits until every node's ring has committed what the first has, then compares them.
async fn assert_replicas_agree(nodes: &[&Node]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ends: Vec<u64> = nodes.iter().map(|node| node.log.next_offset()).collect();
        let applied: Vec<_> =
            nodes.iter().map(|node| node.raft.metrics().borrow().last_applied).collect();
        if ends.windows(2).all(|pair| pair[0] == pair[1])
            && applied.windows(2).all(|pair| pair[0] == pair[1])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge: ends {ends:?}, applied {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From the latest earliest offset: each ring reclaims on its own.
    let from = nodes.iter().map(|node| node.log.earliest_offset()).max().unwrap();
    let first = committed(&nodes[0].log, from);
    assert!(!first.is_empty() || nodes[0].log.next_offset() == from);
    for node in &nodes[1..] {
        assert!(
            committed(&node.log, from) == first,
            "node {} holds other bytes than node {}",
            node.id,
            nodes[0].id
        );
    }
}

/// Writes `count` batches of three records through the leader, retrying a write refused while
/// the ring waits for its purge; returns the offsets they landed at.
async fn produce(leader: &Node, from: u64, count: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    for tag in from..from + count {
        let deadline = Instant::now() + WAIT;
        let written = loop {
            match leader.group.write(Batch(batch(tag, 3).into())).await {
                Err(WriteError::RingFull { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => break other.unwrap(),
            }
        };
        offsets.push(written.base_offset.unwrap());
    }
    offsets
}

/// A well-formed hello from node `node` of another cluster (9 is no peer; 1 is, but dials 2 only
/// in cluster "test").
fn rogue_hello(node: u64) -> Vec<u8> {
    let cluster = if node == 1 { "other" } else { "test" };
    let hello = Hello { node, cluster: cluster.to_owned() };
    let frame = Outgoing::new(Kind::Hello, false, 0, 0, vec![wire::json(&hello)]);
    [&frame.header[..], &frame.body[0]].concat()
}

type Cluster = (tempfile::TempDir, BTreeMap<u64, SocketAddr>, BTreeMap<u64, Node>);

/// Three nodes on loopback ports with rings of `chunks` chunks, the group initialised on them.
async fn start_cluster(chunks: u64) -> Cluster {
    let root = tempfile::tempdir().unwrap();
    let mut listeners = BTreeMap::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, listener.local_addr().unwrap());
        listeners.insert(id, listener);
    }
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        nodes.insert(id, Node::start(id, root.path(), &peers, listener, chunks).await);
    }
    let members: BTreeMap<u64, BasicNode> =
        peers.iter().map(|(&id, addr)| (id, BasicNode::new(addr.to_string()))).collect();
    nodes[&1].raft.initialize(members).await.unwrap();
    (root, peers, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(miri, ignore = "sockets and file mmap")]
async fn a_partition_replicates_over_tcp_and_survives_its_leader() {
    let (root, peers, mut nodes) = start_cluster(64).await;
    let all: Vec<&Node> = nodes.values().collect();
    let first_leader = leader(&all).await;

    // A connection that is not a peer's is closed, and harms no other.
    for junk in [vec![0xab; 64], rogue_hello(9), rogue_hello(1)] {
        let mut stream = TcpStream::connect(peers[&2]).await.unwrap();
        stream.write_all(&junk).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "a rogue connection got an answer: {rest:?}");
    }

    // Offsets are dense across the writes (the membership and blank entries hold one each).
    let offsets = produce(&nodes[&first_leader], 0, 40).await;
    assert!(offsets.windows(2).all(|pair| pair[1] == pair[0] + 3), "{offsets:?}");
    assert_replicas_agree(&all).await;

    // A follower refuses a write and names the leader.
    let follower = nodes.keys().copied().find(|&id| id != first_leader).unwrap();
    match nodes[&follower].group.write(Batch(batch(99, 1).into())).await {
        Err(error @ WriteError::NotLeader { leader, .. }) => {
            assert_eq!(leader, Some(first_leader));
            assert!(error.to_string().contains(&format!("node {first_leader} is")), "{error}");
        }
        other => panic!("a follower's write: {other:?}"),
    }

    // The leader stops: the other two elect one of them and go on.
    let stopping = Instant::now();
    nodes.remove(&first_leader).unwrap().stop().await;
    let stopped = stopping.elapsed();
    let rest: Vec<&Node> = nodes.values().collect();
    let second_leader = leader(&rest).await;
    let elected = stopping.elapsed();
    assert_ne!(second_leader, first_leader);
    let more = produce(&nodes[&second_leader], 40, 1).await;
    let first_write = stopping.elapsed();
    let more = [more, produce(&nodes[&second_leader], 41, 19).await].concat();
    eprintln!(
        "leader {first_leader} stopped in {stopped:?}; {second_leader} elected after {elected:?}, \
         its first write acknowledged after {first_write:?}"
    );
    assert!(more[0] > *offsets.last().unwrap());
    assert_replicas_agree(&rest).await;

    // The stopped node restarts on its data and catches up, to the same bytes.
    let listener = TcpListener::bind(peers[&first_leader]).await.unwrap();
    nodes.insert(first_leader, Node::start(first_leader, root.path(), &peers, listener, 64).await);
    let all: Vec<&Node> = nodes.values().collect();
    assert_replicas_agree(&all).await;
    assert_eq!(leader(&all).await, second_leader);
    for node in nodes.into_values() {
        node.stop().await;
    }
}

/// Rings of 16 chunks of 4 KiB take several rings' worth of writes: the ring asks for the purge
/// its next chunks need, the retention task snapshots and purges, every ring reclaims, no group
/// stops on a refused reclaim, and the replicas hold the same bytes where they all still hold them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(miri, ignore = "sockets and file mmap")]
async fn replicated_rings_reclaim_what_raft_purged_and_go_on() {
    let (_root, _peers, nodes) = start_cluster(16).await;
    let all: Vec<&Node> = nodes.values().collect();
    let leader_id = leader(&all).await;
    let capacity = nodes[&leader_id].log.capacity();
    let mut written = 0;
    let mut tag = 0;
    while written < 4 * capacity {
        let offsets = produce(&nodes[&leader_id], tag, 50).await;
        tag += 50;
        assert!(offsets.windows(2).all(|pair| pair[1] == pair[0] + 3), "{offsets:?}");
        written += 50 * batch(0, 3).len() as u64;
    }
    assert_replicas_agree(&all).await;
    for node in &all {
        let metrics = node.raft.metrics().borrow().clone();
        assert!(metrics.running_state.is_ok(), "node {}: {:?}", node.id, metrics.running_state);
        assert!(node.log.earliest_offset() > 0, "node {} reclaimed nothing", node.id);
        assert!(metrics.purged.is_some(), "node {} purged nothing", node.id);
    }
    for node in nodes.into_values() {
        node.stop().await;
    }
}
