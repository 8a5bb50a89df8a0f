//! A value on its way to memcached (`on_store`) or back from it (`on_value`).

use crate::Command;

/// One value with its key and flags. Changes are sent instead of the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub(crate) command: Command,
    pub(crate) key: Vec<u8>,
    pub(crate) flags: u32,
    pub(crate) meta_flags: Vec<u8>,
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
            meta_flags: Vec::new(),
            data: data.into(),
            changed: false,
        }
    }

    /// With meta flags (`"MA"`, `"v f"`), for tests.
    pub fn with_meta_flags(mut self, flags: &str) -> Value {
        self.meta_flags = flags.as_bytes().to_vec();
        self
    }

    /// The storage command (`on_store`), or the retrieval that read it (`on_value`).
    pub fn command(&self) -> Command {
        self.command
    }

    /// What a storage request does with the value: `set`'s `Set` to `cas`'s `Cas`, and for
    /// `ms` what its mode flag (`MS`, `ME`, `MA`, `MP`, `MR`) and a `C` compare token say.
    /// `None` for a retrieval's value (`on_value`).
    pub fn mode(&self) -> Option<StoreMode> {
        Some(match self.command {
            Command::Set => StoreMode::Set,
            Command::Add => StoreMode::Add,
            Command::Replace => StoreMode::Replace,
            Command::Append => StoreMode::Append,
            Command::Prepend => StoreMode::Prepend,
            Command::Cas => StoreMode::Cas,
            Command::MetaSet => {
                let mut mode = StoreMode::Set;
                let mut compare = false;
                for flag in self.meta_flags() {
                    match flag {
                        [b'M', m] => {
                            mode = match m.to_ascii_uppercase() {
                                b'E' => StoreMode::Add,
                                b'A' => StoreMode::Append,
                                b'P' => StoreMode::Prepend,
                                b'R' => StoreMode::Replace,
                                _ => StoreMode::Set,
                            }
                        }
                        [b'C', ..] => compare = true,
                        _ => {}
                    }
                }
                match mode {
                    StoreMode::Set if compare => StoreMode::Cas,
                    mode => mode,
                }
            }
            _ => return None,
        })
    }

    /// Meta commands (`ms`, `mg`): the flags after the key, as the client sent them.
    pub fn meta_flags(&self) -> impl Iterator<Item = &[u8]> {
        self.meta_flags
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty())
    }

    /// The key as the client wrote it (decoded, for a base64 meta key).
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

/// What a storage request does with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    /// Only if the key is absent.
    Add,
    /// Only if the key is present.
    Replace,
    /// Added after the stored value, which keeps its flags.
    Append,
    /// Added before the stored value, which keeps its flags.
    Prepend,
    /// Only if the value is unchanged since the client read it.
    Cas,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_of_classic_and_meta_storage() {
        let mode = |command, flags: &str| {
            Value::new(command, "k", 0, "v")
                .with_meta_flags(flags)
                .mode()
        };
        assert_eq!(mode(Command::Prepend, ""), Some(StoreMode::Prepend));
        assert_eq!(mode(Command::MetaSet, "T30 F5"), Some(StoreMode::Set));
        assert_eq!(mode(Command::MetaSet, "MA"), Some(StoreMode::Append));
        assert_eq!(mode(Command::MetaSet, "Mp q"), Some(StoreMode::Prepend));
        assert_eq!(mode(Command::MetaSet, "ME"), Some(StoreMode::Add));
        assert_eq!(mode(Command::MetaSet, "C99"), Some(StoreMode::Cas));
        assert_eq!(mode(Command::MetaSet, "MR C99"), Some(StoreMode::Replace));
        assert_eq!(mode(Command::Get, ""), None);
    }
}
