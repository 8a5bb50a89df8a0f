//! What a client did wrong, as the exact line memcached answers it with.

/// A request the codec refused. The text of each is the reply on the wire; the codec has
/// already consumed the bad input (except where noted), so the next request parses cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// An unknown command (memcached's plain `ERROR`).
    UnknownCommand,
    /// A bad number, a bad key, or the wrong number of tokens.
    BadFormat,
    /// A key longer than 250 bytes or holding control characters.
    BadKey,
    /// `incr`/`decr` with a delta that is not an unsigned 64-bit number.
    BadDelta,
    /// An exptime that is not a number (`touch`, `gat`, `flush_all`).
    BadExptime,
    /// `delete <key> <time>` with a non-zero time.
    BadDelete,
    /// A meta flag given twice (`mg`, `ms`; memcached's own words for `md`/`ma` are in
    /// `DuplicateOrInvalidFlag`). Passed on, `mg k v q q` would reach a server as a quiet
    /// `mg k v q`, whose silent miss would shift the replies of that connection.
    DuplicateFlag,
    /// `md`/`ma` with a flag given twice.
    DuplicateOrInvalidFlag,
    /// A meta command whose base64 key does not decode.
    BadBase64Key,
    /// The data block did not end with `\r\n` where its length said.
    BadDataChunk,
    /// A value over the item size limit (its data block is skipped, unbuffered).
    TooLarge,
    /// A line with no end within the bound: answered, then the connection is closed (fatal).
    LineTooLong,
    /// An unknown command whose last token starts with `HTTP/`: a browser's request. The
    /// connection closes without an answer, as memcached closes it (fatal).
    NotMemcached,
}

impl ProtocolError {
    /// The reply line, `\r\n` included (the error's text is this line, without it).
    pub fn reply(self) -> &'static [u8] {
        match self {
            ProtocolError::UnknownCommand => b"ERROR\r\n",
            ProtocolError::BadFormat | ProtocolError::BadKey => {
                b"CLIENT_ERROR bad command line format\r\n"
            }
            ProtocolError::BadDelta => b"CLIENT_ERROR invalid numeric delta argument\r\n",
            ProtocolError::BadExptime => b"CLIENT_ERROR invalid exptime argument\r\n",
            ProtocolError::BadDelete => {
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
            }
            ProtocolError::DuplicateFlag => b"CLIENT_ERROR duplicate flag\r\n",
            ProtocolError::DuplicateOrInvalidFlag => b"CLIENT_ERROR invalid or duplicate flag\r\n",
            ProtocolError::BadBase64Key => b"CLIENT_ERROR error decoding key\r\n",
            ProtocolError::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
            ProtocolError::TooLarge => b"SERVER_ERROR object too large for cache\r\n",
            ProtocolError::LineTooLong => b"CLIENT_ERROR line too long\r\n",
            ProtocolError::NotMemcached => b"",
        }
    }

    /// After this error the connection cannot be parsed any further and is closed.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ProtocolError::LineTooLong | ProtocolError::NotMemcached
        )
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = self.reply().strip_suffix(b"\r\n").unwrap_or_default();
        f.write_str(std::str::from_utf8(line).unwrap_or_default())
    }
}

impl std::error::Error for ProtocolError {}
