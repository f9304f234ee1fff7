//! Claims: paths into the payload, scope and claim requirements, and the encoding of claims
//! into upstream header values so that no control byte or CR/LF can ever reach a header.

use std::fmt::Write as _;

use http::HeaderValue;
use serde_json::{Map, Value};

use crate::config::ClaimHeaderConfig;

/// A dot-separated path into the claims (`realm_access.roles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// Parses `a.b.c`; every segment must be non-empty.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("claim path must not be empty".to_owned());
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("{text:?} has an empty segment"));
        }
        Ok(Self(segments))
    }

    /// A top-level claim name.
    pub fn single(name: &str) -> Self {
        Self(vec![name.to_owned()])
    }

    /// The value at this path, if every step is an object member.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = claims.get(first)?;
        for segment in rest {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }
}

/// A condition on one claim.
#[derive(Debug, Clone)]
pub struct ClaimRequirement {
    /// Where the claim is.
    pub path: ClaimPath,
    /// What it must be.
    pub matcher: ClaimMatch,
}

/// What a claim must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimMatch {
    /// One of these values, compared as text (for an array claim: one of its elements).
    OneOf(Vec<String>),
    /// A string with exactly one `@`, a non-empty local part and a domain equal to one of these
    /// (lower-cased; compared without regard to ASCII case).
    EmailDomain(Vec<String>),
}

impl ClaimMatch {
    /// Whether the texts of this match come from string claims only (see [`match_texts`]).
    pub fn strings_only(&self) -> bool {
        matches!(self, ClaimMatch::EmailDomain(_))
    }
}

/// The texts a condition of this kind compares: [`rule_texts`], or for a strings-only condition
/// the claim's text only when it is a string.
pub fn match_texts(value: Option<&Value>, strings_only: bool) -> Vec<String> {
    if strings_only {
        match value {
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    } else {
        rule_texts(value)
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The texts a claim rule compares for a claim value: a scalar's text, or the texts of an
/// array's scalar elements; nothing for an object, `null` or a missing claim.
pub fn rule_texts(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(scalar_text).collect(),
        Some(v) => scalar_text(v).into_iter().collect(),
        None => Vec::new(),
    }
}

impl ClaimRequirement {
    /// Whether a claim's texts (see [`match_texts`]) satisfy the condition.
    pub fn accepts<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> bool {
        let mut texts = texts.into_iter();
        match &self.matcher {
            ClaimMatch::OneOf(values) => texts.any(|t| values.iter().any(|v| v == t)),
            ClaimMatch::EmailDomain(domains) => match (texts.next(), texts.next()) {
                (Some(email), None) => match email.split_once('@') {
                    Some((local, domain)) if !local.is_empty() && !domain.contains('@') => {
                        domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
                    }
                    _ => false,
                },
                _ => false,
            },
        }
    }

    /// Whether the claims satisfy this requirement.
    pub fn satisfied_by(&self, claims: &Map<String, Value>) -> bool {
        let texts = match_texts(self.path.lookup(claims), self.matcher.strings_only());
        self.accepts(texts.iter().map(String::as_str))
    }
}

/// A `scope` or `scp` claim of the wrong type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "scope claims must be a space-separated string (scope) or a string or array of strings (scp)"
)]
pub struct MalformedScopes;

/// The granted scopes: `scope` (a space-separated string, RFC 8693 §4.2 and RFC 9068) and `scp`
/// (an array of strings, or a string) together. Any other type is a malformed token, never
/// "no scopes": the IdP did not say what it meant.
pub fn granted_scopes(claims: &Map<String, Value>) -> Result<Vec<&str>, MalformedScopes> {
    let mut scopes = Vec::new();
    match claims.get("scope") {
        None => {}
        Some(Value::String(s)) => scopes.extend(s.split(' ').filter(|s| !s.is_empty())),
        Some(_) => return Err(MalformedScopes),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::String(s)) => scopes.extend(s.split(' ').filter(|s| !s.is_empty())),
        Some(Value::Array(items)) => {
            for item in items {
                scopes.push(item.as_str().ok_or(MalformedScopes)?);
            }
        }
        Some(_) => return Err(MalformedScopes),
    }
    Ok(scopes)
}

