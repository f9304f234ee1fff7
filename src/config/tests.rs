//! Validation tests: defaults, every problem named by its field, overlays, the sample file.
use std::collections::HashMap;

use super::*;

fn validate(yaml: &str) -> Result<Config, ConfigError> {
    parse_yaml(yaml)
        .map_err(|message| ConfigError::Parse {
            path: "test.yaml".into(),
            message,
        })?
        .validate()
}

fn problems(yaml: &str) -> Vec<String> {
    validate(yaml)
        .expect_err("config should be rejected")
        .lines()
}

#[test]
fn the_simple_case_needs_only_issuer_and_audience() {
    let cfg = validate("issuers: [{issuer: https://idp.example.com}]\naudiences: [api]\n")
        .expect("valid");
    assert_eq!(cfg.issuers[0].source, KeySourceConfig::Discovery);
    assert_eq!(cfg.issuers[0].audiences, vec!["api".to_owned()]);
    assert_eq!(cfg.issuers[0].algorithms, DEFAULT_ALGORITHMS.to_vec());
    assert_eq!(cfg.verify.leeway, Duration::from_secs(30));
    assert_eq!(cfg.listen.http.port(), 8080);
    assert_eq!(cfg.listen.grpc.port(), 9001);
    assert_eq!(cfg.listen.admin.port(), 9090);
    assert_eq!(cfg.token.max_bytes, 8192);
    assert!(cfg.token.query.is_none());
    let names: Vec<_> = cfg
        .claim_headers
        .headers
        .iter()
        .map(|(_, h)| h.as_str())
        .collect();
    assert_eq!(names, ["x-auth-subject", "x-auth-issuer"]);
}

#[test]
fn trusted_proxies_take_addresses_and_networks_and_name_a_bad_entry() {
    let base = "issuers: [{issuer: https://idp.example.com}]\naudiences: [api]\n";
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().expect("ip"));
    let everyone = validate(base).expect("valid");
    assert!(everyone.trusts_peer(ip("203.0.113.9")) && everyone.trusts_peer(None));

    let cfg = validate(&format!(
        "{base}trusted_proxies: [10.1.2.3/8, 192.0.2.7, \"fd00::/8\"]\n"
    ))
    .expect("valid");
    assert!(
        cfg.trusts_peer(ip("10.200.0.1")),
        "inside 10/8 (host bits dropped)"
    );
    assert!(cfg.trusts_peer(ip("192.0.2.7")));
    assert!(!cfg.trusts_peer(ip("192.0.2.8")));
    assert!(
        cfg.trusts_peer(ip("::ffff:10.0.0.1")),
        "IPv4-mapped IPv6 peer"
    );
    assert!(cfg.trusts_peer(ip("fd00::1")));
    assert!(!cfg.trusts_peer(None), "unknown peer is not trusted");

    let lines = problems(&format!(
        "{base}trusted_proxies: [10.0.0.0/8, proxy.internal]\n"
    ));
    assert!(
        lines.iter().any(|l| l.starts_with("trusted_proxies[1]:")),
        "{lines:?}"
    );
    let lines = problems(&format!("{base}trusted_proxies: []\n"));
    assert!(
        lines.iter().any(|l| l.starts_with("trusted_proxies:")),
        "{lines:?}"
    );
    let lines = problems(&format!(
        "{base}limits: {{max_connections: 0, header_read_timeout: 0s}}\n"
    ));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("limits.max_connections:")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("limits.header_read_timeout:")),
        "{lines:?}"
    );
}

