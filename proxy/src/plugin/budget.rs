//! A hook call's time budget, kept in the worker thread's CPU time rather than on the wall
//! clock, so a healthy plugin is not failed because its thread was descheduled mid-call on a
//! busy machine. The engine's epoch (wall-clock ticks) says when a budget's worth of time has
//! passed; only then is the thread's CPU clock read (no cost on calls that end in time). A call
//! whose thread kept the CPU for at least half of a budget-long window after its first budget
//! is stopped; one whose thread was mostly waiting for the CPU gets another window, up to
//! `MAX_WINDOWS` budgets in all.

use wasmtime::UpdateDeadline;

/// The most budget-long windows of wall time a call may take while its thread is descheduled.
const MAX_WINDOWS: u32 = 20;

/// One instance's budget for its current call.
#[derive(Debug, Default)]
pub(super) struct Budget {
    /// The budget in epoch ticks.
    ticks: u64,
    /// Nanoseconds of one tick.
    tick_ns: u64,
    /// The thread's CPU time when the current window began (after the first budget).
    mark: Option<u64>,
    windows: u32,
}

impl Budget {
    /// A call with a budget of `ticks` epoch ticks begins.
    pub(super) fn start(&mut self, ticks: u64) {
        *self = Budget {
            ticks,
            tick_ns: super::EPOCH_TICK.as_nanos() as u64,
            mark: None,
            windows: 0,
        };
    }

    /// The epoch deadline passed: another window, or the call is stopped (`Trap::Interrupt`).
    pub(super) fn expired(&mut self) -> wasmtime::Result<UpdateDeadline> {
        self.expired_at(crate::process::thread_cpu_ns())
    }

    /// `expired`, the thread having used `now` ns of CPU so far.
    fn expired_at(&mut self, now: u64) -> wasmtime::Result<UpdateDeadline> {
        self.windows += 1;
        let busy = self
            .mark
            .is_some_and(|mark| now.saturating_sub(mark) >= self.ticks * self.tick_ns / 2);
        if busy || self.windows > MAX_WINDOWS {
            return Err(wasmtime::Trap::Interrupt.into());
        }
        self.mark = Some(now);
        Ok(UpdateDeadline::Continue(self.ticks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One epoch tick, in ns.
    const MS: u64 = 1_000_000;

    fn goes_on(b: &mut Budget, cpu: u64) -> bool {
        matches!(b.expired_at(cpu), Ok(UpdateDeadline::Continue(10)))
    }

    #[test]
    fn a_call_that_keeps_the_cpu_is_stopped_in_its_second_window() {
        let mut b = Budget::default();
        b.start(10);
        assert!(
            goes_on(&mut b, 100 * MS),
            "the first budget only marks the clock"
        );
        assert!(
            !goes_on(&mut b, 108 * MS),
            "8 ms of CPU in a 10 ms window: busy"
        );
    }

    #[test]
    fn a_descheduled_call_goes_on_until_its_last_window() {
        let mut b = Budget::default();
        b.start(10);
        let mut cpu = 0;
        for _ in 0..MAX_WINDOWS {
            cpu += MS;
            assert!(
                goes_on(&mut b, cpu),
                "1 ms of CPU per 10 ms window: waiting"
            );
        }
        assert!(!goes_on(&mut b, cpu + MS), "at most MAX_WINDOWS windows");
        b.start(10);
        assert!(goes_on(&mut b, cpu), "a new call starts a new count");
    }
}
