//! The traffic recorder: the request path hands it one event per finished request; it
//! puts the event on a bounded queue without ever waiting (a full queue drops the event
//! and counts it in `gateway_traffic_events_dropped_total`), and a background task drains
//! the queue into the store in batches, every `analytics.drain_interval`.
//!
//! The drain runs on a timer rather than waking for each event: woken per event, the task
//! was scheduled and polled once per proxied request under load, ~3.6% of the gateway's
//! user time (docs/benchmarks.md); on a 10 ms timer it files hundreds of events per wake.
//!
//! The queue is a vector behind a mutex that the drain swaps for an empty one: a request
//! takes the lock once to push (two atomic operations), where tokio's channel cost about a
//! dozen per event between sending and receiving, each one a pipeline stall (atomic
//! read-modify-writes were ~118 per proxied request in all, docs/benchmarks.md). The two
//! vectors take turns, so the memory the events are written to stays in cache; the lock
//! is held for a push or a swap, never across work.
//!
//! The drain task runs on the event loop, and never waits there for the store: it files
//! only when the store's lock is free at once (otherwise the events wait for the next
//! tick), and the maintenance pass, which holds the lock for milliseconds with thousands
//! of series (tens of them on the passes that roll up), runs on a blocking thread.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, IntCounter};
use tokio::sync::watch;

use super::bucket::{Sample, UnixMs};
use super::store::{Record, TrafficStore};
use crate::traffic::{TrafficEvent, TrafficSink};

