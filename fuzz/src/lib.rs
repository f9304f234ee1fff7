//! The fixture the fuzz targets share: one validated config with route rules, static keys of two
//! issuers (public JWKs embedded from `fixtures/`, so every run is deterministic), a fixed clock
//! and a current-thread runtime, all built once per process; plus the invariants a decision must
//! meet for ANY input. `examples/gen_seeds.rs` mints the keys and the token seeds.

use std::sync::{Arc, LazyLock};

use authgate::config::parse_yaml;
use authgate::decision::{
    CheckRequest, Decider, Decision, DenyReason, FixedClock, Frontend, TrustedIssuer,
};
use authgate::dpop::{ProofChecker, ProofError, ProofTarget};
use authgate::keys::StaticKeys;
use authgate::keys::jwk::parse_jwks;
use tokio::runtime::Runtime;

/// The fixed clock: every seed token is minted relative to it.
pub const NOW: i64 = 1_700_000_000;
/// The main issuer (RSA, RSA-PSS, EC P-256 and Ed25519 keys).
pub const ISSUER: &str = "https://idp.fuzz.test";
/// A second issuer with one EC P-256 key and only ES256 allowed: keys are scoped per issuer.
pub const OTHER_ISSUER: &str = "https://other.fuzz.test";
/// The configured audience.
pub const AUDIENCE: &str = "fuzz-api";
/// The configured leeway (`leeway` in [`CONFIG_YAML`]).
pub const LEEWAY_SECS: i64 = 30;
/// Subjects of the signed seed tokens that are meant to verify. The fuzzer cannot forge a
/// signature, so an allow for any other subject means authgate accepted something it must not.
/// Signed seeds that must be denied (duplicate members, `crit`, attacker keys, expired...) carry
/// [`HOSTILE_SUBJECT`] instead.
pub const ALLOWED_SUBJECTS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "ken",
    "leo",
    "zo\u{eb}\u{1}\r\n",
];
/// The subject of signed tokens that must never be allowed.
pub const HOSTILE_SUBJECT: &str = "mallory";

/// Public keys of [`ISSUER`].
pub const IDP_JWKS: &str = include_str!("../fixtures/idp-jwks.json");
/// Public keys of [`OTHER_ISSUER`].
pub const OTHER_JWKS: &str = include_str!("../fixtures/other-jwks.json");
/// An `Authorization` value that must be allowed: checked once at start-up, so a key or
/// authgate change that silently turns every seed into a denial stops the run instead.
pub const CANARY: &str = include_str!("../fixtures/canary-authorization.txt");

/// The config of the decider: both issuers, the query source on, `typ` checked, claim headers
/// and route rules of every kind. The `jwks_file` paths are not read (keys are handed to the
/// decider directly); they only make the issuer config honest.
pub const CONFIG_YAML: &str = r#"
issuers:
  - issuer: https://idp.fuzz.test
    jwks_file: fixtures/idp-jwks.json
  - issuer: https://other.fuzz.test
    jwks_file: fixtures/other-jwks.json
    algorithms: [ES256]
audiences: [fuzz-api]
leeway: 30s
required_typ: [at+jwt]
token:
  query: {enabled: true}
claim_headers:
  - {claim: sub, header: X-Auth-Subject}
  - {claim: iss, header: X-Auth-Issuer}
  - {claim: scope, header: X-Auth-Scope}
  - {claim: realm_access.roles, header: X-Auth-Roles}
limits:
  check_deadline: 10s
routes:
  - {path_prefix: /public, action: anonymous}
  - {path_prefix: /admin, action: deny}
  - {path_glob: "/api/**", require: {scopes: [read]}}
  - path_prefix: /ops
    require:
      issuers: [https://other.fuzz.test]
      claims: [{claim: role, one_of: [ops, admin]}]
"#;

/// The access token DPoP proofs are checked against (their `ath` must hash it).
pub const DPOP_ACCESS_TOKEN: &str = "fuzz-dpop-access-token";
/// The request DPoP proofs are checked against: `GET https://api.fuzz.test/api/items`.
pub const DPOP_TARGET: ProofTarget<'static> = ProofTarget {
    method: Some("GET"),
    scheme: Some("https"),
    host: Some("api.fuzz.test"),
    path: Some("/api/items?page=1"),
};

