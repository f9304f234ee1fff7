//! The gRPC port over real sockets: Envoy ext_authz v3 `Check` (the response table of DESIGN.md
//! as `CheckResponse`s, owned-header and token removal), `authgate.v1.TokenService/Verify`,
//! `grpc.health.v1` and server reflection, each driven by its generated client as Envoy,
//! a backend, a probe or grpcurl would.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use authgate::grpc::pb::VerifyRequest;
use authgate::grpc::pb::token_service_client::TokenServiceClient;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::app::{App, eventually, idp_config};
use common::idp::TestIdp;
use common::metrics::metric;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, HeaderValueOption, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue};
use serde_json::json;
use tonic::Code;
use tonic::codegen::tokio_stream;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const READY_LIMIT: Duration = Duration::from_secs(5);

const EXT_AUTHZ: &str = "envoy.service.auth.v3.Authorization";
const TOKEN_SERVICE: &str = "authgate.v1.TokenService";
const HEALTH: &str = "grpc.health.v1.Health";

/// A started IdP and authgate trusting it; `extra` is appended to the YAML.
async fn start(extra: &str) -> (TestIdp, App) {
    App::with_idp(extra).await
}

async fn authz(app: &App) -> AuthorizationClient<Channel> {
    AuthorizationClient::new(app.grpc_channel().await)
}

async fn tokens(app: &App) -> TokenServiceClient<Channel> {
    TokenServiceClient::new(app.grpc_channel().await)
}

async fn health(app: &App) -> HealthClient<Channel> {
    HealthClient::new(app.grpc_channel().await)
}

/// What Envoy sends for `method https://api.example.com{path}` from 10.0.0.7 with these
/// (lower-case) request headers.
fn envoy_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "10.0.0.7".to_owned(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(51234)),
                        ..SocketAddress::default()
                    })),
                }),
                ..Peer::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: "api.example.com".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    headers,
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    }
}

/// `GET {path}`, with `Authorization: Bearer {token}` when given.
fn get(path: &str, token: Option<&str>) -> CheckRequest {
    match token {
        Some(token) => envoy_request(
            "GET",
            path,
            &[("authorization", &format!("Bearer {token}"))],
        ),
        None => envoy_request("GET", path, &[]),
    }
}

/// Sends a Check; the RPC itself must succeed whatever the decision.
async fn check(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> CheckResponse {
    match client.check(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => panic!("Check failed as an RPC (a deny must be a CheckResponse): {status}"),
    }
}

fn code(response: &CheckResponse) -> Code {
    Code::from(
        response
            .status
            .as_ref()
            .expect("a CheckResponse status")
            .code,
    )
}

fn ok_response(response: &CheckResponse) -> &OkHttpResponse {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected an ok_response, got {other:?}"),
    }
}

fn denied_response(response: &CheckResponse) -> &DeniedHttpResponse {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("expected a denied_response, got {other:?}"),
    }
}

fn header_option<'a>(
    headers: &'a [HeaderValueOption],
    name: &str,
) -> Option<&'a HeaderValueOption> {
    headers
        .iter()
        .find(|h| h.header.as_ref().is_some_and(|h| h.key == name))
}

fn header<'a>(headers: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
    header_option(headers, name)
        .and_then(|h| h.header.as_ref())
        .map(|h| h.value.as_str())
}

fn removes(ok: &OkHttpResponse, name: &str) -> bool {
    ok.headers_to_remove.iter().any(|h| h == name)
}

/// Asserts a deny with this gRPC code and HTTP status that hands the upstream no identity.
fn assert_denied(response: &CheckResponse, grpc: Code, http: i32, context: &str) {
    assert_eq!(code(response), grpc, "{context}: {response:?}");
    let denied = denied_response(response);
    assert_eq!(
        denied.status.as_ref().map(|s| s.code),
        Some(http),
        "{context}"
    );
    for name in ["x-auth-subject", "x-auth-issuer"] {
        assert!(
            header(&denied.headers, name).is_none(),
            "{context}: a deny carries {name}"
        );
    }
    assert!(
        response.dynamic_metadata.is_none(),
        "{context}: a deny carries identity metadata"
    );
}

