//! Token sources over real sockets: the cookie and a header of its own (`token.cookie`,
//! `token.custom_header`), per route, on `/auth`, `/envoy/*` and ext_authz gRPC, with
//! `strip_upstream` removing what carried the token where the proxy can be told.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::time::Duration;

use common::app::App;
use common::idp::TestIdp;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

const SOURCES: &str = "token: {cookie: {enabled: true}, custom_header: {enabled: true, name: X-Api-Token, prefix: \"Token \"}, strip_upstream: true}";

async fn start(extra: &str) -> (TestIdp, App) {
    let idp = TestIdp::start().await;
    let app = App::start(&common::app::idp_config(&idp, extra)).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await);
    (idp, app)
}

async fn auth(app: &App, path: &str, headers: &[(&str, String)]) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

fn subject(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-auth-subject")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_cookie_or_a_header_of_its_own_carries_the_token_on_every_http_mouth() {
    let (idp, app) = start(SOURCES).await;
    let token = idp.mint(idp.valid_claims("alice"));
    for path in ["/auth", "/auth/nginx", "/envoy/items"] {
        let cookie = auth(
            &app,
            path,
            &[("cookie", format!("theme=dark; access_token={token}"))],
        )
        .await;
        assert_eq!(cookie.status(), 200, "{path}");
        assert_eq!(subject(&cookie).as_deref(), Some("alice"), "{path}");
        let header = auth(&app, path, &[("x-api-token", format!("Token {token}"))]).await;
        assert_eq!(header.status(), 200, "{path}");
        let bare = auth(&app, path, &[("x-api-token", token.clone())]).await;
        assert_ne!(bare.status(), 200, "{path}: without its prefix");
    }
    // Two sources at once are one token too many.
    let both = auth(
        &app,
        "/auth",
        &[
            ("authorization", format!("Bearer {token}")),
            ("cookie", format!("access_token={token}")),
        ],
    )
    .await;
    assert_eq!(both.status(), 400);
    assert!(
        both.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_request")
    );
}

#[tokio::test]
async fn sources_are_off_unless_enabled_and_a_route_may_have_its_own() {
    let (idp, app) = start(
        "routes:\n  - {path_prefix: /legacy, token: {header: false, cookie: {enabled: true, name: session}}}",
    )
    .await;
    let token = idp.mint(idp.valid_claims("alice"));
    let cookie = |name: &str| ("cookie", format!("{name}={token}"));
    let at = |path: &str| ("x-forwarded-uri", path.to_owned());
    // The top level reads the header only.
    assert_eq!(
        auth(&app, "/auth", &[at("/api"), cookie("access_token")])
            .await
            .status(),
        401
    );
    assert_eq!(
        auth(&app, "/auth", &[at("/api"), cookie("session")])
            .await
            .status(),
        401
    );
    // The route reads its cookie and not the header.
    assert_eq!(
        auth(&app, "/auth", &[at("/legacy/x"), cookie("session")])
            .await
            .status(),
        200
    );
    let header = ("authorization", format!("Bearer {token}"));
    assert_eq!(
        auth(&app, "/auth", &[at("/legacy/x"), header.clone()])
            .await
            .status(),
        401
    );
    assert_eq!(
        auth(&app, "/auth", &[at("/api"), header]).await.status(),
        200
    );
}

async fn grpc_check(
    app: &App,
    headers: &[(&str, String)],
) -> envoy_types::pb::envoy::service::auth::v3::OkHttpResponse {
    let mut client = AuthorizationClient::new(app.grpc_channel().await);
    let request = common::envoy::envoy_check_headers("/items", headers);
    let response = client.check(request).await.unwrap().into_inner();
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not allowed: {other:?}"),
    }
}

#[tokio::test]
async fn ext_authz_grpc_reads_both_sources_and_strip_upstream_takes_the_token_out() {
    let (idp, app) = start(SOURCES).await;
    let token = idp.mint(idp.valid_claims("alice"));
    // The token cookie is taken out of the Cookie header; the other cookies stay.
    let ok = grpc_check(
        &app,
        &[(
            "cookie",
            format!("theme=dark; access_token={token}; lang=en"),
        )],
    )
    .await;
    let cookie = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == "cookie")
        .map(|h| h.value.clone());
    assert_eq!(cookie.as_deref(), Some("theme=dark; lang=en"));
    assert!(!ok.headers_to_remove.iter().any(|h| h == "cookie"));
    // Alone, it takes the Cookie header with it.
    let ok = grpc_check(&app, &[("cookie", format!("access_token={token}"))]).await;
    assert!(ok.headers_to_remove.iter().any(|h| h == "cookie"), "{ok:?}");
    // The header of its own is removed.
    let ok = grpc_check(&app, &[("x-api-token", format!("Token {token}"))]).await;
    assert!(
        ok.headers_to_remove.iter().any(|h| h == "x-api-token"),
        "{ok:?}"
    );
    assert!(!ok.headers_to_remove.iter().any(|h| h == "cookie"));
}
