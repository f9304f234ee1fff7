//! The password grant (RFC 6749 §4.3), as Kong's OpenID Connect plugin does it for
//! `auth_methods: [password]`: a request's HTTP Basic credentials are exchanged at the issuer's
//! token endpoint for an access token, which is then verified like any bearer token.
//!
//! What keeps this safe to run in front of every request:
//! - Results are remembered under an HMAC of (user, password) with a key made at start (the
//!   password itself is never kept once its exchange is done): a token until `refresh_before`
//!   ahead of its expiry, a refusal (`invalid_grant`) for `negative_ttl`, so a wrong password
//!   repeated costs the IdP nothing. Outages are not remembered.
//! - Concurrent identical requests share one exchange; the exchange runs in its own task, so a
//!   check that gives up at its deadline does not cancel it for the next one.
//! - Exchanges per user name are bounded per minute (`max_exchanges_per_minute`): a stream of
//!   different wrong passwords cannot hammer the IdP.
//! - An outage, a slow endpoint or a refusal of authgate's own client is `unavailable`, never
//!   a "wrong password". Passwords, tokens and secrets never reach a log or a metric.

pub mod client_auth;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use aws_lc_rs::hmac;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{ClientConfig, IssuerConfig, KeyCacheConfig, PasswordGrantConfig};
use crate::keys::remote::{
    BodyError, discovered_url, discovery_document, http_client, read_bounded,
};
use crate::telemetry;

/// Retry-After of an `unavailable` exchange.
const RETRY_AFTER_SECS: u64 = 5;

/// Lifetime of an exchanged token whose response gave no `expires_in` (it is verified anyway,
/// and its `exp` checked on every use).
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60);

/// Why no token came out of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeError {
    /// The IdP refused the user's credentials (`invalid_grant`, `invalid_request`).
    Refused,
    /// The token endpoint is unreachable, slow, failing, or refused authgate's client.
    Unavailable,
    /// The user name has used its exchanges for this minute.
    RateLimited,
}

impl ExchangeError {
    /// The `result` label of the exchange metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeError::Refused => "refused",
            ExchangeError::Unavailable => "unavailable",
            ExchangeError::RateLimited => "rate_limited",
        }
    }

    /// Seconds for `Retry-After`, for the kinds a retry may cure.
    pub fn retry_after(self) -> Option<u64> {
        match self {
            ExchangeError::Refused => None,
            ExchangeError::Unavailable => Some(RETRY_AFTER_SECS),
            ExchangeError::RateLimited => Some(60),
        }
    }
}

/// What one exchange brought.
#[derive(Debug, Clone)]
enum Outcome {
    /// A token, good to hand out until `fresh_until`.
    Token {
        access_token: Arc<str>,
        fresh_until: Instant,
    },
    /// A refusal, remembered until `until`.
    Refused { until: Instant },
    /// An outage: not remembered.
    Unavailable,
}

/// A remembered (or running) exchange.
type Slot = Shared<BoxFuture<'static, Outcome>>;

/// Exchanges per user name in the current minute.
#[derive(Debug)]
struct Window {
    started: Instant,
    count: usize,
}

#[derive(Debug)]
struct Inner {
    issuer: IssuerConfig,
    client: Option<ClientConfig>,
    config: PasswordGrantConfig,
    fetch: KeyCacheConfig,
    /// The token endpoint.
    endpoint: Endpoint,
    /// The key of the HMAC that names results and users, made at start.
    key: hmac::Key,
    results: quick_cache::sync::Cache<[u8; 32], Slot>,
    users: quick_cache::sync::Cache<[u8; 32], Arc<Mutex<Window>>>,
}

/// The password grant of one issuer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PasswordGrant {
    inner: Arc<Inner>,
}

