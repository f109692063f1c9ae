//! The SDK for MicroGate policies.
//!
//! A policy is a small Rust crate built for `wasm32-wasip2`: implement one of the traits
//! ([`RateLimit`], [`AnomalyPolicy`], [`Weighting`]) for a type and name it in [`export!`].
//! The types are plain Rust structs and enums generated from the WIT contract in `wit/`;
//! they can be built in unit tests, and the policy logic runs natively under `cargo test`.
//!
//! ```
//! use microgate_policy::*;
//!
//! #[derive(Default)]
//! struct Fixed { per_minute: f64 }
//!
//! impl RateLimit for Fixed {
//!     fn configure(&mut self, params: &Params) -> Result<(), String> {
//!         self.per_minute = params.f64_or("per_minute", 60.0)?;
//!         Ok(())
//!     }
//!     fn decide(&self, _route: &Series, _static_limit: Option<f64>) -> LimitDecision {
//!         LimitDecision::Limit(self.per_minute)
//!     }
//! }
//!
//! export!(rate_limit: Fixed);
//! # fn main() {}
//! ```
//!
//! Policies run on the gateway's analyzer tick, in a fresh instance each tick, under a
//! deadline and a memory cap; they see no filesystem, network, environment or clock. The
//! [`host`] module reaches back into the gateway (logging, other series' baselines and
//! history).

// wit-bindgen's generated code uses `unsafe` for the canonical ABI.
#![allow(unsafe_code)]

use std::any::Any;
use std::cell::RefCell;

pub use wit_bindgen;

// Lets the generated code name this crate the same way from inside and outside it.
extern crate self as microgate_policy;

#[doc(hidden)]
pub mod bindings {
    /// The `rate-limit` world; the shared `types` and `host` interfaces are generated here.
    pub mod rate_limit {
        wit_bindgen::generate!({
            world: "rate-limit",
            path: "../../wit",
            additional_derives: [PartialEq],
            pub_export_macro: true,
            export_macro_name: "__export_rate_limit_world",
            default_bindings_module: "::microgate_policy::bindings::rate_limit",
            runtime_path: "::microgate_policy::wit_bindgen::rt",
        });
    }

    /// The `anomaly-policy` world, reusing the types above.
    pub mod anomaly {
        wit_bindgen::generate!({
            world: "anomaly-policy",
            path: "../../wit",
            with: {
                "microgate:policy/types@0.1.0": super::rate_limit::microgate::policy::types,
                "microgate:policy/host@0.1.0": super::rate_limit::microgate::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__export_anomaly_world",
            default_bindings_module: "::microgate_policy::bindings::anomaly",
            runtime_path: "::microgate_policy::wit_bindgen::rt",
        });
    }

    /// The `backend-weighting` world, reusing the types above.
    pub mod weighting {
        wit_bindgen::generate!({
            world: "backend-weighting",
            path: "../../wit",
            with: {
                "microgate:policy/types@0.1.0": super::rate_limit::microgate::policy::types,
                "microgate:policy/host@0.1.0": super::rate_limit::microgate::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__export_weighting_world",
            default_bindings_module: "::microgate_policy::bindings::weighting",
            runtime_path: "::microgate_policy::wit_bindgen::rt",
        });
    }
}

pub use bindings::rate_limit::microgate::policy::types::{
    BackendStats, Baseline, BreakerState, Bucket, Finding, LimitDecision, Metric, Series,
    SeriesKind, Stat, Window,
};

/// A rate-limit policy: the limit for one route on each tick.
pub trait RateLimit: Default + 'static {
    /// Reads the plugin's parameters into the policy (which starts as `Default`); an error
    /// rejects the plugin. By default parameters are ignored.
    fn configure(&mut self, params: &Params) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// The limit for `route`: `Limit(requests per minute)`, `Learning` to let the route's
    /// static limit (`static_limit`, if any) apply, or `Unlimited`.
    fn decide(&self, route: &Series, static_limit: Option<f64>) -> LimitDecision;
}

/// An anomaly policy: which metrics of a route or backend are anomalous.
pub trait AnomalyPolicy: Default + 'static {
    /// Reads the plugin's parameters into the policy (which starts as `Default`); an error
    /// rejects the plugin. By default parameters are ignored.
    fn configure(&mut self, params: &Params) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// The anomalous metrics of `series` in its bucket under test; empty when all is well.
    fn detect(&self, series: &Series) -> Vec<Finding>;
}

