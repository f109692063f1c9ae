//! Learning shares the core politely: its periodic work (analyzer ticks, SQLite writes)
//! runs on threads of its own, which give the core back every [`SLICE`] of work.
//!
//! Why: the proxy's event loop and a background thread on the same core are scheduled as
//! equals, and a thread that has the core keeps it until the scheduler's next tick (4 ms
//! with `CONFIG_HZ=250`) however many requests wait meanwhile: a 30 ms analyzer tick
//! became 4 ms stalls of every request in flight, and the proxy's p99 with 1,000 routes
//! rose with the tick's length (docs/benchmarks.md). Yielding every 200 µs bounds the
//! stall; learning still gets its fair share of the core, so it never falls behind.

use std::time::{Duration, Instant};

/// Work done between two yields.
pub const SLICE: Duration = Duration::from_micros(200);

/// Call [`Pacer::pause_if_due`] between small steps of a long job. Not for the event
/// loop's own thread.
pub struct Pacer {
    since: Instant,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            since: Instant::now(),
        }
    }
}

impl Pacer {
    /// Yields the core if the job has run for a [`SLICE`] since the last yield.
    /// True if it yielded.
    pub fn pause_if_due(&mut self) -> bool {
        if !self.due(Instant::now()) {
            return false;
        }
        std::thread::yield_now();
        self.since = Instant::now();
        true
    }

    fn due(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= SLICE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_once_a_slice_of_work_has_passed() {
        let start = Instant::now();
        let mut p = Pacer { since: start };
        assert!(!p.due(start + SLICE / 2));
        assert!(p.due(start + SLICE));
        p.since = start - SLICE;
        assert!(p.pause_if_due(), "a slice has passed: yields");
        assert!(
            p.since >= start,
            "and the next slice starts after the yield"
        );
    }
}
