//! Finding the token (RFC 6750): the `Authorization: Bearer` header and, when enabled, a query
//! parameter of the original URI. Disabled sources are not read at all; two tokens in one
//! request, an empty `Bearer`, or control bytes in the header are a malformed request.

use std::borrow::Cow;

use crate::config::TokenConfig;
use crate::decision::{CheckRequest, DenyReason};

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    Header,
    /// The configured query parameter.
    Query,
    /// Handed over as it is by a caller that is not a proxy (`TokenService/Verify`).
    Caller,
    /// Exchanged for the request's HTTP Basic credentials (password grant).
    Password,
    /// The configured cookie.
    Cookie,
    /// The configured header of its own.
    CustomHeader,
    /// `Authorization: DPoP` (RFC 9449 §7.1): a token that comes with a proof of possession.
    Dpop,
}

/// A token and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken<'a> {
    /// The token text (not yet checked for format).
    pub token: Cow<'a, str>,
    /// Its source.
    pub source: TokenSource,
}

/// The token in an `Authorization` value, with whether its scheme is `DPoP` (read only when
/// `dpop` is on): `Ok(None)` for another scheme.
fn bearer(value: &[u8], dpop: bool) -> Result<Option<(&str, bool)>, DenyReason> {
    // Header values may legally hold HTAB and obs-text; a credential never does. (A fold without
    // an early exit: the compiler turns it into a vector loop over the whole token.)
    let outside = value
        .iter()
        .fold(false, |seen, &b| seen | !(0x20..0x7f).contains(&b));
    if outside {
        return Err(DenyReason::MalformedAuthorization);
    }
    // Safe: printable ASCII only, checked above.
    let text = std::str::from_utf8(value).map_err(|_| DenyReason::MalformedAuthorization)?;
    let text = text.trim_matches(' ');
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let is_dpop = dpop && scheme.eq_ignore_ascii_case("dpop");
    if !is_dpop && !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(DenyReason::EmptyToken);
    }
    if !is_b64token(token) {
        return Err(DenyReason::MalformedAuthorization);
    }
    Ok(Some((token, is_dpop)))
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
/// Anything else after `Bearer ` (a second word, a comma, a quote) is not a bearer credential.
/// (Range tests joined with non-short-circuit `|` and `&`, so that the compiler checks many
/// bytes per instruction: a table lookup per byte cost more than the cache lookup it precedes.)
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=').as_bytes();
    !body.is_empty()
        && body.iter().fold(true, |ok, &b| {
            ok & (b.is_ascii_lowercase()
                | b.is_ascii_uppercase()
                | b.is_ascii_digit()
                | (b == b'-')
                | (b == b'.')
                | (b == b'_')
                | (b == b'~')
                | (b == b'+')
                | (b == b'/'))
        })
}

