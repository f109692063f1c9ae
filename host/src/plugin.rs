//! Policies as WebAssembly components: loading, hot swap, and calls with fallback.
//!
//! Each policy a config names (`plugins.rate_limit`, `plugins.anomaly`,
//! `plugins.weighting`, `routes[].rate_limit_policy`) is a [`Slot`] keyed by file name.
//! A file that appears or changes in `plugins.dir` is compiled, checked for the slot's
//! world, configured and smoke-called on a blocking thread; only then is it swapped into
//! the slot. Any failure leaves the previous version in place; removing the file empties
//! the slot, and the built-in policy takes over. The analyzer never waits on a load.
//!
//! On each tick the analyzer opens a [`Session`], which makes one fresh instance per
//! plugin and calls it once per route or upstream. A trap, a timeout, a memory-cap hit or
//! an invalid answer makes that decision fall back to the built-in policy and is counted
//! in `gateway_plugin_errors_total{plugin,reason}`; `quarantine_after` failures in a row set
//! the plugin aside until its file changes.

mod bindings;
pub mod convert;
pub mod runtime;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use bindings::types as wit;
use runtime::{CallError, Compiled, Live, Runtime, TickContext};

use crate::analytics::analyzer::Analysis;
use crate::analytics::recorder::now_ms;
use crate::config::Config;
use crate::metrics::Metrics;

/// The three policy kinds, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    RateLimit,
    Anomaly,
    Weighting,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RateLimit => "rate_limit",
            Kind::Anomaly => "anomaly",
            Kind::Weighting => "weighting",
        }
    }
}

/// A configured plugin file and the version of it in use.
pub struct Slot {
    pub name: Arc<str>,
    pub kind: Kind,
    /// What `configure` receives: the section's settings, then the plugin's own params.
    pub params: Vec<(String, String)>,
    current: ArcSwapOption<Loaded>,
    /// Why the latest attempt to load the file failed, if it did (with the file's sha256).
    last_load_error: Mutex<Option<(String, String)>>,
    /// The file was found missing and that was reported (said once, not on every rescan).
    reported_missing: AtomicBool,
    /// Size and modification time of the file when it was last read: a rescan that finds
    /// them unchanged does not read and hash the file again.
    seen: Mutex<Option<FileStamp>>,
}

type FileStamp = (u64, std::time::SystemTime);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// One loaded version of a plugin file.
pub struct Loaded {
    pub sha256: String,
    pub loaded_at_ms: i64,
    compiled: Compiled,
    calls: AtomicU64,
    errors: AtomicU64,
    failures_in_a_row: AtomicU32,
    quarantined: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// All plugin slots and the runtime that runs them.
pub struct Plugins {
    pub dir: PathBuf,
    runtime: Runtime,
    slots: BTreeMap<Arc<str>, Arc<Slot>>,
    quarantine_after: u32,
    metrics: Metrics,
}

/// How one slot looks from `GET /analytics/plugins`.
#[derive(Debug, Serialize)]
pub struct PluginView {
    pub name: String,
    pub kind: Kind,
    /// `active`, `quarantined` or `missing` (no usable version: the built-in runs).
    pub state: &'static str,
    pub sha256: Option<String>,
    pub loaded_at_ms: Option<i64>,
    pub calls: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Why the file on disk was not loaded, if the latest attempt failed.
    pub last_load_error: Option<String>,
}

/// The outcome of looking at a file, for `gateway_plugin_reloads_total{plugin,result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Loaded,
    Unchanged,
    Removed,
    Missing,
    Failed(&'static str),
}

impl Reload {
    pub fn as_str(self) -> &'static str {
        match self {
            Reload::Loaded => "loaded",
            Reload::Unchanged => "unchanged",
            Reload::Removed => "removed",
            Reload::Missing => "missing",
            Reload::Failed(stage) => stage,
        }
    }
}

// === impl Plugins ===

