//! Remote keys of one issuer: OIDC discovery (or a configured JWKS URL), fetched with bounded
//! reqwest calls, cached with a TTL from `Cache-Control`, refreshed in the background, refetched
//! once (single flight) for an unknown kid and then held in a cooldown, and kept up to
//! `max_stale` while the IdP fails. Fetches run in their own task so that a check that gives up
//! at its deadline never cancels them.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use super::jwk::{JwksError, parse_jwks};
use super::{BoxFuture, KeyHealth, KeyLookup, KeySet, KeySource};
use crate::config::{IssuerConfig, KeyCacheConfig, KeySourceConfig, http_allowed};
use crate::shutdown::until_true;
use crate::telemetry;
use crate::verify::Alg;

/// Why a key fetch failed. The last good set is kept whatever the cause.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Connect, TLS, timeout or protocol failure.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A status other than 2xx (redirects are not followed).
    #[error("{url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body exceeded the cap.
    #[error("{url}: body over {cap} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        cap: usize,
    },
    /// The discovery document is unusable.
    #[error("discovery at {url}: {problem}")]
    Discovery {
        /// The URL.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The JWKS is unusable.
    #[error("JWKS at {url}: {source}")]
    Jwks {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: JwksError,
    },
    /// The JWKS parsed but holds no usable key.
    #[error("JWKS at {url} has no usable signing key")]
    NoUsableKeys {
        /// The URL.
        url: String,
    },
}

impl KeyError {
    /// A closed label for the fetch metric.
    fn label(&self) -> &'static str {
        match self {
            KeyError::Transport { source, .. } if source.is_timeout() => "timeout",
            KeyError::Transport { .. } => "transport_error",
            KeyError::Status { .. } => "http_error",
            KeyError::TooLarge { .. } => "too_large",
            KeyError::Discovery { .. } => "bad_discovery",
            KeyError::Jwks { .. } | KeyError::NoUsableKeys { .. } => "bad_jwks",
        }
    }
}

#[derive(Debug)]
enum Endpoint {
    Discovery,
    Jwks(String),
}

#[derive(Debug, Default)]
struct State {
    set: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    ttl: Duration,
    jwks_uri: Option<String>,
    in_flight: Option<watch::Receiver<bool>>,
    last_unknown_kid_fetch: Option<Instant>,
    failures: u32,
    /// Bumped whenever a fetch brings a JWKS document that differs from the current one.
    generation: u64,
    /// SHA-256 of the current JWKS document.
    fingerprint: Option<[u8; 32]>,
}

/// What one successful fetch brings.
struct Fetched {
    set: KeySet,
    ttl: Duration,
    fingerprint: [u8; 32],
}

#[derive(Debug)]
struct Inner {
    issuer: IssuerConfig,
    endpoint: Endpoint,
    config: KeyCacheConfig,
    client: reqwest::Client,
    state: Mutex<State>,
}

/// The key source of one issuer whose keys are fetched over HTTP.
#[derive(Debug, Clone)]
pub struct RemoteKeys {
    inner: Arc<Inner>,
}

