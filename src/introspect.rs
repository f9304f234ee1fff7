//! Token introspection (RFC 7662): how an issuer's opaque tokens are verified, and, with
//! `introspect_jwts`, how its JWTs are checked for revocation.
//!
//! What keeps this safe in front of every request:
//! - Results are remembered under an HMAC of the token with a key made at start (the token
//!   itself is never kept): an active one until `min(exp, cache_ttl)`, an inactive one for
//!   `negative_ttl`. Outages are not remembered.
//! - Concurrent identical requests share one call; the call runs in its own task, so a check
//!   that gives up at its deadline does not cancel it for the next one.
//! - Calls per second are bounded (`max_calls_per_second`); the excess is `unavailable`
//!   without asking the IdP.
//! - An outage, a slow or failing endpoint, a refusal of authgate's own client or an answer
//!   that is not RFC 7662 JSON is `unavailable`, never an allow. Tokens never reach a log or a
//!   metric.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::{ClientConfig, IntrospectionConfig, IssuerConfig, KeyCacheConfig};
use crate::exchange::{Endpoint, keyed_name, random_hmac_key};
use crate::telemetry;

/// The largest answer kept (an RFC 7662 answer is a few hundred bytes): the cache holds
/// `cache_capacity` answers, so this bounds its memory. A larger one is `unavailable`.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// What the endpoint said about a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspected {
    /// `active: true`, with the response's members (the token's claims).
    Active(Arc<Map<String, Value>>),
    /// `active: false`: revoked, expired, unknown, or not for this issuer.
    Inactive,
}

/// Why there is no answer: the endpoint is down, slow, failing, or the call budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("introspection unavailable")]
pub struct Unavailable;

/// What one call brought.
#[derive(Debug, Clone)]
enum Outcome {
    Active {
        claims: Arc<Map<String, Value>>,
        until: Instant,
    },
    Inactive {
        until: Instant,
    },
    Unavailable,
}

/// A remembered (or running) call.
type Slot = Shared<BoxFuture<'static, Outcome>>;

/// Calls in the current second.
#[derive(Debug)]
struct Budget {
    started: Instant,
    count: usize,
}

#[derive(Debug)]
struct Inner {
    issuer: IssuerConfig,
    client: ClientConfig,
    config: IntrospectionConfig,
    fetch: KeyCacheConfig,
    endpoint: Endpoint,
    key: hmac::Key,
    results: quick_cache::sync::Cache<[u8; 32], Slot>,
    budget: Mutex<Budget>,
}

/// The introspection of one issuer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Introspector {
    inner: Arc<Inner>,
}

impl Introspector {
    /// The introspection of `issuer`, with the fetch timeouts and body cap of `fetch`; `None`
    /// when it is off or the issuer has no client. Nothing is fetched until the first call.
    pub fn new(issuer: &IssuerConfig, fetch: &KeyCacheConfig) -> Option<Self> {
        let config = issuer.introspection.clone()?;
        let client = issuer.client.clone()?;
        Some(Self {
            inner: Arc::new(Inner {
                endpoint: Endpoint::new(
                    "introspection_endpoint",
                    "introspection",
                    config.endpoint.clone(),
                ),
                results: quick_cache::sync::Cache::new(config.cache_capacity),
                budget: Mutex::new(Budget {
                    started: Instant::now(),
                    count: 0,
                }),
                key: random_hmac_key(),
                issuer: issuer.clone(),
                client,
                config,
                fetch: fetch.clone(),
            }),
        })
    }

