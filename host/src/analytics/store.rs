//! The traffic store: per-route and per-backend time buckets.
//!
//! [`TrafficStore`] is what the recorder writes to and the analyzer and API read from; a
//! Redis store for fleets will be another implementation. [`MemoryStore`] keeps every
//! series in memory (bounded: routes × retention, with old buckets rolled up into coarser
//! ones) and hands completed buckets to an optional [`Persist`] backend such as SQLite.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::bucket::{Bucket, OpenBucket, Sample, UnixMs, align};

/// Which series a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    Route(Arc<str>),
    Backend(Arc<str>),
    /// One route's traffic to one backend: (route, backend). Its error baseline sets the
    /// route's breaker threshold on that backend.
    Pair(Arc<str>, Arc<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    Route,
    Backend,
    Pair,
}

impl SeriesKey {
    pub fn kind(&self) -> SeriesKind {
        match self {
            SeriesKey::Route(_) => SeriesKind::Route,
            SeriesKey::Backend(_) => SeriesKind::Backend,
            SeriesKey::Pair(..) => SeriesKind::Pair,
        }
    }

    /// The route's or backend's name (a pair's route).
    pub fn name(&self) -> &Arc<str> {
        match self {
            SeriesKey::Route(n) | SeriesKey::Backend(n) | SeriesKey::Pair(n, _) => n,
        }
    }
}

/// One finished request, as the store files it.
#[derive(Debug, Clone)]
pub struct Record {
    pub route: Arc<str>,
    pub backend: Option<Arc<str>>,
    pub at: UnixMs,
    pub sample: Sample,
}

/// Storage of time buckets.
pub trait TrafficStore: Send + Sync + 'static {
    /// Adds requests to the buckets of their route and backend.
    fn record(&self, records: &[Record]);
    /// Closes buckets whose interval has ended by `now`, rolls up and expires old ones.
    fn maintain(&self, now: UnixMs);
    /// Buckets of a series that start in `[from, to)`, oldest first, the one in progress
    /// included.
    fn buckets(&self, key: &SeriesKey, from: UnixMs, to: UnixMs) -> Vec<Bucket>;
    /// Every series of a kind, with the start of its oldest bucket.
    fn series(&self, kind: SeriesKind) -> Vec<(SeriesKey, UnixMs)>;
    /// Saves the buckets in progress, so a clean restart loses nothing.
    fn flush(&self);
    /// The bucket width.
    fn interval(&self) -> Duration;
}

/// Where completed buckets go to survive a restart.
pub trait Persist: Send + Sync + 'static {
    /// Saves (or overwrites) a bucket.
    fn save(&self, key: &SeriesKey, bucket: &Bucket);
    /// Replaces a series' buckets starting in `[from, to)` with one rolled-up bucket.
    fn replace(&self, key: &SeriesKey, from: UnixMs, to: UnixMs, bucket: &Bucket);
    /// Drops every bucket that starts before `before`.
    fn expire(&self, before: UnixMs);
    /// Returns once everything handed over so far is stored.
    fn sync(&self) {}
}

impl<P: Persist> Persist for Arc<P> {
    fn save(&self, key: &SeriesKey, bucket: &Bucket) {
        (**self).save(key, bucket)
    }
    fn replace(&self, key: &SeriesKey, from: UnixMs, to: UnixMs, bucket: &Bucket) {
        (**self).replace(key, from, to, bucket)
    }
    fn expire(&self, before: UnixMs) {
        (**self).expire(before)
    }
    fn sync(&self) {
        (**self).sync()
    }
}

/// Bucket geometry.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    pub interval_ms: i64,
    pub retention_ms: i64,
    pub rollup_after_ms: i64,
    pub rollup_interval_ms: i64,
}

impl StoreSettings {
    pub fn from_config(c: &crate::config::AnalyticsConfig) -> Self {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            interval_ms: ms(c.bucket_interval).max(1),
            retention_ms: ms(c.retention),
            rollup_after_ms: ms(c.rollup_after),
            rollup_interval_ms: ms(c.rollup_interval).max(1),
        }
    }
}

pub struct MemoryStore {
    settings: StoreSettings,
    series: RwLock<HashMap<SeriesKey, Series>>,
    persist: Option<Box<dyn Persist>>,
}

struct Series {
    /// Start of the oldest bucket ever seen (kept across expiry: it dates the history).
    first: UnixMs,
    done: VecDeque<Bucket>,
    open: Option<OpenBucket>,
}

// === impl MemoryStore ===

impl MemoryStore {
    pub fn new(settings: StoreSettings, persist: Option<Box<dyn Persist>>) -> Self {
        Self {
            settings,
            series: RwLock::new(HashMap::new()),
            persist,
        }
    }

