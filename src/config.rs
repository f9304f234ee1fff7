//! Configuration: raw serde structs (YAML file, `deny_unknown_fields`) are overlaid with
//! environment and CLI values, then `validate()`d once into the typed [`Config`] the service runs
//! on. Every problem is reported with the field it belongs to.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::claims::{ClaimPath, ClaimRequirement};
use crate::verify::Alg;

/// Default listen address of the forward-auth HTTP endpoints.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default listen address of the gRPC services.
pub const DEFAULT_GRPC_LISTEN: &str = "0.0.0.0:9001";
/// Default listen address of the admin endpoints (metrics, health).
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";
/// Default cap on a token's length in bytes, checked before any decoding.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default clock leeway for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default bounds for a key set's lifetime taken from `Cache-Control: max-age`.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(60);
/// Upper bound of a key set's lifetime.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);
/// Lifetime of a key set served without `Cache-Control: max-age`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Cooldown after an unknown-kid refetch during which unknown kids are denied without fetching.
pub const DEFAULT_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);
/// How long the last good key set keeps serving while the IdP fails.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// Connect timeout for discovery and JWKS fetches.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Total timeout for one discovery or JWKS fetch.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery or JWKS body accepted.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most keys accepted in one JWKS.
pub const DEFAULT_MAX_KEYS: usize = 100;
/// First retry delay after a failed key fetch (doubles, with jitter).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay after failed key fetches.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Per-check deadline, below Envoy's 200 ms default ext_authz timeout.
pub const DEFAULT_CHECK_DEADLINE: Duration = Duration::from_millis(150);
/// Checks served at once before new ones are shed.
pub const DEFAULT_MAX_CONCURRENT_CHECKS: usize = 1024;
/// Cap on all request headers of one HTTP request.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Time a client gets to send its request headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of every duration setting.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Upper bound of every count and size setting.
const MAX_COUNT: usize = 1_000_000_000;
/// Open connections per listener; more wait in the kernel's backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Time between SIGTERM and closing the listeners (readiness is false during it).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Bound on draining in-flight requests after the listeners close.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest claim header value; longer values are omitted and counted.
pub const DEFAULT_MAX_CLAIM_HEADER_BYTES: usize = 4096;
/// Verified tokens remembered so a repeated token skips the signature check.
pub const DEFAULT_VERIFIED_CACHE_CAPACITY: u64 = 10_000;
/// Longest time a verification is remembered.
pub const DEFAULT_VERIFIED_CACHE_TTL: Duration = Duration::from_secs(300);
/// Path prefix of the Envoy ext_authz HTTP endpoint.
pub const DEFAULT_ENVOY_PREFIX: &str = "/envoy";
/// Realm in `WWW-Authenticate` challenges.
pub const DEFAULT_REALM: &str = "authgate";
/// Default query parameter carrying a token when the query source is enabled.
pub const DEFAULT_QUERY_PARAMETER: &str = "access_token";

/// Algorithms accepted when the config names none.
pub const DEFAULT_ALGORITHMS: [Alg; 9] = Alg::ALL;

// ---------------------------------------------------------------------------------------------
// Raw file format
// ---------------------------------------------------------------------------------------------

/// The YAML file as written. Every field is optional; defaults are applied by `validate()`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listen addresses.
    #[serde(default)]
    pub listen: RawListen,
    /// Log output.
    #[serde(default)]
    pub log: RawLog,
    /// Trusted token issuers and where their keys come from.
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    /// Audiences a token must carry (any of them, or all with `audience_match: all`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// `any` (default) or `all`.
    pub audience_match: Option<String>,
    /// Accepted signature algorithms for every issuer that does not name its own.
    pub algorithms: Option<Vec<String>>,
    /// Clock leeway for `exp`, `nbf`, `iat`, e.g. `30s`.
    pub leeway: Option<String>,
    /// Accepted values of the JOSE `typ` header (e.g. `at+jwt`); unset means not checked.
    pub required_typ: Option<Vec<String>>,
    /// Where tokens are read from.
    #[serde(default)]
    pub token: RawToken,
    /// Claims copied into upstream headers. Unset means `sub` and `iss`.
    pub claim_headers: Option<Vec<RawClaimHeader>>,
    /// Longest claim header value in bytes; longer values are omitted.
    pub max_claim_header_bytes: Option<usize>,
    /// Requirements every token must meet (on top of issuer and audience).
    #[serde(default)]
    pub require: RawRequirement,
    /// Peers (IP networks) whose description of the original request (forwarded method, host,
    /// path; Envoy's request attributes) is believed. Default: every peer. From any other peer
    /// those are ignored, so route rules that need them deny the check as malformed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Per-route rules, first match wins; unmatched requests need a valid token.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Key cache and fetch bounds.
    #[serde(default)]
    pub keys: RawKeys,
    /// Cache of verified signatures.
    #[serde(default)]
    pub verified_cache: RawVerifiedCache,
    /// Request limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Shutdown timing.
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// HTTP endpoint settings.
    #[serde(default)]
    pub http: RawHttp,
}

