//! Anomalies as events with a start and an end. The analyzer reports, on every tick, which
//! metrics of each series are anomalous; a metric that was not anomalous on the previous
//! tick *starts* an anomaly (one log line, one count, one broadcast, one history entry),
//! one that stays anomalous only updates that entry, and one that has been normal for the
//! whole `quiet_period` *ends* it (dated from its first normal bucket). A sustained spike is
//! therefore one event, not one per tick, and one that flickers around the threshold does
//! not start a new event each time it comes back.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use super::bucket::UnixMs;
use super::store::SeriesKey;
use crate::metrics::Metrics;
use crate::policy::types::{Finding, Metric};

/// Most ended anomalies kept, whatever their age.
const MAX_HISTORY: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Arc<str>>,
    pub metric: Metric,
    /// When it was first seen (ms since the Unix epoch).
    pub started_ms: UnixMs,
    /// When it was last seen.
    pub last_seen_ms: UnixMs,
    /// When it ended; `None` while it lasts.
    pub ended_ms: Option<UnixMs>,
    /// The latest anomalous value, and the baseline it was compared with.
    pub current: f64,
    pub mean: f64,
    pub stddev: f64,
    pub z_score: f64,
    /// The highest score while it lasted.
    pub peak_z_score: f64,
    /// Ticks on which it was seen.
    pub ticks: u32,
    /// Since when it has looked normal (it ends once that lasts `quiet_period`).
    #[serde(skip)]
    quiet_since: Option<UnixMs>,
}

/// What subscribers of the anomaly channel receive.
#[derive(Debug, Clone)]
pub enum AnomalyNotice {
    Started(Anomaly),
    Ended(Anomaly),
}

/// A map keyed by series, hashed fast (the analyzer looks every series up on every tick).
pub type BySeries<V> = hashbrown::HashMap<SeriesKey, V, foldhash::fast::RandomState>;

/// Active anomalies and the history of ended ones.
pub struct AnomalyLog {
    /// By series: each series' ongoing anomalies, one per metric at most. A series with
    /// none has no entry, so a tick's evaluation of a normal series is one lookup.
    active: BySeries<Vec<Anomaly>>,
    ended: VecDeque<Anomaly>,
    next_id: u64,
    history_ms: i64,
    quiet_ms: i64,
    tx: broadcast::Sender<AnomalyNotice>,
    metrics: Metrics,
}

/// Which anomalies to list.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub route: Option<String>,
    pub backend: Option<String>,
    pub metric: Option<Metric>,
    /// Only those still going on, or that ended at or after this time.
    pub from: Option<UnixMs>,
    /// Only those that started before this time.
    pub to: Option<UnixMs>,
    pub active_only: bool,
}

