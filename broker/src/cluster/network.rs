//! openraft's network over the cluster transport: a group's requests to a peer leave as frames
//! tagged with the group ([`GroupNetwork`]), and a peer's requests are answered by the group they
//! name ([`serve`]).

use bytes::Bytes;
use openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, Raft};
use serde::{Deserialize, Serialize};

use super::transport::{BoxFuture, CallError, Frame, Handler, Transport};
use super::wire::{self, Kind};
use super::PartitionRaft;

type RpcError<E = Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

/// The network of one Raft group on this node: a client per peer, all on the shared transport.
#[derive(Debug, Clone)]
pub struct GroupNetwork {
    transport: Transport,
    group: u64,
    batch_size_max: u32,
}

impl GroupNetwork {
    /// The network of `group`, whose batches are at most `batch_size_max` bytes.
    pub fn new(transport: Transport, group: u64, batch_size_max: u32) -> Self {
        Self { transport, group, batch_size_max }
    }
}

impl RaftNetworkFactory<PartitionRaft> for GroupNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> PeerClient {
        PeerClient { network: self.clone(), target }
    }
}

/// One group's requests to one peer.
#[derive(Debug)]
pub struct PeerClient {
    network: GroupNetwork,
    target: u64,
}

impl PeerClient {
    async fn call<T, E>(
        &self,
        kind: Kind,
        body: Vec<Bytes>,
        action: RPCTypes,
        option: &RPCOption,
    ) -> Result<T, RpcError<E>>
    where
        T: for<'a> Deserialize<'a>,
        E: std::error::Error + for<'a> Deserialize<'a>,
    {
        let network = &self.network;
        let timeout = option.hard_ttl();
        let frame =
            network.transport.call(self.target, network.group, kind, body, timeout).await.map_err(
                |error| match error {
                    CallError::Unreachable { .. } | CallError::Refused { .. } => {
                        RPCError::Unreachable(Unreachable::new(&error))
                    }
                    CallError::Timeout { .. } => RPCError::Timeout(Timeout {
                        action,
                        id: network.transport.node(),
                        target: self.target,
                        timeout,
                    }),
                    CallError::Closed { .. } => RPCError::Network(NetworkError::new(&error)),
                },
            )?;
        // An answer crosses the wire as JSON of openraft's `Result`.
        match wire::from_json::<Result<T, RaftError<u64, E>>>(kind, &frame.body) {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(RPCError::RemoteError(RemoteError::new(self.target, error))),
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }
}

impl RaftNetwork<PartitionRaft> for PeerClient {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError> {
        let body = wire::encode_append(&request, self.network.batch_size_max)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        self.call(Kind::Append, body, RPCTypes::AppendEntries, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcError<InstallSnapshotError>> {
        let body = wire::encode_snapshot(&request);
        self.call(Kind::Snapshot, body, RPCTypes::InstallSnapshot, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcError> {
        let body = wire::encode_vote(&request);
        self.call(Kind::Vote, body, RPCTypes::Vote, &option).await
    }
}

fn answer<T: Serialize, E: Serialize>(result: Result<T, E>) -> Vec<Bytes> {
    vec![wire::json(&result)]
}

/// Answers a peer's requests for one group through its Raft.
pub(crate) struct RaftHandler {
    raft: Raft<PartitionRaft>,
    batch_size_max: u32,
}

impl RaftHandler {
    /// The handler of the group `raft` runs, whose batches are at most `batch_size_max` bytes.
    pub(crate) fn new(raft: Raft<PartitionRaft>, batch_size_max: u32) -> Self {
        Self { raft, batch_size_max }
    }
}

impl Handler for RaftHandler {
    fn serve(&self, frame: Frame) -> BoxFuture<'_, Result<Vec<Bytes>, String>> {
        Box::pin(serve(&self.raft, frame, self.batch_size_max))
    }
}

/// Answers a peer's request through `raft`: the answer's body, or why the frame was refused.
async fn serve(
    raft: &Raft<PartitionRaft>,
    frame: Frame,
    batch_size_max: u32,
) -> Result<Vec<Bytes>, String> {
    let kind = frame.header.kind;
    match kind {
        Kind::Append => {
            let request =
                wire::decode_append(&frame.body, batch_size_max).map_err(|e| e.to_string())?;
            Ok(answer(raft.append_entries(request).await))
        }
        Kind::Vote => {
            let request: VoteRequest<u64> =
                wire::from_json(kind, &frame.body).map_err(|error| error.to_string())?;
            Ok(answer(raft.vote(request).await))
        }
        Kind::Snapshot => {
            let request: InstallSnapshotRequest<PartitionRaft> =
                wire::from_json(kind, &frame.body).map_err(|error| error.to_string())?;
            Ok(answer(raft.install_snapshot(request).await))
        }
        Kind::Hello | Kind::Failure => Err(format!("a {kind:?} frame is not a request")),
    }
}
