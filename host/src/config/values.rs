//! Value types the YAML file spells as strings: durations ("250ms", "5m", "48h") and
//! backend URLs. They are parsed while deserialising, so a bad one is reported at its line.

use std::fmt;
use std::str::FromStr;

use http::uri::{Authority, Scheme, Uri};
use serde::de::{self, Deserialize, Deserializer};

/// `with = "duration"`: a humantime duration such as `1s`, `250ms`, `5m`, `48h`.
pub mod duration {
    use super::*;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(de::Error::custom)
    }

    pub(crate) fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!(
                "invalid duration {text:?} ({e}); write e.g. \"500ms\", \"5s\", \"1m\", \"48h\""
            )
        })
    }
}

/// `with = "opt_duration"`: an optional duration.
pub mod opt_duration {
    use super::*;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// `with = "byte_size"`: a size such as `16MiB`, `512KiB`, `1GiB`, or a number of bytes.
pub mod byte_size {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        parse(&text).map_err(de::Error::custom)
    }

    pub(crate) fn parse(text: &str) -> Result<u64, String> {
        let t = text.trim();
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "k" => 1 << 10,
            "MiB" | "MB" | "M" => 1 << 20,
            "GiB" | "GB" | "G" => 1 << 30,
            _ => 0,
        };
        number
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|_| scale > 0)
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(|| {
                format!(
                    "invalid size {text:?}; write e.g. \"16MiB\", \"512KiB\" or a number of bytes"
                )
            })
    }
}

/// A backend base URL: `http://host:port`, no path or query.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL as written, used as the backend's label in metrics and logs.
    pub label: String,
}

impl FromStr for BackendUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("invalid backend URL {text:?}: {e}"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            format!("backend URL {text:?} needs a scheme, e.g. \"http://{text}\"")
        })?;
        if scheme != Scheme::HTTP {
            return Err(format!(
                "backend URL {text:?}: only http:// backends are supported"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("backend URL {text:?} has no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "backend URL {text:?} must not have a path or query (routes decide the path)"
            ));
        }
        let label = format!("{scheme}://{authority}");
        Ok(Self {
            scheme,
            authority,
            label,
        })
    }
}

impl<'de> Deserialize<'de> for BackendUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls() {
        let b: BackendUrl = "http://127.0.0.1:9001".parse().unwrap();
        assert_eq!(b.label, "http://127.0.0.1:9001");
        assert_eq!(b.authority.port_u16(), Some(9001));
        assert!("http://127.0.0.1:9001/".parse::<BackendUrl>().is_ok());
        assert!("127.0.0.1:9001".parse::<BackendUrl>().is_err());
        assert!("https://x".parse::<BackendUrl>().is_err());
        assert!("http://x/api".parse::<BackendUrl>().is_err());
        assert!("http://x?q=1".parse::<BackendUrl>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(byte_size::parse("16MiB"), Ok(16 << 20));
        assert_eq!(byte_size::parse("512KiB"), Ok(512 << 10));
        assert_eq!(byte_size::parse("4096"), Ok(4096));
        assert!(byte_size::parse("lots").is_err());
        assert!(byte_size::parse("5 parsecs").is_err());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("48h"), Ok(Duration::from_secs(48 * 3600)));
        assert!(duration::parse("5 parsecs").is_err());
        assert!(duration::parse("5").is_err());
    }
}