fn challenge(response: &CheckResponse) -> &str {
    header(&denied_response(response).headers, "www-authenticate").unwrap_or_default()
}

fn string_field<'a>(fields: &'a Struct, name: &str) -> Option<&'a str> {
    match fields.fields.get(name).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn string_list(value: Option<&PbValue>) -> Option<Vec<&str>> {
    match value.and_then(|v| v.kind.as_ref()) {
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.as_str()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A valid token of `subject` whose claims are changed by `edit` before signing.
fn mint(idp: &TestIdp, subject: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut claims = idp.valid_claims(subject);
    edit(&mut claims);
    idp.mint(claims)
}

async fn health_status(client: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap_or_else(|status| panic!("health check of {service:?}: {status}"))
        .into_inner();
    ServingStatus::try_from(response.status).expect("a known serving status")
}

// ----------------------------------------------------------------------------------------------
// ext_authz Check: allow
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_allowed_check_sets_claim_headers_with_overwrite_and_identity_metadata() {
    let (idp, app) = start("").await;
    let token = mint(&idp, "alice", |c| c["scope"] = json!("read write"));
    let mut client = authz(&app).await;

    let response = check(&mut client, get("/items?page=2", Some(&token))).await;
    assert_eq!(code(&response), Code::Ok, "{response:?}");
    let ok = ok_response(&response);
    for (name, value) in [
        ("x-auth-subject", "alice".to_owned()),
        ("x-auth-issuer", idp.issuer()),
    ] {
        let option = header_option(&ok.headers, name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", ok.headers));
        assert_eq!(option.header.as_ref().unwrap().value, value, "{name}");
        // A client-sent X-Auth-Subject must be replaced, never kept beside ours.
        assert_eq!(
            option.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            "{name}"
        );
    }
    assert!(
        !removes(ok, "x-auth-subject"),
        "a set header is also removed"
    );
    assert!(
        !removes(ok, "authorization"),
        "the token is stripped by default"
    );

    let metadata = response
        .dynamic_metadata
        .as_ref()
        .expect("identity metadata on an allow");
    assert_eq!(string_field(metadata, "subject"), Some("alice"));
    assert_eq!(
        string_field(metadata, "issuer"),
        Some(idp.issuer().as_str())
    );
    assert_eq!(
        string_list(metadata.fields.get("scopes")),
        Some(vec!["read", "write"])
    );
}

#[tokio::test]
async fn every_client_spelling_of_an_owned_header_is_removed_whatever_its_separators() {
    // Envoy lower-cases names but keeps `.` and `_`: `X.Auth.Subject` arrives as
    // `x.auth.subject`, and an upstream that folds separators reads it as x-auth-subject.
    let (idp, app) = start("").await;
    let mut client = authz(&app).await;
    let token = idp.mint(idp.valid_claims("alice"));
    let auth = format!("Bearer {token}");
    let response = check(
        &mut client,
        envoy_request(
            "GET",
            "/api",
            &[
                ("authorization", &auth),
                ("x.auth.subject", "admin"),
                ("x-auth.subject", "admin"),
                ("x_auth-issuer", "https://evil.example"),
                ("x-auth-subjects", "not an alias"),
            ],
        ),
    )
    .await;
    assert_eq!(code(&response), Code::Ok);
    let ok = ok_response(&response);
    assert_eq!(header(&ok.headers, "x-auth-subject"), Some("alice"));
    for alias in [
        "x.auth.subject",
        "x-auth.subject",
        "x_auth-issuer",
        "x_auth_subject",
        "x.auth.issuer",
    ] {
        assert!(removes(ok, alias), "{alias}: {:?}", ok.headers_to_remove);
    }
    assert!(
        !removes(ok, "x-auth-subjects"),
        "{:?}",
        ok.headers_to_remove
    );
    assert!(
        !removes(ok, "x-auth-subject"),
        "set by overwrite, not removed"
    );
}

#[tokio::test]
async fn an_allow_removes_owned_headers_without_a_value_and_every_underscore_spelling() {
    let extra = "routes: [{path_prefix: /public, action: anonymous}]\n\
                 claim_headers:\n  - {claim: sub, header: X-Auth-Subject}\n  - {claim: email, header: X-Auth-Email}";
    let (idp, app) = start(extra).await;
    let mut client = authz(&app).await;

    // A token without `email`: the subject is set, a client's X-Auth-Email must not pass.
    let token = idp.mint(idp.valid_claims("alice"));
    let response = check(&mut client, get("/api", Some(&token))).await;
    assert_eq!(code(&response), Code::Ok);
    let ok = ok_response(&response);
    assert_eq!(header(&ok.headers, "x-auth-subject"), Some("alice"));
    assert!(header(&ok.headers, "x-auth-email").is_none());
    assert!(removes(ok, "x-auth-email"), "{:?}", ok.headers_to_remove);
    assert!(!removes(ok, "x-auth-subject"), "{:?}", ok.headers_to_remove);
    // Underscore spellings reach CGI-style upstreams as the same header: always removed.
    assert!(removes(ok, "x_auth_subject"), "{:?}", ok.headers_to_remove);
    assert!(removes(ok, "x_auth_email"), "{:?}", ok.headers_to_remove);

    // Anonymous: no identity at all, so every owned header goes.
    let response = check(
        &mut client,
        envoy_request(
            "GET",
            "/public/logo.png",
            &[("x-auth-subject", "admin"), ("x_auth_subject", "admin")],
        ),
    )
    .await;
    assert_eq!(code(&response), Code::Ok);
    let ok = ok_response(&response);
    assert!(ok.headers.is_empty(), "{:?}", ok.headers);
    for name in [
        "x-auth-subject",
        "x-auth-email",
        "x_auth_subject",
        "x_auth_email",
    ] {
        assert!(
            removes(ok, name),
            "{name} not in {:?}",
            ok.headers_to_remove
        );
    }
    assert!(response.dynamic_metadata.is_none());
}

#[tokio::test]
async fn with_strip_upstream_an_allow_removes_the_authorization_header_that_carried_the_token() {
    let (idp, app) = start("token: {strip_upstream: true}").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let mut client = authz(&app).await;

    let response = check(&mut client, get("/items", Some(&token))).await;
    assert_eq!(code(&response), Code::Ok);
    let ok = ok_response(&response);
    assert!(removes(ok, "authorization"), "{:?}", ok.headers_to_remove);
    assert!(ok.query_parameters_to_remove.is_empty());
    assert_eq!(header(&ok.headers, "x-auth-subject"), Some("alice"));
}

#[tokio::test]
async fn with_strip_upstream_an_allow_removes_the_query_parameter_that_carried_the_token() {
    let (idp, app) = start("token: {strip_upstream: true, query: {enabled: true}}").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let mut client = authz(&app).await;

    let response = check(
        &mut client,
        get(&format!("/items?page=2&access_token={token}"), None),
    )
    .await;
    assert_eq!(code(&response), Code::Ok, "{response:?}");
    let ok = ok_response(&response);
    assert_eq!(ok.query_parameters_to_remove, ["access_token"]);
    assert!(
        !removes(ok, "authorization"),
        "the token was not in the header: {:?}",
        ok.headers_to_remove
    );
    assert_eq!(header(&ok.headers, "x-auth-subject"), Some("alice"));
}

#[tokio::test]
async fn without_strip_upstream_the_token_reaches_the_upstream_untouched() {
    let (idp, app) = start("token: {query: {enabled: true}}").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let mut client = authz(&app).await;

    for (context, request) in [
        ("header token", get("/items", Some(&token))),
        (
            "query token",
            get(&format!("/items?access_token={token}"), None),
        ),
    ] {
        let response = check(&mut client, request).await;
        assert_eq!(code(&response), Code::Ok, "{context}");
        let ok = ok_response(&response);
        assert!(
            !removes(ok, "authorization"),
            "{context}: {:?}",
            ok.headers_to_remove
        );
        assert!(ok.query_parameters_to_remove.is_empty(), "{context}");
    }
}

// ----------------------------------------------------------------------------------------------
// ext_authz Check: denies
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_check_without_a_token_is_unauthenticated_with_a_bare_bearer_challenge() {
    let (_idp, app) = start("").await;
    let mut client = authz(&app).await;

    let response = check(&mut client, get("/items", None)).await;
    assert_denied(&response, Code::Unauthenticated, 401, "no token");
    assert_eq!(challenge(&response), r#"Bearer realm="authgate""#);

    // Another scheme is no token either.
    let response = check(
        &mut client,
        envoy_request("GET", "/items", &[("authorization", "Basic YWxpY2U6cHc=")]),
    )
    .await;
    assert_denied(&response, Code::Unauthenticated, 401, "basic");
    assert_eq!(challenge(&response), r#"Bearer realm="authgate""#);
}

#[tokio::test]
async fn a_tampered_token_is_unauthenticated_with_invalid_token() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    // Same header and signature, a payload that now speaks for someone else.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&idp.valid_claims("admin")).unwrap());
    let tampered = parts.join(".");
    let mut client = authz(&app).await;

    let response = check(&mut client, get("/items", Some(&tampered))).await;
    assert_denied(&response, Code::Unauthenticated, 401, "tampered");
    assert!(
        challenge(&response).contains(r#"error="invalid_token""#),
        "{}",
        challenge(&response)
    );

    let response = check(&mut client, get("/items", Some(&token))).await;
    assert_eq!(code(&response), Code::Ok, "the untampered token");
}

#[tokio::test]
async fn two_tokens_in_one_check_are_an_invalid_argument_with_a_400() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let mut client = authz(&app).await;

    // Envoy joins repeated headers with a comma in `headers`.
    let joined = format!("Bearer {token},Bearer {token}");
    let response = check(
        &mut client,
        envoy_request("GET", "/items", &[("authorization", &joined)]),
    )
    .await;
    assert_denied(&response, Code::InvalidArgument, 400, "joined header");
    assert!(
        challenge(&response).contains(r#"error="invalid_request""#),
        "{}",
        challenge(&response)
    );

    // With `encode_raw_headers` Envoy sends `header_map` instead, one entry per header line.
    let mut request = get("/items", None);
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    let line = HeaderValue {
        key: "authorization".to_owned(),
        value: String::new(),
        raw_value: format!("Bearer {token}").into_bytes(),
    };
    http.header_map = Some(HeaderMap {
        headers: vec![line.clone(), line],
    });
    let response = check(&mut client, request).await;
    assert_denied(
        &response,
        Code::InvalidArgument,
        400,
        "two header_map lines",
    );
}

#[tokio::test]
async fn a_token_without_a_required_scope_is_permission_denied_with_insufficient_scope() {
    let (idp, app) = start("routes: [{path_prefix: /admin, require: {scopes: [admin]}}]").await;
    let reader = mint(&idp, "alice", |c| c["scope"] = json!("read write"));
    let admin = mint(&idp, "alice", |c| c["scope"] = json!("read admin"));
    let mut client = authz(&app).await;

    let response = check(&mut client, get("/admin/users", Some(&reader))).await;
    assert_denied(&response, Code::PermissionDenied, 403, "reader on /admin");
    assert!(
        challenge(&response).contains(r#"error="insufficient_scope""#),
        "{}",
        challenge(&response)
    );
    assert!(challenge(&response).contains(r#"scope="admin""#));

    let response = check(&mut client, get("/admin/users", Some(&admin))).await;
    assert_eq!(code(&response), Code::Ok, "admin on /admin");
}

#[tokio::test]
async fn unavailable_keys_are_a_503_deny_with_retry_after_and_not_an_rpc_error() {
    let idp = TestIdp::start().await;
    let token = idp.mint(idp.valid_claims("alice"));
    let yaml = idp_config(&idp, "limits: {check_deadline: 100ms}");
    idp.close().await;
    let app = App::start(&yaml).await;
    let mut client = authz(&app).await;

    let started = Instant::now();
    let response = check(&mut client, get("/items", Some(&token))).await;
    assert_denied(&response, Code::Unavailable, 503, "keys unavailable");
    let retry_after = header(&denied_response(&response).headers, "retry-after")
        .expect("retry-after on an unavailable deny");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s > 0),
        "retry-after {retry_after:?}"
    );
    // Envoy's default ext_authz timeout is 200 ms: the answer must come before it.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn malformed_check_requests_are_invalid_argument_denies_and_the_server_keeps_serving() {
    let (idp, app) = start("limits: {max_header_bytes: 8192}").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let mut client = authz(&app).await;

    let no_http = {
        let mut request = get("/items", Some(&token));
        request
            .attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http = None;
        request
    };
    let padding = "a".repeat(16 * 1024);
    let oversized = envoy_request(
        "GET",
        "/items",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-padding", &padding),
        ],
    );
    for (context, request) in [
        ("no attributes", CheckRequest { attributes: None }),
        ("no http", no_http),
        ("empty path", get("", Some(&token))),
        ("header map over max_header_bytes", oversized),
    ] {
        let response = check(&mut client, request).await;
        assert_denied(&response, Code::InvalidArgument, 400, context);
        assert!(
            challenge(&response).contains(r#"error="invalid_request""#),
            "{context}: {}",
            challenge(&response)
        );
    }

    let response = check(&mut client, get("/items", Some(&token))).await;
    assert_eq!(code(&response), Code::Ok, "after the malformed checks");
    assert_eq!(
        header(&ok_response(&response).headers, "x-auth-subject"),
        Some("alice")
    );
}

// ----------------------------------------------------------------------------------------------
// TokenService
// ----------------------------------------------------------------------------------------------

fn verify_request(token: &str) -> VerifyRequest {
    VerifyRequest {
        token: token.to_owned(),
        audiences: Vec::new(),
        scopes: Vec::new(),
        client_certificate: String::new(),
    }
}

#[tokio::test]
async fn verify_returns_the_identity_claims_and_headers_of_a_valid_token() {
    let (idp, app) = start("").await;
    let mut claims = idp.valid_claims("alice");
    claims["scope"] = json!("read write");
    let exp = claims["exp"].as_i64().unwrap();
    let token = idp.mint(claims);

    let answer = tokens(&app)
        .await
        .verify(verify_request(&token))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.reason, "valid_token");
    assert_eq!(answer.error, "");
    assert_eq!(answer.subject, "alice");
    assert_eq!(answer.issuer, idp.issuer());
    assert_eq!(answer.expires_at, exp);
    assert_eq!(answer.scopes, ["read", "write"]);
    let claims = answer.claims.as_ref().expect("claims of a valid token");
    assert_eq!(string_field(claims, "sub"), Some("alice"));
    assert_eq!(string_field(claims, "aud"), Some("authgate-test"));
    assert_eq!(
        answer.headers.get("x-auth-subject").map(String::as_str),
        Some("alice")
    );
    assert_eq!(answer.headers.get("x-auth-issuer"), Some(&idp.issuer()));
}

#[tokio::test]
async fn verify_answers_an_expired_token_as_not_allowed_with_invalid_token() {
    let (idp, app) = start("").await;
    let token = mint(&idp, "alice", |c| {
        let now = c["iat"].as_i64().unwrap();
        // Past the default 30 s leeway.
        c["exp"] = json!(now - 120);
        c["iat"] = json!(now - 600);
        c["nbf"] = json!(now - 600);
    });

    let answer = tokens(&app)
        .await
        .verify(verify_request(&token))
        .await
        .expect("a denial is an answer, not an RPC error")
        .into_inner();
    assert!(!answer.allowed);
    assert_eq!(answer.reason, "expired");
    assert_eq!(answer.error, "invalid_token");
    assert_eq!(answer.subject, "", "a denial carries no identity");
    assert!(answer.claims.is_none(), "a denial carries no claims");
    assert!(answer.headers.is_empty());
}

#[tokio::test]
async fn verify_takes_the_token_it_is_given_whatever_the_http_token_sources() {
    // A valid config for proxies that send tokens in the query only; Verify has no header
    // and no query, only the token.
    let (idp, app) = start("token: {header: false, query: {enabled: true}}").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let answer = tokens(&app)
        .await
        .verify(verify_request(&token))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.subject, "alice");

    // And a string that merely looks like a header is not unwrapped into a token.
    let answer = tokens(&app)
        .await
        .verify(verify_request(&format!("Bearer {token}")))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.allowed);
    assert_eq!(answer.reason, "malformed_token");
    assert_eq!(answer.error, "invalid_token");
}

#[tokio::test]
async fn verify_audiences_replace_the_configured_ones() {
    let (idp, app) = start("").await;
    let configured = idp.mint(idp.valid_claims("alice"));
    let other = mint(&idp, "alice", |c| c["aud"] = json!("billing-api"));
    let mut client = tokens(&app).await;
    let with_audience = |token: &str| VerifyRequest {
        audiences: vec!["billing-api".to_owned()],
        ..verify_request(token)
    };

    let answer = client
        .verify(with_audience(&configured))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.allowed, "the configured audience still counted");
    assert_eq!(answer.reason, "wrong_audience");
    assert_eq!(answer.error, "invalid_token");

    let answer = client
        .verify(with_audience(&other))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.allowed, "{answer:?}");

    // Without per-request audiences, the configured ones apply.
    let answer = client
        .verify(verify_request(&other))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.allowed);
    assert_eq!(answer.reason, "wrong_audience");
}

