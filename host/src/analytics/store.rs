//! The traffic store: per-route and per-backend time buckets.
//!
//! [`TrafficStore`] is what the recorder writes to and the analyzer and API read from; a
//! Redis store for fleets will be another implementation. [`MemoryStore`] keeps every
//! series in memory (bounded: routes × retention, with old buckets rolled up into coarser
//! ones) and hands completed buckets to an optional [`Persist`] backend such as SQLite.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::bucket::{Bucket, OpenBucket, Sample, UnixMs, align};
use crate::pace::Pacer;

/// Which series a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SeriesKey {
    Route(Arc<str>),
    Backend(Arc<str>),
    /// One route's traffic to one backend: (route, backend). Its error baseline sets the
    /// route's breaker threshold on that backend. Kept only for routes whose upstream has
    /// more than one backend ([`Record::pair`]).
    Pair(Arc<str>, Arc<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    Route,
    Backend,
    Pair,
}

/// A series key that borrows its names: the store looks a series up with it, without
/// cloning (and dropping) the names' `Arc`s, four atomic operations per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyRef<'a> {
    Route(&'a Arc<str>),
    Backend(&'a Arc<str>),
    Pair(&'a Arc<str>, &'a Arc<str>),
}

impl KeyRef<'_> {
    fn to_owned(self) -> SeriesKey {
        match self {
            KeyRef::Route(n) => SeriesKey::Route(n.clone()),
            KeyRef::Backend(n) => SeriesKey::Backend(n.clone()),
            KeyRef::Pair(r, b) => SeriesKey::Pair(r.clone(), b.clone()),
        }
    }
}

/// For maps' `entry_ref`, which clones the key only when it inserts one.
impl From<&SeriesKey> for SeriesKey {
    fn from(key: &SeriesKey) -> Self {
        key.clone()
    }
}

/// Hashed as its borrowed form, so both find the same entry.
impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl hashbrown::Equivalent<SeriesKey> for KeyRef<'_> {
    /// Names compared by pointer first: a request's route and backend names are clones of
    /// the same `Arc`s the store's keys were made from, so the stored name's bytes (a
    /// cache miss per lookup with a thousand routes, three lookups per request) are read
    /// only when the pointers differ.
    fn equivalent(&self, key: &SeriesKey) -> bool {
        let same = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || a == b;
        match (*self, key) {
            (KeyRef::Route(a), SeriesKey::Route(b))
            | (KeyRef::Backend(a), SeriesKey::Backend(b)) => same(a, b),
            (KeyRef::Pair(r, b), SeriesKey::Pair(r2, b2)) => same(r, r2) && same(b, b2),
            _ => false,
        }
    }
}

impl SeriesKey {
    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            SeriesKey::Route(n) => KeyRef::Route(n),
            SeriesKey::Backend(n) => KeyRef::Backend(n),
            SeriesKey::Pair(r, b) => KeyRef::Pair(r, b),
        }
    }

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
    /// The backend that served it, if one was reached.
    pub backend: Option<Arc<str>>,
    /// File it into the route × backend series too (when `backend` is set). Set when the
    /// route's upstream has more than one backend: with one, the route's own buckets count what reached it
    /// (`Bucket::backend_requests`), and a pair series would repeat them.
    pub pair: bool,
    pub at: UnixMs,
    pub sample: Sample,
}

/// Storage of time buckets.
pub trait TrafficStore: Send + Sync + 'static {
    /// Adds requests to the buckets of their route and backend.
    fn record(&self, records: &[Record]);
    /// Adds requests as `record` does, unless that would wait for another thread (the
    /// analyzer reading, a maintenance pass): then adds nothing and returns false. The
    /// event loop files through this, so it never waits for the store.
    fn try_record(&self, records: &[Record]) -> bool {
        self.record(records);
        true
    }
    /// Closes buckets whose interval has ended by `now`, rolls up and expires old ones.
    fn maintain(&self, now: UnixMs);
    /// Buckets of a series that start in `[from, to)`, oldest first, the one in progress
    /// included. Completed buckets are shared, not copied: the analyzer holds each one
    /// for as long as it stays in the baseline window.
    fn buckets(&self, key: &SeriesKey, from: UnixMs, to: UnixMs) -> Vec<Arc<Bucket>>;
    /// Every series of a kind, with the start of its oldest bucket, in no particular order.
    fn series(&self, kind: SeriesKind) -> Vec<(SeriesKey, UnixMs)>;
    /// Saves the buckets in progress, so a clean restart loses nothing.
    fn flush(&self);
    /// The bucket width.
    fn interval(&self) -> Duration;
}