/// Percent-encodes `%`, every byte outside printable ASCII (0x20..=0x7e), and the bytes in
/// `also`, so that a value can never carry CR, LF or another control byte into a header and
/// percent-decoding gives back exactly the claim's text.
fn encode_header_text(text: &str, also: &[u8], out: &mut String) {
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' && !also.contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The header text for a claim value, `None` for null. The encoding is unambiguous:
/// - strings as they are, numbers and bools as text;
/// - arrays of scalars as their elements joined with `,`, a `,` inside an element encoded as
///   `%2C` (so `["a,admin"]` is `a%2Cadmin` and `["a","admin"]` is `a,admin`);
/// - other arrays and objects as compact JSON;
/// - `%` as `%25` and every byte outside printable ASCII as `%XX`, everywhere.
///
/// An upstream splits an array claim on `,` and percent-decodes each part.
pub fn claim_value_text(value: &Value) -> Option<String> {
    let mut out = String::new();
    match value {
        Value::Null => return None,
        Value::Array(items) if items.iter().all(|v| scalar_text(v).is_some()) => {
            for (i, text) in items.iter().filter_map(scalar_text).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                encode_header_text(&text, b",", &mut out);
            }
        }
        Value::Array(_) | Value::Object(_) => encode_header_text(&value.to_string(), b"", &mut out),
        scalar => encode_header_text(&scalar_text(scalar)?, b"", &mut out),
    }
    Some(out)
}

/// The upstream header values for these claims, one per configured claim header in order
/// (`None`: no such claim, or `null`). Values longer than the cap are left out and counted in
/// the second element.
pub fn claim_header_values(
    claims: &Map<String, Value>,
    config: &ClaimHeaderConfig,
) -> (Vec<Option<String>>, u64) {
    let mut rejected = 0u64;
    let values = config
        .headers
        .iter()
        .enumerate()
        .map(|(i, (path, _))| {
            let text = path.lookup(claims).and_then(claim_value_text)?;
            if text.len() > config.max_value_bytes {
                if i < 64 {
                    rejected |= 1 << i;
                }
                return None;
            }
            Some(text)
        })
        .collect();
    (values, rejected)
}