impl AnomalyLog {
    /// `history_ms`: how long ended anomalies are kept; `quiet_ms`: how long a metric must
    /// look normal before its anomaly ends.
    pub fn new(history_ms: i64, quiet_ms: i64, metrics: Metrics) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            active: BySeries::default(),
            ended: VecDeque::new(),
            next_id: 1,
            history_ms,
            quiet_ms,
            tx,
            metrics,
        }
    }

    /// A receiver of every start and end from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AnomalyNotice> {
        self.tx.subscribe()
    }

    /// Records one evaluation of a series: `findings` are its anomalous metrics in the
    /// bucket starting at `now`.
    pub fn observe(&mut self, key: &SeriesKey, findings: &[Finding], now: UnixMs) {
        if matches!(key, SeriesKey::Pair(..)) {
            return; // route x backend pairs only set breaker thresholds
        }
        if findings.is_empty() && !self.active.contains_key(key) {
            return self.expire(now); // the common case: a normal series stays normal
        }
        let mut started = Vec::new();
        let mut ended = Vec::new();
        let list = self.active.entry(key.clone()).or_default();
        for f in findings {
            if let Some(a) = list.iter_mut().find(|a| a.metric == f.metric) {
                a.last_seen_ms = now;
                a.current = f.current;
                a.mean = f.mean;
                a.stddev = f.stddev;
                a.z_score = f.score;
                a.peak_z_score = a.peak_z_score.max(f.score);
                a.ticks += 1;
                a.quiet_since = None;
                continue;
            }
            let (route, backend) = match key {
                SeriesKey::Route(n) => (Some(n.clone()), None),
                SeriesKey::Backend(n) | SeriesKey::Pair(_, n) => (None, Some(n.clone())),
            };
            let a = Anomaly {
                id: self.next_id,
                route,
                backend,
                metric: f.metric,
                started_ms: now,
                last_seen_ms: now,
                ended_ms: None,
                current: f.current,
                mean: f.mean,
                stddev: f.stddev,
                z_score: f.score,
                peak_z_score: f.score,
                ticks: 1,
                quiet_since: None,
            };
            self.next_id += 1;
            started.push(a.clone());
            list.push(a);
        }
        // Those not seen this tick: ended once normal for the whole quiet period.
        let quiet_ms = self.quiet_ms;
        list.retain_mut(|a| {
            if findings.iter().any(|f| f.metric == a.metric) {
                return true;
            }
            let since = *a.quiet_since.get_or_insert(now);
            if now - since < quiet_ms {
                return true;
            }
            a.ended_ms = Some(since);
            ended.push(a.clone());
            false
        });
        if list.is_empty() {
            self.active.remove(key);
        }
        for a in &started {
            self.announce_start(key, a);
        }
        for a in ended {
            self.announce_end(key, &a);
            self.ended.push_back(a);
        }
        self.expire(now);
    }

    /// Ends anomalies of series that were not evaluated (gone from the store) and forgets
    /// ended ones older than the history.
    pub fn end_unseen(&mut self, evaluated: &dyn Fn(&SeriesKey) -> bool, now: UnixMs) {
        let gone: Vec<SeriesKey> = self
            .active
            .keys()
            .filter(|k| !evaluated(k))
            .cloned()
            .collect();
        for k in gone {
            for mut a in self.active.remove(&k).unwrap_or_default() {
                a.ended_ms = Some(now);
                self.announce_end(&k, &a);
                self.ended.push_back(a);
            }
        }
        self.expire(now);
    }

    fn expire(&mut self, now: UnixMs) {
        let cutoff = now - self.history_ms;
        while self
            .ended
            .front()
            .is_some_and(|a| a.ended_ms.unwrap_or(now) < cutoff)
            || self.ended.len() > MAX_HISTORY
        {
            self.ended.pop_front();
        }
    }

    /// Anomalies matching `filter`, newest first.
    pub fn list(&self, filter: &Filter) -> Vec<Anomaly> {
        let mut out: Vec<Anomaly> = self
            .active
            .values()
            .flatten()
            .chain(
                if filter.active_only {
                    None
                } else {
                    Some(self.ended.iter())
                }
                .into_iter()
                .flatten(),
            )
            .filter(|a| {
                filter
                    .route
                    .as_deref()
                    .is_none_or(|r| a.route.as_deref() == Some(r))
                    && filter
                        .backend
                        .as_deref()
                        .is_none_or(|b| a.backend.as_deref() == Some(b))
                    && filter.metric.is_none_or(|m| a.metric == m)
                    && filter
                        .from
                        .is_none_or(|f| a.ended_ms.is_none_or(|e| e >= f))
                    && filter.to.is_none_or(|t| a.started_ms < t)
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
        out
    }

    /// When the earliest ongoing anomaly of each series with one started: one map for a
    /// whole tick, looked up per series, rather than a lookup per metric per series.
    pub fn ongoing_since(&self) -> BySeries<UnixMs> {
        // Sized at once: collected from a filter, the map grew and rehashed several times.
        let mut out = BySeries::with_capacity_and_hasher(self.active.len(), Default::default());
        for (key, list) in &self.active {
            if let Some(since) = list.iter().map(|a| a.started_ms).min() {
                out.insert(key.clone(), since);
            }
        }
        out
    }

    /// Anomalies of a route that started at or after `since`.
    pub fn count_for_route(&self, route: &str, since: UnixMs) -> usize {
        self.active
            .values()
            .flatten()
            .chain(self.ended.iter())
            .filter(|a| a.route.as_deref() == Some(route) && a.started_ms >= since)
            .count()
    }

    fn announce_start(&self, key: &SeriesKey, a: &Anomaly) {
        let metric = a.metric.as_str();
        match key {
            SeriesKey::Route(name) => {
                self.metrics
                    .anomalies
                    .with_label_values(&[&**name, metric])
                    .inc();
                tracing::warn!(
                    "type" = "anomaly",
                    route = &**name,
                    metric,
                    current = a.current,
                    mean = a.mean,
                    stddev = a.stddev,
                    z_score = a.z_score,
                    id = a.id,
                    "anomaly detected"
                );
            }
            SeriesKey::Backend(name) | SeriesKey::Pair(_, name) => {
                self.metrics
                    .backend_anomalies
                    .with_label_values(&[&**name, metric])
                    .inc();
                tracing::warn!(
                    "type" = "anomaly",
                    backend = &**name,
                    metric,
                    current = a.current,
                    mean = a.mean,
                    stddev = a.stddev,
                    z_score = a.z_score,
                    id = a.id,
                    "anomaly detected"
                );
            }
        }
        let _ = self.tx.send(AnomalyNotice::Started(a.clone()));
    }

    fn announce_end(&self, key: &SeriesKey, a: &Anomaly) {
        let duration_ms = a.ended_ms.unwrap_or(a.last_seen_ms) - a.started_ms;
        let (field, name) = match key {
            SeriesKey::Route(n) => ("route", n),
            SeriesKey::Backend(n) | SeriesKey::Pair(_, n) => ("backend", n),
        };
        tracing::info!(
            "type" = "anomaly_resolved",
            series = field,
            name = &**name,
            metric = a.metric.as_str(),
            peak_z_score = a.peak_z_score,
            duration_ms,
            id = a.id,
            "anomaly resolved"
        );
        let _ = self.tx.send(AnomalyNotice::Ended(a.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(metric: Metric, score: f64) -> Finding {
        Finding {
            metric,
            current: 500.0,
            mean: 100.0,
            stddev: 100.0,
            score,
        }
    }

    fn route(n: &str) -> SeriesKey {
        SeriesKey::Route(n.into())
    }

    fn count(m: &Metrics, r: &str, metric: &str) -> u64 {
        m.anomalies.with_label_values(&[r, metric]).get()
    }

    #[test]
    fn a_sustained_anomaly_is_one_event_with_a_start_and_an_end() {
        let metrics = Metrics::new();
        let mut log = AnomalyLog::new(86_400_000, 0, metrics.clone());
        let mut rx = log.subscribe();
        log.observe(&route("/a"), &[finding(Metric::RequestRate, 4.0)], 1000);
        log.observe(&route("/a"), &[finding(Metric::RequestRate, 6.0)], 2000);
        log.observe(&route("/a"), &[finding(Metric::RequestRate, 5.0)], 3000);
        assert_eq!(count(&metrics, "/a", "request_rate"), 1, "counted once");
        let active = log.list(&Filter {
            active_only: true,
            ..Default::default()
        });
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].ticks, active[0].peak_z_score, active[0].z_score),
            (3, 6.0, 5.0)
        );

        log.observe(&route("/a"), &[], 4000);
        let all = log.list(&Filter::default());
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].started_ms, all[0].last_seen_ms, all[0].ended_ms),
            (1000, 3000, Some(4000))
        );
        assert!(matches!(rx.try_recv(), Ok(AnomalyNotice::Started(a)) if a.id == 1));
        assert!(matches!(rx.try_recv(), Ok(AnomalyNotice::Ended(a)) if a.ended_ms == Some(4000)));
        assert!(rx.try_recv().is_err(), "nothing for the ticks in between");

        // A new spike later is a new event.
        log.observe(&route("/a"), &[finding(Metric::RequestRate, 4.0)], 5000);
        assert_eq!(count(&metrics, "/a", "request_rate"), 2);
        assert_eq!(log.count_for_route("/a", 0), 2);
        assert_eq!(log.count_for_route("/a", 4500), 1);
    }

    #[test]
    fn metrics_and_series_are_tracked_separately() {
        let metrics = Metrics::new();
        let mut log = AnomalyLog::new(86_400_000, 0, metrics.clone());
        log.observe(
            &route("/a"),
            &[
                finding(Metric::RequestRate, 4.0),
                finding(Metric::LatencyP99, 9.0),
            ],
            1000,
        );
        log.observe(
            &SeriesKey::Backend("http://b".into()),
            &[finding(Metric::ErrorRate, 4.0)],
            1000,
        );
        log.observe(&route("/a"), &[finding(Metric::LatencyP99, 9.0)], 2000);
        let f = |metric| Filter {
            metric: Some(metric),
            ..Default::default()
        };
        assert_eq!(log.list(&f(Metric::RequestRate))[0].ended_ms, Some(2000));
        assert_eq!(log.list(&f(Metric::LatencyP99))[0].ended_ms, None);
        assert_eq!(log.ongoing_since().get(&route("/a")), Some(&1000));
        log.observe(&route("/a"), &[], 3000);
        assert!(
            !log.ongoing_since().contains_key(&route("/a")),
            "its last anomaly over, the series has none going on"
        );
        let b = log.list(&Filter {
            backend: Some("http://b".into()),
            ..Default::default()
        });
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].ended_ms, None,
            "another series' evaluation does not end it"
        );
        assert_eq!(
            metrics
                .backend_anomalies
                .with_label_values(&["http://b", "error_rate"])
                .get(),
            1
        );
    }

    #[test]
    fn an_anomaly_ends_only_after_a_quiet_period() {
        let mut log = AnomalyLog::new(86_400_000, 2000, Metrics::new());
        let spike = [finding(Metric::RequestRate, 4.0)];
        log.observe(&route("/a"), &spike, 1000);
        log.observe(&route("/a"), &[], 2000);
        log.observe(&route("/a"), &spike, 3000); // back within the quiet period: same event
        log.observe(&route("/a"), &[], 4000);
        log.observe(&route("/a"), &[], 5000);
        assert!(
            log.list(&Filter::default())[0].ended_ms.is_none(),
            "1 s quiet < 2 s"
        );
        log.observe(&route("/a"), &[], 6000);
        let all = log.list(&Filter::default());
        assert_eq!(all.len(), 1, "one event: {all:?}");
        assert_eq!(
            all[0].ended_ms,
            Some(4000),
            "dated from the first normal bucket"
        );
        assert_eq!(all[0].ticks, 2);
    }

    #[test]
    fn history_is_bounded_in_time() {
        let mut log = AnomalyLog::new(10_000, 0, Metrics::new());
        log.observe(&route("/a"), &[finding(Metric::RequestRate, 4.0)], 0);
        log.observe(&route("/a"), &[], 1000);
        assert_eq!(log.list(&Filter::default()).len(), 1);
        log.observe(&route("/b"), &[], 11_001);
        assert!(log.list(&Filter::default()).is_empty());
    }

    #[test]
    fn filters_by_time() {
        let mut log = AnomalyLog::new(86_400_000, 0, Metrics::new());
        log.observe(&route("/a"), &[finding(Metric::RequestRate, 4.0)], 1000);
        log.observe(&route("/a"), &[], 2000);
        log.observe(&route("/a"), &[finding(Metric::RequestRate, 4.0)], 5000);
        let between = |from, to| {
            log.list(&Filter {
                from: Some(from),
                to: Some(to),
                ..Default::default()
            })
            .len()
        };
        assert_eq!(between(0, 10_000), 2);
        assert_eq!(between(3000, 10_000), 1, "the first ended before 3000");
        assert_eq!(between(0, 4000), 1, "the second started after 4000");
    }

    #[test]
    fn series_that_vanish_end_their_anomalies() {
        let mut log = AnomalyLog::new(86_400_000, 0, Metrics::new());
        log.observe(&route("/gone"), &[finding(Metric::RequestRate, 4.0)], 1000);
        log.end_unseen(&|_| false, 2000);
        assert_eq!(log.list(&Filter::default())[0].ended_ms, Some(2000));
    }
}
