//! The host's one `bindgen!`: the WIT contract in `wit/` as Rust. The `types` and `host`
//! interfaces are generated once (with the rate-limit world) and shared by the others.

pub mod rate_limit {
    wasmtime::component::bindgen!({
        world: "rate-limit",
        path: "../wit",
    });
}

pub mod anomaly {
    wasmtime::component::bindgen!({
        world: "anomaly-policy",
        path: "../wit",
        with: {
            "microgate:policy/types": super::rate_limit::microgate::policy::types,
            "microgate:policy/host": super::rate_limit::microgate::policy::host,
        },
    });
}

pub mod weighting {
    wasmtime::component::bindgen!({
        world: "backend-weighting",
        path: "../wit",
        with: {
            "microgate:policy/types": super::rate_limit::microgate::policy::types,
            "microgate:policy/host": super::rate_limit::microgate::policy::host,
        },
    });
}

pub use rate_limit::microgate::policy::host;
pub use rate_limit::microgate::policy::types;
