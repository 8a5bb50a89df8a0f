//! The write side of a client connection, written to without awaiting: replies go out from
//! whichever task completes them, and only a full socket buffer makes the client task wait.

use std::io;

/// A client socket's write half (TCP or unix).
pub enum ClientWriter {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl ClientWriter {
    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            ClientWriter::Tcp(w) => w.try_write(bytes),
            ClientWriter::Unix(w) => w.try_write(bytes),
        }
    }

    /// Ends the write side (the client reads EOF), even while replies from servers are still
    /// on their way to the dropped requests.
    pub fn shutdown(&self) {
        let _ = match self {
            ClientWriter::Tcp(w) => {
                socket2::SockRef::from(w.as_ref()).shutdown(std::net::Shutdown::Write)
            }
            ClientWriter::Unix(w) => {
                socket2::SockRef::from(w.as_ref()).shutdown(std::net::Shutdown::Write)
            }
        };
    }

    /// Waits until the socket can take more.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            ClientWriter::Tcp(w) => w.writable().await,
            ClientWriter::Unix(w) => w.writable().await,
        }
    }
}
