//! What proxy-wasm filters share across workers and reloads: their metrics (shown by
//! `GET /metrics`) and their shared data (a key-value store with compare-and-swap). Both are
//! process-wide, as Envoy's are for filters of one VM id (walnut has one). Defining a metric and
//! reading or writing shared data take a lock; changing a defined metric is one atomic operation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::{Caller, Linker};

use super::host::{
    BAD_ARGUMENT, Data, MODULE, NOT_FOUND, OK, give, read_into, write_u32, write_u64,
};

/// The most metrics all filters together may define; past this, a definition is refused.
const METRICS_MAX: usize = 1000;
/// The most bytes (keys and values) shared data may hold; past this, a write is refused.
const SHARED_BYTES_MAX: usize = 16 << 20;
/// The status of a write whose compare-and-swap value is stale.
const CAS_MISMATCH: u32 = 8;

/// A metric's kind, as the ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric a filter defined, by pool, filter file and name.
#[derive(Debug)]
pub struct FilterMetric {
    pub pool: String,
    pub plugin: String,
    pub name: String,
    pub kind: MetricKind,
    /// A counter's or gauge's value; a histogram's sum of values.
    value: AtomicU64,
    /// A histogram's count of values.
    count: AtomicU64,
}

impl FilterMetric {
    /// A counter's or gauge's value, or a histogram's sum.
    pub fn value(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    /// A histogram's number of values.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// `proxy_increment_metric`: a counter only grows; a gauge goes up or down (not below 0).
    fn increment(&self, offset: i64) -> u32 {
        match (self.kind, offset) {
            (MetricKind::Histogram, _) | (MetricKind::Counter, ..0) => BAD_ARGUMENT,
            (_, 0..) => {
                self.value.fetch_add(offset as u64, Ordering::Relaxed);
                OK
            }
            (MetricKind::Gauge, _) => {
                let down = offset.unsigned_abs();
                let _ = self
                    .value
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                        Some(v.saturating_sub(down))
                    });
                OK
            }
        }
    }

    /// `proxy_record_metric`: a counter adds, a gauge is set, a histogram takes a value.
    fn record(&self, value: u64) {
        match self.kind {
            MetricKind::Counter => {
                self.value.fetch_add(value, Ordering::Relaxed);
            }
            MetricKind::Gauge => self.value.store(value, Ordering::Relaxed),
            MetricKind::Histogram => {
                self.value.fetch_add(value, Ordering::Relaxed);
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

static METRICS: Mutex<Vec<Arc<FilterMetric>>> = Mutex::new(Vec::new());

/// Every metric filters defined, in the order they were first defined.
pub fn metrics() -> Vec<Arc<FilterMetric>> {
    METRICS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The metric of this pool, filter, name and kind: the one defined before (in any worker, before
/// a reload too), or a new one. `None` past `METRICS_MAX`.
fn define(pool: &str, plugin: &str, name: &str, kind: MetricKind) -> Option<Arc<FilterMetric>> {
    let mut all = METRICS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = all
        .iter()
        .find(|m| m.kind == kind && m.name == name && m.plugin == plugin && m.pool == pool)
    {
        return Some(Arc::clone(m));
    }
    if all.len() >= METRICS_MAX {
        return None;
    }
    let m = Arc::new(FilterMetric {
        pool: pool.to_owned(),
        plugin: plugin.to_owned(),
        name: name.to_owned(),
        kind,
        value: AtomicU64::new(0),
        count: AtomicU64::new(0),
    });
    all.push(Arc::clone(&m));
    Some(m)
}

/// Shared data: each key's value and its compare-and-swap number.
#[derive(Default)]
struct Shared {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    bytes: usize,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

/// `proxy_set_shared_data`: sets `key` unless `cas` (when not 0) is not its current number.
fn set_shared(key: Vec<u8>, value: Vec<u8>, cas: u32) -> u32 {
    let mut guard = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let shared = guard.get_or_insert_with(Shared::default);
    let old = shared.entries.get(&key);
    let current = old.map_or(0, |(_, c)| *c);
    if cas != 0 && cas != current {
        return CAS_MISMATCH;
    }
    let old_bytes = old.map_or(0, |(v, _)| key.len() + v.len());
    let bytes = shared.bytes - old_bytes + key.len() + value.len();
    if bytes > SHARED_BYTES_MAX {
        return BAD_ARGUMENT;
    }
    shared.bytes = bytes;
    // Numbers start at 1 (0 means "no compare"), and skip 0 when they wrap.
    let next = current.wrapping_add(1).max(1);
    shared.entries.insert(key, (value, next));
    OK
}

/// `proxy_get_shared_data`: `key`'s value and number, copied.
fn get_shared(key: &[u8], out: &mut Vec<u8>) -> Option<u32> {
    let guard = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let (value, cas) = guard.as_ref()?.entries.get(key)?;
    out.clear();
    out.extend_from_slice(value);
    Some(*cas)
}

/// The functions walnut provides for metrics and shared data, by name.
pub(super) const PROVIDED: [&str; 6] = [
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
];

/// The metric `id` names in this instance.
fn metric<'a>(caller: &'a Caller<'_, Data>, id: u32) -> Option<&'a FilterMetric> {
    caller.data().metrics.get(id as usize).map(|m| &**m)
}

type Result<T> = wasmtime::Result<T>;

/// Adds the functions of `PROVIDED` to `l`.
pub(super) fn link(l: &mut Linker<Data>) -> Result<()> {
    l.func_wrap(
        MODULE,
        "proxy_define_metric",
        |mut caller: Caller<'_, Data>, kind: u32, ptr: u32, len: u32, out: u32| -> Result<u32> {
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Ok(BAD_ARGUMENT),
            };
            let mut name = Vec::new();
            read_into(&caller, ptr, len.min(1024), &mut name)?;
            let name = String::from_utf8_lossy(&name);
            let data = caller.data();
            let Some(m) = define(&data.host.pool, &data.host.plugin, &name, kind) else {
                tracing::warn!(pool = %data.host.pool, plugin = %data.host.plugin, "proxy-wasm filter defined more than {METRICS_MAX} metrics; refused");
                return Ok(BAD_ARGUMENT);
            };
            let metrics = &mut caller.data_mut().metrics;
            let id = match metrics.iter().position(|o| Arc::ptr_eq(o, &m)) {
                Some(id) => id,
                None => {
                    metrics.push(m);
                    metrics.len() - 1
                }
            };
            write_u32(&mut caller, out, id as u32)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_increment_metric",
        |caller: Caller<'_, Data>, id: u32, offset: i64| -> u32 {
            metric(&caller, id).map_or(NOT_FOUND, |m| m.increment(offset))
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_record_metric",
        |caller: Caller<'_, Data>, id: u32, value: u64| -> u32 {
            match metric(&caller, id) {
                Some(m) => {
                    m.record(value);
                    OK
                }
                None => NOT_FOUND,
            }
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_get_metric",
        |mut caller: Caller<'_, Data>, id: u32, out: u32| -> Result<u32> {
            let value = match metric(&caller, id) {
                None => return Ok(NOT_FOUND),
                Some(m) if m.kind == MetricKind::Histogram => return Ok(BAD_ARGUMENT),
                Some(m) => m.value(),
            };
            write_u64(&mut caller, out, value)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_get_shared_data",
        |mut caller: Caller<'_, Data>,
         ptr: u32,
         len: u32,
         out_ptr: u32,
         out_size: u32,
         out_cas: u32|
         -> Result<u32> {
            let mut key = Vec::new();
            read_into(&caller, ptr, len, &mut key)?;
            // The value is copied out first: the lock is not held while the filter's allocator
            // runs.
            let mut value = std::mem::take(&mut caller.data_mut().scratch);
            let given = match get_shared(&key, &mut value) {
                Some(cas) => give(&mut caller, &value, out_ptr, out_size)
                    .and_then(|_| write_u32(&mut caller, out_cas, cas))
                    .map(|()| OK),
                None => Ok(NOT_FOUND),
            };
            caller.data_mut().scratch = value;
            given
        },
    )?;
    l.func_wrap(
        MODULE,
        "proxy_set_shared_data",
        |mut caller: Caller<'_, Data>,
         key: u32,
         key_len: u32,
         value: u32,
         value_len: u32,
         cas: u32|
         -> Result<u32> {
            let mut k = Vec::new();
            read_into(&caller, key, key_len, &mut k)?;
            let mut v = Vec::new();
            read_into(&caller, value, value_len, &mut v)?;
            let status = set_shared(k, v, cas);
            if status == BAD_ARGUMENT {
                let data = caller.data_mut();
                tracing::warn!(pool = %data.host.pool, plugin = %data.host.plugin, "proxy-wasm shared data would pass {SHARED_BYTES_MAX} bytes; the write is refused");
            }
            Ok(status)
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_data_compares_and_swaps() {
        let key = b"shared.rs test key";
        let mut out = Vec::new();
        assert_eq!(get_shared(key, &mut out), None);
        let set = |value: &[u8], cas| set_shared(key.to_vec(), value.to_vec(), cas);
        assert_eq!(set(b"one", 0), OK);
        assert_eq!(get_shared(key, &mut out), Some(1));
        assert_eq!(out, b"one");
        assert_eq!(set(b"two", 7), CAS_MISMATCH);
        assert_eq!(set(b"two", 1), OK);
        assert_eq!(set(b"three", 1), CAS_MISMATCH, "1 is stale now");
        assert_eq!(get_shared(key, &mut out), Some(2));
        assert_eq!(out, b"two");
        let huge = vec![0; SHARED_BYTES_MAX];
        assert_eq!(
            set_shared(b"shared.rs huge".to_vec(), huge, 0),
            BAD_ARGUMENT
        );
    }

    #[test]
    fn metrics_are_one_per_pool_filter_name_and_kind() {
        let a = define("p", "f.wasm", "requests", MetricKind::Counter).unwrap();
        let b = define("p", "f.wasm", "requests", MetricKind::Counter).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "a second worker's definition is the same metric"
        );
        let g = define("p", "f.wasm", "requests", MetricKind::Gauge).unwrap();
        assert!(!Arc::ptr_eq(&a, &g));
        assert_eq!(a.increment(2), OK);
        a.record(3);
        assert_eq!(a.increment(-1), BAD_ARGUMENT, "a counter never goes down");
        assert_eq!(b.value(), 5);
        g.record(10);
        assert_eq!(g.increment(-15), OK);
        assert_eq!(g.value(), 0, "a gauge stops at 0");
        let h = define("p", "f.wasm", "sizes", MetricKind::Histogram).unwrap();
        h.record(4);
        h.record(6);
        assert_eq!((h.count(), h.value()), (2, 10));
        assert_eq!(h.increment(1), BAD_ARGUMENT);
    }
}