    /// Fills the store with buckets loaded from persistence. A bucket of the interval
    /// holding `now` becomes the bucket in progress again.
    pub fn load(&self, buckets: Vec<(SeriesKey, Bucket)>, now: UnixMs) {
        let current = align(now, self.settings.interval_ms);
        let mut map = self.write();
        for (key, bucket) in buckets {
            let series = map.entry(key).or_insert_with(|| Series {
                first: bucket.start,
                done: VecDeque::new(),
                open: None,
            });
            series.first = series.first.min(bucket.start);
            if bucket.start == current && bucket.interval_ms == self.settings.interval_ms {
                series.open = Some(OpenBucket::resume(&bucket));
            } else {
                series.done.push_back(bucket);
            }
        }
        for series in map.values_mut() {
            series.done.make_contiguous().sort_by_key(|b| b.start);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<SeriesKey, Series>> {
        self.series.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<SeriesKey, Series>> {
        self.series.read().unwrap_or_else(|e| e.into_inner())
    }

    fn add(
        &self,
        map: &mut HashMap<SeriesKey, Series>,
        key: SeriesKey,
        at: UnixMs,
        sample: &Sample,
    ) {
        let interval = self.settings.interval_ms;
        let start = align(at, interval);
        if !map.contains_key(&key) {
            map.insert(
                key.clone(),
                Series {
                    first: start,
                    done: VecDeque::new(),
                    open: None,
                },
            );
        }
        let Some(series) = map.get_mut(&key) else {
            return;
        };
        match &mut series.open {
            Some(open) if open.start >= start => open.add(sample),
            _ => {
                if let Some(closed) = series.open.take() {
                    self.close(&key, series, closed);
                }
                let mut open = OpenBucket::new(start, interval);
                open.add(sample);
                series.open = Some(open);
            }
        }
    }

    fn close(&self, key: &SeriesKey, series: &mut Series, open: OpenBucket) {
        let bucket = open.snapshot();
        if let Some(p) = &self.persist {
            p.save(key, &bucket);
        }
        series.done.push_back(bucket);
    }
}

impl TrafficStore for MemoryStore {
    fn record(&self, records: &[Record]) {
        let mut map = self.write();
        for r in records {
            self.add(&mut map, SeriesKey::Route(r.route.clone()), r.at, &r.sample);
            if let Some(b) = &r.backend {
                self.add(&mut map, SeriesKey::Backend(b.clone()), r.at, &r.sample);
                self.add(
                    &mut map,
                    SeriesKey::Pair(r.route.clone(), b.clone()),
                    r.at,
                    &r.sample,
                );
            }
        }
    }

    fn maintain(&self, now: UnixMs) {
        let s = self.settings;
        let expire_before = now.saturating_sub(s.retention_ms);
        let rollup_before = align(now.saturating_sub(s.rollup_after_ms), s.rollup_interval_ms);
        let mut map = self.write();
        for (key, series) in map.iter_mut() {
            if series.open.as_ref().is_some_and(|o| o.end() <= now)
                && let Some(open) = series.open.take()
            {
                self.close(key, series, open);
            }
            while series.done.front().is_some_and(|b| b.start < expire_before) {
                series.done.pop_front();
            }
            self.roll_up(key, series, rollup_before);
        }
        map.retain(|_, series| series.open.is_some() || !series.done.is_empty());
        drop(map);
        if let Some(p) = &self.persist {
            p.expire(expire_before);
        }
    }

    fn buckets(&self, key: &SeriesKey, from: UnixMs, to: UnixMs) -> Vec<Bucket> {
        let map = self.read();
        let Some(series) = map.get(key) else {
            return Vec::new();
        };
        let mut out: Vec<Bucket> = series
            .done
            .iter()
            .filter(|b| b.start >= from && b.start < to)
            .cloned()
            .collect();
        if let Some(open) = &series.open
            && open.start >= from
            && open.start < to
        {
            out.push(open.snapshot());
        }
        out
    }

    fn series(&self, kind: SeriesKind) -> Vec<(SeriesKey, UnixMs)> {
        let map = self.read();
        let mut out: Vec<_> = map
            .iter()
            .filter(|(k, _)| k.kind() == kind)
            .map(|(k, s)| (k.clone(), s.first))
            .collect();
        out.sort();
        out
    }

    fn flush(&self) {
        let Some(p) = &self.persist else { return };
        {
            let map = self.read();
            for (key, series) in map.iter() {
                if let Some(open) = &series.open {
                    p.save(key, &open.snapshot());
                }
            }
        }
        p.sync();
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.settings.interval_ms as u64)
    }
}

impl MemoryStore {
    /// Merges full-resolution buckets that start before `before` into `rollup_interval`
    /// buckets.
    fn roll_up(&self, key: &SeriesKey, series: &mut Series, before: UnixMs) {
        let width = self.settings.rollup_interval_ms;
        if width <= self.settings.interval_ms {
            return;
        }
        let fine = |b: &Bucket| b.interval_ms < width && b.start < before;
        if !series.done.iter().any(fine) {
            return;
        }
        let mut kept: VecDeque<Bucket> = VecDeque::with_capacity(series.done.len());
        let mut rolled: Vec<Bucket> = Vec::new();
        for b in series.done.drain(..) {
            if !fine(&b) {
                kept.push_back(b);
                continue;
            }
            let start = align(b.start, width);
            match rolled.last_mut() {
                Some(r) if r.start == start => r.absorb(&b),
                _ => {
                    // A coarse bucket of this span may already exist from an earlier pass.
                    let mut r = match kept.back() {
                        Some(k) if k.start == start && k.interval_ms == width => {
                            kept.pop_back().unwrap_or_default()
                        }
                        _ => Bucket {
                            start,
                            interval_ms: width,
                            ..Default::default()
                        },
                    };
                    r.absorb(&b);
                    rolled.push(r);
                }
            }
        }
        for r in rolled {
            if let Some(p) = &self.persist {
                p.replace(key, r.start, r.start + width, &r);
            }
            kept.push_back(r);
        }
        kept.make_contiguous().sort_by_key(|b| b.start);
        series.done = kept;
    }
}

#[cfg(test)]
mod tests;
