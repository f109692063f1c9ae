//! Route matching: which configured route a request path belongs to. Patterns are path
//! prefixes matched on whole segments (`/api/users` matches `/api/users` and
//! `/api/users/7`, not `/api/usersX`); a `{name}` segment matches any one segment. The
//! longest match wins; between equally long ones, the one with more literal segments wins.
//!
//! A segment trie keeps lookups proportional to the path's depth, not the number of routes.

use std::collections::HashMap;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// A parsed route path such as `/api/users/{id}`.
#[derive(Debug, Clone)]
pub struct RoutePattern {
    segments: Vec<Segment>,
}

impl RoutePattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("route path {text:?} must start with `/`"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segments = Vec::new();
        if rest.is_empty() {
            return Ok(Self { segments });
        }
        for seg in rest.split('/') {
            if seg.is_empty() {
                return Err(format!("route path {text:?} has an empty segment (`//`)"));
            }
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "route path {text:?}: a parameter is written `{{name}}` with letters, digits or `_`"
                    ));
                }
                segments.push(Segment::Param);
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "route path {text:?}: `{{...}}` must be a whole segment, as in `/users/{{id}}`"
                ));
            } else {
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        Ok(Self { segments })
    }

    /// True when both patterns match exactly the same paths (parameter names aside).
    pub fn same_match(&self, other: &RoutePattern) -> bool {
        self.segments == other.segments
    }
}

/// The result of a lookup: which route, and how many bytes of the path its prefix covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    pub route: usize,
    pub prefix_len: usize,
}

/// Maps request paths to route indices.
#[derive(Debug, Default)]
pub struct Router {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// foldhash: lookups are on the request path; SipHash's DoS resistance is not needed
    /// for a table built from the config.
    literals: HashMap<Box<str>, Node, foldhash::fast::RandomState>,
    param: Option<Box<Node>>,
    route: Option<usize>,
}

/// Best candidate so far: (segments matched, literal segments, route).
type Best = Option<(usize, usize, usize)>;

impl Router {
    /// Builds a router from patterns; index `i` of the input is route `i`.
    /// Later duplicates are ignored (validation rejects them before this).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a RoutePattern>) -> Self {
        let mut root = Node::default();
        for (i, pattern) in patterns.into_iter().enumerate() {
            let mut node = &mut root;
            for seg in &pattern.segments {
                node = match seg {
                    Segment::Literal(s) => node.literals.entry(s.as_str().into()).or_default(),
                    Segment::Param => node.param.get_or_insert_with(Default::default),
                };
            }
            node.route.get_or_insert(i);
        }
        Self { root }
    }

    /// Finds the route for a request path (the path only, no query).
    pub fn lookup(&self, path: &str) -> Option<RouteMatch> {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        // Segments on the stack for the usual path; a heap list only past 16 of them.
        let mut inline = [""; 16];
        let mut spill: Vec<&str> = Vec::new();
        let mut n = 0;
        if !trimmed.is_empty() {
            for seg in trimmed.split('/') {
                match inline.get_mut(n) {
                    Some(slot) => *slot = seg,
                    None => {
                        if spill.is_empty() {
                            spill.extend_from_slice(&inline);
                        }
                        spill.push(seg);
                    }
                }
                n += 1;
            }
        }
        let mut segs: &[&str] = if spill.is_empty() {
            &inline[..n]
        } else {
            &spill
        };
        if let Some((&"", rest)) = segs.split_last() {
            segs = rest;
        }
        let mut best: Best = None;
        walk(&self.root, segs, 0, 0, &mut best);
        let (depth, _, route) = best?;
        let prefix_len = if depth == 0 {
            0
        } else {
            segs[..depth].iter().map(|s| s.len() + 1).sum()
        };
        Some(RouteMatch { route, prefix_len })
    }
}