/// Builds the HTTP client used for discovery and JWKS: no redirects, no proxies, bounded times.
pub fn http_client(config: &KeyCacheConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .timeout(config.fetch_timeout)
        .no_proxy()
        .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl RemoteKeys {
    /// Creates the source and starts its background refresher, which stops when `shutdown`
    /// turns true. The first fetch starts at once.
    pub fn start(
        issuer: IssuerConfig,
        config: KeyCacheConfig,
        client: reqwest::Client,
        mut shutdown: watch::Receiver<bool>,
    ) -> Self {
        let endpoint = match &issuer.source {
            KeySourceConfig::JwksUri(uri) => Endpoint::Jwks(uri.clone()),
            _ => Endpoint::Discovery,
        };
        let inner = Arc::new(Inner {
            issuer,
            endpoint,
            config,
            client,
            state: Mutex::new(State::default()),
        });
        // The first fetch is registered before any check can look, so that checks arriving at a
        // cold start wait for it instead of answering "unavailable" at once.
        let mut done = inner.begin_fetch();
        let refresher = Arc::clone(&inner);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = until_true(&mut done) => {}
                    () = until_true(&mut shutdown) => return,
                }
                let delay = refresher.next_refresh_delay();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = until_true(&mut shutdown) => return,
                }
                done = refresher.begin_fetch();
            }
        });
        Self { inner }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent across a panic elsewhere: every write is a single assignment.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn usable_set(&self, st: &State, now: Instant) -> Option<Arc<KeySet>> {
        let fetched_at = st.fetched_at?;
        if now.duration_since(fetched_at) > self.config.max_stale {
            return None;
        }
        st.set.clone()
    }

    /// Starts a fetch unless one is running; either way returns a receiver that turns true
    /// when that fetch has finished.
    fn begin_fetch(self: &Arc<Self>) -> watch::Receiver<bool> {
        let mut st = lock(&self.state);
        if let Some(rx) = &st.in_flight {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        st.in_flight = Some(rx.clone());
        drop(st);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this.fetch().await;
            this.apply(result);
            let _ = tx.send(true);
        });
        rx
    }

    fn apply(&self, result: Result<Fetched, KeyError>) {
        let issuer = self.issuer.issuer.as_str();
        let mut st = lock(&self.state);
        st.in_flight = None;
        match result {
            Ok(Fetched {
                set,
                ttl,
                fingerprint,
            }) => {
                telemetry::record_fetch(issuer, "ok", Some(set.len()));
                if st.fingerprint != Some(fingerprint) {
                    st.generation = st.generation.wrapping_add(1);
                    st.fingerprint = Some(fingerprint);
                }
                tracing::debug!(
                    issuer,
                    keys = set.len(),
                    ttl_secs = ttl.as_secs(),
                    "key set refreshed"
                );
                st.set = Some(Arc::new(set));
                st.fetched_at = Some(Instant::now());
                st.ttl = ttl;
                st.failures = 0;
            }
            Err(error) => {
                telemetry::record_fetch(issuer, error.label(), None);
                st.failures = st.failures.saturating_add(1);
                if matches!(error, KeyError::Status { status: 404, .. }) {
                    // The IdP may have moved its JWKS: ask discovery again next time.
                    st.jwks_uri = None;
                }
                let error = &error as &dyn std::error::Error;
                tracing::warn!(
                    issuer,
                    error,
                    failures = st.failures,
                    has_keys = st.set.is_some(),
                    "key fetch failed; keeping the last good key set"
                );
            }
        }
    }

    fn next_refresh_delay(&self) -> Duration {
        let st = lock(&self.state);
        if st.failures > 0 {
            let exp = st.failures.saturating_sub(1).min(16);
            let base = self
                .config
                .retry_initial
                .saturating_mul(1u32 << exp)
                .min(self.config.retry_max);
            // Full jitter over the upper half keeps replicas from fetching in step.
            return base.mul_f64(0.5 + fastrand::f64() * 0.5);
        }
        let elapsed = st.fetched_at.map_or(Duration::ZERO, |t| t.elapsed());
        // Refresh at 70-80 % of the TTL, before it expires; and before the set turns unusable
        // at max_stale, which may be configured shorter than the TTL.
        let lifetime = st.ttl.min(self.config.max_stale);
        let at = lifetime.mul_f64(0.7 + fastrand::f64() * 0.1);
        at.saturating_sub(elapsed).max(Duration::from_millis(100))
    }

    async fn fetch(&self) -> Result<Fetched, KeyError> {
        let jwks_uri = match &self.endpoint {
            Endpoint::Jwks(uri) => uri.clone(),
            Endpoint::Discovery => {
                let known = lock(&self.state).jwks_uri.clone();
                match known {
                    Some(uri) => uri,
                    None => {
                        let uri = self.discover().await?;
                        lock(&self.state).jwks_uri = Some(uri.clone());
                        uri
                    }
                }
            }
        };
        let (body, headers) = self.get(&jwks_uri).await?;
        let parsed = parse_jwks(&body, self.config.max_keys).map_err(|source| KeyError::Jwks {
            url: jwks_uri.clone(),
            source,
        })?;
        for (kid, reason) in &parsed.skipped {
            tracing::info!(issuer = %self.issuer.issuer, kid = kid.as_deref().unwrap_or("-"), reason, "JWK skipped");
        }
        if parsed.set.is_empty() {
            return Err(KeyError::NoUsableKeys { url: jwks_uri });
        }
        Ok(Fetched {
            set: parsed.set,
            ttl: self.ttl_from(&headers),
            fingerprint: Sha256::digest(&body).into(),
        })
    }

    fn ttl_from(&self, headers: &HeaderMap) -> Duration {
        let mut max_age = None;
        let mut no_cache = false;
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for directive in text.split(',').map(str::trim) {
                let lower = directive.to_ascii_lowercase();
                if let Some(secs) = lower.strip_prefix("max-age=") {
                    max_age = secs
                        .trim_matches('"')
                        .parse::<u64>()
                        .ok()
                        .map(Duration::from_secs);
                } else if lower == "no-cache" || lower == "no-store" {
                    no_cache = true;
                }
            }
        }
        let ttl = if no_cache {
            Duration::ZERO
        } else {
            max_age.unwrap_or(self.config.default_ttl)
        };
        ttl.clamp(self.config.min_ttl, self.config.max_ttl)
    }

    async fn discover(&self) -> Result<String, KeyError> {
        let (url, doc) =
            discovery_document(&self.client, &self.issuer, self.config.max_body_bytes).await?;
        discovered_url(&url, &doc, "jwks_uri", &self.issuer)
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, HeaderMap), KeyError> {
        get_json(&self.client, url, self.config.max_body_bytes).await
    }

    async fn lookup(self: &Arc<Self>, kid: Option<&str>, alg: Alg) -> KeyLookup {
        enum Next {
            Done(KeyLookup),
            Refetch,
            Wait(Option<watch::Receiver<bool>>),
        }
        let next = {
            let st = lock(&self.state);
            match self.usable_set(&st, Instant::now()) {
                Some(set) => match set.find(kid, alg) {
                    KeyLookup::UnknownKid if kid.is_some() => Next::Refetch,
                    found => Next::Done(found),
                },
                // Cold, or past max_stale: only wait for a fetch that is already running. The
                // refresher retries with backoff; checks never add fetches of their own here.
                None => Next::Wait(st.in_flight.clone()),
            }
        };
        match next {
            Next::Done(found) => {
                telemetry::record_key_lookup("hit");
                found
            }
            Next::Refetch => self.refetch_for_unknown_kid(kid, alg).await,
            Next::Wait(None) => KeyLookup::Unavailable,
            Next::Wait(Some(mut rx)) => {
                until_true(&mut rx).await;
                self.find_now(kid, alg)
            }
        }
    }

    fn find_now(&self, kid: Option<&str>, alg: Alg) -> KeyLookup {
        let st = lock(&self.state);
        match self.usable_set(&st, Instant::now()) {
            Some(set) => set.find(kid, alg),
            None => KeyLookup::Unavailable,
        }
    }

    async fn refetch_for_unknown_kid(self: &Arc<Self>, kid: Option<&str>, alg: Alg) -> KeyLookup {
        // `joined` is true when a fetch was already running (a scheduled refresh): it may have
        // left before the IdP rotated, so this check may start its own fetch after it.
        let (mut rx, joined) = {
            let mut st = lock(&self.state);
            let now = Instant::now();
            let cooling = st
                .last_unknown_kid_fetch
                .is_some_and(|t| now.duration_since(t) < self.config.unknown_kid_cooldown);
            match (cooling, st.in_flight.clone()) {
                (true, Some(rx)) => (rx, false),
                (true, None) => {
                    telemetry::record_key_lookup("miss_cooldown");
                    return Self::unknown_or_unavailable(&st);
                }
                (false, running) => {
                    st.last_unknown_kid_fetch = Some(now);
                    drop(st);
                    telemetry::record_key_lookup("miss_refetch");
                    match running {
                        Some(rx) => (rx, true),
                        None => (self.begin_fetch(), false),
                    }
                }
            }
        };
        until_true(&mut rx).await;
        let mut found = self.find_now(kid, alg);
        if joined && matches!(found, KeyLookup::UnknownKid) {
            let mut rx = self.begin_fetch();
            until_true(&mut rx).await;
            found = self.find_now(kid, alg);
        }
        match found {
            KeyLookup::UnknownKid => Self::unknown_or_unavailable(&lock(&self.state)),
            found => found,
        }
    }

    /// A kid the current set lacks is unknown while the IdP answers; while its last fetch failed
    /// the kid may well be real (a rotation the failure hides), so the check is unavailable
    /// (503 + Retry-After, retried by the client) rather than an invalid token.
    fn unknown_or_unavailable(st: &State) -> KeyLookup {
        if st.failures > 0 {
            KeyLookup::Unavailable
        } else {
            KeyLookup::UnknownKid
        }
    }
}

