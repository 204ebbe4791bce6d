//! Group membership, hand-over and commit rules, and the state log's replay and snapshots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use ringmq_protocol::group::PartitionOffset;

use super::store::{GroupStore, StoreError};
use super::*;
use crate::log::DataDir;
use crate::metrics::Metrics;
use crate::partition::SyncPolicy;
use crate::topics::{TopicDefaults, Topics};

const SESSION: Duration = Duration::from_secs(10);

fn group_with(members: &[&str], partitions: u32) -> Group {
    let mut group = Group { topic: Some("t".to_owned()), ..Group::default() };
    for id in members {
        group.members.insert(
            (*id).to_owned(),
            Member {
                session_timeout: SESSION,
                deadline: Instant::now() + SESSION,
                generation: 0,
                client: String::new(),
            },
        );
    }
    group.rebalance(partitions);
    group
}

#[test]
fn a_group_formed_at_once_gets_contiguous_balanced_ranges() {
    for (members, partitions, expected) in [
        (&["a", "b"][..], 6, vec![vec![0, 1, 2], vec![3, 4, 5]]),
        (&["a", "b", "c"][..], 6, vec![vec![0, 1], vec![2, 3], vec![4, 5]]),
        (&["a", "b", "c", "d"][..], 6, vec![vec![0, 1], vec![2, 3], vec![4], vec![5]]),
        (&["a", "b", "c"][..], 2, vec![vec![0], vec![1], vec![]]),
    ] {
        let mut group = group_with(members, partitions);
        let assigned: Vec<Vec<u32>> =
            members.iter().map(|member| group.assignment(member).partitions).collect();
        assert_eq!(assigned, expected, "{members:?} over {partitions}");
    }
}

#[test]
fn a_partition_moves_only_after_its_holder_learns_it_lost_it() {
    let mut group = group_with(&["a"], 6);
    assert_eq!(group.assignment("a").partitions, [0, 1, 2, 3, 4, 5]);
    group.members.insert(
        "b".to_owned(),
        Member {
            session_timeout: SESSION,
            deadline: Instant::now() + SESSION,
            generation: 0,
            client: String::new(),
        },
    );
    group.rebalance(6);
    // "a" has not heartbeated since: "b" must wait.
    let early = group.assignment("b");
    assert_eq!((early.partitions.len(), early.settled), (0, false));
    let a = group.assignment("a");
    assert_eq!((a.partitions, a.settled), (vec![0, 1, 2], true));
    let b = group.assignment("b");
    assert_eq!((b.partitions, b.settled, b.generation), (vec![3, 4, 5], true, a.generation));
}