/// A weighting policy: how an upstream's traffic is shared among its backends.
pub trait Weighting: Default + 'static {
    /// Reads the plugin's parameters into the policy (which starts as `Default`); an error
    /// rejects the plugin. By default parameters are ignored.
    fn configure(&mut self, params: &Params) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// One weight per backend, same order, not negative (the gateway normalises them).
    fn weigh(&self, upstream: &str, backends: &[BackendStats]) -> Vec<f64>;
}

/// A plugin's parameters from `config.yml`: the `params` of its entry, on top of the
/// settings of the section it replaces (e.g. `adaptive_rate_limit.multiplier`).
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The raw text of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A number, or `default` when absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("parameter `{key}` must be a number, not {v:?}")),
        }
    }

    /// A whole number, or `default` when absent.
    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("parameter `{key}` must be a whole number, not {v:?}")),
        }
    }

    /// A duration in seconds, written as a number of seconds or with a unit (`250ms`,
    /// `30s`, `5m`, `1h`, `2d`), or `default` when absent.
    pub fn seconds_or(&self, key: &str, default: f64) -> Result<f64, String> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let v = v.trim();
        let bad = || format!("parameter `{key}` must be a duration such as 30s or 5m, not {v:?}");
        let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
        let (number, unit) = v.split_at(split);
        let n: f64 = number.trim().parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "" | "s" => 1.0,
            "ms" => 0.001,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        Ok(n * scale).and_then(|s: f64| {
            if s.is_finite() && s >= 0.0 {
                Ok(s)
            } else {
                Err(bad())
            }
        })
    }
}

/// `(current − mean) / stddev`, or `None` when `stddev` is 0 (no spread to compare with).
pub fn z_score(current: f64, mean: f64, stddev: f64) -> Option<f64> {
    (stddev > 0.0 && stddev.is_finite()).then(|| (current - mean) / stddev)
}

impl Metric {
    /// Every metric, in a fixed order.
    pub const ALL: [Metric; 4] = [
        Metric::RequestRate,
        Metric::ErrorRate,
        Metric::LatencyMean,
        Metric::LatencyP99,
    ];

    /// The metric's baseline statistic.
    pub fn stat(self, b: &Baseline) -> Stat {
        match self {
            Metric::RequestRate => b.request_rate,
            Metric::ErrorRate => b.error_rate,
            Metric::LatencyMean => b.latency_mean_ms,
            Metric::LatencyP99 => b.latency_p99_ms,
        }
    }

    /// The metric's value in the bucket under test; `None` without traffic.
    pub fn current(self, w: &Window) -> Option<f64> {
        match self {
            Metric::RequestRate => Some(w.request_rate),
            Metric::ErrorRate => w.error_rate,
            Metric::LatencyMean => w.latency_mean_ms,
            Metric::LatencyP99 => w.latency_p99_ms,
        }
    }
}

/// Calls back into the gateway. Outside wasm (in native unit tests) logging goes to
/// stderr and the lookups find nothing.
pub mod host {
    use super::{Baseline, Bucket, SeriesKind};
    pub use crate::bindings::rate_limit::microgate::policy::host::Level;

    /// Writes a log line through the gateway's logger, tagged with the plugin's name.
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::rate_limit::microgate::policy::host::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("[{level:?}] {message}");
    }

    /// The latest baseline of any route or backend.
    pub fn baseline(kind: SeriesKind, name: &str) -> Option<Baseline> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::rate_limit::microgate::policy::host::lookup_baseline(kind, name);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (kind, name);
            None
        }
    }

    /// Up to `limit` most recent buckets of a route or backend, oldest first.
    pub fn recent_buckets(kind: SeriesKind, name: &str, limit: u32) -> Vec<Bucket> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::rate_limit::microgate::policy::host::recent_buckets(
            kind, name, limit,
        );
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (kind, name, limit);
            Vec::new()
        }
    }

    /// Start of the bucket under test (ms since the Unix epoch); 0 outside wasm.
    pub fn now_ms() -> i64 {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::rate_limit::microgate::policy::host::now_ms();
        #[cfg(not(target_arch = "wasm32"))]
        0
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    thread_local! {
        static POLICY: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// Builds the policy from `Default` and its parameters, and keeps it.
    pub fn configure<P: Default + 'static>(
        apply: impl FnOnce(&mut P, &Params) -> Result<(), String>,
        params: Vec<(String, String)>,
    ) -> Result<(), String> {
        let mut policy = P::default();
        apply(&mut policy, &Params(params))?;
        POLICY.with(|p| *p.borrow_mut() = Some(Box::new(policy)));
        Ok(())
    }

    /// Runs `f` with the configured policy (`Default` if the host never configured it).
    pub fn with<P: Default + 'static, R>(f: impl FnOnce(&P) -> R) -> R {
        POLICY.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|b| !b.is::<P>()) {
                *slot = Some(Box::new(P::default()));
            }
            match slot.as_ref().and_then(|b| b.downcast_ref::<P>()) {
                Some(p) => f(p),
                None => unreachable!("the policy was just stored"),
            }
        })
    }
}

