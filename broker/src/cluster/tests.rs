//! The ring as openraft's log: openraft's own storage suite, then what the suite does not
//! reach: batches of records, restarts (the index rebuilt from the anchor, the vote, the purge
//! and commit points kept, truncations not undone), and the ring's reclaim held to the purge.

#![allow(clippy::unwrap_used, reason = "tests stop loudly")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::testing::StoreBuilder;
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, Vote};
use ringmq_protocol::{BatchBuilder, BatchView, Push, Record};

use super::{Batch, LogId, PartitionMachine, PartitionRaft, RaftStorageError, RingLogStore};
use crate::log::{self, DataDir, LogConfig, OpenMode};

type Entry = openraft::Entry<PartitionRaft>;

fn ring_config(chunks: u64) -> LogConfig {
    LogConfig::new(4096 * chunks, Some(4096), 2048).unwrap().with_publish_on_commit(true)
}

/// A partition's Raft log and state machine in a directory of their own.
pub(super) struct Replica {
    dir: PathBuf,
    data: DataDir,
    config: LogConfig,
}

impl Replica {
    pub(super) fn ring(&self) -> PathBuf {
        self.dir.join("0.ring")
    }

    pub(super) fn open(&self, mode: OpenMode) -> (RingLogStore, PartitionMachine) {
        let (log, writer, _) = log::open(&self.data, &self.ring(), &self.config, mode).unwrap();
        let store = RingLogStore::open(log, writer).unwrap();
        let machine = PartitionMachine::open(&store, &self.dir.join("0.snapshot")).unwrap();
        (store, machine)
    }
}

pub(super) fn replica(dir: &Path, chunks: u64) -> Replica {
    Replica { dir: dir.to_owned(), data: DataDir::lock(dir).unwrap(), config: ring_config(chunks) }
}

struct Builder;

impl StoreBuilder<PartitionRaft, RingLogStore, PartitionMachine, (tempfile::TempDir, Replica)>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<((tempfile::TempDir, Replica), RingLogStore, PartitionMachine), RaftStorageError>
    {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path(), 64);
        let (store, machine) = replica.open(OpenMode::Create);
        Ok(((dir, replica), store, machine))
    }
}

/// openraft's storage test suite (`openraft::testing::Suite`), on rings in files, one test per
/// case so a failure names it. Each case runs in a runtime of its own, as the suite's `test_all`
/// does.
mod suite {
    use std::future::Future;

    use openraft::testing::{StoreBuilder, Suite};

    use openraft::storage::{RaftLogStorage, RaftStateMachine, StorageHelper};
    use openraft::{BasicNode, RaftState, TokioInstant, Vote};

    use super::{
        append, blank, membership, voters, Builder, PartitionMachine, PartitionRaft,
        RaftStorageError, Replica, RingLogStore,
    };

    type RingSuite =
        Suite<PartitionRaft, RingLogStore, PartitionMachine, Builder, (tempfile::TempDir, Replica)>;

    fn run<Fu>(case: impl FnOnce(RingLogStore, PartitionMachine) -> Fu)
    where
        Fu: Future<Output = Result<(), RaftStorageError>>,
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (_dir, store, machine) = Builder.build().await.unwrap();
            case(store, machine).await.unwrap();
        });
    }

    macro_rules! cases {
        ($($case:ident),* $(,)?) => {
            $(
                #[test]
                #[cfg_attr(miri, ignore = "file mmap")]
                fn $case() {
                    run(RingSuite::$case);
                }
            )*
        };
    }

    cases!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );

    /// The suite's `get_initial_state_membership_from_log_and_sm` appends entry 3 after entry 1,
    /// a gap its in-memory reference store holds and openraft's engine never makes (it appends
    /// after the last entry, truncating first). The ring holds no gap (see
    /// `a_bad_entry_is_refused_and_writes_nothing`), so this is that case with entry 2 present.
    #[test]
    #[cfg_attr(miri, ignore = "file mmap")]
    fn get_initial_state_membership_from_log_and_sm() {
        run(|mut store, mut machine| async move {
            store.save_vote(&Vote::new(1, 0)).await?;
            machine.apply([blank(1, 1), membership(1, 2, &[3, 4, 5])]).await?;
            let effective = |state: RaftState<u64, BasicNode, TokioInstant>| {
                state.membership_state.effective().membership().clone()
            };
            let initial = StorageHelper::new(&mut store, &mut machine).get_initial_state().await?;
            assert_eq!(effective(initial), voters(&[3, 4, 5]), "no log: from the state machine");

            append(&mut store, vec![membership(1, 1, &[1, 2, 3])]).await?;
            let initial = StorageHelper::new(&mut store, &mut machine).get_initial_state().await?;
            assert_eq!(
                effective(initial),
                voters(&[3, 4, 5]),
                "log below last applied: from the machine"
            );

            append(&mut store, vec![blank(1, 2), membership(1, 3, &[1, 2, 3])]).await?;
            let initial = StorageHelper::new(&mut store, &mut machine).get_initial_state().await?;
            assert_eq!(
                effective(initial),
                voters(&[1, 2, 3]),
                "log above last applied: from the log"
            );
            Ok(())
        });
    }

    #[test]
    #[cfg_attr(miri, ignore = "file mmap")]
    fn transfer_snapshot() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(RingSuite::transfer_snapshot(&Builder)).unwrap();
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