#[test]
fn absurd_sizes_durations_and_route_syntax_are_config_errors_not_start_up_panics() {
    // Each of these passed validation once and then panicked at start-up (cargo-fuzz).
    let base = "issuers: [{issuer: https://idp.example.com}]\naudiences: [api]\n";
    for (yaml, field) in [
        ("verified_cache: {ttl: 1001y}", "verified_cache.ttl:"),
        (
            "verified_cache: {recent_slots: 1048577}",
            "verified_cache.recent_slots:",
        ),
        ("shutdown: {grace: 400d}", "shutdown.grace:"),
        (
            "limits: {max_concurrent_checks: 2305843009213693952}",
            "limits.max_concurrent_checks:",
        ),
        (
            "limits: {max_connections: 2305843009213693952}",
            "limits.max_connections:",
        ),
        ("http: {envoy_prefix: \"/{x}\"}", "http.envoy_prefix:"),
        ("http: {envoy_prefix: \"/{*x}\"}", "http.envoy_prefix:"),
        ("http: {envoy_prefix: //envoy}", "http.envoy_prefix:"),
        ("http: {envoy_prefix: \"/env oy\"}", "http.envoy_prefix:"),
    ] {
        let lines = problems(&format!("{base}{yaml}\n"));
        assert!(
            lines.iter().any(|l| l.starts_with(field)),
            "{yaml}: {lines:?}"
        );
    }
    let ok = validate(&format!(
        "{base}http: {{envoy_prefix: /ext-authz/v1.0_x~}}\n"
    ));
    assert_eq!(ok.expect("valid").http.envoy_prefix, "/ext-authz/v1.0_x~");
    let slots = |yaml: &str| {
        validate(&format!("{base}{yaml}"))
            .expect("valid")
            .verified_cache
            .recent_slots
    };
    assert_eq!(slots(""), 1024);
    assert_eq!(slots("verified_cache: {recent_slots: 0}\n"), 0);
}

#[test]
fn an_unknown_field_is_rejected_with_its_name() {
    let lines = problems("issuers: [{issuer: https://a.example}]\naudiences: [api]\nleway: 5s\n");
    assert!(lines[0].contains("leway"), "{lines:?}");
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let lines = problems(
        "issuers: [{issuer: http://idp.example.com}]\nleeway: soon\nlimits: {max_concurrent_checks: 0}\n",
    );
    let joined = lines.join("\n");
    assert!(joined.contains("issuers[0].issuer: "), "{joined}");
    assert!(joined.contains("issuers[0].audiences: "), "{joined}");
    assert!(joined.contains("leeway: invalid duration"), "{joined}");
    assert!(
        joined.contains("limits.max_concurrent_checks: must be greater than 0"),
        "{joined}"
    );
}

#[test]
fn http_issuers_are_accepted_on_loopback_only_unless_allowed() {
    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost/realms/x",
        "http://[::1]:1/",
    ] {
        assert!(
            validate(&format!("issuers: [{{issuer: \"{ok}\"}}]\naudiences: [a]")).is_ok(),
            "{ok}"
        );
    }
    assert!(validate("issuers: [{issuer: \"http://10.0.0.1\"}]\naudiences: [a]").is_err());
    assert!(
        validate("issuers: [{issuer: \"http://127.0.0.1.evil.com\"}]\naudiences: [a]").is_err()
    );
    assert!(
        validate("issuers: [{issuer: \"http://idp\", allow_http: true}]\naudiences: [a]").is_ok()
    );
}

#[test]
fn unknown_and_symmetric_algorithms_are_config_errors() {
    let joined = problems(
        "issuers: [{issuer: https://a.example}]\naudiences: [a]\nalgorithms: [RS256, none, HS256]",
    )
    .join("\n");
    assert!(joined.contains("algorithms[1]"), "{joined}");
    assert!(joined.contains("algorithms[2]"), "{joined}");
}

#[test]
fn env_sits_between_file_and_flags() {
    let mut raw = parse_yaml("issuers: [{issuer: https://file.example}]\naudiences: [file]\nlisten: {http: \"127.0.0.1:1\"}").expect("yaml");
    let env: HashMap<String, String> = [
        ("AUTHGATE_AUDIENCE".to_owned(), "env-a, env-b".to_owned()),
        ("AUTHGATE_HTTP_LISTEN".to_owned(), "127.0.0.1:2".to_owned()),
    ]
    .into();
    Overrides::from_env(&env).apply(&mut raw);
    let flags = Overrides {
        http_listen: Some("127.0.0.1:3".to_owned()),
        ..Overrides::default()
    };
    flags.apply(&mut raw);
    let cfg = raw.validate().expect("valid");
    assert_eq!(cfg.issuers[0].audiences, ["env-a", "env-b"]);
    assert_eq!(cfg.listen.http.port(), 3);
    assert_eq!(cfg.issuers[0].issuer, "https://file.example");
}

