//! An embedded OIDC issuer for `authgate demo`: discovery, JWKS and an OAuth 2.0 token endpoint
//! (password and client-credentials grants) that mints RS256 access tokens (RFC 9068).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::signing::{SigningError, SigningKey};
use crate::verify::Alg;

/// Default lifetime of an issued access token.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Default `aud` of issued access tokens.
pub const DEFAULT_AUDIENCE: &str = "demo-api";
/// Default space-separated scopes a client may ask for (and gets when it asks for none).
pub const DEFAULT_SCOPE: &str = "openid profile api:read";
/// Largest token request body accepted, in bytes.
pub const MAX_TOKEN_REQUEST_BYTES: usize = 16 * 1024;
/// `kid` of the issuer's signing key.
pub const SIGNING_KEY_ID: &str = "demo-rs256";
/// How long clients may cache the JWKS, in seconds (sent as `Cache-Control: max-age`).
pub const JWKS_MAX_AGE_SECONDS: u64 = 300;

/// Email domain of demo users: user `john` is `john@example.com`.
const EMAIL_DOMAIN: &str = "example.com";

/// What the demo issuer accepts and what its tokens say.
#[derive(Clone)]
pub struct IssuerOptions {
    /// Lifetime of issued access tokens (`exp - iat`).
    pub access_token_ttl: Duration,
    /// The `aud` claim of issued access tokens.
    pub audience: String,
    /// Resource owners as `(username, password)` pairs for the password grant.
    pub users: Vec<(String, String)>,
    /// Confidential clients as `(client_id, client_secret)` pairs.
    pub clients: Vec<(String, String)>,
    /// Space-separated scopes clients may request; granted in full when a request names none.
    pub scope: String,
}

impl Default for IssuerOptions {
    fn default() -> Self {
        Self {
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
            audience: DEFAULT_AUDIENCE.to_owned(),
            users: vec![("john".to_owned(), "doe".to_owned())],
            clients: vec![("demo-client".to_owned(), "demo-secret".to_owned())],
            scope: DEFAULT_SCOPE.to_owned(),
        }
    }
}

/// Shows usernames and client ids but never passwords or client secrets.
impl fmt::Debug for IssuerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(name, _)| name.as_str()).collect();
        let clients: Vec<&str> = self.clients.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("IssuerOptions")
            .field("access_token_ttl", &self.access_token_ttl)
            .field("audience", &self.audience)
            .field("users", &users)
            .field("clients", &clients)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Why the demo issuer could not start or mint a token.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The listener handed to [`DemoIssuer::start`] has no local address.
    #[error("could not read the demo issuer's listening address")]
    LocalAddr(#[source] io::Error),
    /// The signing key could not be generated.
    #[error("could not create the demo signing key")]
    Key(#[source] SigningError),
    /// A token could not be signed.
    #[error("could not sign a demo access token")]
    Signing(#[source] SigningError),
}

/// Everything the handlers share.
#[derive(Debug)]
struct IssuerState {
    issuer: String,
    key: SigningKey,
    options: IssuerOptions,
}

/// A running demo issuer; stop it with [`DemoIssuer::shutdown`] (dropping it also stops it,
/// without waiting).
pub struct DemoIssuer {
    state: Arc<IssuerState>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
}

impl fmt::Debug for DemoIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoIssuer")
            .field("issuer", &self.state.issuer)
            .field("key", &self.state.key)
            .field("running", &self.shutdown.is_some())
            .finish()
    }
}

