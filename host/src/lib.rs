//! MicroGate: an API gateway that learns from its own traffic.
//!
//! The library takes a validated [`config::Config`] and runs the gateway; the `microgate`
//! binary owns the command line, the config file and signals. Start at [`start`] (tests call
//! it directly), at [`middleware`] for the request path and at [`analytics`] for the
//! adaptive loop.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod body;
pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod middleware;
pub mod pace;
#[allow(unsafe_code)] // wasmtime's generated bindings
pub mod plugin;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod server;
pub mod traffic;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use analytics::analyzer::Analyzer;
use analytics::recorder::{self, Every, now_ms};
use analytics::sqlite::{self, SqliteError, SqlitePersist};
use analytics::store::{MemoryStore, Persist, StoreSettings, TrafficStore};
use config::{Config, StoreKind};
use gateway::{BuildError, Gateway};
use metrics::Metrics;
use traffic::{Discard, Tee, TrafficSink};

/// How often idle rate-limit buckets are forgotten.
const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Store(#[from] SqliteError),
    #[error("cannot start the plugin runtime: {0}")]
    Plugins(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started gateway. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    /// The adaptive loop, when analytics is on.
    pub analyzer: Option<Arc<Analyzer>>,
    stop_listeners: watch::Sender<bool>,
    listeners: JoinSet<()>,
    stop_background: watch::Sender<bool>,
    background: JoinSet<()>,
    persist: Option<Arc<SqlitePersist>>,
}

/// Binds both listeners and starts serving. Returns once the gateway accepts connections.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    start_with_sink(config, None).await
}

