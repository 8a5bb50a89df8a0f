//! What walnut lends a plugin: its log and its clocks. In a native build (`cargo test`) the
//! same calls print to stderr and read the machine's clocks, so plugins test as they run.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "walnut")]
unsafe extern "C" {
    fn walnut_log(level: u32, ptr: *const u8, len: u32);
    fn walnut_clock(kind: u32) -> u64;
}

/// Hands a log line to walnut's log.
pub(crate) fn log(level: u32, message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the pointer and length describe `message`, valid for the call; walnut only reads
    // them within the plugin's own memory.
    unsafe {
        walnut_log(level, message.as_ptr(), message.len() as u32)
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[walnut plugin, level {level}] {message}");
}

/// Nanoseconds: since the Unix epoch (`kind` 0), or on a clock that only goes forward (1).
pub(crate) fn clock(kind: u32) -> u64 {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: a plain call with integer arguments.
    unsafe {
        walnut_clock(kind)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::{Instant, SystemTime, UNIX_EPOCH};
        static START: OnceLock<Instant> = OnceLock::new();
        match kind {
            0 => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            _ => START.get_or_init(Instant::now).elapsed().as_nanos() as u64,
        }
    }
}
