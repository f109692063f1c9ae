//! Learning shares the core politely: its periodic work (analyzer ticks, maintenance
//! passes, SQLite writes, plugin loads) runs on threads of its own, at a lower priority
//! than the proxy ([`background`]), which give the core back after every slice of work
//! (`analytics.background_slice`, [`DEFAULT_SLICE`] unless configured).
//!
//! Why: the proxy's event loop and a background thread on the same core are otherwise
//! scheduled as equals. A thread that has the core keeps it until the scheduler's next
//! tick (4 ms with `CONFIG_HZ=250`) however many requests wait meanwhile, and a yield
//! hands the core only to a thread the scheduler deems owed it (EEVDF's "eligible"): the
//! event loop, which runs all the time, often is not, so a yield returned to the
//! background thread and its stretches on the core ran to 0.5–4 ms, every request in
//! flight waiting through each. At a lower priority the background thread falls behind
//! its share after a few microseconds of work, so its yields and the event loop's wake-ups
//! hand the core back at once; it still gets up to a tenth of a busy core at nice 10, ten
//! times what learning needs with 1,000 routes on 1 s ticks, so it never falls behind
//! (`SCHED_IDLE`, which gets almost nothing on a saturated core, did: docs/benchmarks.md).

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Work done between two yields, unless `analytics.background_slice` says otherwise.
pub const DEFAULT_SLICE: Duration = Duration::from_micros(50);

/// The configured slice, in nanoseconds ([`set_background_slice`]).
static SLICE_NANOS: AtomicU64 = AtomicU64::new(DEFAULT_SLICE.as_nanos() as u64);

/// `analytics.background_nice` unless configured.
pub const DEFAULT_BACKGROUND_NICE: u8 = 10;

/// The nice value [`background`] gives learning's threads (`analytics.background_nice`).
static NICE: AtomicU8 = AtomicU8::new(DEFAULT_BACKGROUND_NICE);

thread_local! {
    /// The nice value this thread was given by [`lower_priority`], if any.
    static GIVEN: Cell<Option<u8>> = const { Cell::new(None) };
}

/// Sets the nice value of learning's threads from now on (0: the proxy's own priority).
pub fn set_background_nice(nice: u8) {
    NICE.store(nice, Ordering::Relaxed);
}

/// Sets how long learning's jobs work between two yields from now on
/// (`analytics.background_slice`).
pub fn set_background_slice(slice: Duration) {
    let nanos = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX).max(1);
    SLICE_NANOS.store(nanos, Ordering::Relaxed);
}

fn slice() -> Duration {
    Duration::from_nanos(SLICE_NANOS.load(Ordering::Relaxed))
}

/// Marks the calling thread as one of learning's: lowers its priority to the configured
/// nice value (once per thread). Not for the event loop's own threads.
pub fn background() {
    lower_priority(NICE.load(Ordering::Relaxed));
}

/// Lowers the calling thread's priority (and only this thread's) to `nice`, once; a
/// thread cannot raise its priority back without privileges, so a lower `nice` than the
/// thread has is left as it is. Failure (a sandbox forbidding it) only costs latency, so
/// it is logged, not returned.
fn lower_priority(nice: u8) {
    if nice == 0 || GIVEN.get().is_some_and(|n| n >= nice) {
        return;
    }
    let tid = rustix::thread::gettid();
    match rustix::process::setpriority_process(Some(tid), i32::from(nice)) {
        Ok(()) => GIVEN.set(Some(nice)),
        Err(e) => tracing::debug!(error = %e, nice, "cannot lower a learning thread's priority"),
    }
}

/// Runs learning's `f` on a blocking pool of learning's own (threads named `learning`),
/// at learning's priority ([`background`]). Not the runtime's pool: tokio resolves
/// backends' host names there, and a thread once lowered cannot be raised back.
pub fn spawn_background<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    learning_pool().spawn_blocking(move || {
        background();
        f()
    })
}

/// A runtime used only for its blocking pool (nothing drives it, nothing needs to): its
/// threads come and go as tokio's do, and only learning's jobs run on them.
#[expect(
    clippy::expect_used,
    reason = "building a runtime without drivers starts no thread and reads no input"
)]
fn learning_pool() -> &'static tokio::runtime::Handle {
    static POOL: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    POOL.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .thread_name("learning")
            .build()
            .expect("a runtime without drivers")
    })
    .handle()
}

/// Call [`Pacer::pause_if_due`] between small steps of a long job. Not for the event
/// loop's own thread.
pub struct Pacer {
    since: Instant,
    slice: Duration,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            slice: slice(),
        }
    }
}

impl Pacer {
    /// Yields the core if the job has run for a slice since the last yield.
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
        now.duration_since(self.since) >= self.slice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of(tid: rustix::thread::Pid) -> i32 {
        rustix::process::getpriority_process(Some(tid)).unwrap()
    }

    #[test]
    fn yields_once_a_slice_of_work_has_passed() {
        const SLICE: Duration = Duration::from_micros(40);
        let start = Instant::now();
        let mut p = Pacer {
            since: start,
            slice: SLICE,
        };
        assert!(!p.due(start + SLICE / 2));
        assert!(p.due(start + SLICE));
        p.since = start - SLICE;
        assert!(p.pause_if_due(), "a slice has passed: yields");
        assert!(
            p.since >= start,
            "and the next slice starts after the yield"
        );
    }

    #[test]
    fn pacers_use_the_configured_slice() {
        set_background_slice(Duration::from_micros(20));
        let configured = Pacer::default().slice;
        set_background_slice(DEFAULT_SLICE);
        assert_eq!(configured, Duration::from_micros(20));
        assert_eq!(Pacer::default().slice, DEFAULT_SLICE);
    }

    #[test]
    fn lowers_the_calling_threads_priority_and_no_other() {
        let me = rustix::thread::gettid();
        let base = nice_of(me);
        if base >= 19 {
            return; // already as low as it goes: nothing to lower
        }
        let target = u8::try_from((base + 5).min(19)).unwrap();
        let (tid, after, again) = std::thread::spawn(move || {
            lower_priority(target);
            let after = nice_of(rustix::thread::gettid());
            lower_priority(target.saturating_sub(1)); // lower `nice`: left as it is
            (
                rustix::thread::gettid(),
                after,
                nice_of(rustix::thread::gettid()),
            )
        })
        .join()
        .unwrap();
        assert_ne!(tid, me);
        assert_eq!(after, i32::from(target), "the background thread is lowered");
        assert_eq!(again, i32::from(target), "and never raised back");
        assert_eq!(nice_of(me), base, "the calling thread's neighbours are not");
    }

    #[tokio::test]
    async fn background_jobs_run_at_the_configured_priority() {
        let base = nice_of(rustix::thread::gettid());
        let nice = NICE.load(Ordering::Relaxed);
        let seen = spawn_background(|| nice_of(rustix::thread::gettid()))
            .await
            .unwrap();
        assert_eq!(seen, base.max(i32::from(nice)));
    }
}