/// Like [`start`], also handing every finished request to `extra`.
pub async fn start_with_sink(
    config: &Config,
    extra: Option<Arc<dyn TrafficSink>>,
) -> Result<Running, StartError> {
    let config = Arc::new(config.clone());
    // Before any of learning's threads start (the SQLite writer's is below).
    pace::set_background_nice(config.analytics.background_nice);
    pace::set_background_slice(config.analytics.background_slice);
    let metrics = Metrics::new();
    let (stop_background, background_stopped) = watch::channel(false);
    let mut background = JoinSet::new();

    // Analytics: the store (loaded from SQLite) and the recorder feeding it.
    let mut persist = None;
    let mut analytics = None;
    let mut sinks: Vec<Arc<dyn TrafficSink>> = extra.into_iter().collect();
    if config.analytics.enabled {
        let an = &config.analytics;
        let settings = StoreSettings::from_config(an);
        let now = now_ms();
        let (store_persist, loaded) = match an.store {
            StoreKind::Sqlite => {
                let (p, loaded) = sqlite::open(&an.path, now - settings.retention_ms)?;
                let p = Arc::new(p);
                persist = Some(p.clone());
                (Some(Box::new(p) as Box<dyn Persist>), loaded)
            }
            StoreKind::Memory => (None, Vec::new()),
        };
        let store = MemoryStore::new(settings, store_persist);
        let loaded_buckets = loaded.len();
        store.load(loaded, now);
        if loaded_buckets > 0 {
            tracing::info!(buckets = loaded_buckets, path = %an.path.display(), "analytics history loaded");
        }
        let store: Arc<dyn TrafficStore> = Arc::new(store);
        let (rec, queue) = recorder::recorder(an.queue_size, metrics.events_dropped.clone());
        sinks.push(Arc::new(rec));
        background.spawn(recorder::drain(
            queue,
            store.clone(),
            Every {
                drain: an.drain_interval,
                maintain: an.bucket_interval,
                maintain_time: metrics.store_maintain.clone(),
            },
            background_stopped.clone(),
        ));
        analytics = Some(store);
    }
    let sink: Arc<dyn TrafficSink> = match sinks.len() {
        0 => Arc::new(Discard),
        1 => sinks.remove(0),
        _ => Arc::new(Tee(sinks)),
    };
    let gw = Arc::new(Gateway::new(&config, metrics, sink)?);
    // Policy plugins: compiled and checked before the first tick, then watched.
    let plugins = match &analytics {
        Some(_) => plugin::Plugins::new(&config, gw.metrics.clone())
            .map_err(StartError::Plugins)?
            .map(Arc::new),
        None => None,
    };
    if let Some(p) = &plugins {
        let p = p.clone();
        let _ = pace::spawn_background(move || p.rescan()).await;
    }
    let analyzer = analytics.map(|store| {
        Arc::new(Analyzer::new(
            gw.clone(),
            store,
            config.clone(),
            plugins.clone(),
        ))
    });

    if let Some(a) = &analyzer {
        // One tick before the listeners open, so what was learned before a restart is
        // served from the first request on (the periodic ticks run on a blocking thread and
        // could otherwise lose that race on a busy machine).
        let a = a.clone();
        let _ = pace::spawn_background(move || a.tick(now_ms())).await;
    }

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let proxy = bind("proxy", config.listen).await?;
    let admin = bind("admin", config.admin.listen).await?;
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let proxy_addr = local(&proxy, "proxy", config.listen)?;
    let admin_addr = local(&admin, "admin", config.admin.listen)?;

    let (stop_listeners, stopped) = watch::channel(false);
    let mut listeners = JoinSet::new();
    listeners.spawn(server::serve(
        proxy,
        gw.clone(),
        stopped.clone(),
        config.proxy.shutdown_timeout,
        config.proxy.keepalive_timeout,
    ));
    let analytics_api = analyzer
        .as_ref()
        .map(|a| analytics::api::router(gw.clone(), a.clone(), config.clone()));
    let admin_router = admin::router(gw.clone(), config.admin.token.clone(), analytics_api);
    let mut admin_stop = stopped;
    listeners.spawn(async move {
        let shutdown = async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(admin, admin_router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    });

    background.spawn(sweep_limiters(gw.clone(), background_stopped.clone()));
    if let Some(p) = plugins {
        background.spawn(plugin::watch::watch(p, background_stopped.clone()));
    }
    if let Some(a) = &analyzer {
        let an = &config.analytics;
        // The first tick ran before the listeners opened.
        background.spawn(every(
            an.analyzer_interval,
            an.analyzer_interval,
            background_stopped.clone(),
            {
                let a = a.clone();
                move || {
                    let a = a.clone();
                    async move {
                        let _ = pace::spawn_background(move || a.tick(now_ms())).await;
                    }
                }
            },
        ));
        background.spawn(every(
            Duration::ZERO,
            config.weighted_lb.rebalance_interval,
            background_stopped.clone(),
            {
                let a = a.clone();
                move || {
                    let a = a.clone();
                    async move { a.rebalance() }
                }
            },
        ));
    }

    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, routes = gw.routes.len(), analytics = analyzer.is_some(), "listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway: gw,
        analyzer,
        stop_listeners,
        listeners,
        stop_background,
        background,
        persist,
    })
}

impl Running {
    /// Stops accepting, waits for in-flight requests (up to `proxy.shutdown_timeout`), then
    /// records what is still queued and saves the buckets in progress.
    pub async fn shutdown(mut self) {
        let _ = self.stop_listeners.send(true);
        while self.listeners.join_next().await.is_some() {}
        let _ = self.stop_background.send(true);
        while self.background.join_next().await.is_some() {}
        if let Some(p) = self.persist.take() {
            let _ = pace::spawn_background(move || p.close()).await;
        }
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: &Config) -> Result<(), StartError> {
    let running = start(config).await?;
    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutting down");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, fall back to Ctrl-C only.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Runs `job` after `first`, then every `period`, until `stop` turns true.
async fn every<F, Fut>(first: Duration, period: Duration, mut stop: watch::Receiver<bool>, job: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => job().await,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

async fn sweep_limiters(gw: Arc<Gateway>, stop: watch::Receiver<bool>) {
    every(Duration::ZERO, LIMITER_SWEEP_INTERVAL, stop, || {
        let gw = gw.clone();
        async move {
            let now = Instant::now();
            for route in &gw.routes {
                if let Some(limiter) = &route.limiter {
                    limiter.sweep(now);
                }
            }
        }
    })
    .await
}