impl Plugins {
    /// The slots a config names; nothing is loaded yet (see [`Plugins::load_all`]).
    pub fn new(config: &Config, metrics: Metrics) -> Result<Option<Self>, String> {
        let p = &config.plugins;
        let mut wanted: Vec<(&str, Kind)> = Vec::new();
        for (file, kind) in [
            (&p.rate_limit, Kind::RateLimit),
            (&p.anomaly, Kind::Anomaly),
            (&p.weighting, Kind::Weighting),
        ] {
            if let Some(f) = file {
                wanted.push((f, kind));
            }
        }
        for r in &config.routes {
            if let Some(f) = r.rate_limit_policy.as_deref().filter(|f| *f != "builtin") {
                wanted.push((f, Kind::RateLimit));
            }
        }
        if wanted.is_empty() {
            return Ok(None);
        }
        let runtime = Runtime::new(p.deadline, p.memory_limit)?;
        let mut slots = BTreeMap::new();
        for (file, kind) in wanted {
            let name: Arc<str> = file.into();
            let mut params = section_params(config, kind);
            if let Some(own) = p.params.get(file) {
                params.extend(own.iter().map(|(k, v)| (k.clone(), param_text(v))));
            }
            slots.entry(name.clone()).or_insert_with(|| {
                Arc::new(Slot {
                    name,
                    kind,
                    params,
                    current: ArcSwapOption::empty(),
                    last_load_error: Mutex::new(None),
                    reported_missing: AtomicBool::new(false),
                    seen: Mutex::new(None),
                })
            });
        }
        for name in slots.keys() {
            for reason in [
                "trap",
                "timeout",
                "memory",
                "invalid_output",
                "configure",
                "instantiate",
            ] {
                metrics.plugin_errors.with_label_values(&[&**name, reason]);
            }
        }
        Ok(Some(Self {
            dir: p.dir.clone(),
            runtime,
            slots,
            quarantine_after: p.quarantine_after,
            metrics,
        }))
    }

    pub fn slot(&self, name: &str) -> Option<&Arc<Slot>> {
        self.slots.get(name)
    }

    /// Empties a slot, as if its file had never been loaded (for benchmarks and tests).
    pub fn forget(&self, name: &str) {
        if let Some(slot) = self.slots.get(name) {
            slot.current.store(None);
            *lock(&slot.last_load_error) = None;
            *lock(&slot.seen) = None;
        }
    }

    /// Looks at every configured file once (at start, and on each rescan). Files whose
    /// size and modification time are what they were when last read are skipped; events
    /// from the folder watcher always read the file.
    pub fn rescan(&self) {
        for (name, slot) in &self.slots {
            let stamp = file_stamp(&self.dir.join(&**name));
            if stamp.is_some() && *lock(&slot.seen) == stamp {
                continue;
            }
            self.reload(name);
        }
    }

    /// Looks at one file: loads it if it is new or changed, empties its slot if it is gone.
    /// Blocking (compiles); run it off the async runtime.
    pub fn reload(&self, name: &str) -> Reload {
        let Some(slot) = self.slots.get(name) else {
            return Reload::Unchanged;
        };
        let path = self.dir.join(name);
        *lock(&slot.seen) = file_stamp(&path);
        let outcome = match std::fs::read(&path) {
            Ok(bytes) => {
                slot.reported_missing.store(false, Ordering::Relaxed);
                self.load(slot, &path, &bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if slot.current.swap(None).is_some() {
                    tracing::warn!(
                        plugin = name,
                        "plugin file removed; the built-in policy takes over"
                    );
                    slot.reported_missing.store(true, Ordering::Relaxed);
                    Reload::Removed
                } else if !slot.reported_missing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(plugin = name, path = %path.display(), "plugin file not found; using the built-in policy until it appears");
                    Reload::Missing
                } else {
                    return Reload::Unchanged;
                }
            }
            Err(e) => {
                self.reject(
                    slot,
                    "",
                    "read_error",
                    &format!("cannot read {}: {e}", path.display()),
                );
                Reload::Failed("read_error")
            }
        };
        if outcome != Reload::Unchanged {
            self.metrics
                .plugin_reloads
                .with_label_values(&[name, outcome.as_str()])
                .inc();
        }
        outcome
    }

