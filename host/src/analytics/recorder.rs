//! The traffic recorder: the request path hands it one event per finished request; it
//! puts the event on a bounded queue without ever waiting (a full queue drops the event
//! and counts it in `gateway_traffic_events_dropped_total`), and a background task drains
//! the queue into the store in batches.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
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

/// Drains the queue into the store, and every `maintain_every` closes finished buckets.
/// On `stop` it empties the queue and saves the buckets in progress.
pub async fn drain(
    mut rx: mpsc::Receiver<Record>,
    store: Arc<dyn TrafficStore>,
    maintain_every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(maintain_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                store.record(&batch);
                batch.clear();
            }
            _ = tick.tick() => store.maintain(now_ms()),
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
    while let Ok(r) = rx.try_recv() {
        batch.push(r);
    }
    store.record(&batch);
    store.maintain(now_ms());
    store.flush();
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

    #[tokio::test]
    async fn the_drain_task_files_events_and_flushes_on_stop() {
        let store: Arc<dyn TrafficStore> = Arc::new(MemoryStore::new(
            StoreSettings {
                interval_ms: 1000,
                retention_ms: 3_600_000,
                rollup_after_ms: 3_600_000,
                rollup_interval_ms: 60_000,
            },
            None,
        ));
        let (rec, rx) = recorder(100, IntCounter::new("d", "d").unwrap());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(drain(rx, store.clone(), Duration::from_secs(3600), stop_rx));
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
}
