//! Telemetry: metric names (named once here, described at start-up), the Prometheus recorder,
//! the `record_*` functions that are the only place authgate emits a metric, and tracing
//! initialisation (text or JSON). No metric label ever comes from token content.
//!
//! The metrics of every check (decisions, their duration, the verified-token cache, sheds) are
//! registered once, on first use, and their handles held: no label lookup per check.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Counter;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;
use crate::decision::{Decision, Frontend};

/// Decisions by `frontend`, `result` (allow/deny) and `reason`.
pub const DECISIONS: &str = "authgate_decisions_total";
/// Time to decide, by `frontend`.
pub const DECISION_DURATION: &str = "authgate_decision_duration_seconds";
/// Discovery/JWKS fetches by `issuer` and `result`.
pub const JWKS_FETCHES: &str = "authgate_jwks_fetches_total";
/// Keys in the current set, by `issuer`.
pub const KEYS_LOADED: &str = "authgate_keys_loaded";
/// Age of the current key set, by `issuer`.
pub const KEY_SET_AGE: &str = "authgate_key_set_age_seconds";
/// Key lookups by `result` (hit, miss_refetch, miss_cooldown).
pub const KEY_CACHE: &str = "authgate_key_cache_lookups_total";
/// Tokens looked up in the verified-token cache, by `result` (hit, miss).
pub const VERIFIED_CACHE: &str = "authgate_verified_cache_lookups_total";
/// Entries the verified-token cache dropped to stay within its bounds.
pub const VERIFIED_CACHE_EVICTIONS: &str = "authgate_verified_cache_evictions_total";
/// Tokens in the verified-token cache.
pub const VERIFIED_CACHE_ENTRIES: &str = "authgate_verified_cache_entries";
/// Bytes the verified-token cache holds, by its own estimate.
pub const VERIFIED_CACHE_BYTES: &str = "authgate_verified_cache_bytes";
/// Password-grant exchanges at a token endpoint, by `result` (success, refused, unavailable,
/// rate_limited).
pub const PASSWORD_GRANTS: &str = "authgate_password_grant_exchanges_total";
/// Basic credentials answered from the password-grant cache (or a running exchange), by
/// `result` (hit, miss).
pub const PASSWORD_GRANT_CACHE: &str = "authgate_password_grant_cache_lookups_total";
/// Calls to an introspection endpoint, by `result` (active, inactive, unavailable,
/// rate_limited).
pub const INTROSPECTIONS: &str = "authgate_introspection_requests_total";
/// Tokens answered from remembered introspection results (or a running call), by `result`
/// (hit, miss).
pub const INTROSPECTION_CACHE: &str = "authgate_introspection_cache_lookups_total";
/// Tokens on anonymous routes that did not verify (the request was allowed without identity),
/// by `reason`.
pub const ANONYMOUS_INVALID_TOKENS: &str = "authgate_anonymous_invalid_tokens_total";
/// Config reloads by `result` (success, failure).
pub const CONFIG_RELOADS: &str = "authgate_config_reloads_total";
/// When the running config was last loaded (start or reload), seconds since the epoch.
pub const CONFIG_LAST_RELOAD: &str = "authgate_config_last_reload_success_timestamp_seconds";
/// Checks shed by the concurrency limit, by `frontend`.
pub const SHED: &str = "authgate_checks_shed_total";
/// Open client connections, by `listener` (http, grpc, admin).
pub const OPEN_CONNECTIONS: &str = "authgate_open_connections";
/// Claim header values left out for size or encoding.
pub const CLAIM_HEADERS_REJECTED: &str = "authgate_claim_headers_rejected_total";
/// 1 while the service reports ready.
pub const READY: &str = "authgate_ready";
/// Constant 1 with `version` and `commit` labels.
pub const BUILD_INFO: &str = "authgate_build_info";