#[test]
fn claim_headers_cannot_target_forwarded_original_or_envoy_headers() {
    for (i, header) in [
        "X-Forwarded-For",
        "x-forwarded-uri",
        "X_Forwarded_Host",
        "X-Original-URI",
        "x.original.method",
        "X-Envoy-Auth-Headers-To-Remove",
        "x-envoy-original-path",
        "Forwarded",
        "Host",
        "Cookie",
    ]
    .into_iter()
    .enumerate()
    {
        let joined = problems(&format!(
            "issuers: [{{issuer: https://a.example}}]\naudiences: [a]\nclaim_headers: [{{claim: sub, header: {header}}}]"
        ))
        .join("\n");
        assert!(
            joined.contains("claim_headers[0].header") && joined.contains("cannot carry a claim"),
            "{i} {header}: {joined}"
        );
    }
    for ok in [
        "X-Auth-Subject",
        "X-Forwardedfor-Note",
        "X-Envoyish",
        "X-User-Email",
    ] {
        assert!(
            validate(&format!(
                "issuers: [{{issuer: https://a.example}}]\naudiences: [a]\nclaim_headers: [{{claim: sub, header: {ok}}}]"
            ))
            .is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn claim_headers_cannot_target_authorization() {
    let joined = problems("issuers: [{issuer: https://a.example}]\naudiences: [a]\nclaim_headers: [{claim: sub, header: Authorization}]").join("\n");
    assert!(joined.contains("claim_headers[0].header"), "{joined}");
}

#[test]
fn the_example_config_in_deploy_parses_and_validates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.yaml");
    let raw = read_file(&path).expect("example config parses");
    let cfg = raw.validate().expect("example config validates");
    assert!(!cfg.issuers.is_empty());
}

/// An issuer entry with `fields` (YAML flow mappings, comma-separated) and an audience.
fn issuer_with(fields: &str) -> String {
    format!("issuers: [{{issuer: https://idp.example.com, {fields}}}]\naudiences: [api]\n")
}

/// A scratch directory of one test, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("authgate-config-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }

    /// Writes `value` (JSON) to `name` in the directory.
    fn file(&self, name: &str, value: &serde_json::Value) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, value.to_string()).expect("write");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture_jwk(i: usize) -> serde_json::Value {
    let jwks: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/client_keys.jwks.json"))
            .expect("fixture");
    jwks["keys"][i].clone()
}

#[test]
fn the_kong_settings_validate_into_a_client_and_methods() {
    let cfg = validate(&issuer_with(
        "client_id: kong, client_secret: s3cret, auth_methods: [bearer, password], \
         proof_of_possession_mtls: optional",
    ))
    .expect("valid");
    let issuer = &cfg.issuers[0];
    assert_eq!(
        issuer.auth_methods,
        AuthMethods {
            bearer: true,
            password: true
        }
    );
    let client = issuer.client.as_ref().expect("a client");
    assert_eq!(client.id, "kong");
    assert_eq!(
        client.auth.method(),
        "client_secret_basic",
        "the default with a secret"
    );
    assert!(
        !format!("{cfg:?}").contains("s3cret"),
        "Debug never shows a secret"
    );
    assert_eq!(issuer.proof_of_possession_mtls, PopMtls::Optional);
    assert_eq!(cfg.password_issuer(), Some(0));

    let scratch = Scratch::new("kong");
    let path = scratch.file("ec.json", &fixture_jwk(1));
    let cfg = validate(&issuer_with(&format!(
        "client_id: kong, client_jwk_file: {}, auth_methods: [password]",
        path.display()
    )))
    .expect("valid");
    let client = cfg.issuers[0].client.as_ref().expect("a client");
    assert_eq!(
        client.auth.method(),
        "private_key_jwt",
        "the default with a key"
    );
    assert!(!cfg.issuers[0].auth_methods.bearer);

    let plain = validate(&issuer_with("proof_of_possession_mtls: off")).expect("`off` is a word");
    assert_eq!(plain.issuers[0].auth_methods, AuthMethods::default());
    assert_eq!(plain.issuers[0].proof_of_possession_mtls, PopMtls::Off);
    assert!(plain.issuers[0].client.is_none() && plain.password_issuer().is_none());
}

#[test]
fn unusable_kong_settings_are_errors_naming_the_field() {
    let scratch = Scratch::new("unusable");
    let public = {
        let mut jwk = fixture_jwk(0);
        jwk.as_object_mut().expect("object").remove("d");
        scratch.file("public.json", &jwk)
    };
    let secret_file = scratch.file("secret.txt", &serde_json::json!("unused"));
    let cases = [
        ("auth_methods: [password]", "issuers[0].client_id"),
        (
            "auth_methods: [bearer, magic]",
            "issuers[0].auth_methods[1]",
        ),
        ("auth_methods: []", "issuers[0].auth_methods"),
        ("client_id: kong", "issuers[0].client_auth"),
        ("client_secret: s3cret", "issuers[0].client_id"),
        (
            "client_id: kong, client_auth: client_secret_jwt, client_secret: x",
            "issuers[0].client_auth",
        ),
        (
            "client_id: kong, client_auth: private_key_jwt",
            "issuers[0].client_jwk_file",
        ),
        (
            "client_id: kong, client_auth: client_secret_post",
            "issuers[0].client_secret",
        ),
        (
            "client_id: kong, client_secret: \"\"",
            "issuers[0].client_secret",
        ),
        (
            &format!(
                "client_id: kong, client_secret: x, client_secret_file: {}",
                secret_file.display()
            ),
            "issuers[0].client_secret",
        ),
        (
            "client_id: kong, client_secret_file: /nonexistent/secret",
            "issuers[0].client_secret_file",
        ),
        (
            "client_id: kong, client_jwk_file: /nonexistent/jwk.json",
            "issuers[0].client_jwk_file",
        ),
        (
            &format!("client_id: kong, client_jwk_file: {}", public.display()),
            "issuers[0].client_jwk_file",
        ),
        (
            "proof_of_possession_mtls: required",
            "issuers[0].proof_of_possession_mtls",
        ),
        (
            "token_endpoint: ftp://idp.example.com/token",
            "issuers[0].token_endpoint",
        ),
    ];
    for (fields, field) in cases {
        let found = problems(&issuer_with(fields));
        assert!(
            found.iter().any(|p| p.starts_with(&format!("{field}: "))),
            "{fields}: expected a problem at {field}, got {found:?}"
        );
    }
    let public_problem = problems(&issuer_with(&format!(
        "client_id: kong, client_jwk_file: {}",
        public.display()
    )));
    assert!(
        public_problem.iter().any(|p| p.contains("public key")),
        "{public_problem:?}"
    );
}

#[test]
fn the_password_method_needs_one_issuer_and_a_token_endpoint() {
    let two = "issuers:\n  - {issuer: https://a.example.com, client_id: k, client_secret: s, auth_methods: [password]}\n  - {issuer: https://b.example.com, client_id: k, client_secret: s, auth_methods: [password]}\naudiences: [api]\n";
    let found = problems(two);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("issuers[1].auth_methods: ")),
        "{found:?}"
    );

    let file = "issuers: [{issuer: https://a.example.com, jwks_file: /etc/jwks.json, client_id: k, client_secret: s, auth_methods: [password]}]\naudiences: [api]\n";
    let found = problems(file);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("issuers[0].token_endpoint: ")),
        "{found:?}"
    );
    let with_endpoint = file.replace(
        "auth_methods",
        "token_endpoint: https://a.example.com/token, auth_methods",
    );
    assert!(validate(&with_endpoint).is_ok());
}