/// `listen:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// Forward-auth HTTP endpoints, default `0.0.0.0:8080`.
    pub http: Option<String>,
    /// gRPC services, default `0.0.0.0:9001`.
    pub grpc: Option<String>,
    /// Admin endpoints, default `0.0.0.0:9090`.
    pub admin: Option<String>,
}

/// `log:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json`.
    pub format: Option<String>,
    /// A tracing filter such as `info` or `authgate=debug`.
    pub level: Option<String>,
}

/// One entry of `issuers:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// The exact `iss` value; also the discovery base URL unless keys come from elsewhere.
    pub issuer: Option<String>,
    /// Fetch keys from this JWKS URL instead of using discovery.
    pub jwks_uri: Option<String>,
    /// Load keys from a local JWKS file instead of fetching.
    pub jwks_file: Option<PathBuf>,
    /// Load one public key from a PEM file instead of fetching.
    pub pem_file: Option<PathBuf>,
    /// Algorithm of the PEM key (required with `pem_file`).
    pub pem_alg: Option<String>,
    /// Key id of the PEM key; tokens without a kid match it too.
    pub pem_kid: Option<String>,
    /// Accepted algorithms for this issuer (default: the top-level `algorithms`).
    pub algorithms: Option<Vec<String>>,
    /// Audiences for this issuer (default: the top-level `audiences`).
    pub audiences: Option<Vec<String>>,
    /// Allow `http://` URLs for a non-loopback issuer (never do this in production).
    #[serde(default)]
    pub allow_http: bool,
}

/// `token:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Largest accepted token in bytes (default 8192).
    pub max_bytes: Option<usize>,
    /// Read the token from the `Authorization: Bearer` header (default true).
    pub header: Option<bool>,
    /// Also read the token from a query parameter of the original URI.
    #[serde(default)]
    pub query: RawQuery,
    /// Remove the token from the request before it goes upstream (the `Authorization` header
    /// or the query parameter). Applies where authgate can say so: Envoy ext_authz gRPC (both)
    /// and Envoy's HTTP mode (the header).
    pub strip_upstream: Option<bool>,
}

/// `token.query:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Parameter name, default `access_token`.
    pub name: Option<String>,
}

/// One entry of `claim_headers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaimHeader {
    /// Claim path, dot-separated for nested claims (`realm_access.roles`).
    pub claim: String,
    /// Header name sent upstream.
    pub header: String,
}

/// A requirement on a token: used top-level (`require:`) and per route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequirement {
    /// Only tokens of these issuers.
    pub issuers: Option<Vec<String>>,
    /// Audiences for this requirement (replaces the issuer's audiences).
    pub audiences: Option<Vec<String>>,
    /// Scopes that must all be granted (`scope` string or `scp` array).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claim conditions that must all hold.
    #[serde(default)]
    pub claims: Vec<RawClaimCondition>,
}

/// One claim condition.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaimCondition {
    /// Claim path, dot-separated.
    pub claim: Option<String>,
    /// The claim (or one element of it, if an array) equals this.
    pub equals: Option<String>,
    /// The claim (or one element of it) is one of these.
    pub one_of: Option<Vec<String>>,
}

/// One entry of `routes:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Exact host (case-insensitive, port ignored); unset matches any.
    pub host: Option<String>,
    /// Path prefix on a segment boundary (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub path_prefix: Option<String>,
    /// Glob over the path: `*` within a segment, `**` across segments.
    pub path_glob: Option<String>,
    /// Methods (upper-case); unset matches any.
    pub methods: Option<Vec<String>>,
    /// `anonymous`, `deny` or `require` (default `require`).
    pub action: Option<String>,
    /// What the token must satisfy when the action is `require`.
    #[serde(default)]
    pub require: RawRequirement,
}

/// `keys:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// Lower clamp for `Cache-Control: max-age` (default 1m).
    pub min_ttl: Option<String>,
    /// Upper clamp for `Cache-Control: max-age` (default 1h).
    pub max_ttl: Option<String>,
    /// Lifetime without `Cache-Control: max-age` (default 10m).
    pub default_ttl: Option<String>,
    /// After an unknown-kid refetch, no further one for this long (default 30s).
    pub unknown_kid_cooldown: Option<String>,
    /// Serve the last good key set this long while the IdP fails (default 24h).
    pub max_stale: Option<String>,
    /// Connect timeout for key fetches (default 2s).
    pub connect_timeout: Option<String>,
    /// Total timeout for one key fetch (default 5s).
    pub fetch_timeout: Option<String>,
    /// Largest response accepted from the IdP in bytes (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// Most keys accepted in one JWKS (default 100).
    pub max_keys: Option<usize>,
    /// First retry delay after a failed fetch (default 1s).
    pub retry_initial: Option<String>,
    /// Longest retry delay (default 30s).
    pub retry_max: Option<String>,
}

/// `verified_cache:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerifiedCache {
    /// Tokens remembered (default 10000; 0 turns the cache off). Claims, expiry, audience and
    /// scopes are still checked on every request; only the signature check is skipped, and only
    /// while the key that verified the token is still in the current key set.
    pub capacity: Option<u64>,
    /// Longest time one verification is remembered (default 5m).
    pub ttl: Option<String>,
}