impl DemoIssuer {
    /// Serves the issuer on an already bound `listener`, in a spawned task.
    ///
    /// The issuer URL is `http://{local_addr}`; a wildcard address (`0.0.0.0`, `::`) is
    /// replaced by the loopback address of the same family, since clients cannot use it.
    pub async fn start(
        listener: TcpListener,
        options: IssuerOptions,
    ) -> Result<DemoIssuer, DemoError> {
        let addr = listener.local_addr().map_err(DemoError::LocalAddr)?;
        let key = SigningKey::generate(Alg::RS256, SIGNING_KEY_ID).map_err(DemoError::Key)?;
        let state = Arc::new(IssuerState {
            issuer: format!("http://{}", reachable(addr)),
            key,
            options,
        });
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = axum::serve(listener, router(Arc::clone(&state)))
            .with_graceful_shutdown(async move {
                // A dropped sender means the same as a sent signal: stop.
                let _ = stopped.await;
            })
            .into_future();
        let server = tokio::spawn(server);
        tracing::info!(issuer = %state.issuer, "demo issuer listening");
        Ok(DemoIssuer {
            state,
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    /// The issuer identifier (`iss`), e.g. `http://127.0.0.1:8081`.
    pub fn issuer_url(&self) -> &str {
        &self.state.issuer
    }

    /// Where the JWKS is served.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.state.issuer)
    }

    /// Where tokens are requested.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.state.issuer)
    }

    /// Mints an access token for `subject` as the first configured client would get it, then
    /// overlays `extra_claims` (when it is an object) so callers can add or override any claim,
    /// e.g. `{"exp": 0}` for an expired token.
    pub fn mint(&self, subject: &str, extra_claims: Value) -> Result<String, DemoError> {
        let client_id = self
            .state
            .options
            .clients
            .first()
            .map_or("demo-client", |(id, _)| id.as_str());
        let mut claims = self
            .state
            .claims(subject, client_id, &self.state.options.scope);
        if let Value::Object(extra) = extra_claims {
            claims.extend(extra);
        }
        self.state
            .key
            .sign_jwt(&Value::Object(claims))
            .map_err(DemoError::Signing)
    }

    /// Stops accepting connections, lets in-flight requests finish and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => tracing::info!("demo issuer stopped"),
                Ok(Err(error)) => tracing::warn!(%error, "demo issuer stopped with an error"),
                Err(error) => tracing::warn!(%error, "demo issuer task failed"),
            }
        }
    }
}

impl Drop for DemoIssuer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The address clients should use for a listener bound to `addr`.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

fn router(state: Arc<IssuerState>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route(
            "/token",
            post(token).layer(DefaultBodyLimit::max(MAX_TOKEN_REQUEST_BYTES)),
        )
        .with_state(state)
}

impl IssuerState {
    /// The RFC 9068 claims of an access token; `jti` only needs to be unique, not secret.
    fn claims(&self, subject: &str, client_id: &str, scope: &str) -> Map<String, Value> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let exp = now.saturating_add(self.options.access_token_ttl.as_secs());
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.options.audience,
            "exp": exp,
            "iat": now,
            "nbf": now,
            "jti": format!("{:032x}", fastrand::u128(..)),
            "scope": scope,
            "client_id": client_id,
        });
        match claims {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> Response {
    let issuer = &state.issuer;
    let scopes: Vec<&str> = state.options.scope.split_whitespace().collect();
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint": format!("{issuer}/token"),
        "grant_types_supported": ["password", "client_credentials"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "scopes_supported": scopes,
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
    .into_response()
}

async fn jwks(State(state): State<Arc<IssuerState>>) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            format!("max-age={JWKS_MAX_AGE_SECONDS}"),
        )],
        Json(json!({ "keys": [state.key.public_jwk()] })),
    )
        .into_response()
}

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl OAuthError {
    fn invalid_request(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            description: description.into(),
        }
    }

    fn invalid_client() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            description: "client authentication failed".to_owned(),
        }
    }

    fn invalid_grant() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_grant",
            description: "the resource owner credentials are invalid".to_owned(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.code, "error_description": self.description }));
        let mut response = (self.status, no_store_headers(), body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"authgate-demo\""),
            );
        }
        response
    }
}

fn no_store_headers() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ]
}

async fn token(
    State(state): State<Arc<IssuerState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match issue(&state, &headers, body) {
        Ok(response) => response,
        Err(error) => {
            // The code and description only; never the request, which may hold credentials.
            tracing::info!(error = error.code, description = %error.description, "demo token request refused");
            error.into_response()
        }
    }
}