#[test]
fn password_grant_bounds_and_params_are_checked() {
    let base = issuer_with("client_id: k, client_secret: s, auth_methods: [password]");
    let cfg = validate(&format!(
        "{base}password_grant: {{cache_capacity: 50, negative_ttl: 2s, max_exchanges_per_minute: 3, params: {{scope: openid}}}}\nclient_cert_header: X-Forwarded-Tls-Client-Cert\n"
    ))
    .expect("valid");
    assert_eq!(cfg.password_grant.cache_capacity, 50);
    assert_eq!(cfg.password_grant.negative_ttl, Duration::from_secs(2));
    assert_eq!(cfg.password_grant.max_exchanges_per_minute, 3);
    assert_eq!(
        cfg.password_grant.params,
        [("scope".to_owned(), "openid".to_owned())]
    );
    assert_eq!(
        cfg.client_cert_header
            .as_ref()
            .map(http::HeaderName::as_str),
        Some("x-forwarded-tls-client-cert")
    );
    for (section, field) in [
        (
            "password_grant: {max_exchanges_per_minute: 0}",
            "password_grant.max_exchanges_per_minute",
        ),
        (
            "password_grant: {params: {client_secret: x}}",
            "password_grant.params.client_secret",
        ),
        (
            "password_grant: {negative_ttl: soon}",
            "password_grant.negative_ttl",
        ),
        ("client_cert_header: \"bad header\"", "client_cert_header"),
    ] {
        let found = problems(&format!("{base}{section}\n"));
        assert!(
            found.iter().any(|p| p.starts_with(&format!("{field}: "))),
            "{section}: {found:?}"
        );
    }
}

