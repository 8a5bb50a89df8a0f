//! A value on its way to memcached (`on_store`) or back from it (`on_value`).

use crate::Command;

/// One value with its key and flags. Changes are sent instead of the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub(crate) command: Command,
    pub(crate) key: Vec<u8>,
    pub(crate) flags: u32,
    pub(crate) data: Vec<u8>,
    pub(crate) changed: bool,
}

impl Value {
    /// A value for tests.
    pub fn new(
        command: Command,
        key: impl AsRef<[u8]>,
        flags: u32,
        data: impl Into<Vec<u8>>,
    ) -> Value {
        Value {
            command,
            key: key.as_ref().to_vec(),
            flags,
            data: data.into(),
            changed: false,
        }
    }

    /// The storage command (`on_store`), or the retrieval that read it (`on_value`).
    pub fn command(&self) -> Command {
        self.command
    }

    /// The key as the client wrote it.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The flags stored with the value (memcached's client flags, 32 bits).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Replaces the value's bytes.
    pub fn set_data(&mut self, data: impl Into<Vec<u8>>) {
        self.data = data.into();
        self.changed = true;
    }

    /// Replaces its flags.
    pub fn set_flags(&mut self, flags: u32) {
        self.flags = flags;
        self.changed = true;
    }

    /// True when the value or its flags were changed.
    pub fn is_changed(&self) -> bool {
        self.changed
    }
}