/// `limits:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Per-check deadline (default 150ms).
    pub check_deadline: Option<String>,
    /// Checks served at once; more are shed with an "unavailable" deny (default 1024).
    pub max_concurrent_checks: Option<usize>,
    /// Cap on all request headers of one HTTP request (default 32768).
    pub max_header_bytes: Option<usize>,
    /// Time a client gets to send its request headers (default 5s).
    pub header_read_timeout: Option<String>,
    /// Open connections per listener (default 4096); more wait until one closes.
    pub max_connections: Option<usize>,
}

/// `shutdown:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// Keep serving this long after SIGTERM while reporting not ready (default 5s).
    pub grace: Option<String>,
    /// Then wait at most this long for in-flight requests (default 10s).
    pub drain_timeout: Option<String>,
}

/// `http:` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Prefix of the Envoy ext_authz HTTP endpoint (default `/envoy`).
    pub envoy_prefix: Option<String>,
    /// Realm in `WWW-Authenticate` challenges (default `authgate`).
    pub realm: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Typed config
// ---------------------------------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: Listen,
    /// Log output.
    pub log: LogConfig,
    /// Trusted issuers, in config order.
    pub issuers: Vec<IssuerConfig>,
    /// Verification settings shared by all issuers.
    pub verify: VerifyConfig,
    /// Where tokens are read from.
    pub token: TokenConfig,
    /// Claims copied into upstream headers.
    pub claim_headers: ClaimHeaderConfig,
    /// Requirement every token must meet.
    pub require: Requirement,
    /// Peers whose forwarded request attributes are believed; `None`: every peer.
    pub trusted_proxies: Option<Vec<ipnet::IpNet>>,
    /// Per-route rules.
    pub routes: Vec<Route>,
    /// Key cache bounds.
    pub keys: KeyCacheConfig,
    /// Verified-signature cache.
    pub verified_cache: VerifiedCacheConfig,
    /// Request limits.
    pub limits: Limits,
    /// Shutdown timing.
    pub shutdown: ShutdownConfig,
    /// HTTP endpoint settings.
    pub http: HttpConfig,
}

impl Config {
    /// Whether `peer` may describe the original request (see `trusted_proxies`). With no list
    /// every peer may; with one, a peer whose address is unknown may not.
    pub fn trusts_peer(&self, peer: Option<std::net::IpAddr>) -> bool {
        match (&self.trusted_proxies, peer) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(nets), Some(ip)) => {
                let ip = ip.to_canonical();
                nets.iter().any(|net| net.contains(&ip))
            }
        }
    }
}

/// Listen addresses.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// Forward-auth HTTP endpoints.
    pub http: SocketAddr,
    /// gRPC services.
    pub grpc: SocketAddr,
    /// Admin endpoints.
    pub admin: SocketAddr,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Tracing filter directive.
    pub level: String,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySourceConfig {
    /// `{issuer}/.well-known/openid-configuration` -> `jwks_uri`.
    Discovery,
    /// A configured JWKS URL.
    JwksUri(String),
    /// A local JWKS file.
    JwksFile(PathBuf),
    /// A local PEM public key.
    PemFile {
        /// File path.
        path: PathBuf,
        /// The key's algorithm.
        alg: Alg,
        /// Optional key id.
        kid: Option<String>,
    },
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Where keys come from.
    pub source: KeySourceConfig,
    /// Accepted algorithms.
    pub algorithms: Vec<Alg>,
    /// Audiences a token of this issuer must carry.
    pub audiences: Vec<String>,
    /// Whether plain-http fetches are allowed for this issuer.
    pub allow_http: bool,
}

/// How `aud` is matched against the configured audiences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceMatch {
    /// At least one configured audience is in the token.
    Any,
    /// Every configured audience is in the token.
    All,
}

/// Verification settings shared by all issuers.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Clock leeway.
    pub leeway: Duration,
    /// How audiences are matched.
    pub audience_match: AudienceMatch,
    /// Accepted `typ` header values; `None` means not checked.
    pub required_typ: Option<Vec<String>>,
}

/// Where tokens are read from.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Cap on a token's length.
    pub max_bytes: usize,
    /// Read `Authorization: Bearer`.
    pub header: bool,
    /// Query parameter name when the query source is enabled.
    pub query: Option<String>,
    /// Remove the token from the upstream request.
    pub strip_upstream: bool,
}

/// Claim -> header mapping.
#[derive(Debug, Clone)]
pub struct ClaimHeaderConfig {
    /// Claim path and the header it goes to.
    pub headers: Vec<(ClaimPath, http::HeaderName)>,
    /// Longest value in bytes.
    pub max_value_bytes: usize,
}

/// A token requirement.
#[derive(Debug, Clone, Default)]
pub struct Requirement {
    /// Only these issuers (None: any configured).
    pub issuers: Option<Vec<String>>,
    /// Replaces the issuer's audiences when set.
    pub audiences: Option<Vec<String>>,
    /// Scopes that must all be granted.
    pub scopes: Vec<String>,
    /// Claim conditions that must all hold.
    pub claims: Vec<ClaimRequirement>,
}

/// What a matching route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Allow without a token.
    Anonymous,
    /// Deny every request.
    Deny,
    /// Require a valid token meeting this requirement (plus the top-level one).
    Require(Requirement),
}

