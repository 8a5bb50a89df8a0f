//! Unmodified proxy-wasm HTTP filters (ABI 0.2.1, as the Envoy/Istio/Kong SDKs build them),
//! run in walnut's plugin chains. A filter instance answers walnut's HTTP hooks in walnut's
//! own ABI: its header maps are filled from the hook's input, its callbacks run, and what it
//! changed becomes the `HttpEdits`, header operations or local response a walnut plugin would
//! have answered, so the chain checks a filter's output exactly as it checks a plugin's.
//!
//! Per request: `proxy_on_context_create`, `proxy_on_request_headers` (walnut's request hook),
//! `proxy_on_request_body` for each piece of a request body as it is forwarded,
//! `proxy_on_response_headers` (the response hook, when an upstream answers),
//! `proxy_on_response_body` for each piece of its body, then `proxy_on_done`, `proxy_on_log`
//! and `proxy_on_delete` when the request is over. A body phase may pause (walnut holds the
//! body back and calls again with more, Envoy's `StopIterationAndBuffer`); a paused headers
//! phase is refused (nothing could resume it). Trailers are not lent.

mod headers;
mod host;
mod shared;

pub use shared::{FilterMetric, MetricKind, metrics};

use std::net::IpAddr;
use std::sync::Arc;

use walnut_sdk::abi::{self, code};
use wasmtime::{Store, Trap, TypedFunc};

use super::host::Host;
use super::{Compiled, Fault, Hook};
use headers::HeaderMap;
use host::{Data, Phase};

/// The export that marks a proxy-wasm module of the ABI walnut speaks.
pub const ABI_EXPORT: &str = "proxy_abi_version_0_2_1";

/// The root context's id (one plugin, one root context per instance).
const ROOT: u32 = 1;

/// Requests whose context waits for its end at once, per instance; past this the oldest is
/// ended (a request whose end walnut never saw must not hold memory forever).
const LIVE_MAX: usize = 4096;

/// Epoch ticks (ms) a filter has to start and read its configuration.
const LOAD_TICKS: u64 = 1000;

/// Whether `module` is a proxy-wasm filter; `Err` for another proxy-wasm ABI version.
pub fn detect(module: &wasmtime::Module) -> Result<bool, String> {
    let mut other = None;
    for e in module.exports() {
        if e.name() == ABI_EXPORT {
            return Ok(true);
        }
        if e.name().starts_with("proxy_abi_version_") {
            other = Some(e.name().to_owned());
        }
    }
    match other {
        Some(v) => Err(format!(
            "a proxy-wasm module of {v}; walnut runs ABI 0.2.1 (`{ABI_EXPORT}`, the proxy-wasm \
             Rust SDK 0.2.x)"
        )),
        None => Ok(false),
    }
}

/// Checks the imports of a proxy-wasm module: functions only (the missing ones trap when
/// called).
pub fn check_imports(module: &wasmtime::Module) -> Result<(), String> {
    match module
        .imports()
        .find(|i| !matches!(i.ty(), wasmtime::ExternType::Func(_)))
    {
        Some(i) => Err(format!(
            "a proxy-wasm filter importing `{}::{}`, which is not a function (walnut gives a \
             filter functions only)",
            i.module(),
            i.name()
        )),
        None => Ok(()),
    }
}

/// The request a hook call belongs to: which context it continues.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestTag {
    /// Unique per request in the process.
    pub id: u64,
    pub remote: Option<IpAddr>,
}

impl RequestTag {
    /// A tag for a new request from `remote`.
    pub fn next(remote: Option<IpAddr>) -> RequestTag {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        RequestTag {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            remote,
        }
    }
}

/// A request whose context is open.
struct Live {
    request: u64,
    context: u32,
    /// Its request headers, as the filter left them.
    map: HeaderMap,
    /// Its response headers, once there is a response.
    response: HeaderMap,
    status: u16,
}

/// What a filter did with a piece of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    /// Pass the body held so far on (as the filter left it).
    Continue,
    /// Hold it back, and call again with the next piece added.
    Pause,
    /// Answer the request locally (request body only): status, header lines, body.
    Respond(Vec<u8>),
}

struct Exports {
    context_create: TypedFunc<(u32, u32), ()>,
    request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    done: Option<TypedFunc<u32, u32>>,
    log: Option<TypedFunc<u32, ()>>,
    delete: Option<TypedFunc<u32, ()>>,
}

