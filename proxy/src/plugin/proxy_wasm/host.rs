//! The `env` functions of proxy-wasm ABI 0.2.1 that walnut provides to a filter, and a trap
//! for every other import, which logs the import's name when it is called (and only then).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Extern, Linker, Memory, ResourceLimiter, TypedFunc};

use super::headers::{HeaderMap, MAP_BYTES_MAX, TooLarge, parse_pairs};
use crate::plugin::host::Host;

/// Where imports come from.
pub(super) const MODULE: &str = "env";

/// Status codes of the ABI.
pub(super) const OK: u32 = 0;
pub(super) const NOT_FOUND: u32 = 1;
pub(super) const BAD_ARGUMENT: u32 = 2;

/// Header map types.
const REQUEST_HEADERS: u32 = 0;
const REQUEST_TRAILERS: u32 = 1;
const RESPONSE_HEADERS: u32 = 2;
const RESPONSE_TRAILERS: u32 = 3;

/// Buffer types.
const HTTP_REQUEST_BODY: u32 = 0;
const HTTP_RESPONSE_BODY: u32 = 1;
const VM_CONFIGURATION: u32 = 6;
const PLUGIN_CONFIGURATION: u32 = 7;

/// Which callback of a context is running: what its header maps may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// VM start and configure: no HTTP request.
    Root,
    RequestHeaders,
    /// A piece of the request body: the body buffer is the request's.
    RequestBody,
    ResponseHeaders,
    /// A piece of the response body: the body buffer is the response's.
    ResponseBody,
    /// `on_done`, `on_log`, `on_delete`: everything readable, nothing changeable.
    Log,
}

