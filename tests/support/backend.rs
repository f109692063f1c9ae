//! Small real HTTP backends on 127.0.0.1:0. The default handler echoes the request as JSON
//! (backend name, method, path, query, headers, body length); tests can switch a backend's
//! status, add a delay, or install their own handler.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Reply = Response<BoxBody<Bytes, std::io::Error>>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn Future<Output = Reply> + Send>>
        + Send
        + Sync,
>;

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

impl Backend {
    /// An echo backend.
    pub async fn echo(name: &str) -> Backend {
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (s, d, n) = (status.clone(), delay_ms.clone(), name.to_owned());
        let handler: Handler = Arc::new(move |req| {
            let (s, d, n) = (s.clone(), d.clone(), n.clone());
            Box::pin(async move {
                echo(req, &n, s.load(Ordering::SeqCst), d.load(Ordering::SeqCst)).await
            })
        });
        Self::serve(name, handler, status, delay_ms).await
    }

    /// A backend with a custom handler.
    pub async fn with<F, Fut>(name: &str, f: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(f(req)));
        Self::serve(name, handler, Arc::default(), Arc::default()).await
    }

    async fn serve(
        name: &str,
        handler: Handler,
        status: Arc<AtomicU16>,
        delay_ms: Arc<AtomicU64>,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let handler = handler.clone();
                let counter = counter.clone();
                let svc = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            hits,
            status,
            delay_ms,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests this backend has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Status the echo handler answers with from now on.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Delay the echo handler waits before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops accepting new connections (open ones finish).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn echo(req: Request<Incoming>, name: &str, status: u16, delay_ms: u64) -> Reply {
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let version = format!("{:?}", req.version());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "backend": name, "method": method, "path": path, "query": query,
        "version": version, "headers": headers, "body_len": body.len(), "body_sum": checksum(&body),
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-backend-hop")
        .header("x-backend-hop", "should not reach the client")
        .header("x-backend", name)
        .body(full(json.to_string()))
        .unwrap()
}

/// A small body.
pub fn full(data: impl Into<Bytes>) -> BoxBody<Bytes, std::io::Error> {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// FNV-1a over the bytes: enough to tell a body arrived intact.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
