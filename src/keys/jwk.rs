//! JWK and JWKS parsing with filtering: keys that are not for signatures, of an unsupported type
//! or curve, RSA under 2048 bits, symmetric, or malformed are skipped (and counted), never fatal
//! to the rest of the set. A set over the key-count cap is rejected whole.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::{KeyKind, KeySet, VerifyingKey};
use crate::verify::Alg;

/// Smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (bounds verification cost).
pub const MAX_RSA_BITS: usize = 8192;

/// Why a whole JWKS document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON.
    #[error("JWKS is not valid JSON")]
    Json,
    /// JSON, but not `{"keys": [...]}`.
    #[error("JWKS is not an object with a \"keys\" array")]
    Shape,
    /// More keys than the configured cap.
    #[error("JWKS has {found} keys, more than the cap of {cap}")]
    TooManyKeys {
        /// Keys in the document.
        found: usize,
        /// The cap.
        cap: usize,
    },
}

/// A parsed key set and how many keys were skipped.
#[derive(Debug)]
pub struct ParsedJwks {
    /// The usable keys.
    pub set: KeySet,
    /// Keys left out, with the reason for each (for logs).
    pub skipped: Vec<(Option<String>, &'static str)>,
}

/// Parses a JWKS document.
pub fn parse_jwks(body: &[u8], max_keys: usize) -> Result<ParsedJwks, JwksError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| JwksError::Json)?;
    let keys = doc
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
        .ok_or(JwksError::Shape)?;
    if keys.len() > max_keys {
        return Err(JwksError::TooManyKeys {
            found: keys.len(),
            cap: max_keys,
        });
    }
    let mut usable = Vec::with_capacity(keys.len());
    let mut skipped = Vec::new();
    for jwk in keys {
        match parse_jwk(jwk) {
            Ok(key) => usable.push(key),
            Err(reason) => {
                let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
                skipped.push((kid, reason));
            }
        }
    }
    Ok(ParsedJwks {
        set: KeySet::new(usable),
        skipped,
    })
}

fn b64_member(jwk: &Value, name: &str) -> Result<Vec<u8>, &'static str> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or("missing or non-string key parameter")?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| "key parameter is not base64url")
}

