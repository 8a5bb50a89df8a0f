//! One live plugin instance: its store with memory and time limits, and the calls into it.

use std::sync::Arc;

use walnut_sdk::abi::{self, code, exports};
use wasmtime::{Memory, Store, Trap, TypedFunc};

use super::host::{self, Host};
use super::proxy_wasm::Filter;
use super::{Abi, Compiled};

/// Why a plugin call failed; the request it was handling fails by the route's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Ran past its time budget.
    Timeout,
    /// Tried to grow its memory past its cap.
    Memory,
    /// Trapped (a panic, an out-of-bounds access, ...).
    Trap(String),
    /// Answered something the ABI does not allow.
    Protocol(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Timeout => f.write_str("ran past its time budget"),
            Fault::Memory => f.write_str("tried to grow its memory past its cap"),
            Fault::Trap(why) => write!(f, "trapped: {why}"),
            Fault::Protocol(why) => write!(f, "broke the plugin ABI: {why}"),
        }
    }
}

/// The hooks an instance may be called for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Memcache = 0,
    Hash = 1,
    Http = 2,
    HttpResponse = 3,
    Store = 4,
    Value = 5,
    /// A piece of an HTTP request's body (proxy-wasm filters only).
    HttpRequestBody = 6,
    /// A piece of an HTTP response's body (proxy-wasm filters only).
    HttpResponseBody = 7,
}

/// Each hook's export, by `Hook` number.
const HOOK_EXPORTS: [&str; 6] = [
    exports::ON_MEMCACHE,
    exports::ON_HASH,
    exports::ON_HTTP,
    exports::ON_HTTP_RESPONSE,
    exports::ON_STORE,
    exports::ON_VALUE,
];

/// A plugin instantiated in its own store, ready for hook calls: a walnut plugin, or a
/// proxy-wasm filter answering walnut's hooks in walnut's ABI.
// A walnut plugin stays inline (no indirection on its hook calls); there is one instance per
// plugin per worker, so the size is of no matter.
#[allow(clippy::large_enum_variant)]
pub enum Instance {
    Walnut(Walnut),
    ProxyWasm(Box<Filter>),
}

impl Instance {
    /// Instantiates the plugin and hands it its config. Errors are the plugin's own words.
    pub fn new(compiled: Arc<Compiled>) -> Result<Instance, String> {
        match compiled.abi {
            Abi::Walnut => Walnut::new(compiled).map(Instance::Walnut),
            Abi::ProxyWasm => Filter::new(compiled).map(|f| Instance::ProxyWasm(Box::new(f))),
        }
    }

    /// True while the plugin implements `hook` (a default hook is dropped after its first call).
    pub fn has(&self, hook: Hook) -> bool {
        match self {
            Instance::Walnut(w) => w.has(hook),
            Instance::ProxyWasm(f) => f.has(hook),
        }
    }

    /// Calls `hook` with the input `encode` writes; returns the answer code and output, or
    /// `None` when the plugin turned out not to implement it.
    pub fn call(
        &mut self,
        hook: Hook,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Option<(u32, Vec<u8>)>, Fault> {
        match self {
            Instance::Walnut(w) => w.call(hook, encode),
            Instance::ProxyWasm(f) => {
                let mut input = std::mem::take(f.scratch());
                input.clear();
                encode(&mut input);
                let answer = f.call(hook, &input);
                *f.scratch() = input;
                answer
            }
        }
    }
}

/// A walnut plugin's instance.
pub struct Walnut {
    compiled: Arc<Compiled>,
    store: Store<Host>,
    memory: Memory,
    buffer: TypedFunc<u32, u32>,
    hooks: [Option<TypedFunc<u32, u64>>; 6],
    /// The input bytes of the next call, reused.
    scratch: Vec<u8>,
}

/// The buffer size always asked for, so small answers never move the buffer.
const MIN_BUFFER: u32 = 4096;

/// Epoch ticks (ms) a plugin has to load (its version check and `init`): not a hook call, and
/// the compile just before it can leave a loaded machine descheduling the thread for longer
/// than a hook's budget.
const LOAD_TICKS: u64 = 1000;

impl Walnut {
    /// Instantiates the plugin and hands it its config. Errors are the plugin's own words.
    pub fn new(compiled: Arc<Compiled>) -> Result<Walnut, String> {
        let engine = compiled.module.engine().clone();
        let data = Host::new(&compiled.name, &compiled.pool, compiled.memory_max);
        let mut store = Store::new(&engine, data);
        store.limiter(|h| h);
        store.epoch_deadline_callback(|mut cx| cx.data_mut().budget.expired());
        let load_ticks = compiled.budget_ticks.max(LOAD_TICKS);
        store.set_epoch_deadline(load_ticks);
        let linker = host::linker(&engine).map_err(|e| format!("cannot link: {e}"))?;
        let instance = linker
            .instantiate(&mut store, &compiled.module)
            .map_err(|e| format!("cannot instantiate: {e}"))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("not a walnut plugin: it exports no `memory`")?;
        let version = instance
            .get_typed_func::<(), u32>(&mut store, exports::VERSION)
            .map_err(|_| {
                format!(
                    "not a walnut plugin: no `{}` export (build it with walnut-sdk's export!)",
                    exports::VERSION
                )
            })?
            .call(&mut store, ())
            .map_err(|e| format!("{}: {e}", exports::VERSION))?;
        if version != abi::ABI_VERSION {
            return Err(format!(
                "plugin ABI version {version} is not supported (this walnut speaks {}; rebuild \
                 it with this walnut-sdk)",
                abi::ABI_VERSION
            ));
        }
        let typed = |store: &mut Store<Host>, name: &str| {
            instance.get_typed_func::<u32, u64>(store, name).ok()
        };
        let buffer = instance
            .get_typed_func::<u32, u32>(&mut store, exports::BUFFER)
            .map_err(|_| format!("not a walnut plugin: no `{}` export", exports::BUFFER))?;
        let init = typed(&mut store, exports::INIT)
            .ok_or_else(|| format!("not a walnut plugin: no `{}` export", exports::INIT))?;
        let hooks = HOOK_EXPORTS.map(|name| typed(&mut store, name));
        let mut me = Walnut {
            compiled,
            store,
            memory,
            buffer,
            hooks,
            scratch: Vec::with_capacity(256),
        };
        let config = me.compiled.config_json.clone();
        match me.call_raw(&init, config.as_bytes(), load_ticks) {
            Ok((code::CONTINUE, _)) => Ok(me),
            Ok((code::ERROR, out)) => Err(String::from_utf8_lossy(&out).into_owned()),
            Ok((other, _)) => Err(format!("walnut_init answered code {other}")),
            Err(fault) => Err(format!("while loading its config, the plugin {fault}")),
        }
    }