/// How a route matches the path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// Prefix on a segment boundary.
    Prefix(String),
    /// Glob pattern.
    Glob(String),
}

/// One route rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Lower-case host without port.
    pub host: Option<String>,
    /// Path condition.
    pub path: PathMatch,
    /// Upper-case methods.
    pub methods: Option<Vec<String>>,
    /// What happens on a match.
    pub action: RouteAction,
}

/// Key cache and fetch bounds.
#[derive(Debug, Clone)]
pub struct KeyCacheConfig {
    /// Lower clamp for max-age.
    pub min_ttl: Duration,
    /// Upper clamp for max-age.
    pub max_ttl: Duration,
    /// Lifetime without max-age.
    pub default_ttl: Duration,
    /// Cooldown after an unknown-kid refetch.
    pub unknown_kid_cooldown: Duration,
    /// How long a key set may serve past failures.
    pub max_stale: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Total fetch timeout.
    pub fetch_timeout: Duration,
    /// Body cap.
    pub max_body_bytes: usize,
    /// Key count cap.
    pub max_keys: usize,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        Self {
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            default_ttl: DEFAULT_TTL,
            unknown_kid_cooldown: DEFAULT_UNKNOWN_KID_COOLDOWN,
            max_stale: DEFAULT_MAX_STALE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_keys: DEFAULT_MAX_KEYS,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

/// Verified-signature cache bounds.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedCacheConfig {
    /// Entries; 0 disables.
    pub capacity: u64,
    /// Time to live of one entry.
    pub ttl: Duration,
}

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Per-check deadline.
    pub check_deadline: Duration,
    /// Concurrency limit.
    pub max_concurrent_checks: usize,
    /// Header bytes cap.
    pub max_header_bytes: usize,
    /// Header read timeout.
    pub header_read_timeout: Duration,
    /// Open connections per listener.
    pub max_connections: usize,
}

/// Shutdown timing.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// Not-ready period before the listeners close.
    pub grace: Duration,
    /// Bound on draining.
    pub drain_timeout: Duration,
}

/// HTTP endpoint settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Envoy HTTP-mode prefix, starting with `/`, no trailing slash.
    pub envoy_prefix: String,
    /// Challenge realm.
    pub realm: String,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem with the configuration, naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `issuers[0].issuer`.
    pub field: String,
    /// What is wrong, lower-case, no trailing period.
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape (unknown field, wrong type).
    #[error("config file {path}: {message}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// Parser message, naming the field and location.
        message: String,
    },
    /// Values failed validation; one entry per problem.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<FieldError>),
}

