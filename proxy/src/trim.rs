//! When memory the allocator holds free is worth giving back to the operating system: a pure
//! rule over two figures sampled once a second (the thread and its libc calls are in
//! `process.rs`).

/// How much freed memory makes a trim worth it: little enough that what a burst leaves behind
/// comes back; a trim that finds little to give costs a walk of the free lists and a few
/// madvise calls.
pub const TRIM_AT: u64 = 4 << 20;

/// How much the allocator's handed-out memory must fall below what it was at the last trim
/// for another trim to be worth trying.
const FREED_SINCE_TRIM: u64 = 1 << 20;

/// One look at the allocator, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Resident memory beyond what the allocator has handed out: freed but held (plus a
    /// constant: code, stacks).
    pub held: u64,
    /// What the allocator has handed out.
    pub in_use: u64,
}

/// Decides, look after look, when to trim.
///
/// Two cases call for a trim:
/// - held memory grew by [`TRIM_AT`] since the last trim (or since it was last lower): a burst
///   ended and left its memory free;
/// - what is handed out fell by 1 MiB since the last trim while held memory is still
///   [`TRIM_AT`] above the least ever seen. A trim gives back only whole free pages, so one
///   that ran while a burst was ending kept every page still shared with a live allocation;
///   when those allocations are freed later, held memory barely grows (the pages were already
///   counted), but the pages are now free. Each such trim needs a further 1 MiB freed, so a
///   steady load never trims again and again.
#[derive(Debug)]
pub struct TrimRule {
    /// Held memory after the last trim, or lower when it fell since.
    floor: u64,
    /// The least held memory ever seen: what walnut holds with nothing to give back.
    least: u64,
    /// Handed-out memory at the last trim (at the start when none ran).
    in_use_at_trim: u64,
}

impl TrimRule {
    pub fn new(first: Sample) -> TrimRule {
        TrimRule {
            floor: first.held,
            least: first.held,
            in_use_at_trim: first.in_use,
        }
    }

    /// Whether to trim after this look.
    pub fn due(&mut self, now: Sample) -> bool {
        self.least = self.least.min(now.held);
        let grew = now.held > self.floor + TRIM_AT;
        let freed_later =
            now.in_use + FREED_SINCE_TRIM <= self.in_use_at_trim && now.held > self.least + TRIM_AT;
        if !grew && !freed_later {
            self.floor = self.floor.min(now.held);
        }
        grew || freed_later
    }

    /// Records the look taken right after a trim.
    pub fn trimmed(&mut self, after: Sample) {
        self.least = self.least.min(after.held);
        self.floor = after.held;
        self.in_use_at_trim = after.in_use;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn at(held_mib: u64, in_use_mib: u64) -> Sample {
        Sample {
            held: held_mib * MIB,
            in_use: in_use_mib * MIB,
        }
    }

    #[test]
    fn a_steady_load_never_trims() {
        let mut rule = TrimRule::new(at(5, 2));
        for i in 0..1000 {
            // Connections come and go: handed-out memory moves by up to 3 MiB, held by 2 MiB.
            assert!(!rule.due(at(5 + i % 3, 40 + i % 4)), "look {i}");
        }
    }

    #[test]
    fn a_burst_that_ends_is_trimmed_once() {
        let mut rule = TrimRule::new(at(5, 2));
        assert!(!rule.due(at(5, 60)), "connections open: nothing is free");
        assert!(rule.due(at(63, 2)), "they closed: 58 MiB held free");
        rule.trimmed(at(6, 2));
        for _ in 0..100 {
            assert!(!rule.due(at(6, 2)));
        }
    }

    #[test]
    fn pages_a_trim_could_not_give_back_are_tried_again_once_freed() {
        let mut rule = TrimRule::new(at(5, 2));
        assert!(!rule.due(at(5, 62)));
        // A trim while the last 600 connections were closing: their 3.5 MiB pin 9 MiB of pages.
        assert!(rule.due(at(50, 5)));
        rule.trimmed(at(14, 5));
        // They close: held grows by 3 MiB only, less than TRIM_AT, but 3 MiB were freed.
        assert!(rule.due(at(17, 2)));
        rule.trimmed(at(6, 2));
        for _ in 0..100 {
            assert!(!rule.due(at(6, 2)));
        }
    }

    #[test]
    fn memory_that_stays_pinned_is_not_trimmed_again_and_again() {
        let mut rule = TrimRule::new(at(5, 2));
        assert!(rule.due(at(40, 30)));
        // Long-lived allocations keep 10 MiB of pages: every later trim finds little to give.
        rule.trimmed(at(15, 30));
        let mut trims = 0;
        for i in 0..1000u64 {
            // Handed-out memory wanders between 25 and 31 MiB.
            let now = at(15, 25 + (i * 3) % 7);
            if rule.due(now) {
                trims += 1;
                rule.trimmed(now);
            }
        }
        assert!(trims <= 5, "{trims} trims");
    }
}