/// The path of the request whose route needs the `read` scope.
pub const SCOPED_PATH: &str = "/api/items";
/// A path no route matches: only the top-level requirements apply.
pub const UNROUTED_PATH: &str = "/other";

/// A decider over the fixture and the runtime to drive it.
#[derive(Debug)]
pub struct Fixture {
    runtime: Runtime,
    /// The decider under test.
    pub decider: Decider,
    /// DPoP proofs, with the config's `dpop_proofs` bounds.
    pub proofs: ProofChecker,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let fixture = Fixture::new(IDP_JWKS, OTHER_JWKS);
    let canary = fixture.decide(&header_request(CANARY.trim().as_bytes(), SCOPED_PATH));
    assert!(
        matches!(canary, Decision::Allow(_)),
        "the canary token in fixtures/ is not allowed ({canary:?}): keys and seeds drifted apart, \
         run `cargo run --example gen_seeds` in fuzz/"
    );
    fixture
});

impl Fixture {
    /// The shared fixture, built on first use.
    pub fn get() -> &'static Fixture {
        &FIXTURE
    }

    /// A fixture over these key sets (the seed generator passes freshly minted ones).
    pub fn new(idp_jwks: &str, other_jwks: &str) -> Self {
        let raw = parse_yaml(CONFIG_YAML).expect("fixture config parses");
        let config = Arc::new(raw.validate().expect("fixture config is valid"));
        let keys = |jwks: &str| -> Arc<StaticKeys> {
            let parsed = parse_jwks(jwks.as_bytes(), 100).expect("fixture JWKS parses");
            assert!(parsed.skipped.is_empty(), "fixture key skipped: {parsed:?}");
            Arc::new(StaticKeys::new(parsed.set))
        };
        let issuers = vec![
            TrustedIssuer {
                config: config.issuers[0].clone(),
                keys: keys(idp_jwks),
            },
            TrustedIssuer {
                config: config.issuers[1].clone(),
                keys: keys(other_jwks),
            },
        ];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
        Self {
            runtime,
            proofs: ProofChecker::new(&config.dpop_proofs),
            decider: Decider::new(config, issuers, Arc::new(FixedClock::at(NOW))),
        }
    }

    /// Checks `proof` as a DPoP proof for [`DPOP_TARGET`] and [`DPOP_ACCESS_TOKEN`] at
    /// [`NOW`], with the invariants: a proof bound to another access token never holds; one
    /// that holds is a JWS whose `jwk` has the returned thumbprint, and the same proof again is
    /// a replay.
    pub fn check_proof(&self, proof: &[u8]) {
        let other = self.proofs.check(proof, "another-token", DPOP_TARGET, NOW);
        assert!(
            matches!(other, Err(ProofError::Invalid(_))),
            "a proof held for a token its ath does not name: {other:?}"
        );
        let Ok(thumbprint) = self
            .proofs
            .check(proof, DPOP_ACCESS_TOKEN, DPOP_TARGET, NOW)
        else {
            return;
        };
        let text = std::str::from_utf8(proof).expect("a proof that held is text");
        let header_b64 = text.trim_matches(' ').split('.').next().unwrap_or("");
        let header: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                header_b64,
            )
            .expect("a proof that held has a base64url header"),
        )
        .expect("a proof that held has a JSON header");
        let jwk = header["jwk"]
            .as_object()
            .expect("a proof that held has a jwk");
        assert_eq!(
            authgate::dpop::thumbprint(jwk).as_deref(),
            Some(thumbprint.as_str()),
            "the thumbprint is not the jwk's"
        );
        assert_eq!(
            self.proofs
                .check(proof, DPOP_ACCESS_TOKEN, DPOP_TARGET, NOW),
            Err(ProofError::Replayed),
            "a proof held twice"
        );
    }

    /// Runs `decide` to completion.
    pub fn decide(&self, req: &CheckRequest) -> Decision {
        self.runtime.block_on(self.decider.decide(req))
    }

    /// Runs `verify_token` (the TokenService path: no token sources, no routes) with no extra
    /// requirement.
    pub fn verify_token(&self, token: &str) -> Decision {
        let requirement = authgate::config::Requirement::default();
        self.runtime
            .block_on(self.decider.verify_token(token, &requirement, None))
    }
}