impl KeySource for RemoteKeys {
    fn lookup<'a>(&'a self, kid: Option<&'a str>, alg: Alg) -> BoxFuture<'a, KeyLookup> {
        Box::pin(self.inner.lookup(kid, alg))
    }

    fn generation(&self) -> Option<u64> {
        let st = lock(&self.inner.state);
        self.inner
            .usable_set(&st, Instant::now())
            .map(|_| st.generation)
    }

    fn health(&self) -> KeyHealth {
        let st = lock(&self.inner.state);
        let now = Instant::now();
        let set = self.inner.usable_set(&st, now);
        KeyHealth {
            usable: set.is_some(),
            keys: st.set.as_ref().map_or(0, |s| s.len()),
            age: st.fetched_at.map(|t| now.duration_since(t)),
        }
    }
}

/// GETs `url` as JSON with a bounded body: the body and the response headers.
async fn get_json(
    client: &reqwest::Client,
    url: &str,
    cap: usize,
) -> Result<(Vec<u8>, HeaderMap), KeyError> {
    let mut response = client
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|source| KeyError::Transport {
            url: url.to_owned(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(KeyError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let headers = response.headers().clone();
    let body = read_bounded(&mut response, cap)
        .await
        .map_err(|error| match error {
            BodyError::Transport(source) => KeyError::Transport {
                url: url.to_owned(),
                source,
            },
            BodyError::TooLarge => KeyError::TooLarge {
                url: url.to_owned(),
                cap,
            },
        })?;
    Ok((body, headers))
}

/// Why a response body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection failed or timed out.
    Transport(reqwest::Error),
    /// Longer than the cap.
    TooLarge,
}

/// Reads a response body of at most `cap` bytes.
pub(crate) async fn read_bounded(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetches `{issuer}/.well-known/openid-configuration`: its URL and the document, whose
/// `issuer` must equal the configured one exactly (OpenID Connect Discovery §4.3).
pub(crate) async fn discovery_document(
    client: &reqwest::Client,
    issuer: &IssuerConfig,
    cap: usize,
) -> Result<(String, serde_json::Map<String, Value>), KeyError> {
    let base = issuer.issuer.trim_end_matches('/');
    let url = format!("{base}/.well-known/openid-configuration");
    let (body, _) = get_json(client, &url, cap).await?;
    let problem = |problem: &str| KeyError::Discovery {
        url: url.clone(),
        problem: problem.to_owned(),
    };
    let doc: Value = serde_json::from_slice(&body).map_err(|_| problem("not JSON"))?;
    let Value::Object(doc) = doc else {
        return Err(problem("not a JSON object"));
    };
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
        return Err(problem(
            "its issuer does not equal the configured issuer exactly",
        ));
    }
    Ok((url, doc))
}

/// The endpoint URL in member `field` of the discovery document fetched from `url`: https, or
/// http where the issuer allows it.
pub(crate) fn discovered_url(
    url: &str,
    doc: &serde_json::Map<String, Value>,
    field: &str,
    issuer: &IssuerConfig,
) -> Result<String, KeyError> {
    let problem = |problem: String| KeyError::Discovery {
        url: url.to_owned(),
        problem,
    };
    let endpoint = doc
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| problem(format!("no {field}")))?;
    let scheme_ok = endpoint.starts_with("https://")
        || (endpoint.starts_with("http://") && http_allowed(issuer, endpoint));
    if !scheme_ok || reqwest::Url::parse(endpoint).is_err() {
        // The value comes from the IdP's own document, never from a token: safe to log,
        // truncated so a hostile document cannot flood the log.
        let shown: String = endpoint.chars().take(200).collect();
        return Err(problem(format!(
            "{field} {shown:?} is not an https URL (http only on loopback or with allow_http)"
        )));
    }
    Ok(endpoint.to_owned())
}