#[test]
fn per_issuer_verification_settings_override_the_top_level_ones_field_by_field() {
    let cfg = validate(
        "issuers:\n  - {issuer: https://a.example.com, leeway: 5s, required_claims: [jti], audience_match: all}\n  - {issuer: https://b.example.com}\naudiences: [api]\nleeway: 1m\nrequired_typ: [at+jwt]\nmax_token_lifetime: 1h\nrequired_claims: [sub]\n",
    )
    .expect("valid");
    let (a, b) = (&cfg.issuers[0].verify, &cfg.issuers[1].verify);
    assert_eq!(a.leeway, Duration::from_secs(5));
    assert_eq!(a.required_claims, ["jti"]);
    assert_eq!(a.audience_match, AudienceMatch::All);
    assert_eq!(
        a.required_typ.as_deref(),
        Some(&["at+jwt".to_owned()][..]),
        "inherited"
    );
    assert_eq!(
        a.max_token_lifetime,
        Some(Duration::from_secs(3600)),
        "inherited"
    );
    assert_eq!(b.leeway, Duration::from_secs(60));
    assert_eq!(b.required_claims, ["sub"]);
    assert_eq!(b.audience_match, AudienceMatch::Any);
    assert_eq!(
        cfg.verify.max_token_lifetime,
        Some(Duration::from_secs(3600))
    );
}

#[test]
fn bad_policy_settings_are_errors_naming_the_field() {
    let base = "audiences: [api]\n";
    for (yaml, field) in [
        (
            "issuers: [{issuer: https://a.example.com, leeway: 11m}]",
            "issuers[0].leeway",
        ),
        (
            "issuers: [{issuer: https://a.example.com, audience_match: most}]",
            "issuers[0].audience_match",
        ),
        (
            "issuers: [{issuer: https://a.example.com, max_token_lifetime: 0s}]",
            "issuers[0].max_token_lifetime",
        ),
        (
            "issuers: [{issuer: https://a.example.com}]\nmax_token_lifetime: forever",
            "max_token_lifetime",
        ),
        (
            "issuers: [{issuer: https://a.example.com, required_claims: [\"\"]}]",
            "issuers[0].required_claims[0]",
        ),
        (
            "issuers: [{issuer: https://a.example.com}]\nrequire: {claims: [{claim: email, email_domain: []}]}",
            "require.claims[0].email_domain",
        ),
        (
            "issuers: [{issuer: https://a.example.com}]\nrequire: {claims: [{claim: email, email_domain: [a@b.com]}]}",
            "require.claims[0].email_domain[0]",
        ),
        (
            "issuers: [{issuer: https://a.example.com}]\nrequire: {claims: [{claim: email, equals: x, email_domain: [b.com]}]}",
            "require.claims[0]",
        ),
    ] {
        let found = problems(&format!("{yaml}\n{base}"));
        assert!(
            found.iter().any(|p| p.starts_with(&format!("{field}: "))),
            "{yaml}: expected {field}, got {found:?}"
        );
    }
}

