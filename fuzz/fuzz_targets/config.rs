//! Fuzz target `config`: the input is a YAML config file. It goes through `parse_yaml` and
//! `validate()`, and a config that validates is started as far as that needs no socket: the
//! decider (concurrency limiter, verified-signature cache) and the HTTP mouth and the admin router.
//!
//! Invariants, for any input:
//! - nothing panics, including building what `authgate serve` builds from a valid config (a
//!   config that `check-config` accepts must not crash the service at start-up);
//! - a parse error is one non-empty line; a validation error renders as at least one line, each
//!   non-empty and without a line break (`check-config` prints one line per problem);
//! - a valid config has at least one issuer, each with an algorithm and an audience; a token
//!   source; and the bounds `validate()` promises (leeway <= 10m, min_ttl <= max_ttl, ...),
//!   including a connection limit the listener's semaphore accepts.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use authgate::admin::Health;
use authgate::config::{Config, parse_yaml};
use authgate::decision::{Decider, FixedClock, TrustedIssuer};
use authgate::keys::{KeySet, StaticKeys};
use libfuzzer_sys::fuzz_target;
use tokio::sync::Semaphore;

fn one_line(line: &str) -> bool {
    !line.trim().is_empty() && !line.contains(['\n', '\r'])
}

fn check_valid(config: &Config) {
    assert!(!config.issuers.is_empty());
    for issuer in &config.issuers {
        assert!(!issuer.issuer.is_empty());
        assert!(!issuer.algorithms.is_empty(), "{issuer:?}");
        assert!(!issuer.audiences.is_empty(), "{issuer:?}");
    }
    assert!(config.token.header || config.token.query.is_some());
    assert!(config.token.max_bytes > 0);
    assert!(config.verify.leeway <= Duration::from_secs(600));
    let keys = &config.keys;
    assert!(
        !keys.min_ttl.is_zero() && keys.min_ttl <= keys.max_ttl,
        "{keys:?}"
    );
    assert!(!keys.retry_initial.is_zero() && keys.retry_initial <= keys.retry_max);
    assert!(!keys.fetch_timeout.is_zero() && !keys.connect_timeout.is_zero());
    assert!(keys.max_keys > 0 && keys.max_body_bytes > 0);
    let limits = &config.limits;
    assert!(!limits.check_deadline.is_zero() && limits.max_header_bytes >= 8192);
    // shutdown::serve builds a Semaphore of max_connections permits; tokio panics above this.
    assert!(
        (1..=Semaphore::MAX_PERMITS).contains(&limits.max_connections),
        "limits.max_connections {} validates but the listener cannot start with it",
        limits.max_connections
    );
    assert!(!config.verified_cache.ttl.is_zero());
    let prefix = &config.http.envoy_prefix;
    assert!(
        prefix.starts_with('/') && !prefix.ends_with('/'),
        "{prefix:?}"
    );
    assert!(
        prefix != "/auth" && !prefix.starts_with("/auth/"),
        "{prefix:?}"
    );
    assert!(!config.http.realm.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let raw = match parse_yaml(text) {
        Ok(raw) => raw,
        Err(message) => {
            assert!(one_line(&message), "parse error {message:?}");
            return;
        }
    };
    let config = match raw.validate() {
        Ok(config) => config,
        Err(error) => {
            let lines = error.lines();
            assert!(!lines.is_empty(), "{error:?} renders no line");
            for line in &lines {
                assert!(one_line(line), "problem line {line:?}");
            }
            return;
        }
    };
    check_valid(&config);

    // What `authgate serve` builds from the config before it touches the network.
    let config = Arc::new(config);
    let issuers = config
        .issuers
        .iter()
        .map(|issuer| TrustedIssuer {
            config: issuer.clone(),
            keys: Arc::new(StaticKeys::new(KeySet::default())),
        })
        .collect();
    let decider = Arc::new(authgate::Live::new(Decider::new(
        Arc::clone(&config),
        issuers,
        Arc::new(FixedClock::at(0)),
    )));
    let _http = authgate::http::mouth(Arc::clone(&decider));
    let _admin = authgate::admin::router(decider, Arc::new(Health::default()));
});
