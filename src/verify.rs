//! JWT verification primitives: the accepted algorithms, strict compact-JWS parsing (three
//! unpadded base64url segments, JSON objects without duplicate members, no `crit`), numeric
//! dates, and the signature check. The algorithm comes from config and the key; the token's
//! `alg` only selects among what both allow.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::keys::VerifyingKey;

/// A signature algorithm authgate can verify. Symmetric (HS*) and `none` are not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms, reason = "JOSE names")]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// An algorithm name that authgate does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgError {
    /// Symmetric algorithms need a shared secret, which a JWKS never carries.
    #[error("{0:?}: symmetric (HS*) algorithms are not supported")]
    Symmetric(String),
    /// `none` is never accepted.
    #[error("\"none\" is never accepted")]
    None,
    /// Not a known asymmetric JWS algorithm.
    #[error("{0:?} is not a supported algorithm (RS256/384/512, PS256/384/512, ES256/384, EdDSA)")]
    Unknown(String),
}

impl Alg {
    /// Every algorithm, in the order of RFC 7518 (RFC 8037's EdDSA last).
    pub const ALL: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Alg::RS256 => J::RS256,
            Alg::RS384 => J::RS384,
            Alg::RS512 => J::RS512,
            Alg::PS256 => J::PS256,
            Alg::PS384 => J::PS384,
            Alg::PS512 => J::PS512,
            Alg::ES256 => J::ES256,
            Alg::ES384 => J::ES384,
            Alg::EdDSA => J::EdDSA,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = AlgError;

    /// Exact, case-sensitive JOSE names only (`rs256` is not RS256).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            other if other.eq_ignore_ascii_case("none") => return Err(AlgError::None),
            // Bytes, not `&other[..2]`: the name is attacker text and byte 2 may fall inside a
            // multi-byte character (a panic cargo-fuzz found).
            other
                if other
                    .as_bytes()
                    .get(..2)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"HS")) =>
            {
                return Err(AlgError::Symmetric(other.to_owned()));
            }
            other => return Err(AlgError::Unknown(other.to_owned())),
        })
    }
}

/// Why a token could not be parsed. Every variant means "bad token" to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not three non-empty base64url segments.
    #[error("not a compact JWS: {0}")]
    Shape(&'static str),
    /// A segment is not valid unpadded base64url.
    #[error("segment is not base64url")]
    Base64,
    /// Header or payload is not a JSON object (or has duplicate members).
    #[error("{0} is not a JSON object without duplicate members")]
    Json(&'static str),
    /// `alg` is missing, not a string, `none`, symmetric or unknown.
    #[error("unsupported alg")]
    Alg,
    /// `kid` or `typ` is present but not a string.
    #[error("header member {0} has the wrong type")]
    HeaderType(&'static str),
    /// `crit` names extensions authgate does not understand (RFC 7515 §4.1.11).
    #[error("critical header extensions are not supported")]
    Crit,
}

/// The protected header members authgate uses. `jku`, `x5u`, `jwk` and `x5c` are ignored on
/// purpose: keys only ever come from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    /// Signature algorithm named by the token.
    pub alg: Alg,
    /// Key id.
    pub kid: Option<String>,
    /// Media type (`at+jwt` for RFC 9068 access tokens).
    pub typ: Option<String>,
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct Jws<'a> {
    /// `base64url(header) . base64url(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The third segment, still base64url.
    pub signature: &'a str,
    /// Protected header.
    pub header: JoseHeader,
    /// Payload claims.
    pub claims: Map<String, Value>,
}

fn is_b64url(segment: &str) -> bool {
    segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A JSON object that refuses duplicate member names (serde_json alone keeps the last).
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom("duplicate member"));
                    }
                    map.insert(key, value);
                }
                Ok(UniqueObject(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

pub(crate) fn decode_object(
    segment: &str,
    what: &'static str,
) -> Result<Map<String, Value>, FormatError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| FormatError::Base64)?;
    serde_json::from_slice::<UniqueObject>(&bytes)
        .map(|o| o.0)
        .map_err(|_| FormatError::Json(what))
}

/// Parses a compact JWS strictly. The caller has already capped the token's size.
pub fn parse_compact(token: &str) -> Result<Jws<'_>, FormatError> {
    // Count dots first: a token of ten thousand dots costs one pass, not ten thousand splits.
    if token.bytes().filter(|&b| b == b'.').count() != 2 {
        return Err(FormatError::Shape("expected three segments"));
    }
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or(FormatError::Shape("expected three segments"))?;
    let (header_b64, payload_b64) = signing_input
        .split_once('.')
        .ok_or(FormatError::Shape("expected three segments"))?;
    if header_b64.is_empty() || payload_b64.is_empty() || signature.is_empty() {
        return Err(FormatError::Shape("empty segment"));
    }
    if !(is_b64url(header_b64) && is_b64url(payload_b64) && is_b64url(signature)) {
        return Err(FormatError::Base64);
    }
    let header = decode_object(header_b64, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => name.parse::<Alg>().map_err(|_| FormatError::Alg)?,
        _ => return Err(FormatError::Alg),
    };
    if header.contains_key("crit") {
        return Err(FormatError::Crit);
    }
    let string_member = |name: &'static str| match header.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FormatError::HeaderType(name)),
    };
    let header = JoseHeader {
        alg,
        kid: string_member("kid")?,
        typ: string_member("typ")?,
    };
    let claims = decode_object(payload_b64, "payload")?;
    Ok(Jws {
        signing_input,
        signature,
        header,
        claims,
    })
}

/// A claim that should be a numeric date is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a numeric date")]
pub struct NotNumericDate;

