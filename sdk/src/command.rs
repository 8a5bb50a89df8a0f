//! The memcached commands a plugin can see, by name.

use std::fmt;

/// A memcached command. In a plugin's config it is written by its wire name (`flush_all`,
/// `get`, `mg`), and a name walnut does not know is refused when the config loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    Get,
    Gets,
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Delete,
    Incr,
    Decr,
    Touch,
    MetaGet,
    MetaSet,
    MetaDelete,
    MetaArithmetic,
    MetaDebug,
    MetaNoop,
    Version,
    Verbosity,
    Stats,
    FlushAll,
}

impl Command {
    /// Every command, in the order above.
    pub const ALL: [Command; 24] = [
        Command::Get,
        Command::Gets,
        Command::Gat,
        Command::Gats,
        Command::Set,
        Command::Add,
        Command::Replace,
        Command::Append,
        Command::Prepend,
        Command::Cas,
        Command::Delete,
        Command::Incr,
        Command::Decr,
        Command::Touch,
        Command::MetaGet,
        Command::MetaSet,
        Command::MetaDelete,
        Command::MetaArithmetic,
        Command::MetaDebug,
        Command::MetaNoop,
        Command::Version,
        Command::Verbosity,
        Command::Stats,
        Command::FlushAll,
    ];

    /// The command's name on the wire (`flush_all`, `mg`).
    pub fn name(self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Delete => "delete",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Touch => "touch",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArithmetic => "ma",
            Command::MetaDebug => "me",
            Command::MetaNoop => "mn",
            Command::Version => "version",
            Command::Verbosity => "verbosity",
            Command::Stats => "stats",
            Command::FlushAll => "flush_all",
        }
    }

    /// The command named `name` on the wire.
    pub fn from_name(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.name() == name)
    }

    /// get, gets, gat, gats.
    pub fn is_retrieval(self) -> bool {
        matches!(
            self,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        )
    }

    /// A command that stores a value: set, add, replace, append, prepend, cas, ms.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            Command::Set
                | Command::Add
                | Command::Replace
                | Command::Append
                | Command::Prepend
                | Command::Cas
                | Command::MetaSet
        )
    }

    /// mg ms md ma me mn.
    pub fn is_meta(self) -> bool {
        matches!(
            self,
            Command::MetaGet
                | Command::MetaSet
                | Command::MetaDelete
                | Command::MetaArithmetic
                | Command::MetaDebug
                | Command::MetaNoop
        )
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Command, D::Error> {
        let name = String::deserialize(d)?;
        Command::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Command::ALL.iter().map(|c| c.name()).collect();
            serde::de::Error::custom(format!(
                "unknown memcached command `{name}`, expected one of {}",
                known.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for c in Command::ALL {
            assert_eq!(Command::from_name(c.name()), Some(c));
        }
        let ok: Vec<Command> = serde_json::from_str(r#"["flush_all","mg"]"#).unwrap();
        assert_eq!(ok, [Command::FlushAll, Command::MetaGet]);
        let err = serde_json::from_str::<Vec<Command>>(r#"["flush-all"]"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown memcached command `flush-all`"),
            "{err}"
        );
    }
}