#[test]
fn a_rule_an_earlier_rule_always_wins_over_is_an_error_naming_it() {
    let base = "issuers: [{issuer: https://idp.example.com}]\naudiences: [api]\nroutes:\n";
    let shadowed = [
        ("  - {action: deny}\n  - {path_prefix: /api}\n", "routes[1]"),
        (
            "  - {path_prefix: /api}\n  - {path_prefix: /api/v1, action: deny}\n",
            "routes[1]",
        ),
        (
            "  - {path_prefix: /api/}\n  - {path_prefix: /api}\n",
            "routes[1]",
        ),
        (
            "  - {path_prefix: /api}\n  - {path_glob: \"/api/**\", action: anonymous}\n",
            "routes[1]",
        ),
        (
            "  - {path_prefix: /api}\n  - {path_glob: /api/x, action: deny}\n",
            "routes[1]",
        ),
        (
            "  - {path_glob: \"/a/*\"}\n  - {path_glob: \"/a/*\", methods: [GET]}\n",
            "routes[1]",
        ),
        (
            "  - {host: a.example.com, path_prefix: /x}\n  - {host: a.example.com, path_prefix: /x/y, methods: [GET]}\n",
            "routes[1]",
        ),
        (
            "  - {path_prefix: /}\n  - {host: b.example.com}\n",
            "routes[1]",
        ),
    ];
    for (rules, field) in shadowed {
        let found = problems(&format!("{base}{rules}"));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&format!("{field}: can never match"))),
            "{rules}: {found:?}"
        );
    }
    let fine = [
        "  - {path_prefix: /api, methods: [GET]}\n  - {path_prefix: /api}\n",
        "  - {host: a.example.com}\n  - {path_prefix: /api}\n",
        "  - {path_prefix: /apix}\n  - {path_prefix: /api}\n",
        "  - {path_prefix: /api/v1}\n  - {path_prefix: /api}\n",
        "  - {path_prefix: /api}\n  - {path_glob: \"/ap*/x\"}\n",
        "  - {path_glob: \"/api/**\"}\n  - {path_prefix: /api}\n",
        "  - {host: a.example.com, path_prefix: /x}\n  - {host: b.example.com, path_prefix: /x}\n",
    ];
    for rules in fine {
        assert!(validate(&format!("{base}{rules}")).is_ok(), "{rules}");
    }
}

#[test]
fn issuers_and_routes_may_have_their_own_claim_headers_in_one_table() {
    let cfg = validate(
        "issuers: [{issuer: https://a.example.com, claim_headers: [{claim: sub, header: X-User}, {claim: azp, header: X-Client}]}]\naudiences: [api]\nclaim_headers: [{claim: sub, header: X-User}]\nroutes:\n  - {path_prefix: /r, claim_headers: [{claim: email, header: X-Email}]}\n",
    )
    .expect("valid");
    let names: Vec<&str> = cfg
        .claim_headers
        .headers
        .iter()
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(
        names,
        ["x-user", "x-client", "x-email"],
        "each distinct entry once"
    );
    assert_eq!(cfg.claim_headers.default_mapping, 0b001);
    assert_eq!(cfg.issuers[0].claim_headers, Some(0b011));
    assert_eq!(cfg.routes[0].claim_headers, Some(0b100));
    for (yaml, field) in [
        (
            "issuers: [{issuer: https://a.example.com, claim_headers: [{claim: sub, header: Authorization}]}]",
            "issuers[0].claim_headers[0].header",
        ),
        (
            "issuers: [{issuer: https://a.example.com}]\nroutes: [{path_prefix: /r, claim_headers: [{claim: sub, header: X-A}, {claim: iss, header: X-A}]}]",
            "routes[0].claim_headers[1].header",
        ),
    ] {
        let found = problems(&format!("{yaml}\naudiences: [api]\n"));
        assert!(
            found.iter().any(|p| p.starts_with(&format!("{field}: "))),
            "{found:?}"
        );
    }
}

