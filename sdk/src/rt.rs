//! The plugin side of the ABI, called by the functions `export!` generates: the exchange
//! buffer, the one plugin value, and each hook's decoding and answer. Not for plugin authors.

use std::any::Any;
use std::cell::{Cell, RefCell};

use serde::de::DeserializeOwned;

use crate::abi::{self, code, pack};
use crate::http::Edits;
use crate::{
    Command, Filter, HttpRequest, HttpResponse, HttpVerdict, McVerdict, MemcacheRequest, Placement,
    Value,
};

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

/// `walnut_init`: a panic's message goes to walnut's log before the trap (so the log line for
/// the fault says why); the config (JSON) is deserialized into the plugin, then checked by
/// `init`.
pub fn init<T: Filter + DeserializeOwned + 'static>(len: u32) -> u64 {
    std::panic::set_hook(Box::new(|info| {
        crate::host::log(crate::log::PANIC, &info.to_string());
    }));
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

fn reject(message: &str) -> u64 {
    answer(code::REJECT, message.as_bytes())
}

const MALFORMED: &str = "walnut-sdk: malformed input from walnut";

/// The command a host names.
fn command(name: &[u8]) -> Option<Command> {
    Command::from_name(std::str::from_utf8(name).ok()?)
}

/// A memcached request as the host encoded it.
pub fn decode_memcache(buf: &[u8]) -> Option<MemcacheRequest> {
    let r = abi::decode_memcache(buf)?;
    Some(MemcacheRequest {
        command: command(r.command)?,
        key: r.key.to_vec(),
        flags: r.flags,
        exptime: r.exptime,
        value_len: r.value_len,
        meta_flags: r.meta_flags.to_vec(),
        rewritten: false,
    })
}

/// `walnut_on_memcache`.
pub fn on_memcache<T: Filter + 'static>(len: u32) -> u64 {
    let Some(mut req) = input(len, decode_memcache) else {
        return reject(MALFORMED);
    };
    match hook::<T, _>(|p| p.on_memcache_request(&mut req)) {
        None => pack(code::NOT_IMPLEMENTED, 0),
        Some(McVerdict::Continue) if req.rewritten => answer(code::REWRITE, &req.key),
        Some(McVerdict::Continue) => pack(code::CONTINUE, 0),
        Some(McVerdict::Reject(message)) => reject(&message),
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

/// A value as the host encoded it.
pub fn decode_value(buf: &[u8]) -> Option<Value> {
    let v = abi::decode_value(buf)?;
    Some(Value {
        command: command(v.command)?,
        key: v.key.to_vec(),
        flags: v.flags,
        meta_flags: v.meta_flags.to_vec(),
        data: v.data.to_vec(),
        changed: false,
    })
}

fn new_value(value: &Value) -> u64 {
    let mut out = Vec::with_capacity(value.data.len() + 8);
    abi::encode_new_value(&mut out, value.flags, &value.data);
    answer(code::VALUE, &out)
}

/// `walnut_on_store`.
pub fn on_store<T: Filter + 'static>(len: u32) -> u64 {
    let Some(mut value) = input(len, decode_value) else {
        return reject(MALFORMED);
    };
    match hook::<T, _>(|p| p.on_store(&mut value)) {
        None => pack(code::NOT_IMPLEMENTED, 0),
        Some(McVerdict::Continue) if value.changed => new_value(&value),
        Some(McVerdict::Continue) => pack(code::CONTINUE, 0),
        Some(McVerdict::Reject(message)) => reject(&message),
    }
}

/// `walnut_on_value`.
pub fn on_value<T: Filter + 'static>(len: u32) -> u64 {
    let Some(mut value) = input(len, decode_value) else {
        return reject(MALFORMED);
    };
    match hook::<T, _>(|p| p.on_value(&mut value)) {
        None => pack(code::NOT_IMPLEMENTED, 0),
        Some(()) if value.changed => new_value(&value),
        Some(()) => pack(code::CONTINUE, 0),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An HTTP request as the host encoded it.
pub fn decode_http(buf: &[u8]) -> Option<HttpRequest> {
    let r = abi::decode_http_request(buf)?;
    Some(HttpRequest {
        method: text(r.method),
        path: text(r.path),
        query: text(r.query),
        headers: r.headers.iter().map(|(n, v)| (text(n), text(v))).collect(),
        edits: Edits::default(),
    })
}

/// `walnut_on_http`.
pub fn on_http<T: Filter + 'static>(len: u32) -> u64 {
    let Some(mut req) = input(len, decode_http) else {
        return reject(MALFORMED);
    };
    match hook::<T, _>(|p| p.on_http_request(&mut req)) {
        None => pack(code::NOT_IMPLEMENTED, 0),
        Some(HttpVerdict::Continue) if req.edits.any() => {
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
        Some(HttpVerdict::Continue) => pack(code::CONTINUE, 0),
        Some(HttpVerdict::Reject(message)) => reject(&message),
        Some(HttpVerdict::Respond {
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

/// An upstream's response head as the host encoded it.
pub fn decode_http_response(buf: &[u8]) -> Option<HttpResponse> {
    let (status, headers) = abi::decode_http_response_head(buf)?;
    Some(HttpResponse {
        status,
        headers: headers.iter().map(|(n, v)| (text(n), text(v))).collect(),
        edits: Vec::new(),
    })
}

/// `walnut_on_http_response`.
pub fn on_http_response<T: Filter + 'static>(len: u32) -> u64 {
    let Some(mut resp) = input(len, decode_http_response) else {
        return reject(MALFORMED);
    };
    match hook::<T, _>(|p| p.on_http_response(&mut resp)) {
        None => pack(code::NOT_IMPLEMENTED, 0),
        Some(()) if !resp.edits.is_empty() => {
            let mut out = Vec::new();
            abi::encode_header_ops(
                &mut out,
                resp.edits
                    .iter()
                    .map(|(op, n, v)| (*op as u8, n.as_bytes(), v.as_bytes())),
            );
            answer(code::HTTP_REWRITE, &out)
        }
        Some(()) => pack(code::CONTINUE, 0),
    }
}
