//! The wasm runtime: one wasmtime `Engine` for the process, one `Linker` holding the host
//! interface, and an epoch ticker that only runs while policy calls are in progress.
//!
//! A plugin file is compiled and linked once per version ([`Runtime::compile`]); each
//! analyzer tick makes a fresh [`Live`] instance from it (a new `Store` with its own memory
//! cap), so nothing a policy does survives to the next tick. Every call runs under an
//! epoch deadline. Plugins see no WASI at all: the WASI imports a Rust `std` component
//! declares are linked to traps, so there is no filesystem, network, environment or clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

use super::Kind;
use super::bindings::{anomaly, host, rate_limit, types as wit, weighting};
use super::convert;
use crate::analytics::analyzer::Analysis;
use crate::analytics::store::{SeriesKey, TrafficStore};

/// Ticks of the epoch per call deadline: a call is interrupted after 90–100% of its
/// deadline (the first tick comes at any point of its period). Deadlines under
/// `TICKS_PER_DEADLINE × MIN_EPOCH_TICK` get fewer, coarser ticks (3 ms: 3 ticks, 67–100%).
const TICKS_PER_DEADLINE: u32 = 10;

/// The shortest epoch tick. Each tick wakes the ticker thread on a core the proxy may be
/// using: at 1 ms for the default 50 ms deadline that was ~130 wake-ups a second with 1,000
/// routes on 1 s ticks, 0.4% of the proxy's core (perf); one tick a tenth of the deadline
/// is 5 ms there.
const MIN_EPOCH_TICK: Duration = Duration::from_millis(1);

/// The epoch tick for calls that have `deadline`.
fn epoch_tick(deadline: Duration) -> Duration {
    (deadline / TICKS_PER_DEADLINE).max(MIN_EPOCH_TICK)
}

/// Why a call (or an instantiation) failed.
#[derive(Debug, Clone)]
pub struct CallError {
    /// `trap`, `timeout`, `memory` or `instantiate`: the label of
    /// `gateway_plugin_errors_total`.
    pub reason: &'static str,
    pub message: String,
}

/// Why a file could not become a plugin.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// `compile_error` or `wrong_world`.
    pub stage: &'static str,
    pub message: String,
}

/// What a policy call may look at: the tick's analysis and the store's history.
pub struct TickContext {
    pub now_ms: i64,
    pub analysis: Arc<Analysis>,
    pub store: Option<Arc<dyn TrafficStore>>,
    pub interval_ms: i64,
}

/// Per-instance state: the memory cap and what the host interface answers from.
pub struct HostState {
    limits: StoreLimits,
    plugin: Arc<str>,
    ctx: Arc<TickContext>,
}

/// A compiled, linked plugin version, ready to instantiate.
#[derive(Clone)]
pub enum Compiled {
    RateLimit(rate_limit::RateLimitPre<HostState>),
    Anomaly(anomaly::AnomalyPolicyPre<HostState>),
    Weighting(weighting::BackendWeightingPre<HostState>),
}

/// One instance of a plugin, for one tick.
pub struct Live {
    store: Store<HostState>,
    instance: Instance,
}

enum Instance {
    RateLimit(rate_limit::RateLimit),
    Anomaly(anomaly::AnomalyPolicy),
    Weighting(weighting::BackendWeighting),
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    ticker: Arc<Ticker>,
    deadline_ticks: u64,
    memory_limit: usize,
}

// === impl Runtime ===