/// Space or tab around a credential.
fn is_space(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// Splits an `Authorization` value that a proxy joined from repeated headers with `,` (Envoy
/// does, in both ext_authz modes). A comma starts a new credential only where a scheme follows
/// (a word without `=`, then a space): `Bearer a,Bearer b` is two credentials, while the
/// `, Signature=...` parameters of one AWS SigV4 or Digest credential stay together.
pub fn split_joined_credentials(value: &[u8]) -> Vec<Vec<u8>> {
    // The usual case, one credential: nothing to split (`contains` is a memchr).
    if !value.contains(&b',') {
        let start = value
            .iter()
            .position(|b| !is_space(b))
            .unwrap_or(value.len());
        let end = value
            .iter()
            .rposition(|b| !is_space(b))
            .map_or(start, |e| e + 1);
        return vec![value[start..end.max(start)].to_vec()];
    }
    let mut credentials: Vec<Vec<u8>> = Vec::new();
    for part in value.split(|&b| b == b',') {
        let start = part.iter().position(|b| !is_space(b)).unwrap_or(part.len());
        let trimmed = &part[start..];
        let starts_credential = trimmed
            .iter()
            .position(|&b| b == b' ')
            .is_some_and(|end| end > 0 && !trimmed[..end].contains(&b'='));
        match credentials.last_mut() {
            Some(current) if !starts_credential => {
                current.push(b',');
                current.extend_from_slice(part);
            }
            _ => credentials.push(trimmed.to_vec()),
        }
    }
    for credential in &mut credentials {
        while credential.last().is_some_and(is_space) {
            credential.pop();
        }
    }
    credentials
}

/// [`split_joined_credentials`] of a value the caller owns: the usual single credential without
/// surrounding spaces is returned as it is, without a copy.
pub fn split_joined_credentials_owned(value: Vec<u8>) -> Vec<Vec<u8>> {
    if value.contains(&b',')
        || value.first().is_some_and(is_space)
        || value.last().is_some_and(is_space)
    {
        split_joined_credentials(&value)
    } else {
        vec![value]
    }
}

/// The HTTP Basic credentials (RFC 7617) of an `Authorization` value: `None` for another
/// scheme, `Err` for a Basic credential that is not base64 of UTF-8 `user:password` with a
/// non-empty user and no control characters.
pub fn basic_credentials(value: &[u8]) -> Option<Result<(String, String), DenyReason>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(value).ok()?.trim_matches(' ');
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let parsed = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_start_matches(' '))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| {
            let (user, password) = pair.split_once(':')?;
            let printable = |s: &str| !s.chars().any(char::is_control);
            (!user.is_empty() && printable(user) && printable(password))
                .then(|| (user.to_owned(), password.to_owned()))
        });
    Some(parsed.ok_or(DenyReason::MalformedAuthorization))
}

/// The token in this request, `Ok(None)` when there is none. With `dpop` (an issuer accepts
/// DPoP), `Authorization: DPoP` carries a token too.
pub fn find_token<'a>(
    request: &'a CheckRequest,
    config: &TokenConfig,
    dpop: bool,
) -> Result<Option<FoundToken<'a>>, DenyReason> {
    let mut found: Option<FoundToken<'a>> = None;
    if config.header {
        if request.authorization.len() > 1 {
            return Err(DenyReason::MultipleTokens);
        }
        if let Some(value) = request.authorization.first()
            && let Some((token, is_dpop)) = bearer(value, dpop)?
        {
            found = Some(FoundToken {
                token: Cow::Borrowed(token),
                source: if is_dpop {
                    TokenSource::Dpop
                } else {
                    TokenSource::Header
                },
            });
        }
    }
    if let Some(name) = &config.query {
        let query = request
            .path
            .as_deref()
            .and_then(|p| p.split_once('?'))
            .map(|(_, q)| q.split_once('#').map_or(q, |(q, _)| q))
            .unwrap_or("");
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key != name.as_str() {
                continue;
            }
            if found.is_some() {
                return Err(DenyReason::MultipleTokens);
            }
            if value.is_empty() {
                return Err(DenyReason::EmptyToken);
            }
            found = Some(FoundToken {
                token: value,
                source: TokenSource::Query,
            });
        }
    }
    if let Some(name) = &config.cookie {
        for value in header_values(request, &http::header::COOKIE) {
            for (cookie, value) in cookie_pairs(value) {
                if cookie != name.as_str() {
                    continue;
                }
                if found.is_some() {
                    return Err(DenyReason::MultipleTokens);
                }
                found = Some(FoundToken {
                    token: Cow::Borrowed(token_text(value)?),
                    source: TokenSource::Cookie,
                });
            }
        }
    }
    if let Some(custom) = &config.custom_header {
        for value in header_values(request, &custom.name) {
            if found.is_some() {
                return Err(DenyReason::MultipleTokens);
            }
            let value = std::str::from_utf8(value)
                .map_err(|_| DenyReason::MalformedAuthorization)?
                .trim_start_matches(' ');
            let prefix = custom.prefix.as_str();
            let token = match value.get(..prefix.len()) {
                Some(head) if head.eq_ignore_ascii_case(prefix) => {
                    value[prefix.len()..].trim_matches(' ')
                }
                // The prefix alone (its trailing space trimmed by the proxy): no token.
                _ if value.trim_end().eq_ignore_ascii_case(prefix.trim_end()) => "",
                _ => return Err(DenyReason::MalformedAuthorization),
            };
            found = Some(FoundToken {
                token: Cow::Borrowed(token_text(token.as_bytes())?),
                source: TokenSource::CustomHeader,
            });
        }
    }
    Ok(found)
}