    fn load(&self, slot: &Slot, path: &Path, bytes: &[u8]) -> Reload {
        let sha256 = hex(&Sha256::digest(bytes));
        if slot
            .current
            .load()
            .as_ref()
            .is_some_and(|l| l.sha256 == sha256)
        {
            return Reload::Unchanged;
        }
        if lock(&slot.last_load_error)
            .as_ref()
            .is_some_and(|(sha, _)| *sha == sha256)
        {
            return Reload::Unchanged; // the same bad bytes again
        }
        let compiled = match self.runtime.compile(slot.kind, bytes) {
            Ok(c) => c,
            Err(e) => {
                self.reject(slot, &sha256, e.stage, &e.message);
                return Reload::Failed(e.stage);
            }
        };
        if let Err((stage, message)) = self.smoke(slot, &compiled) {
            self.reject(slot, &sha256, stage, &message);
            return Reload::Failed(stage);
        }
        let loaded = Loaded {
            sha256: sha256.clone(),
            loaded_at_ms: now_ms(),
            compiled,
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            failures_in_a_row: AtomicU32::new(0),
            quarantined: AtomicBool::new(false),
            last_error: Mutex::new(None),
        };
        let previous = slot.current.swap(Some(Arc::new(loaded)));
        *lock(&slot.last_load_error) = None;
        tracing::info!(
            plugin = &*slot.name, kind = slot.kind.as_str(), sha256, path = %path.display(),
            replaced = previous.is_some(), "plugin loaded"
        );
        Reload::Loaded
    }

    /// Configures a fresh instance and calls it once with sample data.
    fn smoke(&self, slot: &Slot, compiled: &Compiled) -> Result<(), (&'static str, String)> {
        let _ticking = self.runtime.activate();
        let ctx = Arc::new(TickContext {
            now_ms: now_ms(),
            analysis: Arc::new(Analysis::default()),
            store: None,
            interval_ms: 60_000,
        });
        let fail = |e: CallError| ("smoke_failed", format!("{}: {}", e.reason, e.message));
        let mut live = self
            .runtime
            .instantiate(compiled, slot.name.clone(), ctx)
            .map_err(fail)?;
        match live.configure(&self.runtime, &slot.params).map_err(fail)? {
            Ok(()) => {}
            Err(msg) => {
                return Err((
                    "configure_error",
                    format!("the plugin rejected its parameters: {msg}"),
                ));
            }
        }
        let sample = sample_series();
        let answer = match slot.kind {
            Kind::RateLimit => live
                .decide(&self.runtime, &sample, Some(600.0))
                .map_err(fail)
                .map(|d| convert::limit(d).map(drop)),
            Kind::Anomaly => live
                .detect(&self.runtime, &sample)
                .map_err(fail)
                .map(|f| convert::findings(f).map(drop)),
            Kind::Weighting => {
                let backends = [sample_backend("http://a"), sample_backend("http://b")];
                live.weigh(&self.runtime, "sample", &backends)
                    .map_err(fail)
                    .map(|w| convert::weights(w, 2).map(drop))
            }
        }?;
        answer.map_err(|msg| {
            (
                "smoke_failed",
                format!("invalid answer to sample data: {msg}"),
            )
        })
    }

    fn reject(&self, slot: &Slot, sha256: &str, stage: &'static str, message: &str) {
        let kept = slot.current.load().is_some();
        tracing::warn!(
            plugin = &*slot.name,
            stage,
            error = message,
            keeping_previous_version = kept,
            "plugin file rejected"
        );
        *lock(&slot.last_load_error) = Some((sha256.to_owned(), format!("{stage}: {message}")));
    }

