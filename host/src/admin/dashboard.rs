//! The dashboard page: static files compiled into the binary (no CDN, no internet at run
//! time), which fetch `/health` and `/analytics/*` themselves.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const APP: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/style.css");
const UPLOT_JS: &str = include_str!("../../assets/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/vendor/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../assets/vendor/uplot/LICENSE");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Every file of the page: path, content type, bytes.
const FILES: [(&str, &str, &str); 7] = [
    ("/dashboard", "text/html; charset=utf-8", INDEX),
    ("/dashboard/", "text/html; charset=utf-8", INDEX),
    ("/dashboard/app.js", "text/javascript; charset=utf-8", APP),
    ("/dashboard/style.css", "text/css; charset=utf-8", STYLE),
    (
        "/dashboard/uplot.min.js",
        "text/javascript; charset=utf-8",
        UPLOT_JS,
    ),
    (
        "/dashboard/uplot.min.css",
        "text/css; charset=utf-8",
        UPLOT_CSS,
    ),
    (
        "/dashboard/LICENSE.uplot.txt",
        "text/plain; charset=utf-8",
        UPLOT_LICENSE,
    ),
];

pub fn router() -> Router {
    FILES
        .into_iter()
        .fold(Router::new(), |router, (path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
}