/// A claim header value as sent: the encoded text is printable ASCII, which every header value
/// may hold, so this is `None` only for a text that did not come from [`claim_value_text`].
pub fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    fn config(pairs: &[(&str, &str)], max: usize) -> ClaimHeaderConfig {
        ClaimHeaderConfig {
            headers: pairs
                .iter()
                .map(|(c, h)| {
                    (
                        ClaimPath::parse(c).expect("path"),
                        HeaderName::from_bytes(h.as_bytes()).expect("name"),
                    )
                })
                .collect(),
            default_mapping: (1 << pairs.len()) - 1,
            payload_header: None,
            max_value_bytes: max,
        }
    }

    #[test]
    fn nested_paths_reach_into_objects_only() {
        let c = claims(json!({"realm_access": {"roles": ["a", "b"]}, "x": "y"}));
        let path = ClaimPath::parse("realm_access.roles").expect("path");
        assert_eq!(path.lookup(&c), Some(&json!(["a", "b"])));
        assert_eq!(ClaimPath::parse("x.y").expect("path").lookup(&c), None);
        assert!(ClaimPath::parse("a..b").is_err());
        assert!(ClaimPath::parse("").is_err());
    }

    #[test]
    fn claim_requirements_match_scalars_and_array_members() {
        let c = claims(json!({"roles": ["admin", "dev"], "tier": 3, "email_verified": true}));
        let req = |p: &str, v: &[&str]| ClaimRequirement {
            path: ClaimPath::parse(p).expect("path"),
            matcher: ClaimMatch::OneOf(v.iter().map(|s| (*s).to_owned()).collect()),
        };
        assert!(req("roles", &["admin"]).satisfied_by(&c));
        assert!(!req("roles", &["root"]).satisfied_by(&c));
        assert!(req("tier", &["3"]).satisfied_by(&c));
        assert!(req("email_verified", &["true"]).satisfied_by(&c));
        assert!(!req("missing", &["x"]).satisfied_by(&c));
    }

    #[test]
    fn email_domain_holds_for_a_string_with_one_at_and_a_listed_domain_in_any_case() {
        let rule = ClaimRequirement {
            path: ClaimPath::parse("email").expect("path"),
            matcher: ClaimMatch::EmailDomain(vec![
                "example.com".to_owned(),
                "corp.example".to_owned(),
            ]),
        };
        let holds = |email: serde_json::Value| {
            rule.satisfied_by(json!({"email": email}).as_object().expect("object"))
        };
        assert!(holds(json!("alice@example.com")));
        assert!(holds(json!("Bob@EXAMPLE.Com")));
        assert!(holds(json!("c@corp.example")));
        for refused in [
            json!("alice@evil.com"),
            json!("alice@example.com.evil.com"),
            json!("alice@sub.example.com"),
            json!("alice@example.com@evil.com"),
            json!("@example.com"),
            json!("alice"),
            json!(["alice@example.com"]),
            json!(42),
            json!({"email": "alice@example.com"}),
        ] {
            assert!(!holds(refused.clone()), "{refused}");
        }
        assert!(
            !rule.satisfied_by(json!({}).as_object().expect("object")),
            "missing claim"
        );
    }

    #[test]
    fn scopes_come_from_scope_string_and_scp_array() {
        let c = claims(json!({"scope": "read  write", "scp": ["admin"]}));
        assert_eq!(granted_scopes(&c), Ok(vec!["read", "write", "admin"]));
        let c = claims(json!({"scp": "a b"}));
        assert_eq!(granted_scopes(&c), Ok(vec!["a", "b"]));
        assert_eq!(granted_scopes(&claims(json!({}))), Ok(vec![]));
    }

    #[test]
    fn scope_claims_of_another_type_are_malformed() {
        for c in [
            json!({"scope": 5}),
            json!({"scope": ["read"]}),
            json!({"scope": null}),
            json!({"scope": {"read": true}}),
            json!({"scp": 5}),
            json!({"scp": ["admin", 5]}),
            json!({"scp": [["admin"]]}),
            json!({"scope": "read", "scp": true}),
        ] {
            assert_eq!(
                granted_scopes(&claims(c.clone())),
                Err(MalformedScopes),
                "{c}"
            );
        }
    }

    #[test]
    fn header_values_never_carry_control_bytes() {
        let c = claims(json!({
            "sub": "evil\r\nX-Injected: 1",
            "name": "Jürgen",
            "n": 42,
            "ok": false,
            "roles": ["a", "b"],
            "obj": {"k": "v\n"},
            "mixed": [1, {"a": 1}],
            "null": null,
        }));
        let cfg = config(
            &[
                ("sub", "x-sub"),
                ("name", "x-name"),
                ("n", "x-n"),
                ("ok", "x-ok"),
                ("roles", "x-roles"),
                ("obj", "x-obj"),
                ("mixed", "x-mixed"),
                ("null", "x-null"),
            ],
            4096,
        );
        let (values, rejected) = claim_header_values(&c, &cfg);
        assert!(
            values.iter().flatten().all(|v| header_value(v).is_some()),
            "{values:?}"
        );
        let get = |n: &str| {
            cfg.headers
                .iter()
                .zip(&values)
                .find(|((_, h), _)| h == n)
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(get("x-sub").as_deref(), Some("evil%0D%0AX-Injected: 1"));
        assert_eq!(get("x-name").as_deref(), Some("J%C3%BCrgen"));
        assert_eq!(get("x-n").as_deref(), Some("42"));
        assert_eq!(get("x-ok").as_deref(), Some("false"));
        assert_eq!(get("x-roles").as_deref(), Some("a,b"));
        assert_eq!(get("x-obj").as_deref(), Some(r#"{"k":"v\n"}"#));
        assert_eq!(get("x-mixed").as_deref(), Some(r#"[1,{"a":1}]"#));
        assert_eq!(get("x-null"), None);
        assert_eq!(rejected, 0);
    }

    #[test]
    fn array_elements_with_commas_and_percent_signs_stay_distinct() {
        let text = |v: Value| claim_value_text(&v).expect("text");
        assert_eq!(text(json!(["a,admin"])), "a%2Cadmin");
        assert_eq!(text(json!(["a", "admin"])), "a,admin");
        assert_ne!(text(json!(["a,admin"])), text(json!(["a", "admin"])));
        // `%` is always encoded, so an encoded-looking claim cannot pose as another value.
        assert_eq!(text(json!("50%")), "50%25");
        assert_eq!(text(json!(["%2C"])), "%252C");
        assert_ne!(text(json!(["a%2Cadmin"])), text(json!(["a,admin"])));
        assert_eq!(text(json!("J\u{fc}rgen")), "J%C3%BCrgen");
        assert_ne!(text(json!("J%C3%BCrgen")), text(json!("J\u{fc}rgen")));
        // A string keeps its commas readable; only array elements need them encoded.
        assert_eq!(text(json!("Doe, John")), "Doe, John");
        assert_eq!(text(json!([1, true, "x"])), "1,true,x");
        assert_eq!(text(json!({"k": "50%"})), r#"{"k":"50%25"}"#);
    }

    #[test]
    fn oversized_values_are_omitted_and_counted() {
        let c = claims(json!({"sub": "a".repeat(20), "iss": "short"}));
        let (values, rejected) =
            claim_header_values(&c, &config(&[("sub", "x-sub"), ("iss", "x-iss")], 10));
        assert_eq!(values[0], None, "too long");
        assert!(values[1].is_some());
        assert_eq!(rejected, 0b01, "entry 0 left out (a bit per entry)");
    }
}