fn issue(
    state: &IssuerState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let body = body.map_err(|rejection| OAuthError {
        status: rejection.status(),
        code: "invalid_request",
        description: format!(
            "unreadable request body (the limit is {MAX_TOKEN_REQUEST_BYTES} bytes)"
        ),
    })?;
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "the content type must be application/x-www-form-urlencoded",
        ));
    }
    let params = parse_form(&body)?;
    let client_id = authenticate_client(state, headers, &params)?;

    let subject = match params.get("grant_type").map(String::as_str) {
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
        Some("password") => {
            let (Some(username), Some(password)) = (params.get("username"), params.get("password"))
            else {
                return Err(OAuthError::invalid_request(
                    "username and password are required",
                ));
            };
            let known = state
                .options
                .users
                .iter()
                .any(|(user, pass)| user == username && equal(pass, password));
            if !known {
                return Err(OAuthError::invalid_grant());
            }
            Some(username.clone())
        }
        Some("client_credentials") => None,
        Some(_) => {
            return Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                code: "unsupported_grant_type",
                description: "only the password and client_credentials grants are supported"
                    .to_owned(),
            });
        }
    };
    let scope = granted_scope(&state.options.scope, params.get("scope"))?;

    let mut claims = state.claims(subject.as_deref().unwrap_or(&client_id), &client_id, &scope);
    if let Some(username) = &subject {
        claims.insert("preferred_username".to_owned(), json!(username));
        claims.insert(
            "email".to_owned(),
            json!(format!("{username}@{EMAIL_DOMAIN}")),
        );
    }
    let access_token = state
        .key
        .sign_jwt(&Value::Object(claims))
        .map_err(|error| {
            tracing::error!(error = %error, "demo issuer could not sign a token");
            OAuthError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "server_error",
                description: "the token could not be signed".to_owned(),
            }
        })?;
    tracing::info!(
        client_id = %client_id,
        subject = subject.as_deref().unwrap_or(&client_id),
        scope = %scope,
        "demo access token issued"
    );
    let body = Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": state.options.access_token_ttl.as_secs(),
        "scope": scope,
    }));
    Ok((no_store_headers(), body).into_response())
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Parses the form, refusing repeated parameters (RFC 6749 §3.2).
fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, OAuthError> {
    let mut params = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(OAuthError::invalid_request(format!(
                "parameter {name} is repeated"
            )));
        }
    }
    Ok(params)
}

/// Authenticates the client by HTTP Basic or by `client_id`/`client_secret` in the body
/// (exactly one of the two, RFC 6749 §2.3) and returns its id.
fn authenticate_client(
    state: &IssuerState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
) -> Result<String, OAuthError> {
    let (id, secret) = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            if params.contains_key("client_secret") {
                return Err(OAuthError::invalid_request(
                    "use only one client authentication method",
                ));
            }
            let (id, secret) = basic_credentials(value).ok_or_else(OAuthError::invalid_client)?;
            if params
                .get("client_id")
                .is_some_and(|body_id| *body_id != id)
            {
                return Err(OAuthError::invalid_request(
                    "client_id does not match the authenticated client",
                ));
            }
            (id, secret)
        }
        None => match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone()),
            _ => return Err(OAuthError::invalid_client()),
        },
    };
    let known = state
        .options
        .clients
        .iter()
        .any(|(client, client_secret)| *client == id && equal(client_secret, &secret));
    if known {
        Ok(id)
    } else {
        Err(OAuthError::invalid_client())
    }
}

/// Decodes `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

/// Undoes application/x-www-form-urlencoded escaping of a single value.
fn form_decode(value: &str) -> String {
    form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, decoded)| decoded.into_owned())
        .unwrap_or_default()
}

/// Compares secrets in constant time.
fn equal(expected: &str, given: &str) -> bool {
    verify_slices_are_equal(expected.as_bytes(), given.as_bytes()).is_ok()
}