/// Exports a policy type as the plugin's component:
/// `export!(rate_limit: MyLimit)`, `export!(anomaly: MyDetector)` or
/// `export!(weighting: MyWeights)`.
#[macro_export]
macro_rules! export {
    (rate_limit: $policy:ty) => {
        #[doc(hidden)]
        pub struct __MicrogatePolicy;
        impl $crate::bindings::rate_limit::Guest for __MicrogatePolicy {
            fn configure(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::configure::<$policy>(<$policy as $crate::RateLimit>::configure, params)
            }
            fn decide(route: $crate::Series, static_limit: ::std::option::Option<f64>) -> $crate::LimitDecision {
                $crate::__private::with::<$policy, _>(|p| {
                    <$policy as $crate::RateLimit>::decide(p, &route, static_limit)
                })
            }
        }
        $crate::bindings::rate_limit::__export_rate_limit_world!(__MicrogatePolicy with_types_in $crate::bindings::rate_limit);
    };
    (anomaly: $policy:ty) => {
        #[doc(hidden)]
        pub struct __MicrogatePolicy;
        impl $crate::bindings::anomaly::Guest for __MicrogatePolicy {
            fn configure(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::configure::<$policy>(<$policy as $crate::AnomalyPolicy>::configure, params)
            }
            fn detect(series: $crate::Series) -> ::std::vec::Vec<$crate::Finding> {
                $crate::__private::with::<$policy, _>(|p| {
                    <$policy as $crate::AnomalyPolicy>::detect(p, &series)
                })
            }
        }
        $crate::bindings::anomaly::__export_anomaly_world!(__MicrogatePolicy with_types_in $crate::bindings::anomaly);
    };
    (weighting: $policy:ty) => {
        #[doc(hidden)]
        pub struct __MicrogatePolicy;
        impl $crate::bindings::weighting::Guest for __MicrogatePolicy {
            fn configure(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::configure::<$policy>(<$policy as $crate::Weighting>::configure, params)
            }
            fn weigh(upstream: ::std::string::String, backends: ::std::vec::Vec<$crate::BackendStats>) -> ::std::vec::Vec<f64> {
                $crate::__private::with::<$policy, _>(|p| {
                    <$policy as $crate::Weighting>::weigh(p, &upstream, &backends)
                })
            }
        }
        $crate::bindings::weighting::__export_weighting_world!(__MicrogatePolicy with_types_in $crate::bindings::weighting);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn numbers_and_durations() {
        let p = params(&[
            ("m", "3.5"),
            ("n", "7"),
            ("d", "5m"),
            ("e", "250ms"),
            ("s", "90"),
            ("bad", "x"),
        ]);
        assert_eq!(p.f64_or("m", 1.0), Ok(3.5));
        assert_eq!(p.f64_or("absent", 1.0), Ok(1.0));
        assert!(p.f64_or("bad", 1.0).is_err());
        assert_eq!(p.u64_or("n", 0), Ok(7));
        assert_eq!(p.seconds_or("d", 0.0), Ok(300.0));
        assert_eq!(p.seconds_or("e", 0.0), Ok(0.25));
        assert_eq!(p.seconds_or("s", 0.0), Ok(90.0));
        assert!(p.seconds_or("bad", 0.0).is_err());
    }

    #[test]
    fn the_last_value_of_a_key_wins() {
        assert_eq!(params(&[("k", "1"), ("k", "2")]).get("k"), Some("2"));
    }

    #[test]
    fn z_scores() {
        assert_eq!(z_score(500.0, 100.0, 100.0), Some(4.0));
        assert_eq!(z_score(500.0, 100.0, 0.0), None);
    }
}
