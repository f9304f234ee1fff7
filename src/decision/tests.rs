//! Table tests for `Decider::decide` with static keys and a fixed clock: every `DenyReason`, the
//! leeway edges, audience forms, algorithm confusion, kid handling and claim headers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::*;
use crate::config::parse_yaml;
use crate::demo::signing::SigningKey;
use crate::keys::jwk::parse_jwk;
use crate::keys::{BoxFuture, KeyHealth, KeySet, StaticKeys};
use crate::verify::Alg;

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://idp.test";

struct Fixture {
    rsa: SigningKey,
    ec: SigningKey,
    clock: Arc<FixedClock>,
    decider: Decider,
}

fn config(extra: &str) -> Arc<Config> {
    let yaml = format!("issuers: [{{issuer: \"{ISS}\"}}]\naudiences: [api]\n{extra}");
    Arc::new(parse_yaml(&yaml).expect("yaml").validate().expect("valid"))
}

fn verifying(key: &SigningKey) -> crate::keys::VerifyingKey {
    parse_jwk(&key.public_jwk()).expect("jwk")
}

fn fixture_with(extra: &str, keys: Option<Arc<dyn KeySource>>) -> Fixture {
    fixture_from(config(extra), keys)
}

/// A fixture over `cfg` (its first issuer) with an RSA and an EC key, or `keys`.
fn fixture_from(cfg: Arc<Config>, keys: Option<Arc<dyn KeySource>>) -> Fixture {
    let rsa = SigningKey::generate(Alg::RS256, "rsa").expect("rsa");
    let ec = SigningKey::generate(Alg::ES256, "ec").expect("ec");
    let keys = keys.unwrap_or_else(|| {
        Arc::new(StaticKeys::new(KeySet::new(vec![
            verifying(&rsa),
            verifying(&ec),
        ])))
    });
    let issuers = vec![TrustedIssuer {
        config: cfg.issuers[0].clone(),
        keys,
    }];
    let clock = Arc::new(FixedClock::at(NOW));
    Fixture {
        rsa,
        ec,
        clock: Arc::clone(&clock),
        decider: Decider::new(cfg, issuers, clock),
    }
}

fn fixture(extra: &str) -> Fixture {
    fixture_with(extra, None)
}

/// A fixture whose one issuer has `fields` (a YAML flow mapping's members) besides its `issuer`.
fn fixture_issuer(fields: &str, extra: &str) -> Fixture {
    let yaml = format!("issuers: [{{issuer: \"{ISS}\", {fields}}}]\naudiences: [api]\n{extra}");
    fixture_from(
        Arc::new(parse_yaml(&yaml).expect("yaml").validate().expect("valid")),
        None,
    )
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": NOW + 300, "iat": NOW, "scope": "read write"})
}

fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            base.as_object_mut().expect("object").remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn bearer(token: &str) -> CheckRequest {
    CheckRequest {
        authorization: vec![format!("Bearer {token}").into_bytes()],
        ..CheckRequest::for_test()
    }
}

impl Fixture {
    fn token(&self, claims: &Value) -> String {
        self.rsa.sign_jwt(claims).expect("sign")
    }

    async fn decide(&self, req: &CheckRequest) -> Decision {
        self.decider.decide(req).await
    }

    async fn decide_token(&self, token: &str) -> Decision {
        self.decide(&bearer(token)).await
    }

    async fn reason(&self, claims: &Value) -> Option<DenyReason> {
        deny_reason(self.decide_token(&self.token(claims)).await)
    }
}

/// The claim headers of an allow, as text.
fn header_pairs(allow: &Allow) -> Vec<(&str, &str)> {
    allow
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
        .collect()
}

fn deny_reason(d: Decision) -> Option<DenyReason> {
    match d {
        Decision::Allow(_) => None,
        Decision::Deny(d) => Some(d.reason),
    }
}

fn forge(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test]
async fn a_valid_token_is_allowed_with_subject_and_issuer_headers() {
    let f = fixture("");
    let Decision::Allow(allow) = f.decide_token(&f.token(&claims())).await else {
        panic!("expected allow");
    };
    assert_eq!(
        header_pairs(&allow),
        [("x-auth-subject", "alice"), ("x-auth-issuer", ISS)]
    );
    let identity = allow.identity.expect("identity");
    assert_eq!(identity.subject(), Some("alice"));
    assert_eq!(identity.scopes().collect::<Vec<_>>(), ["read", "write"]);
    assert_eq!(identity.expires_at(), NOW + 300);
    assert_eq!(identity.issuer(), ISS);
    assert_eq!(allow.token_source, Some(TokenSource::Header));
    assert_eq!(&*allow.owned_headers, ["x-auth-subject", "x-auth-issuer"]);
}

