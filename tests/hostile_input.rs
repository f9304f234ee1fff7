//! Hostile input, class by class: every case goes through the decision core (`decide()`) and
//! through every mouth over real sockets (`/auth`, `/auth/nginx`, `/envoy/*` as raw HTTP/1.1
//! bytes, and Envoy ext_authz gRPC), and must get the same reason everywhere (the decision
//! counter moves by exactly one, under that reason), the status of DESIGN.md's response table for
//! that mouth, never an accidental allow, never a 5xx for a client's mistake, and no outbound
//! fetch (only a `kid` the key set lacks may cost one refetch, bounded by the cooldown; a URL a
//! token names is never contacted).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: failing loudly is the point"
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authgate::decision::{
    CheckRequest as CoreRequest, Decider, Decision, DenyReason, Frontend, SystemClock,
};
use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::app::App;
use common::envoy::envoy_check;
use common::idp::{TEST_AUDIENCE, TestIdp, rsa_1024_jwk};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// The decision counter is process-wide: tests in this file take turns so that each one's
/// deltas are its own.
static SERIAL: Mutex<()> = Mutex::const_new(());

const HOST: &str = "api.example.com";

/// Routes of the matrix: an anonymous prefix, a denied subtree, a scoped prefix.
const ROUTES: &str = "routes:\n\
  - {path_prefix: /public, action: anonymous}\n\
  - {path_glob: \"/admin/**\", action: deny}\n\
  - {path_prefix: /scoped, require: {scopes: [admin]}}\n";

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature` from raw JSON texts (so members can repeat), signed by `key`.
fn sign_text(key: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = key.sign_raw(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&signature))
}

/// The token with its signature replaced by `signature`.
fn with_signature(token: &str, signature: &[u8]) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", b64(signature))
}

/// What a mouth must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// This decision label: a deny reason, `valid_token` or `anonymous`.
    Decided(&'static str),
    /// The HTTP/1.1 parser refuses the bytes with this status before authgate decides anything.
    Refused(u16),
}

/// The mouths, with their `frontend` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mouth {
    Core,
    ForwardAuth,
    Nginx,
    EnvoyHttp,
    Grpc,
}

impl Mouth {
    const ALL: [Mouth; 5] = [
        Mouth::Core,
        Mouth::ForwardAuth,
        Mouth::Nginx,
        Mouth::EnvoyHttp,
        Mouth::Grpc,
    ];

    fn label(self) -> &'static str {
        match self {
            Mouth::Core | Mouth::ForwardAuth => "forward_auth",
            Mouth::Nginx => "nginx",
            Mouth::EnvoyHttp => "envoy_http",
            Mouth::Grpc => "grpc",
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    class: &'static str,
    name: String,
    /// `Authorization` header values, one header each, in order.
    auth: Vec<Vec<u8>>,
    /// The original request's path and query.
    uri: String,
    expect: Expect,
    /// Per-mouth answers where a mouth's framing differs.
    except: Vec<(Mouth, Expect)>,
    /// A `kid` the key set lacks: one refetch is allowed (once per cooldown).
    may_fetch: bool,
    /// `DPoP` proof header values, one header each, in order.
    dpop: Vec<Vec<u8>>,
}

impl Case {
    fn expect_at(&self, mouth: Mouth) -> Expect {
        self.except
            .iter()
            .find(|(m, _)| *m == mouth)
            .map_or(self.expect, |(_, e)| *e)
    }
}

/// Status a mouth gives a decision (DESIGN.md's response table), with the gRPC code.
fn status_for(label: &str, mouth: Mouth) -> (u16, i32) {
    if label == "valid_token" || label == "anonymous" {
        return (200, 0);
    }
    let reason = DenyReason::ALL
        .into_iter()
        .find(|r| r.as_str() == label)
        .unwrap_or_else(|| panic!("unknown reason {label}"));
    use authgate::decision::DenyKind::*;
    let (plain, grpc) = match reason.kind() {
        Unauthenticated | InvalidToken | InvalidDpopProof => (401, 16),
        InvalidRequest => (400, 3),
        InsufficientScope | Forbidden => (403, 7),
        Unavailable => (503, 14),
    };
    let status = match (mouth, plain) {
        (Mouth::Nginx, 400 | 503) | (Mouth::EnvoyHttp, 503) => 401,
        _ => plain,
    };
    (status, grpc)
}

/// One raw HTTP/1.1 exchange (`Connection: close`): the status and the response headers.
async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("no answer within 5 s")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn http_request(target: &[u8], forwarded: &[(&str, &[u8])], auth: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"GET ".to_vec();
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(HOST.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in forwarded {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    for value in auth {
        out.extend_from_slice(b"Authorization: ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// Sum of `authgate_decisions_total` for `frontend` (and `reason`, if given).
fn decisions(metrics: &str, frontend: &str, reason: Option<&str>) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("authgate_decisions_total{"))
        .filter(|l| l.contains(&format!("frontend=\"{frontend}\"")))
        .filter(|l| reason.is_none_or(|r| l.contains(&format!("reason=\"{r}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The world the matrix runs in: an IdP with RSA (`k1`), P-256 (`ec1`) and Ed25519 (`ed1`)
/// keys, authgate over it, a `Decider` of its own for the core, and a listener that counts any
/// connection (the URL hostile tokens name).
struct World {
    idp: TestIdp,
    app: App,
    core: Decider,
    grpc: AuthorizationClient<Channel>,
    rsa: SigningKey,
    ec: SigningKey,
    ed: SigningKey,
    attacker: SigningKey,
    bait_url: String,
    bait_hits: Arc<AtomicUsize>,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn matrix_config(issuer: &str) -> String {
    format!(
        "issuers: [{{issuer: \"{issuer}\", dpop: optional, client_id: matrix, client_secret: s, \
         introspection: {{enabled: true, endpoint: \"{issuer}/introspect\"}}}}]\n\
         audiences: [{TEST_AUDIENCE}]\nrequired_typ: [at+jwt]\n\
         token: {{query: {{enabled: true}}}}\nkeys: {{unknown_kid_cooldown: 1h}}\n{ROUTES}"
    )
}

impl World {
    async fn start() -> World {
        let idp = TestIdp::start().await;
        let rsa = idp.current_key();
        let ec = SigningKey::generate(Alg::ES256, "ec1").unwrap();
        let ed = SigningKey::generate(Alg::EdDSA, "ed1").unwrap();
        idp.add_key(ec.clone());
        idp.add_key(ed.clone());
        // Plus a 1024-bit RSA key, which the key set must never take.
        idp.set_raw_jwks(Some(json!({"keys": [
            rsa.public_jwk(), ec.public_jwk(), ed.public_jwk(), rsa_1024_jwk("small"),
        ]})));
        let yaml = matrix_config(&idp.issuer());
        let app = App::start(&yaml).await;
        assert!(app.wait_ready(Duration::from_secs(5)).await, "never ready");

        let config = Arc::new(
            authgate::config::parse_yaml(&yaml)
                .unwrap()
                .validate()
                .unwrap(),
        );
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let issuers = authgate::key_sources(&config, &stop_rx).unwrap();
        let core = Decider::new(config, issuers, Arc::new(SystemClock));

        let bait = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bait_url = format!("http://{}/jwks.json", bait.local_addr().unwrap());
        let bait_hits = Arc::new(AtomicUsize::new(0));
        let hits = Arc::clone(&bait_hits);
        tokio::spawn(async move {
            while let Ok((_conn, _)) = bait.accept().await {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
        let grpc = AuthorizationClient::new(app.grpc_channel().await);
        World {
            idp,
            app,
            core,
            grpc,
            rsa,
            ec,
            ed,
            attacker: SigningKey::generate(Alg::RS256, "k1").unwrap(),
            bait_url,
            bait_hits,
            _stop: stop,
        }
    }

    fn claims(&self) -> Value {
        let mut claims = self.idp.valid_claims("alice");
        claims["scope"] = json!("read");
        claims
    }

    fn claims_with(&self, name: &str, value: Value) -> Value {
        let mut claims = self.claims();
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value;
        }
        claims
    }

    fn token(&self) -> String {
        self.rsa.sign_jwt(&self.claims()).unwrap()
    }

    fn header(&self, key: &SigningKey, extra: Value) -> Value {
        let mut header = json!({"alg": key.alg().as_str(), "typ": "at+jwt", "kid": key.kid()});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                header.as_object_mut().unwrap().remove(k);
            } else {
                header[k] = v.clone();
            }
        }
        header
    }

    /// Signed by `key` under its own header changed by `extra` (a null removes a member).
    fn signed(&self, key: &SigningKey, extra: Value, claims: &Value) -> String {
        key.sign_with_header(&self.header(key, extra), claims)
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.app.metrics().await
    }

    async fn fetches(&self) -> usize {
        self.idp.jwks_fetches() + self.idp.discovery_fetches()
    }

    /// Runs one case through one mouth; returns the label decided (or the refusal status)
    /// and the HTTP status seen.
    async fn run(&mut self, case: &Case, mouth: Mouth) -> (Expect, u16, Option<i32>) {
        let uri = case.uri.as_bytes();
        let http = self.app.http;
        match mouth {
            Mouth::Core => {
                let request = CoreRequest {
                    method: Some("GET".to_owned()),
                    host: Some(HOST.to_owned()),
                    path: Some(case.uri.clone()),
                    authorization: case.auth.clone(),
                    token_headers: case
                        .dpop
                        .iter()
                        .map(|v| (http::HeaderName::from_static("dpop"), v.clone()))
                        .collect(),
                    ..CoreRequest::new(Frontend::ForwardAuth)
                };
                let label = match self.core.decide(&request).await {
                    Decision::Allow(a) if a.identity.is_none() => "anonymous",
                    Decision::Allow(_) => "valid_token",
                    Decision::Deny(d) => d.reason.as_str(),
                };
                (Expect::Decided(label), status_for(label, mouth).0, None)
            }
            Mouth::ForwardAuth | Mouth::Nginx | Mouth::EnvoyHttp => {
                let proofs = case.dpop.iter().map(|v| ("DPoP", v.as_slice()));
                let request = match mouth {
                    Mouth::ForwardAuth => http_request(
                        b"/auth",
                        &[
                            ("X-Forwarded-Method", b"GET".as_slice()),
                            ("X-Forwarded-Host", HOST.as_bytes()),
                            ("X-Forwarded-Uri", uri),
                        ]
                        .into_iter()
                        .chain(proofs)
                        .collect::<Vec<_>>(),
                        &case.auth,
                    ),
                    Mouth::Nginx => http_request(
                        b"/auth/nginx",
                        &[
                            ("X-Original-Method", b"GET".as_slice()),
                            ("X-Original-Host", HOST.as_bytes()),
                            ("X-Original-URI", uri),
                        ]
                        .into_iter()
                        .chain(proofs)
                        .collect::<Vec<_>>(),
                        &case.auth,
                    ),
                    _ => http_request(
                        &[b"/envoy", uri].concat(),
                        &proofs.collect::<Vec<_>>(),
                        &case.auth,
                    ),
                };
                let before = self.metrics().await;
                let (status, _) = raw_http(http, &request).await;
                let after = self.metrics().await;
                let label = mouth.label();
                let moved = decisions(&after, label, None) - decisions(&before, label, None);
                if moved == 0 {
                    return (Expect::Refused(status), status, None);
                }
                assert_eq!(
                    moved, 1,
                    "{}: {mouth:?} counted {moved} decisions",
                    case.name
                );
                let reason = DenyReason::ALL
                    .into_iter()
                    .map(DenyReason::as_str)
                    .chain(["valid_token", "anonymous"])
                    .find(|r| {
                        decisions(&after, label, Some(r)) > decisions(&before, label, Some(r))
                    })
                    .expect("the counter moved under some label");
                (Expect::Decided(reason), status, None)
            }
            Mouth::Grpc => {
                let before = self.metrics().await;
                let response = self
                    .grpc
                    .check(envoy_check_dpop(&case.uri, &case.auth, &case.dpop))
                    .await
                    .unwrap_or_else(|s| panic!("{}: Check failed as an RPC: {s}", case.name))
                    .into_inner();
                let after = self.metrics().await;
                let code = response.status.as_ref().map_or(0, |s| s.code);
                let status = match &response.http_response {
                    Some(HttpResponse::DeniedResponse(d)) => d
                        .status
                        .as_ref()
                        .map_or(0, |s| u16::try_from(s.code).unwrap()),
                    _ => 200,
                };
                let reason = DenyReason::ALL
                    .into_iter()
                    .map(DenyReason::as_str)
                    .chain(["valid_token", "anonymous"])
                    .find(|r| {
                        decisions(&after, "grpc", Some(r)) > decisions(&before, "grpc", Some(r))
                    })
                    .expect("the gRPC decision was counted");
                (Expect::Decided(reason), status, Some(code))
            }
        }
    }
}

fn case(
    class: &'static str,
    name: impl Into<String>,
    auth: Vec<Vec<u8>>,
    expect: &'static str,
) -> Case {
    Case {
        class,
        name: name.into(),
        auth,
        uri: "/api/items".to_owned(),
        expect: Expect::Decided(expect),
        except: Vec::new(),
        may_fetch: false,
        dpop: Vec::new(),
    }
}

fn bearer(token: &str) -> Vec<Vec<u8>> {
    vec![format!("Bearer {token}").into_bytes()]
}

/// `envoy_check` with the `dpop` header values (text ones only, repeats joined with `,` as
/// Envoy joins them).
fn envoy_check_dpop(
    uri: &str,
    auth: &[Vec<u8>],
    dpop: &[Vec<u8>],
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let mut request = envoy_check(uri, auth);
    let values: Vec<String> = dpop
        .iter()
        .filter_map(|v| String::from_utf8(v.clone()).ok())
        .collect();
    if !values.is_empty()
        && let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
    {
        http.headers.insert("dpop".to_owned(), values.join(","));
    }
    request
}

/// Every class of hostile input the issue lists, as cases.
fn cases(w: &World) -> Vec<Case> {
    let good = w.token();
    let claims = w.claims();
    let at = |uri: &str, mut c: Case| {
        c.uri = uri.to_owned();
        c
    };
    let http_refuses = |mut c: Case, status: u16| {
        for m in [Mouth::ForwardAuth, Mouth::Nginx, Mouth::EnvoyHttp] {
            c.except.push((m, Expect::Refused(status)));
        }
        c
    };
    let fetches = |mut c: Case| {
        c.may_fetch = true;
        c
    };
    let mut v = Vec::new();

    // --- transport -------------------------------------------------------------------------
    let t = "transport";
    v.push(case(
        t,
        "valid token (control)",
        bearer(&good),
        "valid_token",
    ));
    v.push(case(t, "no Authorization header", vec![], "missing_token"));
    v.push(case(
        t,
        "empty Authorization header",
        vec![b"".to_vec()],
        "missing_token",
    ));
    v.push(case(
        t,
        "Bearer without a token",
        vec![b"Bearer".to_vec()],
        "empty_token",
    ));
    v.push(case(
        t,
        "Basic credentials",
        vec![b"Basic dXNlcjpwYXNz".to_vec()],
        "missing_token",
    ));
    v.push(case(
        t,
        "Digest with a token-like parameter",
        vec![format!("Digest response=\"{good}\"").into_bytes()],
        "missing_token",
    ));
    v.push(case(
        t,
        "scheme in lower case",
        vec![format!("bearer {good}").into_bytes()],
        "valid_token",
    ));
    v.push(case(
        t,
        "scheme in upper case",
        vec![format!("BEARER {good}").into_bytes()],
        "valid_token",
    ));
    v.push(case(
        t,
        "two Authorization headers, same token",
        [bearer(&good), bearer(&good)].concat(),
        "multiple_tokens",
    ));
    // The adapters split a joined header where a new credential starts (Envoy joins repeats
    // with `,`); the core sees one value, which is not one token.
    let mut joined = case(
        t,
        "two tokens joined in one header",
        vec![format!("Bearer {good}, Bearer {good}").into_bytes()],
        "multiple_tokens",
    );
    // The core alone sees the joined value unsplit: a comma is not part of a b64token.
    joined
        .except
        .push((Mouth::Core, Expect::Decided("malformed_authorization")));
    v.push(joined);
    // Authorization is not a list header: two of them are refused whatever their schemes.
    v.push(case(
        t,
        "Basic and Bearer headers",
        [vec![b"Basic dXNlcjpwYXNz".to_vec()], bearer(&good)].concat(),
        "multiple_tokens",
    ));
    // RFC 9110 §11.4: `auth-scheme [ 1*SP token68 ]`.
    v.push(case(
        t,
        "two spaces after the scheme",
        vec![format!("Bearer  {good}").into_bytes()],
        "valid_token",
    ));
    v.push(case(
        t,
        "tab after the scheme",
        vec![format!("Bearer\t{good}").into_bytes()],
        "malformed_authorization",
    ));
    v.push(case(
        t,
        // RFC 6750 §2.1: `Bearer 1*SP b64token`; a second word is a malformed request.
        "a second word after the token",
        vec![format!("Bearer {good} extra").into_bytes()],
        "malformed_authorization",
    ));
    v.push(case(t, "token in the query", vec![], "valid_token"));
    let last = v.len() - 1;
    v[last].uri = format!("/api/items?access_token={good}");
    v.push(at(
        &format!("/api/items?access_token={good}"),
        case(
            t,
            "header and query token",
            bearer(&good),
            "multiple_tokens",
        ),
    ));
    v.push(at(
        "/api/items?access_token=",
        case(t, "empty query token", vec![], "empty_token"),
    ));
    v.push(at(
        &format!("/api/items?access_token={good}&access_token={good}"),
        case(t, "query token twice", vec![], "multiple_tokens"),
    ));
    v.push(at(
        &format!("/api/items?access_token={}", good.replace('.', "%2E")),
        case(t, "percent-encoded query token", vec![], "valid_token"),
    ));
    v.push(at(
        &format!("/api/items?ACCESS_TOKEN={good}"),
        case(t, "query name in another case", vec![], "missing_token"),
    ));
    v.push(at(
        &format!("/api/items?access_token={}", "%FF".repeat(4)),
        // Not three segments: opaque, so introspected; the IdP knows no such token.
        case(t, "query token of invalid UTF-8", vec![], "inactive_token"),
    ));
    v.push(case(
        t,
        "token over token.max_bytes",
        bearer(&"a".repeat(9000)),
        "token_too_large",
    ));
    v.push(http_refuses(
        Case {
            except: vec![(Mouth::Grpc, Expect::Decided("malformed_check"))],
            ..case(
                t,
                "headers over limits.max_header_bytes",
                bearer(&"a".repeat(40_000)),
                "token_too_large",
            )
        },
        431,
    ));
    v.push(http_refuses(
        case(
            t,
            "control byte in the header",
            vec![format!("Bearer {good}\x01").into_bytes()],
            "malformed_authorization",
        ),
        400,
    ));
    v.push(http_refuses(
        case(
            t,
            "NUL in the header",
            vec![b"Bearer abc\0def".to_vec()],
            "malformed_authorization",
        ),
        400,
    ));
    v.push(case(
        t,
        "invalid UTF-8 in the header",
        vec![b"Bearer \xff\xfe\xfd".to_vec()],
        "malformed_authorization",
    ));
    v.push(case(
        t,
        "non-ASCII UTF-8 token",
        vec!["Bearer t\u{00f6}ken.a.b".as_bytes().to_vec()],
        "malformed_authorization",
    ));

    // --- format ----------------------------------------------------------------------------
    let f = "format";
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    // A token that is not three segments is opaque: introspected (the matrix issuer has
    // introspection on), and the IdP knows no such token.
    v.push(case(f, "one segment", bearer(h), "inactive_token"));
    v.push(case(
        f,
        "two segments",
        bearer(&format!("{h}.{p}")),
        "inactive_token",
    ));
    v.push(case(
        f,
        "four segments",
        bearer(&format!("{good}.{s}")),
        "inactive_token",
    ));
    v.push(case(
        f,
        "five segments (JWE)",
        bearer(&format!("{h}.{p}.{s}.{s}.{s}")),
        "inactive_token",
    ));
    v.push(case(
        f,
        "empty signature",
        bearer(&format!("{h}.{p}.")),
        "malformed_token",
    ));
    v.push(case(
        f,
        "empty header",
        bearer(&format!(".{p}.{s}")),
        "malformed_token",
    ));
    v.push(case(
        f,
        // `=` only ends a b64token; inside one it is a malformed credential.
        "base64 padding",
        bearer(&format!("{h}==.{p}.{s}")),
        "malformed_authorization",
    ));
    v.push(case(
        f,
        "standard base64 alphabet",
        bearer(&format!("{h}.{p}.{}", s.replace(['-', '_'], "+"))),
        "malformed_token",
    ));
    v.push(case(
        f,
        "JSON serialization",
        bearer(&format!("{{\"payload\":\"{p}\",\"signatures\":[]}}")),
        "malformed_authorization",
    ));
    v.push(case(
        f,
        "only dots",
        bearer(&".".repeat(4000)),
        "inactive_token",
    ));
    v.push(case(
        f,
        "segments of dots past max_bytes",
        bearer(&"a.".repeat(5000)),
        "token_too_large",
    ));

    // --- JOSE header -----------------------------------------------------------------------
    let j = "jose header";
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": none, "typ": "at+jwt"}).to_string().as_bytes());
        v.push(case(
            j,
            format!("alg {none} without signature"),
            bearer(&format!("{header}.{p}.")),
            "malformed_token",
        ));
        let signed = w.signed(&w.rsa, json!({"alg": none}), &claims);
        v.push(case(
            j,
            format!("alg {none} with a signature"),
            bearer(&signed),
            "algorithm_not_allowed",
        ));
    }
    // A multi-byte character across the two-byte "HS" check: a panic cargo-fuzz found.
    v.push(case(
        j,
        "alg with a multi-byte character",
        bearer(&w.signed(&w.rsa, json!({"alg": "H\u{e9}256"}), &claims)),
        "algorithm_not_allowed",
    ));
    v.push(case(
        j,
        "unknown alg",
        bearer(&w.signed(&w.rsa, json!({"alg": "RS1024"}), &claims)),
        "algorithm_not_allowed",
    ));
    v.push(case(
        j,
        "missing alg",
        bearer(&w.signed(&w.rsa, json!({"alg": null}), &claims)),
        "algorithm_not_allowed",
    ));
    v.push(case(
        j,
        "numeric alg",
        bearer(&w.signed(&w.rsa, json!({"alg": 256}), &claims)),
        "algorithm_not_allowed",
    ));
    let hs_input = format!(
        "{}.{}",
        b64(w
            .header(&w.rsa, json!({"alg": "HS256"}))
            .to_string()
            .as_bytes()),
        p
    );
    let rsa_jwk = w.rsa.public_jwk().to_string();
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, rsa_jwk.as_bytes()),
        hs_input.as_bytes(),
    );
    v.push(case(
        j,
        "HS256 keyed with the RSA public key",
        bearer(&format!("{hs_input}.{}", b64(mac.as_ref()))),
        "algorithm_not_allowed",
    ));
    v.push(case(
        j,
        "ES256 claimed on the RSA key",
        bearer(&w.signed(&w.ec, json!({"kid": "k1"}), &claims)),
        "key_algorithm_mismatch",
    ));
    v.push(case(
        j,
        "RS256 claimed on the Ed25519 key",
        bearer(&w.signed(&w.rsa, json!({"kid": "ed1"}), &claims)),
        "key_algorithm_mismatch",
    ));
    // The JWK pins `alg: RS256`: the key itself refuses PS256.
    v.push(case(
        j,
        "PS256 claimed on an RS256 key",
        bearer(&w.signed(&w.rsa, json!({"alg": "PS256"}), &claims)),
        "key_algorithm_mismatch",
    ));
    v.push(fetches(case(
        j,
        "unknown kid",
        bearer(&w.signed(&w.rsa, json!({"kid": "nope"}), &claims)),
        "unknown_key",
    )));
    v.push(fetches(case(
        j,
        "absurd kid",
        bearer(&w.signed(&w.rsa, json!({"kid": "../../".repeat(300)}), &claims)),
        "unknown_key",
    )));
    v.push(case(
        j,
        "numeric kid",
        bearer(&w.signed(&w.rsa, json!({"kid": 1}), &claims)),
        "malformed_token",
    ));
    v.push(case(
        j,
        "kid over max_bytes",
        bearer(&w.signed(&w.rsa, json!({"kid": "k".repeat(9000)}), &claims)),
        "token_too_large",
    ));
    v.push(case(
        j,
        "no kid, several keys",
        bearer(&w.signed(&w.rsa, json!({"kid": null}), &claims)),
        "valid_token",
    ));
    v.push(case(
        j,
        "no kid, attacker key",
        bearer(&w.signed(&w.attacker, json!({"kid": null}), &claims)),
        "bad_signature",
    ));
    for member in ["jku", "x5u"] {
        v.push(case(
            j,
            format!("{member} naming a bait URL, attacker key"),
            bearer(&w.signed(&w.attacker, json!({member: w.bait_url}), &claims)),
            "bad_signature",
        ));
        v.push(case(
            j,
            format!("{member} naming a bait URL, right key"),
            bearer(&w.signed(&w.rsa, json!({member: w.bait_url}), &claims)),
            "valid_token",
        ));
    }
    v.push(case(
        j,
        "embedded jwk of the attacker",
        bearer(&w.signed(
            &w.attacker,
            json!({"jwk": w.attacker.public_jwk()}),
            &claims,
        )),
        "bad_signature",
    ));
    v.push(case(
        j,
        "x5c of junk, attacker key",
        bearer(&w.signed(&w.attacker, json!({"x5c": ["MIIBIjANBgkq"]}), &claims)),
        "bad_signature",
    ));
    v.push(case(
        j,
        "crit naming an unknown extension",
        bearer(&w.signed(&w.rsa, json!({"crit": ["exp"], "exp": 1}), &claims)),
        "unsupported_critical_header",
    ));
    v.push(case(
        j,
        "crit b64=false",
        bearer(&w.signed(&w.rsa, json!({"crit": ["b64"], "b64": false}), &claims)),
        "unsupported_critical_header",
    ));
    v.push(case(
        j,
        "crit empty",
        bearer(&w.signed(&w.rsa, json!({"crit": []}), &claims)),
        "unsupported_critical_header",
    ));
    v.push(case(
        j,
        "duplicate alg member",
        bearer(&sign_text(
            &w.rsa,
            "{\"alg\":\"none\",\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"k1\"}",
            &claims.to_string(),
        )),
        "malformed_token",
    ));
    let deep = format!(
        "{{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"k1\",\"x\":{}{}}}",
        "[".repeat(1000),
        "]".repeat(1000)
    );
    v.push(case(
        j,
        "header nested 1000 deep",
        bearer(&sign_text(&w.rsa, &deep, &claims.to_string())),
        "malformed_token",
    ));
    v.push(case(
        j,
        "header not an object",
        bearer(&sign_text(&w.rsa, "[\"RS256\"]", &claims.to_string())),
        "malformed_token",
    ));

    // --- claims ----------------------------------------------------------------------------
    let c = "claims";
    let now = now();
    let with = |name: &str, value: Value| {
        bearer(&w.signed(&w.rsa, json!({}), &w.claims_with(name, value)))
    };
    v.push(case(
        c,
        "exp missing",
        with("exp", Value::Null),
        "missing_expiry",
    ));
    v.push(case(
        c,
        "exp a string",
        with("exp", json!((now + 300).to_string())),
        "malformed_claims",
    ));
    v.push(case(
        c,
        "exp a float",
        with("exp", json!(now as f64 + 300.5)),
        "valid_token",
    ));
    v.push(case(
        c,
        "exp 1e300",
        with("exp", json!(1e300)),
        "malformed_claims",
    ));
    v.push(case(
        c,
        "exp 2^64",
        bearer(&sign_text(
            &w.rsa,
            &w.header(&w.rsa, json!({})).to_string(),
            // serde_json cannot write 2^64 as an integer; a marker is swapped for it (the
            // marker, not the clock, so the swap cannot miss).
            &w.claims_with("exp", json!("EXP-2^64"))
                .to_string()
                .replacen("\"EXP-2^64\"", "18446744073709551616", 1),
        )),
        "malformed_claims",
    ));
    v.push(case(c, "exp negative", with("exp", json!(-1)), "expired"));
    v.push(case(
        c,
        "exp inside the leeway",
        with("exp", json!(now - 10)),
        "valid_token",
    ));
    v.push(case(
        c,
        "exp past the leeway",
        with("exp", json!(now - 60)),
        "expired",
    ));
    v.push(case(
        c,
        "nbf inside the leeway",
        with("nbf", json!(now + 10)),
        "valid_token",
    ));
    v.push(case(
        c,
        "nbf in the future",
        with("nbf", json!(now + 600)),
        "not_yet_valid",
    ));
    v.push(case(
        c,
        "nbf a string",
        with("nbf", json!("soon")),
        "malformed_claims",
    ));
    v.push(case(
        c,
        "iat in the future",
        with("iat", json!(now + 600)),
        "issued_in_future",
    ));
    v.push(case(
        c,
        "iat a bool",
        with("iat", json!(true)),
        "malformed_claims",
    ));
    let iss = w.idp.issuer();
    v.push(case(
        c,
        "iss with a trailing slash",
        with("iss", json!(format!("{iss}/"))),
        "unknown_issuer",
    ));
    v.push(case(
        c,
        "iss in upper case",
        with("iss", json!(iss.to_ascii_uppercase())),
        "unknown_issuer",
    ));
    v.push(case(
        c,
        "iss an array",
        with("iss", json!([iss])),
        "malformed_claims",
    ));
    v.push(case(
        c,
        "iss a number",
        with("iss", json!(1)),
        "malformed_claims",
    ));
    v.push(case(
        c,
        "iss missing",
        with("iss", Value::Null),
        "unknown_issuer",
    ));
    v.push(case(
        c,
        "aud in another case",
        with("aud", json!(TEST_AUDIENCE.to_ascii_uppercase())),
        "wrong_audience",
    ));
    v.push(case(
        c,
        "aud array with ours",
        with("aud", json!(["other", TEST_AUDIENCE])),
        "valid_token",
    ));
    v.push(case(
        c,
        "aud empty array",
        with("aud", json!([])),
        "wrong_audience",
    ));
    v.push(case(
        c,
        "aud a number",
        with("aud", json!(7)),
        "malformed_claims",
    ));
    v.push(case(
        c,
        "aud array with a number",
        with("aud", json!([7, TEST_AUDIENCE])),
        "malformed_claims",
    ));
    v.push(case(
        c,
        "aud missing",
        with("aud", Value::Null),
        "wrong_audience",
    ));
    let header_text = w.header(&w.rsa, json!({})).to_string();
    for payload in ["[]", "\"alice\"", "null", "123", "{"] {
        v.push(case(
            c,
            format!("payload {payload}"),
            bearer(&sign_text(&w.rsa, &header_text, payload)),
            "malformed_token",
        ));
    }
    let dup = claims.to_string().replacen("{", "{\"sub\":\"admin\",", 1);
    v.push(case(
        c,
        "duplicate sub claim",
        bearer(&sign_text(&w.rsa, &header_text, &dup)),
        "malformed_token",
    ));
    v.push(case(
        c,
        "ID token (typ JWT)",
        bearer(&w.signed(&w.rsa, json!({"typ": "JWT"}), &claims)),
        "wrong_token_type",
    ));
    v.push(case(
        c,
        "no typ",
        bearer(&w.signed(&w.rsa, json!({"typ": null}), &claims)),
        "wrong_token_type",
    ));
    v.push(at(
        "/scoped/x",
        case(
            c,
            "scope missing for the route",
            bearer(&good),
            "insufficient_scope",
        ),
    ));

    // --- signatures ------------------------------------------------------------------------
    let s_ = "signatures";
    let sig = URL_SAFE_NO_PAD.decode(s).unwrap();
    v.push(case(
        s_,
        "signature cut by one character",
        bearer(&good[..good.len() - 1]),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "signature cut by three bytes",
        bearer(&with_signature(&good, &sig[..sig.len() - 3])),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "signature extended",
        bearer(&with_signature(
            &good,
            &[sig.as_slice(), &[0, 0, 0]].concat(),
        )),
        "bad_signature",
    ));
    let mut flipped = sig.clone();
    flipped[10] ^= 1;
    v.push(case(
        s_,
        "one signature bit flipped",
        bearer(&with_signature(&good, &flipped)),
        "bad_signature",
    ));
    let forged = format!(
        "{h}.{}.{s}",
        b64(w.claims_with("sub", json!("admin")).to_string().as_bytes())
    );
    v.push(case(
        s_,
        "payload changed under the signature",
        bearer(&forged),
        "bad_signature",
    ));
    let es = w.ec.sign_jwt(&claims).unwrap();
    v.push(case(
        s_,
        "ES256 valid (control)",
        bearer(&es),
        "valid_token",
    ));
    v.push(case(
        s_,
        "ES256 r = s = 0",
        bearer(&with_signature(&es, &[0; 64])),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "ES256 r, s out of range",
        bearer(&with_signature(&es, &[0xff; 64])),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "ES256 signature 63 bytes",
        bearer(&with_signature(
            &es,
            &URL_SAFE_NO_PAD
                .decode(es.rsplit('.').next().unwrap())
                .unwrap()[..63],
        )),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "ES384 claimed on a P-256 key",
        bearer(&w.signed(&w.ec, json!({"alg": "ES384"}), &claims)),
        "key_algorithm_mismatch",
    ));
    let ed = w.ed.sign_jwt(&claims).unwrap();
    let ed_sig = URL_SAFE_NO_PAD
        .decode(ed.rsplit('.').next().unwrap())
        .unwrap();
    v.push(case(
        s_,
        "EdDSA valid (control)",
        bearer(&ed),
        "valid_token",
    ));
    v.push(case(
        s_,
        "EdDSA signature 63 bytes",
        bearer(&with_signature(&ed, &ed_sig[..63])),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "EdDSA signature 65 bytes",
        bearer(&with_signature(&ed, &[ed_sig.as_slice(), &[0]].concat())),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "EdDSA signature zeros",
        bearer(&with_signature(&ed, &[0; 64])),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "RS256 signature zeros",
        bearer(&with_signature(&good, &[0; 256])),
        "bad_signature",
    ));
    v.push(case(
        s_,
        "signed by an attacker key with our kid",
        bearer(&w.attacker.sign_jwt(&claims).unwrap()),
        "bad_signature",
    ));
    v.push(fetches(case(
        s_,
        "kid of a 1024-bit RSA key in the JWKS",
        bearer(&w.signed(&w.rsa, json!({"kid": "small"}), &claims)),
        "unknown_key",
    )));

    // --- forward-auth framing (path rules) --------------------------------------------------
    let r = "framing";
    v.push(at(
        "/public",
        case(r, "anonymous route (control)", vec![], "anonymous"),
    ));
    v.push(at(
        "/admin/x",
        case(r, "denied route (control)", bearer(&good), "route_denied"),
    ));
    v.push(at(
        "/public/../admin/x",
        case(
            r,
            "dot-dot out of the anonymous route",
            vec![],
            "route_denied",
        ),
    ));
    v.push(at(
        "/public/%2e%2e/admin/x",
        case(r, "encoded dot-dot", vec![], "route_denied"),
    ));
    v.push(at(
        "/public/..;/admin/x",
        case(r, "dot-dot-semicolon", vec![], "ambiguous_path"),
    ));
    v.push(at(
        "/admin%2fx",
        case(r, "encoded slash", bearer(&good), "ambiguous_path"),
    ));
    v.push(at(
        "/public%2f..%2fadmin",
        case(
            r,
            "encoded slash in the anonymous route",
            vec![],
            "ambiguous_path",
        ),
    ));
    v.push(at(
        "/public\\..\\admin\\x",
        case(r, "backslashes", vec![], "ambiguous_path"),
    ));
    v.push(at(
        "//admin/x",
        case(r, "doubled slash", bearer(&good), "route_denied"),
    ));
    v.push(at(
        "/./admin/x",
        case(r, "dot segment", bearer(&good), "route_denied"),
    ));
    v.push(at(
        "/public/%00",
        case(r, "encoded NUL", vec![], "ambiguous_path"),
    ));
    v.push(at(
        "/../../admin/x",
        case(r, "dot-dot above the root", bearer(&good), "ambiguous_path"),
    ));
    let mut relative = at(
        "admin/x",
        case(r, "no leading slash", vec![], "ambiguous_path"),
    );
    // `/envoy` + `admin/x` is not an Envoy path at all: the router answers 404 (a deny to Envoy).
    relative
        .except
        .push((Mouth::EnvoyHttp, Expect::Refused(404)));
    v.push(relative);
    let mut absolute = at(
        "http://api.example.com/public",
        case(r, "absolute URI", vec![], "ambiguous_path"),
    );
    absolute
        .except
        .push((Mouth::EnvoyHttp, Expect::Refused(404)));
    v.push(absolute);
    v.push(at(
        "/public?next=/admin/x",
        case(r, "query naming another path", vec![], "anonymous"),
    ));
    let mut non_ascii = at(
        "/public/\u{00e9}",
        case(r, "non-ASCII original URI", vec![], "malformed_check"),
    );
    non_ascii
        .except
        .push((Mouth::EnvoyHttp, Expect::Decided("ambiguous_path")));
    non_ascii
        .except
        .push((Mouth::Grpc, Expect::Decided("ambiguous_path")));
    non_ascii
        .except
        .push((Mouth::Core, Expect::Decided("ambiguous_path")));
    v.push(non_ascii);
    v.extend(dpop_cases(w));
    v.extend(introspection_cases(w));
    v
}

/// DPoP (RFC 9449): tokens bound to the `ec` key's thumbprint, proofs broken in every way a
/// client or an attacker could break one. Every proof here fails before its `jti` would be
/// remembered, so each mouth sees the same case afresh.
fn dpop_cases(w: &World) -> Vec<Case> {
    let d = "dpop";
    let mut bound_claims = w.claims();
    bound_claims["cnf"] = json!({"jkt": common::dpop::jkt(&w.ec)});
    let bound = w.rsa.sign_jwt(&bound_claims).unwrap();
    let unbound = w.token();
    let dpop = |token: &str| vec![format!("DPoP {token}").into_bytes()];
    let ath = common::dpop::ath(&bound);
    let claims = json!({
        "jti": "matrix", "htm": "GET", "htu": "https://evil.example.com/api/items",
        "iat": now(), "ath": ath,
    });
    let header = common::dpop::proof_header(&w.ec);
    let proof = |header: &Value, claims: &Value| w.ec.sign_with_header(header, claims).unwrap();
    let with_header = |name: &str, value: Value| {
        let mut h = header.clone();
        if value.is_null() {
            h.as_object_mut().unwrap().remove(name);
        } else {
            h[name] = value;
        }
        h
    };
    let mut private = header.clone();
    private["jwk"]["d"] = json!("AAAA");
    let with_proofs = |mut c: Case, proofs: Vec<Vec<u8>>| {
        c.dpop = proofs;
        c
    };
    let invalid = "invalid_dpop_proof";
    vec![
        case(d, "bound token as bearer", bearer(&bound), "dpop_required"),
        case(d, "DPoP scheme without a proof", dpop(&bound), invalid),
        case(
            d,
            "DPoP scheme with nothing after it",
            vec![b"DPoP ".to_vec()],
            "empty_token",
        ),
        with_proofs(
            case(
                d,
                "unbound token with the DPoP scheme",
                dpop(&unbound),
                "dpop_unbound_token",
            ),
            vec![proof(&header, &claims).into_bytes()],
        ),
        with_proofs(
            case(d, "proof that is not a JWS", dpop(&bound), invalid),
            vec![b"garbage".to_vec()],
        ),
        with_proofs(
            case(d, "proof for another URI", dpop(&bound), invalid),
            vec![proof(&header, &claims).into_bytes()],
        ),
        with_proofs(
            case(d, "proof naming its key by jku", dpop(&bound), invalid),
            vec![
                proof(
                    &with_header("jku", json!(w.bait_url)),
                    &json!({"jti": "jku", "htm": "GET", "iat": now()}),
                )
                .into_bytes(),
            ],
        ),
        with_proofs(
            case(d, "proof without jwk", dpop(&bound), invalid),
            vec![proof(&with_header("jwk", Value::Null), &claims).into_bytes()],
        ),
        with_proofs(
            case(d, "proof with a private jwk", dpop(&bound), invalid),
            vec![proof(&private, &claims).into_bytes()],
        ),
        with_proofs(
            case(d, "proof with typ JWT", dpop(&bound), invalid),
            vec![proof(&with_header("typ", json!("JWT")), &claims).into_bytes()],
        ),
        with_proofs(
            case(d, "proof with alg none", dpop(&bound), invalid),
            vec![
                format!(
                    "{}.{}.",
                    b64(&serde_json::to_vec(&with_header("alg", json!("none"))).unwrap()),
                    b64(&serde_json::to_vec(&claims).unwrap())
                )
                .into_bytes(),
            ],
        ),
        with_proofs(
            case(d, "proof over max_bytes", dpop(&bound), invalid),
            vec![vec![b'a'; 5000]],
        ),
        with_proofs(
            case(d, "two proofs", dpop(&bound), invalid),
            vec![
                proof(&header, &claims).into_bytes(),
                proof(&header, &claims).into_bytes(),
            ],
        ),
    ]
}

/// Introspection (RFC 7662): opaque tokens whose answers are hostile. The IdP's answers go
/// through the JWT claim checks; none of these is ever allowed.
fn introspection_cases(w: &World) -> Vec<Case> {
    let i = "introspection";
    let opaque = |edit: &dyn Fn(&mut Value)| {
        let mut claims = w.claims();
        edit(&mut claims);
        w.idp.issue_opaque(claims)
    };
    let jkt = common::dpop::jkt(&w.ec);
    vec![
        case(
            i,
            "unknown opaque token",
            bearer("aGVsbG8td29ybGQ"),
            "inactive_token",
        ),
        case(
            i,
            "long unknown opaque token",
            bearer(&"A".repeat(6000)),
            "inactive_token",
        ),
        case(
            i,
            "active, right claims",
            bearer(&opaque(&|_| {})),
            "valid_token",
        ),
        case(
            i,
            "active for another audience",
            bearer(&opaque(&|c| c["aud"] = json!("someone-else"))),
            "wrong_audience",
        ),
        case(
            i,
            "active from another issuer",
            bearer(&opaque(&|c| c["iss"] = json!("https://evil.example.com"))),
            "unknown_issuer",
        ),
        case(
            i,
            "active but expired",
            bearer(&opaque(&|c| c["exp"] = json!(now() - 600))),
            "expired",
        ),
        case(
            i,
            "active with exp as text",
            bearer(&opaque(&|c| c["exp"] = json!("tomorrow"))),
            "malformed_claims",
        ),
        case(
            i,
            "active with a numeric scope",
            bearer(&opaque(&|c| c["scope"] = json!(7))),
            "malformed_claims",
        ),
        case(
            i,
            "active and DPoP-bound, as bearer",
            bearer(&opaque(&|c| c["cnf"] = json!({"jkt": jkt}))),
            "dpop_required",
        ),
        case(
            i,
            "active with cnf that is not an object",
            bearer(&opaque(&|c| c["cnf"] = json!("bound"))),
            "malformed_claims",
        ),
    ]
}

#[tokio::test]
async fn every_hostile_input_class_gets_the_same_fail_closed_answer_from_the_core_and_every_mouth()
{
    let _serial = SERIAL.lock().await;
    let mut w = World::start().await;
    // Warm the core's own key set so the matrix itself costs no fetch.
    let warm = CoreRequest {
        authorization: bearer(&w.token()),
        ..CoreRequest::for_test()
    };
    assert!(matches!(w.core.decide(&warm).await, Decision::Allow(_)));
    let cases = cases(&w);
    let mut failures = Vec::new();
    let mut refetches = 0;
    for case in &cases {
        let fetches_before = w.fetches().await;
        for mouth in Mouth::ALL {
            let expected = case.expect_at(mouth);
            let (got, status, grpc_code) = w.run(case, mouth).await;
            let mut problems = Vec::new();
            if got != expected {
                problems.push(format!("expected {expected:?}, got {got:?}"));
            }
            match got {
                Expect::Decided(label) => {
                    let (want_status, want_code) = status_for(label, mouth);
                    if status != want_status {
                        problems.push(format!("status {status}, table says {want_status}"));
                    }
                    if let Some(code) = grpc_code
                        && code != want_code
                    {
                        problems.push(format!("gRPC code {code}, table says {want_code}"));
                    }
                }
                Expect::Refused(s) if !(400..500).contains(&s) => {
                    problems.push(format!("parser answered {s}, not a 4xx"));
                }
                Expect::Refused(_) => {}
            }
            if status >= 500 && !matches!(got, Expect::Decided(l) if status_for(l, mouth).0 >= 500)
            {
                problems.push(format!("a 5xx ({status}) for a client's mistake"));
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "[{}] {} via {mouth:?}: {}",
                    case.class,
                    case.name,
                    problems.join("; ")
                ));
            }
        }
        let fetched = w.fetches().await - fetches_before;
        if fetched > 0 {
            refetches += fetched;
            if !case.may_fetch {
                failures.push(format!(
                    "[{}] {}: {fetched} key fetches for a case that needs none",
                    case.class, case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases x {} mouths went wrong:\n{}",
        failures.len(),
        cases.len(),
        Mouth::ALL.len(),
        failures.join("\n")
    );
    // Unknown kids: one refetch by the app and one by the core at most, then the cooldown.
    assert!(refetches <= 2, "{refetches} refetches for unknown kids");
    assert_eq!(
        w.bait_hits.load(Ordering::SeqCst),
        0,
        "a URL named in a token was contacted"
    );
    // Every class is there.
    for class in [
        "transport",
        "format",
        "jose header",
        "claims",
        "signatures",
        "framing",
        "dpop",
        "introspection",
    ] {
        assert!(
            cases.iter().filter(|c| c.class == class).count() >= 10,
            "too few {class} cases"
        );
    }
}

/// authgate with the matrix's routes and `extra` YAML, over a fresh IdP.
async fn framing_app(extra: &str) -> (TestIdp, App) {
    let idp = TestIdp::start().await;
    let yaml = format!("{}{extra}\n", matrix_config(&idp.issuer()));
    let app = App::start(&yaml).await;
    assert!(app.wait_ready(Duration::from_secs(5)).await, "never ready");
    (idp, app)
}

/// `/auth` with these forwarded headers; the status and the decision counted for it.
async fn forward_auth(app: &App, forwarded: &[(&str, &[u8])], auth: &[Vec<u8>]) -> (u16, String) {
    let before = app.metrics().await;
    let (status, _) = raw_http(app.http, &http_request(b"/auth", forwarded, auth)).await;
    let after = app.metrics().await;
    let reason = DenyReason::ALL
        .into_iter()
        .map(DenyReason::as_str)
        .chain(["valid_token", "anonymous"])
        .find(|r| {
            decisions(&after, "forward_auth", Some(r)) > decisions(&before, "forward_auth", Some(r))
        })
        .unwrap_or("none")
        .to_owned();
    (status, reason)
}

#[tokio::test]
async fn forwarded_headers_from_a_peer_outside_trusted_proxies_are_ignored_and_never_open_a_route()
{
    let _serial = SERIAL.lock().await;
    // 127.0.0.1 (this test) is not in 10.0.0.0/8.
    let (idp, app) = framing_app("trusted_proxies: [10.0.0.0/8]").await;
    let token = bearer(&idp.mint(idp.valid_claims("alice")));
    let spoofed: [(&str, &[u8]); 3] = [
        ("X-Forwarded-Method", b"GET"),
        ("X-Forwarded-Host", HOST.as_bytes()),
        ("X-Forwarded-Uri", b"/public"),
    ];
    // The anonymous route is not reachable by claiming its path; with the path unknown the
    // route rules cannot be decided at all, token or not.
    assert_eq!(
        forward_auth(&app, &spoofed, &[]).await,
        (400, "malformed_check".to_owned())
    );
    assert_eq!(
        forward_auth(&app, &spoofed, &token).await,
        (400, "malformed_check".to_owned())
    );
    let (status, _) = raw_http(app.http, &http_request(b"/envoy/public", &[], &[])).await;
    assert_eq!(status, 400, "Envoy HTTP path from an untrusted peer");
    let mut grpc = AuthorizationClient::new(app.grpc_channel().await);
    let response = grpc
        .check(envoy_check("/public", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status.map(|s| s.code),
        Some(3),
        "gRPC from an untrusted peer"
    );

    // The same requests from a trusted peer are routed.
    let (idp, app) = framing_app("trusted_proxies: [127.0.0.1, \"::1\"]").await;
    let token = bearer(&idp.mint(idp.valid_claims("alice")));
    assert_eq!(
        forward_auth(&app, &spoofed, &[]).await,
        (200, "anonymous".to_owned())
    );
    let admin: [(&str, &[u8]); 3] = [
        ("X-Forwarded-Method", b"GET"),
        ("X-Forwarded-Host", HOST.as_bytes()),
        ("X-Forwarded-Uri", b"/admin/users"),
    ];
    assert_eq!(
        forward_auth(&app, &admin, &token).await,
        (403, "route_denied".to_owned())
    );
}

#[tokio::test]
async fn a_check_missing_what_route_rules_look_at_is_malformed_never_routed_by_default() {
    let _serial = SERIAL.lock().await;
    let (idp, app) = framing_app("").await;
    let token = bearer(&idp.mint(idp.valid_claims("alice")));
    let method: (&str, &[u8]) = ("X-Forwarded-Method", b"GET");
    let host: (&str, &[u8]) = ("X-Forwarded-Host", HOST.as_bytes());
    let uri: (&str, &[u8]) = ("X-Forwarded-Uri", b"/admin/users");
    for (forwarded, what) in [
        (vec![method, host], "no X-Forwarded-Uri"),
        (
            vec![method, host, ("X-Forwarded-Uri", b"")],
            "empty X-Forwarded-Uri",
        ),
        (vec![], "no forwarded headers at all"),
    ] {
        for auth in [&token[..], &[]] {
            assert_eq!(
                forward_auth(&app, &forwarded, auth).await,
                (400, "malformed_check".to_owned()),
                "{what}"
            );
        }
    }
    // Complete, the same request meets its deny rule.
    assert_eq!(
        forward_auth(&app, &[method, host, uri], &token).await,
        (403, "route_denied".to_owned())
    );
    // nginx: the same rule through /auth/nginx (a 400 there is a 401, nginx's only choices).
    let (status, _) = raw_http(
        app.http,
        &http_request(b"/auth/nginx", &[("X-Original-Method", b"GET")], &token),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn claim_headers_a_client_sends_never_survive_as_identity_in_any_spelling() {
    let _serial = SERIAL.lock().await;
    let (idp, app) = framing_app("").await;
    let token = idp.mint(idp.valid_claims("alice"));
    let forwarded: [(&str, &[u8]); 6] = [
        ("X-Forwarded-Method", b"GET"),
        ("X-Forwarded-Host", HOST.as_bytes()),
        ("X-Forwarded-Uri", b"/api/items"),
        ("X-Auth-Subject", b"admin"),
        ("x_auth_subject", b"admin"),
        ("X-AUTH-SUBJECT", b"admin"),
    ];
    // /auth answers the caller's own identity; the proxy copies it over the client's.
    let (status, headers) = raw_http(
        app.http,
        &http_request(b"/auth", &forwarded, &bearer(&token)),
    )
    .await;
    assert_eq!(status, 200);
    let subjects: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "x-auth-subject")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(subjects, ["alice"]);
    // The anonymous route answers no identity at all, whatever the client sent.
    let anonymous: Vec<(&str, &[u8])> = forwarded
        .iter()
        .map(|&(k, v)| {
            if k == "X-Forwarded-Uri" {
                (k, &b"/public"[..])
            } else {
                (k, v)
            }
        })
        .collect();
    let (status, headers) = raw_http(app.http, &http_request(b"/auth", &anonymous, &[])).await;
    assert_eq!(status, 200);
    assert!(
        !headers.iter().any(|(k, _)| k == "x-auth-subject"),
        "{headers:?}"
    );
    // Envoy HTTP: an owned header is either answered with our value (Envoy overwrites the
    // client's) or named for removal; the underscore spelling is always named.
    for (target, auth, subject) in [
        (&b"/envoy/api/items"[..], bearer(&token), Some("alice")),
        (b"/envoy/public", vec![], None),
    ] {
        let (status, headers) =
            raw_http(app.http, &http_request(target, &forwarded[3..], &auth)).await;
        assert_eq!(status, 200);
        let removed = headers
            .iter()
            .find(|(k, _)| k == "x-envoy-auth-headers-to-remove")
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        let removed: Vec<&str> = removed.split(',').map(str::trim).collect();
        let answered = headers
            .iter()
            .find(|(k, _)| k == "x-auth-subject")
            .map(|(_, v)| v.as_str());
        assert_eq!(answered, subject, "{headers:?}");
        assert!(removed.contains(&"x_auth_subject"), "{removed:?}");
        assert_eq!(
            removed.contains(&"x-auth-subject"),
            subject.is_none(),
            "{removed:?}"
        );
    }
    // gRPC: the underscore spelling removed, ours set with OVERWRITE_IF_EXISTS_OR_ADD.
    let mut grpc = AuthorizationClient::new(app.grpc_channel().await);
    let response = grpc
        .check(envoy_check("/api/items", &bearer(&token)))
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
        panic!("allow expected");
    };
    assert!(
        ok.headers_to_remove.iter().any(|h| h == "x_auth_subject"),
        "{:?}",
        ok.headers_to_remove
    );
    let set: Vec<_> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .filter(|h| h.key == "x-auth-subject")
        .map(|h| h.value.as_str())
        .collect();
    assert_eq!(set, ["alice"]);
}
