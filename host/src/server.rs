//! The proxy listener: accepts connections, serves HTTP/1.1 and h2c (prior knowledge) on
//! each, and shuts down gracefully: stop accepting, let in-flight requests finish, give up
//! after a deadline.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

use crate::body::RequestBody;
use crate::gateway::Gateway;
use crate::middleware::{self, ClientInfo};
use crate::proxy::headers::client_ip;

/// Serves the proxy on `listener` until `shutdown` turns true, then drains for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    keepalive: Duration,
) {
    let stack = middleware::stack(gw.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(keepalive)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        };
        let _ = stream.set_nodelay(true);
        let stack = stack.clone();
        let gw = gw.clone();
        let svc = service_fn(move |req: http::Request<Incoming>| {
            let ip = client_ip(peer, req.headers(), &gw.trusted_proxies);
            let mut req = req.map(RequestBody::new);
            req.extensions_mut().insert(ClientInfo { peer, ip });
            stack.clone().call(req)
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        "stopped accepting; draining in-flight requests"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown deadline reached; closing remaining connections"),
    }
}
