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
