//! A memcached request as a plugin sees it.

/// One memcached request: its command and keys, and for storage commands the flags, expiry
/// and value length. Keys may be rewritten; replies still show the client's own keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemcacheRequest {
    pub(crate) command: String,
    pub(crate) keys: Vec<Vec<u8>>,
    pub(crate) flags: u32,
    pub(crate) exptime: i64,
    pub(crate) value_len: u32,
    pub(crate) rewritten: bool,
}

impl MemcacheRequest {
    /// A request for tests: `command` (`get`, `set`, `mg`, `flush_all`, ...) with `keys`.
    pub fn new<K: AsRef<[u8]>>(
        command: &str,
        keys: impl IntoIterator<Item = K>,
    ) -> MemcacheRequest {
        MemcacheRequest {
            command: command.to_owned(),
            keys: keys.into_iter().map(|k| k.as_ref().to_vec()).collect(),
            ..MemcacheRequest::default()
        }
    }

    /// With storage fields, for tests.
    pub fn with_storage(mut self, flags: u32, exptime: i64, value_len: u32) -> MemcacheRequest {
        self.flags = flags;
        self.exptime = exptime;
        self.value_len = value_len;
        self
    }

    /// The command as sent: `get`, `set`, `delete`, `mg`, `flush_all`, ...
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The first key (empty for keyless commands such as `flush_all`).
    pub fn key(&self) -> &[u8] {
        self.keys.first().map_or(&[], |k| k)
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.iter().map(|k| k.as_slice())
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

    /// Replaces key `index` with `key` (sent to memcached instead; replies show the original).
    pub fn set_key(&mut self, index: usize, key: impl Into<Vec<u8>>) {
        if let Some(k) = self.keys.get_mut(index) {
            *k = key.into();
            self.rewritten = true;
        }
    }

    /// True when a key was rewritten.
    pub fn is_rewritten(&self) -> bool {
        self.rewritten
    }
}