/// A local response a filter asked for.
#[derive(Default)]
pub(super) struct Local {
    pub(super) asked: bool,
    pub(super) status: u32,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

/// A filter instance's store data.
pub(super) struct Data {
    /// Log, memory cap, panic message: as for walnut's plugins.
    pub(super) host: Host,
    /// The plugin configuration (the entry's `config:` as JSON).
    pub(super) config: Vec<u8>,
    pub(super) memory: Option<Memory>,
    /// The filter's allocator (`malloc` or `proxy_on_memory_allocate`), for what walnut returns.
    pub(super) malloc: Option<TypedFunc<u32, u32>>,
    pub(super) phase: Phase,
    /// The current context's request and response maps (lent by its live context during each
    /// callback).
    pub(super) request: HeaderMap,
    pub(super) response: HeaderMap,
    /// The body bytes of a body phase (lent by walnut during the callback).
    pub(super) body: Vec<u8>,
    /// The body's length may not change: its head promised a Content-Length.
    pub(super) body_fixed: bool,
    /// The response status, once there is one.
    pub(super) status: u16,
    pub(super) local: Local,
    /// The import walnut does not provide that the filter called, until its fault is reported.
    pub(super) unsupported: Option<String>,
    pub(super) remote: Option<IpAddr>,
    /// The last warning or error the filter logged while loading, for the refusal's message.
    pub(super) load_said: Option<String>,
    /// The metrics it defined, by id.
    pub(super) metrics: Vec<std::sync::Arc<super::shared::FilterMetric>>,
    /// A buffer for what passes between walnut and the filter, reused.
    pub(super) scratch: Vec<u8>,
}

impl Data {
    pub(super) fn new(host: Host, config: &str) -> Data {
        Data {
            host,
            config: config.as_bytes().to_vec(),
            memory: None,
            malloc: None,
            phase: Phase::Root,
            request: HeaderMap::default(),
            response: HeaderMap::default(),
            body: Vec::new(),
            body_fixed: false,
            status: 0,
            local: Local::default(),
            unsupported: None,
            remote: None,
            load_said: None,
            metrics: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The map `map_type` names, readable in this phase.
    fn map(&self, map_type: u32) -> Option<&HeaderMap> {
        match (map_type, self.phase) {
            (_, Phase::Root) => None,
            (REQUEST_HEADERS, _) => Some(&self.request),
            (RESPONSE_HEADERS, Phase::ResponseHeaders | Phase::ResponseBody | Phase::Log) => {
                Some(&self.response)
            }
            _ => None,
        }
    }

    /// The body buffer `buffer_type` names, when this phase lends it.
    fn body_buffer(&self, buffer_type: u32) -> bool {
        matches!(
            (buffer_type, self.phase),
            (HTTP_REQUEST_BODY, Phase::RequestBody) | (HTTP_RESPONSE_BODY, Phase::ResponseBody)
        )
    }

    /// The map `map_type` names, changeable in this phase.
    fn map_mut(&mut self, map_type: u32) -> Option<&mut HeaderMap> {
        match (map_type, self.phase) {
            (REQUEST_HEADERS, Phase::RequestHeaders) => Some(&mut self.request),
            (RESPONSE_HEADERS, Phase::ResponseHeaders) => Some(&mut self.response),
            _ => None,
        }
    }

    /// A property's value into `out`; false when walnut does not know it.
    fn property(&self, path: &[u8], out: &mut Vec<u8>) -> bool {
        let mut parts = path.split(|&b| b == 0);
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        let third = parts.next();
        let request = self.phase != Phase::Root;
        let path_value = || self.request.get(b":path").unwrap_or_default();
        let split = |p: &[u8]| -> (usize, bool) {
            match p.iter().position(|&b| b == b'?') {
                Some(q) => (q, true),
                None => (p.len(), false),
            }
        };
        let found: Option<&[u8]> = match (first, second, third) {
            (b"plugin_name", None, _) => Some(self.host.plugin.as_bytes()),
            (b"plugin_root_id", None, _) => Some(b""),
            (b"request", Some(b"path"), None) if request => Some(path_value()),
            (b"request", Some(b"url_path"), None) if request => {
                let p = path_value();
                Some(&p[..split(p).0])
            }
            (b"request", Some(b"query"), None) if request => {
                let p = path_value();
                let (at, has) = split(p);
                Some(if has { &p[at + 1..] } else { b"" })
            }
            (b"request", Some(b"method"), None) if request => self.request.get(b":method"),
            (b"request", Some(b"host"), None) if request => self.request.get(b":authority"),
            (b"request", Some(b"scheme"), None) if request => self.request.get(b":scheme"),
            (b"request", Some(b"headers"), Some(name)) if request => self.request.get(name),
            (b"response", Some(b"headers"), Some(name))
                if matches!(
                    self.phase,
                    Phase::ResponseHeaders | Phase::ResponseBody | Phase::Log
                ) =>
            {
                self.response.get(name)
            }
            (b"response", Some(b"code"), None) if self.status != 0 => {
                // As Envoy gives integers: 8 bytes, little-endian.
                out.extend_from_slice(&i64::from(self.status).to_le_bytes());
                return true;
            }
            (b"source", Some(b"address"), None) => {
                let Some(ip) = self.remote else {
                    return false;
                };
                use std::io::Write;
                let _ = write!(out, "{ip}");
                return true;
            }
            _ => None,
        };
        match found {
            Some(v) => {
                out.extend_from_slice(v);
                true
            }
            None => false,
        }
    }
}

impl ResourceLimiter for Data {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.host.memory_growing(current, desired, max)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.host.table_growing(current, desired, max)
    }
}

/// The functions walnut provides, by name.
pub(super) const PROVIDED: [&str; 17] = [
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_send_local_response",
    "proxy_continue_stream",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_done",
];

type Result<T> = wasmtime::Result<T>;

fn memory(caller: &Caller<'_, Data>) -> Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the filter exports no memory"))
}

/// `len` bytes of the filter's memory at `ptr`, copied into `out`.
pub(super) fn read_into(
    caller: &Caller<'_, Data>,
    ptr: u32,
    len: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let memory = memory(caller)?;
    let bytes = memory
        .data(caller)
        .get(ptr as usize..(ptr as usize).saturating_add(len as usize))
        .ok_or_else(|| wasmtime::Error::msg("the filter passed memory outside its own"))?;
    if bytes.len() > MAP_BYTES_MAX {
        return Err(wasmtime::Error::msg("the filter passed more than 1 MiB"));
    }
    out.clear();
    out.extend_from_slice(bytes);
    Ok(())
}

/// Two inputs read at once: `(a, b)` copied into two of walnut's buffers.
fn read_two(
    caller: &mut Caller<'_, Data>,
    (p1, l1): (u32, u32),
    (p2, l2): (u32, u32),
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut a = std::mem::take(&mut caller.data_mut().scratch);
    read_into(caller, p1, l1, &mut a)?;
    let mut b = Vec::new();
    read_into(caller, p2, l2, &mut b)?;
    Ok((a, b))
}

pub(super) fn write_u32(caller: &mut Caller<'_, Data>, at: u32, v: u32) -> Result<()> {
    write_out(caller, at, &v.to_le_bytes())
}

pub(super) fn write_u64(caller: &mut Caller<'_, Data>, at: u32, v: u64) -> Result<()> {
    write_out(caller, at, &v.to_le_bytes())
}

/// Writes an out-param's bytes into the filter's memory at `at`.
fn write_out(caller: &mut Caller<'_, Data>, at: u32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    memory
        .write(caller, at as usize, bytes)
        .map_err(|_| wasmtime::Error::msg("the filter passed an out-param outside its memory"))
}

/// Hands bytes `start..start + max` (as many as there are) of the store's buffer `field` to the
/// filter, as `give` does.
fn give_range(
    caller: &mut Caller<'_, Data>,
    field: fn(&mut Data) -> &mut Vec<u8>,
    (start, max): (u32, u32),
    (out_ptr, out_size): (u32, u32),
) -> Result<u32> {
    // Taken out while the filter's allocator runs (it needs the store).
    let buffer = std::mem::take(field(caller.data_mut()));
    let from = (start as usize).min(buffer.len());
    let to = from.saturating_add(max as usize).min(buffer.len());
    let status = give(caller, &buffer[from..to], out_ptr, out_size);
    *field(caller.data_mut()) = buffer;
    status
}

/// Hands `bytes` to the filter: memory from its allocator, the pointer and size written to
/// its out-params (a null pointer for nothing, as the SDK reads it).
pub(super) fn give(
    caller: &mut Caller<'_, Data>,
    bytes: &[u8],
    out_ptr: u32,
    out_size: u32,
) -> Result<u32> {
    let ptr = if bytes.is_empty() {
        0
    } else {
        let malloc = caller
            .data()
            .malloc
            .clone()
            .ok_or_else(|| wasmtime::Error::msg("the filter exports no malloc"))?;
        let ptr = malloc.call(&mut *caller, bytes.len() as u32)?;
        let memory = memory(caller)?;
        memory
            .write(&mut *caller, ptr as usize, bytes)
            .map_err(|_| {
                wasmtime::Error::msg("the filter's allocator gave memory outside its own")
            })?;
        ptr
    };
    write_u32(caller, out_ptr, ptr)?;
    write_u32(caller, out_size, bytes.len() as u32)?;
    Ok(OK)
}

/// Runs `f` with the store's scratch buffer, which it fills with what to give the filter.
fn give_with(
    caller: &mut Caller<'_, Data>,
    out_ptr: u32,
    out_size: u32,
    f: impl FnOnce(&Data, &mut Vec<u8>) -> bool,
) -> Result<u32> {
    let mut buf = std::mem::take(&mut caller.data_mut().scratch);
    buf.clear();
    if !f(caller.data(), &mut buf) {
        caller.data_mut().scratch = buf;
        return Ok(NOT_FOUND);
    }
    let status = give(caller, &buf, out_ptr, out_size);
    caller.data_mut().scratch = buf;
    status
}

/// `HeaderMap::replace` or `HeaderMap::add`.
type PairEdit = fn(&mut HeaderMap, &[u8], &[u8]) -> std::result::Result<(), TooLarge>;

/// A header map edit with a name and a value (`replace`, `add`): its status.
fn edit_pair(
    mut caller: Caller<'_, Data>,
    kind: u32,
    name: (u32, u32),
    value: (u32, u32),
    edit: PairEdit,
) -> Result<u32> {
    let (name, value) = read_two(&mut caller, name, value)?;
    let status = match caller.data_mut().map_mut(kind) {
        Some(map) => status_of(edit(map, &name, &value)),
        None => BAD_ARGUMENT,
    };
    caller.data_mut().scratch = name;
    Ok(status)
}

fn status_of(r: std::result::Result<(), TooLarge>) -> u32 {
    match r {
        Ok(()) => OK,
        Err(TooLarge) => BAD_ARGUMENT,
    }
}

/// A linker providing walnut's functions, with every other import of `module` a trap that
/// names itself.
pub(super) fn linker(engine: &wasmtime::Engine, module: &wasmtime::Module) -> Result<Linker<Data>> {
    let mut l = Linker::new(engine);
    l.func_wrap(
        MODULE,
        "proxy_log",
        |mut caller: Caller<'_, Data>, level: u32, ptr: u32, len: u32| -> Result<u32> {
            let mut text = Vec::new();
            read_into(&caller, ptr, len.min(4096), &mut text)?;
            let message = crate::plugin::host::one_line(&String::from_utf8_lossy(&text));
            let data = caller.data_mut();
            if data.phase == Phase::Root && level >= 3 {
                data.load_said = Some(message.clone());
            }
            let host = &mut data.host;
            // proxy-wasm's levels: trace, debug, info, warn, error, critical.
            match level {
                0 | 1 => host.log(4, &message),
                2 => host.log(3, &message),
                3 => host.log(2, &message),
                _ => {
                    host.log(1, &message);
                    // The SDK logs a panic's message as critical just before it traps.
                    if level == 5 {
                        host.panic = Some(message);
                    }
                }
            }
            Ok(OK)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_get_log_level",
        |mut caller: Caller<'_, Data>, out: u32| -> Result<u32> {
            use tracing::level_filters::LevelFilter;
            let level = match LevelFilter::current() {
                LevelFilter::TRACE => 0,
                LevelFilter::DEBUG => 1,
                LevelFilter::INFO => 2,
                LevelFilter::WARN => 3,
                _ => 4,
            };
            write_u32(&mut caller, out, level)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, Data>, out: u32| -> Result<u32> {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            write_u64(&mut caller, out, now)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, Data>,
         kind: u32,
         start: u32,
         max: u32,
         out_ptr: u32,
         out_size: u32|
         -> Result<u32> {
            match kind {
                PLUGIN_CONFIGURATION => give_range(
                    &mut caller,
                    |d| &mut d.config,
                    (start, max),
                    (out_ptr, out_size),
                ),
                VM_CONFIGURATION => give(&mut caller, b"", out_ptr, out_size),
                kind if caller.data().body_buffer(kind) => give_range(
                    &mut caller,
                    |d| &mut d.body,
                    (start, max),
                    (out_ptr, out_size),
                ),
                _ => Ok(NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, Data>,
         kind: u32,
         start: u32,
         length: u32,
         ptr: u32,
         len: u32|
         -> Result<u32> {
            if !caller.data().body_buffer(kind) {
                return Ok(BAD_ARGUMENT);
            }
            let memory = memory(&caller)?;
            let (filter_memory, data) = memory.data_and_store_mut(&mut caller);
            let bytes = filter_memory
                .get(ptr as usize..(ptr as usize).saturating_add(len as usize))
                .ok_or_else(|| wasmtime::Error::msg("the filter passed memory outside its own"))?;
            let (start, length) = (start as usize, length as usize);
            if start > data.body.len() {
                return Ok(BAD_ARGUMENT);
            }
            let end = start.saturating_add(length).min(data.body.len());
            let new_len = data.body.len() - (end - start) + bytes.len();
            if data.body_fixed && new_len != data.body.len() {
                let which = match kind {
                    HTTP_REQUEST_BODY => "request",
                    _ => "response",
                };
                tracing::warn!(
                    pool = %data.host.pool,
                    plugin = %data.host.plugin,
                    "proxy-wasm filter changed the length of a {which} body framed by \
                     Content-Length (from {} to {new_len} bytes); refused (a filter that changes \
                     a body's length removes its Content-Length in the headers phase)",
                    data.body.len()
                );
                return Ok(BAD_ARGUMENT);
            }
            data.body.splice(start..end, bytes.iter().copied());
            Ok(OK)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, Data>, kind: u32, out_ptr: u32, out_size: u32| -> Result<u32> {
            give_with(&mut caller, out_ptr, out_size, |d, buf| {
                match d.map(kind) {
                    Some(m) => m.serialize(buf),
                    None if matches!(kind, REQUEST_TRAILERS | RESPONSE_TRAILERS) => {
                        HeaderMap::default().serialize(buf)
                    }
                    None => return false,
                }
                true
            })
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, Data>, kind: u32, ptr: u32, len: u32| -> Result<u32> {
            let mut wire = Vec::new();
            read_into(&caller, ptr, len, &mut wire)?;
            let Some(map) = caller.data_mut().map_mut(kind) else {
                return Ok(BAD_ARGUMENT);
            };
            match map.deserialize(&wire) {
                Some(r) => Ok(status_of(r)),
                None => Ok(BAD_ARGUMENT),
            }
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, Data>,
         kind: u32,
         key: u32,
         key_len: u32,
         out_ptr: u32,
         out_size: u32|
         -> Result<u32> {
            let mut name = Vec::new();
            read_into(&caller, key, key_len, &mut name)?;
            give_with(&mut caller, out_ptr, out_size, |d, buf| {
                match d.map(kind).and_then(|m| m.get(&name)) {
                    Some(v) => buf.extend_from_slice(v),
                    None => return false,
                }
                true
            })
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_replace_header_map_value",
        |caller: Caller<'_, Data>, kind: u32, k: u32, kl: u32, v: u32, vl: u32| {
            edit_pair(caller, kind, (k, kl), (v, vl), HeaderMap::replace)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_add_header_map_value",
        |caller: Caller<'_, Data>, kind: u32, k: u32, kl: u32, v: u32, vl: u32| {
            edit_pair(caller, kind, (k, kl), (v, vl), HeaderMap::add)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, Data>, kind: u32, k: u32, kl: u32| -> Result<u32> {
            let mut name = std::mem::take(&mut caller.data_mut().scratch);
            read_into(&caller, k, kl, &mut name)?;
            let status = match caller.data_mut().map_mut(kind) {
                Some(map) => {
                    map.remove(&name);
                    OK
                }
                None => BAD_ARGUMENT,
            };
            caller.data_mut().scratch = name;
            Ok(status)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_get_property",
        |mut caller: Caller<'_, Data>,
         ptr: u32,
         len: u32,
         out_ptr: u32,
         out_size: u32|
         -> Result<u32> {
            let mut path = Vec::new();
            read_into(&caller, ptr, len, &mut path)?;
            give_with(&mut caller, out_ptr, out_size, |d, buf| {
                d.property(&path, buf)
            })
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_send_local_response",
        |mut caller: Caller<'_, Data>,
         status: u32,
         _details: u32,
         _details_len: u32,
         body: u32,
         body_len: u32,
         headers: u32,
         headers_len: u32,
         _grpc_status: i32|
         -> Result<u32> {
            let (body, wire) = read_two(&mut caller, (body, body_len), (headers, headers_len))?;
            let data = caller.data_mut();
            if !matches!(data.phase, Phase::RequestHeaders | Phase::RequestBody) {
                // A response already under way cannot be replaced (see README).
                data.scratch = body;
                return Ok(BAD_ARGUMENT);
            }
            let Some(pairs) = parse_pairs(&wire) else {
                data.scratch = body;
                return Ok(BAD_ARGUMENT);
            };
            let local = &mut data.local;
            local.headers.clear();
            for (n, v) in pairs {
                if local.headers.add(n, v).is_err() {
                    return Ok(BAD_ARGUMENT);
                }
            }
            local.asked = true;
            local.status = status;
            local.body.clear();
            local.body.extend_from_slice(&body);
            data.scratch = body;
            Ok(OK)
        },
    )?;
    // Nothing is ever paused (a paused phase is refused), so there is nothing to resume.
    for name in ["proxy_continue_request", "proxy_continue_response"] {
        l.func_wrap(MODULE, name, || -> u32 { OK })?;
    }
    l.func_wrap(MODULE, "proxy_continue_stream", |_stream: u32| -> u32 {
        OK
    })?;
    l.func_wrap(MODULE, "proxy_done", || -> u32 { OK })?;
    super::shared::link(&mut l)?;
    unsupported(&mut l, module)?;
    Ok(l)
}

/// Links every import of `module` that walnut does not provide to a function that records
/// and logs its name, then traps: the filter loads, and fails only the requests that call it.
fn unsupported(l: &mut Linker<Data>, module: &wasmtime::Module) -> Result<()> {
    for import in module.imports() {
        let name = import.name();
        let provided = PROVIDED.contains(&name) || super::shared::PROVIDED.contains(&name);
        if import.module() == MODULE && provided {
            continue;
        }
        let wasmtime::ExternType::Func(ty) = import.ty() else {
            // compile() refuses modules importing anything else.
            continue;
        };
        let name = format!("{}::{}", import.module(), import.name());
        l.func_new(
            import.module(),
            import.name(),
            ty,
            move |mut caller: Caller<'_, Data>, _params, _results| {
                let data = caller.data_mut();
                tracing::warn!(
                    pool = %data.host.pool,
                    plugin = %data.host.plugin,
                    import = %name,
                    "proxy-wasm filter called `{name}`, which walnut does not provide; the call traps"
                );
                data.unsupported = Some(name.clone());
                Err(wasmtime::Error::msg(format!(
                    "called `{name}`, which walnut does not provide"
                )))
            },
        )?;
    }
    Ok(())
}

/// The filter's memory and allocator, once instantiated.
pub(super) fn bind(store: &mut wasmtime::Store<Data>, instance: &wasmtime::Instance) {
    let memory = match instance.get_export(&mut *store, "memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    };
    let malloc = ["proxy_on_memory_allocate", "malloc"]
        .into_iter()
        .find_map(|n| instance.get_typed_func::<u32, u32>(&mut *store, n).ok());
    let data = store.data_mut();
    data.memory = memory;
    data.malloc = malloc;
}