/// A JWT numeric date as whole seconds: a JSON number, integer or fraction (floored), within the
/// i64 range. Anything else is `Err`.
pub fn numeric_date(value: &Value) -> Result<i64, NotNumericDate> {
    let Value::Number(n) = value else {
        return Err(NotNumericDate);
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        // The bounds are exactly representable powers of two; `as` is exact after floor.
        #[allow(clippy::cast_possible_truncation, reason = "range checked just before")]
        Some(f)
            if f.is_finite()
                && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) =>
        {
            Ok(f.floor() as i64)
        }
        _ => Err(NotNumericDate),
    }
}

/// Checks the signature of `jws` with `key`, using the token's algorithm, which the caller has
/// already matched against config and the key.
pub fn signature_valid(jws: &Jws<'_>, key: &VerifyingKey) -> bool {
    if !key.supports(jws.header.alg) {
        return false;
    }
    jsonwebtoken::crypto::verify(
        jws.signature,
        jws.signing_input.as_bytes(),
        key.decoding_key(),
        jws.header.alg.to_jwt(),
    )
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn a_well_formed_token_parses() {
        let t = token(
            r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"sub":"a"}"#,
        );
        let jws = parse_compact(&t).expect("parses");
        assert_eq!(jws.header.alg, Alg::RS256);
        assert_eq!(jws.header.kid.as_deref(), Some("k1"));
        assert_eq!(jws.claims["sub"], "a");
        assert_eq!(jws.signature, "c2ln");
    }

    #[test]
    fn wrong_segment_counts_are_rejected() {
        for t in [
            "a.b",
            "a.b.c.d",
            "a.b.c.d.e",
            "abc",
            "",
            "...",
            "a..c",
            "a.b.",
        ] {
            assert!(parse_compact(t).is_err(), "{t:?}");
        }
        let many_dots = ".".repeat(10_000);
        assert!(matches!(
            parse_compact(&many_dots),
            Err(FormatError::Shape(_))
        ));
    }

    #[test]
    fn padding_and_foreign_bytes_are_rejected() {
        let good = token(r#"{"alg":"RS256"}"#, "{}");
        let padded = format!("{}=", good);
        assert_eq!(parse_compact(&padded).unwrap_err(), FormatError::Base64);
        let plus = good.replacen('c', "+", 1);
        assert!(parse_compact(&plus).is_err());
    }

    #[test]
    fn every_spelling_of_none_and_symmetric_algorithms_are_rejected() {
        for alg in [
            "none",
            "None",
            "NONE",
            "nOnE",
            "HS256",
            "hs512",
            "",
            "RS256 ",
            "rs256",
            "ES512",
            // Multi-byte characters across the two-byte "HS" prefix check (found by cargo-fuzz).
            "H\u{e9}256",
            "\u{e9}",
            "\u{1f600}S256",
            "H",
        ] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(parse_compact(&t).unwrap_err(), FormatError::Alg, "{alg}");
        }
        for header in [
            r#"{}"#,
            r#"{"alg":256}"#,
            r#"{"alg":null}"#,
            r#"{"alg":["RS256"]}"#,
        ] {
            assert_eq!(
                parse_compact(&token(header, "{}")).unwrap_err(),
                FormatError::Alg
            );
        }
    }

    #[test]
    fn crit_and_mistyped_members_are_rejected() {
        let crit = token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, "{}");
        assert_eq!(parse_compact(&crit).unwrap_err(), FormatError::Crit);
        let kid = token(r#"{"alg":"RS256","kid":7}"#, "{}");
        assert_eq!(
            parse_compact(&kid).unwrap_err(),
            FormatError::HeaderType("kid")
        );
    }

    #[test]
    fn duplicate_members_and_non_objects_are_rejected() {
        let dup = token(r#"{"alg":"RS256","alg":"none"}"#, "{}");
        assert_eq!(
            parse_compact(&dup).unwrap_err(),
            FormatError::Json("header")
        );
        let dup_claim = token(r#"{"alg":"RS256"}"#, r#"{"sub":"a","sub":"b"}"#);
        assert_eq!(
            parse_compact(&dup_claim).unwrap_err(),
            FormatError::Json("payload")
        );
        for payload in ["[]", "1", "\"x\"", "null", "{", "{}x"] {
            assert!(
                parse_compact(&token(r#"{"alg":"RS256"}"#, payload)).is_err(),
                "{payload}"
            );
        }
    }

    #[test]
    fn jku_and_jwk_headers_are_parsed_but_carry_no_key() {
        let t = token(
            r#"{"alg":"RS256","jku":"http://evil.example/jwks","jwk":{"kty":"RSA"},"x5u":"http://x"}"#,
            "{}",
        );
        let jws = parse_compact(&t).expect("parses");
        assert_eq!(
            jws.header,
            JoseHeader {
                alg: Alg::RS256,
                kid: None,
                typ: None
            }
        );
    }

    #[test]
    fn numeric_dates_accept_integers_and_fractions_only() {
        assert_eq!(
            numeric_date(&serde_json::json!(1_700_000_000)),
            Ok(1_700_000_000)
        );
        assert_eq!(numeric_date(&serde_json::json!(1.9)), Ok(1));
        assert_eq!(numeric_date(&serde_json::json!(-0.5)), Ok(-1));
        for bad in [
            serde_json::json!("1700000000"),
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(1e300),
            serde_json::json!([1]),
        ] {
            assert!(numeric_date(&bad).is_err(), "{bad}");
        }
        let huge: Value = serde_json::from_str("18446744073709551615").expect("u64");
        assert!(numeric_date(&huge).is_err());
    }
}
