//! memcached's ASCII and meta protocol: pure codecs over bytes, no sockets. Requests are
//! decoded ([`decoder`], [`parse`], [`request`]), every fact about a command is in [`command`], server
//! replies are framed ([`reply`]) and rewritten for the client ([`rewrite`]); a retrieval split
//! over servers is planned and merged in [`gather`], and retrievals queued together for one
//! server share a line ([`join`]).

pub mod command;
pub mod decoder;
pub mod error;
pub mod gather;
pub mod join;
pub mod lines;
mod parse;
pub mod reply;
pub mod request;
pub mod rewrite;

pub use decoder::{Decoder, Refusal};
pub use error::ProtocolError;
pub use gather::Gather;
pub use reply::{BadReply, ReplyKind, ReplyScanner};
pub use request::{Command, KeySpan, Part, Request};
