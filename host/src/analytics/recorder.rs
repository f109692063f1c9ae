//! The traffic recorder: the request path hands it one event per finished request; it
//! puts the event on a bounded queue without ever waiting (a full queue drops the event
//! and counts it in `gateway_traffic_events_dropped_total`), and a background task drains
//! the queue into the store in batches, every `analytics.drain_interval`.
//!
//! The drain runs on a timer rather than waking for each event: woken per event, the task
//! was scheduled and polled once per proxied request under load, ~3.6% of the gateway's
//! user time (docs/benchmarks.md); on a 10 ms timer it files hundreds of events per wake.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, IntCounter};
use tokio::sync::{mpsc, watch};

use super::bucket::{Sample, UnixMs};
use super::store::{Record, TrafficStore};
use crate::traffic::{TrafficEvent, TrafficSink};

/// Events taken off the queue per store write.
const BATCH: usize = 1024;

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
    tx: mpsc::Sender<Record>,
    dropped: IntCounter,
}

/// A recorder and the queue it fills.
pub fn recorder(capacity: usize, dropped: IntCounter) -> (Recorder, mpsc::Receiver<Record>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (Recorder { tx, dropped }, rx)
}

impl TrafficSink for Recorder {
    fn record(&self, e: TrafficEvent) {
        let record = Record {
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
        if self.tx.try_send(record).is_err() {
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
/// every `every.maintain` (after filing what is queued). On `stop`, or once every sender is
/// gone, it files what is left and saves the buckets in progress.
pub async fn drain(
    mut rx: mpsc::Receiver<Record>,
    store: Arc<dyn TrafficStore>,
    every: Every,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut drain_tick = tokio::time::interval(every.drain);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintain_tick = tokio::time::interval(every.maintain);
    maintain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let open = tokio::select! {
            _ = drain_tick.tick() => file_queued(&mut rx, &mut batch, &*store),
            _ = maintain_tick.tick() => {
                let open = file_queued(&mut rx, &mut batch, &*store);
                let timer = every.maintain_time.start_timer();
                store.maintain(now_ms());
                timer.observe_duration();
                open
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => false,
        };
        if !open {
            break;
        }
    }
    file_queued(&mut rx, &mut batch, &*store);
    store.maintain(now_ms());
    store.flush();
}

/// Files everything queued, `BATCH` events per store write. False once the queue is closed
/// (every sender gone).
fn file_queued(
    rx: &mut mpsc::Receiver<Record>,
    batch: &mut Vec<Record>,
    store: &dyn TrafficStore,
) -> bool {
    loop {
        let open = loop {
            match rx.try_recv() {
                Ok(r) => {
                    batch.push(r);
                    if batch.len() == BATCH {
                        break true;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break true,
                Err(mpsc::error::TryRecvError::Disconnected) => break false,
            }
        };
        let full = batch.len() == BATCH;
        if !batch.is_empty() {
            store.record(batch);
            batch.clear();
        }
        if !(open && full) {
            return open;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::store::{MemoryStore, SeriesKey, StoreSettings};
    use std::net::{IpAddr, Ipv4Addr};

    fn event(at: SystemTime, status: u16) -> TrafficEvent {
        TrafficEvent {
            route: "/a".into(),
            backend: Some("http://b".into()),
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
        let (rec, mut rx) = recorder(2, dropped.clone());
        for _ in 0..5 {
            rec.record(event(SystemTime::now(), 200));
        }
        assert_eq!(dropped.get(), 3);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
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
            rec.record(event(SystemTime::now(), 200));
            rec.record(event(SystemTime::now(), 200));
            filed(&store, 2).await;
            // The first maintenance pass runs at once, and is timed.
            assert!(maintained.get_sample_count() >= 1);
            task.abort();
        }
    }
}