impl Runtime {
    pub fn new(deadline: Duration, memory_limit: u64) -> Result<Self, String> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| e.to_string())?;
        let mut linker = Linker::new(&engine);
        // All three worlds import the same `host` interface; adding it once serves them all.
        rate_limit::RateLimit::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| e.to_string())?;
        let tick = epoch_tick(deadline);
        let ticker = Ticker::start(engine.clone(), tick);
        let ticks = deadline.as_nanos().div_ceil(tick.as_nanos()).max(1);
        Ok(Self {
            engine,
            linker,
            ticker,
            deadline_ticks: u64::try_from(ticks).unwrap_or(u64::MAX),
            memory_limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
        })
    }

    /// Compiles `bytes` and checks that they export the `kind`'s world.
    pub fn compile(&self, kind: Kind, bytes: &[u8]) -> Result<Compiled, LoadError> {
        let err = |stage, e: wasmtime::Error| LoadError {
            stage,
            message: format!("{e:#}"),
        };
        let component = Component::new(&self.engine, bytes).map_err(|e| err("compile_error", e))?;
        let mut linker = self.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| err("wrong_world", e))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| err("wrong_world", e))?;
        let compiled = match kind {
            Kind::RateLimit => rate_limit::RateLimitPre::new(pre).map(Compiled::RateLimit),
            Kind::Anomaly => anomaly::AnomalyPolicyPre::new(pre).map(Compiled::Anomaly),
            Kind::Weighting => weighting::BackendWeightingPre::new(pre).map(Compiled::Weighting),
        };
        compiled.map_err(|e| err("wrong_world", e))
    }

    /// Makes a fresh instance for one tick.
    pub fn instantiate(
        &self,
        compiled: &Compiled,
        plugin: Arc<str>,
        ctx: Arc<TickContext>,
    ) -> Result<Live, CallError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory_limit)
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                limits,
                plugin,
                ctx,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks);
        let instance = match compiled {
            Compiled::RateLimit(pre) => pre.instantiate(&mut store).map(Instance::RateLimit),
            Compiled::Anomaly(pre) => pre.instantiate(&mut store).map(Instance::Anomaly),
            Compiled::Weighting(pre) => pre.instantiate(&mut store).map(Instance::Weighting),
        }
        .map_err(|e| {
            let mut c = classify(&e);
            if c.reason == "trap" {
                c.reason = "instantiate";
            }
            c
        })?;
        Ok(Live { store, instance })
    }

    /// Keeps the epoch ticking while the guard lives (deadlines need it).
    pub fn activate(&self) -> TickerGuard {
        self.ticker.acquire();
        TickerGuard(self.ticker.clone())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

fn classify(e: &wasmtime::Error) -> CallError {
    let message = format!("{e:#}");
    let reason = if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        "timeout"
    } else if message.contains("forcing trap when growing memory")
        || message.contains("forcing a memory growth failure")
    {
        "memory"
    } else {
        "trap"
    };
    CallError { reason, message }
}

// === impl Live ===

impl Live {
    fn arm(&mut self, ticks: u64) {
        self.store.set_epoch_deadline(ticks);
    }

    /// Hands the plugin its parameters; `Ok(Err(msg))` means the plugin rejected them.
    #[allow(clippy::ptr_arg)] // the generated binding takes the WIT `params` alias, a `&Vec`
    pub fn configure(
        &mut self,
        rt: &Runtime,
        params: &Vec<(String, String)>,
    ) -> Result<Result<(), String>, CallError> {
        self.arm(rt.deadline_ticks);
        let r = match &self.instance {
            Instance::RateLimit(i) => i.call_configure(&mut self.store, params),
            Instance::Anomaly(i) => i.call_configure(&mut self.store, params),
            Instance::Weighting(i) => i.call_configure(&mut self.store, params),
        };
        r.map_err(|e| classify(&e))
    }

    pub fn decide(
        &mut self,
        rt: &Runtime,
        route: &wit::Series,
        static_limit: Option<f64>,
    ) -> Result<wit::LimitDecision, CallError> {
        self.arm(rt.deadline_ticks);
        match &self.instance {
            Instance::RateLimit(i) => i
                .call_decide(&mut self.store, route, static_limit)
                .map_err(|e| classify(&e)),
            _ => Err(wrong_kind()),
        }
    }

    pub fn detect(
        &mut self,
        rt: &Runtime,
        series: &wit::Series,
    ) -> Result<Vec<wit::Finding>, CallError> {
        self.arm(rt.deadline_ticks);
        match &self.instance {
            Instance::Anomaly(i) => i
                .call_detect(&mut self.store, series)
                .map_err(|e| classify(&e)),
            _ => Err(wrong_kind()),
        }
    }

