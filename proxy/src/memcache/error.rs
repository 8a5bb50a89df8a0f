//! What a client did wrong, as the exact line memcached answers it with.

/// A request the codec refused. The text of each is the reply on the wire; the codec has
/// already consumed the bad input (except where noted), so the next request parses cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An unknown command (memcached's plain `ERROR`).
    #[error("ERROR")]
    UnknownCommand,
    /// A bad number, a bad key, or the wrong number of tokens.
    #[error("CLIENT_ERROR bad command line format")]
    BadFormat,
    /// A key longer than 250 bytes or holding control characters.
    #[error("CLIENT_ERROR bad command line format")]
    BadKey,
    /// `incr`/`decr` with a delta that is not an unsigned 64-bit number.
    #[error("CLIENT_ERROR invalid numeric delta argument")]
    BadDelta,
    /// `delete <key> <time>` with a non-zero time.
    #[error("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]")]
    BadDelete,
    /// A meta command whose base64 key does not decode.
    #[error("CLIENT_ERROR error decoding key")]
    BadBase64Key,
    /// The data block did not end with `\r\n` where its length said.
    #[error("CLIENT_ERROR bad data chunk")]
    BadDataChunk,
    /// A value over the item size limit (its data block is skipped, unbuffered).
    #[error("SERVER_ERROR object too large for cache")]
    TooLarge,
    /// A line with no end within the bound: answered, then the connection is closed (fatal).
    #[error("CLIENT_ERROR line too long")]
    LineTooLong,
}

impl ProtocolError {
    /// The reply line, `\r\n` included.
    pub fn reply(self) -> &'static [u8] {
        match self {
            ProtocolError::UnknownCommand => b"ERROR\r\n",
            ProtocolError::BadFormat | ProtocolError::BadKey => {
                b"CLIENT_ERROR bad command line format\r\n"
            }
            ProtocolError::BadDelta => b"CLIENT_ERROR invalid numeric delta argument\r\n",
            ProtocolError::BadDelete => {
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
            }
            ProtocolError::BadBase64Key => b"CLIENT_ERROR error decoding key\r\n",
            ProtocolError::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
            ProtocolError::TooLarge => b"SERVER_ERROR object too large for cache\r\n",
            ProtocolError::LineTooLong => b"CLIENT_ERROR line too long\r\n",
        }
    }

    /// After this error the connection cannot be parsed any further and is closed.
    pub fn is_fatal(self) -> bool {
        matches!(self, ProtocolError::LineTooLong)
    }
}
