//! Logging into walnut's log: each line carries the plugin's name, and walnut drops lines past
//! a rate (about 50 a second per plugin and worker, counting what it dropped) so a chatty
//! plugin cannot flood it.
//!
//! ```
//! walnut_sdk::info!("refused {} for tenant {}", "flush_all", 7);
//! walnut_sdk::log(walnut_sdk::Level::Warn, "configured without a prefix");
//! ```

/// How much a line matters; walnut shows it at its own log level for that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

/// The level a panic's message goes out with, just before the plugin traps.
pub(crate) const PANIC: u32 = 9;

/// Writes `message` to walnut's log.
pub fn log(level: Level, message: &str) {
    crate::host::log(level as u32, message);
}

/// `log(Level::Error, format!(...))`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::Level::Error, &format!($($arg)*)) };
}

/// `log(Level::Warn, format!(...))`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warn, &format!($($arg)*)) };
}

/// `log(Level::Info, format!(...))`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, &format!($($arg)*)) };
}

/// `log(Level::Debug, format!(...))`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log($crate::Level::Debug, &format!($($arg)*)) };
}