    pub fn weigh(
        &mut self,
        rt: &Runtime,
        upstream: &str,
        backends: &[wit::BackendStats],
    ) -> Result<Vec<f64>, CallError> {
        self.arm(rt.deadline_ticks);
        match &self.instance {
            Instance::Weighting(i) => i
                .call_weigh(&mut self.store, upstream, backends)
                .map_err(|e| classify(&e)),
            _ => Err(wrong_kind()),
        }
    }
}

fn wrong_kind() -> CallError {
    CallError {
        reason: "trap",
        message: "plugin called as the wrong kind".into(),
    }
}

// === impl HostState: the `host` interface ===

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            host::Level::Debug => tracing::debug!(plugin, message, "plugin log"),
            host::Level::Info => tracing::info!(plugin, message, "plugin log"),
            host::Level::Warn => tracing::warn!(plugin, message, "plugin log"),
            host::Level::Error => tracing::error!(plugin, message, "plugin log"),
        }
    }

    fn lookup_baseline(&mut self, kind: wit::SeriesKind, name: String) -> Option<wit::Baseline> {
        let a = &self.ctx.analysis;
        let report = match kind {
            wit::SeriesKind::Route => a.route(&name),
            wit::SeriesKind::Backend => a.backend(&name),
        };
        report.map(|r| convert::baseline(&r.baseline))
    }

    fn recent_buckets(
        &mut self,
        kind: wit::SeriesKind,
        name: String,
        limit: u32,
    ) -> Vec<wit::Bucket> {
        let Some(store) = &self.ctx.store else {
            return Vec::new();
        };
        let limit = i64::from(limit.min(10_000));
        let key = match kind {
            wit::SeriesKind::Route => SeriesKey::Route(name.into()),
            wit::SeriesKind::Backend => SeriesKey::Backend(name.into()),
        };
        let to = self.ctx.now_ms + self.ctx.interval_ms;
        let from = to - limit * self.ctx.interval_ms;
        let buckets = store.buckets(&key, from, to);
        let skip = buckets.len().saturating_sub(limit as usize);
        buckets[skip..].iter().map(|b| convert::bucket(b)).collect()
    }

    fn now_ms(&mut self) -> i64 {
        self.ctx.now_ms
    }
}

impl wit::Host for HostState {}

// === impl Ticker ===

/// Increments the engine's epoch every tick ([`epoch_tick`]), but only while someone holds
/// a guard, so an idle gateway does not wake up for it.
pub struct Ticker {
    active: Mutex<(usize, bool)>,
    wake: Condvar,
    epochs: AtomicU64,
}

pub struct TickerGuard(Arc<Ticker>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        let mut s = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(1);
    }
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Arc<Ticker> {
        let t = Arc::new(Ticker {
            active: Mutex::new((0, false)),
            wake: Condvar::new(),
            epochs: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&t);
        let spawned = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                // Ticks only for plugin calls, which are learning's (analyzer, rebalance).
                crate::pace::background();
                loop {
                    let Some(t) = weak.upgrade() else { return };
                    {
                        let mut s = t.active.lock().unwrap_or_else(|e| e.into_inner());
                        while s.0 == 0 && !s.1 {
                            s = t.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                        }
                        if s.1 {
                            return;
                        }
                    }
                    drop(t);
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                    if let Some(t) = weak.upgrade() {
                        t.epochs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the wasm epoch thread; plugin deadlines will not fire");
        }
        t
    }

    fn acquire(&self) {
        let mut s = self.active.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        self.wake.notify_all();
    }

    fn stop(&self) {
        let mut s = self.active.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_ticks_ten_times_per_deadline_and_at_most_every_millisecond() {
        assert_eq!(
            epoch_tick(Duration::from_millis(50)),
            Duration::from_millis(5)
        );
        assert_eq!(
            epoch_tick(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(epoch_tick(Duration::from_millis(5)), MIN_EPOCH_TICK);
        let rt = Runtime::new(Duration::from_millis(50), 1 << 20).unwrap();
        assert_eq!(rt.deadline_ticks, 10);
        let rt = Runtime::new(Duration::from_millis(3), 1 << 20).unwrap();
        assert_eq!(rt.deadline_ticks, 3);
    }
}
