//! A coarse clock for the connection loop, read with one atomic load instead of a clock
//! call: milliseconds since start for idle timeouts and the current second for the `Date`
//! header. A ticker task advances it (nginx keeps its time the same way). Latency and
//! analytics timestamps use the precise clocks; this one is only for what tolerates being a
//! tick late.

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
    /// Seconds since the Unix epoch at the last tick.
    wall_secs: AtomicU64,
}

impl CoarseClock {
    pub fn new() -> Self {
        let clock = Self {
            start: Instant::now(),
            ms: AtomicU64::new(0),
            wall_secs: AtomicU64::new(0),
        };
        clock.tick();
        clock
    }

    /// Reads the precise clocks once.
    pub fn tick(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.ms.store(ms, Ordering::Relaxed);
        self.wall_secs.store(wall, Ordering::Relaxed);
    }

    /// Milliseconds since the clock started, as of the last tick.
    pub fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Relaxed)
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
        let second = self.wall_secs.load(Ordering::Relaxed);
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
}
