//! Why a server connection failed, as the client's `SERVER_ERROR` line and as a log reason.

use bytes::Bytes;

/// Why a server could not answer; the text is the `SERVER_ERROR` line the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Refused,
    Reset,
    Closed,
    TimedOut,
    ConnectTimedOut,
    BadReply,
    Unreachable,
}

impl Failure {
    /// The reply line sent to each request this failure took down.
    pub fn reply(self) -> Bytes {
        Bytes::from_static(match self {
            Failure::Refused => b"SERVER_ERROR Connection refused\r\n",
            Failure::Reset => b"SERVER_ERROR Connection reset by peer\r\n",
            Failure::Closed => b"SERVER_ERROR Connection closed by server\r\n",
            Failure::TimedOut => b"SERVER_ERROR Connection timed out\r\n",
            Failure::ConnectTimedOut => b"SERVER_ERROR Connection timed out while connecting\r\n",
            Failure::BadReply => b"SERVER_ERROR Invalid reply from server\r\n",
            Failure::Unreachable => b"SERVER_ERROR Server unreachable\r\n",
        })
    }

    /// The reason, for logs.
    pub fn text(self) -> &'static str {
        match self {
            Failure::Refused => "connection refused",
            Failure::Reset => "connection reset",
            Failure::Closed => "connection closed by server",
            Failure::TimedOut => "timed out",
            Failure::ConnectTimedOut => "connect timed out",
            Failure::BadReply => "invalid reply",
            Failure::Unreachable => "unreachable",
        }
    }

    pub(super) fn from_io(e: &std::io::Error) -> Failure {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Failure::Refused,
            ConnectionReset | ConnectionAborted | BrokenPipe => Failure::Reset,
            TimedOut => Failure::TimedOut,
            UnexpectedEof => Failure::Closed,
            _ => Failure::Unreachable,
        }
    }
}