    /// Starts the calls of one analyzer tick.
    pub fn session(&self, ctx: TickContext) -> Session<'_> {
        Session {
            plugins: self,
            ctx: Arc::new(ctx),
            live: HashMap::new(),
            logged: HashMap::new(),
            _ticking: self.runtime.activate(),
        }
    }

    /// Every slot, for the API.
    pub fn views(&self) -> Vec<PluginView> {
        self.slots
            .values()
            .map(|s| {
                let current = s.current.load_full();
                let state = match &current {
                    None => "missing",
                    Some(l) if l.quarantined.load(Ordering::Relaxed) => "quarantined",
                    Some(_) => "active",
                };
                PluginView {
                    name: s.name.to_string(),
                    kind: s.kind,
                    state,
                    sha256: current.as_ref().map(|l| l.sha256.clone()),
                    loaded_at_ms: current.as_ref().map(|l| l.loaded_at_ms),
                    calls: current
                        .as_ref()
                        .map_or(0, |l| l.calls.load(Ordering::Relaxed)),
                    errors: current
                        .as_ref()
                        .map_or(0, |l| l.errors.load(Ordering::Relaxed)),
                    last_error: current.as_ref().and_then(|l| lock(&l.last_error).clone()),
                    last_load_error: lock(&s.last_load_error).as_ref().map(|(_, e)| e.clone()),
                }
            })
            .collect()
    }
}

/// The settings of the config section a plugin kind replaces, as plugin parameters, so a
/// default plugin decides exactly as the built-in policy with the same config.
fn section_params(config: &Config, kind: Kind) -> Vec<(String, String)> {
    let kv = |k: &str, v: String| (k.to_owned(), v);
    match kind {
        Kind::RateLimit => {
            let c = &config.adaptive_rate_limit;
            vec![
                kv("multiplier", c.multiplier.to_string()),
                kv("min_limit", c.min_limit.to_string()),
                kv("max_limit", c.max_limit.to_string()),
                kv(
                    "learning_period",
                    c.learning_period.as_secs_f64().to_string(),
                ),
            ]
        }
        Kind::Anomaly => {
            let c = &config.analytics.anomaly;
            vec![
                kv("z_threshold", c.z_threshold.to_string()),
                kv("min_samples", c.min_samples.to_string()),
                kv("p99_min_requests", c.p99_min_requests.to_string()),
            ]
        }
        Kind::Weighting => vec![kv("min_share", config.weighted_lb.min_share.to_string())],
    }
}

fn param_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sample_baseline() -> wit::Baseline {
    let stat = |mean, stddev| wit::Stat { mean, stddev };
    wit::Baseline {
        samples: 60,
        history_seconds: 7200.0,
        request_rate: stat(120.0, 15.0),
        error_rate: stat(0.01, 0.005),
        latency_mean_ms: stat(20.0, 4.0),
        latency_p99_ms: stat(80.0, 10.0),
        requests: 7200,
        errors: 72,
        overall_error_rate: 0.01,
        overall_latency_mean_ms: 20.0,
        overall_latency_p50_ms: 15.0,
        overall_latency_p99_ms: 80.0,
    }
}

fn sample_window() -> wit::Window {
    wit::Window {
        start_ms: 0,
        interval_ms: 60_000,
        requests: 130,
        errors: 1,
        request_rate: 130.0,
        error_rate: Some(1.0 / 130.0),
        latency_mean_ms: Some(21.0),
        latency_p99_ms: Some(85.0),
    }
}

fn sample_series() -> wit::Series {
    wit::Series {
        kind: wit::SeriesKind::Route,
        name: "/sample".into(),
        baseline: sample_baseline(),
        current: sample_window(),
    }
}

fn sample_backend(name: &str) -> wit::BackendStats {
    wit::BackendStats {
        backend: name.into(),
        baseline: sample_baseline(),
        current: sample_window(),
        breaker: wit::BreakerState::Closed,
        learning: false,
    }
}

// === impl Session ===

/// The plugin calls of one analyzer tick: one fresh instance per plugin, made on first
/// use. Every method returns `None` when the built-in policy must decide instead (no
/// plugin, quarantined, or the call failed — already logged and counted).
pub struct Session<'a> {
    plugins: &'a Plugins,
    ctx: Arc<TickContext>,
    live: HashMap<Arc<str>, Option<(Arc<Loaded>, Live)>>,
    /// Plugins whose failure this tick has already been logged.
    logged: HashMap<Arc<str>, ()>,
    _ticking: runtime::TickerGuard,
}

