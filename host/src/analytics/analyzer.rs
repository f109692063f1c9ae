//! The analyzer: on every tick it brings each route's and backend's window up to date
//! (reading only the buckets completed since the last tick: [`Windows`]), computes
//! baselines over it, compares the most recent complete bucket against them, and
//! runs the policies: anomalies, per-route limits, breaker thresholds. On its own timer,
//! [`Analyzer::rebalance`] turns backend baselines into balancer weights.
//!
//! `tick` and `rebalance` take the time as an argument, so tests drive them by hand.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::anomaly::{AnomalyLog, BySeries};
use super::baseline::{Reached, baseline, window};
use super::bucket::{UnixMs, align};
use super::store::{SeriesKey, SeriesKind, TrafficStore};
use super::windows::Windows;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::pace::Pacer;
use crate::plugin::runtime::TickContext;
use crate::plugin::{Plugins, Session, convert, wit};
use crate::policy::builtin;
use crate::policy::types::{BackendStats, Baseline, LimitDecision, Window};
use crate::upstream::breaker::BreakerState;

/// What one tick learned.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Analysis {
    /// When the tick ran (ms since the Unix epoch).
    pub at_ms: UnixMs,
    /// Start of the bucket under test.
    pub bucket_ms: UnixMs,
    /// Sorted by name (looked up by binary search: a tick looks up every route).
    pub routes: Vec<SeriesReport>,
    /// Sorted by name.
    pub backends: Vec<SeriesReport>,
}

/// One route's or backend's baseline and latest bucket.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesReport {
    pub name: Arc<str>,
    /// Start of the oldest bucket seen, if any.
    pub first_seen_ms: Option<UnixMs>,
    /// What is normal: the window without the buckets of an ongoing anomaly. Anomalies,
    /// limits and breaker thresholds are judged against it.
    pub baseline: Baseline,
    /// Everything the window saw, anomalies included. Backend weights follow it, so a
    /// slowdown shifts traffic at once.
    pub observed: Baseline,
    pub current: Window,
    /// Of the baseline's requests, those that reached a backend and the failed among them:
    /// a route's breaker threshold on its upstream's only backend is learned from these.
    #[serde(skip)]
    pub reached: Reached,
}

impl Analysis {
    pub fn route(&self, name: &str) -> Option<&SeriesReport> {
        find(&self.routes, name)
    }

    pub fn backend(&self, name: &str) -> Option<&SeriesReport> {
        find(&self.backends, name)
    }
}

/// A report by name in reports sorted by name. A linear search here made publishing the
/// limits quadratic in the number of routes (a tenth of the analyzer's time with 1,000).
fn find<'a>(reports: &'a [SeriesReport], name: &str) -> Option<&'a SeriesReport> {
    reports
        .binary_search_by(|r| (*r.name).cmp(name))
        .ok()
        .and_then(|i| reports.get(i))
}

pub struct Analyzer {
    gw: Arc<Gateway>,
    store: Arc<dyn TrafficStore>,
    config: Arc<Config>,
    plugins: Option<Arc<Plugins>>,
    /// Each configured route's rate-limit plugin, if any (by route index).
    route_policies: Vec<Option<String>>,
    /// The configured routes' and backends' names, sorted and without repeats.
    route_names: Vec<Arc<str>>,
    backend_names: Vec<Arc<str>>,
    pub anomalies: Mutex<AnomalyLog>,
    /// Each series' window, kept between ticks (only the analyzer thread takes it).
    windows: Mutex<Windows>,
    latest: ArcSwap<Analysis>,
}

impl Analyzer {
    pub fn new(
        gw: Arc<Gateway>,
        store: Arc<dyn TrafficStore>,
        config: Arc<Config>,
        plugins: Option<Arc<Plugins>>,
    ) -> Self {
        let history_ms = ms(config.analytics.anomaly.history);
        let quiet_ms = ms(config.analytics.anomaly.quiet_period);
        let anomalies = Mutex::new(AnomalyLog::new(history_ms, quiet_ms, gw.metrics.clone()));
        let route_policies = config
            .routes
            .iter()
            .map(|r| match r.rate_limit_policy.as_deref() {
                Some("builtin") => None,
                Some(file) => Some(file.to_owned()),
                None => config.plugins.rate_limit.clone(),
            })
            .collect();
        let sorted = |mut names: Vec<Arc<str>>| {
            names.sort_unstable();
            names.dedup();
            names
        };
        let route_names = sorted(gw.routes.iter().map(|r| r.label.clone()).collect());
        let backend_names = sorted(gw.backends.iter().map(|b| b.label.clone()).collect());
        Self {
            gw,
            store,
            config,
            plugins,
            route_policies,
            route_names,
            backend_names,
            anomalies,
            windows: Mutex::default(),
            latest: ArcSwap::from_pointee(Analysis::default()),
        }
    }