#[test]
fn a_departure_moves_only_the_departed_member_s_partitions() {
    let mut group = group_with(&["a", "b", "c"], 7);
    let before: Vec<Vec<u32>> =
        ["a", "b", "c"].iter().map(|member| group.assignment(member).partitions).collect();
    assert_eq!(before, [vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
    group.remove("b");
    group.rebalance(7);
    let a = group.assignment("a");
    let c = group.assignment("c");
    assert!(a.settled && c.settled, "nothing had to move between a and c");
    let kept = |had: &[u32], has: &[u32]| had.iter().all(|partition| has.contains(partition));
    assert!(kept(&before[0], &a.partitions) && kept(&before[2], &c.partitions), "{a:?} {c:?}");
    assert_eq!(a.partitions.len() + c.partitions.len(), 7);
    assert!(a.partitions.len().abs_diff(c.partitions.len()) <= 1);

    // A join takes partitions from the others, as few as balance needs.
    group.members.insert(
        "d".to_owned(),
        Member {
            session_timeout: SESSION,
            deadline: Instant::now() + SESSION,
            generation: 0,
            client: String::new(),
        },
    );
    group.rebalance(7);
    let (a2, c2) = (group.assignment("a"), group.assignment("c"));
    let d = group.assignment("d");
    let moved = a.partitions.iter().filter(|p| !a2.partitions.contains(p)).count()
        + c.partitions.iter().filter(|p| !c2.partitions.contains(p)).count();
    assert_eq!(moved, 2, "d's two partitions, taken one from each: {a2:?} {c2:?} {d:?}");
    assert_eq!(d.partitions.len(), 2);
}

#[test]
fn an_expired_member_releases_its_partitions_at_once() {
    let mut group = group_with(&["a", "b"], 4);
    let _ = group.assignment("a");
    let _ = group.assignment("b");
    group.members.get_mut("b").unwrap().deadline = Instant::now();
    assert_eq!(group.expire(Instant::now()), 1);
    group.rebalance(4);
    let a = group.assignment("a");
    assert_eq!((a.partitions, a.settled), (vec![0, 1, 2, 3], true));
    assert_eq!(group.expire(Instant::now()), 0);
}

struct Fixture {
    _temp: tempfile::TempDir,
    coordinator: Coordinator,
}

fn open_store(path: &Path) -> (GroupStore, store::Replayed, DataDir) {
    let dir = DataDir::lock(path).unwrap();
    let (store, replayed) = GroupStore::open(
        &dir,
        store::STATE_CAPACITY_MIN,
        false,
        SyncPolicy::None,
        Duration::from_secs(5),
        Metrics::new().sync_histogram(),
    )
    .unwrap();
    (store, replayed, dir)
}

fn fixture(partitions: u32) -> Fixture {
    let temp = tempfile::tempdir().unwrap();
    let (store, _, dir) = open_store(temp.path());
    let defaults = TopicDefaults {
        partition_count: 1,
        capacity: 1 << 20,
        batch_size_max: 64 << 10,
        prefault: false,
        sync_method: crate::log::SyncMethod::default(),
        local_readers: false,
        capacity_max: 1 << 30,
        partition_count_max: 1024,
        topic_count_max: 16,
        ring_bytes_max: 0,
        disk_reserve: 0,
    };
    let metrics = Arc::new(Metrics::new());
    let topics = Arc::new(Topics::open(dir, defaults, Arc::clone(&metrics)).unwrap());
    topics.create("t", partitions, 0, 0).unwrap();
    let settings = GroupSettings {
        session_timeout_min: Duration::from_millis(100),
        session_timeout_max: Duration::from_secs(60),
        initial_rebalance_delay: Duration::from_millis(50),
    };
    Fixture { _temp: temp, coordinator: Coordinator::new(store, topics, settings, metrics) }
}

fn offsets(entries: &[(u32, u64)]) -> Vec<PartitionOffset> {
    entries.iter().map(|&(partition, offset)| PartitionOffset { partition, offset }).collect()
}

#[tokio::test]
async fn commits_are_refused_from_stale_unknown_or_non_holding_members() {
    let fixture = fixture(2);
    let groups = &fixture.coordinator;
    let a = groups.join("g", "t", "", SESSION, "peer-a").await.unwrap();
    assert_eq!(a.partitions, [0, 1]);
    groups.commit("g", "t", &a.member_id, a.generation, &offsets(&[(0, 0)])).await.unwrap();
    let b = groups.join("g", "t", "", SESSION, "peer-b").await.unwrap();
    assert!(!b.settled, "a still holds everything");

    // "a" has not learned the new generation: its old one is still the one it was told, and it
    // still holds partition 1, so it may commit it; "b" may not yet.
    groups.commit("g", "t", &a.member_id, a.generation, &offsets(&[(1, 0)])).await.unwrap();
    let refused = groups.commit("g", "t", &b.member_id, b.generation, &offsets(&[(1, 0)])).await;
    assert!(matches!(refused, Err(GroupError::NotAssigned { partition: 1, .. })), "{refused:?}");

    let a2 = groups.heartbeat("g", &a.member_id, "peer-a").await.unwrap();
    assert_eq!(a2.partitions, [0]);
    let stale = groups.commit("g", "t", &a.member_id, a.generation, &offsets(&[(0, 0)])).await;
    assert!(matches!(stale, Err(GroupError::StaleGeneration { .. })), "{stale:?}");
    let lost = groups.commit("g", "t", &a.member_id, a2.generation, &offsets(&[(1, 0)])).await;
    assert!(matches!(lost, Err(GroupError::NotAssigned { .. })), "{lost:?}");
    let b2 = groups.heartbeat("g", &b.member_id, "peer-b").await.unwrap();
    assert_eq!((b2.partitions.as_slice(), b2.settled), (&[1][..], true));
    groups.commit("g", "t", &b.member_id, b2.generation, &offsets(&[(1, 0)])).await.unwrap();

    let unknown = groups.commit("g", "t", "nobody", 1, &offsets(&[(0, 0)])).await;
    assert!(matches!(unknown, Err(GroupError::UnknownMember { .. })), "{unknown:?}");
    let admin = groups.commit("g", "t", "", 0, &offsets(&[(0, 0)])).await;
    assert!(matches!(admin, Err(GroupError::NotEmpty { members: 2, .. })), "{admin:?}");
    let past_end = groups.commit("g", "t", &b.member_id, b2.generation, &offsets(&[(1, 5)])).await;
    assert!(matches!(past_end, Err(GroupError::OffsetPastEnd { .. })), "{past_end:?}");

    groups.leave("g", &a.member_id).await.unwrap();
    groups.leave("g", &b.member_id).await.unwrap();
    groups.commit("g", "t", "", 0, &offsets(&[(0, 0), (1, 0)])).await.unwrap();
    assert_eq!(groups.committed("g", "t").await, offsets(&[(0, 0), (1, 0)]));
}

#[tokio::test]
async fn a_group_consumes_one_topic_and_names_are_checked() {
    let fixture = fixture(1);
    let groups = &fixture.coordinator;
    let bad = groups.join("bad name", "t", "", SESSION, "p").await;
    assert!(matches!(bad, Err(GroupError::InvalidName { .. })), "{bad:?}");
    let missing = groups.join("g", "nope", "", SESSION, "p").await;
    assert!(matches!(missing, Err(GroupError::UnknownTopic(_))), "{missing:?}");
    let member = groups.join("g", "t", "", SESSION, "p").await.unwrap();
    let other = groups.join("g", "u", "", SESSION, "p").await;
    assert!(other.is_err());
    // Rejoining with the same id keeps the member (no new generation).
    let again = groups.join("g", "t", &member.member_id, SESSION, "p").await.unwrap();
    assert_eq!((again.member_id, again.generation), (member.member_id, member.generation));
    // The session timeout is clamped to the broker's bounds.
    let short = groups.join("h", "t", "", Duration::from_millis(1), "p").await.unwrap();
    assert_eq!(short.session_timeout, Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn committed_offsets_and_producer_ids_survive_a_reopen_through_many_laps() {
    let temp = tempfile::tempdir().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    let mut ids = Vec::new();
    {
        let (store, _, _dir) = open_store(temp.path());
        ids.push(store.next_producer_id().await.unwrap());
        ids.push(store.next_producer_id().await.unwrap());
        // Committed once, at the start: only the snapshots carry these past the wrap.
        let early = offsets(&[(0, 11), (3, 33)]);
        store.commit("early", "topic", &early).await.unwrap();
        for entry in &early {
            expected.insert(("early".to_owned(), entry.partition), entry.offset);
        }
        // 100 partitions per commit, ~5 KiB per batch: 8000 commits write about 2.5 times the
        // 16 MiB log, so it wraps and only the snapshots keep older groups' offsets alive.
        for round in 0..8000u64 {
            let group = format!("group-{}", round % 7);
            let entries: Vec<PartitionOffset> = (0..100)
                .map(|partition| PartitionOffset {
                    partition,
                    offset: round * 1000 + u64::from(partition),
                })
                .collect();
            store.commit(&group, "topic", &entries).await.unwrap();
            for entry in &entries {
                expected.insert((group.clone(), entry.partition), entry.offset);
            }
        }
        let earliest = store.partition().log().earliest_offset();
        assert!(earliest > 0, "the log wrapped (earliest offset {earliest})");
        tokio::task::block_in_place(|| store.close_blocking()).unwrap();
    }
    let (store, replayed, _dir) = open_store(temp.path());
    let mut found = std::collections::BTreeMap::new();
    for (key, offset) in store.all_committed().await {
        found.insert((key.group, key.partition), offset);
    }
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(key, offset)| found.get(*key) != Some(*offset))
        .map(|(key, offset)| (key, offset, found.get(key)))
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "lost or wrong after replay (key, expected, found): {wrong:?}");
    assert_eq!(found.len(), expected.len());
    assert!(replayed.snapshots > 0, "{replayed:?}");
    let next = store.next_producer_id().await.unwrap();
    assert!(next > ids[1], "producer ids are never handed out twice: {ids:?} then {next}");
}

#[tokio::test]
async fn a_state_log_too_small_for_the_live_state_refuses_new_entries() {
    let temp = tempfile::tempdir().unwrap();
    let (store, _, _dir) = open_store(temp.path());
    let entries: Vec<PartitionOffset> =
        (0..1000).map(|partition| PartitionOffset { partition, offset: 1 }).collect();
    let mut refused = None;
    for group in 0..200 {
        if let Err(error) =
            store.commit(&format!("a-rather-long-group-name-{group:04}"), "t", &entries).await
        {
            refused = Some(error);
            break;
        }
    }
    let error = refused.expect("the live state outgrew a quarter of the log");
    assert!(matches!(error, StoreError::Full { .. }), "{error}");
    assert!(error.to_string().contains("group_log_capacity"), "{error}");
}

#[tokio::test]
async fn an_expiry_noticed_by_any_request_moves_the_expired_member_s_partitions() {
    let fixture = fixture(4);
    let groups = &fixture.coordinator;
    let short = Duration::from_millis(100);
    let a = groups.join("g", "t", "", short, "peer-a").await.unwrap();
    let b = groups.join("g", "t", "", SESSION, "peer-b").await.unwrap();
    assert_eq!(groups.heartbeat("g", &a.member_id, "peer-a").await.unwrap().partitions, [0, 1]);
    assert_eq!(groups.heartbeat("g", &b.member_id, "peer-b").await.unwrap().partitions, [2, 3]);
    let lone = groups.join("h", "t", "", short, "peer-c").await.unwrap();
    tokio::time::sleep(short * 2).await;

    // The first request to notice that "a" expired is one that fails: the partitions "a" held
    // must still go to "b", not stay with no one.
    let unknown = groups.leave("g", "nobody").await;
    assert!(matches!(unknown, Err(GroupError::UnknownMember { .. })), "{unknown:?}");
    let b2 = groups.heartbeat("g", &b.member_id, "peer-b").await.unwrap();
    assert_eq!((b2.partitions.as_slice(), b2.settled), (&[0, 1, 2, 3][..], true));

    // A group whose every member expired is forgotten (it no longer counts toward the limit).
    let listed: Vec<String> = groups.list().await.into_iter().map(|entry| entry.group).collect();
    assert_eq!(listed, ["g"]);
    let gone = groups.heartbeat("h", &lone.member_id, "peer-c").await;
    assert!(matches!(gone, Err(GroupError::UnknownMember { .. })), "{gone:?}");
}

#[tokio::test]
async fn member_ids_stay_short_whatever_the_group_name() {
    let fixture = fixture(1);
    let name = "g".repeat(ringmq_protocol::limits::GROUP_NAME_SIZE_MAX);
    let member = fixture.coordinator.join(&name, "t", "", SESSION, "p").await.unwrap();
    assert!(member.member_id.len() <= 40, "{}", member.member_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn producer_ids_never_handed_out_are_refused() {
    let fixture = fixture(1);
    let groups = &fixture.coordinator;
    let ProducerGrant { producer_id: id, producer_epoch: epoch } =
        groups.init_producer(-1, 0).await.unwrap();
    assert_eq!(
        groups.init_producer(id, epoch).await.unwrap(),
        ProducerGrant { producer_id: id, producer_epoch: epoch + 1 }
    );
    let forged = groups.init_producer(id + 1_000_000, 0).await;
    assert!(matches!(forged, Err(GroupError::UnknownProducer { .. })), "{forged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_deleted_topic_s_committed_offsets_are_forgotten() {
    let fixture = fixture(2);
    let groups = &fixture.coordinator;
    groups.commit("g", "t", "", 0, &offsets(&[(0, 0), (1, 0)])).await.unwrap();
    groups.delete_topic("t").await.unwrap();
    fixture.coordinator.topics.create("t", 2, 0, 0).unwrap();
    assert_eq!(groups.committed("g", "t").await, []);
}

// ----- Kafka's classic protocol ----------------------------------------------------------------

fn kafka_join(group: &str, member_id: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group: group.to_owned(),
        member_id: member_id.to_owned(),
        instance_id: instance.map(str::to_owned),
        client_id: "test".to_owned(),
        client_host: "127.0.0.1".to_owned(),
        session_timeout: Duration::from_secs(1),
        rebalance_timeout: Duration::from_secs(2),
        protocol_type: "consumer".to_owned(),
        protocols: vec![
            ("range".to_owned(), bytes::Bytes::from_static(b"range-metadata")),
            ("roundrobin".to_owned(), bytes::Bytes::new()),
        ],
        require_known_member_id: false,
    }
}

async fn answer<T: std::fmt::Debug>(reply: Reply<T>) -> Result<T, GroupError> {
    match reply {
        Reply::Ready(result) => result,
        Reply::Waiting(receiver) => receiver.await.expect("the group answers"),
    }
}

fn pending<T: std::fmt::Debug>(
    reply: Reply<T>,
) -> tokio::sync::oneshot::Receiver<Result<T, GroupError>> {
    match reply {
        Reply::Waiting(receiver) => receiver,
        Reply::Ready(result) => panic!("expected to wait, answered {result:?}"),
    }
}

fn member(id: &str) -> MemberRef {
    MemberRef { member_id: id.to_owned(), instance_id: None }
}

/// Two members joined and synced: (leader, follower, generation).
async fn stable_pair(coordinator: &Coordinator, group: &str) -> (String, String, i32) {
    let first = pending(coordinator.join_classic(kafka_join(group, "", None)).await);
    let second = pending(coordinator.join_classic(kafka_join(group, "", None)).await);
    // The initial delay (50 ms in the fixture) passes, then the upkeep completes the join.
    tokio::time::advance(Duration::from_millis(60)).await;
    coordinator.classic_upkeep().await;
    let (first, second) = (first.await.unwrap().unwrap(), second.await.unwrap().unwrap());
    assert_eq!(first.generation, second.generation);
    assert_eq!(first.leader, first.member_id, "the earliest member leads");
    assert_eq!(first.protocol, "range", "both prefer range");
    assert_eq!(first.members.len(), 2, "the leader sees every member");
    assert!(second.members.is_empty(), "a follower sees none");
    let follower_sync = pending(
        coordinator
            .sync_classic(SyncRequest {
                group: group.to_owned(),
                generation: second.generation,
                member_id: second.member_id.clone(),
                instance_id: None,
                assignments: Vec::new(),
            })
            .await,
    );
    let leader_sync = coordinator
        .sync_classic(SyncRequest {
            group: group.to_owned(),
            generation: first.generation,
            member_id: first.member_id.clone(),
            instance_id: None,
            assignments: vec![
                (first.member_id.clone(), bytes::Bytes::from_static(b"p0")),
                (second.member_id.clone(), bytes::Bytes::from_static(b"p1")),
            ],
        })
        .await;
    assert_eq!(&answer(leader_sync).await.unwrap()[..], b"p0");
    assert_eq!(&follower_sync.await.unwrap().unwrap()[..], b"p1", "the follower waited for it");
    (first.member_id, second.member_id, first.generation)
}

#[tokio::test(start_paused = true)]
async fn a_kafka_group_joins_syncs_and_rebalances_when_a_session_expires() {
    let fixture = fixture(2);
    let coordinator = &fixture.coordinator;
    let (leader, follower, generation) = stable_pair(coordinator, "k").await;
    coordinator.heartbeat_classic("k", generation, &member(&leader)).await.unwrap();
    let stale = coordinator.heartbeat_classic("k", generation - 1, &member(&leader)).await;
    assert!(matches!(stale, Err(GroupError::IllegalGeneration { .. })), "{stale:?}");
    // The follower falls silent; the leader keeps heartbeating.
    for _ in 0..6 {
        tokio::time::advance(Duration::from_millis(250)).await;
        coordinator.classic_upkeep().await;
        let _ = coordinator.heartbeat_classic("k", generation, &member(&leader)).await;
    }
    let beat = coordinator.heartbeat_classic("k", generation, &member(&leader)).await;
    assert!(matches!(beat, Err(GroupError::RebalanceInProgress { .. })), "{beat:?}");
    let gone = coordinator.heartbeat_classic("k", generation, &member(&follower)).await;
    assert!(matches!(gone, Err(GroupError::UnknownMember { .. })), "{gone:?}");
    let rejoined = answer(coordinator.join_classic(kafka_join("k", &leader, None)).await).await;
    let rejoined = rejoined.unwrap();
    assert_eq!(rejoined.generation, generation + 1);
    assert_eq!(rejoined.members.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_member_that_does_not_join_again_is_removed_at_the_rebalance_deadline() {
    let fixture = fixture(2);
    let coordinator = &fixture.coordinator;
    let (leader, follower, generation) = stable_pair(coordinator, "k").await;
    // The follower's metadata changes: a rebalance; the leader never joins again.
    let mut changed = kafka_join("k", &follower, None);
    changed.protocols[0].1 = bytes::Bytes::from_static(b"new subscription");
    let waiting = pending(coordinator.join_classic(changed).await);
    for _ in 0..9 {
        tokio::time::advance(Duration::from_millis(250)).await;
        coordinator.classic_upkeep().await;
        let _ = coordinator.heartbeat_classic("k", generation, &member(&leader)).await;
    }
    let joined = waiting.await.unwrap().unwrap();
    assert_eq!(joined.generation, generation + 1);
    assert_eq!(joined.leader, follower, "the remaining member leads");
    let gone = coordinator.heartbeat_classic("k", joined.generation, &member(&leader)).await;
    assert!(matches!(gone, Err(GroupError::UnknownMember { .. })), "{gone:?}");
}

#[tokio::test(start_paused = true)]
async fn a_static_member_back_with_a_new_id_keeps_its_assignment_without_a_rebalance() {
    let fixture = fixture(2);
    let coordinator = &fixture.coordinator;
    let first = pending(coordinator.join_classic(kafka_join("s", "", Some("a"))).await);
    let second = pending(coordinator.join_classic(kafka_join("s", "", Some("b"))).await);
    tokio::time::advance(Duration::from_millis(60)).await;
    coordinator.classic_upkeep().await;
    let (a, b) = (first.await.unwrap().unwrap(), second.await.unwrap().unwrap());
    let sync = |id: &str, instance: &str, assignments: Vec<(String, bytes::Bytes)>| SyncRequest {
        group: "s".to_owned(),
        generation: a.generation,
        member_id: id.to_owned(),
        instance_id: Some(instance.to_owned()),
        assignments,
    };
    let b_sync = pending(coordinator.sync_classic(sync(&b.member_id, "b", Vec::new())).await);
    let assignments = vec![
        (a.member_id.clone(), bytes::Bytes::from_static(b"a's")),
        (b.member_id.clone(), bytes::Bytes::from_static(b"b's")),
    ];
    answer(coordinator.sync_classic(sync(&a.member_id, "a", assignments)).await).await.unwrap();
    b_sync.await.unwrap().unwrap();

    // "a" restarts: an empty member id, the same instance id, different metadata.
    let mut again = kafka_join("s", "", Some("a"));
    again.protocols[0].1 = bytes::Bytes::from_static(b"owns nothing yet");
    let back = answer(coordinator.join_classic(again).await).await.unwrap();
    assert_ne!(back.member_id, a.member_id, "a new member id");
    assert_eq!(back.generation, a.generation, "no rebalance");
    assert!(back.members.is_empty() && back.leader == a.member_id, "it does not assign");
    let assignment = answer(coordinator.sync_classic(sync(&back.member_id, "a", Vec::new())).await);
    assert_eq!(&assignment.await.unwrap()[..], b"a's", "the assignment it had");
    coordinator.heartbeat_classic("s", a.generation, &member(&b.member_id)).await.unwrap();
    let old = MemberRef { member_id: a.member_id.clone(), instance_id: Some("a".to_owned()) };
    let fenced = coordinator.heartbeat_classic("s", a.generation, &old).await;
    assert!(matches!(fenced, Err(GroupError::FencedInstance { .. })), "{fenced:?}");
}

#[tokio::test(start_paused = true)]
async fn version_4_joins_are_given_a_member_id_to_join_with() {
    let fixture = fixture(1);
    let coordinator = &fixture.coordinator;
    let mut request = kafka_join("v4", "", None);
    request.require_known_member_id = true;
    let asked = answer(coordinator.join_classic(request.clone()).await).await;
    let Err(GroupError::MemberIdRequired { member: id, .. }) = asked else {
        panic!("expected MemberIdRequired, got {asked:?}")
    };
    request.member_id = id.clone();
    let waiting = pending(coordinator.join_classic(request).await);
    tokio::time::advance(Duration::from_millis(60)).await;
    coordinator.classic_upkeep().await;
    assert_eq!(waiting.await.unwrap().unwrap().member_id, id);
    let unknown = answer(coordinator.join_classic(kafka_join("v4", "made-up", None)).await).await;
    assert!(matches!(unknown, Err(GroupError::UnknownMember { .. })), "{unknown:?}");
}

#[tokio::test(start_paused = true)]
async fn kafka_and_native_groups_share_names_offsets_and_refuse_each_other_while_live() {
    let fixture = fixture(2);
    let coordinator = &fixture.coordinator;
    let (leader, _, generation) = stable_pair(coordinator, "shared").await;
    let native = coordinator.join("shared", "t", "", SESSION, "native").await;
    assert!(matches!(native, Err(GroupError::OtherKind { kind: "Kafka", .. })), "{native:?}");
    let native_commit = coordinator.commit("shared", "t", "", 0, &offsets(&[(0, 0)])).await;
    assert!(matches!(native_commit, Err(GroupError::OtherKind { .. })), "{native_commit:?}");

    // A simple commit (no member) is refused while the group has members; a member's lands.
    let topics = vec![("t".to_owned(), offsets(&[(0, 0), (1, 0), (7, 0)]))];
    let simple = coordinator.commit_classic("shared", -1, &member(""), &topics).await;
    assert!(matches!(simple, Err(GroupError::UnknownMember { .. })), "{simple:?}");
    let outcome = coordinator.commit_classic("shared", generation, &member(&leader), &topics).await;
    let outcome = outcome.unwrap();
    assert!(outcome[0].checked[0].is_ok() && outcome[0].checked[1].is_ok());
    assert!(matches!(outcome[0].checked[2], Err(GroupError::UnknownPartition { .. })));
    assert!(outcome[0].stored.is_ok());
    assert_eq!(coordinator.committed("shared", "t").await, offsets(&[(0, 0), (1, 0)]));

    // A native group refuses Kafka members the same way.
    coordinator.join("native-only", "t", "", SESSION, "native").await.unwrap();
    let kafka = answer(coordinator.join_classic(kafka_join("native-only", "", None)).await).await;
    assert!(matches!(kafka, Err(GroupError::OtherKind { kind: "native", .. })), "{kafka:?}");
    let listed = coordinator.list().await;
    let kinds: Vec<(&str, &GroupKind)> =
        listed.iter().map(|listing| (listing.group.as_str(), &listing.kind)).collect();
    assert!(kinds.contains(&("native-only", &GroupKind::Native)), "{kinds:?}");
    assert!(
        kinds.contains(&("shared", &GroupKind::Kafka { protocol_type: "consumer".to_owned() })),
        "{kinds:?}"
    );
}
