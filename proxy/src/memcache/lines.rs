//! The lines walnut answers with itself, rather than relaying a server's.

/// The answer to `version` (see `memcached_version!`).
pub const VERSION: &[u8] = concat!("VERSION ", crate::memcached_version!(), "\r\n").as_bytes();
pub const OK: &[u8] = b"OK\r\n";
pub const END: &[u8] = b"END\r\n";
pub const MN: &[u8] = b"MN\r\n";
pub const ERROR: &[u8] = b"ERROR\r\n";
/// Every server the request could go to is out of the ring.
pub const NO_SERVER: &[u8] = b"SERVER_ERROR no server available\r\n";
/// A request ended without its server's reply (its connection went away first).
pub const NO_REPLY: &[u8] = b"SERVER_ERROR no reply\r\n";
/// A `fail_closed` plugin failed on the request.
pub const PLUGIN_FAILED: &[u8] = b"SERVER_ERROR plugin failed\r\n";