/// Events taken off the queue per store write. The drain files on the event loop and
/// yields to it after each slice: with a thousand routes an event costs a few hundred
/// nanoseconds of cache misses, and a 10 ms tick at ~90k requests/s files ~900 of them.
/// In one piece that held every request in flight for that long, a hundred times a
/// second: enough requests to lift the p99 (docs/benchmarks.md).
const SLICE: usize = 64;

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> UnixMs {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn now_ms() -> UnixMs {
    unix_ms(SystemTime::now())
}

/// The sending side, installed as the gateway's traffic sink.
pub struct Recorder {
    queue: Arc<Queue>,
    dropped: IntCounter,
}

/// The events waiting for the drain, at most `capacity` of them.
pub struct Queue {
    events: Mutex<Vec<Record>>,
    capacity: usize,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the event unless the queue is full; false when it was dropped.
    fn push(&self, record: Record) -> bool {
        let mut events = self.lock();
        if events.len() >= self.capacity {
            return false;
        }
        events.push(record);
        true
    }

    /// Moves every queued event to the end of `batch`.
    pub fn take_all(&self, batch: &mut Vec<Record>) {
        let mut events = self.lock();
        if batch.is_empty() {
            // The common case: the vectors trade places, nothing is copied.
            std::mem::swap(&mut *events, batch);
        } else {
            batch.append(&mut events);
        }
    }
}

/// A recorder and the queue it fills.
pub fn recorder(capacity: usize, dropped: IntCounter) -> (Recorder, Arc<Queue>) {
    let queue = Arc::new(Queue {
        events: Mutex::new(Vec::new()),
        capacity: capacity.max(1),
    });
    (
        Recorder {
            queue: queue.clone(),
            dropped,
        },
        queue,
    )
}

impl TrafficSink for Recorder {
    fn record(&self, e: TrafficEvent) {
        let record = Record {
            pair: e.several_backends,
            route: e.route,
            backend: e.backend,
            at: unix_ms(e.at),
            sample: Sample {
                error: e.status >= 500,
                latency_us: u64::try_from(e.latency.as_micros()).unwrap_or(u64::MAX),
                bytes_in: e.bytes_in,
                bytes_out: e.bytes_out,
            },
        };
        if !self.queue.push(record) {
            self.dropped.inc();
        }
    }
}

/// How often [`drain`] files the queued events, and closes finished buckets.
#[derive(Debug, Clone)]
pub struct Every {
    pub drain: Duration,
    pub maintain: Duration,
    /// Observes how long each maintenance pass takes.
    pub maintain_time: Histogram,
}

/// Files the queued events into the store every `every.drain`, and closes finished buckets
/// every `every.maintain` (after filing what is queued, both on a blocking thread). On
/// `stop`, or once the recorder is gone, it files what is left and saves the buckets in
/// progress.
pub async fn drain(
    queue: Arc<Queue>,
    store: Arc<dyn TrafficStore>,
    every: Every,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(1024);
    let mut drain_tick = tokio::time::interval(every.drain);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintain_tick = tokio::time::interval(every.maintain);
    maintain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let open = tokio::select! {
            _ = drain_tick.tick() => file_queued(&queue, &mut batch, &*store).await,
            _ = maintain_tick.tick() => {
                // Everything queued is taken here (a swap under the queue's lock) and filed,
                // then the finished buckets closed, on a blocking thread: the drain waits
                // for it, the event loop does not.
                let open = take_queued(&queue, &mut batch);
                let records = std::mem::take(&mut batch);
                let store = store.clone();
                let timer = every.maintain_time.clone();
                let pass = crate::pace::spawn_background(move || {
                    store.record(&records);
                    let started = std::time::Instant::now();
                    store.maintain(now_ms());
                    timer.observe(started.elapsed().as_secs_f64());
                    records
                });
                match pass.await {
                    Ok(mut records) => {
                        records.clear();
                        batch = records;
                    }
                    // The pass panicked: what it held is lost, the drain goes on.
                    Err(e) => tracing::error!(error = %e, "analytics maintenance pass failed"),
                }
                open
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => false,
        };
        if !open {
            break;
        }
    }
    take_queued(&queue, &mut batch);
    store.record(&batch);
    store.maintain(now_ms());
    store.flush();
}

/// Moves every queued event into `batch`. False once the queue is closed.
fn take_queued(queue: &Arc<Queue>, batch: &mut Vec<Record>) -> bool {
    queue.take_all(batch);
    is_open(queue)
}

/// Whether the recorder still exists: once it is gone only the drain holds the queue.
fn is_open(queue: &Arc<Queue>) -> bool {
    Arc::strong_count(queue) > 1
}

/// Files everything queued, `SLICE` events per store write with a yield to the event loop
/// after each, while the store can be written without waiting; when it cannot, what is
/// left stays in `batch` for the next tick. While `batch` holds a queue's worth the queue
/// is left alone, so a store that stays busy makes the queue fill and drop (counted)
/// rather than `batch` grow. False once the queue is closed (the recorder is gone).
async fn file_queued(
    queue: &Arc<Queue>,
    batch: &mut Vec<Record>,
    store: &dyn TrafficStore,
) -> bool {
    if batch.len() < queue.capacity {
        queue.take_all(batch);
    }
    let mut filed = 0;
    while filed < batch.len() {
        let slice = &batch[filed..batch.len().min(filed + SLICE)];
        if !store.try_record(slice) {
            break;
        }
        filed += slice.len();
        if filed < batch.len() {
            tokio::task::yield_now().await;
        }
    }
    batch.drain(..filed);
    is_open(queue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::bucket::Bucket;
    use crate::analytics::store::{MemoryStore, SeriesKey, SeriesKind, StoreSettings};
    use std::net::{IpAddr, Ipv4Addr};

    fn event(at: SystemTime, status: u16) -> TrafficEvent {
        TrafficEvent {
            route: "/a".into(),
            backend: Some("http://b".into()),
            several_backends: true,
            method: http::Method::GET,
            status,
            latency: Duration::from_millis(3),
            bytes_in: 1,
            bytes_out: 2,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            at,
            completed: true,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let (rec, queue) = recorder(2, dropped.clone());
        for _ in 0..5 {
            rec.record(event(SystemTime::now(), 200));
        }
        assert_eq!(dropped.get(), 3);
        let mut batch = Vec::new();
        assert!(take_queued(&queue, &mut batch));
        assert_eq!(batch.len(), 2);
        // Taken, the queue has room again; what was taken stays in front.
        rec.record(event(SystemTime::now(), 503));
        assert!(take_queued(&queue, &mut batch));
        assert_eq!(batch.len(), 3);
        assert!(batch[2].sample.error);
        assert_eq!(dropped.get(), 3);
        drop(rec);
        assert!(
            !take_queued(&queue, &mut batch),
            "closed once the recorder is gone"
        );
    }

    #[tokio::test]
    async fn a_store_that_stays_busy_fills_the_queue_instead_of_the_batch() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let (rec, queue) = recorder(2, dropped.clone());
        let store = Contended::new(usize::MAX);
        let mut batch = Vec::new();
        let t = SystemTime::now();
        for round in 0..3 {
            rec.record(event(t, 200));
            rec.record(event(t, 200));
            assert!(file_queued(&queue, &mut batch, &*store).await);
            // Held for the next tick, never more than a queue's worth.
            assert_eq!(batch.len(), 2, "round {round}");
        }
        // The queue took the second round's two and refused the third's.
        assert_eq!(queue.lock().len(), 2);
        assert_eq!(dropped.get(), 2);
    }

    fn timer() -> Histogram {
        Histogram::with_opts(prometheus::HistogramOpts::new("m", "m")).unwrap()
    }

    /// An in-memory store with buckets `interval_ms` wide.
    fn memory_store(interval_ms: UnixMs) -> Arc<dyn TrafficStore> {
        Arc::new(MemoryStore::new(
            StoreSettings {
                interval_ms,
                retention_ms: 3_600_000,
                rollup_after_ms: 3_600_000,
                rollup_interval_ms: 60_000,
            },
            None,
        ))
    }

    #[tokio::test]
    async fn the_drain_task_files_events_and_flushes_on_stop() {
        let store = memory_store(1000);
        let (rec, rx) = recorder(100, IntCounter::new("d", "d").unwrap());
        let (stop_tx, stop_rx) = watch::channel(false);
        let every = Every {
            drain: Duration::from_secs(3600),
            maintain: Duration::from_secs(3600),
            maintain_time: timer(),
        };
        let task = tokio::spawn(drain(rx, store.clone(), every, stop_rx));
        let t = SystemTime::now();
        rec.record(event(t, 200));
        rec.record(event(t, 503));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        let b = store.buckets(&SeriesKey::Route("/a".into()), 0, i64::MAX);
        let start = crate::analytics::bucket::align(unix_ms(t), 1000);
        assert_eq!((b[0].start, b[0].requests, b[0].errors), (start, 2, 1));
        assert_eq!(b[0].latency_total_us, 6_000);
    }

    /// Polls `store` until the route's first bucket holds `n` requests (fails after 5 s).
    async fn filed(store: &Arc<dyn TrafficStore>, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let b = store.buckets(&SeriesKey::Route("/a".into()), 0, i64::MAX);
            if b.first().is_some_and(|b| b.requests == n) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "not filed: {b:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A store that is busy (as if another thread held it) for its first `busy` attempts
    /// to file without waiting, and notes the threads its maintenance passes run on, and
    /// each write's size with the value `elsewhere` had then (another task counts there).
    struct Contended {
        inner: Arc<dyn TrafficStore>,
        busy: std::sync::atomic::AtomicUsize,
        maintained_on: std::sync::Mutex<Vec<std::thread::ThreadId>>,
        elsewhere: std::sync::atomic::AtomicU64,
        writes: std::sync::Mutex<Vec<(usize, u64)>>,
    }

    impl Contended {
        fn new(busy: usize) -> Arc<Self> {
            Arc::new(Self {
                inner: memory_store(60_000),
                busy: busy.into(),
                maintained_on: Default::default(),
                elsewhere: Default::default(),
                writes: Default::default(),
            })
        }
    }

    /// The event loop serves other tasks (requests) between slices of a large batch, and
    /// files the whole batch within the tick.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_batch_is_filed_in_slices_with_the_event_loop_served_between() {
        use std::sync::atomic::Ordering;
        let (rec, queue) = recorder(10_000, IntCounter::new("d", "d").unwrap());
        let store = Contended::new(0);
        let t = SystemTime::now();
        for _ in 0..(5 * SLICE + 3) {
            rec.record(event(t, 200));
        }
        let other = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    store.elsewhere.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };
        tokio::task::yield_now().await; // the other task is running
        let mut batch = Vec::new();
        assert!(file_queued(&queue, &mut batch, &*store).await);
        other.abort();
        assert!(batch.is_empty(), "everything filed in one tick");
        let writes = store.writes.lock().unwrap().clone();
        let sizes: Vec<usize> = writes.iter().map(|w| w.0).collect();
        assert_eq!(sizes, [SLICE, SLICE, SLICE, SLICE, SLICE, 3]);
        assert!(
            writes.windows(2).all(|w| w[1].1 > w[0].1),
            "the other task ran between every two slices: {writes:?}"
        );
        let b = store.buckets(&SeriesKey::Route("/a".into()), 0, i64::MAX);
        assert_eq!(b[0].requests, 5 * SLICE as u64 + 3);
    }

    /// Waits until `timer` has timed `n` maintenance passes (fails after 5 s).
    async fn passes(timer: &Histogram, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while timer.get_sample_count() < n {
            assert!(std::time::Instant::now() < deadline, "no maintenance pass");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    impl TrafficStore for Contended {
        fn record(&self, records: &[Record]) {
            self.inner.record(records)
        }
        fn try_record(&self, records: &[Record]) -> bool {
            use std::sync::atomic::Ordering;
            let was = self.busy.load(Ordering::Relaxed);
            if was > 0 {
                self.busy.store(was - 1, Ordering::Relaxed);
                return false;
            }
            if let Ok(mut w) = self.writes.lock() {
                w.push((records.len(), self.elsewhere.load(Ordering::Relaxed)));
            }
            self.inner.try_record(records)
        }
        fn maintain(&self, now: UnixMs) {
            if let Ok(mut t) = self.maintained_on.lock() {
                t.push(std::thread::current().id());
            }
            self.inner.maintain(now)
        }
        fn buckets(&self, key: &SeriesKey, from: UnixMs, to: UnixMs) -> Vec<Arc<Bucket>> {
            self.inner.buckets(key, from, to)
        }
        fn series(&self, kind: SeriesKind) -> Vec<(SeriesKey, UnixMs)> {
            self.inner.series(kind)
        }
        fn flush(&self) {
            self.inner.flush()
        }
        fn interval(&self) -> Duration {
            self.inner.interval()
        }
    }

    #[tokio::test]
    async fn a_busy_store_keeps_the_events_for_the_next_tick_and_loses_none() {
        let store = Contended::new(3);
        let (rec, rx) = recorder(100, IntCounter::new("d", "d").unwrap());
        let (_stop_tx, stop_rx) = watch::channel(false);
        let every = Every {
            drain: Duration::from_millis(5),
            maintain: Duration::from_secs(3600),
            maintain_time: timer(),
        };
        let maintained = every.maintain_time.clone();
        let dyn_store: Arc<dyn TrafficStore> = store.clone();
        let task = tokio::spawn(drain(rx, dyn_store.clone(), every, stop_rx));
        // After the first (immediate) maintenance pass, only drain ticks file.
        passes(&maintained, 1).await;
        for _ in 0..3 {
            rec.record(event(SystemTime::now(), 200));
        }
        // Exactly three (a batch filed twice would pass over it): every busy attempt was
        // turned away and its batch kept for a later tick.
        filed(&dyn_store, 3).await;
        assert_eq!(store.busy.load(std::sync::atomic::Ordering::Relaxed), 0);
        task.abort();
    }

    #[tokio::test]
    async fn maintenance_runs_off_the_event_loop() {
        let store = Contended::new(0);
        let (_rec, rx) = recorder(100, IntCounter::new("d", "d").unwrap());
        let (_stop_tx, stop_rx) = watch::channel(false);
        let every = Every {
            drain: Duration::from_secs(3600),
            maintain: Duration::from_millis(5),
            maintain_time: timer(),
        };
        let maintained = every.maintain_time.clone();
        let task = tokio::spawn(drain(rx, store.clone(), every, stop_rx));
        passes(&maintained, 2).await;
        task.abort();
        // The test's runtime is single-threaded: the drain task runs on this thread.
        let here = std::thread::current().id();
        let threads = store.maintained_on.lock().unwrap().clone();
        assert!(threads.len() >= 2);
        assert!(
            threads.iter().all(|t| *t != here),
            "{threads:?} vs {here:?}"
        );
    }

    #[tokio::test]
    async fn queued_events_are_filed_on_the_drain_tick_and_before_buckets_close() {
        for every in [
            // Filed by the drain tick, long before any maintenance.
            Every {
                drain: Duration::from_millis(20),
                maintain: Duration::from_secs(3600),
                maintain_time: timer(),
            },
            // Filed by maintenance, which files what is queued before closing buckets.
            Every {
                drain: Duration::from_secs(3600),
                maintain: Duration::from_millis(20),
                maintain_time: timer(),
            },
        ] {
            let store = memory_store(60_000);
            let (rec, rx) = recorder(100, IntCounter::new("d", "d").unwrap());
            let (_stop_tx, stop_rx) = watch::channel(false);
            let maintained = every.maintain_time.clone();
            let task = tokio::spawn(drain(rx, store.clone(), every, stop_rx));
            // After the first (immediate) ticks: these wait for the next one.
            tokio::task::yield_now().await;
            // One time for both: two calls to now() could fall either side of a minute.
            let now = SystemTime::now();
            rec.record(event(now, 200));
            rec.record(event(now, 200));
            filed(&store, 2).await;
            // The first maintenance pass runs at once (in the first case the next is an
            // hour away), and is timed. Waited for: the pass that files the events may be
            // that one, and the events show before it has timed itself.
            passes(&maintained, 1).await;
            task.abort();
        }
    }
}
