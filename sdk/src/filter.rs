//! The hooks a plugin implements, and what each may answer.

use crate::http::HttpRequest;
use crate::memcache::MemcacheRequest;

/// What a request filter does. Every hook has a default that changes nothing, so a plugin
/// writes only the hooks it needs; hooks left at their default are never called by walnut.
pub trait Filter {
    /// Checks the plugin's config after it was deserialized; an `Err` refuses the config
    /// (walnut then fails to start and prints the message).
    fn init(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// A memcached request, before it is routed: it may go on (`Continue`, after any key
    /// rewrite through [`MemcacheRequest::set_key`]) or be refused (`Reject`). For a multi-key
    /// retrieval this runs once per key.
    fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> Verdict {
        let _ = req;
        crate::rt::not_overridden();
        Verdict::Continue
    }

    /// Chooses where a key goes: the pool's ring (`Ring`), the ring applied to other bytes
    /// (`Hash`), or a named server (`Server`, which falls back to the ring while that server is
    /// ejected).
    fn on_hash(&mut self, key: &[u8]) -> Placement {
        let _ = key;
        crate::rt::not_overridden();
        Placement::Ring
    }

    /// An HTTP request of a `protocol: http` pool, before it is passed upstream: it may go on
    /// (`Continue`, after any change made with [`HttpRequest::set_path`],
    /// [`HttpRequest::set_header`], [`HttpRequest::remove_header`] or
    /// [`HttpRequest::set_hash_key`]), be refused (`Reject`: 403 with the message), or be
    /// answered locally with `Respond`.
    fn on_http_request(&mut self, req: &mut HttpRequest) -> Verdict {
        let _ = req;
        crate::rt::not_overridden();
        Verdict::Continue
    }
}

/// A request hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (with any changes made to the request).
    Continue,
    /// Refuse: a memcached client gets `CLIENT_ERROR <message>`; an HTTP client a 403.
    Reject(String),
    /// Answer locally (HTTP): status, headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

impl Verdict {
    /// `Reject` with `message`.
    pub fn reject(message: impl Into<String>) -> Verdict {
        Verdict::Reject(message.into())
    }

    /// `Respond` with `status` and `body` and no extra headers.
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) -> Verdict {
        Verdict::Respond {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// A hash hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The pool's own placement of the key.
    Ring,
    /// Place by these bytes instead of the key.
    Hash(Vec<u8>),
    /// Send to the server with this name (its `name` in the config, or `host:port`).
    Server(String),
}