fn display_problems(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// One line per problem, for printing before exit code 64.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and overlays
// ---------------------------------------------------------------------------------------------

/// Reads and parses a YAML config file (not yet validated).
pub fn read_file(path: &std::path::Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_yaml(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses YAML text into the raw config.
pub fn parse_yaml(text: &str) -> Result<RawConfig, String> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_saphyr::from_str::<RawConfig>(text).map_err(|e| e.to_string().replace('\n', " "))
}

/// Values from the command line or environment that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--issuer` (repeatable): replaces the file's issuers, each with discovery.
    pub issuers: Vec<String>,
    /// `--audience` (repeatable): replaces the file's audiences.
    pub audiences: Vec<String>,
    /// `--http-listen`.
    pub http_listen: Option<String>,
    /// `--grpc-listen`.
    pub grpc_listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

impl Overrides {
    /// Reads the `AUTHGATE_*` variables from an environment map. List values are
    /// comma-separated (`AUTHGATE_ISSUER=https://a,https://b`).
    pub fn from_env(env: &HashMap<String, String>) -> Self {
        let list = |name: &str| {
            env.get(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let one = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        Self {
            issuers: list("AUTHGATE_ISSUER"),
            audiences: list("AUTHGATE_AUDIENCE"),
            http_listen: one("AUTHGATE_HTTP_LISTEN"),
            grpc_listen: one("AUTHGATE_GRPC_LISTEN"),
            admin_listen: one("AUTHGATE_ADMIN_LISTEN"),
            log_format: one("AUTHGATE_LOG_FORMAT"),
        }
    }

    /// Applies these overrides to a raw config.
    pub fn apply(&self, raw: &mut RawConfig) {
        if !self.issuers.is_empty() {
            raw.issuers = self
                .issuers
                .iter()
                .map(|issuer| RawIssuer {
                    issuer: Some(issuer.clone()),
                    ..RawIssuer::default()
                })
                .collect();
        }
        if !self.audiences.is_empty() {
            raw.audiences = self.audiences.clone();
        }
        if let Some(v) = &self.http_listen {
            raw.listen.http = Some(v.clone());
        }
        if let Some(v) = &self.grpc_listen {
            raw.listen.grpc = Some(v.clone());
        }
        if let Some(v) = &self.admin_listen {
            raw.listen.admin = Some(v.clone());
        }
        if let Some(v) = &self.log_format {
            raw.log.format = Some(v.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Collects problems while validating.
#[derive(Debug, Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn duration(&mut self, field: &str, value: Option<&String>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text.trim()) {
            // Far beyond any sensible setting, and far from the overflow of `Instant + d` or of
            // the caches' own limits (moka refuses a TTL over 1000 years).
            Ok(d) if d > MAX_DURATION => {
                self.add(field, "must be at most 365d");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.add(
                    field,
                    format!("invalid duration {text:?} ({e}); use a form like 30s, 10m or 150ms"),
                );
                default
            }
        }
    }

    fn addr(&mut self, field: &str, value: Option<&String>, default: &str) -> SocketAddr {
        let text = value.map(String::as_str).unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.add(
                field,
                format!("invalid listen address {text:?}; use IP:PORT such as 0.0.0.0:8080"),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn positive(&mut self, field: &str, value: Option<usize>, default: usize) -> usize {
        match value {
            Some(0) => {
                self.add(field, "must be greater than 0");
                default
            }
            // Counts and sizes beyond this are typos; tokio's semaphores also refuse more
            // than usize::MAX >> 3 permits.
            Some(v) if v > MAX_COUNT => {
                self.add(field, format!("must be at most {MAX_COUNT}"));
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    fn algorithms(&mut self, field: &str, names: &[String]) -> Vec<Alg> {
        if names.is_empty() {
            self.add(field, "must name at least one algorithm");
        }
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match name.parse::<Alg>() {
                Ok(alg) if !out.contains(&alg) => out.push(alg),
                Ok(_) => {}
                Err(e) => self.add(format!("{field}[{i}]"), e.to_string()),
            }
        }
        out
    }

    fn requirement(&mut self, field: &str, raw: &RawRequirement) -> Requirement {
        let mut claims = Vec::new();
        for (i, c) in raw.claims.iter().enumerate() {
            let f = format!("{field}.claims[{i}]");
            let Some(path) = c.claim.as_deref() else {
                self.add(format!("{f}.claim"), "is required");
                continue;
            };
            let path = match ClaimPath::parse(path) {
                Ok(p) => p,
                Err(e) => {
                    self.add(format!("{f}.claim"), e);
                    continue;
                }
            };
            let values = match (&c.equals, &c.one_of) {
                (Some(v), None) => vec![v.clone()],
                (None, Some(vs)) if !vs.is_empty() => vs.clone(),
                (None, Some(_)) => {
                    self.add(format!("{f}.one_of"), "must not be empty");
                    continue;
                }
                (Some(_), Some(_)) => {
                    self.add(f, "give either equals or one_of, not both");
                    continue;
                }
                (None, None) => {
                    self.add(f, "needs equals or one_of");
                    continue;
                }
            };
            claims.push(ClaimRequirement { path, values });
        }
        for (i, s) in raw.scopes.iter().enumerate() {
            if s.is_empty() || s.contains(char::is_whitespace) {
                self.add(
                    format!("{field}.scopes[{i}]"),
                    "a scope is one non-empty word",
                );
            }
        }
        Requirement {
            issuers: raw.issuers.clone(),
            audiences: raw.audiences.clone(),
            scopes: raw.scopes.clone(),
            claims,
        }
    }
}

fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a URL's scheme and shape; `allow_http` admits plain http.
fn check_url(problems: &mut Problems, field: &str, url: &str, allow_http: bool) {
    let ok_scheme = url.starts_with("https://")
        || (url.starts_with("http://") && (allow_http || is_loopback_url(url)));
    if !ok_scheme {
        problems.add(
            field,
            format!("{url:?} must be an https:// URL (http:// only for loopback or with allow_http: true)"),
        );
        return;
    }
    if reqwest::Url::parse(url).is_err() || url.contains(['#', ' ']) {
        problems.add(field, format!("{url:?} is not a valid URL"));
    }
}

/// Whether plain http is allowed for an issuer's URLs.
pub fn http_allowed(issuer: &IssuerConfig, url: &str) -> bool {
    issuer.allow_http || is_loopback_url(url)
}

fn header_name(problems: &mut Problems, field: &str, name: &str) -> Option<http::HeaderName> {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            problems.add(field, format!("{name:?} is not a valid header name"));
            None
        }
    }
}

impl RawConfig {
    /// Validates the raw config into a [`Config`], reporting every problem at once.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut p = Problems::default();

        let listen = Listen {
            http: p.addr(
                "listen.http",
                self.listen.http.as_ref(),
                DEFAULT_HTTP_LISTEN,
            ),
            grpc: p.addr(
                "listen.grpc",
                self.listen.grpc.as_ref(),
                DEFAULT_GRPC_LISTEN,
            ),
            admin: p.addr(
                "listen.admin",
                self.listen.admin.as_ref(),
                DEFAULT_ADMIN_LISTEN,
            ),
        };
        if listen.http.port() != 0 && listen.http == listen.admin {
            p.add("listen.admin", "must differ from listen.http");
        }

        let format = match self.log.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                p.add("log.format", format!("{other:?} is not text or json"));
                LogFormat::Text
            }
        };
        let log = LogConfig {
            format,
            level: self.log.level.clone().unwrap_or_else(|| "info".to_owned()),
        };

        let default_algs = match &self.algorithms {
            Some(names) => p.algorithms("algorithms", names),
            None => DEFAULT_ALGORITHMS.to_vec(),
        };
        for (i, a) in self.audiences.iter().enumerate() {
            if a.is_empty() {
                p.add(format!("audiences[{i}]"), "must not be empty");
            }
        }

        if self.issuers.is_empty() {
            p.add(
                "issuers",
                "at least one issuer is required (config file, --issuer or AUTHGATE_ISSUER)",
            );
        }
        let mut issuers: Vec<IssuerConfig> = Vec::new();
        for (i, raw) in self.issuers.iter().enumerate() {
            let f = format!("issuers[{i}]");
            let Some(issuer) = raw.issuer.clone().filter(|s| !s.is_empty()) else {
                p.add(format!("{f}.issuer"), "is required");
                continue;
            };
            if issuers.iter().any(|o| o.issuer == issuer) {
                p.add(
                    format!("{f}.issuer"),
                    format!("{issuer:?} is configured twice"),
                );
            }
            let source = match (&raw.jwks_uri, &raw.jwks_file, &raw.pem_file) {
                (None, None, None) => {
                    check_url(&mut p, &format!("{f}.issuer"), &issuer, raw.allow_http);
                    KeySourceConfig::Discovery
                }
                (Some(uri), None, None) => {
                    check_url(&mut p, &format!("{f}.jwks_uri"), uri, raw.allow_http);
                    KeySourceConfig::JwksUri(uri.clone())
                }
                (None, Some(path), None) => KeySourceConfig::JwksFile(path.clone()),
                (None, None, Some(path)) => match raw.pem_alg.as_deref().map(str::parse::<Alg>) {
                    Some(Ok(alg)) => KeySourceConfig::PemFile {
                        path: path.clone(),
                        alg,
                        kid: raw.pem_kid.clone(),
                    },
                    Some(Err(e)) => {
                        p.add(format!("{f}.pem_alg"), e.to_string());
                        continue;
                    }
                    None => {
                        p.add(format!("{f}.pem_alg"), "is required with pem_file");
                        continue;
                    }
                },
                _ => {
                    p.add(
                        f.clone(),
                        "give at most one of jwks_uri, jwks_file, pem_file",
                    );
                    continue;
                }
            };
            if !matches!(source, KeySourceConfig::PemFile { .. })
                && (raw.pem_alg.is_some() || raw.pem_kid.is_some())
            {
                p.add(
                    format!("{f}.pem_alg"),
                    "pem_alg and pem_kid only go with pem_file",
                );
            }
            let algorithms = match &raw.algorithms {
                Some(names) => p.algorithms(&format!("{f}.algorithms"), names),
                None => default_algs.clone(),
            };
            let audiences = raw
                .audiences
                .clone()
                .unwrap_or_else(|| self.audiences.clone());
            if audiences.is_empty() {
                p.add(
                    format!("{f}.audiences"),
                    "no audience configured for this issuer (audiences, --audience or AUTHGATE_AUDIENCE); \
                     a token must be checked for its audience",
                );
            }
            issuers.push(IssuerConfig {
                issuer,
                source,
                algorithms,
                audiences,
                allow_http: raw.allow_http,
            });
        }

        let audience_match = match self.audience_match.as_deref() {
            None | Some("any") => AudienceMatch::Any,
            Some("all") => AudienceMatch::All,
            Some(other) => {
                p.add("audience_match", format!("{other:?} is not any or all"));
                AudienceMatch::Any
            }
        };
        let verify = VerifyConfig {
            leeway: p.duration("leeway", self.leeway.as_ref(), DEFAULT_LEEWAY),
            audience_match,
            required_typ: self.required_typ.clone(),
        };
        if verify.leeway > Duration::from_secs(600) {
            p.add("leeway", "must be at most 10m");
        }

        let query = if self.token.query.enabled {
            let name = self
                .token
                .query
                .name
                .clone()
                .unwrap_or_else(|| DEFAULT_QUERY_PARAMETER.to_owned());
            if name.is_empty() {
                p.add("token.query.name", "must not be empty");
            }
            Some(name)
        } else {
            if self.token.query.name.is_some() {
                p.add(
                    "token.query.name",
                    "set token.query.enabled: true to read tokens from the query",
                );
            }
            None
        };
        let token = TokenConfig {
            max_bytes: p.positive(
                "token.max_bytes",
                self.token.max_bytes,
                DEFAULT_MAX_TOKEN_BYTES,
            ),
            header: self.token.header.unwrap_or(true),
            query,
            strip_upstream: self.token.strip_upstream.unwrap_or(false),
        };
        if !token.header && token.query.is_none() {
            p.add("token", "no token source enabled (header or query)");
        }

        let mut headers = Vec::new();
        match &self.claim_headers {
            None => {
                headers.push((
                    ClaimPath::single("sub"),
                    http::HeaderName::from_static("x-auth-subject"),
                ));
                headers.push((
                    ClaimPath::single("iss"),
                    http::HeaderName::from_static("x-auth-issuer"),
                ));
            }
            Some(list) => {
                for (i, h) in list.iter().enumerate() {
                    let f = format!("claim_headers[{i}]");
                    let path = ClaimPath::parse(&h.claim)
                        .map_err(|e| p.add(format!("{f}.claim"), e))
                        .ok();
                    let name = header_name(&mut p, &format!("{f}.header"), &h.header);
                    if let Some(name) = &name
                        && RESERVED_HEADERS.contains(&name.as_str())
                    {
                        p.add(
                            format!("{f}.header"),
                            format!("{name} cannot carry a claim"),
                        );
                        continue;
                    }
                    if let (Some(path), Some(name)) = (path, name) {
                        if headers.iter().any(|(_, n)| *n == name) {
                            p.add(format!("{f}.header"), format!("{name} is mapped twice"));
                        }
                        headers.push((path, name));
                    }
                }
            }
        }
        let claim_headers = ClaimHeaderConfig {
            headers,
            max_value_bytes: p.positive(
                "max_claim_header_bytes",
                self.max_claim_header_bytes,
                DEFAULT_MAX_CLAIM_HEADER_BYTES,
            ),
        };

        let require = p.requirement("require", &self.require);
        check_requirement_issuers(&mut p, "require", &require, &issuers);

        let mut routes = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let f = format!("routes[{i}]");
            let path = match (&r.path_prefix, &r.path_glob) {
                (None, None) => PathMatch::Any,
                (Some(prefix), None) if prefix.starts_with('/') => {
                    PathMatch::Prefix(prefix.trim_end_matches('/').to_owned())
                }
                (None, Some(glob)) if glob.starts_with('/') => PathMatch::Glob(glob.clone()),
                (Some(_), Some(_)) => {
                    p.add(f.clone(), "give path_prefix or path_glob, not both");
                    PathMatch::Any
                }
                _ => {
                    p.add(format!("{f}.path_prefix"), "a path starts with /");
                    PathMatch::Any
                }
            };
            let methods = r.methods.as_ref().map(|ms| {
                ms.iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect::<Vec<_>>()
            });
            let requirement = p.requirement(&format!("{f}.require"), &r.require);
            check_requirement_issuers(&mut p, &format!("{f}.require"), &requirement, &issuers);
            let action = match r.action.as_deref() {
                None | Some("require") => RouteAction::Require(requirement),
                Some("anonymous") => RouteAction::Anonymous,
                Some("deny") => RouteAction::Deny,
                Some(other) => {
                    p.add(
                        format!("{f}.action"),
                        format!("{other:?} is not anonymous, deny or require"),
                    );
                    RouteAction::Deny
                }
            };
            routes.push(Route {
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                path,
                methods,
                action,
            });
        }

        let k = &self.keys;
        let keys = KeyCacheConfig {
            min_ttl: p.duration("keys.min_ttl", k.min_ttl.as_ref(), DEFAULT_MIN_TTL),
            max_ttl: p.duration("keys.max_ttl", k.max_ttl.as_ref(), DEFAULT_MAX_TTL),
            default_ttl: p.duration("keys.default_ttl", k.default_ttl.as_ref(), DEFAULT_TTL),
            unknown_kid_cooldown: p.duration(
                "keys.unknown_kid_cooldown",
                k.unknown_kid_cooldown.as_ref(),
                DEFAULT_UNKNOWN_KID_COOLDOWN,
            ),
            max_stale: p.duration("keys.max_stale", k.max_stale.as_ref(), DEFAULT_MAX_STALE),
            connect_timeout: p.duration(
                "keys.connect_timeout",
                k.connect_timeout.as_ref(),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            fetch_timeout: p.duration(
                "keys.fetch_timeout",
                k.fetch_timeout.as_ref(),
                DEFAULT_FETCH_TIMEOUT,
            ),
            max_body_bytes: p.positive(
                "keys.max_body_bytes",
                k.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
            ),
            max_keys: p.positive("keys.max_keys", k.max_keys, DEFAULT_MAX_KEYS),
            retry_initial: p.duration(
                "keys.retry_initial",
                k.retry_initial.as_ref(),
                DEFAULT_RETRY_INITIAL,
            ),
            retry_max: p.duration("keys.retry_max", k.retry_max.as_ref(), DEFAULT_RETRY_MAX),
        };
        if keys.min_ttl > keys.max_ttl {
            p.add("keys.min_ttl", "must not exceed keys.max_ttl");
        }
        if keys.min_ttl.is_zero() {
            p.add("keys.min_ttl", "must be greater than 0");
        }
        if keys.fetch_timeout.is_zero() || keys.connect_timeout.is_zero() {
            p.add("keys.fetch_timeout", "timeouts must be greater than 0");
        }
        if keys.retry_initial.is_zero() || keys.retry_initial > keys.retry_max {
            p.add(
                "keys.retry_initial",
                "must be greater than 0 and at most keys.retry_max",
            );
        }

        let verified_cache = VerifiedCacheConfig {
            capacity: self
                .verified_cache
                .capacity
                .unwrap_or(DEFAULT_VERIFIED_CACHE_CAPACITY),
            ttl: p.duration(
                "verified_cache.ttl",
                self.verified_cache.ttl.as_ref(),
                DEFAULT_VERIFIED_CACHE_TTL,
            ),
        };
        if verified_cache.ttl.is_zero() {
            p.add("verified_cache.ttl", "must be greater than 0");
        }

        let limits = Limits {
            check_deadline: p.duration(
                "limits.check_deadline",
                self.limits.check_deadline.as_ref(),
                DEFAULT_CHECK_DEADLINE,
            ),
            max_concurrent_checks: p.positive(
                "limits.max_concurrent_checks",
                self.limits.max_concurrent_checks,
                DEFAULT_MAX_CONCURRENT_CHECKS,
            ),
            max_header_bytes: p.positive(
                "limits.max_header_bytes",
                self.limits.max_header_bytes,
                DEFAULT_MAX_HEADER_BYTES,
            ),
            header_read_timeout: p.duration(
                "limits.header_read_timeout",
                self.limits.header_read_timeout.as_ref(),
                DEFAULT_HEADER_READ_TIMEOUT,
            ),
            max_connections: p.positive(
                "limits.max_connections",
                self.limits.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            ),
        };
        if limits.header_read_timeout.is_zero() {
            p.add("limits.header_read_timeout", "must be greater than 0");
        }
        if limits.check_deadline.is_zero() {
            p.add("limits.check_deadline", "must be greater than 0");
        }
        if limits.max_header_bytes < 8192 {
            p.add("limits.max_header_bytes", "must be at least 8192");
        }

        let shutdown = ShutdownConfig {
            grace: p.duration(
                "shutdown.grace",
                self.shutdown.grace.as_ref(),
                DEFAULT_SHUTDOWN_GRACE,
            ),
            drain_timeout: p.duration(
                "shutdown.drain_timeout",
                self.shutdown.drain_timeout.as_ref(),
                DEFAULT_DRAIN_TIMEOUT,
            ),
        };

        let envoy_prefix = self
            .http
            .envoy_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_ENVOY_PREFIX.to_owned());
        let envoy_prefix = envoy_prefix.trim_end_matches('/').to_owned();
        if !envoy_prefix.starts_with('/')
            || envoy_prefix == "/auth"
            || envoy_prefix.starts_with("/auth/")
        {
            p.add(
                "http.envoy_prefix",
                "must start with / and not overlap /auth",
            );
        } else if envoy_prefix.contains("//")
            || !envoy_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        {
            // Route syntax (`{x}`, `{*x}`) or odd bytes would change what the router matches.
            p.add(
                "http.envoy_prefix",
                "may hold only letters, digits, - . _ ~ and single / between segments",
            );
        }
        let realm = self
            .http
            .realm
            .clone()
            .unwrap_or_else(|| DEFAULT_REALM.to_owned());
        if realm.is_empty()
            || !realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            p.add(
                "http.realm",
                "must be printable ASCII without quotes or backslashes",
            );
        }

        let trusted_proxies = self.trusted_proxies.as_ref().map(|list| {
            if list.is_empty() {
                p.add(
                    "trusted_proxies",
                    "must list at least one network; leave it out to trust every peer",
                );
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    parse_network(text.trim())
                        .map_err(|()| {
                            p.add(
                                format!("trusted_proxies[{i}]"),
                                format!("invalid network {text:?}; use an address or CIDR such as 10.0.0.0/8 or ::1"),
                            );
                        })
                        .ok()
                })
                .collect::<Vec<_>>()
        });

        if !p.0.is_empty() {
            return Err(ConfigError::Invalid(p.0));
        }
        Ok(Config {
            listen,
            log,
            issuers,
            verify,
            token,
            claim_headers,
            require,
            trusted_proxies,
            routes,
            keys,
            verified_cache,
            limits,
            shutdown,
            http: HttpConfig {
                envoy_prefix,
                realm,
            },
        })
    }
}

/// A network in CIDR form, or one address (a /32 or /128).
fn parse_network(text: &str) -> Result<ipnet::IpNet, ()> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| ())
}

