//! Clocks. `std::time::SystemTime::now()` and `Instant::now()` trap in a plugin (WebAssembly
//! has no clock of its own); these ask walnut.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(crate::host::clock(0))
}

/// A point on a clock that only goes forward, for measuring time spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    pub fn now() -> Instant {
        Instant(crate::host::clock(1))
    }

    /// The time since this instant.
    pub fn elapsed(self) -> Duration {
        Instant::now().duration_since(self)
    }

    /// The time from `earlier` to this instant (zero if `earlier` is later).
    pub fn duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_read_the_machines_in_a_native_build() {
        let wall = now().duration_since(UNIX_EPOCH).unwrap();
        assert!(wall > Duration::from_secs(1_700_000_000));
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
