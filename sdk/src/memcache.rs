//! A memcached request as a plugin sees it.

use crate::Command;

/// One memcached request: its command, its one key (a multi-key retrieval is shown key by
/// key), for storage commands the flags, expiry and value length, and for meta commands their
/// flags. The key may be rewritten; replies still show the client's own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcacheRequest {
    pub(crate) command: Command,
    pub(crate) key: Vec<u8>,
    pub(crate) flags: u32,
    pub(crate) exptime: i64,
    pub(crate) value_len: u32,
    pub(crate) meta_flags: Vec<u8>,
    pub(crate) rewritten: bool,
}

impl MemcacheRequest {
    /// A request for tests: `command` on `key` (empty for keyless commands).
    pub fn new(command: Command, key: impl AsRef<[u8]>) -> MemcacheRequest {
        MemcacheRequest {
            command,
            key: key.as_ref().to_vec(),
            flags: 0,
            exptime: 0,
            value_len: 0,
            meta_flags: Vec::new(),
            rewritten: false,
        }
    }

    /// A keyless request for tests (`flush_all`, `stats`, ...).
    pub fn keyless(command: Command) -> MemcacheRequest {
        MemcacheRequest::new(command, b"")
    }

    /// With storage fields, for tests.
    pub fn with_storage(mut self, flags: u32, exptime: i64, value_len: u32) -> MemcacheRequest {
        self.flags = flags;
        self.exptime = exptime;
        self.value_len = value_len;
        self
    }

    /// With meta flags (`"v f T30"`), for tests.
    pub fn with_meta_flags(mut self, flags: &str) -> MemcacheRequest {
        self.meta_flags = flags.as_bytes().to_vec();
        self
    }

    pub fn command(&self) -> Command {
        self.command
    }

    /// The key (empty for keyless commands). For a meta command with a base64 key (`b`), the
    /// decoded bytes: walnut encodes a rewritten key again.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Storage commands: the client's flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Storage and touch commands: the expiry.
    pub fn exptime(&self) -> i64 {
        self.exptime
    }

    /// Storage commands: the value's length in bytes.
    pub fn value_len(&self) -> u32 {
        self.value_len
    }

    /// Meta commands: the flags after the key (and after `ms`'s length), as the client sent
    /// them (`v`, `f`, `T30`, `O123`, ...).
    pub fn meta_flags(&self) -> impl Iterator<Item = &[u8]> {
        self.meta_flags
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty())
    }

    /// Sends the request with `key` instead (replies show the client's key).
    pub fn set_key(&mut self, key: impl Into<Vec<u8>>) {
        self.key = key.into();
        self.rewritten = true;
    }

    /// True when the key was rewritten.
    pub fn is_rewritten(&self) -> bool {
        self.rewritten
    }
}