/// The git commit this binary was built from.
pub const GIT_COMMIT: &str = env!("AUTHGATE_GIT_COMMIT");
/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Latency buckets in seconds: from tens of microseconds to Envoy's 200 ms timeout and beyond.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2,
    0.5, 1.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle. Later calls (tests
/// running several servers in one process) share the same recorder.
pub fn metrics_handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application): then ours
        // renders only what is recorded through it, which is still correct for /metrics.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        DECISIONS,
        "Authentication decisions by frontend, result and reason"
    );
    describe_counter!(
        JWKS_FETCHES,
        "Discovery and JWKS fetches by issuer and result"
    );
    describe_gauge!(KEYS_LOADED, "Usable keys in the current key set by issuer");
    describe_gauge!(
        KEY_SET_AGE,
        Unit::Seconds,
        "Age of the current key set by issuer"
    );
    describe_counter!(
        KEY_CACHE,
        "Key lookups by result (hit, miss_refetch, miss_cooldown)"
    );
    describe_counter!(
        VERIFIED_CACHE,
        "Tokens answered from the verified-token cache (hit) or checked in full (miss)"
    );
    describe_counter!(
        VERIFIED_CACHE_EVICTIONS,
        "Entries the verified-token cache dropped to stay within its bounds"
    );
    describe_gauge!(VERIFIED_CACHE_ENTRIES, "Tokens in the verified-token cache");
    describe_gauge!(
        VERIFIED_CACHE_BYTES,
        Unit::Bytes,
        "Bytes the verified-token cache holds (its own estimate)"
    );
    describe_counter!(
        PASSWORD_GRANTS,
        "Password-grant exchanges by result (success, refused, unavailable, rate_limited)"
    );
    describe_counter!(
        PASSWORD_GRANT_CACHE,
        "Basic credentials answered from remembered exchanges (hit) or exchanged (miss)"
    );
    describe_counter!(
        INTROSPECTIONS,
        "Introspection endpoint calls by result (active, inactive, unavailable, rate_limited)"
    );
    describe_counter!(
        INTROSPECTION_CACHE,
        "Tokens answered from remembered introspection results (hit) or asked about (miss)"
    );
    describe_counter!(
        ANONYMOUS_INVALID_TOKENS,
        "Tokens on anonymous routes that did not verify (allowed without identity), by reason"
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Config reloads by result (success, failure)"
    );
    describe_gauge!(
        CONFIG_LAST_RELOAD,
        Unit::Seconds,
        "When the running config was loaded (start or last successful reload)"
    );
    describe_counter!(SHED, "Checks shed by the concurrency limit");
    describe_gauge!(
        OPEN_CONNECTIONS,
        "Open client connections by listener (capped by limits.max_connections)"
    );
    describe_counter!(
        CLAIM_HEADERS_REJECTED,
        "Claim header values left out (too long or unencodable)"
    );
    describe_gauge!(READY, "1 while the service is ready");
    describe_gauge!(BUILD_INFO, "Build information");
    metrics::gauge!(BUILD_INFO, "version" => VERSION, "commit" => GIT_COMMIT).set(1.0);
}

/// A metric handle registered on first use (after the recorder is installed) and then held.
#[derive(Debug)]
struct Held<T>(OnceLock<T>);

impl<T> Held<T> {
    const fn new() -> Self {
        Self(OnceLock::new())
    }

    fn get(&self, register: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(|| {
            metrics_handle();
            register()
        })
    }
}

/// The held handles of one frontend.
#[derive(Debug)]
struct FrontendMetrics {
    decisions: [Held<Counter>; Decision::LABELS],
    duration: DurationHistogram,
    shed: Held<Counter>,
}

impl FrontendMetrics {
    const fn new() -> Self {
        Self {
            decisions: [const { Held::new() }; Decision::LABELS],
            duration: DurationHistogram::new(),
            shed: Held::new(),
        }
    }
}

static FRONTENDS: [FrontendMetrics; Frontend::ALL.len()] =
    [const { FrontendMetrics::new() }; Frontend::ALL.len()];
static VERIFIED_HITS: Held<Counter> = Held::new();
static VERIFIED_MISSES: Held<Counter> = Held::new();
static VERIFIED_EVICTIONS: Held<Counter> = Held::new();
static HEADERS_REJECTED: Held<Counter> = Held::new();

fn frontend_metrics(frontend: Frontend) -> &'static FrontendMetrics {
    &FRONTENDS[frontend as usize]
}

/// One decision: `DECISIONS` by frontend, result and reason, and its time in
/// `DECISION_DURATION`.
pub fn record_decision(frontend: Frontend, decision: &Decision, took: Duration) {
    let m = frontend_metrics(frontend);
    if let Some(counter) = m.decisions.get(decision.label_index()) {
        counter
            .get(|| {
                let (result, reason) = decision.labels();
                let frontend = frontend.as_str();
                metrics::counter!(DECISIONS, "frontend" => frontend, "result" => result, "reason" => reason)
            })
            .increment(1);
    }
    m.duration.record(took);
}

/// `DECISION_DURATION` of one frontend, kept here rather than in the exporter, whose histograms
/// keep every sample until `/metrics` renders (a push per check into a shared list of blocks:
/// 1.5-2 % of a cache-hit check's CPU in a profile); this is two atomic additions per check.
#[derive(Debug)]
struct DurationHistogram {
    /// Checks per bucket, not cumulative: bucket `i` counts durations in
    /// `(LATENCY_BUCKETS[i - 1], LATENCY_BUCKETS[i]]`, the last one those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(count) = self.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The Prometheus text of every frontend's `DECISION_DURATION` that has recorded a check, for
/// `/metrics` after the exporter's own text.
pub fn render_decision_durations() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for frontend in Frontend::ALL {
        let histogram = &frontend_metrics(frontend).duration;
        let counts: Vec<u64> = histogram
            .buckets
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        if out.is_empty() {
            let _ = writeln!(out, "# HELP {DECISION_DURATION} Time to decide one check");
            let _ = writeln!(out, "# TYPE {DECISION_DURATION} histogram");
        }
        let label = frontend.as_str();
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{DECISION_DURATION}_bucket{{frontend=\"{label}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{DECISION_DURATION}_bucket{{frontend=\"{label}\",le=\"+Inf\"}} {total}"
        );
        #[allow(
            clippy::cast_precision_loss,
            reason = "a sum of nanoseconds shown in seconds"
        )]
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{DECISION_DURATION}_sum{{frontend=\"{label}\"}} {sum}");
        let _ = writeln!(
            out,
            "{DECISION_DURATION}_count{{frontend=\"{label}\"}} {total}"
        );
    }
    out
}

