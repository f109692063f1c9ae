//! Each series' baseline window, kept between analyzer ticks: a tick reads from the store
//! only the buckets completed since the last one, not the whole window of every series.
//! With 1,000 routes on 1 s ticks, copying every series' window out of the store and
//! working out each bucket's p99 again on every tick was most of the analyzer's time.
//!
//! A bucket joins the window on the first tick after the one that tested it, read from the
//! store then, so the requests the recorder filed into it after it was tested are in. One
//! filed later still (an event loop stalled for more than an interval) is missed by the
//! window until that bucket leaves it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::baseline::{Sums, WindowBucket, latency_of};
use super::bucket::{Bucket, UnixMs};
use super::histogram::DenseHistogram;
use super::store::{SeriesKey, TrafficStore};

#[derive(Default)]
pub struct Windows {
    series: hashbrown::HashMap<SeriesKey, Held, foldhash::fast::RandomState>,
    /// Counts ticks, so series no longer reported are forgotten.
    tick: u64,
}

/// A series' window as of a tick.
pub struct Window<'a> {
    /// The buckets that start in `[from, bucket_ms)`, oldest first.
    pub buckets: &'a VecDeque<WindowBucket>,
    /// Their latency histograms summed.
    pub latency: &'a DenseHistogram,
    /// The latency histograms of those that start before the time asked for (an ongoing
    /// anomaly's start) summed.
    pub latency_before: Option<&'a DenseHistogram>,
    /// The bucket under test, if it has any traffic.
    pub current: Option<Arc<Bucket>>,
}

impl Window<'_> {
    /// Sums over the window's buckets.
    pub fn sums(&self) -> Sums {
        Sums::of(self.buckets.iter())
    }

    /// Sums over the window's buckets that start before `since`.
    pub fn sums_before(&self, since: UnixMs) -> Sums {
        Sums::of(self.buckets.iter().take_while(|b| b.start() < since))
    }
}

struct Held {
    /// Completed buckets, oldest first, each starting before `read_to`.
    buckets: VecDeque<WindowBucket>,
    /// Their latency histograms summed: a bucket's is added as it joins the window and
    /// taken away as it leaves (integer counts: they come back exactly), so a tick
    /// touches two buckets' histograms, not sixty. The rest of the baseline is summed from
    /// `buckets` on every tick: their values are inline, and sums kept running in
    /// floating point would leave rounding behind as buckets leave (a baseline that never
    /// varied would then show a spread of 1e-9, and a z-score out of nothing).
    latency: DenseHistogram,
    /// While an ongoing anomaly's start is asked for: the start, and the histograms of the
    /// buckets before it summed (the window's start, which shrinks as the window slides).
    before: Option<(UnixMs, DenseHistogram)>,
    /// Where reading the store resumes: every bucket that starts before this is held.
    read_to: UnixMs,
    /// The last tick that read this series.
    tick: u64,
}

