//! The one vectored write both front ends answer with: a response head and views of the mapped
//! ring, handed to the socket without being gathered into one buffer.

use std::io::{self, IoSlice};

use tokio::net::TcpStream;

/// Writes every slice, in order, with as few `writev` calls as the socket allows.
pub(crate) async fn write_all_vectored(
    stream: &TcpStream,
    slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    let mut remaining: &mut [IoSlice<'_>] = slices;
    IoSlice::advance_slices(&mut remaining, 0);
    while !remaining.is_empty() {
        stream.writable().await?;
        match stream.try_write_vectored(remaining) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut remaining, written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