/// A producer's batch of `count` records whose values name `tag`.
pub(super) fn batch(tag: u64, count: u64) -> Vec<u8> {
    let mut buffer = vec![0; 4096];
    let mut builder = BatchBuilder::new(&mut buffer, 1_000).unwrap();
    for i in 0..count {
        let value = format!("{tag}-{i}-{}", "x".repeat(40));
        assert_eq!(builder.push(&Record::value(value.as_bytes(), 1_000)).unwrap(), Push::Appended);
    }
    builder.finish().unwrap().to_vec()
}

fn normal(term: u64, index: u64, count: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Batch(batch(index, count).into())),
    }
}

fn voters(nodes: &[u64]) -> Membership<u64, BasicNode> {
    let voters: BTreeSet<u64> = nodes.iter().copied().collect();
    Membership::new(vec![voters], None)
}

fn membership(term: u64, index: u64, nodes: &[u64]) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Membership(voters(nodes)) }
}

fn blank(term: u64, index: u64) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
}

/// Appends and syncs (openraft's `LogFlushed` callback cannot be built outside openraft; the
/// suite above drives `append` with it).
async fn append(store: &mut RingLogStore, entries: Vec<Entry>) -> Result<(), RaftStorageError> {
    store.append_entries(entries)?;
    store.log().sync().unwrap();
    Ok(())
}

/// What an entry read back is, compared with what was appended (normal entries: the ring stamps
/// base offset and epoch in place, outside the CRC, so the records are compared).
fn same_entry(read: &Entry, written: &Entry) -> bool {
    let records = |bytes: &[u8]| -> Vec<Vec<u8>> {
        let view = BatchView::validate(bytes, u32::MAX).unwrap();
        view.records().unwrap().map(|record| record.value.unwrap().to_vec()).collect()
    };
    read.log_id == written.log_id
        && match (&read.payload, &written.payload) {
            (EntryPayload::Normal(a), EntryPayload::Normal(b)) => records(&a.0) == records(&b.0),
            (a, b) => a == b,
        }
}

/// Every entry the log holds, checked against `expected`.
async fn assert_entries(store: &mut RingLogStore, expected: &[Entry]) {
    let mut reader = store.get_log_reader().await;
    let read = reader.try_get_log_entries(0..).await.unwrap();
    assert_eq!(read.len(), expected.len(), "entries held");
    for (read, written) in read.iter().zip(expected) {
        assert!(same_entry(read, written), "{read:?} is not {written:?}");
    }
    // A range from the middle, as a replication read asks.
    if expected.len() > 2 {
        let from = expected[1].log_id.index;
        let part = reader.try_get_log_entries(from..from + 1).await.unwrap();
        assert_eq!(part.len(), 1);
        assert!(same_entry(&part[0], &expected[1]));
    }
}

