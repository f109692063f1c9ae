//! Route names for analytics. A request that matches a configured route is named by that
//! route's pattern (`/api/users`, `/api/users/{id}`). One that matches none is named by its
//! normalised path: ID-like segments (numbers, UUIDs, long hex, base64-ish tokens) become
//! `{id}`. Distinct normalised names are capped; past the cap, requests share `{other}`, so a
//! flood of random paths cannot grow memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use prometheus::{IntCounter, IntGauge};

/// The shared name of every request past the cap.
pub const OTHER: &str = "{other}";

/// Interns normalised route names up to a cap.
pub struct RouteNames {
    known: DashMap<Box<str>, Arc<str>>,
    count: AtomicUsize,
    cap: usize,
    other: Arc<str>,
    overflow: IntCounter,
    tracked: IntGauge,
}

impl RouteNames {
    pub fn new(cap: usize, overflow: IntCounter, tracked: IntGauge) -> Self {
        Self {
            known: DashMap::new(),
            count: AtomicUsize::new(0),
            cap,
            other: OTHER.into(),
            overflow,
            tracked,
        }
    }

    /// The name for a request path no configured route matches.
    pub fn for_path(&self, path: &str) -> Arc<str> {
        let name = normalize(path);
        if let Some(known) = self.known.get(name.as_str()) {
            return known.clone();
        }
        match self.known.entry(name.into_boxed_str()) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                if self.count.load(Ordering::Relaxed) >= self.cap {
                    self.overflow.inc();
                    return self.other.clone();
                }
                self.count.fetch_add(1, Ordering::Relaxed);
                self.tracked.inc();
                let interned: Arc<str> = Arc::from(&**e.key());
                e.insert(interned.clone());
                interned
            }
        }
    }

    /// Number of distinct normalised names tracked.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Replaces ID-like segments of a path with `{id}`.
pub fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(256));
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if is_id_like(seg) {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Numbers, UUIDs, hex strings of 8+ characters with a digit, and base64-ish tokens
/// (16+ characters mixing digits with upper- and lower-case letters, or any such run of 32+).
pub fn is_id_like(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let is_uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if is_uuid {
        return true;
    }
    let has_digit = b.iter().any(u8::is_ascii_digit);
    if b.len() >= 8 && has_digit && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    let token_chars = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=' | b'+' | b'.' | b'~'));
    if !token_chars || !has_digit {
        return false;
    }
    let mixed_case = b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_lowercase);
    (b.len() >= 16 && mixed_case) || b.len() >= 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_like_segments() {
        for id in [
            "42",
            "0",
            "550e8400-e29b-41d4-a716-446655440000",
            "5f3a9c2b",
            "507f1f77bcf86cd799439011",
            "dGhpcyBpcyBhIHRva2Vu9",
            "eyJhbGciOiJIUzI1NiJ9",
            "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7",
        ] {
            assert!(is_id_like(id), "{id}");
        }
        for word in [
            "users",
            "v1",
            "api",
            "deadbeef",
            "orders",
            "user-settings",
            "2fa",
            "README.md",
            "profile-2024",
        ] {
            assert!(!is_id_like(word), "{word}");
        }
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalize("/api/users/123"), "/api/users/{id}");
        assert_eq!(
            normalize("/api/users/123/orders/550e8400-e29b-41d4-a716-446655440000"),
            "/api/users/{id}/orders/{id}"
        );
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/a//b/"), "/a/b");
    }

    #[test]
    fn names_are_capped() {
        let overflow = IntCounter::new("o", "o").unwrap();
        let tracked = IntGauge::new("t", "t").unwrap();
        let names = RouteNames::new(3, overflow.clone(), tracked.clone());
        let a = names.for_path("/x/1");
        let again = names.for_path("/x/2");
        assert!(
            Arc::ptr_eq(&a, &again),
            "same normalised name, same interned string"
        );
        assert_eq!(&*names.for_path("/b"), "/b");
        assert_eq!(&*names.for_path("/c"), "/c");
        assert_eq!(&*names.for_path("/d"), OTHER);
        assert_eq!(&*names.for_path("/e"), OTHER);
        assert_eq!(
            &*names.for_path("/b"),
            "/b",
            "known names still resolve past the cap"
        );
        assert_eq!(names.len(), 3);
        assert_eq!(overflow.get(), 2);
        assert_eq!(tracked.get(), 3);
    }
}
