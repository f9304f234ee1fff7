//! Route rules: which rule a request falls under (first match wins), matched on host, method
//! and the canonical form of the original path. A rule is never skipped because the proxy left
//! out what it looks at, and a path an upstream could read differently is never matched.

use crate::config::{PathMatch, Route};

use super::model::{CheckRequest, DenyReason};

/// The configured rules, with what they look at, compiled once at load.
#[derive(Debug)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    /// Rules with a path prefix of at least one segment, by that first segment: a request is
    /// compared only with the rules of its own first segment and with `unindexed`.
    by_first_segment: std::collections::HashMap<String, Vec<usize>>,
    /// Every other rule (any path, `/`, a glob), in order.
    unindexed: Vec<usize>,
    /// Whether any rule looks at the path.
    has_path_rules: bool,
    /// Whether any rule looks at the host.
    has_host_rules: bool,
    /// Whether any rule looks at the method.
    has_method_rules: bool,
}

impl RouteTable {
    pub(crate) fn new(routes: &[Route]) -> Self {
        let mut by_first_segment: std::collections::HashMap<String, Vec<usize>> =
            std::collections::HashMap::new();
        let mut unindexed = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            match &route.path {
                PathMatch::Prefix(prefix) if !prefix.is_empty() => by_first_segment
                    .entry(first_segment(prefix).to_owned())
                    .or_default()
                    .push(i),
                _ => unindexed.push(i),
            }
        }
        Self {
            by_first_segment,
            unindexed,
            has_path_rules: routes.iter().any(|r| !matches!(r.path, PathMatch::Any)),
            has_host_rules: routes.iter().any(|r| r.host.is_some()),
            has_method_rules: routes.iter().any(|r| r.methods.is_some()),
            routes: routes.to_vec(),
        }
    }

    /// The action of the first rule `req` falls under; `None` when no rule matches (the
    /// default: a valid token is required).
    pub(crate) fn select(&self, req: &CheckRequest) -> Result<Option<&Route>, DenyReason> {
        // A rule cannot be skipped because the proxy left out what it looks at: a skipped deny
        // rule would let the request through on the default requirement.
        if (self.has_path_rules && req.path.is_none())
            || (self.has_host_rules && req.host.is_none())
            || (self.has_method_rules && req.method.is_none())
        {
            return Err(DenyReason::MalformedCheck);
        }
        // Only path rules look at the path: without them it is not even read.
        let path = match req.path.as_deref().filter(|_| self.has_path_rules) {
            None => None,
            Some(raw) => match canonical_path(raw) {
                Some(path) => Some(path),
                // A path the upstream may read differently cannot be matched against path rules
                // safely either way (an anonymous rule opened, a deny rule skipped).
                None => return Err(DenyReason::AmbiguousPath),
            },
        };
        // First match wins: the lowest-numbered matching rule among the two candidate lists
        // (each in order).
        let indexed: &[usize] = path
            .as_deref()
            .and_then(|p| self.by_first_segment.get(first_segment(p)))
            .map_or(&[], Vec::as_slice);
        let first = |candidates: &[usize]| {
            candidates.iter().copied().find(|&i| {
                self.routes
                    .get(i)
                    .is_some_and(|r| matches(r, req, path.as_deref()))
            })
        };
        let found = match (first(indexed), first(&self.unindexed)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(found.and_then(|i| self.routes.get(i)))
    }
}

/// The first segment of a path (`/api/v1` -> `api`, `/` -> ``).
fn first_segment(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split('/').next().unwrap_or("")
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Glob over a path: `*` matches within one segment, `**` across segments.
fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((b'*', rest)) if rest.first() == Some(&b'*') => {
            let rest = &rest[1..];
            (0..=path.len()).any(|i| glob_match(rest, &path[i..]))
        }
        Some((b'*', rest)) => {
            let segment_end = path.iter().position(|&b| b == b'/').unwrap_or(path.len());
            (0..=segment_end).any(|i| glob_match(rest, &path[i..]))
        }
        Some((c, rest)) => path.first() == Some(c) && glob_match(rest, &path[1..]),
    }
}

/// The path as route rules see it: percent-decoded, `.` and `..` segments resolved, repeated
/// slashes merged, query and fragment dropped. `None` when a proxy and an upstream could read it
/// differently: a raw byte outside visible ASCII anywhere in the URI (space, control bytes,
/// non-ASCII: upstreams repair those differently), an encoded `/`, `\`, `%` or control byte, a
/// backslash, a `;` (`..;/` path parameters), invalid UTF-8 once decoded, `..` above the root,
/// or no leading `/`.
pub(crate) fn canonical_path(raw: &str) -> Option<String> {
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return None;
    }
    let ambiguous = |b: u8| b == b'\\' || b == b';' || b < 0x20 || b == 0x7f;
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value == b'/' || value == b'%' || ambiguous(value) {
                return None;
            }
            decoded.push(value);
            i += 3;
        } else {
            if ambiguous(b) {
                return None;
            }
            decoded.push(b);
            i += 1;
        }
    }
    let text = String::from_utf8(decoded).ok()?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    let mut canonical = format!("/{}", segments.join("/"));
    if text.ends_with('/') && !segments.is_empty() {
        canonical.push('/');
    }
    Some(canonical)
}

/// Whether `route` matches; `path` is the canonical path (`None`: the proxy did not say).
fn matches(route: &Route, req: &CheckRequest, path: Option<&str>) -> bool {
    if let Some(host) = &route.host {
        let Some(req_host) = req.host.as_deref() else {
            return false;
        };
        if !host_without_port(req_host).eq_ignore_ascii_case(host) {
            return false;
        }
    }
    if let Some(methods) = &route.methods {
        let Some(method) = req.method.as_deref() else {
            return false;
        };
        if !methods.iter().any(|m| m == method) {
            return false;
        }
    }
    match (&route.path, path) {
        (PathMatch::Any, _) => true,
        // No original path known: only path-agnostic rules match, so a missing header can
        // never select an anonymous rule.
        (_, None) => false,
        (PathMatch::Prefix(prefix), Some(path)) => {
            prefix.is_empty()
                || path == prefix
                || path
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        (PathMatch::Glob(glob), Some(path)) => glob_match(glob.as_bytes(), path.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_path;

    #[test]
    fn every_raw_byte_outside_visible_ascii_makes_a_path_ambiguous() {
        for raw in [
            "/public/a b",
            "/public/a\tb",
            "/public/a\x7fb",
            "/public/\u{e9}",
            "/public/a?q=a b",
            " /public",
        ] {
            assert_eq!(canonical_path(raw), None, "{raw:?}");
        }
        assert_eq!(
            canonical_path("/public/a%20b").as_deref(),
            Some("/public/a b"),
            "an encoded space is the upstream's business, not ambiguous"
        );
        assert_eq!(canonical_path("/a/./b/../c?x=1").as_deref(), Some("/a/c"));
    }
}
