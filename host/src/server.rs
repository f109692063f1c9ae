//! The proxy listener: accepts connections and serves each, and shuts down gracefully: stop
//! accepting, let in-flight requests finish, give up after a deadline.
//!
//! Every connection starts in the lean HTTP/1.1 loop ([`h1`]), which serves the common
//! request (HTTP/1.1, no body) itself. Anything else — request bodies, HTTP/1.0, h2c with
//! prior knowledge, malformed heads — is handed to hyper for the rest of the connection,
//! with the bytes already read ([`prefixed`]).

pub mod h1;
pub mod prefixed;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::body::RequestBody;
use crate::gateway::Gateway;
use crate::middleware::{self, ClientInfo};
use crate::proxy::headers::client_ip;
use h1::{End, Shared};
use prefixed::Prefixed;

/// Serves the proxy on `listener` until `shutdown` turns true, then drains for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    keepalive: Duration,
) {
    let shared = Arc::new(Shared {
        keepalive,
        gw,
        stop: CancellationToken::new(),
        stopping: AtomicBool::new(false),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(keepalive)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let ticker = shared.gw.clock.spawn_ticker();
    // Each connection task holds a sender; when all are gone, draining is over.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);

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
        let shared = shared.clone();
        let builder = builder.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            if let End::HandOff { stream, prefix } = h1::serve(stream, peer, &shared).await {
                let io = TokioIo::new(Prefixed::new(prefix, stream));
                serve_with_hyper(io, peer, &shared, &builder).await;
            }
            drop(open);
        });
    }

    drop(listener);
    // Before the token: an idle connection woken by it reads this (`h1::serve`).
    shared.stopping.store(true, Ordering::Release);
    shared.stop.cancel();
    tracing::info!(
        open_connections = open_tx.strong_count() - 1,
        "stopped accepting; draining in-flight requests"
    );
    drop(open_tx);
    tokio::select! {
        _ = open_rx.recv() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown deadline reached; closing remaining connections"),
    }
    ticker.abort();
}

/// Serves the rest of a connection with hyper (HTTP/1 in full, or h2c), through the same
/// request path.
async fn serve_with_hyper(
    io: TokioIo<Prefixed>,
    peer: SocketAddr,
    shared: &Shared,
    builder: &auto::Builder<TokioExecutor>,
) {
    let gw = shared.gw.clone();
    let peer_text = crate::proxy::headers::peer_text(peer);
    let svc = service_fn(move |req: http::Request<Incoming>| {
        let ip = client_ip(peer, req.headers(), &gw.trusted_proxies);
        let req = req.map(RequestBody::new);
        let client = ClientInfo {
            peer,
            ip,
            peer_text: peer_text.clone(),
        };
        let gw = gw.clone();
        async move {
            let mut res = middleware::handle(&gw, &client, req).await;
            middleware::fill_header_map(&mut res);
            Ok::<_, Infallible>(res)
        }
    });
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shared.stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