fn walk(node: &Node, segs: &[&str], depth: usize, literals: usize, best: &mut Best) {
    if let Some(route) = node.route {
        let better = match *best {
            None => true,
            Some((d, l, _)) => (depth, literals) > (d, l),
        };
        if better {
            *best = Some((depth, literals, route));
        }
    }
    let Some((seg, rest)) = segs.split_first() else {
        return;
    };
    if let Some(child) = node.literals.get(*seg) {
        walk(child, rest, depth + 1, literals + 1, best);
    }
    if let Some(child) = &node.param
        && !seg.is_empty()
    {
        walk(child, rest, depth + 1, literals, best);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(paths: &[&str]) -> Router {
        let patterns: Vec<RoutePattern> = paths
            .iter()
            .map(|p| RoutePattern::parse(p).unwrap())
            .collect();
        Router::new(&patterns)
    }

    fn route(r: &Router, path: &str) -> Option<usize> {
        r.lookup(path).map(|m| m.route)
    }

    #[test]
    fn longest_prefix_wins_on_whole_segments() {
        let r = router(&["/api", "/api/users", "/"]);
        assert_eq!(route(&r, "/api/users"), Some(1));
        assert_eq!(route(&r, "/api/users/"), Some(1));
        assert_eq!(route(&r, "/api/users/7/posts"), Some(1));
        assert_eq!(route(&r, "/api/usersX"), Some(0));
        assert_eq!(route(&r, "/api"), Some(0));
        assert_eq!(route(&r, "/other"), Some(2));
        assert_eq!(route(&r, "/"), Some(2));
    }

    #[test]
    fn long_paths_match_past_the_inline_segments() {
        let deep: String = (0..20).map(|i| format!("/s{i}")).collect();
        let r = router(&["/", &deep]);
        let m = r.lookup(&format!("{deep}/more/")).unwrap();
        assert_eq!((m.route, m.prefix_len), (1, deep.len()));
        assert_eq!(route(&r, &deep[..deep.len() - 4]), Some(0));
        // One trailing slash is dropped; a second leaves an empty segment, which a
        // parameter does not match.
        let r = router(&["/a", "/a/{x}"]);
        assert_eq!(route(&r, "/a/"), Some(0));
        assert_eq!(route(&r, "/a/b/"), Some(1));
        let m = r.lookup("/a//").unwrap();
        assert_eq!((m.route, m.prefix_len), (0, 2));
    }

    #[test]
    fn no_match_without_a_root_route() {
        let r = router(&["/api/users"]);
        assert_eq!(route(&r, "/api"), None);
        assert_eq!(route(&r, "/"), None);
    }

    #[test]
    fn params_match_one_segment_and_literals_beat_params() {
        let r = router(&["/api/users/{id}", "/api/users/me", "/api/users"]);
        assert_eq!(route(&r, "/api/users/42"), Some(0));
        assert_eq!(route(&r, "/api/users/42/orders"), Some(0));
        assert_eq!(route(&r, "/api/users/me"), Some(1));
        assert_eq!(route(&r, "/api/users"), Some(2));
        // An empty segment is not a parameter value.
        assert_eq!(route(&r, "/api/users//x"), Some(2));
    }

    #[test]
    fn deeper_param_route_beats_shallower_literal() {
        let r = router(&["/api/{v}/items", "/api/v1"]);
        assert_eq!(route(&r, "/api/v1/items/3"), Some(0));
        assert_eq!(route(&r, "/api/v1/other"), Some(1));
    }

    #[test]
    fn prefix_length_covers_the_matched_segments() {
        let r = router(&["/api/users", "/"]);
        assert_eq!(r.lookup("/api/users/7").unwrap().prefix_len, 10);
        assert_eq!(r.lookup("/api/users").unwrap().prefix_len, 10);
        assert_eq!(r.lookup("/x").unwrap().prefix_len, 0);
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(RoutePattern::parse("api").is_err());
        assert!(RoutePattern::parse("/a//b").is_err());
        assert!(RoutePattern::parse("/a/{}").is_err());
        assert!(RoutePattern::parse("/a/x{id}").is_err());
        assert!(RoutePattern::parse("/a/{id}/").is_ok());
    }

    #[test]
    fn same_match_ignores_param_names_and_trailing_slash() {
        let a = RoutePattern::parse("/a/{id}").unwrap();
        let b = RoutePattern::parse("/a/{x}/").unwrap();
        let c = RoutePattern::parse("/a/b").unwrap();
        assert!(a.same_match(&b));
        assert!(!a.same_match(&c));
    }
}
