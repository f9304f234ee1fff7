//! The password grant over real sockets (Kong's `auth_methods: [password]`): Basic credentials
//! on `/auth` and ext_authz gRPC are exchanged at the test IdP's token endpoint with each client
//! authentication method; what the upstream gets, what the IdP sees, and every failure path
//! (wrong password, outage, slowness, a refused client, a token that does not verify, the
//! per-user bound).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::app::App;
use common::idp::{Fault, TestIdp};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// A secret-basic client and the password method, plus `extra` YAML.
fn config(idp: &TestIdp, client: &str, extra: &str) -> String {
    format!(
        "issuers:\n  - issuer: \"{}\"\n    auth_methods: [bearer, password]\n    client_id: kong\n{client}\naudiences: [authgate-test]\n{extra}\n",
        idp.issuer()
    )
}

const SECRET_BASIC: &str = "    client_secret: s3cret";

async fn start(client: &str, extra: &str) -> (TestIdp, App) {
    let idp = TestIdp::start().await;
    let app = App::start(&config(&idp, client, extra)).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await, "never ready");
    (idp, app)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

async fn check_basic(app: &App, user: &str, password: &str) -> reqwest::Response {
    app.client
        .get(app.url("/auth"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", "/items")
        .header("Authorization", basic(user, password))
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn basic_credentials_become_a_verified_bearer_token_for_the_upstream_exchanged_once() {
    let (idp, app) = start(SECRET_BASIC, "").await;
    let response = check_basic(&app, "alice", "wonderland").await;
    assert_eq!(response.status(), 200);
    let authorization = header(&response, "authorization").expect("upstream Authorization");
    let token = authorization
        .strip_prefix("Bearer ")
        .expect("a bearer token");
    assert_eq!(payload(token)["sub"], "alice");
    assert_eq!(
        header(&response, "x-auth-subject").as_deref(),
        Some("alice")
    );

    // The IdP saw one password grant from client kong with client_secret_basic.
    let requests = idp.token_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.param("grant_type"), Some("password"));
    assert_eq!(request.param("username"), Some("alice"));
    assert_eq!(request.param("password"), Some("wonderland"));
    assert_eq!(request.param("client_secret"), None);
    assert_eq!(
        request.authorization.as_deref(),
        Some(basic("kong", "s3cret").as_str())
    );

    // The same credentials again: the remembered token, no second exchange.
    let again = check_basic(&app, "alice", "wonderland").await;
    assert_eq!(again.status(), 200);
    assert_eq!(header(&again, "authorization"), Some(authorization));
    assert_eq!(idp.token_requests().len(), 1);

    // A bearer token still works beside it.
    let bearer = app.check(Some(&idp.mint(idp.valid_claims("carol")))).await;
    assert_eq!(bearer.status(), 200);
    // (Counters are shared by every test in this binary: at least this test's own.)
    let metrics = app.metrics().await;
    for series in [
        "authgate_password_grant_exchanges_total{result=\"success\"}",
        "authgate_password_grant_cache_lookups_total{result=\"hit\"}",
    ] {
        let value = common::metrics::metric(&metrics, series).unwrap_or(0.0);
        assert!(value >= 1.0, "{series}: {metrics}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_a_401_with_basic_and_bearer_challenges_and_a_second_try_costs_no_exchange()
 {
    let (idp, app) = start(SECRET_BASIC, "").await;
    for _ in 0..2 {
        let response = check_basic(&app, "alice", "guess").await;
        assert_eq!(response.status(), 401);
        let challenge = header(&response, "www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Basic realm=\"authgate\""),
            "{challenge}"
        );
        assert!(
            challenge.contains("Bearer realm=\"authgate\""),
            "{challenge}"
        );
        assert!(header(&response, "authorization").is_none());
    }
    assert_eq!(idp.token_requests().len(), 1, "the refusal is remembered");
    // A request without credentials offers Basic too, where the password method is on.
    let none = app.check(None).await;
    assert_eq!(none.status(), 401);
    assert!(
        header(&none, "www-authenticate")
            .unwrap()
            .starts_with("Basic ")
    );
}

#[tokio::test]
async fn wrong_passwords_past_the_per_user_bound_do_not_reach_the_idp() {
    let (idp, app) = start(
        SECRET_BASIC,
        "password_grant: {max_exchanges_per_minute: 2}",
    )
    .await;
    for (i, expected) in [401, 401, 503, 503].into_iter().enumerate() {
        let response = check_basic(&app, "alice", &format!("guess-{i}")).await;
        assert_eq!(response.status(), expected, "attempt {i}");
        if expected == 503 {
            assert!(header(&response, "retry-after").is_some());
        }
    }
    assert_eq!(idp.token_requests().len(), 2);
    // Another user has a bound of their own.
    assert_eq!(check_basic(&app, "bob", "builder").await.status(), 200);
}

#[tokio::test]
async fn concurrent_identical_requests_share_one_exchange() {
    let (idp, app) = start(SECRET_BASIC, "").await;
    idp.set_token_delay(Duration::from_millis(100));
    let mut set = JoinSet::new();
    for _ in 0..10 {
        let (client, url) = (app.client.clone(), app.url("/auth"));
        set.spawn(async move {
            client
                .get(url)
                .header("Authorization", basic("alice", "wonderland"))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(idp.token_requests().len(), 1);
}

#[tokio::test]
async fn an_idp_outage_or_a_refused_client_is_unavailable_never_a_wrong_password() {
    for (fault, what) in [
        (Fault::Status(500), "a failing token endpoint"),
        (Fault::Status(503), "an unavailable token endpoint"),
        (Fault::Status(401), "a refused client (invalid_client)"),
        (Fault::Status(400), "a 400 that is not invalid_grant"),
    ] {
        let (idp, app) = start(SECRET_BASIC, "").await;
        idp.set_token_fault(fault);
        let response = check_basic(&app, "alice", "wonderland").await;
        assert_eq!(response.status(), 503, "{what}");
        assert_eq!(
            header(&response, "retry-after").as_deref(),
            Some("5"),
            "{what}"
        );
        // An outage is not remembered: the next request asks again.
        idp.set_token_fault(Fault::None);
        assert_eq!(
            check_basic(&app, "alice", "wonderland").await.status(),
            200,
            "{what}"
        );
        assert_eq!(idp.token_requests().len(), 2, "{what}");
    }
}

#[tokio::test]
async fn a_token_endpoint_slower_than_the_check_deadline_is_unavailable_and_its_answer_is_kept() {
    let (idp, app) = start(SECRET_BASIC, "limits: {check_deadline: 200ms}").await;
    idp.set_token_delay(Duration::from_millis(600));
    let response = check_basic(&app, "alice", "wonderland").await;
    assert_eq!(response.status(), 503);
    // The exchange went on; once it is done, the next request gets its token at once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(check_basic(&app, "alice", "wonderland").await.status(), 200);
    assert_eq!(idp.token_requests().len(), 1);
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_unavailable() {
    let (idp, app) = start(
        "    client_secret: s3cret\n    token_endpoint: http://127.0.0.1:9/token",
        "",
    )
    .await;
    let response = check_basic(&app, "alice", "wonderland").await;
    assert_eq!(response.status(), 503);
    assert!(idp.token_requests().is_empty());
}

#[tokio::test]
async fn an_exchanged_token_that_fails_verification_is_denied_and_exchanged_anew_next_time() {
    let (idp, app) = start(SECRET_BASIC, "").await;
    idp.set_token_claims_patch(json!({"aud": "someone-else"}));
    let response = check_basic(&app, "alice", "wonderland").await;
    assert_eq!(response.status(), 401);
    let challenge = header(&response, "www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    idp.set_token_claims_patch(json!({}));
    assert_eq!(check_basic(&app, "alice", "wonderland").await.status(), 200);
    assert_eq!(idp.token_requests().len(), 2);
}

#[tokio::test]
async fn client_secret_post_sends_the_secret_in_the_form() {
    let (idp, app) = start(
        "    client_auth: client_secret_post\n    client_secret: s3cret",
        "",
    )
    .await;
    assert_eq!(check_basic(&app, "bob", "builder").await.status(), 200);
    let request = &idp.token_requests()[0];
    assert_eq!(request.authorization, None);
    assert_eq!(request.param("client_id"), Some("kong"));
    assert_eq!(request.param("client_secret"), Some("s3cret"));
}

#[tokio::test]
async fn private_key_jwt_sends_an_assertion_the_clients_public_key_verifies() {
    let dir = std::env::temp_dir().join(format!("authgate-pkjwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks: Value = serde_json::from_str(include_str!("fixtures/client_keys.jwks.json")).unwrap();
    let private = jwks["keys"][1].clone(); // ES256, kid test-ec
    let path = dir.join("client.jwk.json");
    std::fs::write(&path, private.to_string()).unwrap();
    let (idp, app) = start(
        &format!(
            "    client_auth: private_key_jwt\n    client_jwk_file: {}",
            path.display()
        ),
        "password_grant: {params: {scope: \"openid api:read\"}}",
    )
    .await;
    assert_eq!(check_basic(&app, "alice", "wonderland").await.status(), 200);
    let request = &idp.token_requests()[0];
    assert_eq!(request.authorization, None);
    assert_eq!(request.param("client_id"), Some("kong"));
    assert_eq!(request.param("scope"), Some("openid api:read"));
    assert_eq!(
        request.param("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let assertion = request.param("client_assertion").unwrap();
    let claims = payload(assertion);
    assert_eq!(claims["iss"], "kong");
    assert_eq!(claims["sub"], "kong");
    assert_eq!(claims["aud"], idp.token_endpoint());
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_signed_by(assertion, &private, "ES256", jsonwebtoken::Algorithm::ES256);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn with_only_the_bearer_method_basic_credentials_are_no_token() {
    let idp = TestIdp::start().await;
    let app = App::start(&common::app::idp_config(&idp, "")).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    let response = check_basic(&app, "alice", "wonderland").await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        header(&response, "www-authenticate").as_deref(),
        Some("Bearer realm=\"authgate\"")
    );
    assert!(idp.token_requests().is_empty());
}

#[tokio::test]
async fn an_issuer_with_only_the_password_method_refuses_its_bearer_tokens() {
    let idp = TestIdp::start().await;
    let yaml = format!(
        "issuers:\n  - issuer: \"{}\"\n    auth_methods: [password]\n    client_id: kong\n    client_secret: s3cret\naudiences: [authgate-test]\n",
        idp.issuer()
    );
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    assert_eq!(check_basic(&app, "alice", "wonderland").await.status(), 200);
    let bearer = app.check(Some(&idp.mint(idp.valid_claims("alice")))).await;
    assert_eq!(bearer.status(), 401);
}

#[tokio::test]
async fn malformed_basic_credentials_are_a_malformed_request() {
    let (idp, app) = start(SECRET_BASIC, "").await;
    for value in [
        "Basic !!!notbase64",
        &format!("Basic {}", STANDARD.encode("no-colon")),
        &format!("Basic {}", STANDARD.encode(":nouser")),
        &format!("Basic {}", STANDARD.encode("ctl\u{1}:x")),
    ] {
        let response = app
            .client
            .get(app.url("/auth"))
            .header("Authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{value}");
    }
    assert!(idp.token_requests().is_empty());
}

#[tokio::test]
async fn ext_authz_grpc_overwrites_the_basic_credentials_with_the_bearer_token() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

    let (_idp, app) = start(SECRET_BASIC, "").await;
    let mut client = AuthorizationClient::new(app.grpc_channel().await);
    let request = common::envoy::envoy_check_headers(
        "/items",
        &[("authorization", basic("alice", "wonderland"))],
    );
    let response = client.check(request).await.unwrap().into_inner();
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
        panic!("not allowed: {response:?}");
    };
    let authorization = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "authorization")
        .expect("the upstream Authorization");
    assert!(authorization.value.starts_with("Bearer "));
    assert_eq!(payload(&authorization.value[7..])["sub"], "alice");
}

#[tokio::test]
async fn a_client_jwk_file_alone_means_private_key_jwt_and_may_hold_a_jwks_of_one_rsa_key() {
    let dir = std::env::temp_dir().join(format!("authgate-pkjwt-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks: Value = serde_json::from_str(include_str!("fixtures/client_keys.jwks.json")).unwrap();
    let private = jwks["keys"][0].clone(); // RS256, kid test-rsa
    let path = dir.join("client.jwks.json");
    std::fs::write(&path, json!({"keys": [private]}).to_string()).unwrap();
    let idp = TestIdp::start().await;
    let yaml = config(
        &idp,
        &format!("    client_jwk_file: {}", path.display()),
        "",
    );
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    assert_eq!(check_basic(&app, "alice", "wonderland").await.status(), 200);
    let request = &idp.token_requests()[0];
    let assertion = request.param("client_assertion").expect("an assertion");
    assert_signed_by(assertion, &private, "RS256", jsonwebtoken::Algorithm::RS256);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Asserts that `assertion` names `alg` and the JWK's `kid` and verifies with its public half.
fn assert_signed_by(assertion: &str, private: &Value, alg: &str, jwt_alg: jsonwebtoken::Algorithm) {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(assertion.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], alg);
    assert_eq!(header["kid"], private["kid"]);
    let mut public = private.clone();
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        public.as_object_mut().unwrap().remove(member);
    }
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(public).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let (input, signature) = assertion.rsplit_once('.').unwrap();
    assert!(jsonwebtoken::crypto::verify(signature, input.as_bytes(), &key, jwt_alg).unwrap());
}
