//! Fuzz target `forwarded_uri`: the input is the original request URI a proxy forwards
//! (`X-Original-URI`, `X-Forwarded-Uri`, Envoy's `:path`). It goes through the canonical-path
//! function route rules see, then through `decide()` against the fixture's routes (`/public`
//! anonymous, `/admin` denied, `/api/**` and `/ops` need a token) with no credential.
//!
//! Invariants of `canonical_path(raw)`, for any input, read off the function:
//! - `None` unless `raw` (before `?`/`#`) starts with `/` and all of `raw`, query included, is
//!   visible ASCII (a raw space, control byte or non-ASCII byte is not valid in a URI, and
//!   upstreams repair it differently);
//! - `Some(p)`: `p` starts with `/`, is no longer than `raw`, has no `.`, `..` or empty segment
//!   but for one trailing `/` (so no `//`, `/./`, `/../`), and holds no `%` at all (hence no `%2f`/`%5c` in any case), no
//!   backslash, no `;`, no control byte and no DEL: an escape of `/`, `%`, `\`, `;` or a control
//!   byte, a raw one, invalid UTF-8 after decoding, or `..` above the root all give `None`;
//! - idempotent: `canonical_path(p) == Some(p)` when `p` is visible ASCII without `?` or `#`.
//!   Only an escape can put the others in `p` (`%20`, `%3F`, `%23`, `%C3%A9`), and a second
//!   pass reads them as a raw space, a query, a fragment or raw non-ASCII.
//!
//! Invariants of the decision (with path rules configured, no token anywhere):
//! - `None` canonical path: deny `ambiguous_path`;
//! - under `/public` (segment boundary): an anonymous allow;
//! - under `/admin`: deny `route_denied`;
//! - otherwise a denial for another reason, or (only if the query smuggles a real token) an
//!   allow of a seed subject.
#![no_main]

use authgate::decision::{CheckRequest, Decision, DenyReason};
use authgate::fuzzing::canonical_path;
use authgate_fuzz::{Fixture, check_token_decision};
use libfuzzer_sys::fuzz_target;

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fuzz_target!(|data: &[u8]| {
    // Proxies forward header bytes; only UTF-8 ones reach the core as a path.
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let canonical = canonical_path(raw);
    let before_query = raw.split(['?', '#']).next().unwrap_or("");
    if !before_query.starts_with('/') || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        assert_eq!(
            canonical, None,
            "{raw:?}: no leading slash, or a raw byte outside visible ASCII"
        );
    }
    if let Some(p) = &canonical {
        assert!(p.starts_with('/'), "{raw:?} -> {p:?}");
        assert!(p.len() <= raw.len(), "{raw:?} -> longer {p:?}");
        if p != "/" {
            let body = &p[1..];
            let body = body.strip_suffix('/').unwrap_or(body);
            for segment in body.split('/') {
                assert!(
                    !matches!(segment, "" | "." | ".."),
                    "{raw:?} -> {p:?} keeps a segment {segment:?}"
                );
            }
        }
        assert!(
            !p.bytes()
                .any(|b| b == b'%' || b == b'\\' || b == b';' || b < 0x20 || b == 0x7f),
            "{raw:?} -> {p:?} keeps an ambiguous byte"
        );
        if p.bytes().all(|b| b.is_ascii_graphic()) && !p.contains(['?', '#']) {
            assert_eq!(
                canonical_path(p).as_deref(),
                Some(p.as_str()),
                "not idempotent on {raw:?}"
            );
        }
    }

    let req = CheckRequest {
        path: Some(raw.to_owned()),
        ..CheckRequest::for_test()
    };
    let decision = Fixture::get().decide(&req);
    match (canonical.as_deref(), &decision) {
        (None, Decision::Deny(d)) => assert_eq!(d.reason, DenyReason::AmbiguousPath, "{raw:?}"),
        (Some(p), Decision::Allow(a)) if under(p, "/public") => {
            assert!(
                a.identity.is_none(),
                "{raw:?}: anonymous allow with identity"
            );
        }
        (Some(p), Decision::Deny(d)) if under(p, "/admin") => {
            assert_eq!(d.reason, DenyReason::RouteDenied, "{raw:?}");
        }
        (Some(p), _) if under(p, "/public") || under(p, "/admin") => {
            panic!("{raw:?} (canonical {p:?}) decided {decision:?}")
        }
        (Some(_), decision) => check_token_decision(decision, None),
        (None, _) => panic!("ambiguous {raw:?} decided {decision:?}"),
    }
});