#[test]
fn dpop_introspection_and_resource_metadata_settings_are_read_and_checked() {
    let cfg = validate(&format!(
        "{}dpop_proofs: {{algorithms: [ES256], max_age: 30s}}\n\
         resource_metadata: {{resource: https://api.example.com/v1, authorization_servers: [https://idp.example.com], scopes_supported: [read]}}\n",
        issuer_with(
            "dpop: required, client_id: rs, client_secret: s, introspection: {enabled: true, cache_ttl: 2m, max_calls_per_second: 5}, introspect_jwts: true"
        )
    ))
    .expect("valid");
    let issuer = &cfg.issuers[0];
    assert_eq!(issuer.dpop, super::DpopMode::Required);
    let introspection = issuer.introspection.as_ref().expect("on");
    assert_eq!(introspection.cache_ttl, Duration::from_secs(120));
    assert_eq!(introspection.max_calls_per_second, 5);
    assert_eq!(introspection.endpoint, None, "from discovery");
    assert!(issuer.introspect_jwts);
    assert_eq!(cfg.dpop_proofs.algorithms, vec![Alg::ES256]);
    assert_eq!(cfg.dpop_proofs.max_age, Duration::from_secs(30));
    let metadata = cfg.resource_metadata.as_ref().expect("configured");
    assert_eq!(
        metadata.url,
        "https://api.example.com/.well-known/oauth-protected-resource/v1"
    );
    assert_eq!(metadata.path, "/.well-known/oauth-protected-resource/v1");
    assert_eq!(
        cfg.token_source_headers(),
        vec![http::HeaderName::from_static("dpop")]
    );

    let plain = validate(&issuer_with("dpop: off")).expect("`off` is a word");
    assert_eq!(plain.issuers[0].dpop, super::DpopMode::Off);
    assert!(plain.issuers[0].introspection.is_none());
    assert!(plain.resource_metadata.is_none());
    assert!(plain.token_source_headers().is_empty());

    for (fields, field) in [
        ("dpop: sometimes", "issuers[0].dpop"),
        ("introspection: {enabled: true}", "issuers[0].client_id"),
        (
            "introspect_jwts: true, client_id: rs, client_secret: s",
            "issuers[0].introspect_jwts",
        ),
        (
            "client_id: rs, client_secret: s, introspection: {enabled: true, endpoint: \"ftp://x\"}",
            "issuers[0].introspection.endpoint",
        ),
        (
            "client_id: rs, client_secret: s, introspection: {enabled: true, max_calls_per_second: 0}",
            "issuers[0].introspection.max_calls_per_second",
        ),
        (
            "client_id: rs, client_secret: s, introspection: {enabled: true, colour: blue}",
            "colour",
        ),
    ] {
        let found = problems(&issuer_with(fields));
        assert!(
            found.iter().any(|p| p.contains(field)),
            "{fields}: {found:?}"
        );
    }
    for (top, field) in [
        (
            "dpop_proofs: {algorithms: [HS256]}",
            "dpop_proofs.algorithms",
        ),
        ("dpop_proofs: {max_age: 0s}", "dpop_proofs.max_age"),
        (
            "resource_metadata: {scopes_supported: [a]}",
            "resource_metadata.resource",
        ),
        (
            "resource_metadata: {resource: \"https://api.example.com/?x=1\"}",
            "resource_metadata.resource",
        ),
        (
            "resource_metadata: {resource: \"http://api.example.com\"}",
            "resource_metadata.resource",
        ),
        (
            "resource_metadata: {resource: \"https://api.example.com\", authorization_servers: [\"\"]}",
            "resource_metadata.authorization_servers[0]",
        ),
    ] {
        let found = problems(&format!("{}{top}\n", issuer_with("dpop: optional")));
        assert!(found.iter().any(|p| p.contains(field)), "{top}: {found:?}");
    }
    // Keys from a file: introspection needs its endpoint.
    let found = problems(
        "issuers: [{issuer: https://idp.example.com, jwks_file: /x.json, client_id: rs, client_secret: s, introspection: {enabled: true}}]\naudiences: [api]\n",
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("issuers[0].introspection.endpoint")),
        "{found:?}"
    );
}
