//! Failure accounting as nginx's round-robin peers keep it: `max_fails` failures within
//! `fail_timeout` take a server out for `fail_timeout`; an answer after the last check forgives.
//! The record is shared by every worker (atomics), as with nginx's shared `zone`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::config::UpstreamServer;

/// Milliseconds since the first call: the clock of failure accounting.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One server's failure record.
#[derive(Debug, Default)]
pub struct Health {
    fails: AtomicU32,
    /// When the last failure happened.
    accessed: AtomicU64,
    /// When the server was last failed, or last tried after its fail_timeout.
    checked: AtomicU64,
}

impl Health {
    /// Whether `s` is out at `now` (`max_fails` reached within `fail_timeout`).
    pub fn out(&self, s: &UpstreamServer, now: u64) -> bool {
        s.max_fails > 0
            && self.fails.load(Ordering::Relaxed) >= s.max_fails
            && now.saturating_sub(self.checked.load(Ordering::Relaxed))
                <= s.fail_timeout.as_millis() as u64
    }

    /// `s` was chosen at `now`: a server tried after its fail_timeout starts a new period.
    pub fn chosen(&self, s: &UpstreamServer, now: u64) {
        if now.saturating_sub(self.checked.load(Ordering::Relaxed))
            > s.fail_timeout.as_millis() as u64
        {
            self.checked.store(now, Ordering::Relaxed);
        }
    }

    /// A failure at `now`; the count of failures so far.
    pub fn failed(&self, now: u64) -> u32 {
        let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        self.accessed.store(now, Ordering::Relaxed);
        self.checked.store(now, Ordering::Relaxed);
        fails
    }

    /// An answer: a failure older than the last check is forgiven.
    pub fn succeeded(&self) {
        if self.accessed.load(Ordering::Relaxed) < self.checked.load(Ordering::Relaxed) {
            self.fails.store(0, Ordering::Relaxed);
        }
    }

    /// Every server is out: failures are forgotten for a quick recovery, as nginx does.
    pub fn forgive(&self) {
        self.fails.store(0, Ordering::Relaxed);
    }
}