    /// What the endpoint says about `token`: remembered, shared with a running call, or asked
    /// now. Bounded by the caller's deadline (the call itself goes on).
    pub async fn introspect(&self, token: &str) -> Result<Introspected, Unavailable> {
        let inner = &self.inner;
        let name = keyed_name(&inner.key, &[token.as_bytes()]);
        // Twice at most: a stale entry is dropped and the second look starts a new call.
        for _ in 0..2 {
            match inner.results.get_value_or_guard_async(&name).await {
                Ok(slot) => match slot.peek() {
                    Some(outcome) if !is_fresh(outcome) => {
                        inner.results.remove(&name);
                    }
                    _ => {
                        telemetry::record_introspection_cache(true);
                        return result(slot.await);
                    }
                },
                Err(guard) => {
                    telemetry::record_introspection_cache(false);
                    if !inner.admit() {
                        telemetry::record_introspection("rate_limited");
                        // Not remembered: the next second may have room.
                        drop(guard);
                        return Err(Unavailable);
                    }
                    let task = tokio::spawn(Arc::clone(inner).call(token.to_owned()));
                    let slot: Slot = async move { task.await.unwrap_or(Outcome::Unavailable) }
                        .boxed()
                        .shared();
                    let _ = guard.insert(slot.clone());
                    return result(slot.await);
                }
            }
        }
        Err(Unavailable)
    }
}

fn result(outcome: Outcome) -> Result<Introspected, Unavailable> {
    match outcome {
        Outcome::Active { claims, .. } => Ok(Introspected::Active(claims)),
        Outcome::Inactive { .. } => Ok(Introspected::Inactive),
        Outcome::Unavailable => Err(Unavailable),
    }
}

fn is_fresh(outcome: &Outcome) -> bool {
    let now = Instant::now();
    match outcome {
        Outcome::Active { until, .. } | Outcome::Inactive { until } => now < *until,
        Outcome::Unavailable => false,
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Inner {
    /// Counts one call: false when this second's are spent.
    fn admit(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(budget.started) >= Duration::from_secs(1) {
            *budget = Budget {
                started: now,
                count: 0,
            };
        }
        if budget.count >= self.config.max_calls_per_second {
            return false;
        }
        budget.count += 1;
        true
    }

    /// One call, counted by result.
    async fn call(self: Arc<Self>, token: String) -> Outcome {
        let outcome = self.request(&token).await;
        telemetry::record_introspection(match &outcome {
            Outcome::Active { .. } => "active",
            Outcome::Inactive { .. } => "inactive",
            Outcome::Unavailable => "unavailable",
        });
        outcome
    }

    async fn request(&self, token: &str) -> Outcome {
        let issuer = self.issuer.issuer.as_str();
        let form = [("token", token), ("token_type_hint", "access_token")];
        let Ok((status, body)) = self
            .endpoint
            .post_form(&self.issuer, &self.client, &self.fetch, &form)
            .await
        else {
            return Outcome::Unavailable;
        };
        if !status.is_success() {
            // 401/403: the IdP refused authgate's client, an operator's problem; anything
            // else an outage. Neither says anything about the token.
            if matches!(status.as_u16(), 401 | 403) {
                tracing::error!(
                    issuer,
                    status = status.as_u16(),
                    "introspection: the endpoint refused authgate's client"
                );
            } else {
                tracing::warn!(
                    issuer,
                    status = status.as_u16(),
                    "introspection: endpoint failed"
                );
            }
            return Outcome::Unavailable;
        }
        if body.len() > MAX_ANSWER_BYTES {
            tracing::warn!(issuer, "introspection: the answer is over 16 KiB");
            return Outcome::Unavailable;
        }
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&body) else {
            tracing::warn!(issuer, "introspection: the response is not a JSON object");
            return Outcome::Unavailable;
        };
        match claims.get("active") {
            Some(Value::Bool(true)) => {
                let mut keep = self.config.cache_ttl;
                // Never remembered past the token's own expiry.
                if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
                    let left = u64::try_from(exp.saturating_sub(now_unix())).unwrap_or(0);
                    keep = keep.min(Duration::from_secs(left));
                }
                Outcome::Active {
                    claims: Arc::new(claims),
                    until: Instant::now() + keep,
                }
            }
            Some(Value::Bool(false)) => Outcome::Inactive {
                until: Instant::now() + self.config.negative_ttl,
            },
            _ => {
                tracing::warn!(issuer, "introspection: the response has no boolean active");
                Outcome::Unavailable
            }
        }
    }
}
