//! Configuration: the YAML file is read with serde (unknown keys rejected, defaults for every
//! optional key), then `validate()` checks what serde cannot (references between sections,
//! duplicates, ranges). Every error names the key path and the line it sits on.

mod locate;
mod types;
mod values;

use std::fmt;
use std::path::Path;

pub use types::*;
pub use values::BackendUrl;

use crate::routing::RoutePattern;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Invalid>),
}

/// A rejected key: where it is and what is wrong with it.
#[derive(Debug)]
pub struct Invalid {
    pub file: String,
    /// Key path such as `routes[2].upstream`.
    pub key: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// The offending source line, shown under the message.
    pub source_line: Option<String>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: line {}, column {}: `{}`: {}",
            self.file, self.line, self.column, self.key, self.message
        )?;
        if let Some(text) = &self.source_line {
            let pad = " ".repeat(self.column.saturating_sub(1) as usize);
            write!(f, "\n  {:>4} | {text}\n       | {pad}^", self.line)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&src, &file)
    }

    /// Parses and validates YAML text; `file` names it in error messages.
    pub fn parse(src: &str, file: &str) -> Result<Config, ConfigError> {
        let mut key = String::new();
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        let parsed = serde_saphyr::with_deserializer_from_str_with_options(src, options, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                key = e.path().to_string();
                e.into_inner()
            })
        });
        let config: Config = match parsed {
            Ok(config) => config,
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .or_else(|| locate::locate(src, &key))
                    .unwrap_or((1, 1));
                return Err(invalid(
                    src,
                    file,
                    &key,
                    line,
                    column,
                    strip_location(&e.to_string()),
                ));
            }
        };
        config.validate().map_err(|(key, message)| {
            let (line, column) = locate::locate(src, &key).unwrap_or((1, 1));
            invalid(src, file, &key, line, column, message)
        })?;
        Ok(config)
    }

    /// Checks what deserialisation alone cannot. Returns the offending key path and why.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: String, msg: String| Err((key, msg));
        if self.listen == self.admin.listen && self.listen.port() != 0 {
            return err("admin.listen".into(), "must differ from `listen`".into());
        }
        if !self.admin.listen.ip().is_loopback() && self.admin.token.is_none() {
            return err(
                "admin.listen".into(),
                "the admin listener is off loopback: set `admin.token` so it is not open to all"
                    .into(),
            );
        }
        for (name, upstream) in &self.upstreams {
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return err(
                    format!("upstreams.{name}"),
                    "upstream names may hold only letters, digits, `_` and `-`".into(),
                );
            }
            if upstream.backends.is_empty() {
                return err(
                    format!("upstreams.{name}.backends"),
                    "an upstream needs at least one backend".into(),
                );
            }
        }
        let mut seen: Vec<(RoutePattern, usize)> = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let pattern = match RoutePattern::parse(&route.path) {
                Ok(p) => p,
                Err(msg) => return err(format!("routes[{i}].path"), msg),
            };
            if let Some((_, first)) = seen.iter().find(|(p, _)| p.same_match(&pattern)) {
                return err(
                    format!("routes[{i}].path"),
                    format!(
                        "duplicate route {:?}: routes[{first}] already matches the same paths",
                        route.path
                    ),
                );
            }
            seen.push((pattern, i));
            if !self.upstreams.contains_key(&route.upstream) {
                let known: Vec<&str> = self.upstreams.keys().map(String::as_str).collect();
                return err(
                    format!("routes[{i}].upstream"),
                    format!(
                        "unknown upstream {:?} (defined: {})",
                        route.upstream,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            match route.auth {
                AuthKind::ApiKey if self.auth.api_keys.is_empty() => {
                    return err(
                        format!("routes[{i}].auth"),
                        "`auth: api_key` needs at least one key in `auth.api_keys`".into(),
                    );
                }
                AuthKind::Jwt if self.auth.jwt.is_none() => {
                    return err(
                        format!("routes[{i}].auth"),
                        "`auth: jwt` needs an `auth.jwt` section".into(),
                    );
                }
                _ => {}
            }
            if let Some(rl) = &route.rate_limit {
                if rl.requests_per_minute == 0 {
                    return err(
                        format!("routes[{i}].rate_limit.requests_per_minute"),
                        "must be at least 1".into(),
                    );
                }
                if rl.burst == Some(0) {
                    return err(
                        format!("routes[{i}].rate_limit.burst"),
                        "must be at least 1".into(),
                    );
                }
            }
            for (key, value) in [
                ("connect_timeout", route.connect_timeout),
                ("request_timeout", route.request_timeout),
            ] {
                if value.is_some_and(|d| d.is_zero()) {
                    return err(format!("routes[{i}].{key}"), "must be longer than 0".into());
                }
            }
        }
        if self.auth.api_keys.iter().any(|k| k.is_empty()) {
            return err("auth.api_keys".into(), "API keys must not be empty".into());
        }
        if let Some(jwt) = &self.auth.jwt {
            if jwt.secret.is_none() && jwt.public_key.is_none() && jwt.public_key_file.is_none() {
                return err(
                    "auth.jwt".into(),
                    "set `secret` (HS256) and/or `public_key` or `public_key_file` (RS256)".into(),
                );
            }
            if jwt.public_key.is_some() && jwt.public_key_file.is_some() {
                return err(
                    "auth.jwt.public_key_file".into(),
                    "set either `public_key` or `public_key_file`, not both".into(),
                );
            }
        }
        let cb = &self.circuit_breaker;
        if !(cb.error_rate >= 0.0 && cb.error_rate <= 1.0) {
            return err(
                "circuit_breaker.error_rate".into(),
                "must be between 0 (off) and 1".into(),
            );
        }
        if cb.half_open_probes == 0 {
            return err(
                "circuit_breaker.half_open_probes".into(),
                "must be at least 1".into(),
            );
        }
        if self.proxy.worker_threads == Some(0) {
            return err("proxy.worker_threads".into(), "must be at least 1".into());
        }
        let an = &self.analytics;
        let arl = &self.adaptive_rate_limit;
        let wlb = &self.weighted_lb;
        for (key, value) in [
            ("proxy.connect_timeout", self.proxy.connect_timeout),
            ("proxy.request_timeout", self.proxy.request_timeout),
            ("circuit_breaker.window", cb.window),
            ("circuit_breaker.open_duration", cb.open_duration),
            ("analytics.analyzer_interval", an.analyzer_interval),
            ("weighted_lb.rebalance_interval", wlb.rebalance_interval),
            ("adaptive_rate_limit.burst_window", arl.burst_window),
        ] {
            if value.is_zero() {
                return err(key.into(), "must be longer than 0".into());
            }
        }
        self.validate_analytics()
    }

    fn validate_plugins(&self) -> Result<(), (String, String)> {
        let p = &self.plugins;
        let file_ok = |name: &str| {
            name.ends_with(".wasm")
                && !name.contains(['/', '\\'])
                && name != ".wasm"
                && !name.starts_with('.')
        };
        let mut uses: Vec<(&str, &str, String)> = Vec::new(); // (file, kind, key)
        for (kind, key, value) in [
            ("rate_limit", "plugins.rate_limit", &p.rate_limit),
            ("anomaly", "plugins.anomaly", &p.anomaly),
            ("weighting", "plugins.weighting", &p.weighting),
        ] {
            if let Some(f) = value {
                uses.push((f.as_str(), kind, key.to_owned()));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            match r.rate_limit_policy.as_deref() {
                None | Some("builtin") => {}
                Some(f) => uses.push((f, "rate_limit", format!("routes[{i}].rate_limit_policy"))),
            }
        }
        for (file, kind, key) in &uses {
            if !file_ok(file) {
                return Err((
                    key.clone(),
                    format!(
                        "{file:?} must be a `.wasm` file name in `plugins.dir` (no path), or `builtin`"
                    ),
                ));
            }
            if let Some((_, other, other_key)) =
                uses.iter().find(|(f, k, _)| f == file && k != kind)
            {
                return Err((
                    key.clone(),
                    format!(
                        "{file:?} is already the {other} plugin (`{other_key}`); one file serves one policy kind"
                    ),
                ));
            }
        }
        for name in p.params.keys() {
            if !uses.iter().any(|(f, _, _)| f == name) {
                return Err((
                    format!("plugins.params.{name}"),
                    "parameters for a plugin no policy uses".into(),
                ));
            }
        }
        if p.deadline.is_zero() {
            return Err(("plugins.deadline".into(), "must be longer than 0".into()));
        }
        if p.memory_limit < 2 << 20 {
            return Err((
                "plugins.memory_limit".into(),
                "must be at least 2MiB (a Rust plugin's stack alone is 1MiB)".into(),
            ));
        }
        if p.quarantine_after == 0 {
            return Err((
                "plugins.quarantine_after".into(),
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_analytics(&self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: &str| Err((key.to_owned(), msg.to_owned()));
        let an = &self.analytics;
        let ms = |d: std::time::Duration| d.as_millis();
        if ms(an.bucket_interval) == 0
            || !an.bucket_interval.subsec_nanos().is_multiple_of(1_000_000)
        {
            return err(
                "analytics.bucket_interval",
                "must be a whole number of milliseconds, at least 1ms",
            );
        }
        if an.window < an.bucket_interval * 2 {
            return err(
                "analytics.window",
                "must cover at least two buckets (`bucket_interval`)",
            );
        }
        if ms(an.rollup_interval) % ms(an.bucket_interval) != 0 {
            return err(
                "analytics.rollup_interval",
                "must be a multiple of `bucket_interval`",
            );
        }
        if an.rollup_after < an.window {
            return err(
                "analytics.rollup_after",
                "must be at least `window`, so baselines read full-resolution buckets",
            );
        }
        if an.retention < an.rollup_after {
            return err("analytics.retention", "must be at least `rollup_after`");
        }
        if an.queue_size == 0 {
            return err("analytics.queue_size", "must be at least 1");
        }
        if an.drain_interval.is_zero() {
            return err("analytics.drain_interval", "must be more than 0");
        }
        if an.background_nice > 19 {
            return err("analytics.background_nice", "must be from 0 to 19");
        }
        if an.background_slice.is_zero() {
            return err("analytics.background_slice", "must be more than 0");
        }
        if !(an.anomaly.z_threshold.is_finite() && an.anomaly.z_threshold > 0.0) {
            return err("analytics.anomaly.z_threshold", "must be a positive number");
        }
        let arl = &self.adaptive_rate_limit;
        if !(arl.multiplier.is_finite() && arl.multiplier > 0.0) {
            return err(
                "adaptive_rate_limit.multiplier",
                "must be a positive number",
            );
        }
        if !(arl.min_limit.is_finite() && arl.min_limit > 0.0) {
            return err(
                "adaptive_rate_limit.min_limit",
                "must be a positive number of requests per minute",
            );
        }
        if !(arl.max_limit.is_finite() && arl.max_limit >= arl.min_limit) {
            return err(
                "adaptive_rate_limit.max_limit",
                "must be at least `min_limit`",
            );
        }
        let share = self.weighted_lb.min_share;
        if !(0.0..0.5).contains(&share) {
            return err("weighted_lb.min_share", "must be at least 0 and below 0.5");
        }
        self.validate_plugins()?;
        let ab = &self.circuit_breaker.adaptive;
        if !(ab.error_multiplier.is_finite() && ab.error_multiplier > 0.0) {
            return err(
                "circuit_breaker.adaptive.error_multiplier",
                "must be a positive number",
            );
        }
        if !(ab.min_threshold > 0.0 && ab.min_threshold <= 1.0) {
            return err(
                "circuit_breaker.adaptive.min_threshold",
                "must be above 0 and at most 1",
            );
        }
        Ok(())
    }
}

fn invalid(
    src: &str,
    file: &str,
    key: &str,
    line: u64,
    column: u64,
    message: String,
) -> ConfigError {
    let key = match key.trim_matches('.') {
        "" => "(top level)".to_owned(),
        k => k.to_owned(),
    };
    let source_line = src
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .map(|l| l.to_owned());
    ConfigError::Invalid(Box::new(Invalid {
        file: file.to_owned(),
        key,
        line,
        column,
        message,
        source_line,
    }))
}

/// serde-saphyr appends " at line L, column C"; we print the location ourselves.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests;
