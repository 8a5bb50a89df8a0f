//! One worker's connections to upstream servers: opened with a timeout, and kept idle for reuse
//! (at most `keepalive` per server, none by default as in nginx), checked still open before each
//! reuse. No locks: a worker owns its pools. A connection has no buffer of its own: what is read
//! from it goes to the buffers of the request it serves, so an idle one costs only its socket.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// A connection to an upstream server.
pub struct Conn {
    pub stream: TcpStream,
    /// Whether it served an earlier request (a failure may then be a stale keep-alive).
    pub reused: bool,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed: {0}")]
    Failed(io::Error),
    #[error("connect timed out")]
    TimedOut,
}

/// Idle connections to the servers of one upstream.
pub struct ConnPool {
    idle: Vec<Vec<Conn>>,
    keepalive: usize,
}

impl ConnPool {
    pub fn new(servers: usize, keepalive: usize) -> ConnPool {
        ConnPool {
            idle: (0..servers).map(|_| Vec::new()).collect(),
            keepalive,
        }
    }

    /// An idle connection to server `i` that is still open, if any.
    pub fn checkout(&mut self, i: usize) -> Option<Conn> {
        while let Some(mut conn) = self.idle[i].pop() {
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.reused = true;
                    return Some(conn);
                }
                // Closed by the server, or it sent bytes nobody asked for.
                _ => continue,
            }
        }
        None
    }

    /// Keeps `conn` for reuse if there is room.
    pub fn checkin(&mut self, i: usize, conn: Conn) {
        if self.idle[i].len() < self.keepalive {
            self.idle[i].push(conn);
        }
    }
}

/// Opens a connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(ConnectError::TimedOut),
        Ok(Err(e)) => Err(ConnectError::Failed(e)),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(Conn {
                stream,
                reused: false,
            })
        }
    }
}