/// The scope to grant: all allowed scopes when none is requested, else the requested ones if
/// each is allowed (`invalid_scope` otherwise).
fn granted_scope(allowed: &str, requested: Option<&String>) -> Result<String, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.split_whitespace().collect::<Vec<_>>().join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split_whitespace() {
        if !allowed.split_whitespace().any(|allowed| allowed == scope) {
            return Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_scope",
                description: format!("scope {scope} is not available"),
            });
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};

    async fn start_issuer() -> (DemoIssuer, reqwest::Client) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = DemoIssuer::start(listener, IssuerOptions::default())
            .await
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        (issuer, client)
    }

    fn form(pairs: &[(&str, &str)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    async fn post_token(
        issuer: &DemoIssuer,
        client: &reqwest::Client,
        basic: Option<(&str, &str)>,
        pairs: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = client
            .post(issuer.token_endpoint())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(pairs));
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        (status, headers, body)
    }

    async fn get_json(client: &reqwest::Client, url: &str) -> (HeaderMap, Value) {
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        (
            headers,
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
        )
    }

    /// Verifies `token` the way a relying party would: key from the published JWKS by `kid`.
    async fn verify(issuer: &DemoIssuer, client: &reqwest::Client, token: &str) -> Value {
        let (_, jwks) = get_json(client, &issuer.jwks_uri()).await;
        let jwks: JwkSet = serde_json::from_value(jwks).unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[DEFAULT_AUDIENCE]);
        validation.set_issuer(&[issuer.issuer_url()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        let key = DecodingKey::from_jwk(jwk).unwrap();
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .unwrap()
            .claims
    }

    #[tokio::test]
    async fn discovery_document_points_at_the_issuers_own_endpoints() {
        let (issuer, client) = start_issuer().await;
        let url = format!("{}/.well-known/openid-configuration", issuer.issuer_url());
        let (headers, doc) = get_json(&client, &url).await;
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let base = issuer.issuer_url();
        assert!(base.starts_with("http://127.0.0.1:"));
        assert_eq!(doc["issuer"], base);
        assert_eq!(doc["jwks_uri"], format!("{base}/jwks"));
        assert_eq!(doc["token_endpoint"], format!("{base}/token"));
        assert_eq!(
            doc["grant_types_supported"],
            json!(["password", "client_credentials"])
        );
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post"])
        );
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn jwks_publishes_the_signing_key_and_may_be_cached_for_five_minutes() {
        let (issuer, client) = start_issuer().await;
        let (headers, jwks) = get_json(&client, &issuer.jwks_uri()).await;
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=300");
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kid"], SIGNING_KEY_ID);
        assert_eq!(keys[0]["kty"], "RSA");
        assert_eq!(keys[0]["alg"], "RS256");
        assert_eq!(keys[0]["use"], "sig");
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn password_grant_issues_a_token_that_verifies_against_the_jwks() {
        let (issuer, client) = start_issuer().await;
        let (status, headers, body) = post_token(
            &issuer,
            &client,
            Some(("demo-client", "demo-secret")),
            &[
                ("grant_type", "password"),
                ("username", "john"),
                ("password", "doe"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], DEFAULT_SCOPE);

        let claims = verify(&issuer, &client, body["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["sub"], "john");
        assert_eq!(claims["preferred_username"], "john");
        assert_eq!(claims["email"], "john@example.com");
        assert_eq!(claims["client_id"], "demo-client");
        assert_eq!(claims["scope"], DEFAULT_SCOPE);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        assert!(claims["jti"].as_str().is_some_and(|jti| jti.len() == 32));
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn client_credentials_in_the_body_are_accepted_and_scope_can_be_narrowed() {
        let (issuer, client) = start_issuer().await;
        let (status, _, body) = post_token(
            &issuer,
            &client,
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "demo-client"),
                ("client_secret", "demo-secret"),
                ("scope", "api:read"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["scope"], "api:read");
        let claims = verify(&issuer, &client, body["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["sub"], "demo-client");
        assert_eq!(claims["client_id"], "demo-client");
        assert_eq!(claims["scope"], "api:read");
        assert!(claims.get("email").is_none());
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn a_wrong_password_is_an_invalid_grant() {
        let (issuer, client) = start_issuer().await;
        let (status, headers, body) = post_token(
            &issuer,
            &client,
            Some(("demo-client", "demo-secret")),
            &[
                ("grant_type", "password"),
                ("username", "john"),
                ("password", "nope"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(!body.to_string().contains("nope"));
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn an_unknown_client_or_wrong_secret_is_an_invalid_client() {
        let (issuer, client) = start_issuer().await;
        let grant = [("grant_type", "client_credentials")];
        for basic in [
            Some(("demo-client", "wrong")),
            Some(("stranger", "demo-secret")),
            None,
        ] {
            let (status, headers, body) = post_token(&issuer, &client, basic, &grant).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{basic:?}");
            assert_eq!(body["error"], "invalid_client");
            assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        }
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_token_requests_get_the_rfc_6749_error_codes() {
        let (issuer, client) = start_issuer().await;
        let basic = Some(("demo-client", "demo-secret"));
        let cases: [(&[(&str, &str)], &str); 4] = [
            (
                &[("grant_type", "authorization_code")],
                "unsupported_grant_type",
            ),
            (&[("username", "john")], "invalid_request"),
            (
                &[("grant_type", "password"), ("username", "john")],
                "invalid_request",
            ),
            (
                &[("grant_type", "client_credentials"), ("scope", "admin")],
                "invalid_scope",
            ),
        ];
        for (pairs, code) in cases {
            let (status, _, body) = post_token(&issuer, &client, basic, pairs).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{pairs:?}");
            assert_eq!(body["error"], code, "{pairs:?}");
        }

        let repeated = client
            .post(issuer.token_endpoint())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .basic_auth("demo-client", Some("demo-secret"))
            .body("grant_type=client_credentials&grant_type=password")
            .send()
            .await
            .unwrap();
        assert_eq!(repeated.status(), StatusCode::BAD_REQUEST);

        let json_body = client
            .post(issuer.token_endpoint())
            .header(header::CONTENT_TYPE, "application/json")
            .body(r#"{"grant_type":"client_credentials"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn an_oversized_token_request_is_refused() {
        let (issuer, client) = start_issuer().await;
        let padding = "x".repeat(MAX_TOKEN_REQUEST_BYTES + 1);
        let response = client
            .post(issuer.token_endpoint())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("padding", &padding),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"], "invalid_request");
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn minted_tokens_carry_the_standard_claims_and_the_overrides() {
        let (issuer, client) = start_issuer().await;
        let token = issuer
            .mint("alice", json!({ "scope": "api:write", "tenant": "t1" }))
            .unwrap();
        let claims = verify(&issuer, &client, &token).await;
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iss"], issuer.issuer_url());
        assert_eq!(claims["aud"], DEFAULT_AUDIENCE);
        assert_eq!(claims["scope"], "api:write");
        assert_eq!(claims["tenant"], "t1");
        issuer.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener() {
        let (issuer, client) = start_issuer().await;
        let jwks_uri = issuer.jwks_uri();
        issuer.shutdown().await;
        assert!(client.get(jwks_uri).send().await.is_err());
    }

    #[test]
    fn debug_output_hides_passwords_and_client_secrets() {
        let shown = format!("{:?}", IssuerOptions::default());
        assert!(shown.contains("john") && shown.contains("demo-client"));
        assert!(
            !shown.contains("doe") && !shown.contains("demo-secret"),
            "{shown}"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let encoded = STANDARD.encode("my%20client:s%3Acret+x");
        let value = HeaderValue::from_str(&format!("Basic {encoded}")).unwrap();
        assert_eq!(
            basic_credentials(&value),
            Some(("my client".to_owned(), "s:cret x".to_owned()))
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer abc")),
            None
        );
    }
}