/// The values of `name` among the request's token headers.
fn header_values<'a>(
    request: &'a CheckRequest,
    name: &http::HeaderName,
) -> impl Iterator<Item = &'a [u8]> {
    request
        .token_headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// The pairs of a `Cookie` header (RFC 6265 §4.2.1), trimmed of spaces, empty ones skipped.
fn cookie_items(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// A cookie pair's name and value, trimmed of spaces, a value's surrounding double quotes
/// removed; `None` without `=` or for a name that is not UTF-8.
fn cookie_pair(item: &[u8]) -> Option<(&str, &[u8])> {
    let eq = item.iter().position(|&b| b == b'=')?;
    let name = std::str::from_utf8(item[..eq].trim_ascii()).ok()?;
    let value = item[eq + 1..].trim_ascii();
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    Some((name, value))
}

/// The `name=value` pairs of a `Cookie` header; pairs without `=` skipped.
fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
    cookie_items(header).filter_map(cookie_pair)
}

/// A token from a cookie or a header of its own: non-empty visible ASCII, else a malformed or
/// empty credential.
fn token_text(value: &[u8]) -> Result<&str, DenyReason> {
    if value.is_empty() {
        return Err(DenyReason::EmptyToken);
    }
    if !value.iter().all(u8::is_ascii_graphic) {
        return Err(DenyReason::MalformedAuthorization);
    }
    std::str::from_utf8(value).map_err(|_| DenyReason::MalformedAuthorization)
}

