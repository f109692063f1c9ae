//! The adaptive loop's analytics: the recorder takes one event per finished request, the
//! store keeps per-route and per-backend time buckets, the analyzer turns them into
//! baselines and anomalies and runs the policies, and the API shows what was learned.

pub mod analyzer;
pub mod anomaly;
pub mod api;
pub mod baseline;
pub mod bucket;
pub mod histogram;
pub mod recorder;
pub mod routes;
pub mod sqlite;
pub mod store;
pub mod windows;
