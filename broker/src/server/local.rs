//! The local listener: a Unix domain socket for clients on the broker's own host.
//!
//! It serves the native protocol, as the TCP listener does (so the same connection logs in,
//! joins groups and commits offsets), and two requests only it serves: `LocalOpen`, answered with
//! the partition's ring file and cursor page as descriptors, from which the client reads batches
//! in place ([`ringmq_protocol::local`]); and `LocalWait`, a fetch's long poll answered without
//! data, on which a reader that reached the end sleeps.
//!
//! Who may connect is the socket file's mode (`local_listen_mode`); authentication and
//! permissions then apply as on TCP. A local connection counts against the connection limits as
//! an address of 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{connection, Context, ServerError};
use crate::admission::Admission;
use crate::stream::Stream;

/// The address a local connection is known by (limits, permissions, logs).
const LOCAL_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The bound local socket.
#[derive(Debug)]
pub(crate) struct LocalListener {
    listener: UnixListener,
    path: PathBuf,
}

impl LocalListener {
    /// Binds the socket at `path` with file mode `mode`. A socket left there by a broker that is
    /// gone (nobody accepts on it) is replaced; a live one, or any other file, is an error. The
    /// socket is made under a temporary name, given its mode, then renamed into place, so it is
    /// never reachable with a wider mode.
    pub(crate) fn bind(path: &Path, mode: u32) -> Result<Self, ServerError> {
        let failed = |problem: String| ServerError::LocalListen { path: path.to_owned(), problem };
        match std::fs::symlink_metadata(path) {
            Ok(found) if found.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(failed("another broker is listening on it".to_owned()));
                }
                std::fs::remove_file(path)
                    .map_err(|error| failed(format!("cannot remove the stale socket: {error}")))?;
            }
            Ok(_) => return Err(failed("a file that is not a socket is in the way".to_owned())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(failed(error.to_string())),
        }
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!(".{}.tmp", std::process::id()));
        let staging = PathBuf::from(staging);
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging).map_err(|error| failed(error.to_string()))?;
        let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))
            .and_then(|()| std::fs::rename(&staging, path));
        if let Err(error) = placed {
            let _ = std::fs::remove_file(&staging);
            return Err(failed(error.to_string()));
        }
        tracing::info!(path = %path.display(), mode = format!("{mode:04o}"), "local listener bound");
        Ok(Self { listener, path: path.to_owned() })
    }

    /// Accepts and serves local connections until `stop`, then waits for them to finish and
    /// removes the socket file.
    pub(crate) async fn serve(
        self,
        context: Arc<Context>,
        admission: Arc<Admission>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let accepted = tokio::select! {
                _ = stop.changed() => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "local accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match admission.admit(LOCAL_PEER.ip()) {
                Ok(admitted) => {
                    let (context, stop) = (Arc::clone(&context), stop.clone());
                    connections.spawn(async move {
                        connection::serve(Stream::Local(stream), LOCAL_PEER, context, stop).await;
                        drop(admitted);
                    });
                }
                Err(refused) => {
                    context.core.metrics().connection_refused();
                    tracing::warn!(local = true, reason = %refused, "connection refused");
                }
            }
        }
        // New clients find no socket; those connected finish as TCP ones do.
        let _ = std::fs::remove_file(&self.path);
        drop(self.listener);
        while connections.join_next().await.is_some() {}
    }
}