/// The request's cookies without the one named `name`, as one `Cookie` value (`a=1; b=2`).
pub fn cookies_without(token_headers: &[(http::HeaderName, Vec<u8>)], name: &str) -> String {
    let rest: Vec<String> = token_headers
        .iter()
        .filter(|(n, _)| n == http::header::COOKIE)
        .flat_map(|(_, value)| cookie_items(value))
        .filter(|item| cookie_pair(item).is_none_or(|(n, _)| n != name))
        .map(|item| String::from_utf8_lossy(item).into_owned())
        .collect();
    rest.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(query: bool) -> TokenConfig {
        TokenConfig {
            max_bytes: 8192,
            header: true,
            query: query.then(|| "access_token".to_owned()),
            cookie: None,
            custom_header: None,
            strip_upstream: false,
        }
    }

    /// The header source on, with a cookie `access_token` and a header `X-Api-Token` with
    /// prefix `Token `.
    fn every_source() -> TokenConfig {
        TokenConfig {
            cookie: Some("access_token".to_owned()),
            custom_header: Some(crate::config::CustomHeader {
                name: http::HeaderName::from_static("x-api-token"),
                prefix: "Token ".to_owned(),
            }),
            ..config(false)
        }
    }

    fn find_in(
        headers: &[(&'static str, &str)],
    ) -> Result<Option<(String, TokenSource)>, DenyReason> {
        let req = CheckRequest {
            token_headers: headers
                .iter()
                .map(|(n, v)| (http::HeaderName::from_static(n), v.as_bytes().to_vec()))
                .collect(),
            ..CheckRequest::for_test()
        };
        find_token(&req, &every_source(), true).map(|f| f.map(|f| (f.token.into_owned(), f.source)))
    }

    #[test]
    fn a_cookie_token_is_found_among_other_cookies_quoted_or_not() {
        let cookie = |v: &str| find_in(&[("cookie", v)]);
        assert_eq!(
            cookie("theme=dark; access_token=a.b.c; lang=en"),
            Ok(Some(("a.b.c".to_owned(), TokenSource::Cookie)))
        );
        assert_eq!(
            cookie("access_token=\"a.b.c\""),
            Ok(Some(("a.b.c".to_owned(), TokenSource::Cookie)))
        );
        assert_eq!(
            cookie("theme=dark; xaccess_token=a.b.c"),
            Ok(None),
            "another cookie"
        );
        assert_eq!(cookie("access_token="), Err(DenyReason::EmptyToken));
        assert_eq!(
            cookie("access_token=a b"),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            cookie("access_token=a.b.c; access_token=d.e.f"),
            Err(DenyReason::MultipleTokens)
        );
        assert_eq!(
            find_in(&[
                ("cookie", "access_token=a.b.c"),
                ("cookie", "access_token=d.e.f")
            ]),
            Err(DenyReason::MultipleTokens),
            "two Cookie headers"
        );
    }

    #[test]
    fn a_custom_header_token_needs_its_prefix_and_counts_against_other_sources() {
        let header = |v: &str| find_in(&[("x-api-token", v)]);
        assert_eq!(
            header("Token a.b.c"),
            Ok(Some(("a.b.c".to_owned(), TokenSource::CustomHeader)))
        );
        assert_eq!(
            header("token a.b.c"),
            Ok(Some(("a.b.c".to_owned(), TokenSource::CustomHeader)))
        );
        assert_eq!(
            header("a.b.c"),
            Err(DenyReason::MalformedAuthorization),
            "no prefix"
        );
        assert_eq!(header("Token "), Err(DenyReason::EmptyToken));
        assert_eq!(
            find_in(&[
                ("x-api-token", "Token a.b.c"),
                ("x-api-token", "Token d.e.f")
            ]),
            Err(DenyReason::MultipleTokens)
        );
        assert_eq!(
            find_in(&[
                ("cookie", "access_token=a.b.c"),
                ("x-api-token", "Token d.e.f")
            ]),
            Err(DenyReason::MultipleTokens),
            "cookie and custom header together"
        );
        let both = CheckRequest {
            authorization: vec![b"Bearer a.b.c".to_vec()],
            token_headers: vec![(http::header::COOKIE, b"access_token=d.e.f".to_vec())],
            ..CheckRequest::for_test()
        };
        assert_eq!(
            find_token(&both, &every_source(), true).map(|f| f.is_some()),
            Err(DenyReason::MultipleTokens),
            "header and cookie together"
        );
    }

    #[test]
    fn cookies_without_keeps_every_other_cookie_in_order() {
        let headers = vec![
            (http::header::COOKIE, b"a=1; access_token=x.y.z".to_vec()),
            (http::header::COOKIE, b"b=2;access_token =q".to_vec()),
        ];
        assert_eq!(cookies_without(&headers, "access_token"), "a=1; b=2");
        assert_eq!(cookies_without(&headers[..1], "a"), "access_token=x.y.z");
        assert_eq!(cookies_without(&[], "a"), "");
    }

    fn request(auth: &[&[u8]], path: &str) -> CheckRequest {
        CheckRequest {
            authorization: auth.iter().map(|v| v.to_vec()).collect(),
            path: Some(path.to_owned()),
            ..CheckRequest::for_test()
        }
    }

    fn find(
        auth: &[&[u8]],
        path: &str,
        query: bool,
    ) -> Result<Option<(String, TokenSource)>, DenyReason> {
        let req = request(auth, path);
        find_token(&req, &config(query), false).map(|f| f.map(|f| (f.token.into_owned(), f.source)))
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_allows_several_spaces() {
        for v in [
            &b"Bearer abc"[..],
            b"bearer abc",
            b"BEARER   abc",
            b"Bearer abc  ",
        ] {
            assert_eq!(
                find(&[v], "/", false),
                Ok(Some(("abc".into(), TokenSource::Header)))
            );
        }
    }

    #[test]
    fn other_schemes_are_no_token() {
        assert_eq!(find(&[b"Basic dXNlcjpwYXNz"], "/", false), Ok(None));
        assert_eq!(find(&[b"Bearerabc"], "/", false), Ok(None));
        assert_eq!(find(&[], "/", false), Ok(None));
    }

    #[test]
    fn empty_bearer_and_control_bytes_are_malformed_requests() {
        assert_eq!(find(&[b"Bearer"], "/", false), Err(DenyReason::EmptyToken));
        assert_eq!(
            find(&[b"Bearer    "], "/", false),
            Err(DenyReason::EmptyToken)
        );
        assert_eq!(
            find(&[b"Bearer\tabc"], "/", false),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            find(&[b"Bearer a\x00b"], "/", false),
            Err(DenyReason::MalformedAuthorization)
        );
        assert_eq!(
            find(&[b"Bearer \xff\xfe"], "/", false),
            Err(DenyReason::MalformedAuthorization)
        );
    }

    #[test]
    fn a_credential_that_is_not_one_b64token_is_a_malformed_request() {
        for v in [
            &b"Bearer a.b.c junk"[..],
            b"Bearer a.b.c d.e.f",
            b"Bearer a,b",
            b"Bearer \"a.b.c\"",
            b"Bearer a.b.c;x",
            b"Bearer ====",
        ] {
            assert_eq!(
                find(&[v], "/", false),
                Err(DenyReason::MalformedAuthorization),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
        // The whole b64token alphabet, with trailing padding, is still a token (the JWS
        // parser then refuses what base64url does not allow).
        assert_eq!(
            find(&[b"Bearer aZ09-._~+/=="], "/", false),
            Ok(Some(("aZ09-._~+/==".into(), TokenSource::Header)))
        );
    }

    #[test]
    fn two_authorization_headers_are_a_malformed_request() {
        assert_eq!(
            find(&[b"Bearer a", b"Bearer b"], "/", false),
            Err(DenyReason::MultipleTokens)
        );
    }

    #[test]
    fn the_query_source_is_ignored_unless_enabled() {
        assert_eq!(
            find(&[b"Bearer a"], "/x?access_token=b", false),
            Ok(Some(("a".into(), TokenSource::Header)))
        );
        assert_eq!(find(&[], "/x?access_token=b", false), Ok(None));
    }

    #[test]
    fn an_enabled_query_source_finds_one_token_and_refuses_two() {
        assert_eq!(
            find(&[], "/x?a=1&access_token=b%2Ec", true),
            Ok(Some(("b.c".into(), TokenSource::Query)))
        );
        assert_eq!(
            find(&[b"Bearer a"], "/x?access_token=b", true),
            Err(DenyReason::MultipleTokens)
        );
        assert_eq!(
            find(&[], "/x?access_token=a&access_token=b", true),
            Err(DenyReason::MultipleTokens)
        );
        assert_eq!(
            find(&[], "/x?access_token=", true),
            Err(DenyReason::EmptyToken)
        );
        assert_eq!(find(&[], "/x#access_token=a", true), Ok(None));
    }

    #[test]
    fn an_owned_value_splits_as_a_borrowed_one() {
        for value in [
            "Bearer a.b.c",
            " Bearer a.b.c",
            "Bearer a.b.c\t",
            "",
            "Bearer a,Bearer b",
            "Digest username=\"u\", realm=\"r\"",
            "Bearer a, Basic Zm9vOmJhcg==",
        ] {
            assert_eq!(
                split_joined_credentials_owned(value.as_bytes().to_vec()),
                split_joined_credentials(value.as_bytes()),
                "{value:?}"
            );
        }
    }

    fn split(value: &str) -> Vec<String> {
        split_joined_credentials(value.as_bytes())
            .into_iter()
            .map(|v| String::from_utf8(v).expect("utf-8"))
            .collect()
    }

    #[test]
    fn joined_bearer_headers_split_into_separate_credentials() {
        assert_eq!(
            split("Bearer a.b.c,Bearer d.e.f"),
            ["Bearer a.b.c", "Bearer d.e.f"]
        );
        assert_eq!(
            split("Bearer a.b.c, Basic dXNlcg=="),
            ["Bearer a.b.c", "Basic dXNlcg=="]
        );
        assert_eq!(split("Bearer a.b.c"), ["Bearer a.b.c"]);
    }

    #[test]
    fn commas_inside_one_credential_stay_together() {
        let sigv4 = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(split(sigv4), [sigv4]);
        let digest = r#"Digest username="u", realm="r", nonce="n", uri="/", response="x""#;
        assert_eq!(split(digest), [digest]);
        // A token68 cannot hold a comma: what follows one is part of the same (bad) token.
        assert_eq!(split("Bearer a,b"), ["Bearer a,b"]);
    }
}