/// One filter instance: its store, its root context, and the contexts of requests under way.
pub struct Filter {
    compiled: Arc<Compiled>,
    store: Store<Data>,
    exports: Exports,
    live: Vec<Live>,
    /// Maps of ended contexts (request, response), reused.
    spare: Vec<(HeaderMap, HeaderMap)>,
    /// The request's map as it came, to tell what the filter changed.
    before: HeaderMap,
    next_context: u32,
    /// The request the next call belongs to.
    tag: RequestTag,
    /// The input of the next call, reused.
    input: Vec<u8>,
}

impl Filter {
    /// A callback begins: its time budget counts from now (see `budget.rs`).
    fn arm(&mut self) {
        let ticks = self.compiled.budget_ticks;
        self.store.set_epoch_deadline(ticks);
        self.store.data_mut().host.budget.start(ticks);
    }

    /// Instantiates the filter, starts its VM and hands it its configuration.
    pub fn new(compiled: Arc<Compiled>) -> Result<Filter, String> {
        let engine = compiled.module.engine().clone();
        let host = Host::new(&compiled.name, &compiled.pool, compiled.memory_max);
        let mut store = Store::new(&engine, Data::new(host, &compiled.config_json));
        store.limiter(|d| d);
        store.epoch_deadline_callback(|mut cx| cx.data_mut().host.budget.expired());
        let load_ticks = compiled.budget_ticks.max(LOAD_TICKS);
        store.set_epoch_deadline(load_ticks);
        store.data_mut().host.budget.start(load_ticks);
        let linker =
            host::linker(&engine, &compiled.module).map_err(|e| format!("cannot link: {e}"))?;
        let instance = linker
            .instantiate(&mut store, &compiled.module)
            .map_err(|e| format!("cannot instantiate: {e}"))?;
        host::bind(&mut store, &instance);
        if store.data().memory.is_none() {
            return Err("not a proxy-wasm filter: it exports no `memory`".into());
        }
        if store.data().malloc.is_none() {
            return Err(
                "not a proxy-wasm filter: it exports neither `proxy_on_memory_allocate` nor \
                 `malloc`"
                    .into(),
            );
        }
        let func = |store: &mut Store<Data>, name: &str| {
            instance.get_typed_func::<(), ()>(store, name).ok()
        };
        let load_fault = |store: &mut Store<Data>, what: &str, e: wasmtime::Error| {
            format!("{what}: the filter {}", fault(store, e))
        };
        for start in ["_initialize", "_start"] {
            if let Some(f) = func(&mut store, start) {
                f.call(&mut store, ())
                    .map_err(|e| load_fault(&mut store, start, e))?;
                break;
            }
        }
        let typed2 = |store: &mut Store<Data>, name: &str| {
            instance.get_typed_func::<(u32, u32), u32>(store, name)
        };
        let missing = |name: &str| format!("not a proxy-wasm filter: no `{name}` export");
        let exports = Exports {
            context_create: instance
                .get_typed_func(&mut store, "proxy_on_context_create")
                .map_err(|_| missing("proxy_on_context_create"))?,
            request_headers: instance
                .get_typed_func(&mut store, "proxy_on_request_headers")
                .ok(),
            response_headers: instance
                .get_typed_func(&mut store, "proxy_on_response_headers")
                .ok(),
            request_body: instance
                .get_typed_func(&mut store, "proxy_on_request_body")
                .ok(),
            response_body: instance
                .get_typed_func(&mut store, "proxy_on_response_body")
                .ok(),
            done: instance.get_typed_func(&mut store, "proxy_on_done").ok(),
            log: instance.get_typed_func(&mut store, "proxy_on_log").ok(),
            delete: instance.get_typed_func(&mut store, "proxy_on_delete").ok(),
        };
        let vm_start = typed2(&mut store, "proxy_on_vm_start").ok();
        let configure = typed2(&mut store, "proxy_on_configure").ok();
        exports
            .context_create
            .call(&mut store, (ROOT, 0))
            .map_err(|e| load_fault(&mut store, "proxy_on_context_create", e))?;
        if let Some(f) = vm_start {
            let ok = f
                .call(&mut store, (ROOT, 0))
                .map_err(|e| load_fault(&mut store, "proxy_on_vm_start", e))?;
            if ok == 0 {
                let said = store.data_mut().load_said.take();
                return Err(format!(
                    "proxy_on_vm_start failed (the filter answered false){}",
                    said.map(|s| format!("; the filter logged: {s}"))
                        .unwrap_or_default()
                ));
            }
        }
        if let Some(f) = configure {
            let size = store.data().config.len() as u32;
            let ok = f
                .call(&mut store, (ROOT, size))
                .map_err(|e| load_fault(&mut store, "proxy_on_configure", e))?;
            if ok == 0 {
                let said = store.data_mut().load_said.take();
                return Err(format!(
                    "proxy_on_configure refused its configuration {}{}",
                    compiled.config_json,
                    said.map(|s| format!(" (the filter logged: {s})"))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(Filter {
            compiled,
            store,
            exports,
            live: Vec::new(),
            spare: Vec::new(),
            before: HeaderMap::default(),
            next_context: ROOT + 1,
            tag: RequestTag::default(),
            input: Vec::with_capacity(256),
        })
    }

    /// Whether the filter answers `hook` (HTTP hooks only).
    pub fn has(&self, hook: Hook) -> bool {
        match hook {
            Hook::Http => self.exports.request_headers.is_some(),
            Hook::HttpResponse => self.exports.response_headers.is_some(),
            Hook::HttpRequestBody => self.exports.request_body.is_some(),
            Hook::HttpResponseBody => self.exports.response_body.is_some(),
            _ => false,
        }
    }

    /// The buffer the next call's input is written into.
    pub fn scratch(&mut self) -> &mut Vec<u8> {
        &mut self.input
    }

    /// Sets the request the next calls belong to.
    pub fn tag(&mut self, tag: RequestTag) {
        self.tag = tag;
    }

    /// Answers walnut's `hook` with `input` (walnut's encoding) as a walnut plugin would.
    pub fn call(&mut self, hook: Hook, input: &[u8]) -> Result<Option<(u32, Vec<u8>)>, Fault> {
        match hook {
            Hook::Http => self.request_headers(input).map(Some),
            Hook::HttpResponse => self.response_headers(input).map(Some),
            _ => Ok(None),
        }
    }

    fn request_headers(&mut self, input: &[u8]) -> Result<(u32, Vec<u8>), Fault> {
        let Some(f) = self.exports.request_headers.clone() else {
            return Ok((code::CONTINUE, Vec::new()));
        };
        let malformed = || Fault::Protocol("walnut sent a malformed request".into());
        let (mut map, mut response) = self.spare.pop().unwrap_or_default();
        map.clear();
        response.clear();
        fill_request(&mut map, input).ok_or_else(malformed)?;
        self.before.clear();
        for (n, v) in map.iter() {
            self.before.add(n, v).map_err(|_| malformed())?;
        }
        // Envoy tells a filter whether a body follows; so does the head's framing.
        let end_of_stream = map.get(b"transfer-encoding").is_none()
            && map.get(b"content-length").is_none_or(|l| l == b"0");
        let headers = map.len() as u32;
        if self.live.len() >= LIVE_MAX {
            let oldest = self.live[0].request;
            self.done(oldest, 0)?;
        }
        let context = self.next_context;
        self.next_context = match self.next_context.wrapping_add(1) {
            0 | ROOT => ROOT + 1,
            n => n,
        };
        self.live.push(Live {
            request: self.tag.id,
            context,
            map,
            response,
            status: 0,
        });
        let at = self.live.len() - 1;
        self.begin(Phase::RequestHeaders, at);
        self.arm();
        let answer = self
            .exports
            .context_create
            .call(&mut self.store, (context, ROOT))
            .and_then(|()| f.call(&mut self.store, (context, headers, end_of_stream as u32)));
        self.end(at);
        let action = answer.map_err(|e| fault(&mut self.store, e))?;
        if let Some(out) = self.take_local(at) {
            return Ok((code::RESPOND, out));
        }
        let mut out = Vec::new();
        if action != 0 {
            return Err(Fault::Protocol(
                "paused the request headers phase (walnut resumes no paused request)".into(),
            ));
        }
        match headers::request_edits(&self.before, &self.live[at].map, &mut out) {
            Ok(true) => Ok((code::HTTP_REWRITE, out)),
            Ok(false) => Ok((code::CONTINUE, out)),
            Err(why) => Err(Fault::Protocol(why)),
        }
    }

    fn response_headers(&mut self, input: &[u8]) -> Result<(u32, Vec<u8>), Fault> {
        let Some(f) = self.exports.response_headers.clone() else {
            return Ok((code::CONTINUE, Vec::new()));
        };
        let Some(at) = self.live.iter().position(|l| l.request == self.tag.id) else {
            // The request's context is gone (the instance was replaced after a fault).
            return Ok((code::CONTINUE, Vec::new()));
        };
        let malformed = || Fault::Protocol("walnut sent a malformed response".into());
        let (status, head) = abi::decode_http_response_head(input).ok_or_else(malformed)?;
        self.live[at].status = status;
        let mut itoa = itoa::Buffer::new();
        self.before.clear();
        self.before
            .add(b":status", itoa.format(status).as_bytes())
            .map_err(|_| malformed())?;
        for (n, v) in &head {
            self.before.add(n, v).map_err(|_| malformed())?;
        }
        let end_of_stream = matches!(status, 204 | 304)
            || self
                .before
                .get(b"content-length")
                .is_some_and(|l| l == b"0");
        let response = &mut self.live[at].response;
        response.clear();
        for (n, v) in self.before.iter() {
            response.add(n, v).map_err(|_| malformed())?;
        }
        let count = response.len() as u32;
        let context = self.live[at].context;
        self.begin(Phase::ResponseHeaders, at);
        self.arm();
        let answer = f.call(&mut self.store, (context, count, end_of_stream as u32));
        self.end(at);
        let action = answer.map_err(|e| fault(&mut self.store, e))?;
        if action != 0 {
            return Err(Fault::Protocol(
                "paused the response headers phase (walnut resumes no paused response)".into(),
            ));
        }
        let mut out = Vec::new();
        match headers::response_ops(&self.before, &self.live[at].response, &mut out) {
            Ok(true) => Ok((code::HTTP_REWRITE, out)),
            Ok(false) => Ok((code::CONTINUE, out)),
            Err(why) => Err(Fault::Protocol(why)),
        }
    }

    /// Ends request `id`'s context, if it has one: `proxy_on_done`, `proxy_on_log`,
    /// `proxy_on_delete`, with `status` (when not 0) the answer's (`response.code`).
    pub fn done(&mut self, id: u64, status: u16) -> Result<(), Fault> {
        let Some(at) = self.live.iter().position(|l| l.request == id) else {
            return Ok(());
        };
        if status != 0 {
            self.live[at].status = status;
        }
        let context = self.live[at].context;
        self.begin(Phase::Log, at);
        self.arm();
        let e = &self.exports;
        let (done, log, delete) = (e.done.clone(), e.log.clone(), e.delete.clone());
        let run = || -> wasmtime::Result<()> {
            if let Some(f) = done {
                f.call(&mut self.store, context)?;
            }
            if let Some(f) = log {
                f.call(&mut self.store, context)?;
            }
            if let Some(f) = delete {
                f.call(&mut self.store, context)?;
            }
            Ok(())
        };
        let result = run();
        self.end(at);
        let live = self.live.remove(at);
        self.spare.push((live.map, live.response));
        result.map_err(|e| fault(&mut self.store, e))
    }

    /// Runs the filter's body phase on a piece of the current request's request body
    /// (`response` false) or response body: `body` holds what the filter held back so far and
    /// the new piece, and is left as the filter made it. `fixed`: its length may not change.
    pub fn body(
        &mut self,
        response: bool,
        body: &mut Vec<u8>,
        end_of_stream: bool,
        fixed: bool,
    ) -> Result<BodyAction, Fault> {
        let (f, phase) = match response {
            false => (self.exports.request_body.clone(), Phase::RequestBody),
            true => (self.exports.response_body.clone(), Phase::ResponseBody),
        };
        let Some(f) = f else {
            return Ok(BodyAction::Continue);
        };
        let Some(at) = self.live.iter().position(|l| l.request == self.tag.id) else {
            // The request's context is gone (the instance was replaced after a fault).
            return Ok(BodyAction::Continue);
        };
        let context = self.live[at].context;
        let size = u32::try_from(body.len())
            .map_err(|_| Fault::Protocol("held back more than 4 GiB of body".into()))?;
        let data = self.store.data_mut();
        std::mem::swap(&mut data.body, body);
        data.body_fixed = fixed;
        self.begin(phase, at);
        self.arm();
        let answer = f.call(&mut self.store, (context, size, end_of_stream as u32));
        self.end(at);
        let data = self.store.data_mut();
        std::mem::swap(&mut data.body, body);
        let action = answer.map_err(|e| fault(&mut self.store, e))?;
        if let Some(out) = self.take_local(at) {
            return Ok(BodyAction::Respond(out));
        }
        match (action, end_of_stream) {
            (0, _) => Ok(BodyAction::Continue),
            (1, false) => Ok(BodyAction::Pause),
            (1, true) => Err(Fault::Protocol(
                "paused at the end of the body (walnut resumes no paused stream)".into(),
            )),
            (other, _) => Err(Fault::Protocol(format!(
                "answered action {other} to a body piece (0 continue, 1 pause)"
            ))),
        }
    }

    /// The local response the callback just asked for (`send_local_response`), in walnut's
    /// encoding; it becomes live context `at`'s status (`response.code` in `on_log`).
    fn take_local(&mut self, at: usize) -> Option<Vec<u8>> {
        let local = &mut self.store.data_mut().local;
        if !std::mem::take(&mut local.asked) {
            return None;
        }
        let status = u16::try_from(local.status).unwrap_or(0);
        self.live[at].status = status;
        let mut out = Vec::new();
        headers::local_response(&mut out, status, &local.headers, &local.body);
        Some(out)
    }

    /// Lends live context `at`'s maps to the store for a callback of `phase`.
    fn begin(&mut self, phase: Phase, at: usize) {
        let data = self.store.data_mut();
        std::mem::swap(&mut data.request, &mut self.live[at].map);
        std::mem::swap(&mut data.response, &mut self.live[at].response);
        data.phase = phase;
        data.status = self.live[at].status;
        data.remote = self.tag.remote;
        data.host.panic = None;
        data.unsupported = None;
    }

    /// Takes the maps back from the store.
    fn end(&mut self, at: usize) {
        let data = self.store.data_mut();
        std::mem::swap(&mut data.request, &mut self.live[at].map);
        std::mem::swap(&mut data.response, &mut self.live[at].response);
        data.phase = Phase::Root;
    }
}

/// Fills `map` from walnut's encoded request: the pseudo-headers, then the header lines (Host
/// as `:authority`, not repeated). `None` when the input is malformed.
fn fill_request(map: &mut HeaderMap, input: &[u8]) -> Option<()> {
    let mut r = abi::Reader(input);
    let (method, path, query) = (r.bytes()?, r.bytes()?, r.bytes()?);
    let n = r.u16()?;
    map.add(b":method", method).ok()?;
    if query.is_empty() {
        map.add(b":path", path).ok()?;
    } else {
        let mut full = Vec::with_capacity(path.len() + 1 + query.len());
        full.extend_from_slice(path);
        full.push(b'?');
        full.extend_from_slice(query);
        map.add(b":path", &full).ok()?;
    }
    let lines = abi::Reader(r.0);
    let mut host_seen: &[u8] = b"";
    for _ in 0..n {
        let (name, value) = (r.bytes()?, r.bytes()?);
        if name.eq_ignore_ascii_case(b"host") {
            host_seen = value;
        }
    }
    map.add(b":authority", host_seen).ok()?;
    map.add(b":scheme", b"http").ok()?;
    let mut r = lines;
    for _ in 0..n {
        let (name, value) = (r.bytes()?, r.bytes()?);
        if !name.eq_ignore_ascii_case(b"host") {
            map.add(name, value).ok()?;
        }
    }
    r.done().then_some(())
}

/// What a failed call means, as a walnut plugin's fault.
fn fault(store: &mut Store<Data>, e: wasmtime::Error) -> Fault {
    let data = store.data_mut();
    if let Some(name) = data.unsupported.take() {
        return Fault::Trap(format!("called `{name}`, which walnut does not provide"));
    }
    if data.host.hit {
        return Fault::Memory;
    }
    if let Some(message) = data.host.panic.take() {
        return Fault::Trap(message);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Timeout,
        Some(trap) => Fault::Trap(trap.to_string()),
        None => Fault::Trap(e.to_string()),
    }
}
