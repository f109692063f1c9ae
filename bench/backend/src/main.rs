//! The benchmark backend: `bench-backend ADDR [THREADS]`. Answers every request from memory:
//! a small body by default, 1 MB when the path contains `/big`, and after 5 ms when it
//! contains `/delay`. HTTP/1.1 with keep-alive.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const SMALL: &[u8] =
    b"{\"ok\":true,\"service\":\"bench-backend\",\"padding\":\"0123456789abcdef\"}\n";

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9101".into());
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-backend: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench-backend: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let big = big.clone();
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let big = big.clone();
                async move {
                    let path = req.uri().path();
                    let body = if path.contains("/big") {
                        big
                    } else {
                        Bytes::from_static(SMALL)
                    };
                    if path.contains("/delay") {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let mut res = Response::new(Full::new(body));
                    res.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(res)
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