impl PasswordGrant {
    /// The grant of `issuer` (which names the client), within `config`'s bounds and with the
    /// fetch timeouts and body cap of `fetch`. Nothing is fetched until the first exchange.
    pub fn new(issuer: IssuerConfig, config: PasswordGrantConfig, fetch: KeyCacheConfig) -> Self {
        let capacity = config.cache_capacity;
        Self {
            inner: Arc::new(Inner {
                client: issuer.client.clone(),
                endpoint: Endpoint::new(
                    "token_endpoint",
                    "password grant",
                    issuer.token_endpoint.clone(),
                ),
                issuer,
                config,
                fetch,
                key: random_hmac_key(),
                results: quick_cache::sync::Cache::new(capacity),
                users: quick_cache::sync::Cache::new(capacity),
            }),
        }
    }

    /// The access token for `user` and `password`: remembered, shared with a running exchange,
    /// or exchanged now. Bounded by the caller's deadline (the exchange itself goes on).
    pub async fn token(&self, user: &str, password: &str) -> Result<Arc<str>, ExchangeError> {
        let inner = &self.inner;
        let name = inner.name(&[b"credentials", user.as_bytes(), password.as_bytes()]);
        // Twice at most: a stale entry is dropped and the second look starts a new exchange.
        for _ in 0..2 {
            match inner.results.get_value_or_guard_async(&name).await {
                Ok(slot) => match slot.peek() {
                    Some(outcome) if !inner.is_fresh(outcome) => {
                        inner.results.remove(&name);
                    }
                    _ => {
                        telemetry::record_password_grant_cache(true);
                        return outcome_result(slot.await);
                    }
                },
                Err(guard) => {
                    telemetry::record_password_grant_cache(false);
                    if !inner.admit(user) {
                        telemetry::record_password_grant(ExchangeError::RateLimited.as_str());
                        return Err(ExchangeError::RateLimited);
                    }
                    let task = tokio::spawn(
                        Arc::clone(inner).exchange(user.to_owned(), password.to_owned()),
                    );
                    let slot: Slot = async move { task.await.unwrap_or(Outcome::Unavailable) }
                        .boxed()
                        .shared();
                    let _ = guard.insert(slot.clone());
                    return outcome_result(slot.await);
                }
            }
        }
        Err(ExchangeError::Unavailable)
    }

    /// Forgets the result for `user` and `password` (its token failed verification: the next
    /// request exchanges anew, within the per-user bound).
    pub fn forget(&self, user: &str, password: &str) {
        let name = self
            .inner
            .name(&[b"credentials", user.as_bytes(), password.as_bytes()]);
        self.inner.results.remove(&name);
    }
}

fn outcome_result(outcome: Outcome) -> Result<Arc<str>, ExchangeError> {
    match outcome {
        Outcome::Token { access_token, .. } => Ok(access_token),
        Outcome::Refused { .. } => Err(ExchangeError::Refused),
        Outcome::Unavailable => Err(ExchangeError::Unavailable),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A key for naming secrets in memory, made at start. Without randomness nothing here can be
/// trusted: an all-zero key still keeps secrets out of memory, and names stay per process.
pub(crate) fn random_hmac_key() -> hmac::Key {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    hmac::Key::generate(hmac::HMAC_SHA256, &rng)
        .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &[0; 32]))
}

/// The HMAC of `parts` under `key`, each part preceded by its length so that no two inputs
/// collide.
pub(crate) fn keyed_name(key: &hmac::Key, parts: &[&[u8]]) -> [u8; 32] {
    let mut context = hmac::Context::with_key(key);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut name = [0u8; 32];
    name.copy_from_slice(context.sign().as_ref());
    name
}

/// One endpoint of an issuer that authgate calls as its client (token, introspection): the
/// HTTP client is built at first use, the URL is configured or found by discovery once.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// The discovery document's field that names it.
    field: &'static str,
    /// What calls it, for log lines.
    what: &'static str,
    http: OnceLock<Option<reqwest::Client>>,
    /// The configured URL, else the one discovery gave.
    url: Mutex<Option<String>>,
}

