//! The wasmtime host: every plugin is compiled once when the config loads, instantiated once per
//! worker, and called under a time budget (epoch interruption) and a memory cap.

mod budget;
pub mod chain;
mod host;
pub mod instance;
mod memcache;
pub mod proxy_wasm;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{Config, HttpPool, OnError, PluginSpec, Pool};
pub use chain::{Placement, PoolPlugins, Verdict};
pub use instance::{Fault, Hook, Instance};
pub use memcache::NewValue;
pub use proxy_wasm::{BodyAction, RequestTag};

/// How often the engine's epoch ticks: the unit of a plugin's time budget.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The ABI a plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// walnut's own (built with walnut-sdk).
    Walnut,
    /// proxy-wasm 0.2.1: an HTTP filter built for Envoy and the like.
    ProxyWasm,
}

/// One plugin, compiled and checked, shared by every worker.
pub struct Compiled {
    pub abi: Abi,
    /// The file's name, for logs and messages.
    pub name: String,
    /// The pool it serves, for logs.
    pub pool: String,
    pub module: wasmtime::Module,
    pub config_json: String,
    pub on_error: OnError,
    pub budget_ticks: u64,
    pub memory_max: usize,
}

/// The process's one engine, with epoch interruption driven by a ticker thread.
fn engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine =
            wasmtime::Engine::new(&config).expect("a wasmtime engine with the default settings");
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("walnut-epoch".into())
            .spawn(move || {
                // Signals are taken by walnut's signal thread alone.
                if let Err(e) = crate::process::block_signals_in_this_thread() {
                    tracing::warn!("plugin epoch thread: {e}");
                }
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })
            .expect("start the plugin epoch thread");
        engine
    })
}

/// Compiles the plugin `spec` names and checks it: that it loads, speaks this ABI and accepts
/// its config. The error is the file's or the plugin's own words.
pub fn compile(spec: &PluginSpec, pool: &str) -> Result<Arc<Compiled>, String> {
    let bytes = std::fs::read(&spec.path).map_err(|e| format!("cannot read it: {e}"))?;
    let module = wasmtime::Module::new(engine(), &bytes)
        .map_err(|e| format!("not a WebAssembly module: {e:#}"))?;
    let abi = match proxy_wasm::detect(&module)? {
        true => Abi::ProxyWasm,
        false => Abi::Walnut,
    };
    let provided = |i: &wasmtime::ImportType<'_>| {
        i.module() == walnut_sdk::abi::imports::MODULE && host::PROVIDED.contains(&i.name())
    };
    if abi == Abi::ProxyWasm {
        // What walnut does not provide traps when called (and is named in the log).
        proxy_wasm::check_imports(&module)?;
    } else if let Some(import) = module.imports().find(|i| !provided(i)) {
        return Err(format!(
            "not a walnut plugin: it imports `{}::{}`, and walnut provides only `{}::{}`",
            import.module(),
            import.name(),
            walnut_sdk::abi::imports::MODULE,
            host::PROVIDED.join("` and `walnut::")
        ));
    }
    let ticks = spec
        .time_budget
        .as_millis()
        .div_ceil(EPOCH_TICK.as_millis())
        .max(1) as u64;
    let compiled = Arc::new(Compiled {
        abi,
        name: file_name(&spec.path),
        pool: pool.to_owned(),
        module,
        config_json: spec.config_json.clone(),
        on_error: spec.on_error,
        // One tick more: the first tick may come at once.
        budget_ticks: ticks + 1,
        memory_max: spec.memory_max,
    });
    // Instantiating now runs the plugin's own config check, so a bad config stops start-up.
    Instance::new(Arc::clone(&compiled))?;
    Ok(compiled)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A config with its plugins compiled: every pool next to its own plugins.
pub struct Loaded {
    pub memcache: Vec<McPool>,
    pub http: Vec<HttpSite>,
}

/// A memcached pool and its compiled plugins (the pool's chain, and its routes longest first).
pub struct McPool {
    pub config: Pool,
    pub chains: chain::PoolChains,
}

/// An HTTP pool and its compiled plugins (the pool's chain, and one per location, in location
/// order).
pub struct HttpSite {
    pub config: HttpPool,
    pub chains: chain::PoolChains,
}

/// Compiles every plugin of `config`; the error names the file, line, pool, route and plugin.
pub fn load(config: Config) -> Result<Loaded, String> {
    let Config { path, pools, http } = config;
    let memcache = pools
        .into_iter()
        .map(|pool| {
            let routes = pool
                .routes
                .iter()
                .map(|r| ("route", r.prefix.as_str(), r.plugins.as_slice()));
            let mut chains = compile_chains(&path, &pool.name, &pool.plugins, routes)?;
            chains.scope_kind = "route";
            let all = chains
                .pool
                .iter()
                .chain(chains.routes.iter().flat_map(|r| &r.1));
            if let Some(c) = all.into_iter().find(|c| c.abi == Abi::ProxyWasm) {
                return Err(format!(
                    "{}: pool {:?}: plugin {} is a proxy-wasm HTTP filter; it runs on HTTP pools \
                     only",
                    path.display(),
                    pool.name,
                    c.name
                ));
            }
            // Longest prefix first, so the first match is the longest.
            chains.routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
            Ok(McPool {
                config: pool,
                chains,
            })
        })
        .collect::<Result<_, String>>()?;
    let http = http
        .into_iter()
        .map(|pool| {
            let locations = pool
                .locations
                .iter()
                .map(|l| ("location", l.text.as_str(), l.plugins.as_slice()));
            let mut chains = compile_chains(&path, &pool.name, &pool.plugins, locations)?;
            chains.scope_kind = "location";
            Ok(HttpSite {
                config: pool,
                chains,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Loaded { memcache, http })
}

/// One pool's chains: its own plugins, then each `(kind, name, plugins)` of its routes or
/// locations, keyed by name.
fn compile_chains<'a>(
    config_path: &Path,
    pool: &str,
    plugins: &[PluginSpec],
    scopes: impl Iterator<Item = (&'static str, &'a str, &'a [PluginSpec])>,
) -> Result<chain::PoolChains, String> {
    let compile_at = |spec: &PluginSpec, scope: Option<(&str, &str)>| {
        compile(spec, pool).map_err(|e| {
            let scope = scope
                .map(|(kind, name)| format!("{kind} {name:?}: "))
                .unwrap_or_default();
            format!(
                "{}:{}: pool {pool:?}: {scope}plugin {}: {e}",
                config_path.display(),
                spec.line,
                spec.path.display()
            )
        })
    };
    let mut chains = chain::PoolChains::default();
    for spec in plugins {
        chains.pool.push(compile_at(spec, None)?);
    }
    for (kind, name, specs) in scopes {
        let list = specs
            .iter()
            .map(|spec| compile_at(spec, Some((kind, name))))
            .collect::<Result<Vec<_>, _>>()?;
        chains.routes.push((name.as_bytes().to_vec(), list));
    }
    Ok(chains)
}