    /// True while the plugin implements `hook` (a default hook is dropped after its first call).
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks.get(hook as usize).is_some_and(Option::is_some)
    }

    /// Calls `hook` with the input `encode` writes; returns the answer code and output, or
    /// `None` when the plugin turned out not to implement it.
    pub fn call(
        &mut self,
        hook: Hook,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Option<(u32, Vec<u8>)>, Fault> {
        let Some(f) = self.hooks.get(hook as usize).cloned().flatten() else {
            return Ok(None);
        };
        let mut input = std::mem::take(&mut self.scratch);
        input.clear();
        encode(&mut input);
        let ticks = self.compiled.budget_ticks;
        let result = self.call_raw(&f, &input, ticks);
        self.scratch = input;
        match result? {
            (code::NOT_IMPLEMENTED, _) => {
                self.hooks[hook as usize] = None;
                Ok(None)
            }
            answer => Ok(Some(answer)),
        }
    }

    /// One exchange with the plugin, within `ticks` epoch ticks counted from now.
    fn call_raw(
        &mut self,
        f: &TypedFunc<u32, u64>,
        input: &[u8],
        ticks: u64,
    ) -> Result<(u32, Vec<u8>), Fault> {
        let len =
            u32::try_from(input.len()).map_err(|_| Fault::Protocol("input too large".into()))?;
        let asked = len.max(MIN_BUFFER);
        // The budget covers this whole exchange, counted from now.
        self.store.set_epoch_deadline(ticks);
        self.store.data_mut().budget.start(ticks);
        let ptr = self
            .buffer
            .call(&mut self.store, asked)
            .map_err(|e| self.fault(e))?;
        self.memory
            .write(&mut self.store, ptr as usize, input)
            .map_err(|_| Fault::Protocol("its buffer lies outside its memory".into()))?;
        let packed = f.call(&mut self.store, len).map_err(|e| self.fault(e))?;
        let (code, out_len) = abi::unpack(packed);
        // A larger answer may have moved the buffer.
        let ptr = if out_len > asked as usize {
            self.buffer
                .call(&mut self.store, 0)
                .map_err(|e| self.fault(e))?
        } else {
            ptr
        };
        let out = self
            .memory
            .data(&self.store)
            .get(ptr as usize..ptr as usize + out_len)
            .ok_or_else(|| Fault::Protocol("its answer lies outside its memory".into()))?
            .to_vec();
        Ok((code, out))
    }

    fn fault(&mut self, e: wasmtime::Error) -> Fault {
        if self.store.data().hit {
            return Fault::Memory;
        }
        if let Some(message) = self.store.data_mut().panic.take() {
            // The SDK's panic hook writes "panicked at <place>: <message>".
            return Fault::Trap(message);
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Fault::Timeout,
            Some(trap) => Fault::Trap(trap.to_string()),
            None => Fault::Trap(e.to_string()),
        }
    }
}
