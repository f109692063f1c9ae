//! The gateway's coarse clock, read with an atomic load instead of a clock call: a
//! monotonic instant and the wall-clock time as of the last tick, which a ticker task
//! advances every [`TICK`] (nginx keeps its time the same way). The request path reads it
//! for what tolerates being a tick late: keep-alive and pool idle times, request deadlines,
//! breaker windows, the `Date` header and the time an event is filed under in analytics.
//! Latency is measured with the precise clock.
//!
//! Without a running ticker (unit tests) the clock stands still at its last tick.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the ticker advances the clock.
pub const TICK: Duration = Duration::from_millis(50);

pub struct CoarseClock {
    start: Instant,
    /// Milliseconds from `start` at the last tick.
    ms: AtomicU64,
    /// Milliseconds since the Unix epoch at the last tick.
    wall_ms: AtomicU64,
}

impl CoarseClock {
    pub fn new() -> Self {
        let clock = Self {
            start: Instant::now(),
            ms: AtomicU64::new(0),
            wall_ms: AtomicU64::new(0),
        };
        clock.tick();
        clock
    }

    /// Reads the precise clocks once.
    pub fn tick(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.ms.store(ms, Ordering::Relaxed);
        self.wall_ms.store(wall, Ordering::Relaxed);
    }

    /// Milliseconds since the clock started, as of the last tick.
    pub fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Relaxed)
    }

    /// Moves the clock on by `by`, as a tick that much later would (tests drive time-
    /// dependent code with it; a running ticker would overwrite it).
    #[cfg(test)]
    pub fn advance(&self, by: Duration) {
        let by = by.as_millis() as u64;
        self.ms.fetch_add(by, Ordering::Relaxed);
        self.wall_ms.fetch_add(by, Ordering::Relaxed);
    }

    /// The monotonic time of the last tick.
    pub fn instant(&self) -> Instant {
        self.start + Duration::from_millis(self.now_ms())
    }

    /// The wall-clock time of the last tick.
    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.wall_ms.load(Ordering::Relaxed))
    }

    /// Ticks every [`TICK`] until the returned task is aborted.
    pub fn spawn_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let clock = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                clock.tick();
            }
        })
    }

    /// Appends the `Date` header for the current second, formatted once per second per
    /// thread.
    pub fn push_date(&self, out: &mut Vec<u8>) {
        thread_local! {
            static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
        }
        let second = self.wall_ms.load(Ordering::Relaxed) / 1000;
        DATE.with(|date| {
            let mut date = date.borrow_mut();
            if date.0 != second {
                let at = UNIX_EPOCH + Duration::from_secs(second);
                *date = (second, httpdate::fmt_http_date(at));
            }
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(date.1.as_bytes());
            out.extend_from_slice(b"\r\n");
        });
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_the_current_second_as_http_prints_it() {
        let clock = CoarseClock::new();
        let mut out = Vec::new();
        clock.push_date(&mut out);
        let text = String::from_utf8(out).unwrap();
        let value = text
            .strip_prefix("date: ")
            .and_then(|v| v.strip_suffix("\r\n"))
            .unwrap();
        let parsed = httpdate::parse_http_date(value).unwrap();
        let drift = SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_else(|e| e.duration());
        assert!(drift < Duration::from_secs(5), "{value}");
    }

    #[test]
    fn ticks_advance_the_milliseconds() {
        let clock = CoarseClock::new();
        let before = clock.now_ms();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now_ms(), before, "only a tick moves it");
        clock.tick();
        assert!(clock.now_ms() >= before + 20);
    }

    #[test]
    fn instant_and_wall_time_are_those_of_the_last_tick() {
        let clock = CoarseClock::new();
        let (instant, wall) = (clock.instant(), clock.wall());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!((clock.instant(), clock.wall()), (instant, wall));
        clock.tick();
        assert!(clock.instant() >= instant + Duration::from_millis(20));
        assert!(clock.instant() <= Instant::now());
        assert!(clock.wall() >= wall + Duration::from_millis(20));
        let drift = SystemTime::now().duration_since(clock.wall()).unwrap();
        assert!(drift < Duration::from_secs(5));
    }
}