/// A forward-auth check of `path` carrying one `Authorization` value.
pub fn header_request(authorization: &[u8], path: &str) -> CheckRequest {
    CheckRequest {
        authorization: vec![authorization.to_vec()],
        path: Some(path.to_owned()),
        ..CheckRequest::for_test()
    }
}

/// An Envoy check: a joined `Authorization` value split back into credentials, as the Envoy
/// adapters do.
pub fn envoy_request(authorization: &[u8], path: &str) -> CheckRequest {
    CheckRequest {
        frontend: Frontend::EnvoyHttp,
        authorization: authgate::token::split_joined_credentials(authorization),
        path: Some(path.to_owned()),
        ..CheckRequest::for_test()
    }
}

/// A check carrying `token` in the `access_token` query parameter of `path` (no header).
pub fn query_request(token: &[u8], path: &str) -> CheckRequest {
    let encoded: String = form_urlencoded::byte_serialize(token).collect();
    CheckRequest {
        path: Some(format!("{path}?access_token={encoded}")),
        ..CheckRequest::for_test()
    }
}

/// The token part of an `Authorization` value: what follows `Bearer ` (any case, any number of
/// spaces), or the whole value.
pub fn bare_token(authorization: &[u8]) -> &[u8] {
    match authorization.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            let rest = &authorization[7..];
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            &rest[start..]
        }
        _ => authorization,
    }
}

/// What must hold for a decision on a request whose only credential is fuzzer input and whose
/// route (if any) requires a token: an allow only with a verified identity of a seed subject,
/// from a configured issuer, not expired beyond the leeway, carrying `required_scope`.
pub fn check_token_decision(decision: &Decision, required_scope: Option<&str>) {
    let allow = match decision {
        Decision::Deny(deny) => {
            // decide() turns a panic into an internal_error deny; under libFuzzer the panic
            // hook aborts first, so this only fires for an internal error that is not a panic.
            assert_ne!(deny.reason, DenyReason::InternalError, "{deny:?}");
            // The only route reasons on these paths are never about the token.
            assert!(
                !matches!(
                    deny.reason,
                    DenyReason::RouteDenied | DenyReason::AmbiguousPath
                ),
                "a token-only change produced a route denial: {deny:?}"
            );
            return;
        }
        Decision::Allow(allow) => allow,
    };
    let identity = allow
        .identity
        .as_ref()
        .unwrap_or_else(|| panic!("allow without identity on a token route: {allow:?}"));
    let subject = identity.subject();
    assert!(
        subject.is_some_and(|s| ALLOWED_SUBJECTS.contains(&s)),
        "allowed a token whose subject {subject:?} no seed token was signed for: {identity:?}"
    );
    assert!(
        identity.issuer() == ISSUER || identity.issuer() == OTHER_ISSUER,
        "allowed an unknown issuer: {identity:?}"
    );
    assert!(
        identity.expires_at().saturating_add(LEEWAY_SECS) > NOW,
        "allowed an expired token: {identity:?}"
    );
    if let Some(scope) = required_scope {
        assert!(
            identity.scopes().any(|s| s == scope),
            "allowed without the required scope {scope}: {identity:?}"
        );
    }
    assert!(
        allow.token_source.is_some(),
        "a verified allow without a token source: {allow:?}"
    );
    // Claim headers only ever name headers the config owns.
    for (name, _) in &allow.headers {
        assert!(
            allow.owned_headers.contains(name),
            "claim header {name} is not an owned header"
        );
    }
}