#[tokio::test]
async fn verify_denies_a_token_without_the_requested_scopes() {
    let (idp, app) = start("").await;
    let token = mint(&idp, "alice", |c| c["scope"] = json!("read write"));
    let mut client = tokens(&app).await;
    let with_scopes = |scopes: &[&str]| VerifyRequest {
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..verify_request(&token)
    };

    let answer = client
        .verify(with_scopes(&["read", "admin"]))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.allowed);
    assert_eq!(answer.reason, "insufficient_scope");
    assert_eq!(answer.error, "insufficient_scope");

    let answer = client
        .verify(with_scopes(&["read", "write"]))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.allowed, "{answer:?}");
}

#[tokio::test]
async fn verify_never_skips_verification_because_of_an_anonymous_route() {
    let (idp, app) = start("routes: [{action: anonymous}]").await;
    let mut client = tokens(&app).await;

    for (token, reason, error) in [
        ("garbage", "malformed_token", "invalid_token"),
        ("not.a.jwt", "malformed_token", "invalid_token"),
        ("", "empty_token", "invalid_request"),
    ] {
        let answer = client
            .verify(verify_request(token))
            .await
            .unwrap()
            .into_inner();
        assert!(
            !answer.allowed,
            "{token:?} allowed through an anonymous route"
        );
        assert_eq!(answer.reason, reason, "{token:?}");
        assert_eq!(answer.error, error, "{token:?}");
    }

    // The same route lets a Check through without any token: the rule itself is in force.
    let response = check(&mut authz(&app).await, get("/items", None)).await;
    assert_eq!(code(&response), Code::Ok);

    let token = idp.mint(idp.valid_claims("alice"));
    let answer = client
        .verify(verify_request(&token))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.allowed);
    assert_eq!(
        answer.subject, "alice",
        "a verified identity, not an anonymous pass"
    );
}

