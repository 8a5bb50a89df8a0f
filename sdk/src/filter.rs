//! The hooks a plugin implements, and what each may answer.

use crate::http::{HttpRequest, HttpResponse};
use crate::memcache::MemcacheRequest;
use crate::value::Value;

/// What a request filter does. Every hook has a default that changes nothing; overriding a
/// hook is what turns it on (walnut stops calling a hook after its default answered once), so a
/// plugin pays only for the hooks it writes.
pub trait Filter {
    /// Checks the plugin's config after it was deserialized; an `Err` refuses the config
    /// (walnut then fails to start, or a reload is refused, and prints the message).
    fn init(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// A memcached request, before it is routed: it may go on (`Continue`, after any key
    /// rewrite through [`MemcacheRequest::set_key`]) or be refused (`Reject`). A multi-key
    /// retrieval runs this once per key.
    fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> McVerdict {
        let _ = req;
        crate::rt::not_overridden();
        McVerdict::Continue
    }

    /// Chooses where a key goes: the pool's ring (`Ring`), the ring applied to other bytes
    /// (`Hash`), or a named server (`Server`, which falls back to the ring while that server is
    /// ejected).
    fn on_hash(&mut self, key: &[u8]) -> Placement {
        let _ = key;
        crate::rt::not_overridden();
        Placement::Ring
    }

    /// The value of a storage request (`set`, `add`, `replace`, `append`, `prepend`, `cas`,
    /// `ms`) on its way to memcached, after `on_memcache_request`: it may be replaced, with its
    /// flags ([`Value::set_data`], [`Value::set_flags`]), or the request refused.
    fn on_store(&mut self, value: &mut Value) -> McVerdict {
        let _ = value;
        crate::rt::not_overridden();
        McVerdict::Continue
    }

    /// A value memcached answered to a retrieval (`get`, `gets`, `gat`, `gats`, `mg`), on its
    /// way to the client: it may be replaced, with its flags. The key is the client's.
    fn on_value(&mut self, value: &mut Value) {
        let _ = value;
        crate::rt::not_overridden();
    }

    /// An HTTP request of a `protocol: http` pool, before it is passed upstream: it may go on
    /// (`Continue`, after any change made with [`HttpRequest::set_path`],
    /// [`HttpRequest::set_header`], [`HttpRequest::remove_header`] or
    /// [`HttpRequest::set_hash_key`]), be refused (`Reject`: 403 with the message), or be
    /// answered locally with `Respond`.
    fn on_http_request(&mut self, req: &mut HttpRequest) -> HttpVerdict {
        let _ = req;
        crate::rt::not_overridden();
        HttpVerdict::Continue
    }

    /// An upstream's response head, before the client gets it: its headers may be added, set
    /// or removed ([`HttpResponse::add_header`], [`HttpResponse::set_header`],
    /// [`HttpResponse::remove_header`]).
    fn on_http_response(&mut self, resp: &mut HttpResponse) {
        let _ = resp;
        crate::rt::not_overridden();
    }
}

/// A memcached hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McVerdict {
    /// Go on (with any changes made to the request or value).
    Continue,
    /// Refuse: the client gets `CLIENT_ERROR <message>` and memcached never sees the request.
    Reject(String),
}

impl McVerdict {
    /// `Reject` with `message`.
    pub fn reject(message: impl Into<String>) -> McVerdict {
        McVerdict::Reject(message.into())
    }
}

/// An HTTP request hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpVerdict {
    /// Go on (with any changes made to the request).
    Continue,
    /// Refuse: 403 with the message as the body.
    Reject(String),
    /// Answer locally: status (200 to 599), headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

impl HttpVerdict {
    /// `Reject` with `message`.
    pub fn reject(message: impl Into<String>) -> HttpVerdict {
        HttpVerdict::Reject(message.into())
    }

    /// `Respond` with `status` and `body` and no extra headers.
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) -> HttpVerdict {
        HttpVerdict::Respond {
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
