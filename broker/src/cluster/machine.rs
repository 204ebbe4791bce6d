//! The state machine of a replicated partition.
//!
//! A partition's data is its log: applying an entry changes no data, it records how far the
//! partition is applied and the membership in force, and answers where a producer's batch landed.
//! The snapshot is that state plus the offset after the last applied entry, saved in a file beside
//! the ring (written to a temporary file, synced, renamed, the directory synced), so a restart
//! finds the state its purged entries no longer hold.
//!
//! Installing a snapshot records its state. A snapshot that would move this replica's ring to
//! another offset (a follower behind its leader's retention, reset to the leader's earliest
//! offset) needs the ring to restart at that offset, which the ring cannot do yet: such an install
//! is refused with an error that says so (docs/cluster-plan.md, step 3).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::log_store::OffsetsOf;
use super::{Applied, LogId, PartitionRaft, RaftStorageError, RingLogStore};

type Entry = openraft::Entry<PartitionRaft>;
type Membership = StoredMembership<u64, openraft::BasicNode>;
type Meta = SnapshotMeta<u64, openraft::BasicNode>;

/// A snapshot's data: the applied state, and where the partition's log goes on after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionSnapshot {
    meta: Meta,
    /// Offset after the last applied entry, where the replica's log holds it.
    next_offset: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    last_applied: Option<LogId>,
    membership: Membership,
    current: Option<PartitionSnapshot>,
    /// Snapshots built or installed since the process started (for unique ids).
    built: u64,
}

/// The state machine of one replicated partition.
#[derive(Debug, Clone)]
pub struct PartitionMachine {
    state: Arc<Mutex<State>>,
    offsets: OffsetsOf,
    snapshot_path: PathBuf,
}

impl PartitionMachine {
    /// The state machine of `store`'s partition, its snapshot at `snapshot_path`: the state the
    /// saved snapshot holds (nothing applied without one).
    ///
    /// # Errors
    ///
    /// Reading or decoding a saved snapshot failed (the message names the file).
    pub fn open(store: &RingLogStore, snapshot_path: &Path) -> Result<Self, String> {
        let mut state = State::default();
        match std::fs::read(snapshot_path) {
            Ok(bytes) => {
                let snapshot: PartitionSnapshot = serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "{}: the partition's snapshot does not decode: {e}",
                        snapshot_path.display()
                    )
                })?;
                state.last_applied = snapshot.meta.last_log_id;
                state.membership = snapshot.meta.last_membership.clone();
                state.current = Some(snapshot);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(format!("{}: {error}", snapshot_path.display())),
        }
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            offsets: store.offsets(),
            snapshot_path: snapshot_path.to_owned(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Saves `snapshot` as the current one, durably, then makes it current.
    fn keep(&self, state: &mut State, snapshot: PartitionSnapshot) -> Result<(), RaftStorageError> {
        let signature = Some(snapshot.meta.signature());
        let error = |error: std::io::Error| -> RaftStorageError {
            StorageIOError::write_snapshot(signature.clone(), AnyError::new(&error)).into()
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(|e| error(std::io::Error::other(e)))?;
        write_durably(&self.snapshot_path, &bytes).map_err(error)?;
        state.current = Some(snapshot);
        Ok(())
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one: a temporary file
/// beside it, synced, renamed over it, the directory synced.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty());
    std::fs::File::open(directory.unwrap_or(Path::new(".")))?.sync_all()
}

impl RaftSnapshotBuilder<PartitionRaft> for PartitionMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionRaft>, RaftStorageError> {
        let machine = self.clone();
        let mut state = machine.state();
        state.built += 1;
        let last = state.last_applied;
        let snapshot_id = match last {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, state.built),
            None => format!("none-{}", state.built),
        };
        let meta =
            Meta { last_log_id: last, last_membership: state.membership.clone(), snapshot_id };
        let next_offset = last.and_then(|id| self.offsets.end_of(id.index));
        let snapshot = PartitionSnapshot { meta: meta.clone(), next_offset };
        let data = serde_json::to_vec(&snapshot).map_err(|error| {
            RaftStorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::new(&error),
            ))
        })?;
        machine.keep(&mut state, snapshot)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<PartitionRaft> for PartitionMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), RaftStorageError> {
        let state = self.state();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.state();
        let mut answers = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let answer = match entry.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Membership(membership) => {
                    state.membership = Membership::new(Some(entry.log_id), membership);
                    Applied::default()
                }
                EntryPayload::Normal(_) => Applied { base_offset: self.offsets.offset_of(index) },
            };
            state.last_applied = Some(entry.log_id);
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let read_error = |reason: String| -> RaftStorageError {
            StorageIOError::new(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                AnyError::error(reason),
            )
            .into()
        };
        let received: PartitionSnapshot = serde_json::from_slice(snapshot.get_ref())
            .map_err(|error| read_error(format!("the snapshot does not decode: {error}")))?;
        if received.meta != *meta {
            return Err(read_error(format!(
                "the snapshot holds {:?}, not the {:?} it was sent as",
                received.meta, meta
            )));
        }
        if let (Some(next_offset), Some(last)) = (received.next_offset, meta.last_log_id) {
            let here = self.offsets.end_of(last.index);
            if here != Some(next_offset) {
                return Err(read_error(format!(
                    "the snapshot moves this replica's log to offset {next_offset} after entry \
                     {}, which this ring does not hold there ({here:?}); resetting a ring to a \
                     leader's earliest offset is not built yet",
                    last.index
                )));
            }
        }
        let mut state = self.state();
        state.built += 1;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        self.keep(&mut state, received)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<PartitionRaft>>, RaftStorageError> {
        let state = self.state();
        let Some(current) = &state.current else { return Ok(None) };
        let data = serde_json::to_vec(current).map_err(|error| {
            RaftStorageError::from(StorageIOError::read_snapshot(
                Some(current.meta.signature()),
                AnyError::new(&error),
            ))
        })?;
        Ok(Some(Snapshot { meta: current.meta.clone(), snapshot: Box::new(Cursor::new(data)) }))
    }
}
