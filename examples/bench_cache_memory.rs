//! Benchmark (`bench/run.sh`): what the verified-token cache costs in memory. Builds a decider
//! with the default claim headers whose cache may hold `COUNT` tokens, checks `COUNT` distinct
//! valid tokens (EdDSA, so that signing them is quick; the entry does not depend on the
//! algorithm), each once and dropped at once, and prints the process's RSS before and after,
//! the cache's entries and its own byte estimate.
//!
//! `cargo run --release --example bench_cache_memory -- COUNT`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark tool: failing loudly is the point"
)]

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use authgate::config::parse_yaml;
use authgate::decision::{CheckRequest, Decider, Decision, Frontend, SystemClock, TrustedIssuer};
use authgate::demo::signing::SigningKey;
use authgate::keys::jwk::parse_jwk;
use authgate::keys::{KeySet, StaticKeys};
use authgate::verify::Alg;
use serde_json::json;

const ISSUER: &str = "https://bench.authgate.test";

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |n| n.parse().expect("COUNT"));
    let yaml = format!(
        "issuers: [{{issuer: \"{ISSUER}\"}}]\naudiences: [bench-api]\n\
         verified_cache: {{capacity: {}, max_bytes: {}}}",
        // Room for every token, and a per-entry floor (max_bytes / capacity) of 128 bytes,
        // below any real entry, so that the cache's estimate is its own.
        count * 8,
        count * 1024
    );
    let config = Arc::new(parse_yaml(&yaml).unwrap().validate().unwrap());
    let key = SigningKey::generate(Alg::EdDSA, "bench-ed25519").unwrap();
    let keys = Arc::new(StaticKeys::new(KeySet::new(vec![
        parse_jwk(&key.public_jwk()).unwrap(),
    ])));
    let issuers = vec![TrustedIssuer {
        config: config.issuers[0].clone(),
        keys,
    }];
    let decider = Arc::new(Decider::new(config, issuers, Arc::new(SystemClock)));
    let key = Arc::new(key);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let before = rss_mib();
    let started = Instant::now();

    let workers: u64 = 2;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (decider, key) = (Arc::clone(&decider), Arc::clone(&key));
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(usize::try_from(workers).unwrap()) {
                let token = key
                    .sign_jwt(&json!({
                        "iss": ISSUER,
                        "aud": "bench-api",
                        "sub": format!("user-{i:07}"),
                        "jti": format!("bench-{now}-{i}"),
                        "scope": "read write",
                        "iat": now,
                        "exp": now + 3600,
                    }))
                    .unwrap();
                let check = CheckRequest {
                    authorization: vec![format!("Bearer {token}").into_bytes()],
                    ..CheckRequest::new(Frontend::ForwardAuth)
                };
                assert!(
                    matches!(decider.decide(&check).await, Decision::Allow(_)),
                    "token {i} denied"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let after = rss_mib();
    let (entries, bytes) = decider.verified_cache_size().unwrap();
    println!(
        "{entries} tokens cached: RSS {before:.1} MiB before, {after:.1} MiB after \
         (+{:.1} MiB, {:.0} bytes per token; the cache's own estimate {:.0} bytes per token), \
         filled in {:.0}s",
        after - before,
        (after - before) * 1_048_576.0 / entries.max(1) as f64,
        bytes as f64 / entries.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
}
