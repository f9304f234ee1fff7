//! Fuzz target `jwks`: the input is a JWKS document as an identity provider serves it (or a
//! `jwks_file` holds it). It goes through `parse_jwks` with the default key cap; every usable
//! key is then looked up by kid and by algorithm, and asked to verify a real RS256 signature
//! under every algorithm it supports, which builds the verification key from the fuzzed
//! material.
//!
//! Invariants, for any input:
//! - nothing panics;
//! - a parsed set accounts for every entry: usable + skipped = the `keys` array, within the cap;
//! - a lookup by algorithm finds only keys that support it; a lookup by a kid finds at most that
//!   one key, and only if it supports the algorithm;
//! - a signature made with RS256 verifies under no other algorithm.
#![no_main]

use authgate::config::{DEFAULT_ALGORITHMS, DEFAULT_MAX_KEYS};
use authgate::keys::KeyLookup;
use authgate::keys::jwk::parse_jwks;
use authgate::verify::{Alg, Jws, parse_compact, signature_valid};
use authgate_fuzz::{CANARY, bare_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_jwks(data, DEFAULT_MAX_KEYS) else {
        return;
    };
    let entries = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|doc| doc.get("keys")?.as_array().map(Vec::len));
    let total = parsed.set.len() + parsed.skipped.len();
    assert_eq!(Some(total), entries, "keys lost or invented");
    assert!(total <= DEFAULT_MAX_KEYS);

    let canary = std::str::from_utf8(bare_token(CANARY.trim().as_bytes())).expect("ascii canary");
    let canary = parse_compact(canary).expect("the canary parses");
    for alg in DEFAULT_ALGORITHMS {
        let KeyLookup::Found(keys) = parsed.set.find(None, alg) else {
            continue;
        };
        let jws = Jws {
            header: authgate::verify::JoseHeader {
                alg,
                ..canary.header.clone()
            },
            ..canary.clone()
        };
        for key in &keys {
            assert!(key.supports(alg), "{key:?} found for {alg}");
            let valid = signature_valid(&jws, key);
            assert!(
                !valid || alg == Alg::RS256,
                "an RS256 signature verified as {alg}"
            );
            if let Some(kid) = key.kid() {
                match parsed.set.find(Some(kid), alg) {
                    KeyLookup::Found(by_kid) => {
                        assert_eq!(by_kid.len(), 1);
                        assert_eq!(by_kid[0].kid(), Some(kid));
                    }
                    KeyLookup::AmbiguousKid => {}
                    other => panic!("kid {kid:?} of a key for {alg} looked up as {other:?}"),
                }
            }
        }
    }
});