#[tokio::test]
async fn every_supported_algorithm_verifies() {
    for alg in Alg::ALL {
        let key = SigningKey::generate(alg, format!("k-{alg}")).expect("key");
        let keys: Arc<dyn KeySource> =
            Arc::new(StaticKeys::new(KeySet::new(vec![verifying(&key)])));
        let f = fixture_with("", Some(keys));
        let token = key.sign_jwt(&claims()).expect("sign");
        assert!(
            matches!(f.decide_token(&token).await, Decision::Allow(_)),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn request_shape_problems_are_invalid_requests() {
    let f = fixture("token: {max_bytes: 4096}");
    let t = f.token(&claims());
    let cases: Vec<(Vec<Vec<u8>>, DenyReason)> = vec![
        (vec![], DenyReason::MissingToken),
        (vec![b"Basic YTpi".to_vec()], DenyReason::MissingToken),
        (vec![b"Bearer ".to_vec()], DenyReason::EmptyToken),
        (
            vec![
                format!("Bearer {t}").into_bytes(),
                format!("Bearer {t}").into_bytes(),
            ],
            DenyReason::MultipleTokens,
        ),
        (
            vec![b"Bearer a\x01b".to_vec()],
            DenyReason::MalformedAuthorization,
        ),
    ];
    for (authorization, reason) in cases {
        let req = CheckRequest {
            authorization: authorization.clone(),
            ..CheckRequest::for_test()
        };
        let Decision::Deny(d) = f.decide(&req).await else {
            panic!("expected deny for {authorization:?}");
        };
        assert_eq!(d.reason, reason);
        let expected = if reason == DenyReason::MissingToken {
            DenyKind::Unauthenticated
        } else {
            DenyKind::InvalidRequest
        };
        assert_eq!(d.kind(), expected, "{reason}");
    }
}

#[tokio::test]
async fn an_oversized_token_is_rejected_before_decoding() {
    let f = fixture("token: {max_bytes: 100}");
    let d = deny_reason(f.decide_token(&f.token(&claims())).await);
    assert_eq!(d, Some(DenyReason::TokenTooLarge));
    assert_eq!(DenyReason::TokenTooLarge.kind(), DenyKind::InvalidToken);
}

#[tokio::test]
async fn malformed_tokens_are_invalid_tokens() {
    let f = fixture("");
    let good = f.token(&claims());
    let (input, _) = good.rsplit_once('.').expect("three parts");
    for bad in [
        "abc".to_owned(),
        format!("{input}."),
        format!("{good}.x.y"),
        format!("{good}="),
        "a.b.c".to_owned(),
    ] {
        assert_eq!(
            deny_reason(f.decide_token(&bad).await),
            Some(DenyReason::MalformedToken),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn none_and_hmac_with_the_public_key_are_impossible() {
    let f = fixture("");
    let none = forge(&json!({"alg": "none", "kid": "rsa"}), &claims(), b"");
    let none = format!("{}x", none); // an empty signature would be a shape error first
    assert_eq!(
        deny_reason(f.decide_token(&none).await),
        Some(DenyReason::AlgorithmNotAllowed)
    );

    // The classic confusion: HS256 keyed with the RSA public key's JWK text.
    let header = json!({"alg": "HS256", "kid": "rsa"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let secret = f.rsa.public_jwk().to_string();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let hs = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_eq!(
        deny_reason(f.decide_token(&hs).await),
        Some(DenyReason::AlgorithmNotAllowed)
    );
}

#[tokio::test]
async fn an_algorithm_outside_the_issuers_list_is_denied_before_keys() {
    let f = fixture("algorithms: [ES256]");
    assert_eq!(
        f.reason(&claims()).await,
        Some(DenyReason::AlgorithmNotAllowed)
    );
    let ec_token = f.ec.sign_jwt(&claims()).expect("sign");
    assert!(matches!(
        f.decide_token(&ec_token).await,
        Decision::Allow(_)
    ));
}

#[tokio::test]
async fn crit_headers_are_rejected() {
    let f = fixture("");
    let t = f
        .rsa
        .sign_with_header(
            &json!({"alg": "RS256", "kid": "rsa", "crit": ["b64"], "b64": false}),
            &claims(),
        )
        .expect("sign");
    assert_eq!(
        deny_reason(f.decide_token(&t).await),
        Some(DenyReason::UnsupportedCritical)
    );
}

#[tokio::test]
async fn claim_problems_map_to_their_reasons() {
    let f = fixture("");
    let cases = [
        (json!({"exp": "soon"}), DenyReason::MalformedClaims),
        (json!({"exp": null}), DenyReason::MissingExpiry),
        (json!({"exp": NOW - 31}), DenyReason::Expired),
        (json!({"nbf": NOW + 31}), DenyReason::NotYetValid),
        (json!({"iat": NOW + 31}), DenyReason::IssuedInFuture),
        (json!({"iat": "now"}), DenyReason::MalformedClaims),
        (json!({"iss": null}), DenyReason::UnknownIssuer),
        (
            json!({"iss": "https://other.test"}),
            DenyReason::UnknownIssuer,
        ),
        (
            json!({"iss": "https://idp.test/"}),
            DenyReason::UnknownIssuer,
        ),
        (json!({"iss": 5}), DenyReason::MalformedClaims),
        (json!({"aud": "other"}), DenyReason::WrongAudience),
        (json!({"aud": null}), DenyReason::WrongAudience),
        (json!({"aud": ["other", 1]}), DenyReason::MalformedClaims),
        (json!({"aud": 5}), DenyReason::MalformedClaims),
        (json!({"aud": "API"}), DenyReason::WrongAudience),
    ];
    for (patch, reason) in cases {
        assert_eq!(
            f.reason(&with(claims(), patch.clone())).await,
            Some(reason),
            "{patch}"
        );
    }
}

#[tokio::test]
async fn the_leeway_edges_are_exact() {
    let f = fixture("leeway: 30s");
    let allowed = [
        json!({"exp": NOW - 29}),
        json!({"nbf": NOW + 30}),
        json!({"iat": NOW + 30}),
        json!({"exp": (NOW - 29) as f64 + 0.5}),
    ];
    for patch in allowed {
        assert_eq!(
            f.reason(&with(claims(), patch.clone())).await,
            None,
            "{patch}"
        );
    }
    assert_eq!(
        f.reason(&with(claims(), json!({"exp": NOW - 30}))).await,
        Some(DenyReason::Expired)
    );
}

#[tokio::test]
async fn audience_may_be_a_string_or_an_array() {
    let f = fixture("");
    assert_eq!(
        f.reason(&with(claims(), json!({"aud": ["x", "api"]})))
            .await,
        None
    );
    assert_eq!(
        f.reason(&with(claims(), json!({"aud": []}))).await,
        Some(DenyReason::WrongAudience)
    );
    let all = fixture("require: {audiences: [api, billing]}\naudience_match: all");
    assert_eq!(
        all.reason(&with(claims(), json!({"aud": ["api"]}))).await,
        Some(DenyReason::WrongAudience)
    );
    assert_eq!(
        all.reason(&with(claims(), json!({"aud": ["billing", "api"]})))
            .await,
        None
    );
}

#[tokio::test]
async fn kid_handling_covers_unknown_missing_ambiguous_and_mismatched_keys() {
    let f = fixture("");
    let unknown = f
        .rsa
        .sign_with_header(&json!({"alg": "RS256", "kid": "nope"}), &claims())
        .expect("sign");
    assert_eq!(
        deny_reason(f.decide_token(&unknown).await),
        Some(DenyReason::UnknownKey)
    );

    let no_kid = f
        .rsa
        .sign_with_header(&json!({"alg": "RS256"}), &claims())
        .expect("sign");
    assert_eq!(
        deny_reason(f.decide_token(&no_kid).await),
        None,
        "one RSA key fits"
    );

    // The EC key signs, but the header names the RSA key's kid with ES256.
    let mismatch =
        f.ec.sign_with_header(&json!({"alg": "ES256", "kid": "rsa"}), &claims())
            .expect("sign");
    assert_eq!(
        deny_reason(f.decide_token(&mismatch).await),
        Some(DenyReason::KeyAlgorithmMismatch)
    );

    let twin = SigningKey::generate(Alg::RS256, "rsa").expect("twin");
    let other = SigningKey::generate(Alg::RS256, "other").expect("other");
    let keys: Arc<dyn KeySource> = Arc::new(StaticKeys::new(KeySet::new(vec![
        verifying(&f.rsa),
        verifying(&twin),
        verifying(&other),
    ])));
    let dup = fixture_with("", Some(keys));
    assert_eq!(
        deny_reason(dup.decide_token(&f.token(&claims())).await),
        Some(DenyReason::AmbiguousKey)
    );
    let ok = other.sign_jwt(&claims()).expect("sign");
    assert_eq!(deny_reason(dup.decide_token(&ok).await), None);
}

#[tokio::test]
async fn a_wrong_signature_is_denied() {
    let f = fixture("");
    let good = f.token(&claims());
    let (input, _) = good.rsplit_once('.').expect("three parts");
    let other = SigningKey::generate(Alg::RS256, "rsa").expect("other");
    let by_other = other.sign_jwt(&claims()).expect("sign");
    let truncated = &good[..good.len() - 4];
    let tampered_payload = {
        let parts: Vec<&str> = good.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(with(claims(), json!({"sub": "root"})).to_string());
        format!("{}.{}.{}", parts[0], evil, parts[2])
    };
    for bad in [
        format!("{input}.AAAA"),
        by_other,
        truncated.to_owned(),
        format!("{good}AAAA"),
        tampered_payload,
    ] {
        assert_eq!(
            deny_reason(f.decide_token(&bad).await),
            Some(DenyReason::BadSignature)
        );
    }
    let ec_zero = {
        let t = f.ec.sign_jwt(&claims()).expect("sign");
        let (input, _) = t.rsplit_once('.').expect("parts");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]))
    };
    assert_eq!(
        deny_reason(f.decide_token(&ec_zero).await),
        Some(DenyReason::BadSignature)
    );
}

#[tokio::test]
async fn the_typ_check_accepts_at_jwt_in_both_spellings() {
    let f = fixture("required_typ: [at+jwt]");
    assert_eq!(f.reason(&claims()).await, None, "sign_jwt sets typ at+jwt");
    let app = f
        .rsa
        .sign_with_header(
            &json!({"alg": "RS256", "kid": "rsa", "typ": "application/AT+JWT"}),
            &claims(),
        )
        .expect("sign");
    assert_eq!(deny_reason(f.decide_token(&app).await), None);
    let id_token = f
        .rsa
        .sign_with_header(
            &json!({"alg": "RS256", "kid": "rsa", "typ": "JWT"}),
            &claims(),
        )
        .expect("sign");
    assert_eq!(
        deny_reason(f.decide_token(&id_token).await),
        Some(DenyReason::WrongTokenType)
    );
}

#[tokio::test]
async fn scopes_and_claims_are_checked_on_verified_tokens() {
    let f = fixture(
        "require: {scopes: [read], claims: [{claim: realm_access.roles, one_of: [admin]}]}",
    );
    let ok = with(
        claims(),
        json!({"realm_access": {"roles": ["user", "admin"]}}),
    );
    assert_eq!(f.reason(&ok).await, None);
    let no_role = with(claims(), json!({"realm_access": {"roles": ["user"]}}));
    assert_eq!(f.reason(&no_role).await, Some(DenyReason::ClaimMismatch));
    let Decision::Deny(d) = f
        .decide_token(&f.token(&with(ok, json!({"scope": "write"}))))
        .await
    else {
        panic!("expected deny");
    };
    assert_eq!(d.reason, DenyReason::InsufficientScope);
    assert_eq!(d.kind(), DenyKind::InsufficientScope);
    assert_eq!(d.scope.as_deref(), Some("read"));
    let scp = with(
        claims(),
        json!({"scope": null, "scp": ["read"], "realm_access": {"roles": ["admin"]}}),
    );
    assert_eq!(f.reason(&scp).await, None);
}

#[tokio::test]
async fn routes_match_first_and_fall_back_to_requiring_a_token() {
    let f = fixture(
        "routes:\n\
         - {path_prefix: /public, action: anonymous}\n\
         - {path_glob: \"/admin/**\", action: deny}\n\
         - {path_prefix: /api, methods: [DELETE], require: {scopes: [admin]}}\n\
         - {host: other.example.com, require: {issuers: [\"https://idp.test\"], audiences: [other]}}\n",
    );
    let req = |method: &str, host: &str, path: Option<&str>, token: Option<&str>| CheckRequest {
        method: Some(method.to_owned()),
        host: Some(host.to_owned()),
        path: path.map(str::to_owned),
        authorization: token
            .map(|t| format!("Bearer {t}").into_bytes())
            .into_iter()
            .collect(),
        ..CheckRequest::for_test()
    };
    let t = f.token(&claims());
    let host = "api.example.com";
    let cases = [
        (req("GET", host, Some("/public/x?y=1"), None), None),
        (req("GET", host, Some("/public"), None), None),
        (
            req("GET", host, Some("/publicity"), None),
            Some(DenyReason::MissingToken),
        ),
        // Rules look at path, host and method: a check without one of them cannot skip a deny
        // rule (it would fall through to the default requirement); it is malformed.
        (
            req("GET", host, None, None),
            Some(DenyReason::MalformedCheck),
        ),
        (
            req("GET", host, None, Some(&t)),
            Some(DenyReason::MalformedCheck),
        ),
        (
            CheckRequest {
                host: None,
                ..req("GET", host, Some("/admin/a/b"), Some(&t))
            },
            Some(DenyReason::MalformedCheck),
        ),
        (
            CheckRequest {
                method: None,
                ..req("GET", host, Some("/public"), None)
            },
            Some(DenyReason::MalformedCheck),
        ),
        (
            req("GET", host, Some("/admin/a/b"), Some(&t)),
            Some(DenyReason::RouteDenied),
        ),
        (req("GET", host, Some("/api/items"), Some(&t)), None),
        (
            req("DELETE", host, Some("/api/items"), Some(&t)),
            Some(DenyReason::InsufficientScope),
        ),
        (
            req("GET", "other.example.com:443", Some("/x"), Some(&t)),
            Some(DenyReason::WrongAudience),
        ),
    ];
    for (request, expected) in cases {
        let got = deny_reason(f.decide(&request).await);
        assert_eq!(
            got, expected,
            "{:?} {:?} {:?}",
            request.method, request.host, request.path
        );
    }
    let Decision::Allow(anon) = f.decide(&req("GET", host, Some("/public"), None)).await else {
        panic!("anonymous allow");
    };
    assert!(anon.identity.is_none() && anon.headers.is_empty());
    assert_eq!(
        anon.owned_headers.len(),
        2,
        "owned headers still listed for removal"
    );
    assert_eq!(DenyReason::RouteDenied.kind(), DenyKind::Forbidden);
}

#[tokio::test]
async fn an_issuer_not_allowed_on_the_route_is_denied() {
    let f = fixture("routes: [{path_prefix: /, require: {issuers: [\"https://idp.test\"]}}]");
    assert_eq!(f.reason(&claims()).await, None);
    let yaml = format!(
        "issuers: [{{issuer: \"{ISS}\"}}, {{issuer: \"https://b.test\"}}]\naudiences: [api]\n\
         routes: [{{path_prefix: /b, require: {{issuers: [\"https://b.test\"]}}}}]"
    );
    let cfg = Arc::new(parse_yaml(&yaml).expect("yaml").validate().expect("valid"));
    let keys: Arc<dyn KeySource> = Arc::new(StaticKeys::new(KeySet::new(vec![verifying(&f.rsa)])));
    let issuers = cfg
        .issuers
        .iter()
        .map(|c| TrustedIssuer {
            config: c.clone(),
            keys: Arc::clone(&keys),
        })
        .collect();
    let d = Decider::new(Arc::clone(&cfg), issuers, Arc::new(FixedClock::at(NOW)));
    let token = f.token(&claims());
    let on_b = CheckRequest {
        path: Some("/b".to_owned()),
        ..bearer(&token)
    };
    assert_eq!(
        deny_reason(d.decide(&on_b).await),
        Some(DenyReason::IssuerNotAllowed)
    );
    // The same from the verified-token cache: the token passes where its issuer is accepted
    // (and is cached), then is denied again on the route that accepts another issuer only.
    assert_eq!(deny_reason(d.decide(&bearer(&token)).await), None);
    assert_eq!(
        deny_reason(d.decide(&on_b).await),
        Some(DenyReason::IssuerNotAllowed)
    );
}

#[tokio::test]
async fn the_query_token_is_read_only_when_enabled() {
    let f = fixture("token: {query: {enabled: true}}");
    let t = f.token(&claims());
    let req = CheckRequest {
        path: Some(format!("/x?a=1&access_token={t}")),
        ..CheckRequest::for_test()
    };
    let Decision::Allow(a) = f.decide(&req).await else {
        panic!("allow")
    };
    assert_eq!(a.token_source, Some(TokenSource::Query));
    let both = CheckRequest {
        authorization: vec![format!("Bearer {t}").into_bytes()],
        ..req.clone()
    };
    assert_eq!(
        deny_reason(f.decide(&both).await),
        Some(DenyReason::MultipleTokens)
    );
    let off = fixture("");
    assert_eq!(
        deny_reason(off.decide(&req).await),
        Some(DenyReason::MissingToken)
    );
}

#[tokio::test]
async fn claim_headers_are_encoded_and_oversized_values_left_out() {
    let f = fixture(
        "claim_headers: [{claim: sub, header: X-Auth-Subject}, {claim: name, header: X-Name}, {claim: blob, header: X-Blob}]\n\
         max_claim_header_bytes: 64",
    );
    let c = with(
        claims(),
        json!({"sub": "a\r\nX-Evil: 1", "name": "Zoë", "blob": "x".repeat(65)}),
    );
    let Decision::Allow(a) = f.decide_token(&f.token(&c)).await else {
        panic!("allow")
    };
    let get = |n: &str| {
        a.headers
            .iter()
            .find(|(h, _)| h == n)
            .map(|(_, v)| v.to_str().expect("ascii").to_owned())
    };
    assert_eq!(get("x-auth-subject").as_deref(), Some("a%0D%0AX-Evil: 1"));
    assert_eq!(get("x-name").as_deref(), Some("Zo%C3%AB"));
    assert_eq!(get("x-blob"), None);
    assert_eq!(a.owned_headers.len(), 3);
}

/// A key source that never answers, or answers "unavailable", for deadline and outage tests.
#[derive(Debug)]
enum Stuck {
    Never,
    Unavailable,
}

impl KeySource for Stuck {
    fn lookup<'a>(&'a self, _kid: Option<&'a str>, _alg: Alg) -> BoxFuture<'a, KeyLookup> {
        match self {
            Stuck::Never => Box::pin(std::future::pending()),
            Stuck::Unavailable => Box::pin(std::future::ready(KeyLookup::Unavailable)),
        }
    }

    fn health(&self) -> KeyHealth {
        KeyHealth {
            usable: false,
            keys: 0,
            age: None,
        }
    }

    fn generation(&self) -> Option<u64> {
        None
    }
}

#[tokio::test]
async fn unavailable_keys_deny_with_retry_after() {
    let f = fixture_with("", Some(Arc::new(Stuck::Unavailable)));
    let Decision::Deny(d) = f.decide_token(&f.token(&claims())).await else {
        panic!("deny")
    };
    assert_eq!(d.reason, DenyReason::KeysUnavailable);
    assert_eq!(d.kind(), DenyKind::Unavailable);
    assert!(d.retry_after.is_some());
}

#[tokio::test]
async fn a_key_lookup_past_the_deadline_is_unavailable_not_a_hang() {
    let f = fixture_with(
        "limits: {check_deadline: 50ms}",
        Some(Arc::new(Stuck::Never)),
    );
    let started = std::time::Instant::now();
    let d = deny_reason(f.decide_token(&f.token(&claims())).await);
    assert_eq!(d, Some(DenyReason::DeadlineExceeded));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_panic_in_the_decision_path_is_a_counted_deny_and_frees_its_permit() {
    /// A key source with a bug.
    #[derive(Debug)]
    struct Broken;

    impl KeySource for Broken {
        fn lookup<'a>(&'a self, _kid: Option<&'a str>, _alg: Alg) -> BoxFuture<'a, KeyLookup> {
            Box::pin(async { panic!("a bug in a key source") })
        }

        fn health(&self) -> KeyHealth {
            KeyHealth {
                usable: true,
                keys: 1,
                age: None,
            }
        }

        fn generation(&self) -> Option<u64> {
            Some(1)
        }
    }

    let f = fixture_with(
        "limits: {max_concurrent_checks: 1}",
        Some(Arc::new(Broken) as Arc<dyn KeySource>),
    );
    let token = f.token(&claims());
    // Twice: the permit of the panicked check was given back (no Overloaded the second time).
    for _ in 0..2 {
        let Decision::Deny(d) = f.decide_token(&token).await else {
            panic!("a panic must never allow")
        };
        assert_eq!(d.reason, DenyReason::InternalError);
        assert_eq!(d.kind(), DenyKind::Unavailable);
        assert_eq!(d.retry_after, Some(1));
    }
}

#[tokio::test]
async fn checks_over_the_concurrency_limit_are_shed() {
    /// Parks every lookup, after saying that one has begun.
    #[derive(Debug)]
    struct Parked(tokio::sync::Notify);

    impl KeySource for Parked {
        fn lookup<'a>(&'a self, _kid: Option<&'a str>, _alg: Alg) -> BoxFuture<'a, KeyLookup> {
            self.0.notify_one();
            Box::pin(std::future::pending())
        }

        fn health(&self) -> KeyHealth {
            KeyHealth {
                usable: true,
                keys: 1,
                age: None,
            }
        }

        fn generation(&self) -> Option<u64> {
            Some(1)
        }
    }

    let parked = Arc::new(Parked(tokio::sync::Notify::new()));
    let f = Arc::new(fixture_with(
        "limits: {check_deadline: 300ms, max_concurrent_checks: 1}",
        Some(Arc::clone(&parked) as Arc<dyn KeySource>),
    ));
    let token = f.token(&claims());
    let first = {
        let f = Arc::clone(&f);
        let token = token.clone();
        tokio::spawn(async move { deny_reason(f.decide_token(&token).await) })
    };
    // The first check holds the only permit once it is waiting for keys.
    parked.0.notified().await;
    let Decision::Deny(d) = f.decide_token(&token).await else {
        panic!("deny")
    };
    assert_eq!(d.reason, DenyReason::Overloaded);
    assert_eq!(d.retry_after, Some(1));
    assert_eq!(
        first.await.expect("join"),
        Some(DenyReason::DeadlineExceeded)
    );
}

#[test]
fn every_reason_has_a_distinct_label() {
    let all = DenyReason::ALL;
    let labels: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), all.len());
    assert!(
        labels
            .iter()
            .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
}

/// A key source whose set a test can replace, like a refresh would; every set has its own
/// generation.
#[derive(Debug)]
struct Swappable(std::sync::Mutex<(Arc<KeySet>, u64)>);

impl Swappable {
    fn new(set: KeySet) -> Self {
        Self(std::sync::Mutex::new((Arc::new(set), 1)))
    }

    fn swap(&self, set: KeySet) {
        let mut current = self.0.lock().expect("lock");
        *current = (Arc::new(set), current.1 + 1);
    }
}

impl KeySource for Swappable {
    fn lookup<'a>(&'a self, kid: Option<&'a str>, alg: Alg) -> BoxFuture<'a, KeyLookup> {
        let set = Arc::clone(&self.0.lock().expect("lock").0);
        Box::pin(std::future::ready(set.find(kid, alg)))
    }

    fn health(&self) -> KeyHealth {
        KeyHealth {
            usable: true,
            keys: 1,
            age: None,
        }
    }

    fn generation(&self) -> Option<u64> {
        Some(self.0.lock().expect("lock").1)
    }
}

#[tokio::test]
async fn a_remembered_verification_is_forgotten_when_the_key_set_changes() {
    let real = SigningKey::generate(Alg::RS256, "rsa").expect("key");
    let impostor = SigningKey::generate(Alg::RS256, "rsa").expect("key");
    let source = Arc::new(Swappable::new(KeySet::new(vec![verifying(&real)])));
    let f = fixture_with("", Some(Arc::clone(&source) as Arc<dyn KeySource>));
    let token = real.sign_jwt(&claims()).expect("sign");
    assert_eq!(deny_reason(f.decide_token(&token).await), None);
    assert_eq!(
        deny_reason(f.decide_token(&token).await),
        None,
        "served from the cache"
    );

    // The IdP now publishes another key under the same kid: the token must be re-verified.
    source.swap(KeySet::new(vec![verifying(&impostor)]));
    assert_eq!(
        deny_reason(f.decide_token(&token).await),
        Some(DenyReason::BadSignature)
    );

    // A refresh that brings the real key back (as a new key object) verifies it again.
    source.swap(KeySet::new(vec![verifying(&real)]));
    assert_eq!(deny_reason(f.decide_token(&token).await), None);
}

#[tokio::test]
async fn a_tampered_copy_of_a_cached_token_is_still_denied() {
    let f = fixture("");
    let token = f.token(&claims());
    assert_eq!(deny_reason(f.decide_token(&token).await), None);
    let (input, _) = token.rsplit_once('.').expect("parts");
    assert_eq!(
        deny_reason(f.decide_token(&format!("{input}.AAAA")).await),
        Some(DenyReason::BadSignature)
    );
    // Expiry is checked on every request, cached or not.
    let t = f.token(&with(claims(), json!({"exp": NOW + 1})));
    assert_eq!(deny_reason(f.decide_token(&t).await), None);
    f.clock.set(NOW + 100);
    assert_eq!(
        deny_reason(f.decide_token(&t).await),
        Some(DenyReason::Expired)
    );
}

#[tokio::test]
async fn a_request_the_adapter_could_not_translate_is_a_malformed_request() {
    let f = fixture("routes: [{action: anonymous}]");
    let req = CheckRequest {
        malformed: true,
        ..bearer(&f.token(&claims()))
    };
    let Decision::Deny(d) = f.decide(&req).await else {
        panic!("deny")
    };
    assert_eq!(d.reason, DenyReason::MalformedCheck);
    assert_eq!(d.kind(), DenyKind::InvalidRequest);
}

#[tokio::test]
async fn a_bare_token_is_always_verified_whatever_the_routes_say() {
    let f = fixture("routes: [{action: anonymous}]");
    let open = Requirement::default();
    assert_eq!(
        deny_reason(f.decider.verify_token("not-a-jwt", &open, None).await),
        Some(DenyReason::MalformedToken)
    );
    let t = f.token(&claims());
    let Decision::Allow(a) = f.decider.verify_token(&t, &open, None).await else {
        panic!("allow")
    };
    assert_eq!(a.identity.expect("identity").subject(), Some("alice"));
    let strict = Requirement {
        audiences: Some(vec!["billing".to_owned()]),
        scopes: vec!["admin".to_owned()],
        ..Requirement::default()
    };
    assert_eq!(
        deny_reason(f.decider.verify_token(&t, &strict, None).await),
        Some(DenyReason::WrongAudience)
    );
    let scoped = Requirement {
        scopes: vec!["admin".to_owned()],
        ..Requirement::default()
    };
    assert_eq!(
        deny_reason(f.decider.verify_token(&t, &scoped, None).await),
        Some(DenyReason::InsufficientScope)
    );
}

#[test]
fn canonical_paths_resolve_dots_and_refuse_what_an_upstream_could_read_differently() {
    let cases = [
        ("/a/b", Some("/a/b")),
        ("/a//b/", Some("/a/b/")),
        ("/a/./b/../c?x=/..", Some("/a/c")),
        ("/public/../admin/users", Some("/admin/users")),
        ("/public/%2e%2e/admin", Some("/admin")),
        ("/%7Euser/%41", Some("/~user/A")),
        ("/", Some("/")),
        ("/public/..%2fadmin", None),
        ("/public/..;/admin", None),
        ("/a\\b", None),
        ("/a%5cb", None),
        ("/a%252e", None),
        ("/..", None),
        ("/a/%00", None),
        ("/a/%zz", None),
        ("/a/%c3", None),
        ("relative", None),
        ("*", None),
    ];
    for (raw, expected) in cases {
        assert_eq!(canonical_path(raw).as_deref(), expected, "{raw}");
    }
}

#[tokio::test]
async fn dot_segments_cannot_reach_a_protected_path_through_an_anonymous_rule() {
    let f = fixture(
        "routes:\n  - {path_prefix: /public, action: anonymous}\n  - {path_glob: \"/internal/**\", action: deny}\n",
    );
    let req = |path: &str| CheckRequest {
        path: Some(path.to_owned()),
        ..CheckRequest::for_test()
    };
    for path in [
        "/public/../admin/users",
        "/public/%2e%2e/admin",
        "/public/./../admin",
    ] {
        assert_eq!(
            deny_reason(f.decide(&req(path)).await),
            Some(DenyReason::MissingToken),
            "{path}"
        );
    }
    for path in [
        "/public/..%2fadmin",
        "/public/..;/admin",
        "/public\\..\\admin",
        "/../public",
    ] {
        assert_eq!(
            deny_reason(f.decide(&req(path)).await),
            Some(DenyReason::AmbiguousPath),
            "{path}"
        );
    }
    let t = f.token(&claims());
    let with_token = |path: &str| CheckRequest {
        path: Some(path.to_owned()),
        ..bearer(&t)
    };
    assert_eq!(
        deny_reason(f.decide(&with_token("/public/../internal/x")).await),
        Some(DenyReason::RouteDenied)
    );
    assert_eq!(
        deny_reason(f.decide(&with_token("//internal//x")).await),
        Some(DenyReason::RouteDenied)
    );
    assert_eq!(deny_reason(f.decide(&req("/public/%41")).await), None);
    // Without path rules the path does not matter, odd or not.
    let plain = fixture("");
    let t = plain.token(&claims());
    assert_eq!(
        deny_reason(
            plain
                .decide(&CheckRequest {
                    path: Some("/a;b".to_owned()),
                    ..bearer(&t)
                })
                .await
        ),
        None
    );
}

/// Static keys that count lookups: a lookup happens only when a token is checked in full.
#[derive(Debug)]
struct Counting {
    keys: StaticKeys,
    lookups: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn new(keys: Vec<crate::keys::VerifyingKey>) -> Arc<Self> {
        Arc::new(Self {
            keys: StaticKeys::new(KeySet::new(keys)),
            lookups: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn lookups(&self) -> usize {
        self.lookups.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl KeySource for Counting {
    fn lookup<'a>(&'a self, kid: Option<&'a str>, alg: Alg) -> BoxFuture<'a, KeyLookup> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.keys.lookup(kid, alg)
    }

    fn health(&self) -> KeyHealth {
        self.keys.health()
    }

    fn generation(&self) -> Option<u64> {
        self.keys.generation()
    }
}

/// A fixture whose keys count lookups, with the fixture's own signing key.
fn counting_fixture(extra: &str) -> (Fixture, Arc<Counting>) {
    let signer = SigningKey::generate(Alg::RS256, "rsa").expect("key");
    let counting = Counting::new(vec![verifying(&signer)]);
    let mut f = fixture_with(extra, Some(Arc::clone(&counting) as Arc<dyn KeySource>));
    f.rsa = signer;
    (f, counting)
}

fn at(path: &str, token: &str) -> CheckRequest {
    CheckRequest {
        path: Some(path.to_owned()),
        ..bearer(token)
    }
}

#[tokio::test]
async fn a_cached_token_meets_every_routes_own_requirements_again() {
    let (f, keys) = counting_fixture(
        "routes:\n\
         - {path_prefix: /admin, require: {scopes: [admin]}}\n\
         - {path_prefix: /staff, require: {claims: [{claim: realm_access.roles, one_of: [staff]}]}}\n\
         - {path_prefix: /billing, require: {audiences: [billing]}}\n\
         - {path_prefix: /, require: {scopes: [read]}}\n",
    );
    let token = f.token(&with(claims(), json!({"realm_access": {"roles": ["dev"]}})));
    assert_eq!(deny_reason(f.decide(&at("/", &token)).await), None);
    assert_eq!(keys.lookups(), 1);
    // Every route below is answered from the cache (no lookup), and still denies for its own
    // reason, exactly as a first check would.
    let Decision::Deny(d) = f.decide(&at("/admin", &token)).await else {
        panic!("a cached token must not pass a scope it lacks")
    };
    assert_eq!(d.reason, DenyReason::InsufficientScope);
    assert_eq!(d.scope.as_deref(), Some("admin"));
    for (path, reason) in [
        ("/staff", DenyReason::ClaimMismatch),
        ("/billing", DenyReason::WrongAudience),
    ] {
        assert_eq!(
            deny_reason(f.decide(&at(path, &token)).await),
            Some(reason),
            "{path}"
        );
    }
    assert_eq!(keys.lookups(), 1, "all of them answered from the cache");

    // The same answers from a decider without the cache.
    let (uncached, _) = counting_fixture(
        "verified_cache: {capacity: 0}\nroutes:\n\
         - {path_prefix: /staff, require: {claims: [{claim: realm_access.roles, one_of: [staff]}]}}\n",
    );
    let token = uncached.token(&with(
        claims(),
        json!({"realm_access": {"roles": ["staff"]}}),
    ));
    assert_eq!(
        deny_reason(uncached.decide(&at("/staff", &token)).await),
        None
    );
    assert_eq!(
        deny_reason(uncached.decide(&at("/staff", &token)).await),
        None
    );
}

#[tokio::test]
async fn a_cache_hit_answers_the_same_identity_and_headers_as_the_first_check() {
    let (f, keys) = counting_fixture(
        "claim_headers: [{claim: sub, header: X-Sub}, {claim: missing, header: X-Missing}, \
         {claim: roles, header: X-Roles}, {claim: email, header: X-Email}]",
    );
    let token = f.token(&with(
        claims(),
        json!({"roles": ["a,b", "c"], "email": "zo\u{eb}@example.com"}),
    ));
    let Decision::Allow(first) = f.decide_token(&token).await else {
        panic!("allow")
    };
    let Decision::Allow(again) = f.decide_token(&token).await else {
        panic!("allow")
    };
    assert_eq!(keys.lookups(), 1);
    assert_eq!(first, again);
    assert_eq!(
        header_pairs(&again),
        [
            ("x-sub", "alice"),
            ("x-roles", "a%2Cb,c"),
            ("x-email", "zo%C3%AB@example.com")
        ]
    );
    let identity = again.identity.expect("identity");
    assert_eq!(identity.subject(), Some("alice"));
    assert_eq!(identity.scopes().collect::<Vec<_>>(), ["read", "write"]);
    assert_eq!(identity.expires_at(), NOW + 300);
}

#[tokio::test]
async fn a_cache_entry_lives_no_longer_than_the_ttl_and_never_past_exp() {
    let (f, keys) = counting_fixture("verified_cache: {ttl: 60s}");
    let token = f.token(&with(claims(), json!({"exp": NOW + 100})));
    assert_eq!(deny_reason(f.decide_token(&token).await), None);
    assert_eq!(deny_reason(f.decide_token(&token).await), None);
    assert_eq!(keys.lookups(), 1);
    f.clock.set(NOW + 60);
    assert_eq!(deny_reason(f.decide_token(&token).await), None);
    assert_eq!(
        keys.lookups(),
        2,
        "past the TTL the token is checked in full again"
    );
    // Past exp (and the 30 s leeway) the cached entry answers expired, and is dropped.
    f.clock.set(NOW + 130);
    assert_eq!(
        deny_reason(f.decide_token(&token).await),
        Some(DenyReason::Expired)
    );
    assert_eq!(f.decider.verified_cache_size().map(|(n, _)| n), Some(0));
}

#[tokio::test]
async fn tokens_over_max_token_bytes_are_checked_in_full_every_time() {
    let (f, keys) = counting_fixture("verified_cache: {max_token_bytes: 100}");
    let token = f.token(&claims());
    assert!(token.len() > 100);
    for _ in 0..3 {
        assert_eq!(deny_reason(f.decide_token(&token).await), None);
    }
    assert_eq!(keys.lookups(), 3);
    assert_eq!(f.decider.verified_cache_size().map(|(n, _)| n), Some(0));
}

#[tokio::test]
async fn the_cache_stays_within_its_count_and_byte_bounds() {
    let (f, _) = counting_fixture("verified_cache: {capacity: 50, max_bytes: 1000000}");
    for i in 0..500 {
        let token = f.token(&with(claims(), json!({"sub": format!("user-{i}")})));
        assert_eq!(deny_reason(f.decide_token(&token).await), None);
    }
    let (entries, bytes) = f.decider.verified_cache_size().expect("on");
    assert!(entries > 0 && entries <= 50, "{entries} entries");
    assert!(bytes <= 1_000_000, "{bytes} bytes");

    let (f, _) = counting_fixture("verified_cache: {capacity: 100000, max_bytes: 20000}");
    for i in 0..500 {
        let token = f.token(&with(claims(), json!({"sub": format!("user-{i}")})));
        assert_eq!(deny_reason(f.decide_token(&token).await), None);
    }
    let (entries, bytes) = f.decider.verified_cache_size().expect("on");
    assert!(
        entries > 0 && bytes <= 20_000,
        "{entries} entries, {bytes} bytes"
    );
    assert!(
        entries < 500,
        "the byte bound holds fewer than every token: {entries}"
    );
}

#[test]
fn metric_label_indexes_follow_the_declaration_order() {
    for (i, r) in DenyReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "{r}");
    }
    for (i, f) in Frontend::ALL.iter().enumerate() {
        assert_eq!(*f as usize, i, "{f:?}");
    }
    // One index per label pair, each below Decision::LABELS.
    let mut seen = std::collections::HashMap::new();
    for d in DenyReason::ALL.map(|r| Decision::Deny(Deny::new(r))) {
        assert!(d.label_index() >= 2 && d.label_index() < Decision::LABELS);
        assert_eq!(seen.insert(d.label_index(), d.labels()), None, "{d:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Per-issuer settings and token-shape rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_issuers_own_leeway_typ_and_audience_match_override_the_top_level() {
    let late = with(claims(), json!({"exp": NOW - 45}));
    let top = fixture("leeway: 0s");
    assert_eq!(top.reason(&late).await, Some(DenyReason::Expired));
    let own = fixture_issuer("leeway: 60s", "leeway: 0s");
    assert_eq!(own.reason(&late).await, None, "the issuer's 60 s");
    // ... and a cached hit uses the same leeway.
    assert_eq!(own.reason(&late).await, None);

    let typ = fixture_issuer("required_typ: [at+jwt]", "required_typ: [JWT]");
    assert_eq!(
        typ.reason(&claims()).await,
        None,
        "sign_jwt writes typ at+jwt"
    );
    let typ = fixture_issuer("required_typ: [JWT]", "");
    assert_eq!(
        typ.reason(&claims()).await,
        Some(DenyReason::WrongTokenType)
    );

    let two = with(claims(), json!({"aud": ["api"]}));
    let all = fixture_issuer(
        "audiences: [api, other], audience_match: all",
        "audience_match: any",
    );
    assert_eq!(all.reason(&two).await, Some(DenyReason::WrongAudience));
    let any = fixture_issuer("audiences: [api, other]", "audience_match: all");
    assert_eq!(
        any.reason(&two).await,
        Some(DenyReason::WrongAudience),
        "inherits all"
    );
    let any = fixture_issuer(
        "audiences: [api, other], audience_match: any",
        "audience_match: all",
    );
    assert_eq!(any.reason(&two).await, None);
}

#[tokio::test]
async fn max_token_lifetime_refuses_long_lived_tokens_and_needs_iat() {
    let f = fixture("max_token_lifetime: 1h");
    assert_eq!(
        f.reason(&with(claims(), json!({"exp": NOW + 3600}))).await,
        None
    );
    assert_eq!(
        f.reason(&with(claims(), json!({"exp": NOW + 3601}))).await,
        Some(DenyReason::LifetimeTooLong)
    );
    assert_eq!(
        f.reason(&with(claims(), json!({"iat": null}))).await,
        Some(DenyReason::MissingClaim)
    );
    let own = fixture_issuer("max_token_lifetime: 10m", "max_token_lifetime: 1h");
    assert_eq!(
        own.reason(&with(claims(), json!({"exp": NOW + 601}))).await,
        Some(DenyReason::LifetimeTooLong)
    );
}

#[tokio::test]
async fn required_claims_must_be_present_and_sub_a_string() {
    let f = fixture("required_claims: [sub, client_id, jti, iat]");
    let full = with(claims(), json!({"client_id": "app", "jti": "j1"}));
    assert_eq!(f.reason(&full).await, None);
    for missing in ["client_id", "jti", "iat", "sub"] {
        let token = with(full.clone(), json!({ missing: null }));
        assert_eq!(
            f.reason(&token).await,
            Some(DenyReason::MissingClaim),
            "{missing}"
        );
    }
    assert_eq!(
        f.reason(&with(full.clone(), json!({"sub": 42}))).await,
        Some(DenyReason::MalformedClaims)
    );
    let own = fixture_issuer("required_claims: [client_id]", "required_claims: [jti]");
    let no_jti = with(claims(), json!({"client_id": "app"}));
    assert_eq!(
        own.reason(&no_jti).await,
        None,
        "the issuer's list replaces the top-level one"
    );
}

#[tokio::test]
async fn an_email_domain_rule_holds_for_listed_domains_only() {
    let f = fixture("require: {claims: [{claim: email, email_domain: [example.com]}]}");
    for (email, reason) in [
        (json!("alice@example.com"), None),
        (json!("ALICE@Example.COM"), None),
        (json!("alice@evil.com"), Some(DenyReason::ClaimMismatch)),
        (
            json!("alice@example.com@evil.com"),
            Some(DenyReason::ClaimMismatch),
        ),
        (
            json!(["alice@example.com"]),
            Some(DenyReason::ClaimMismatch),
        ),
        (Value::Null, Some(DenyReason::ClaimMismatch)),
    ] {
        assert_eq!(
            f.reason(&with(claims(), json!({"email": email}))).await,
            reason,
            "{email}"
        );
    }
    // An equals rule on the same claim is looked at separately (texts of every kind).
    let g = fixture(
        "require: {claims: [{claim: email, email_domain: [example.com]}, {claim: email, one_of: [alice@example.com, x]}]}",
    );
    assert_eq!(
        g.reason(&with(claims(), json!({"email": "alice@example.com"})))
            .await,
        None
    );
    assert_eq!(
        g.reason(&with(claims(), json!({"email": "bob@example.com"})))
            .await,
        Some(DenyReason::ClaimMismatch)
    );
}

#[tokio::test]
async fn an_anonymous_route_sets_the_identity_of_a_valid_token_and_ignores_an_invalid_one() {
    let f = fixture("routes: [{path_prefix: /public, action: anonymous}]");
    let at = |token: Option<&str>| CheckRequest {
        path: Some("/public/page".to_owned()),
        authorization: token
            .map(|t| vec![format!("Bearer {t}").into_bytes()])
            .unwrap_or_default(),
        ..CheckRequest::for_test()
    };
    let Decision::Allow(with_token) = f.decide(&at(Some(&f.token(&claims())))).await else {
        panic!("allowed");
    };
    assert_eq!(
        with_token.identity.as_ref().and_then(|i| i.subject()),
        Some("alice")
    );
    assert!(header_pairs(&with_token).contains(&("x-auth-subject", "alice")));
    assert_eq!(
        Decision::Allow(with_token.clone()).labels(),
        ("allow", "valid_token")
    );
    for token in [
        f.token(&with(claims(), json!({"exp": NOW - 3600}))),
        "not-a-jwt".to_owned(),
        f.token(&with(claims(), json!({"aud": "other"}))),
    ] {
        let Decision::Allow(anon) = f.decide(&at(Some(&token))).await else {
            panic!("an invalid token on an anonymous route is still allowed");
        };
        assert!(
            anon.identity.is_none() && anon.headers.is_empty(),
            "{token}"
        );
        assert_eq!(Decision::Allow(anon).labels(), ("allow", "anonymous"));
    }
    let Decision::Allow(none) = f.decide(&at(None)).await else {
        panic!("allowed");
    };
    assert!(none.identity.is_none());
}

#[tokio::test]
async fn the_first_matching_rule_wins_across_indexed_prefixes_and_other_rules() {
    let f = fixture(
        "routes:\n  - {path_glob: \"/a/open/**\", action: anonymous}\n  - {path_prefix: /a, action: deny}\n  - {path_prefix: /b/c, action: anonymous}\n  - {path_glob: \"/b/**\", action: deny}\n  - {path_prefix: /bx, action: deny}\n",
    );
    let at = |path: &str| CheckRequest {
        path: Some(path.to_owned()),
        ..CheckRequest::for_test()
    };
    let anonymous = |d: &Decision| matches!(d, Decision::Allow(a) if a.identity.is_none());
    assert!(
        anonymous(&f.decide(&at("/a/open/x")).await),
        "glob before prefix"
    );
    assert_eq!(
        deny_reason(f.decide(&at("/a/closed")).await),
        Some(DenyReason::RouteDenied)
    );
    assert!(
        anonymous(&f.decide(&at("/b/c/d")).await),
        "prefix before glob"
    );
    assert_eq!(
        deny_reason(f.decide(&at("/b/x")).await),
        Some(DenyReason::RouteDenied)
    );
    assert_eq!(
        deny_reason(f.decide(&at("/bx/1")).await),
        Some(DenyReason::RouteDenied)
    );
    assert_eq!(
        deny_reason(f.decide(&at("/c")).await),
        Some(DenyReason::MissingToken),
        "no rule: a token is required"
    );
}