impl Session<'_> {
    /// A rate-limit decision from the plugin in `slot`.
    pub fn decide(
        &mut self,
        slot: &str,
        route: &wit::Series,
        static_limit: Option<f64>,
    ) -> Option<crate::policy::types::LimitDecision> {
        let rt = &self.plugins.runtime;
        self.call(
            slot,
            |live| live.decide(rt, route, static_limit),
            convert::limit,
        )
    }

    /// Anomaly findings from the plugin in `slot`.
    pub fn detect(
        &mut self,
        slot: &str,
        series: &wit::Series,
    ) -> Option<Vec<crate::policy::types::Finding>> {
        let rt = &self.plugins.runtime;
        self.call(slot, |live| live.detect(rt, series), convert::findings)
    }

    /// Normalised weights from the plugin in `slot`.
    pub fn weigh(
        &mut self,
        slot: &str,
        upstream: &str,
        backends: &[wit::BackendStats],
    ) -> Option<Vec<f64>> {
        let rt = &self.plugins.runtime;
        let n = backends.len();
        self.call(
            slot,
            |live| live.weigh(rt, upstream, backends),
            |w| convert::weights(w, n),
        )
    }

    fn call<R, T>(
        &mut self,
        slot_name: &str,
        call: impl FnOnce(&mut Live) -> Result<R, CallError>,
        check: impl FnOnce(R) -> Result<T, convert::Invalid>,
    ) -> Option<T> {
        let plugins = self.plugins;
        let slot = plugins.slots.get(slot_name)?;
        let entry = self.live.entry(slot.name.clone()).or_insert(None);
        if entry.is_none() {
            let loaded = slot.current.load_full()?;
            if loaded.quarantined.load(Ordering::Relaxed) {
                return None;
            }
            let started = plugins
                .runtime
                .instantiate(&loaded.compiled, slot.name.clone(), self.ctx.clone())
                .and_then(
                    |mut live| match live.configure(&plugins.runtime, &slot.params)? {
                        Ok(()) => Ok(live),
                        Err(msg) => Err(CallError {
                            reason: "configure",
                            message: msg,
                        }),
                    },
                );
            match started {
                Ok(live) => *entry = Some((loaded, live)),
                Err(e) => {
                    self.failed(slot, &loaded, e.reason, &e.message);
                    return None;
                }
            }
        }
        let (loaded, live) = entry.as_mut()?;
        let loaded = loaded.clone();
        loaded.calls.fetch_add(1, Ordering::Relaxed);
        match call(live)
            .map_err(|e| (e.reason, e.message))
            .and_then(|r| check(r).map_err(|m| ("invalid_output", m)))
        {
            Ok(v) => {
                loaded.failures_in_a_row.store(0, Ordering::Relaxed);
                Some(v)
            }
            Err((reason, message)) => {
                if reason != "invalid_output" {
                    // After a trap the instance is dead; the next call makes a new one.
                    self.live.remove(&slot.name);
                }
                self.failed(slot, &loaded, reason, &message);
                None
            }
        }
    }

    fn failed(&mut self, slot: &Slot, loaded: &Loaded, reason: &'static str, message: &str) {
        let plugins = self.plugins;
        plugins
            .metrics
            .plugin_errors
            .with_label_values(&[&*slot.name, reason])
            .inc();
        loaded.errors.fetch_add(1, Ordering::Relaxed);
        *lock(&loaded.last_error) = Some(format!("{reason}: {message}"));
        let in_a_row = loaded.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if self.logged.insert(slot.name.clone(), ()).is_none() {
            tracing::warn!(
                plugin = &*slot.name,
                reason,
                error = message,
                "plugin call failed; the built-in policy decides instead"
            );
        }
        if in_a_row >= plugins.quarantine_after && !loaded.quarantined.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                plugin = &*slot.name,
                failures = in_a_row,
                "plugin quarantined until its file changes; the built-in policy decides"
            );
        }
    }
}