/// Entries of records, blank and membership entries across terms; a truncation of a conflicting
/// tail, a purge, a vote and a commit point; then a restart rebuilds all of it from the ring and
/// its replication state record, and the log goes on where it was.
#[tokio::test]
#[cfg_attr(miri, ignore = "file mmap")]
async fn the_raft_log_is_rebuilt_from_the_ring_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path(), 16);
    let (mut store, mut machine) = replica.open(OpenMode::Create);
    let mut expected = vec![membership(1, 0, &[1, 2, 3]), blank(1, 1)];
    expected.extend((2..12).map(|index| normal(1 + index / 6, index, 1 + index % 3)));
    append(&mut store, expected.clone()).await.unwrap();
    assert_entries(&mut store, &expected).await;

    // A new leader's log conflicts from entry 9 on: truncate and append its entries.
    store.truncate(log_id(2, 9)).await.unwrap();
    expected.truncate(9);
    let tail = vec![blank(3, 9), normal(3, 10, 2), membership(3, 11, &[1, 2]), normal(3, 12, 1)];
    append(&mut store, tail.clone()).await.unwrap();
    expected.extend(tail);
    assert_entries(&mut store, &expected).await;

    // Committed up to 10: readers see the records of entries 0-10 and no more.
    store.save_committed(Some(log_id(3, 10))).await.unwrap();
    // Entries 0, 1 and 9 are one control record each, 2-8 hold 1 + index % 3 records, 10 holds 2.
    let records_through_10: u64 = 3 + (2..9).map(|index| 1 + index % 3).sum::<u64>() + 2;
    assert_eq!(store.log().next_offset(), records_through_10);
    machine.apply(expected[..11].to_vec()).await.unwrap();
    let answers = machine.apply(vec![expected[11].clone()]).await.unwrap();
    assert_eq!(answers[0].base_offset, None, "a membership entry lands no records");

    let vote = Vote::new_committed(3, 2);
    store.save_vote(&vote).await.unwrap();
    store.purge(log_id(1, 3)).await.unwrap();
    expected.drain(..4);
    assert_entries(&mut store, &expected).await;
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(3, 12)));
    let written = store.log().written_offset();
    drop(machine);
    store.close().await;

    let (mut store, machine) = replica.open(OpenMode::Existing);
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.get_log_state().await.unwrap(), state);
    assert_entries(&mut store, &expected).await;
    assert_eq!(store.log().written_offset(), written);
    // The commit point saved with the purge is published again.
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 10)));
    assert_eq!(store.log().next_offset(), records_through_10);
    let next = normal(4, 13, 3);
    append(&mut store, vec![next.clone()]).await.unwrap();
    expected.push(next);
    assert_entries(&mut store, &expected).await;
    assert_eq!(store.log().written_offset(), written + 3);

    // A purge past the last entry: the log is empty and the next entry follows the purge point,
    // across a restart too.
    store.purge(log_id(4, 20)).await.unwrap();
    drop(machine);
    store.close().await;
    let (mut store, machine) = replica.open(OpenMode::Existing);
    assert_entries(&mut store, &[]).await;
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        (state.last_purged_log_id, state.last_log_id),
        (Some(log_id(4, 20)), Some(log_id(4, 20)))
    );
    let next = normal(5, 21, 1);
    append(&mut store, vec![next.clone()]).await.unwrap();
    drop(machine);
    store.close().await;
    let (mut store, _machine) = replica.open(OpenMode::Existing);
    assert_entries(&mut store, &[next]).await;
}

/// An entry that is not a valid batch (only a corrupt or hostile peer sends one) is refused
/// with the reason, and nothing is written; an entry that does not follow the last is refused.
#[tokio::test]
#[cfg_attr(miri, ignore = "file mmap")]
async fn a_bad_entry_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path(), 16);
    let (mut store, _machine) = replica.open(OpenMode::Create);
    append(&mut store, vec![blank(1, 0)]).await.unwrap();
    let mut bytes = batch(1, 2);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let corrupt =
        Entry { log_id: log_id(1, 1), payload: EntryPayload::Normal(Batch(bytes.into())) };
    let error = append(&mut store, vec![corrupt]).await.unwrap_err();
    assert!(error.to_string().contains("not a valid record batch"), "{error}");
    let error = append(&mut store, vec![blank(1, 5)]).await.unwrap_err();
    assert!(error.to_string().contains("does not follow"), "{error}");
    assert_eq!(store.log().written_offset(), 1);
    append(&mut store, vec![normal(1, 1, 2)]).await.unwrap();
    assert_eq!(store.log().written_offset(), 3);
}

/// The ring reclaims no entry Raft still holds: a full ring refuses the append (an error openraft
/// gets), and once Raft purges, the ring reclaims up to the purge point and takes the entry.
#[tokio::test]
#[cfg_attr(miri, ignore = "file mmap")]
async fn the_ring_reclaims_only_what_raft_purged() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path(), 4);
    let (mut store, _machine) = replica.open(OpenMode::Create);
    let mut index = 0;
    let error = loop {
        match append(&mut store, vec![normal(1, index, 8)]).await {
            // Committed as it goes (the ring holds at most one ring of uncommitted entries).
            Ok(()) => store.save_committed(Some(log_id(1, index))).await.unwrap(),
            Err(error) => break error,
        }
        index += 1;
    };
    assert!(error.to_string().contains("kept"), "{error}");
    // Committed and purged up to the last entry written: the ring may reclaim all of it.
    store.save_committed(Some(log_id(1, index - 1))).await.unwrap();
    store.purge(log_id(1, index - 1)).await.unwrap();
    append(&mut store, vec![normal(1, index, 8)]).await.unwrap();
    assert!(store.log().earliest_offset() > 0, "the oldest chunk was reclaimed");
    let mut reader = store.get_log_reader().await;
    let read = reader.try_get_log_entries(0..).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].log_id, log_id(1, index));
}
