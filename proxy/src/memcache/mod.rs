//! memcached's ASCII and meta protocol: pure codecs over bytes, no sockets.

pub mod command;
pub mod error;
mod parse;
pub mod reply;
pub mod request;

pub use error::ProtocolError;
pub use reply::{BadReply, ReplyScanner};
pub use request::{Command, Refusal, Request, decode};
