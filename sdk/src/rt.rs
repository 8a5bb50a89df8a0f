//! The plugin side of the ABI, called by the functions `export!` generates: the exchange
//! buffer, the one plugin value, and each hook's decoding and answer. Not for plugin authors.

use std::any::Any;
use std::cell::{Cell, RefCell};

use serde::de::DeserializeOwned;

use crate::abi::{self, Reader, code, pack};
use crate::{Filter, HttpRequest, MemcacheRequest, Placement, Verdict};

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    static DEFAULT_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Called by a hook's default body: the plugin does not implement it.
pub fn not_overridden() {
    DEFAULT_HOOK.with(|d| d.set(true));
}

/// Grows the exchange buffer to at least `len` bytes; returns its address in linear memory.
pub fn buffer(len: u32) -> u32 {
    BUFFER.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < len as usize {
            b.resize(len as usize, 0);
        }
        b.as_mut_ptr() as usize as u32
    })
}

fn input<R>(len: u32, f: impl FnOnce(&[u8]) -> R) -> R {
    BUFFER.with(|b| {
        let b = b.borrow();
        f(&b[..(len as usize).min(b.len())])
    })
}

/// Puts `bytes` at the start of the buffer and packs the answer.
fn answer(code: u32, bytes: &[u8]) -> u64 {
    BUFFER.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < bytes.len() {
            b.resize(bytes.len(), 0);
        }
        b[..bytes.len()].copy_from_slice(bytes);
    });
    pack(code, bytes.len())
}

fn with_plugin<T: 'static, R>(f: impl FnOnce(&mut T) -> R) -> Option<R> {
    PLUGIN.with(|p| {
        p.borrow_mut()
            .as_mut()
            .and_then(|p| p.downcast_mut::<T>())
            .map(f)
    })
}

/// Runs a hook; `None` when it turned out to be the trait's default.
fn hook<T: 'static, R>(f: impl FnOnce(&mut T) -> R) -> Option<R> {
    DEFAULT_HOOK.with(|d| d.set(false));
    let r = with_plugin(f)?;
    if DEFAULT_HOOK.with(|d| d.get()) {
        None
    } else {
        Some(r)
    }
}

/// `walnut_init`: the config (JSON) is deserialized into the plugin, then checked by `init`.
pub fn init<T: Filter + DeserializeOwned + 'static>(len: u32) -> u64 {
    let parsed = input(len, |config| serde_json::from_slice::<T>(config));
    let mut plugin = match parsed {
        Ok(p) => p,
        Err(e) => return answer(code::ERROR, format!("config: {e}").as_bytes()),
    };
    if let Err(message) = plugin.init() {
        return answer(code::ERROR, message.as_bytes());
    }
    PLUGIN.with(|p| *p.borrow_mut() = Some(Box::new(plugin)));
    pack(code::CONTINUE, 0)
}

/// Decodes a memcached request as the host encoded it.
pub fn decode_memcache(buf: &[u8]) -> Option<MemcacheRequest> {
    let mut r = Reader(buf);
    let command = String::from_utf8_lossy(r.bytes()?).into_owned();
    let flags = r.u32()?;
    let exptime = r.i64()?;
    let value_len = r.u32()?;
    let n = r.u16()?;
    let mut keys = Vec::with_capacity(n as usize);
    for _ in 0..n {
        keys.push(r.bytes()?.to_vec());
    }
    Some(MemcacheRequest {
        command,
        keys,
        flags,
        exptime,
        value_len,
        rewritten: false,
    })
}

fn reject(message: &str) -> u64 {
    answer(code::REJECT, message.as_bytes())
}

/// `walnut_on_memcache`.
pub fn on_memcache<T: Filter + 'static>(len: u32) -> u64 {
    let Some(mut req) = input(len, decode_memcache) else {
        return reject("walnut-sdk: malformed request from host");
    };
    match hook::<T, _>(|p| p.on_memcache_request(&mut req)) {
        None => pack(code::NOT_IMPLEMENTED, 0),
        Some(Verdict::Continue) if req.rewritten => {
            let mut out = Vec::new();
            abi::encode_keys(&mut out, req.keys.iter().map(|k| k.as_slice()));
            answer(code::REWRITE, &out)
        }
        Some(Verdict::Continue) => pack(code::CONTINUE, 0),
        Some(Verdict::Reject(message)) => reject(&message),
        Some(Verdict::Respond { body, .. }) => reject(&String::from_utf8_lossy(&body)),
    }
}

/// `walnut_on_hash`.
pub fn on_hash<T: Filter + 'static>(len: u32) -> u64 {
    let key = input(len, |k| k.to_vec());
    match hook::<T, _>(|p| p.on_hash(&key)) {
        None => pack(code::NOT_IMPLEMENTED, 0),
        Some(Placement::Ring) => pack(code::CONTINUE, 0),
        Some(Placement::Hash(bytes)) => answer(code::HASH, &bytes),
        Some(Placement::Server(name)) => answer(code::SERVER, name.as_bytes()),
    }
}

fn decode_http(buf: &[u8]) -> Option<HttpRequest> {
    let mut r = Reader(buf);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let method = text(r.bytes()?);
    let path = text(r.bytes()?);
    let query = text(r.bytes()?);
    let n = r.u16()?;
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        headers.push((text(r.bytes()?), text(r.bytes()?)));
    }
    Some(HttpRequest {
        method,
        path,
        query,
        headers,
        edits: Default::default(),
    })
}

/// `walnut_on_http`.
pub fn on_http<T: Filter + 'static>(len: u32) -> u64 {
    let Some(mut req) = input(len, decode_http) else {
        return reject("walnut-sdk: malformed request from host");
    };
    match hook::<T, _>(|p| p.on_http_request(&mut req)) {
        None => pack(code::NOT_IMPLEMENTED, 0),
        Some(Verdict::Continue) if req.edits.any() => {
            let e = &req.edits;
            let edits = abi::HttpEdits {
                path: e.path.then_some(req.path.as_bytes()),
                query: e.query.then_some(req.query.as_bytes()),
                headers: e
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_ref().map(|v| v.as_bytes())))
                    .collect(),
                hash_key: e.hash_key.as_deref(),
            };
            let mut out = Vec::new();
            abi::encode_http_edits(&mut out, &edits);
            answer(code::HTTP_REWRITE, &out)
        }
        Some(Verdict::Continue) => pack(code::CONTINUE, 0),
        Some(Verdict::Reject(message)) => reject(&message),
        Some(Verdict::Respond {
            status,
            headers,
            body,
        }) => {
            let mut out = Vec::new();
            abi::encode_response(&mut out, status, &headers, &body);
            answer(code::RESPOND, &out)
        }
    }
}