    /// The plugins the policies come from, if any are configured.
    pub fn plugins(&self) -> Option<&Arc<Plugins>> {
        self.plugins.as_ref()
    }

    fn session(&self, analysis: &Arc<Analysis>) -> Option<Session<'_>> {
        let interval = ms(self.config.analytics.bucket_interval).max(1);
        self.plugins.as_ref().map(|p| {
            p.session(TickContext {
                now_ms: analysis.bucket_ms,
                analysis: analysis.clone(),
                store: Some(self.store.clone()),
                interval_ms: interval,
            })
        })
    }

    /// The result of the latest tick.
    pub fn latest(&self) -> Arc<Analysis> {
        self.latest.load_full()
    }

    pub fn store(&self) -> &Arc<dyn TrafficStore> {
        &self.store
    }

    pub fn anomalies(&self) -> std::sync::MutexGuard<'_, AnomalyLog> {
        self.anomalies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes every baseline, runs the policies and publishes their decisions.
    pub fn tick(&self, now: UnixMs) -> Arc<Analysis> {
        let timer = self.gw.metrics.analyzer_tick.start_timer();
        let an = &self.config.analytics;
        let interval = ms(an.bucket_interval).max(1);
        let bucket_ms = align(now, interval) - interval;
        let from = bucket_ms - ms(an.window);

        let clock = Clock {
            bucket_ms,
            from,
            interval,
        };
        // Yields the core between series (`pace`): with a thousand routes a tick is long.
        let mut pacer = Pacer::default();
        let ongoing = self.anomalies().ongoing_since();
        let mut report = |key: SeriesKey, first_seen: Option<UnixMs>| {
            pacer.pause_if_due();
            self.report(key.clone(), &key, first_seen, clock, &ongoing)
        };
        let routes = self.series(SeriesKind::Route, &self.route_names);
        let backends = self.series(SeriesKind::Backend, &self.backend_names);
        let analysis = Arc::new(Analysis {
            at_ms: now,
            bucket_ms,
            routes: routes
                .into_iter()
                .map(|(n, f)| report(SeriesKey::Route(n), f))
                .collect(),
            backends: backends
                .into_iter()
                .map(|(n, f)| report(SeriesKey::Backend(n), f))
                .collect(),
        });

        let mut session = self.session(&analysis);
        self.detect_anomalies(&analysis, session.as_mut());
        self.publish_limits(&analysis, session.as_mut());
        drop(session);
        self.publish_thresholds(&analysis, clock);
        self.windows().end_tick();
        self.latest.store(analysis.clone());
        timer.observe_duration();
        analysis
    }

    /// A series' baselines and bucket under test. `anomalies_of` names the series whose
    /// ongoing anomaly (if any, for up to `learn_after`; `ongoing`: when each series' began)
    /// keeps its buckets out of the learned baseline.
    fn report(
        &self,
        key: SeriesKey,
        anomalies_of: &SeriesKey,
        first_seen: Option<UnixMs>,
        c: Clock,
        ongoing: &BySeries<UnixMs>,
    ) -> SeriesReport {
        let learn_after = ms(self.config.analytics.anomaly.learn_after);
        let since = ongoing
            .get(anomalies_of)
            .copied()
            .filter(|s| c.bucket_ms - s < learn_after);
        let mut windows = self.windows();
        let w = windows.advance(&*self.store, &key, c.from, c.bucket_ms, c.interval, since);
        let first = first_seen.unwrap_or(c.bucket_ms);
        let sums = w.sums();
        let observed = baseline(&sums, w.latency, c.from, c.bucket_ms, first, c.interval);
        let (learned, reached) = match (since, w.latency_before) {
            (Some(since), Some(latency)) => {
                let sums = w.sums_before(since);
                let mut b = baseline(&sums, latency, c.from, since, first, c.interval);
                b.history_seconds = observed.history_seconds;
                (b, sums.reached)
            }
            _ => (observed.clone(), sums.reached),
        };
        SeriesReport {
            name: key.name().clone(),
            first_seen_ms: first_seen,
            baseline: learned,
            observed,
            current: window(w.current.as_deref(), c.bucket_ms, c.interval),
            reached,
        }
    }

    /// Configured names (`configured`: sorted) plus every name the store knows, with when
    /// each was first seen, sorted by name.
    fn series(&self, kind: SeriesKind, configured: &[Arc<str>]) -> Vec<(Arc<str>, Option<UnixMs>)> {
        let mut known: hashbrown::HashMap<Arc<str>, UnixMs, foldhash::fast::RandomState> = self
            .store
            .series(kind)
            .into_iter()
            .map(|(k, first)| (k.name().clone(), first))
            .collect();
        let mut names: Vec<(Arc<str>, Option<UnixMs>)> = configured
            .iter()
            .map(|n| (n.clone(), known.remove(n)))
            .collect();
        if !known.is_empty() {
            // Names not configured (unmatched paths), sorted on their own, then merged: the
            // stable sort finds the two sorted runs and merges them in one pass.
            let mut extra: Vec<_> = known.into_iter().map(|(n, f)| (n, Some(f))).collect();
            extra.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            names.extend(extra);
            names.sort_by(|a, b| a.0.cmp(&b.0));
        }
        names
    }

    fn detect_anomalies(&self, analysis: &Analysis, mut session: Option<&mut Session<'_>>) {
        let at = analysis.bucket_ms;
        let cfg = &self.config.analytics.anomaly;
        let plugin = self.config.plugins.anomaly.as_deref();
        let mut log = self.anomalies();
        let all = analysis
            .routes
            .iter()
            .map(|r| (SeriesKey::Route(r.name.clone()), r))
            .chain(
                analysis
                    .backends
                    .iter()
                    .map(|r| (SeriesKey::Backend(r.name.clone()), r)),
            );
        let mut pacer = Pacer::default();
        for (key, report) in all {
            // A wasm call per series: two thousand of them with 1,000 routes.
            pacer.pause_if_due();
            let from_plugin = match (session.as_deref_mut(), plugin) {
                (Some(s), Some(slot)) => {
                    let kind = match key {
                        SeriesKey::Route(_) => wit::SeriesKind::Route,
                        SeriesKey::Backend(_) | SeriesKey::Pair(..) => wit::SeriesKind::Backend,
                    };
                    s.detect(slot, &convert::series(kind, report))
                }
                _ => None,
            };
            let findings = from_plugin
                .unwrap_or_else(|| builtin::anomalies(&report.current, &report.baseline, cfg));
            log.observe(&key, &findings, at);
        }
        // Sets, not a search of the reports per ongoing anomaly (a thousand routes).
        let names = |reports: &'_ [SeriesReport]| -> HashSet<Arc<str>> {
            reports.iter().map(|r| r.name.clone()).collect()
        };
        let (routes, backends) = (names(&analysis.routes), names(&analysis.backends));
        let evaluated = |k: &SeriesKey| match k {
            SeriesKey::Route(n) => routes.contains(n),
            SeriesKey::Backend(n) => backends.contains(n),
            SeriesKey::Pair(..) => true,
        };
        log.end_unseen(&evaluated, at);
    }

    fn publish_limits(&self, analysis: &Analysis, mut session: Option<&mut Session<'_>>) {
        let cfg = &self.config.adaptive_rate_limit;
        let mut pacer = Pacer::default();
        for route in &self.gw.routes {
            pacer.pause_if_due();
            let plugin = self.route_policies.get(route.id).and_then(|p| p.as_deref());
            let decision = match analysis.route(&route.label) {
                Some(r) if cfg.enabled => {
                    let static_limit = route
                        .limiter
                        .as_ref()
                        .map(|l| f64::from(l.requests_per_minute));
                    let from_plugin = match (session.as_deref_mut(), plugin) {
                        (Some(s), Some(slot)) => s.decide(
                            slot,
                            &convert::series(wit::SeriesKind::Route, r),
                            static_limit,
                        ),
                        _ => None,
                    };
                    from_plugin.unwrap_or_else(|| builtin::rate_limit(&r.baseline, cfg))
                }
                _ => LimitDecision::Learning,
            };
            route.adaptive.set(match decision {
                LimitDecision::Limit(v) => Some(v),
                LimitDecision::Learning | LimitDecision::Unlimited => None,
            });
            route.limit_gauge.set(route.current_limit().unwrap_or(0.0));
        }
    }

    /// Breaker thresholds: each backend's from its own baseline, and each route's on a
    /// backend from that route's traffic to that backend (so a backend that normally fails
    /// a little more does not trip on a route that is clean elsewhere). A route whose
    /// upstream has one backend sends it everything of its own that reaches a backend: its
    /// own series counts that (`reached`), and it keeps no pair series.
    fn publish_thresholds(&self, analysis: &Analysis, clock: Clock) {
        let cfg = &self.config.circuit_breaker.adaptive;
        let learned = |requests: u64, errors: u64, history_seconds: f64| -> Option<f64> {
            let learned =
                cfg.enabled && requests > 0 && history_seconds >= cfg.learning_period.as_secs_f64();
            let rate = errors as f64 / requests.max(1) as f64;
            learned.then(|| builtin::breaker_threshold(rate, cfg))
        };
        let of_baseline = |b: &Baseline| learned(b.requests, b.errors, b.history_seconds);
        let gauge = |backend: &str, route: &str, value: f64| {
            self.gw
                .metrics
                .circuit_threshold
                .with_label_values(&[backend, route])
                .set(value);
        };
        let mut pacer = Pacer::default();
        let pairs: BySeries<UnixMs> = self.store.series(SeriesKind::Pair).into_iter().collect();
        // After this tick's detection: a route's new anomaly keeps its pairs' baselines clean.
        let ongoing = if pairs.is_empty() {
            BySeries::default()
        } else {
            self.anomalies().ongoing_since()
        };
        for backend in &self.gw.backends {
            let own = analysis
                .backend(&backend.label)
                .and_then(|r| of_baseline(&r.baseline));
            backend.breaker.set_threshold(own);
            gauge(&backend.label, "*", backend.breaker.threshold());
            for (slot, route_id) in backend.routes.iter().enumerate() {
                pacer.pause_if_due();
                let Some(route) = self.gw.routes.get(*route_id) else {
                    continue;
                };
                let threshold = if !route.several_backends() {
                    analysis.route(&route.label).and_then(|r| {
                        let (reached, history) = (r.reached, r.baseline.history_seconds);
                        learned(reached.requests, reached.errors, history)
                    })
                } else {
                    let key = SeriesKey::Pair(route.label.clone(), backend.label.clone());
                    pairs.get(&key).and_then(|first| {
                        let report = self.report(
                            key.clone(),
                            &SeriesKey::Route(route.label.clone()),
                            Some(*first),
                            clock,
                            &ongoing,
                        );
                        of_baseline(&report.baseline)
                    })
                };
                backend.breaker.set_route_threshold(slot, threshold);
                if let Some(t) = threshold {
                    gauge(&backend.label, &route.label, t);
                }
            }
        }
    }

    /// Recomputes every upstream's backend weights from the latest baselines.
    pub fn rebalance(&self) {
        let cfg = &self.config.weighted_lb;
        if !cfg.enabled {
            return;
        }
        let analysis = self.latest();
        let plugin = self.config.plugins.weighting.as_deref();
        let mut session = plugin.and_then(|_| self.session(&analysis));
        for (name, upstream) in &self.gw.upstreams {
            let mut stats = Vec::with_capacity(upstream.backends.len());
            let mut learning = Vec::with_capacity(upstream.backends.len());
            for b in &upstream.backends {
                let baseline = analysis
                    .backend(&b.label)
                    .map(|r| r.observed.clone())
                    .unwrap_or_default();
                learning.push(baseline.history_seconds < cfg.learning_period.as_secs_f64());
                stats.push(BackendStats {
                    backend: b.label.to_string(),
                    baseline,
                    breaker_open: b.breaker.state() == BreakerState::Open,
                });
            }
            if learning.iter().all(|l| *l) {
                // Nothing learned yet: keep strict round-robin.
                upstream.balancer.set_weights(None);
                continue;
            }
            let from_plugin = match (session.as_mut(), plugin) {
                (Some(s), Some(slot)) => {
                    let backends: Vec<wit::BackendStats> = upstream
                        .backends
                        .iter()
                        .zip(&stats)
                        .zip(&learning)
                        .map(|((b, st), l)| {
                            let current = analysis
                                .backend(&b.label)
                                .map(|r| r.current.clone())
                                .unwrap_or_default();
                            convert::backend(st, &current, *l, b.breaker.state())
                        })
                        .collect();
                    s.weigh(slot, name, &backends)
                }
                _ => None,
            };
            let weights =
                from_plugin.unwrap_or_else(|| builtin::weights(&stats, &learning, cfg.min_share));
            for (b, w) in upstream.backends.iter().zip(&weights) {
                self.gw
                    .metrics
                    .backend_weight
                    .with_label_values(&[name.as_str(), &*b.label])
                    .set(*w);
            }
            upstream.balancer.set_weights(Some(weights));
        }
    }
}

/// The tick's bucket geometry.
#[derive(Clone, Copy)]
struct Clock {
    /// Start of the bucket under test.
    bucket_ms: UnixMs,
    /// Start of the baseline window.
    from: UnixMs,
    interval: i64,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