/// Parses one JWK into a verification key, or says why it is skipped.
pub fn parse_jwk(jwk: &Value) -> Result<VerifyingKey, &'static str> {
    let obj = jwk.as_object().ok_or("not an object")?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("kid is not a string"),
    };
    match obj.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("use is not sig"),
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops without verify");
        }
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(name.parse::<Alg>().map_err(|_| "unsupported alg")?),
        Some(_) => return Err("alg is not a string"),
    };
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or("missing kty")?;
    let (kind, key) = match kty {
        "RSA" => {
            let n = b64_member(jwk, "n")?;
            let e = b64_member(jwk, "e")?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            let bits = rsa_bits(n);
            if bits < MIN_RSA_BITS {
                return Err("RSA key under 2048 bits");
            }
            if bits > MAX_RSA_BITS {
                return Err("RSA key over 8192 bits");
            }
            if e.is_empty() || e.len() > 8 || e.last().is_some_and(|b| b & 1 == 0) {
                return Err("RSA exponent is not a small odd number");
            }
            (
                KeyKind::Rsa { bits },
                DecodingKey::from_rsa_raw_components(n, e),
            )
        }
        "EC" => {
            let crv = obj
                .get("crv")
                .and_then(Value::as_str)
                .ok_or("missing crv")?;
            let (kind, len) = match crv {
                "P-256" => (KeyKind::P256, 32),
                "P-384" => (KeyKind::P384, 48),
                _ => return Err("unsupported curve"),
            };
            let x = b64_member(jwk, "x")?;
            let y = b64_member(jwk, "y")?;
            if x.len() != len || y.len() != len {
                return Err("EC coordinates of the wrong length");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kind, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if obj.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                return Err("unsupported curve");
            }
            let x = b64_member(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key of the wrong length");
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        "oct" => return Err("symmetric key"),
        _ => return Err("unsupported kty"),
    };
    if let Some(alg) = alg
        && !kind.fits(alg)
    {
        return Err("alg does not fit the key type");
    }
    Ok(VerifyingKey::new(kid, kind, alg, key))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Bits of a big-endian unsigned integer without leading zero bytes.
pub(crate) fn rsa_bits(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_jwk(bits: usize) -> Value {
        let mut n = vec![0u8; bits / 8];
        n[0] = 0xC1;
        json!({"kty": "RSA", "kid": "r", "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"})
    }

    fn ec_jwk(crv: &str, len: usize) -> Value {
        let c = URL_SAFE_NO_PAD.encode(vec![1u8; len]);
        json!({"kty": "EC", "crv": crv, "x": c, "y": c, "kid": "e"})
    }

    #[test]
    fn good_keys_of_every_type_are_kept() {
        let ed = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let doc = json!({"keys": [rsa_jwk(2048), ec_jwk("P-256", 32), ec_jwk("P-384", 48),
            {"kty": "OKP", "crv": "Ed25519", "x": ed, "kid": "o"}]});
        let parsed = parse_jwks(doc.to_string().as_bytes(), 100).expect("parses");
        assert_eq!(parsed.set.len(), 4, "{:?}", parsed.skipped);
    }

    #[test]
    fn unusable_keys_are_skipped_and_the_rest_kept() {
        let mut enc = rsa_jwk(2048);
        enc["use"] = json!("enc");
        let mut no_verify = rsa_jwk(2048);
        no_verify["key_ops"] = json!(["sign"]);
        let mut wrong_alg = rsa_jwk(2048);
        wrong_alg["alg"] = json!("ES256");
        let mut hs = rsa_jwk(2048);
        hs["alg"] = json!("HS256");
        let doc = json!({"keys": [
            rsa_jwk(1024), enc, no_verify, wrong_alg, hs,
            {"kty": "oct", "k": "c2VjcmV0"},
            ec_jwk("P-521", 66), ec_jwk("P-256", 31),
            {"kty": "RSA", "n": "!!", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "x": "AAAA"},
            "not an object",
            rsa_jwk(4096),
        ]});
        let parsed = parse_jwks(doc.to_string().as_bytes(), 100).expect("parses");
        assert_eq!(parsed.set.len(), 1);
        assert_eq!(parsed.skipped.len(), 11);
    }

    #[test]
    fn a_set_over_the_key_cap_is_rejected_whole() {
        let doc = json!({"keys": vec![rsa_jwk(2048); 5]});
        assert_eq!(
            parse_jwks(doc.to_string().as_bytes(), 4).unwrap_err(),
            JwksError::TooManyKeys { found: 5, cap: 4 }
        );
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        assert_eq!(parse_jwks(b"{", 10).unwrap_err(), JwksError::Json);
        for doc in ["[]", "{}", r#"{"keys": {}}"#, r#"{"keys": null}"#] {
            assert_eq!(
                parse_jwks(doc.as_bytes(), 10).unwrap_err(),
                JwksError::Shape,
                "{doc}"
            );
        }
    }

    #[test]
    fn duplicate_kids_are_ambiguous_and_other_keys_still_work() {
        let mut a = rsa_jwk(2048);
        a["kid"] = json!("dup");
        let b = a.clone();
        let doc = json!({"keys": [a, b, rsa_jwk(2048)]});
        let parsed = parse_jwks(doc.to_string().as_bytes(), 10).expect("parses");
        assert!(matches!(
            parsed.set.find(Some("dup"), Alg::RS256),
            super::super::KeyLookup::AmbiguousKid
        ));
        assert!(matches!(
            parsed.set.find(Some("r"), Alg::RS256),
            super::super::KeyLookup::Found(_)
        ));
        assert!(matches!(
            parsed.set.find(Some("r"), Alg::ES256),
            super::super::KeyLookup::AlgorithmMismatch
        ));
    }
}
