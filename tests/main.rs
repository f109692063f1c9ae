//! End-to-end tests: real HTTP backends on 127.0.0.1, the real `microgate` binary in front
//! of them, real HTTP in between. One module per feature; builders live in `support`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod adaptive;
mod auth;
mod breaker;
mod config;
mod dashboard;
mod hook;
mod http1;
mod lifecycle;
mod observability;
mod policies;
mod proxy;
mod rate_limit;