impl Windows {
    /// Brings a series' window up to the bucket under test, which starts at `bucket_ms`:
    /// drops the buckets that start before `from`, reads the ones completed since the last
    /// tick. With `before`, the histogram of the buckets that start before it comes too.
    pub fn advance(
        &mut self,
        store: &dyn TrafficStore,
        key: &SeriesKey,
        from: UnixMs,
        bucket_ms: UnixMs,
        interval_ms: i64,
        before: Option<UnixMs>,
    ) -> Window<'_> {
        let tick = self.tick;
        let held = self.series.entry_ref(key).or_insert_with(|| Held {
            buckets: VecDeque::new(),
            latency: DenseHistogram::default(),
            before: None,
            read_to: UnixMs::MIN,
            tick,
        });
        held.tick = tick;
        if held.read_to > bucket_ms {
            // The clock went back: what is held may be in the future.
            held.buckets.clear();
            held.latency = DenseHistogram::default();
            held.before = None;
            held.read_to = UnixMs::MIN;
        }
        while let Some(b) = held.buckets.pop_front_if(|b| b.start() < from) {
            held.latency.remove(&b.bucket.latency);
            if let Some((since, latency)) = &mut held.before
                && b.start() < *since
            {
                latency.remove(&b.bucket.latency);
            }
        }
        let mut current = None;
        let read_from = held.read_to.max(from);
        for b in store.buckets(key, read_from, bucket_ms + interval_ms) {
            if b.start == bucket_ms {
                current = Some(b);
            } else if b.start < bucket_ms {
                held.latency.absorb(&b.latency);
                if let Some((since, latency)) = &mut held.before
                    && b.start < *since
                {
                    latency.absorb(&b.latency);
                }
                held.buckets.push_back(WindowBucket::new(b));
            }
        }
        held.read_to = bucket_ms;
        match before {
            None => held.before = None,
            Some(since) if held.before.as_ref().is_some_and(|(s, _)| *s == since) => {}
            Some(since) => {
                let start = held.buckets.iter().take_while(|b| b.start() < since);
                held.before = Some((since, latency_of(start)));
            }
        }
        Window {
            buckets: &held.buckets,
            latency: &held.latency,
            latency_before: held.before.as_ref().map(|(_, latency)| latency),
            current,
        }
    }

    /// Ends a tick: forgets the series it did not read (gone from the store and the
    /// configuration).
    pub fn end_tick(&mut self) {
        let tick = self.tick;
        self.series.retain(|_, held| held.tick == tick);
        self.tick += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::baseline::{Sums, baseline};
    use crate::analytics::bucket::Sample;
    use crate::analytics::store::{MemoryStore, Record, StoreSettings};

    const SEC: i64 = 1000;
    const WINDOW: i64 = 10 * SEC;

    fn store() -> MemoryStore {
        MemoryStore::new(
            StoreSettings {
                interval_ms: SEC,
                retention_ms: 100 * SEC,
                rollup_after_ms: 20 * SEC,
                rollup_interval_ms: 10 * SEC,
            },
            None,
        )
    }

    fn requests(store: &MemoryStore, route: &str, at: UnixMs, n: u64, seed: u64) {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                route: route.into(),
                backend: None,
                pair: false,
                at,
                sample: Sample {
                    error: (seed + i).is_multiple_of(7),
                    latency_us: 100 + (seed * 7919 + i * 104_729) % 50_000,
                    bytes_in: 0,
                    bytes_out: 0,
                },
            })
            .collect();
        store.record(&records);
    }

    /// The window and bucket under test as a tick that keeps nothing would see them.
    fn afresh(
        store: &MemoryStore,
        key: &SeriesKey,
        bucket_ms: UnixMs,
    ) -> (Vec<WindowBucket>, Option<Arc<Bucket>>) {
        let mut history = Vec::new();
        let mut current = None;
        for b in store.buckets(key, bucket_ms - WINDOW, bucket_ms + SEC) {
            if b.start == bucket_ms {
                current = Some(b);
            } else {
                history.push(WindowBucket::new(b));
            }
        }
        (history, current)
    }

    #[test]
    fn a_kept_window_equals_one_read_afresh() {
        let store = store();
        let key = SeriesKey::Route("/a".into());
        let mut windows = Windows::default();
        // A pseudo-random walk of ticks: mostly one interval apart, sometimes several
        // (a slow tick, a long pause that empties the window), twice back in time.
        let mut rng = 12_345u64;
        let mut next = |n: u64| {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (rng >> 33) % n
        };
        let mut t = 100 * SEC;
        let (mut compared, mut with_before) = (0, 0);
        let mut since = None;
        for step in 0..300u64 {
            t += match step {
                120 => -7 * SEC,
                200 => -30 * SEC,
                _ => match next(10) {
                    0 => 25 * SEC,
                    1..=3 => 3 * SEC,
                    _ => SEC,
                },
            };
            // Traffic in the interval being tested, and sometimes quiet intervals.
            let bucket_ms = t - SEC;
            if next(5) > 0 {
                requests(
                    &store,
                    "/a",
                    bucket_ms + next(SEC as u64) as i64,
                    next(40),
                    step,
                );
            }
            // An anomaly's start, kept for a while, moved, or dropped.
            since = match next(12) {
                0 => None,
                // Mostly in the window; sometimes ahead of it, so buckets still to come
                // fall before it.
                1..=3 => Some(bucket_ms + 3 * SEC - next(WINDOW as u64 + 5 * SEC as u64) as i64),
                _ => since,
            };
            let kept = windows.advance(&store, &key, bucket_ms - WINDOW, bucket_ms, SEC, since);
            let (fresh, fresh_current) = afresh(&store, &key, bucket_ms);
            let starts: Vec<_> = kept.buckets.iter().map(WindowBucket::start).collect();
            let fresh_starts: Vec<_> = fresh.iter().map(WindowBucket::start).collect();
            assert_eq!(starts, fresh_starts, "step {step}");
            assert_eq!(kept.current, fresh_current, "step {step}");
            let from = bucket_ms - WINDOW;
            let compare = |sums: Sums, latency: &DenseHistogram, fresh: &[WindowBucket], to| {
                let fresh_latency = latency_of(fresh.iter());
                assert_eq!(
                    latency.to_sparse(),
                    fresh_latency.to_sparse(),
                    "step {step}"
                );
                assert_eq!(
                    baseline(&sums, latency, from, to, 0, SEC),
                    baseline(&Sums::of(fresh.iter()), &fresh_latency, from, to, 0, SEC),
                    "step {step}"
                );
            };
            compare(kept.sums(), kept.latency, &fresh, bucket_ms);
            match since {
                Some(since) => {
                    let Some(latency) = kept.latency_before else {
                        panic!("step {step}: no histogram before {since}")
                    };
                    let fresh_before: Vec<_> = fresh
                        .iter()
                        .filter(|b| b.start() < since)
                        .cloned()
                        .collect();
                    compare(kept.sums_before(since), latency, &fresh_before, since);
                    with_before += usize::from(!fresh_before.is_empty());
                }
                None => assert!(kept.latency_before.is_none(), "step {step}"),
            }
            compared += usize::from(!fresh.is_empty());
            // A request filed late into the bucket just tested still counts: the bucket
            // joins the window on the next tick, read then.
            if next(4) == 0 {
                requests(&store, "/a", bucket_ms, 1, step);
            }
            windows.end_tick();
        }
        assert!(
            compared > 200 && with_before > 40,
            "{compared} ticks had a window to compare, {with_before} an anomaly's start"
        );
    }

    #[test]
    fn series_not_read_in_a_tick_are_forgotten() {
        let store = store();
        let (a, b) = (SeriesKey::Route("/a".into()), SeriesKey::Route("/b".into()));
        let mut windows = Windows::default();
        windows.advance(&store, &a, 0, 10 * SEC, SEC, None);
        windows.advance(&store, &b, 0, 10 * SEC, SEC, None);
        windows.end_tick();
        assert_eq!(windows.series.len(), 2);
        windows.advance(&store, &a, SEC, 11 * SEC, SEC, None);
        windows.end_tick();
        assert_eq!(windows.series.keys().collect::<Vec<_>>(), [&a]);
    }
}
