//! DPoP proofs (RFC 9449 §4.3): what makes a token presented as `Authorization: DPoP` usable by
//! the one client that holds its key.
//!
//! A proof is a compact JWS with `typ: dpop+jwt`, an asymmetric `alg` from `dpop_proofs`, and
//! the client's public key in its `jwk` header (never a private one). Its claims tie it to one
//! request: `htm` and `htu` are the ORIGINAL request's method and URI (query and fragment
//! ignored, both sides normalised), `iat` is recent, `ath` is the hash of the access token, and
//! `jti` is not seen twice while the proof could be valid. What the proof yields is its key's
//! RFC 7638 thumbprint, which the core compares with the token's `cnf.jkt`. Server nonces are
//! not issued.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::config::DpopProofConfig;
use crate::keys::jwk::parse_jwk;
use crate::verify::{decode_object, numeric_date, parse_compact, signature_valid};

/// Longest `jti` accepted (RFC 9449 asks for enough randomness, not for length).
const MAX_JTI_BYTES: usize = 256;

/// Why a proof was refused. Every variant is `invalid_dpop_proof` to the client; the words go
/// to the debug log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof is malformed or does not fit this request and token.
    #[error("invalid DPoP proof: {0}")]
    Invalid(&'static str),
    /// The proof's `jti` was seen before, inside the window.
    #[error("DPoP proof replayed")]
    Replayed,
}

/// The original request a proof must name.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget<'a> {
    /// Upper-case method.
    pub method: Option<&'a str>,
    /// `http` or `https`, as the proxy told.
    pub scheme: Option<&'a str>,
    /// Host, possibly with a port.
    pub host: Option<&'a str>,
    /// Path, possibly with a query.
    pub path: Option<&'a str>,
}

/// Checks proofs and remembers their `jti`s. One per decider.
#[derive(Debug)]
pub struct ProofChecker {
    config: DpopProofConfig,
    /// SHA-256 of (key thumbprint, jti) -> when the entry may be forgotten (unix seconds).
    seen: quick_cache::sync::Cache<[u8; 32], i64>,
}

impl ProofChecker {
    /// A checker with `config`'s bounds.
    pub fn new(config: &DpopProofConfig) -> Self {
        Self {
            seen: quick_cache::sync::Cache::new(config.replay_cache_capacity),
            config: config.clone(),
        }
    }

    /// The settings it checks with.
    pub fn config(&self) -> &DpopProofConfig {
        &self.config
    }

    /// Checks `proof` for a request to `target` presenting `access_token` at `now` (unix
    /// seconds): the thumbprint of the proof's key (base64url) when the proof holds.
    pub fn check(
        &self,
        proof: &[u8],
        access_token: &str,
        target: ProofTarget<'_>,
        now: i64,
    ) -> Result<String, ProofError> {
        use ProofError::Invalid;
        if proof.len() > self.config.max_bytes {
            return Err(Invalid("too large"));
        }
        let proof = std::str::from_utf8(proof).map_err(|_| Invalid("not text"))?;
        let jws = parse_compact(proof.trim_matches(' ')).map_err(|_| Invalid("not a JWS"))?;
        if !jws
            .header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
        {
            return Err(Invalid("typ is not dpop+jwt"));
        }
        if !self.config.algorithms.contains(&jws.header.alg) {
            return Err(Invalid("alg not accepted"));
        }
        // parse_compact ignores `jwk` on purpose (a token's keys come from configuration); a
        // proof carries its key there.
        let header_b64 = jws.signing_input.split('.').next().unwrap_or("");
        let header = decode_object(header_b64, "header").map_err(|_| Invalid("header"))?;
        let jwk = match header.get("jwk") {
            Some(Value::Object(jwk)) => jwk,
            _ => return Err(Invalid("no jwk header")),
        };
        if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
            return Err(Invalid("jwk holds a private key"));
        }
        let thumbprint = thumbprint(jwk).ok_or(Invalid("jwk is not a public key"))?;
        let key = parse_jwk(&Value::Object(jwk.clone())).map_err(Invalid)?;
        if !signature_valid(&jws, &key) {
            return Err(Invalid("bad signature"));
        }
        let claims = &jws.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let jti = text("jti")
            .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
            .ok_or(Invalid("jti"))?;
        let htm = text("htm").ok_or(Invalid("htm"))?;
        if target.method != Some(htm) {
            return Err(Invalid("htm does not match the request"));
        }
        let htu = text("htu").ok_or(Invalid("htu"))?;
        let request_uri = match (target.scheme, target.host, target.path) {
            (Some(scheme), Some(host), Some(path)) => format!("{scheme}://{host}{path}"),
            _ => return Err(Invalid("the request's URI is unknown")),
        };
        match (normalized_uri(htu), normalized_uri(&request_uri)) {
            (Some(named), Some(request)) if named == request => {}
            _ => return Err(Invalid("htu does not match the request")),
        }
        let iat = claims
            .get("iat")
            .and_then(|v| numeric_date(v).ok())
            .ok_or(Invalid("iat"))?;
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        if iat < now.saturating_sub(secs(self.config.max_age)) {
            return Err(Invalid("iat too old"));
        }
        if iat > now.saturating_add(secs(self.config.leeway)) {
            return Err(Invalid("iat in the future"));
        }
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()));
        if text("ath") != Some(ath.as_str()) {
            return Err(Invalid("ath does not match the token"));
        }
        // Last, so that only proofs that hold take a place in the replay cache.
        let forget_at = now
            .saturating_add(secs(self.config.max_age))
            .saturating_add(secs(self.config.leeway));
        self.remember(&thumbprint, jti, now, forget_at)?;
        Ok(thumbprint)
    }

    /// Records `jti` for the key: `Replayed` when it is there and not yet forgotten, or being
    /// recorded by a concurrent check right now.
    fn remember(
        &self,
        thumbprint: &str,
        jti: &str,
        now: i64,
        forget_at: i64,
    ) -> Result<(), ProofError> {
        let mut hash = Sha256::new();
        hash.update((thumbprint.len() as u64).to_be_bytes());
        hash.update(thumbprint.as_bytes());
        hash.update(jti.as_bytes());
        let name: [u8; 32] = hash.finalize().into();
        use quick_cache::sync::GuardResult;
        match self.seen.get_value_or_guard(&name, Some(Duration::ZERO)) {
            GuardResult::Guard(guard) => {
                let _ = guard.insert(forget_at);
                Ok(())
            }
            GuardResult::Value(until) if until <= now => {
                self.seen.insert(name, forget_at);
                Ok(())
            }
            GuardResult::Value(_) | GuardResult::Timeout => Err(ProofError::Replayed),
        }
    }
}

