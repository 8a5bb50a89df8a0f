//! What walnut lends a plugin instance (its store's data): the memory cap, the log (rate
//! limited, so a chatty plugin cannot flood walnut's), the clocks, and the message of a panic,
//! kept so the fault's log line says why the plugin trapped.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use walnut_sdk::abi::imports;
use wasmtime::{Caller, Linker, ResourceLimiter};

/// Log lines a plugin may write per second, per worker, once its burst is spent.
const LOG_RATE: f64 = 50.0;
/// Log lines a plugin may write at once.
const LOG_BURST: f64 = 100.0;
/// The longest log line kept (longer ones are cut).
const LOG_LINE_MAX: usize = 4096;
/// The level the SDK gives a panic's message.
const PANIC_LEVEL: u32 = 9;

/// One instance's store data.
pub(super) struct Host {
    /// The plugin's file name and its pool, for log lines.
    pub(super) plugin: String,
    pub(super) pool: String,
    memory_max: usize,
    /// The plugin tried to grow past `memory_max`.
    pub(super) hit: bool,
    /// The last panic's message, until the fault it caused is reported.
    pub(super) panic: Option<String>,
    log: LogBudget,
    /// The current call's time budget.
    pub(super) budget: super::budget::Budget,
}

impl Host {
    pub(super) fn new(plugin: &str, pool: &str, memory_max: usize) -> Host {
        Host {
            plugin: plugin.to_owned(),
            pool: pool.to_owned(),
            memory_max,
            hit: false,
            panic: None,
            log: LogBudget {
                tokens: LOG_BURST,
                last: Instant::now(),
                dropped: 0,
            },
            budget: Default::default(),
        }
    }

    pub(super) fn log(&mut self, level: u32, message: &str) {
        if level == PANIC_LEVEL {
            self.panic = Some(message.to_owned());
            return;
        }
        let Some(dropped) = self.log.take() else {
            return;
        };
        let (pool, plugin) = (&self.pool, &self.plugin);
        if dropped > 0 {
            tracing::warn!(
                pool,
                plugin,
                dropped,
                "plugin logged too fast; lines were dropped"
            );
        }
        match level {
            1 => tracing::error!(pool, plugin, "{message}"),
            2 => tracing::warn!(pool, plugin, "{message}"),
            3 => tracing::info!(pool, plugin, "{message}"),
            _ => tracing::debug!(pool, plugin, "{message}"),
        }
    }
}

/// A token bucket: `LOG_RATE` lines a second, `LOG_BURST` at once.
struct LogBudget {
    tokens: f64,
    last: Instant,
    /// Lines dropped since the last one written.
    dropped: u64,
}

impl LogBudget {
    /// Takes a token: `Some(lines dropped before this one)`, or `None` (the line is dropped).
    fn take(&mut self) -> Option<u64> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * LOG_RATE;
        self.tokens = (self.tokens + refill).min(LOG_BURST);
        self.last = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.dropped))
    }
}

impl ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// `message` on one line: a plugin's text (a panic's message holds a newline) never starts a
/// log line of its own, which could pass for walnut's.
pub(super) fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

/// The imports a walnut plugin may have, by name.
pub(super) const PROVIDED: [&str; 2] = [imports::LOG, imports::CLOCK];

/// A linker providing walnut's imports.
pub(super) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        imports::MODULE,
        imports::LOG,
        |mut caller: Caller<'_, Host>, level: u32, ptr: u32, len: u32| {
            let message = caller
                .get_export("memory")
                .and_then(|e| e.into_memory())
                .and_then(|memory| {
                    let start = ptr as usize;
                    let end = start.checked_add((len as usize).min(LOG_LINE_MAX))?;
                    let bytes = memory.data(&caller).get(start..end)?;
                    Some(one_line(&String::from_utf8_lossy(bytes)))
                });
            if let Some(message) = message {
                caller.data_mut().log(level, &message);
            }
        },
    )?;
    linker.func_wrap(imports::MODULE, imports::CLOCK, |kind: u32| -> u64 {
        match kind {
            0 => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            _ => {
                static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
                START.get_or_init(Instant::now).elapsed().as_nanos() as u64
            }
        }
    })?;
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_text_stays_on_one_line() {
        assert_eq!(
            one_line("panicked at src/lib.rs:1:2:\nboom\r\n2026 INFO forged"),
            "panicked at src/lib.rs:1:2: boom  2026 INFO forged"
        );
    }

    #[test]
    fn a_burst_is_written_then_lines_are_dropped_and_counted() {
        let mut b = LogBudget {
            tokens: LOG_BURST,
            last: Instant::now(),
            dropped: 0,
        };
        let written = (0..1000).filter(|_| b.take().is_some()).count();
        assert!((100..110).contains(&written), "{written}");
        assert!(b.dropped > 800);
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Refilled a little: the next line goes out and reports how many were dropped.
        assert!(b.take().is_some_and(|dropped| dropped > 800));
    }
}