/// One change to the persisted buckets.
#[derive(Debug, Clone)]
pub enum Change {
    /// Saves (or overwrites) a bucket.
    Save(SeriesKey, Arc<Bucket>),
    /// Every bucket shorter than `width` that starts in `[from, before)`, of every series,
    /// was merged into the `width` buckets saved right after this change (a roll-up pass
    /// merges every series' fine buckets before `before`). One range delete, where a
    /// statement per merged bucket was half of what SQLite ran with 1 s buckets.
    RollUp {
        from: UnixMs,
        before: UnixMs,
        width: i64,
    },
    /// Drops every bucket that starts before this.
    Expire(UnixMs),
}

/// Where completed buckets go to survive a restart.
pub trait Persist: Send + Sync + 'static {
    /// Applies changes, in order. The store hands over what each `maintain` tick (and
    /// `flush`) produced, with the buckets closed by requests since the last tick, at once,
    /// so a backend can write it in one transaction (with 1 s buckets and 1,000 routes
    /// that is thousands of buckets a second).
    fn write(&self, changes: Vec<Change>);
    /// Returns once everything handed over so far is stored.
    fn sync(&self) {}
}

impl<P: Persist> Persist for Arc<P> {
    fn write(&self, changes: Vec<Change>) {
        (**self).write(changes)
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

/// Records whose route series [`read_ahead`] reads before they are filed.
const READ_AHEAD: usize = 8;

/// Reads the lines that filing `records` will write in their routes' series (the map's
/// entry, the bucket's counters, the latency histogram's bin), without writing anything.
/// With a thousand routes those lines are cold after the ~10 ms of proxying between two
/// drain ticks: filed one after another, each record waits for its misses in turn (a
/// lookup's are dependent: the name, then the entry, then the bin), while these loads,
/// record after record in a short loop, are independent and overlap.
fn read_ahead(map: &SeriesMap, records: &[Record]) {
    let mut seen = 0u64;
    for r in records {
        if let Some(open) = map
            .get(&KeyRef::Route(&r.route))
            .and_then(|s| s.open.as_ref())
        {
            seen ^= open.peek(r.sample.latency_us);
        }
    }
    std::hint::black_box(seen);
}

/// foldhash: the map is updated three times per recorded request; its keys are route
/// labels, bounded by the route cap, so SipHash's flooding resistance buys nothing here.
/// hashbrown's map (std's, with `Equivalent`) is looked up with a borrowed [`KeyRef`].
type SeriesMap = hashbrown::HashMap<SeriesKey, Series, foldhash::fast::RandomState>;

pub struct MemoryStore {
    settings: StoreSettings,
    series: RwLock<SeriesMap>,
    persist: Option<Box<dyn Persist>>,
    /// Buckets `record` closed (the first request of a new interval closes its series'
    /// bucket), held for the next `maintain`: persistence gets one batch per tick, not
    /// one per drained batch of requests.
    closed: Mutex<Vec<Change>>,
    /// The `before` of the last roll-up pass: every fine bucket older than it was rolled up
    /// then. A pass looks for work only when `before` has moved on (once per
    /// `rollup_interval`) or a bucket older than it was closed since (`late`); the first
    /// pass always looks, which covers what was loaded. Otherwise each pass would read the
    /// history of every series, cache misses all (~10 MB with 2,000 series of 60 buckets).
    rolled_before: AtomicI64,
    late: AtomicBool,
}

struct Series {
    /// Start of the oldest bucket ever seen (kept across expiry: it dates the history).
    first: UnixMs,
    /// Completed buckets in start order, shared with persistence and the analyzer.
    done: VecDeque<Done>,
    open: Option<OpenBucket>,
}

impl Series {
    /// Takes back the completed bucket of the interval at `start`, if one was closed
    /// already, to go on filling. A maintenance pass closes buckets by the precise clock
    /// while requests are filed under the coarse one (up to a tick behind), so a request
    /// can come for a bucket just closed. A second bucket with the same start would show
    /// twice in the history and, saved, overwrite the first in the file (keyed by start).
    /// Closed again, it is saved again with every request.
    fn reopen(&mut self, start: UnixMs, interval: i64) -> Option<OpenBucket> {
        let first = self.done.partition_point(|b| b.start < start);
        let at = (first..self.done.len())
            .take_while(|&i| self.done[i].start == start)
            .find(|&i| self.done[i].bucket.interval_ms == interval)?;
        let done = self.done.remove(at)?;
        Some(OpenBucket::resume(&done.bucket))
    }
}

/// A completed bucket and its start. The start is kept beside the bucket so that the
/// store searches, trims and orders a series' history without reading its buckets, each a
/// separate allocation and so a cache miss (~2,000 series on every maintenance pass).
struct Done {
    start: UnixMs,
    bucket: Arc<Bucket>,
}

impl Done {
    fn new(bucket: Arc<Bucket>) -> Self {
        Self {
            start: bucket.start,
            bucket,
        }
    }
}

// === impl MemoryStore ===

impl MemoryStore {
    pub fn new(settings: StoreSettings, persist: Option<Box<dyn Persist>>) -> Self {
        Self {
            settings,
            series: RwLock::new(SeriesMap::default()),
            persist,
            closed: Mutex::new(Vec::new()),
            rolled_before: AtomicI64::new(UnixMs::MIN),
            late: AtomicBool::new(false),
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
                series.done.push_back(Done::new(Arc::new(bucket)));
            }
        }
        for series in map.values_mut() {
            series.done.make_contiguous().sort_by_key(|b| b.start);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SeriesMap> {
        self.series.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SeriesMap> {
        self.series.read().unwrap_or_else(|e| e.into_inner())
    }

    fn add(
        &self,
        map: &mut SeriesMap,
        key: KeyRef<'_>,
        at: UnixMs,
        sample: &Sample,
        reached: bool,
        out: &mut Vec<Change>,
    ) {
        let interval = self.settings.interval_ms;
        let start = align(at, interval);
        // Pairs feed breaker thresholds, which read their error rates only: they keep no
        // latency histogram (a cache miss per request saved, and 1.1 KB per pair).
        let histogram = !matches!(key, KeyRef::Pair(..));
        // The common case: the series exists and its bucket in progress takes the sample.
        if let Some(open) = map.get_mut(&key).and_then(|s| s.open.as_mut())
            && open.start >= start
        {
            open.add(sample, histogram, reached);
            return;
        }
        let key = key.to_owned();
        let series = map.entry(key.clone()).or_insert_with(|| Series {
            first: start,
            done: VecDeque::new(),
            open: None,
        });
        match &mut series.open {
            Some(open) if open.start >= start => open.add(sample, histogram, reached),
            _ => {
                if let Some(closed) = series.open.take() {
                    self.close(&key, series, closed, out);
                }
                let mut open = series
                    .reopen(start, interval)
                    .unwrap_or_else(|| OpenBucket::new(start, interval));
                open.add(sample, histogram, reached);
                series.open = Some(open);
            }
        }
    }

    fn close(&self, key: &SeriesKey, series: &mut Series, open: OpenBucket, out: &mut Vec<Change>) {
        let bucket = Arc::new(open.snapshot());
        if bucket.start < self.rolled_before.load(Ordering::Relaxed) {
            self.late.store(true, Ordering::Relaxed);
        }
        if self.persist.is_some() {
            out.push(Change::Save(key.clone(), bucket.clone()));
        }
        // Kept in start order (`buckets` searches it). A bucket is closed after the last
        // one but for a request filed more than an interval late (a stalled event loop):
        // only then is its place searched for (this runs for every series once per
        // interval).
        let done = Done::new(bucket);
        if series
            .done
            .back()
            .is_some_and(|last| last.start > done.start)
        {
            let at = series.done.partition_point(|b| b.start <= done.start);
            series.done.insert(at, done);
        } else {
            series.done.push_back(done);
        }
    }
}

impl TrafficStore for MemoryStore {
    fn record(&self, records: &[Record]) {
        self.file(self.write(), records);
    }

    fn try_record(&self, records: &[Record]) -> bool {
        match self.series.try_write() {
            Ok(map) => self.file(map, records),
            Err(std::sync::TryLockError::Poisoned(e)) => self.file(e.into_inner(), records),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        }
        true
    }

    fn maintain(&self, now: UnixMs) {
        let s = self.settings;
        let expire_before = now.saturating_sub(s.retention_ms);
        let rollup_before = align(now.saturating_sub(s.rollup_after_ms), s.rollup_interval_ms);
        let mut out = Vec::new();
        let mut expired = false;
        let mut map = self.write();
        // Under the lock, so no closing bucket is judged against a stale `rolled_before`.
        let previous = self.rolled_before.swap(rollup_before, Ordering::Relaxed);
        let late = self.late.swap(false, Ordering::Relaxed);
        let roll = late || previous != rollup_before;
        // Every fine bucket before `previous` was rolled up by the pass that set it, unless
        // one closed late since: a pass looks from there on, at a series' last few dozen
        // buckets rather than its whole history (~400 at the defaults, a cache miss each).
        // The first pass, and one after a late bucket, look at everything.
        let since = if late { UnixMs::MIN } else { previous };
        // The rolled-up buckets, and the start of the earliest bucket they merged.
        let mut rolled = Vec::new();
        let mut rolled_from = UnixMs::MAX;
        // It runs on a blocking thread and takes milliseconds with thousands of series:
        // it gives the core back between series (the drain skips a held lock, so holding
        // it across a yield delays filing, never a request).
        let mut pacer = Pacer::default();
        for (key, series) in map.iter_mut() {
            pacer.pause_if_due();
            if series.open.as_ref().is_some_and(|o| o.end() <= now)
                && let Some(open) = series.open.take()
            {
                self.close(key, series, open, &mut out);
            }
            while series.done.front().is_some_and(|b| b.start < expire_before) {
                series.done.pop_front();
                expired = true;
            }
            if roll && let Some(from) = self.roll_up(key, series, since, rollup_before, &mut rolled)
            {
                rolled_from = rolled_from.min(from);
            }
        }
        map.retain(|_, series| series.open.is_some() || !series.done.is_empty());
        drop(map);
        if rolled_from < rollup_before && self.persist.is_some() {
            out.push(Change::RollUp {
                from: rolled_from,
                before: rollup_before,
                width: s.rollup_interval_ms,
            });
            out.append(&mut rolled);
        }
        // What expires in memory expires on disk: the store was loaded with the same
        // retention (and `sqlite::open` drops what was already too old).
        if expired {
            out.push(Change::Expire(expire_before));
        }
        self.hand_over(out);
    }

    fn buckets(&self, key: &SeriesKey, from: UnixMs, to: UnixMs) -> Vec<Arc<Bucket>> {
        let map = self.read();
        let Some(series) = map.get(key) else {
            return Vec::new();
        };
        // `done` is in start order, with the starts inline: a binary search reads no bucket.
        let first = series.done.partition_point(|b| b.start < from);
        let mut out: Vec<Arc<Bucket>> = series
            .done
            .range(first..)
            .take_while(|b| b.start < to)
            .map(|b| b.bucket.clone())
            .collect();
        if let Some(open) = &series.open
            && open.start >= from
            && open.start < to
        {
            out.push(Arc::new(open.snapshot()));
        }
        out
    }

    fn series(&self, kind: SeriesKind) -> Vec<(SeriesKey, UnixMs)> {
        let map = self.read();
        map.iter()
            .filter(|(k, _)| k.kind() == kind)
            .map(|(k, s)| (k.clone(), s.first))
            .collect()
    }

    fn flush(&self) {
        let Some(p) = &self.persist else { return };
        let open: Vec<Change> = self
            .read()
            .iter()
            .filter_map(|(key, series)| {
                let open = series.open.as_ref()?;
                Some(Change::Save(key.clone(), Arc::new(open.snapshot())))
            })
            .collect();
        self.hand_over(open);
        p.sync();
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.settings.interval_ms as u64)
    }
}

impl MemoryStore {
    /// Files requests into their series' buckets, under the write lock it is given.
    fn file(&self, mut map: std::sync::RwLockWriteGuard<'_, SeriesMap>, records: &[Record]) {
        let mut out = Vec::new();
        for group in records.chunks(READ_AHEAD) {
            read_ahead(&map, group);
            self.file_group(&mut map, group, &mut out);
        }
        drop(map);
        if !out.is_empty() {
            self.closed().append(&mut out);
        }
    }

    fn file_group(&self, map: &mut SeriesMap, records: &[Record], out: &mut Vec<Change>) {
        for r in records {
            let reached = r.backend.is_some();
            let route = KeyRef::Route(&r.route);
            self.add(map, route, r.at, &r.sample, reached, out);
            if let Some(b) = &r.backend {
                self.add(map, KeyRef::Backend(b), r.at, &r.sample, true, out);
                if r.pair {
                    let pair = KeyRef::Pair(&r.route, b);
                    self.add(map, pair, r.at, &r.sample, true, out);
                }
            }
        }
    }

    /// Passes what `maintain` or `flush` changed, and what `record` closed since, to
    /// persistence, outside the lock.
    fn hand_over(&self, mut changes: Vec<Change>) {
        let Some(p) = &self.persist else { return };
        let mut closed = std::mem::take(&mut *self.closed());
        closed.append(&mut changes);
        if !closed.is_empty() {
            p.write(closed);
        }
    }

    fn closed(&self) -> std::sync::MutexGuard<'_, Vec<Change>> {
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Merges full-resolution buckets that start in `[since, before)` into
    /// `rollup_interval` buckets (`since` is a roll-up boundary: nothing before it is
    /// looked at); the rolled-up ones are to be saved (`saves`, when persisting). Returns
    /// the start of the earliest bucket merged, if any was.
    fn roll_up(
        &self,
        key: &SeriesKey,
        series: &mut Series,
        since: UnixMs,
        before: UnixMs,
        saves: &mut Vec<Change>,
    ) -> Option<UnixMs> {
        let width = self.settings.rollup_interval_ms;
        if width <= self.settings.interval_ms {
            return None;
        }
        // Only the buckets that start in `[since, before)` are read (each is a cache miss),
        // found by binary search; those before stay as they are, those after are not due.
        // What is rolled up from them starts in the same range (`before` is aligned to
        // `width`, and so is `since` unless it is `MIN`), so the order holds across both
        // seams.
        let first = series.done.partition_point(|b| b.start < since);
        let end = series.done.partition_point(|b| b.start < before);
        let fine = |b: &Bucket| b.interval_ms < width;
        let earliest = series
            .done
            .range(first..end.max(first))
            .find(|d| fine(&d.bucket))?
            .start;
        let after = series.done.split_off(end);
        let due: Vec<Done> = series.done.drain(first..).collect();
        let mut kept = std::mem::take(&mut series.done);
        let mut rolled: Vec<Bucket> = Vec::new();
        for d in due {
            if !fine(&d.bucket) {
                kept.push_back(d);
                continue;
            }
            let b = d.bucket;
            let start = align(b.start, width);
            match rolled.last_mut() {
                Some(r) if r.start == start => r.absorb(&b),
                _ => {
                    // A coarse bucket of this span may already exist from an earlier pass
                    // (it starts where the new one does: saving the new one replaces it).
                    let mut r = match kept.back() {
                        Some(k) if k.start == start && k.bucket.interval_ms == width => kept
                            .pop_back()
                            .map(|k| Arc::unwrap_or_clone(k.bucket))
                            .unwrap_or_default(),
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
            let r = Arc::new(r);
            if self.persist.is_some() {
                saves.push(Change::Save(key.clone(), r.clone()));
            }
            kept.push_back(Done::new(r));
        }
        if let Some(rebuilt) = kept.make_contiguous().get_mut(first..) {
            rebuilt.sort_by_key(|b| b.start);
        }
        kept.extend(after);
        series.done = kept;
        Some(earliest)
    }
}

#[cfg(test)]
mod tests;