/// JWK members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The RFC 7638 SHA-256 thumbprint (base64url) of a public JWK: the required members of its
/// key type, in lexicographic order, as JSON without white space. `None` for a key type
/// authgate does not know or a required member that is not a string.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match jwk.get("kty").and_then(Value::as_str)? {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = jwk.get(*name).and_then(Value::as_str)?;
        if i > 0 {
            canonical.push(',');
        }
        // serde_json writes the escapes RFC 7638 §3.3 asks for (RFC 8259, no white space).
        canonical.push_str(&serde_json::to_string(name).ok()?);
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(value).ok()?);
    }
    canonical.push('}');
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// An http(s) URI as RFC 9449 §4.3 compares it: without query and fragment, scheme and host in
/// lower case, the default port dropped, an empty path as `/`, dot segments resolved and
/// percent-encodings of unreserved characters decoded (RFC 3986 §6.2.2, §6.2.3). `None` for
/// anything else.
fn normalized_uri(uri: &str) -> Option<String> {
    let uri = uri.split(['?', '#']).next().unwrap_or("");
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || !authority.is_ascii() {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = match authority.rsplit_once(':') {
        // Not inside an IPv6 literal's brackets.
        Some((host, port)) if !port.contains(']') && (port == default_port || port.is_empty()) => {
            host.to_owned()
        }
        _ => authority,
    };
    let mut segments: Vec<String> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in parts.iter().enumerate() {
        let segment = decode_unreserved(segment)?;
        match segment.as_str() {
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => {
                segments.push(segment);
                continue;
            }
        }
        // A trailing dot segment leaves a directory: `/a/..` is `/`, `/a/.` is `/a/`.
        if i + 1 == parts.len() {
            segments.push(String::new());
        }
    }
    Some(format!("{scheme}://{authority}/{}", segments.join("/")))
}

/// A path segment with `%XX` of unreserved characters decoded and other escapes upper-cased;
/// `None` for a broken escape or a byte outside visible ASCII.
fn decode_unreserved(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let digit = |b: u8| char::from(b).to_digit(16);
            let value = u8::try_from(digit(hex[0])? * 16 + digit(hex[1])?).ok()?;
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push(char::from(hex[0]).to_ascii_uppercase());
                out.push(char::from(hex[1]).to_ascii_uppercase());
            }
            i += 3;
        } else if b.is_ascii_graphic() {
            out.push(char::from(b));
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thumbprint_of_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let jwk = jwk.as_object().expect("object");
        assert_eq!(
            thumbprint(jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
        assert_eq!(
            thumbprint(json!({"kty": "oct", "k": "x"}).as_object().expect("o")),
            None
        );
        assert_eq!(
            thumbprint(
                json!({"kty": "EC", "crv": "P-256", "x": "a"})
                    .as_object()
                    .expect("o")
            ),
            None
        );
    }

    #[test]
    fn uris_compare_as_rfc_9449_says() {
        let same = [
            (
                "https://api.example.com/a/b",
                "HTTPS://API.example.com:443/a/b?x=1#f",
            ),
            ("https://api.example.com", "https://api.example.com/"),
            (
                "http://127.0.0.1:8080/x/%7Euser",
                "http://127.0.0.1:8080/x/~user",
            ),
            ("https://h/a/./b/../c", "https://h/a/c"),
            ("https://h/a%2fb", "https://h/a%2Fb"),
        ];
        for (a, b) in same {
            assert_eq!(normalized_uri(a), normalized_uri(b), "{a} vs {b}");
            assert!(normalized_uri(a).is_some(), "{a}");
        }
        let different = [
            ("https://api.example.com/a", "http://api.example.com/a"),
            ("https://api.example.com/a", "https://api.example.com/b"),
            (
                "https://api.example.com/a",
                "https://api.example.com:8443/a",
            ),
            ("https://api.example.com/a", "https://other.example.com/a"),
            ("https://h/a%2fb", "https://h/a/b"),
        ];
        for (a, b) in different {
            assert_ne!(normalized_uri(a), normalized_uri(b), "{a} vs {b}");
        }
        for bad in [
            "ftp://h/a",
            "https:///a",
            "https://u@h/a",
            "https://h/%zz",
            "/a",
        ] {
            assert_eq!(normalized_uri(bad), None, "{bad}");
        }
    }
}