/// One check shed by the concurrency limit.
pub fn record_shed(frontend: Frontend) {
    frontend_metrics(frontend)
        .shed
        .get(|| metrics::counter!(SHED, "frontend" => frontend.as_str()))
        .increment(1);
}

/// One token answered from the verified-token cache (`hit`) or checked in full.
pub fn record_verified_cache(hit: bool) {
    let counter = if hit {
        VERIFIED_HITS.get(|| metrics::counter!(VERIFIED_CACHE, "result" => "hit"))
    } else {
        VERIFIED_MISSES.get(|| metrics::counter!(VERIFIED_CACHE, "result" => "miss"))
    };
    counter.increment(1);
}

/// The running config was loaded now (at start or by a reload).
pub fn record_config_loaded() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!(CONFIG_LAST_RELOAD).set(now);
}

/// One reload and whether it was taken.
pub fn record_config_reload(success: bool) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!(CONFIG_RELOADS, "result" => result).increment(1);
    if success {
        record_config_loaded();
    }
}

/// A token on an anonymous route that did not verify, and why.
pub fn record_anonymous_invalid_token(reason: crate::decision::DenyReason) {
    metrics::counter!(ANONYMOUS_INVALID_TOKENS, "reason" => reason.as_str()).increment(1);
}

/// One password-grant exchange and its `result`. Rare next to checks: looked up by label.
pub fn record_password_grant(result: &'static str) {
    metrics::counter!(PASSWORD_GRANTS, "result" => result).increment(1);
}

/// One look into the password-grant cache.
pub fn record_password_grant_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(PASSWORD_GRANT_CACHE, "result" => result).increment(1);
}

/// One introspection call and its `result`. Looked up by label (a call is a network round trip).
pub fn record_introspection(result: &'static str) {
    metrics::counter!(INTROSPECTIONS, "result" => result).increment(1);
}

/// One look into the introspection cache.
pub fn record_introspection_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(INTROSPECTION_CACHE, "result" => result).increment(1);
}

/// Entries the verified-token cache dropped.
pub fn record_verified_cache_evictions(count: u64) {
    VERIFIED_EVICTIONS
        .get(|| metrics::counter!(VERIFIED_CACHE_EVICTIONS))
        .increment(count);
}

/// The size of the verified-token cache, set just before `/metrics` renders.
pub fn record_verified_cache_size(entries: usize, bytes: u64) {
    metrics::gauge!(VERIFIED_CACHE_ENTRIES).set(entries as f64);
    metrics::gauge!(VERIFIED_CACHE_BYTES).set(bytes as f64);
}

/// Claim header values left out of one allow.
pub fn record_claim_headers_rejected(count: usize) {
    if count > 0 {
        HEADERS_REJECTED
            .get(|| metrics::counter!(CLAIM_HEADERS_REJECTED))
            .increment(count as u64);
    }
}

/// One discovery or JWKS fetch of `issuer`: `result` is `ok` or the error's label; on success
/// `keys` is the size of the new set.
pub fn record_fetch(issuer: &str, result: &'static str, keys: Option<usize>) {
    metrics::counter!(JWKS_FETCHES, "issuer" => issuer.to_owned(), "result" => result).increment(1);
    if let Some(keys) = keys {
        metrics::gauge!(KEYS_LOADED, "issuer" => issuer.to_owned()).set(keys as f64);
    }
}

/// One key lookup: `hit`, `miss_refetch` or `miss_cooldown`.
pub fn record_key_lookup(result: &'static str) {
    metrics::counter!(KEY_CACHE, "result" => result).increment(1);
}

/// Readiness and the state of every issuer's key set, set just before `/metrics` renders.
pub fn record_health<'a>(
    ready: bool,
    issuers: impl IntoIterator<Item = (&'a str, crate::keys::KeyHealth)>,
) {
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    for (issuer, h) in issuers {
        if let Some(age) = h.age {
            metrics::gauge!(KEY_SET_AGE, "issuer" => issuer.to_owned()).set(age.as_secs_f64());
        }
        metrics::gauge!(KEYS_LOADED, "issuer" => issuer.to_owned()).set(h.keys as f64);
    }
}

/// Counts one open connection of `listener` in `OPEN_CONNECTIONS` while alive.
#[derive(Debug)]
pub struct OpenConnection(metrics::Gauge);

impl OpenConnection {
    /// Counts a connection that just opened.
    pub fn new(listener: &'static str) -> Self {
        let gauge = metrics::gauge!(OPEN_CONNECTIONS, "listener" => listener);
        gauge.increment(1);
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

/// Initialises tracing on stderr. `level` is a filter directive; `RUST_LOG` overrides it.
pub fn init_tracing(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
