//! The commands walnut understands: every fact about each one (its name, its kind, the shape
//! of its reply) is written here and nowhere else.

use super::reply::ReplyKind;

/// Every command walnut understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    Quit,
}

impl Command {
    /// The command named `name` on the wire (case-sensitive, as memcached).
    pub fn from_name(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"get" => Command::Get,
            b"gets" => Command::Gets,
            b"gat" => Command::Gat,
            b"gats" => Command::Gats,
            b"set" => Command::Set,
            b"add" => Command::Add,
            b"replace" => Command::Replace,
            b"append" => Command::Append,
            b"prepend" => Command::Prepend,
            b"cas" => Command::Cas,
            b"delete" => Command::Delete,
            b"incr" => Command::Incr,
            b"decr" => Command::Decr,
            b"touch" => Command::Touch,
            b"mg" => Command::MetaGet,
            b"ms" => Command::MetaSet,
            b"md" => Command::MetaDelete,
            b"ma" => Command::MetaArithmetic,
            b"me" => Command::MetaDebug,
            b"mn" => Command::MetaNoop,
            b"version" => Command::Version,
            b"verbosity" => Command::Verbosity,
            b"stats" => Command::Stats,
            b"flush_all" => Command::FlushAll,
            b"quit" => Command::Quit,
            _ => return None,
        })
    }

    /// The command's name on the wire.
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
            Command::Quit => "quit",
        }
    }

    /// get, gets, gat, gats: many keys, answered with VALUE blocks and one END.
    pub fn is_retrieval(self) -> bool {
        matches!(
            self,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        )
    }

    /// gets, gats: the reply carries each value's cas unique.
    pub fn returns_cas(self) -> bool {
        matches!(self, Command::Gets | Command::Gats)
    }

    /// gat, gats: a retrieval that also sets an exptime, given before the keys.
    pub fn is_touching_retrieval(self) -> bool {
        matches!(self, Command::Gat | Command::Gats)
    }

    /// set, add, replace, append, prepend, cas: a data block follows the line.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            Command::Set
                | Command::Add
                | Command::Replace
                | Command::Append
                | Command::Prepend
                | Command::Cas
        )
    }

    /// Commands routed to one server by their key.
    pub fn is_keyed(self) -> bool {
        !matches!(
            self,
            Command::MetaNoop
                | Command::Version
                | Command::Verbosity
                | Command::Stats
                | Command::FlushAll
                | Command::Quit
        )
    }

    /// mg ms md ma me mn: the meta protocol.
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

    /// The shape of the reply a server sends to this command, so anything else is refused.
    pub fn reply_kind(self) -> ReplyKind {
        match self {
            c if c.is_retrieval() => ReplyKind::Retrieval,
            c if c.is_storage() => ReplyKind::Storage,
            c if c.is_meta() => ReplyKind::Meta,
            Command::Delete => ReplyKind::Delete,
            Command::Incr | Command::Decr => ReplyKind::Arithmetic,
            Command::Touch => ReplyKind::Touch,
            Command::Stats => ReplyKind::Stats,
            _ => ReplyKind::Ok,
        }
    }
}