// ----------------------------------------------------------------------------------------------
// Health, reflection, metrics
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn grpc_health_is_not_serving_while_the_idp_is_unreachable() {
    let idp = TestIdp::start().await;
    let yaml = idp_config(&idp, "");
    idp.close().await;
    let app = App::start(&yaml).await;
    let mut client = health(&app).await;

    // The very first answer already counts: a probe must never see SERVING without keys.
    for service in ["", EXT_AUTHZ, TOKEN_SERVICE] {
        assert_eq!(
            health_status(&mut client, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    assert_eq!(app.readyz().await, 503);
    // Live and answering, just not ready; and still not ready on a later probe.
    assert!(
        !eventually(Duration::from_millis(500), || {
            let mut client = client.clone();
            async move { health_status(&mut client, "").await == ServingStatus::Serving }
        })
        .await,
        "SERVING with an unreachable IdP"
    );
}

#[tokio::test]
async fn grpc_health_turns_serving_once_the_key_set_is_loaded() {
    let idp = TestIdp::start().await;
    idp.set_down(true);
    let app = App::start(&idp_config(
        &idp,
        "keys: {retry_initial: 100ms, retry_max: 200ms}",
    ))
    .await;
    let mut client = health(&app).await;
    assert_eq!(
        health_status(&mut client, "").await,
        ServingStatus::NotServing
    );

    idp.set_down(false);
    let serving = eventually(READY_LIMIT, || {
        let mut client = client.clone();
        async move { health_status(&mut client, "").await == ServingStatus::Serving }
    })
    .await;
    assert!(
        serving,
        "not SERVING within {READY_LIMIT:?} of the IdP coming back"
    );
    for service in [EXT_AUTHZ, TOKEN_SERVICE] {
        assert_eq!(
            health_status(&mut client, service).await,
            ServingStatus::Serving,
            "{service}"
        );
    }
    assert_eq!(app.readyz().await, 200);
}

#[tokio::test]
async fn grpc_health_turns_not_serving_as_soon_as_shutdown_begins() {
    let grace = Duration::from_secs(1);
    let idp = TestIdp::start().await;
    let mut app = App::start(&idp_config(&idp, "shutdown: {grace: 1s}")).await;
    let mut client = health(&app).await;
    let serving = eventually(READY_LIMIT, || {
        let mut client = client.clone();
        async move { health_status(&mut client, "").await == ServingStatus::Serving }
    })
    .await;
    assert!(serving, "never SERVING");
    let token = idp.mint(idp.valid_claims("alice"));
    let mut checks = authz(&app).await;

    let stopped_at = Instant::now();
    app.begin_stop();
    let not_serving = eventually(Duration::from_millis(500), || {
        let mut client = client.clone();
        async move { health_status(&mut client, "").await == ServingStatus::NotServing }
    })
    .await;
    assert!(not_serving, "still SERVING after shutdown began");
    assert_eq!(
        health_status(&mut client, EXT_AUTHZ).await,
        ServingStatus::NotServing
    );
    // Not serving means "send no new traffic", not "refuse": checks are still answered.
    let response = check(&mut checks, get("/items", Some(&token))).await;
    assert_eq!(code(&response), Code::Ok, "a check during the grace period");
    assert!(
        stopped_at.elapsed() < grace,
        "the probes above ran past the grace period"
    );
}

async fn reflection_v1(app: &App, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(app.grpc_channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection stream")
        .into_inner();
    answers
        .message()
        .await
        .expect("reflection answer")
        .expect("one reflection answer")
        .message_response
        .expect("a reflection message")
}

#[tokio::test]
async fn reflection_v1_lists_ext_authz_token_service_health_and_itself() {
    let (_idp, app) = start("").await;
    let MessageResponse::ListServicesResponse(list) =
        reflection_v1(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a list_services answer");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        EXT_AUTHZ,
        TOKEN_SERVICE,
        HEALTH,
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }

    // What `grpcurl describe` needs: the files that define the services.
    for symbol in [EXT_AUTHZ, TOKEN_SERVICE] {
        match reflection_v1(
            &app,
            MessageRequest::FileContainingSymbol(symbol.to_owned()),
        )
        .await
        {
            MessageResponse::FileDescriptorResponse(files) => {
                assert!(!files.file_descriptor_proto.is_empty(), "{symbol}");
            }
            other => panic!("{symbol}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn reflection_v1alpha_still_answers_older_tools() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as ReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Client;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as Request;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as Response;

    let (_idp, app) = start("").await;
    let mut client = Client::new(app.grpc_channel().await);
    let request = ReflectionRequest {
        host: String::new(),
        message_request: Some(Request::ListServices(String::new())),
    };
    let answer = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection stream")
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("one answer");
    let Some(Response::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list_services answer: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&EXT_AUTHZ), "{names:?}");
    assert!(names.contains(&TOKEN_SERVICE), "{names:?}");
}

#[tokio::test]
async fn grpc_checks_and_verifies_are_counted_by_frontend_in_decision_metrics() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let mut client = authz(&app).await;
    assert_eq!(
        code(&check(&mut client, get("/items", Some(&token))).await),
        Code::Ok
    );
    assert_eq!(
        code(&check(&mut client, get("/items", None)).await),
        Code::Unauthenticated
    );
    let mut verifier = tokens(&app).await;
    assert!(
        verifier
            .verify(verify_request(&token))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    assert!(
        !verifier
            .verify(verify_request("garbage"))
            .await
            .unwrap()
            .into_inner()
            .allowed
    );

    // The recorder is process-wide and other tests here count too: lower bounds only.
    let text = app.metrics().await;
    for series in [
        r#"authgate_decisions_total{frontend="grpc",result="allow",reason="valid_token"}"#,
        r#"authgate_decisions_total{frontend="grpc",result="deny",reason="missing_token"}"#,
        r#"authgate_decisions_total{frontend="token_service",result="allow",reason="valid_token"}"#,
        r#"authgate_decisions_total{frontend="token_service",result="deny",reason="malformed_token"}"#,
        r#"authgate_decision_duration_seconds_count{frontend="grpc"}"#,
        r#"authgate_decision_duration_seconds_count{frontend="token_service"}"#,
    ] {
        let value = metric(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(value >= 1.0, "{series} = {value}");
    }
    assert!(!text.contains(&token), "token text in /metrics");
}

/// Sends pre-encoded bytes as a CheckRequest and decodes the CheckResponse, so a test can put
/// what no well-behaved client would (invalid UTF-8) on the wire.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Default)]
struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = CheckResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<CheckResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::default())
    }
}

#[tokio::test]
async fn a_check_request_with_invalid_utf8_is_a_deny_not_an_rpc_error() {
    let (idp, app) = start("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    // A valid check whose x-client header value is then overwritten in the encoded bytes with
    // bytes that are not UTF-8, as a client's obs-text header can arrive from Envoy.
    let request = envoy_request(
        "GET",
        "/items",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-client", "MARKER"),
        ],
    );
    let mut bytes = prost::Message::encode_to_vec(&request);
    let at = bytes
        .windows(6)
        .position(|w| w == b"MARKER")
        .expect("marker in the encoding");
    bytes[at..at + 6].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1]);

    let mut grpc = tonic::client::Grpc::new(app.grpc_channel().await);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    let response = grpc
        .unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .expect("the RPC itself succeeds")
        .into_inner();
    assert_eq!(code(&response), Code::InvalidArgument);
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("expected a denied response: {response:?}");
    };
    assert_eq!(denied.status.as_ref().map(|s| s.code), Some(400));

    // The same request, well formed, is allowed: the deny came from the bytes alone.
    let mut client = authz(&app).await;
    assert_eq!(code(&check(&mut client, request).await), Code::Ok);
}
