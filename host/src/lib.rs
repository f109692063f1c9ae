//! MicroGate: an API gateway that learns from its own traffic.
//!
//! The library takes a validated [`config::Config`] and runs the gateway; the `microgate`
//! binary owns the command line, the config file and signals. Start at [`start`] (tests call
//! it directly) and at [`middleware`] for the request path.

pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod middleware;
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

use config::Config;
use gateway::{BuildError, Gateway};
use traffic::TrafficSink;

/// How often idle rate-limit buckets are forgotten.
const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
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
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Binds both listeners and starts serving. Returns once the gateway accepts connections.
pub async fn start(config: &Config, sink: Arc<dyn TrafficSink>) -> Result<Running, StartError> {
    let gw = Arc::new(Gateway::new(config, sink)?);
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

    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(server::serve(
        proxy,
        gw.clone(),
        stopped.clone(),
        config.proxy.shutdown_timeout,
    ));
    let admin_router = admin::router(gw.clone(), config.admin.token.clone());
    let mut admin_stop = stopped.clone();
    tasks.spawn(async move {
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
    tasks.spawn(sweep_limiters(gw.clone(), stopped));

    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, routes = gw.routes.len(), "listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway: gw,
        stop,
        tasks,
    })
}

impl Running {
    /// Stops accepting, waits for in-flight requests (up to `proxy.shutdown_timeout`).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: &Config, sink: Arc<dyn TrafficSink>) -> Result<(), StartError> {
    let running = start(config, sink).await?;
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

async fn sweep_limiters(gw: Arc<Gateway>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(LIMITER_SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { let _ = stopped.wait_for(|s| *s).await; } => return,
        }
        let now = Instant::now();
        for route in &gw.routes {
            if let Some(limiter) = &route.limiter {
                limiter.sweep(now);
            }
        }
    }
}