impl Endpoint {
    pub(crate) fn new(field: &'static str, what: &'static str, configured: Option<String>) -> Self {
        Self {
            field,
            what,
            http: OnceLock::new(),
            url: Mutex::new(configured),
        }
    }

    /// The HTTP client, with `fetch`'s timeouts.
    pub(crate) fn http(&self, fetch: &KeyCacheConfig) -> Option<&reqwest::Client> {
        let what = self.what;
        self.http
            .get_or_init(|| match http_client(fetch) {
                Ok(client) => Some(client),
                Err(error) => {
                    let error = &error as &dyn std::error::Error;
                    tracing::error!(error, "{what}: cannot build the HTTP client");
                    None
                }
            })
            .as_ref()
    }

    /// POSTs `form` and the client's authentication to the endpoint, as RFC 6749 §2.3 and RFC
    /// 7662 §2.1 ask; the status and the body (at most `fetch.max_body_bytes`). `Err` (logged,
    /// never with the form's values) when nothing usable came back.
    pub(crate) async fn post_form(
        &self,
        issuer: &IssuerConfig,
        client: &ClientConfig,
        fetch: &KeyCacheConfig,
        form: &[(&str, &str)],
    ) -> Result<(http::StatusCode, Vec<u8>), ()> {
        let (what, iss) = (self.what, issuer.issuer.as_str());
        let http = self.http(fetch).ok_or(())?;
        let endpoint = self.url(http, issuer, fetch).await.ok_or(())?;
        let credentials = client_auth::credentials(client, &endpoint).map_err(|error| {
            let error = &error as &dyn std::error::Error;
            tracing::error!(
                issuer = iss,
                error,
                "{what}: cannot sign the client assertion"
            );
        })?;
        let body = {
            let mut serializer = form_urlencoded::Serializer::new(String::new());
            for (name, value) in form {
                serializer.append_pair(name, value);
            }
            for (name, value) in &credentials.form {
                serializer.append_pair(name, value);
            }
            serializer.finish()
        };
        let mut request = http
            .post(&endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body);
        if let Some(authorization) = credentials.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let mut response = request.send().await.map_err(|error| {
            let timeout = error.is_timeout();
            tracing::warn!(issuer = iss, timeout, "{what}: endpoint unreachable");
        })?;
        let status = response.status();
        match read_bounded(&mut response, fetch.max_body_bytes).await {
            Ok(body) => Ok((status, body)),
            Err(BodyError::Transport(_)) => {
                tracing::warn!(issuer = iss, "{what}: the response broke off");
                Err(())
            }
            Err(BodyError::TooLarge) => {
                tracing::warn!(issuer = iss, "{what}: the response is too large");
                Err(())
            }
        }
    }

    /// The URL: configured, or from `issuer`'s discovery document (remembered once found).
    pub(crate) async fn url(
        &self,
        http: &reqwest::Client,
        issuer: &IssuerConfig,
        fetch: &KeyCacheConfig,
    ) -> Option<String> {
        if let Some(url) = lock(&self.url).clone() {
            return Some(url);
        }
        let found = match discovery_document(http, issuer, fetch.max_body_bytes).await {
            Ok((url, doc)) => discovered_url(&url, &doc, self.field, issuer),
            Err(error) => Err(error),
        };
        match found {
            Ok(url) => {
                *lock(&self.url) = Some(url.clone());
                Some(url)
            }
            Err(error) => {
                let error = &error as &dyn std::error::Error;
                let (what, field) = (self.what, self.field);
                tracing::warn!(issuer = %issuer.issuer, error, "{what}: no {field}");
                None
            }
        }
    }
}

impl Inner {
    fn name(&self, parts: &[&[u8]]) -> [u8; 32] {
        keyed_name(&self.key, parts)
    }

    fn is_fresh(&self, outcome: &Outcome) -> bool {
        let now = Instant::now();
        match outcome {
            Outcome::Token { fresh_until, .. } => now < *fresh_until,
            Outcome::Refused { until } => now < *until,
            Outcome::Unavailable => false,
        }
    }