/// Headers a claim may never be written to: they would change how the request is routed or
/// authenticated rather than describe the caller.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "cookie",
    "te",
    "upgrade",
    "www-authenticate",
];

fn check_requirement_issuers(
    p: &mut Problems,
    field: &str,
    req: &Requirement,
    issuers: &[IssuerConfig],
) {
    for (i, name) in req.issuers.iter().flatten().enumerate() {
        if !issuers.iter().any(|c| &c.issuer == name) {
            p.add(
                format!("{field}.issuers[{i}]"),
                format!("{name:?} is not a configured issuer"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
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
        let lines =
            problems("issuers: [{issuer: https://a.example}]\naudiences: [api]\nleway: 5s\n");
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
            validate("issuers: [{issuer: \"http://idp\", allow_http: true}]\naudiences: [a]")
                .is_ok()
        );
    }

    #[test]
    fn unknown_and_symmetric_algorithms_are_config_errors() {
        let joined = problems("issuers: [{issuer: https://a.example}]\naudiences: [a]\nalgorithms: [RS256, none, HS256]").join("\n");
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
    fn claim_headers_cannot_target_authorization() {
        let joined = problems("issuers: [{issuer: https://a.example}]\naudiences: [a]\nclaim_headers: [{claim: sub, header: Authorization}]").join("\n");
        assert!(joined.contains("claim_headers[0].header"), "{joined}");
    }

    #[test]
    fn the_example_config_in_deploy_parses_and_validates() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.yaml");
        let raw = read_file(&path).expect("example config parses");
        let cfg = raw.validate().expect("example config validates");
        assert!(!cfg.issuers.is_empty());
    }
}
