//! A controllable OIDC discovery + JWKS + token endpoint server for integration tests: it rotates
//! keys, injects faults, answers slowly or not at all, and counts per endpoint the fetches it
//! receives, the ones whose client hung up before the answer, and the body bytes it sent. Its
//! token endpoint does the password grant for [`USERS`] and records each request (the client
//! authentication a test asserts on).

// Clippy only treats `#[test]` fns and `#[cfg(test)]` items as tests; this whole file is test
// harness, where a broken precondition should fail the test loudly.
#![allow(
    clippy::expect_used,
    reason = "test harness: failing loudly is the point"
)]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use http::{HeaderValue, StatusCode, header};
use hyper::body::{Frame, SizeHint};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The users the token endpoint's password grant knows: (name, password).
pub(crate) const USERS: [(&str, &str); 2] = [("alice", "wonderland"), ("bob", "builder")];

/// One request the token endpoint received.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenRequest {
    /// Its `Authorization` header.
    pub(crate) authorization: Option<String>,
    /// Its form parameters, in order.
    pub(crate) form: Vec<(String, String)>,
}

impl TokenRequest {
    /// What a form POST carried: its `Authorization` header and its form parameters.
    fn new(headers: &http::HeaderMap, body: &str) -> Self {
        Self {
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            form: form_urlencoded::parse(body.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The form parameter `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The `aud` that [`TestIdp::valid_claims`] puts in tokens.
pub(crate) const TEST_AUDIENCE: &str = "authgate-test";

/// How many bytes [`Fault::EndlessBody`] sends at most, so a client that never gives up still ends.
pub(crate) const ENDLESS_BODY_LIMIT: usize = 200 * 1024 * 1024;

/// How long [`TestIdp::close`] waits for in-flight requests before cutting them off.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The modulus of a 1024-bit RSA public key (unpadded base64url), made once with
/// `openssl genrsa 1024`: aws-lc neither generates nor signs with RSA keys under 2048 bits, so
/// "a small RSA key is rejected" tests can only publish this public half (see [`rsa_1024_jwk`]).
pub(crate) const RSA_1024_N: &str = "ty9wahUQrnUjMMSi-XfjZ3o-MticmEB-_urX8X7J1rt0QZ6JrMipfsrDD0Y4JTURHlovY44hXQNuCdmCC1M15oJ1vaqt78pz0z4loYCA373HFrMMKomgBINYXoY00rj7MYCGvNo5G3XipvGhKE5F1Pg9BhqwRrNJspRVi_DceO0";

/// A 1024-bit RS256 public JWK with `kid`, to serve with [`TestIdp::set_raw_jwks`]. Nothing can
/// sign for it here; a token whose header names this `kid` must be refused on the key alone.
pub(crate) fn rsa_1024_jwk(kid: &str) -> Value {
    json!({ "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": RSA_1024_N, "e": "AQAB" })
}

/// A misbehaviour of one endpoint (discovery or JWKS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Answer with this status and a small JSON error body (an invalid code becomes 500).
    Status(u16),
    /// Answer `302 Found` with this `Location`.
    Redirect(String),
    /// Answer 200 with truncated JSON.
    MalformedJson,
    /// Answer 200 with well-formed JSON of the wrong shape (e.g. `"keys"` not an array).
    WrongShape,
    /// Answer 200 with the real document padded with whitespace to this many bytes (so it parses
    /// if read whole), announced in a `Content-Length` and streamed, so 100 MB cost no memory.
    HugeBody(usize),
    /// Answer 200 with the start of the real document followed by whitespace, chunked, without a
    /// `Content-Length`, until the client hangs up or [`ENDLESS_BODY_LIMIT`] bytes are sent.
    EndlessBody,
}

/// A JWKS of `count` copies of `key`'s public JWK, named `bulk-0`, `bulk-1`...: a large set
/// without generating a key for each. A token signed by `key` whose header names any `bulk-N`
/// verifies if that JWK is accepted. Serve it with [`TestIdp::set_raw_jwks`].
pub(crate) fn bulk_jwks(key: &SigningKey, count: usize) -> Value {
    let template = key.public_jwk();
    let keys: Vec<Value> = (0..count)
        .map(|i| {
            let mut jwk = template.clone();
            jwk["kid"] = Value::from(format!("bulk-{i}"));
            jwk
        })
        .collect();
    json!({ "keys": keys })
}

/// What a test has set; read on every request.
#[derive(Debug)]
struct Settings {
    current: SigningKey,
    published: Vec<SigningKey>,
    rotations: usize,
    jwks_fault: Fault,
    discovery_fault: Fault,
    cache_control: Option<String>,
    discovery_issuer: Option<String>,
    discovery_jwks_uri: Option<String>,
    jwks_delay: Duration,
    discovery_delay: Duration,
    raw_jwks: Option<Value>,
    down: bool,
    token_fault: Fault,
    token_delay: Duration,
    /// Merged into the claims of issued tokens (`null` removes a claim).
    token_claims_patch: Value,
    token_requests: Vec<TokenRequest>,
    /// Opaque tokens the introspection endpoint knows, with their claims.
    opaque: std::collections::HashMap<String, Value>,
    /// Tokens (opaque or JWT) the introspection endpoint calls inactive.
    revoked: std::collections::HashSet<String>,
    introspection_fault: Fault,
    introspection_delay: Duration,
    introspection_requests: Vec<TokenRequest>,
}

/// What one endpoint has seen.
#[derive(Debug, Default)]
struct Traffic {
    /// Requests received, counted on arrival.
    requests: AtomicUsize,
    /// Requests whose client hung up before the (delayed) answer was ready.
    abandoned: AtomicUsize,
    /// The most body bytes handed to the connection for one answer.
    largest_body: AtomicUsize,
}

#[derive(Debug)]
struct Shared {
    issuer: String,
    settings: Mutex<Settings>,
    jwks: Arc<Traffic>,
    discovery: Arc<Traffic>,
    token: Arc<Traffic>,
    introspection: Arc<Traffic>,
}

impl Shared {
    fn settings(&self) -> MutexGuard<'_, Settings> {
        // A test that panicked while holding the lock has already failed; keep serving.
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An in-process IdP on `127.0.0.1:0`. It starts with one RS256 key, `k1`, published and current.
///
/// Dropping it signals the server to stop (without waiting); [`TestIdp::close`] stops it and
/// waits until the port refuses connections.
#[derive(Debug)]
pub(crate) struct TestIdp {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestIdp {
    /// Binds `127.0.0.1:0` and serves discovery and JWKS from a spawned task; the listener is
    /// bound before this returns, so requests can be sent at once.
    pub(crate) async fn start() -> TestIdp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test idp binds a loopback port");
        let addr = listener
            .local_addr()
            .expect("test idp listener has an address");
        let key = SigningKey::generate(Alg::RS256, "k1").expect("test idp generates k1");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            settings: Mutex::new(Settings {
                current: key.clone(),
                published: vec![key],
                rotations: 1,
                jwks_fault: Fault::None,
                discovery_fault: Fault::None,
                cache_control: None,
                discovery_issuer: None,
                discovery_jwks_uri: None,
                jwks_delay: Duration::ZERO,
                discovery_delay: Duration::ZERO,
                raw_jwks: None,
                down: false,
                token_fault: Fault::None,
                token_delay: Duration::ZERO,
                token_claims_patch: json!({}),
                token_requests: Vec::new(),
                opaque: std::collections::HashMap::new(),
                revoked: std::collections::HashSet::new(),
                introspection_fault: Fault::None,
                introspection_delay: Duration::ZERO,
                introspection_requests: Vec::new(),
            }),
            jwks: Arc::default(),
            discovery: Arc::default(),
            token: Arc::default(),
            introspection: Arc::default(),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", axum::routing::post(token))
            .route("/introspect", axum::routing::post(introspect))
            .with_state(Arc::clone(&shared));
        let listener = listener.tap_io(|tcp| {
            // Small JSON answers should not wait for Nagle; failing to set it only slows them.
            let _ = tcp.set_nodelay(true);
        });
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        TestIdp {
            shared,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// The issuer, `http://127.0.0.1:PORT` (no trailing slash).
    pub(crate) fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub(crate) fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.shared.issuer)
    }

    /// `{issuer}/token`.
    pub(crate) fn token_endpoint(&self) -> String {
        format!("{}/token", self.shared.issuer)
    }

    /// `{issuer}/introspect`, the discovery document's `introspection_endpoint`.
    pub(crate) fn introspection_endpoint(&self) -> String {
        format!("{}/introspect", self.shared.issuer)
    }

    /// A new opaque token (random, not a JWS) that the introspection endpoint calls active with
    /// `claims` (`iss` added when absent).
    pub(crate) fn issue_opaque(&self, mut claims: Value) -> String {
        use base64::Engine as _;
        let bytes: [u8; 24] = std::array::from_fn(|_| fastrand::u8(..));
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if let Some(c) = claims.as_object_mut() {
            c.entry("iss").or_insert_with(|| json!(self.shared.issuer));
        }
        self.shared.settings().opaque.insert(token.clone(), claims);
        token
    }

    /// From now on the introspection endpoint calls `token` inactive.
    pub(crate) fn revoke(&self, token: &str) {
        self.shared.settings().revoked.insert(token.to_owned());
    }

    /// Makes the introspection endpoint misbehave.
    pub(crate) fn set_introspection_fault(&self, fault: Fault) {
        self.shared.settings().introspection_fault = fault;
    }

    /// Delays the introspection endpoint's answers.
    pub(crate) fn set_introspection_delay(&self, delay: Duration) {
        self.shared.settings().introspection_delay = delay;
    }

    /// Every request the introspection endpoint received.
    pub(crate) fn introspection_requests(&self) -> Vec<TokenRequest> {
        self.shared.settings().introspection_requests.clone()
    }

    /// Makes the token endpoint misbehave (`Fault::Status` answers that status with
    /// `{"error":"injected fault"}`).
    pub(crate) fn set_token_fault(&self, fault: Fault) {
        self.shared.settings().token_fault = fault;
    }

    /// Delays the token endpoint's answers.
    pub(crate) fn set_token_delay(&self, delay: Duration) {
        self.shared.settings().token_delay = delay;
    }

    /// Merges `patch` into the claims of the tokens the token endpoint issues from now on.
    pub(crate) fn set_token_claims_patch(&self, patch: Value) {
        self.shared.settings().token_claims_patch = patch;
    }

    /// The requests the token endpoint received, in order.
    pub(crate) fn token_requests(&self) -> Vec<TokenRequest> {
        self.shared.settings().token_requests.clone()
    }

    /// `{issuer}/jwks`.
    pub(crate) fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.shared.issuer)
    }

    /// The key [`TestIdp::mint`] signs with (a cheap clone sharing the key).
    pub(crate) fn current_key(&self) -> SigningKey {
        self.shared.settings().current.clone()
    }

    /// The `kid`s published in the JWKS, in publication order.
    pub(crate) fn published_kids(&self) -> Vec<String> {
        let settings = self.shared.settings();
        settings
            .published
            .iter()
            .map(|key| key.kid().to_owned())
            .collect()
    }

    /// Claims that a verifier configured with this issuer and [`TEST_AUDIENCE`] accepts:
    /// `iss`, `sub`, `aud`, `iat`, `nbf` (now) and `exp` (in five minutes), by the system clock.
    pub(crate) fn valid_claims(&self, subject: &str) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the system clock is after 1970")
            .as_secs();
        json!({
            "iss": self.shared.issuer,
            "sub": subject,
            "aud": TEST_AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    /// Signs `claims` with the current key; header `{"alg", "typ": "at+jwt", "kid"}`.
    pub(crate) fn mint(&self, claims: Value) -> String {
        self.current_key()
            .sign_jwt(&claims)
            .expect("test idp signs a token")
    }

    /// Signs `claims` with `key` under `header` exactly as given (forged `alg`, missing `kid`...).
    pub(crate) fn mint_with(&self, key: &SigningKey, header: Value, claims: Value) -> String {
        key.sign_with_header(&header, &claims)
            .expect("test idp signs a token")
    }

    /// Publishes `key` (replacing a published key with the same `kid`) without making it current.
    pub(crate) fn add_key(&self, key: SigningKey) {
        let mut settings = self.shared.settings();
        match settings
            .published
            .iter_mut()
            .find(|published| published.kid() == key.kid())
        {
            Some(slot) => *slot = key,
            None => settings.published.push(key),
        }
    }

    /// Generates a key for `alg` named `k2`, `k3`..., publishes it beside the old ones and makes it
    /// current; returns its `kid`.
    pub(crate) fn rotate(&self, alg: Alg) -> String {
        let mut settings = self.shared.settings();
        settings.rotations += 1;
        let kid = format!("k{}", settings.rotations);
        let key = SigningKey::generate(alg, kid.clone()).expect("test idp generates a key");
        settings.published.push(key.clone());
        settings.current = key;
        kid
    }

    /// Stops publishing `kid`; if it is the current key, [`TestIdp::mint`] still signs with it.
    pub(crate) fn remove_key(&self, kid: &str) {
        self.shared
            .settings()
            .published
            .retain(|key| key.kid() != kid);
    }

    /// Makes the JWKS endpoint misbehave (or behave again with [`Fault::None`]).
    pub(crate) fn set_jwks_fault(&self, fault: Fault) {
        self.shared.settings().jwks_fault = fault;
    }

    /// Makes the discovery endpoint misbehave (or behave again with [`Fault::None`]).
    pub(crate) fn set_discovery_fault(&self, fault: Fault) {
        self.shared.settings().discovery_fault = fault;
    }

    /// The `Cache-Control` header of successful JWKS answers; `None` (the default) sends none.
    pub(crate) fn set_cache_control(&self, value: Option<String>) {
        self.shared.settings().cache_control = value;
    }

    /// Overrides the `issuer` field of the discovery document; `None` restores the real one.
    pub(crate) fn set_discovery_issuer(&self, issuer: Option<String>) {
        self.shared.settings().discovery_issuer = issuer;
    }

    /// Overrides the `jwks_uri` field of the discovery document (`ftp://...`, another host...);
    /// `None` restores the real one.
    pub(crate) fn set_discovery_jwks_uri(&self, jwks_uri: Option<String>) {
        self.shared.settings().discovery_jwks_uri = jwks_uri;
    }

    /// Delays every JWKS answer (faults included) by `delay`; the fetch is counted on arrival,
    /// and as abandoned if the client hangs up before the delay is over.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.shared.settings().jwks_delay = delay;
    }

    /// Like [`TestIdp::set_delay`], for the discovery endpoint.
    pub(crate) fn set_discovery_delay(&self, delay: Duration) {
        self.shared.settings().discovery_delay = delay;
    }

    /// Serves this JSON as the JWKS instead of the published keys (bad keys, duplicate kids, oct
    /// keys...); `None` restores the real set. A JWKS fault still takes precedence.
    pub(crate) fn set_raw_jwks(&self, jwks: Option<Value>) {
        self.shared.settings().raw_jwks = jwks;
    }

    /// While `true`, every endpoint answers `503 Service Unavailable` (fetches are still counted).
    pub(crate) fn set_down(&self, down: bool) {
        self.shared.settings().down = down;
    }

    /// JWKS requests received so far.
    pub(crate) fn jwks_fetches(&self) -> usize {
        self.shared.jwks.requests.load(Ordering::SeqCst)
    }

    /// Discovery requests received so far.
    pub(crate) fn discovery_fetches(&self) -> usize {
        self.shared.discovery.requests.load(Ordering::SeqCst)
    }

    /// JWKS requests whose client closed the connection while the answer was delayed.
    pub(crate) fn jwks_abandoned(&self) -> usize {
        self.shared.jwks.abandoned.load(Ordering::SeqCst)
    }

    /// Discovery requests whose client closed the connection while the answer was delayed.
    pub(crate) fn discovery_abandoned(&self) -> usize {
        self.shared.discovery.abandoned.load(Ordering::SeqCst)
    }

    /// The most body bytes handed to the connection for one JWKS answer (what the client read,
    /// plus what socket buffers held when it hung up).
    pub(crate) fn largest_jwks_body_sent(&self) -> usize {
        self.shared.jwks.largest_body.load(Ordering::SeqCst)
    }

    /// Sets every counter (fetches, abandoned requests, largest body) of both endpoints back to
    /// zero.
    pub(crate) fn reset_fetch_counts(&self) {
        for traffic in [&self.shared.jwks, &self.shared.discovery] {
            traffic.requests.store(0, Ordering::SeqCst);
            traffic.abandoned.store(0, Ordering::SeqCst);
            traffic.largest_body.store(0, Ordering::SeqCst);
        }
    }

    /// Stops the server: the listener is closed when this returns (new connections are refused),
    /// idle connections are closed, and requests in flight get [`CLOSE_GRACE`] to finish.
    pub(crate) async fn close(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(CLOSE_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    let pending = Pending::arrived(&shared.discovery);
    let delay = shared.settings().discovery_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (down, fault, issuer, jwks_uri) = {
        let settings = shared.settings();
        let issuer = settings
            .discovery_issuer
            .clone()
            .unwrap_or_else(|| shared.issuer.clone());
        let jwks_uri = settings
            .discovery_jwks_uri
            .clone()
            .unwrap_or_else(|| format!("{}/jwks", shared.issuer));
        (
            settings.down,
            settings.discovery_fault.clone(),
            issuer,
            jwks_uri,
        )
    };
    if down {
        return pending.answer(unavailable());
    }
    let document = json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "token_endpoint": format!("{}/token", shared.issuer),
        "introspection_endpoint": format!("{}/introspect", shared.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let bodies = FaultBodies {
        malformed: br#"{"issuer":"http://127.0.0.1"#,
        wrong_shape: br#"{"issuer":42,"jwks_uri":["not","a","string"]}"#,
    };
    pending.answer(answer(&fault, &document, &bodies, None))
}

/// The password grant (RFC 6749 §4.3) for [`USERS`], recording every request. Client
/// authentication is recorded, not checked: tests assert on what authgate sent.
async fn token(
    State(shared): State<Arc<Shared>>,
    headers: http::HeaderMap,
    body: String,
) -> Response {
    let pending = Pending::arrived(&shared.token);
    let request = TokenRequest::new(&headers, &body);
    let (delay, down, fault, patch, key) = {
        let mut settings = shared.settings();
        settings.token_requests.push(request.clone());
        (
            settings.token_delay,
            settings.down,
            settings.token_fault.clone(),
            settings.token_claims_patch.clone(),
            settings.current.clone(),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if down {
        return pending.answer(unavailable());
    }
    if let Fault::Status(code) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return pending.answer(json_response(
            status,
            br#"{"error":"injected fault"}"#.to_vec(),
        ));
    }
    let error = |code: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            serde_json::to_vec(&json!({"error": code})).expect("json"),
        )
    };
    if request.param("grant_type") != Some("password") {
        return pending.answer(error("unsupported_grant_type"));
    }
    let (Some(user), Some(password)) = (request.param("username"), request.param("password"))
    else {
        return pending.answer(error("invalid_request"));
    };
    if !USERS.contains(&(user, password)) {
        return pending.answer(error("invalid_grant"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the system clock is after 1970")
        .as_secs();
    let mut claims = json!({
        "iss": shared.issuer,
        "sub": user,
        "aud": TEST_AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "scope": "api:read",
    });
    for (name, value) in patch.as_object().into_iter().flatten() {
        match (value.is_null(), claims.as_object_mut()) {
            (true, Some(c)) => {
                c.remove(name);
            }
            (false, Some(c)) => {
                c.insert(name.clone(), value.clone());
            }
            _ => {}
        }
    }
    let access_token = key.sign_jwt(&claims).expect("test idp signs a token");
    pending.answer(json_response(
        StatusCode::OK,
        serde_json::to_vec(&json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
        }))
        .expect("json"),
    ))
}

/// Token introspection (RFC 7662) for the opaque tokens a test issued (active with their
/// claims) and for JWTs (active unless revoked; oidc-provider would refuse those, Keycloak
/// answers them), recording every request. Client authentication is recorded, not checked.
async fn introspect(
    State(shared): State<Arc<Shared>>,
    headers: http::HeaderMap,
    body: String,
) -> Response {
    let pending = Pending::arrived(&shared.introspection);
    let request = TokenRequest::new(&headers, &body);
    let (delay, down, fault, answer) = {
        let mut settings = shared.settings();
        settings.introspection_requests.push(request.clone());
        let token = request.param("token").unwrap_or("");
        let answer = if settings.revoked.contains(token) {
            json!({"active": false})
        } else if let Some(claims) = settings.opaque.get(token) {
            let mut answer = claims.clone();
            answer["active"] = json!(true);
            answer
        } else if token.matches('.').count() == 2 {
            json!({"active": true})
        } else {
            json!({"active": false})
        };
        (
            settings.introspection_delay,
            settings.down,
            settings.introspection_fault.clone(),
            answer,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if down {
        return pending.answer(unavailable());
    }
    let bodies = FaultBodies {
        malformed: br#"{"active":tr"#,
        wrong_shape: br#"{"active":"yes"}"#,
    };
    pending.answer(self::answer(&fault, &answer, &bodies, None))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    let pending = Pending::arrived(&shared.jwks);
    let delay = shared.settings().jwks_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (down, fault, document, cache_control) = {
        let settings = shared.settings();
        let document = settings.raw_jwks.clone().unwrap_or_else(|| {
            let keys: Vec<Value> = settings
                .published
                .iter()
                .map(SigningKey::public_jwk)
                .collect();
            json!({ "keys": keys })
        });
        (
            settings.down,
            settings.jwks_fault.clone(),
            document,
            settings.cache_control.clone(),
        )
    };
    if down {
        return pending.answer(unavailable());
    }
    let bodies = FaultBodies {
        malformed: br#"{"keys":[{"kty":"RSA","kid":"k1","#,
        wrong_shape: br#"{"keys":{"kty":"RSA","kid":"k1"}}"#,
    };
    pending.answer(answer(&fault, &document, &bodies, cache_control.as_deref()))
}

/// One request being handled. The server drops the handler when its client hangs up; if that
/// happens before [`Pending::answer`], the request counts as abandoned.
struct Pending {
    traffic: Arc<Traffic>,
    answered: bool,
}

impl Pending {
    fn arrived(traffic: &Arc<Traffic>) -> Pending {
        traffic.requests.fetch_add(1, Ordering::SeqCst);
        Pending {
            traffic: Arc::clone(traffic),
            answered: false,
        }
    }

    /// Hands `response` to the server with its body bytes counted as they are sent.
    fn answer(mut self, response: Response) -> Response {
        self.answered = true;
        let traffic = Arc::clone(&self.traffic);
        response.map(|inner| {
            Body::new(CountedBody {
                inner,
                sent: 0,
                traffic,
            })
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.traffic.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The bodies an endpoint sends for [`Fault::MalformedJson`] and [`Fault::WrongShape`].
struct FaultBodies {
    malformed: &'static [u8],
    wrong_shape: &'static [u8],
}

fn answer(
    fault: &Fault,
    document: &Value,
    bodies: &FaultBodies,
    cache_control: Option<&str>,
) -> Response {
    let document = serde_json::to_vec(document).expect("a json value serialises");
    let mut response = match fault {
        Fault::None => json_response(StatusCode::OK, document),
        Fault::Status(code) => json_response(
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            br#"{"error":"injected fault"}"#.to_vec(),
        ),
        Fault::Redirect(location) => {
            let mut response = json_response(StatusCode::FOUND, b"{}".to_vec());
            match HeaderValue::from_str(location) {
                Ok(location) => {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                Err(_) => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
            }
            response
        }
        Fault::MalformedJson => json_response(StatusCode::OK, bodies.malformed.to_vec()),
        Fault::WrongShape => json_response(StatusCode::OK, bodies.wrong_shape.to_vec()),
        Fault::HugeBody(size) => {
            let len = document.len().max(*size);
            let body = PaddedBody::new(&document, &[], len.saturating_sub(document.len()), true);
            let mut response = streamed_json_response(body);
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            response
        }
        Fault::EndlessBody => {
            // Everything but the closing brace, then whitespace, then the brace: valid JSON if a
            // client ever reads all ENDLESS_BODY_LIMIT bytes.
            let split = document.len().saturating_sub(1);
            let (head, tail) = document.split_at(split);
            let padding = ENDLESS_BODY_LIMIT.saturating_sub(document.len());
            streamed_json_response(PaddedBody::new(head, tail, padding, false))
        }
    };
    if let (Some(value), Fault::None) = (cache_control, fault) {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    }
    response
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn streamed_json_response(body: PaddedBody) -> Response {
    let mut response = Body::new(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn unavailable() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        br#"{"error":"identity provider is down"}"#.to_vec(),
    )
}

/// A streamed body: `head`, then `padding` bytes of whitespace, then `tail`; with an exact size
/// hint when `announced` (the length goes in `Content-Length`), chunked otherwise.
struct PaddedBody {
    head: Option<Bytes>,
    padding: usize,
    filler: Bytes,
    tail: Option<Bytes>,
    announced: bool,
}

impl PaddedBody {
    fn new(head: &[u8], tail: &[u8], padding: usize, announced: bool) -> PaddedBody {
        let non_empty = |bytes: &[u8]| (!bytes.is_empty()).then(|| Bytes::copy_from_slice(bytes));
        PaddedBody {
            head: non_empty(head),
            padding,
            filler: Bytes::from(vec![b' '; 64 * 1024]),
            tail: non_empty(tail),
            announced,
        }
    }

    fn remaining(&self) -> usize {
        let len = |part: &Option<Bytes>| part.as_ref().map_or(0, Bytes::len);
        len(&self.head) + self.padding + len(&self.tail)
    }
}

impl hyper::body::Body for PaddedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if self.padding > 0 {
            let len = self.padding.min(self.filler.len());
            self.padding -= len;
            return Poll::Ready(Some(Ok(Frame::data(self.filler.slice(..len)))));
        }
        Poll::Ready(self.tail.take().map(|tail| Ok(Frame::data(tail))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.announced {
            SizeHint::with_exact(self.remaining() as u64)
        } else {
            SizeHint::default()
        }
    }
}

/// Wraps an answer's body to record in [`Traffic::largest_body`] how much of it was sent.
struct CountedBody {
    inner: Body,
    sent: usize,
    traffic: Arc<Traffic>,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len();
            self.traffic
                .largest_body
                .fetch_max(self.sent, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