    /// Counts one exchange for `user`: false when the user has used this minute's.
    fn admit(&self, user: &str) -> bool {
        let name = self.name(&[b"user", user.as_bytes()]);
        let window = self
            .users
            .get_or_insert_with(&name, || {
                Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Window {
                    started: Instant::now(),
                    count: 0,
                })))
            })
            .unwrap_or_else(|never| match never {});
        let mut window = lock(&window);
        let now = Instant::now();
        if now.duration_since(window.started) >= Duration::from_secs(60) {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        if window.count >= self.config.max_exchanges_per_minute {
            return false;
        }
        window.count += 1;
        true
    }

    /// One exchange at the token endpoint.
    async fn exchange(self: Arc<Self>, user: String, password: String) -> Outcome {
        let started = Instant::now();
        let outcome = self.request(&user, &password, started).await;
        let result = match &outcome {
            Outcome::Token { .. } => "success",
            Outcome::Refused { .. } => ExchangeError::Refused.as_str(),
            Outcome::Unavailable => ExchangeError::Unavailable.as_str(),
        };
        telemetry::record_password_grant(result);
        outcome
    }

    async fn request(&self, user: &str, password: &str, started: Instant) -> Outcome {
        let issuer = self.issuer.issuer.as_str();
        let Some(client) = self.client.as_ref() else {
            return Outcome::Unavailable;
        };
        let mut form = vec![
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
        ];
        form.extend(
            self.config
                .params
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        let Ok((status, body)) = self
            .endpoint
            .post_form(&self.issuer, client, &self.fetch, &form)
            .await
        else {
            return Outcome::Unavailable;
        };
        let json: Option<serde_json::Map<String, Value>> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return self.token_outcome(json, started);
        }
        // RFC 6749 §5.2: 400 with an error code; 401 for a client that failed to authenticate.
        let error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match (status.as_u16(), error) {
            (400, "invalid_grant" | "invalid_request") => Outcome::Refused {
                until: Instant::now() + self.config.negative_ttl,
            },
            (400 | 401, _) => {
                // The IdP refused authgate itself (its client, grant type or scope): an
                // operator's problem, never the user's wrong password. Only the error code is
                // logged; it is a fixed word chosen by the IdP, truncated all the same.
                let error: String = error.chars().take(64).collect();
                tracing::error!(
                    issuer,
                    status = status.as_u16(),
                    error,
                    "password grant: the token endpoint refused authgate's client"
                );
                Outcome::Unavailable
            }
            _ => {
                tracing::warn!(
                    issuer,
                    status = status.as_u16(),
                    "password grant: token endpoint failed"
                );
                Outcome::Unavailable
            }
        }
    }

    /// The outcome of a successful response: a bearer access token and how long to keep it.
    fn token_outcome(
        &self,
        json: Option<serde_json::Map<String, Value>>,
        started: Instant,
    ) -> Outcome {
        let issuer = self.issuer.issuer.as_str();
        let Some(json) = json else {
            tracing::warn!(
                issuer,
                "password grant: the token response is not a JSON object"
            );
            return Outcome::Unavailable;
        };
        let token_type = json.get("token_type").and_then(Value::as_str).unwrap_or("");
        let access_token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let (Some(access_token), true) = (access_token, token_type.eq_ignore_ascii_case("bearer"))
        else {
            tracing::warn!(
                issuer,
                "password grant: the token response has no bearer access_token"
            );
            return Outcome::Unavailable;
        };
        let expires_in = json
            .get("expires_in")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_EXPIRES_IN, Duration::from_secs);
        // Kept until refresh_before ahead of its expiry, counted from when it was asked for.
        let keep = expires_in.saturating_sub(self.config.refresh_before);
        Outcome::Token {
            access_token: Arc::from(access_token),
            fresh_until: started + keep,
        }
    }
}
