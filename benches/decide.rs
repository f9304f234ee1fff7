//! Benchmark of the decision core against a baseline measured in the same run: `jsonwebtoken`'s
//! own `decode` (signature + exp/aud/iss validation) of the same token with the same key. The
//! report is a ratio, so a noisy machine moves both sides together.
//!
//! Run: `cargo bench --bench decide` (release profile). Prints one line per case:
//! name, ns per op for authgate and for the baseline, and their ratio.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    reason = "benchmark harness"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::config::parse_yaml;
use authgate::decision::{CheckRequest, Clock as _, Decider, Decision, SystemClock, TrustedIssuer};
use authgate::demo::signing::SigningKey;
use authgate::keys::jwk::parse_jwk;
use authgate::keys::{KeySet, KeySource, StaticKeys};
use authgate::verify::Alg;
use serde_json::json;

const ISS: &str = "https://idp.bench";

fn decider(key: &SigningKey, cache: bool) -> Decider {
    decider_with(key, cache, "")
}

/// A decider with `extra` YAML (routes) appended.
fn decider_with(key: &SigningKey, cache: bool, extra: &str) -> Decider {
    let yaml = format!(
        "issuers: [{{issuer: \"{ISS}\"}}]\naudiences: [api]\nverified_cache: {{capacity: {}}}\n\
         limits: {{max_concurrent_checks: 100000}}\n{extra}",
        if cache { 10_000 } else { 0 }
    );
    let cfg = Arc::new(parse_yaml(&yaml).unwrap().validate().unwrap());
    let keys: Arc<dyn KeySource> = Arc::new(StaticKeys::new(KeySet::new(vec![
        parse_jwk(&key.public_jwk()).unwrap(),
    ])));
    let issuers = vec![TrustedIssuer {
        config: cfg.issuers[0].clone(),
        keys,
    }];
    Decider::new(cfg, issuers, Arc::new(SystemClock))
}

/// Runs `f` repeatedly for about `budget` and returns nanoseconds per call.
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    // Warm-up, and a first estimate of the per-call cost.
    let start = Instant::now();
    let mut warm = 0u64;
    while start.elapsed() < budget / 10 {
        f();
        warm += 1;
    }
    let per_call = start.elapsed().as_nanos() as f64 / warm.max(1) as f64;
    let iterations = ((budget.as_nanos() as f64 / per_call) as u64).max(10);
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / iterations as f64
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    // Record metrics as the service does, so their cost is part of the figure.
    let _ = authgate::telemetry::metrics_handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<28} {:>14} {:>16} {:>8}",
        "case", "authgate ns/op", "baseline ns/op", "ratio"
    );
    for alg in [Alg::RS256, Alg::ES256, Alg::EdDSA] {
        let key = SigningKey::generate(alg, "k1").unwrap();
        let now = SystemClock.now_unix();
        let token = key
            .sign_jwt(
                &json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": now + 3600, "iat": now}),
            )
            .unwrap();
        let request = CheckRequest {
            authorization: vec![format!("Bearer {token}").into_bytes()],
            ..CheckRequest::for_test()
        };

        // Baseline: jsonwebtoken's decode with the same checks on the same key.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let jwt_alg: jsonwebtoken::Algorithm = alg.as_str().parse().unwrap();
        let mut validation = jsonwebtoken::Validation::new(jwt_alg);
        validation.set_audience(&["api"]);
        validation.set_issuer(&[ISS]);
        let baseline = measure(budget, || {
            let data = jsonwebtoken::decode::<serde_json::Value>(
                black_box(token.as_str()),
                &decoding,
                &validation,
            )
            .unwrap();
            black_box(data);
        });

        for (label, cache) in [("uncached", false), ("verified-cache", true)] {
            let d = decider(&key, cache);
            let ns = measure(budget, || {
                let decision = runtime.block_on(d.decide(black_box(&request)));
                assert!(matches!(decision, Decision::Allow(_)));
            });
            println!(
                "{:<28} {:>14.0} {:>16.0} {:>8.2}",
                format!("{alg} {label}"),
                ns,
                baseline,
                ns / baseline
            );
        }
    }

    // Route rules, compiled once at load: a request that matches the LAST of 1 and of 1,000
    // path rules (every rule scanned), verified-cache hits, in the same run.
    let key = SigningKey::generate(Alg::EdDSA, "k1").unwrap();
    let now = SystemClock.now_unix();
    let token = key
        .sign_jwt(&json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": now + 3600, "iat": now}))
        .unwrap();
    let mut per_count = Vec::new();
    for count in [1usize, 1000] {
        let rules: String = (0..count)
            .map(|i| format!("  - {{path_prefix: /svc-{i}, methods: [GET, POST]}}\n"))
            .collect();
        let d = decider_with(&key, true, &format!("routes:\n{rules}"));
        let request = CheckRequest {
            authorization: vec![format!("Bearer {token}").into_bytes()],
            path: Some(format!("/svc-{}/items?x=1", count - 1)),
            ..CheckRequest::for_test()
        };
        let ns = measure(budget, || {
            let decision = runtime.block_on(d.decide(black_box(&request)));
            assert!(matches!(decision, Decision::Allow(_)));
        });
        per_count.push(ns);
    }
    println!(
        "{:<28} {:>14.0} {:>16.0} {:>8.2}",
        "1000 rules vs 1 (last hit)",
        per_count[1],
        per_count[0],
        per_count[1] / per_count[0]
    );

    // A flood of garbage: the cheap rejections must cost far less than one signature check.
    let key = SigningKey::generate(Alg::RS256, "k1").unwrap();
    let d = decider(&key, false);
    let junk = CheckRequest {
        authorization: vec![b"Bearer not.a.jwt".to_vec()],
        ..CheckRequest::for_test()
    };
    let ns = measure(budget, || {
        black_box(runtime.block_on(d.decide(black_box(&junk))));
    });
    println!(
        "{:<28} {:>14.0} {:>16} {:>8}",
        "malformed token deny", ns, "-", "-"
    );
}
