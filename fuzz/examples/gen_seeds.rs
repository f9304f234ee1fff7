//! Mints the fuzz keys and the `token` seeds: `cargo run --example gen_seeds` in `fuzz/`.
//!
//! Writes the PUBLIC keys to `fixtures/*-jwks.json` and `seeds/jwks/{idp,other}` (the private
//! keys live only in this process, so every run mints new ones and rewrites every signed seed),
//! the canary, and `seeds/token/*` (one `Authorization` value per file). Before writing, it
//! checks every seed against a decider over the new keys: the expected outcome on the scoped
//! route, and the fuzz invariants on all four ways the target sends it. Signed seeds meant to be
//! denied carry the subject `mallory`, so the fuzzer's invariant catches the day one is allowed.

use std::fs;
use std::path::Path;

use authgate::decision::{Decision, DenyReason};
use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use authgate_fuzz::{
    ALLOWED_SUBJECTS, AUDIENCE, Fixture, HOSTILE_SUBJECT, ISSUER, NOW, OTHER_ISSUER, SCOPED_PATH,
    UNROUTED_PATH, bare_token, check_token_decision, envoy_request, header_request, query_request,
};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The order of P-256, for the high-s twin of an ES256 signature.
const P256_N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

enum Expect {
    Allow(&'static str),
    Deny(DenyReason),
}

struct Keys {
    rsa: SigningKey,
    pss: SigningKey,
    rsa_noalg: SigningKey,
    ec: SigningKey,
    ed: SigningKey,
    other_ec: SigningKey,
    attacker_rsa: SigningKey,
    attacker_ec: SigningKey,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(sub: &str, patch: Value) -> Value {
    let mut base = json!({
        "iss": ISSUER, "sub": sub, "aud": AUDIENCE, "exp": NOW + 3600, "iat": NOW,
        "scope": "read write",
    });
    for (k, v) in patch.as_object().expect("patch is an object") {
        if v.is_null() {
            base.as_object_mut().expect("object").remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn header(key: &SigningKey) -> Value {
    json!({"alg": key.alg().as_str(), "typ": "at+jwt", "kid": key.kid()})
}

/// Signs header and payload given as exact JSON text (duplicates, escapes, whitespace kept).
fn raw(key: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = key.sign_raw(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(signature))
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn parts(token: &str) -> (&str, &str, &str) {
    let (input, signature) = token.rsplit_once('.').expect("three parts");
    let (header, payload) = input.split_once('.').expect("three parts");
    (header, payload, signature)
}

fn high_s(token: &str) -> String {
    let (h, p, s) = parts(token);
    let sig = URL_SAFE_NO_PAD.decode(s).expect("b64");
    let (r, s) = sig.split_at(32);
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = u8::try_from((d + 256) % 256).expect("byte");
    }
    format!("{h}.{p}.{}", b64([r, &out[..]].concat()))
}

fn der_integer(mut v: &[u8]) -> Vec<u8> {
    while v.len() > 1 && v[0] == 0 {
        v = &v[1..];
    }
    let mut out = vec![0x02];
    let pad = v[0] & 0x80 != 0;
    out.push(u8::try_from(v.len() + usize::from(pad)).expect("short"));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
    out
}

fn der_signature(token: &str) -> String {
    let (h, p, s) = parts(token);
    let sig = URL_SAFE_NO_PAD.decode(s).expect("b64");
    let body = [der_integer(&sig[..32]), der_integer(&sig[32..])].concat();
    let mut der = vec![0x30, u8::try_from(body.len()).expect("short")];
    der.extend_from_slice(&body);
    format!("{h}.{p}.{}", b64(der))
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Exact JSON texts signed as they are (duplicates, escapes and whitespace survive).
const H_NONE: &str = r#"{"alg":"none","typ":"at+jwt"}"#;
const H_NONE_CASE: &str = r#"{"alg":"nOnE","kid":"rsa-1","typ":"at+jwt"}"#;
const H_NONE_ESCAPED: &str = r#"{"alg":"\u006eone","kid":"rsa-1","typ":"at+jwt"}"#;
const H_HS256: &str = r#"{"alg":"HS256","typ":"at+jwt","kid":"rsa-1"}"#;
const H_RS_ON_EC: &str = r#"{"alg":"RS256","kid":"ec-1","typ":"at+jwt"}"#;
const H_ES_ON_RSA: &str = r#"{"alg":"ES256","kid":"rsa-1","typ":"at+jwt"}"#;
const H_PS_ON_RS: &str = r#"{"alg":"PS256","kid":"rsa-1","typ":"at+jwt"}"#;
const H_DUP_ALG: &str = r#"{"alg":"RS256","kid":"rsa-1","typ":"at+jwt","alg":"none"}"#;
const H_CRIT_EXP: &str = r#"{"alg":"RS256","kid":"rsa-1","typ":"at+jwt","crit":["exp"],"exp":1}"#;
const H_CRIT_EMPTY: &str = r#"{"alg":"RS256","kid":"rsa-1","typ":"at+jwt","crit":[]}"#;
const H_CRIT_B64: &str =
    r#"{"alg":"RS256","kid":"rsa-1","typ":"at+jwt","b64":false,"crit":["b64"]}"#;
const H_KID_ARRAY: &str = r#"{"alg":"RS256","kid":["rsa-1"],"typ":"at+jwt"}"#;
const H_TYP_VARIANT: &str = r#"{"alg":"RS256","kid":"rsa-1","typ":"application/AT+JWT"}"#;
const H_WHITESPACE: &str = "{ \"alg\" : \"RS256\" ,\n \"kid\" : \"rsa-1\" , \"typ\" : \"at+jwt\" }";
const H_ESCAPES: &str = r#"{"alg":"RS\u0032\u0035\u0036","kid":"rsa\u002d1","typ":"at\u002bjwt"}"#;

/// A payload as exact JSON text: `exp` and `extra` (`,"name":value...`) are spliced in as given.
fn payload(iss: &str, sub: &str, exp: &str, extra: &str) -> String {
    format!(
        r#"{{"iss":"{iss}","sub":"{sub}","aud":"{AUDIENCE}","exp":{exp},"scope":"read"{extra}}}"#
    )
}

/// Seeds and the decision each must get on the scoped route.
#[derive(Default)]
struct Seeds(Vec<(&'static str, Vec<u8>, Expect)>);

impl Seeds {
    fn allow(&mut self, name: &'static str, value: impl Into<Vec<u8>>, subject: &'static str) {
        self.0.push((name, value.into(), Expect::Allow(subject)));
    }

    fn deny(&mut self, name: &'static str, value: impl Into<Vec<u8>>, reason: DenyReason) {
        self.0.push((name, value.into(), Expect::Deny(reason)));
    }
}

fn seeds(k: &Keys) -> Vec<(&'static str, Vec<u8>, Expect)> {
    use DenyReason::*;
    let mal = |patch: Value| claims(HOSTILE_SUBJECT, patch);
    let sign = |key: &SigningKey, c: &Value| bearer(&key.sign_jwt(c).expect("sign"));
    let signed_with =
        |key: &SigningKey, h: Value, c: &Value| bearer(&key.sign_with_header(&h, c).expect("sign"));
    let roles = json!({"realm_access": {"roles": ["admin", "user"]}});
    let alice = k.rsa.sign_jwt(&claims("alice", roles)).expect("sign");
    let bob_claims = json!({"aud": ["other", AUDIENCE], "scope": "read", "nbf": NOW - 10});
    let bob = k.ec.sign_jwt(&claims("bob", bob_claims)).expect("sign");
    let mallory = k.rsa.sign_jwt(&mal(json!({}))).expect("sign");
    let (ah, ap, asig) = parts(&alice);
    let (bh, bp, _) = parts(&bob);
    let (_, mp, _) = parts(&mallory);
    let mal_payload = mal(json!({})).to_string();
    let rsa_header = header(&k.rsa).to_string();
    let exp = (NOW + 60).to_string();
    let hs_secret = serde_json::to_vec(&k.rsa.public_jwk()).expect("jwk");
    let hs_input = format!("{}.{mp}", b64(H_HS256));
    let hs_key = hmac::Key::new(hmac::HMAC_SHA256, &hs_secret);
    let hs_sig = hmac::sign(&hs_key, hs_input.as_bytes());
    let attacker_jwk = k.attacker_rsa.public_jwk();
    let mut s = Seeds::default();

    // Tokens that verify. Every subject here is in ALLOWED_SUBJECTS.
    s.allow("valid-rs256-alice", bearer(&alice), "alice");
    s.allow("valid-es256-aud-array-bob", bearer(&bob), "bob");
    let carol = claims("carol", json!({"scope": null, "scp": ["read", "write"]}));
    s.allow("valid-eddsa-scp-array-carol", sign(&k.ed, &carol), "carol");
    let dave = claims("dave", json!({"iss": OTHER_ISSUER, "role": "ops"}));
    s.allow("valid-other-issuer-dave", sign(&k.other_ec, &dave), "dave");
    s.allow(
        "valid-ps256-erin",
        sign(&k.pss, &claims("erin", json!({}))),
        "erin",
    );
    let frank = claims("frank", json!({}));
    s.allow(
        "valid-rs512-jwk-without-alg-frank",
        sign(&k.rsa_noalg, &frank),
        "frank",
    );
    let no_kid = json!({"alg": "RS256", "typ": "at+jwt"});
    let grace = claims("grace", json!({}));
    s.allow(
        "valid-no-kid-grace",
        signed_with(&k.rsa, no_kid, &grace),
        "grace",
    );
    let fractional = format!(",\"iat\":{}.5", NOW - 1);
    let heidi = payload(ISSUER, "heidi", &format!("{}.5", NOW + 3600), &fractional);
    let heidi = bearer(&raw(&k.rsa, H_TYP_VARIANT, &heidi));
    s.allow("valid-fractional-dates-typ-variant-heidi", heidi, "heidi");
    let ivan = claims("ivan", json!({"exp": NOW - 10, "iat": NOW + 10}));
    s.allow("valid-within-leeway-ivan", sign(&k.ec, &ivan), "ivan");
    let judy = claims("judy", json!({})).to_string();
    s.allow(
        "valid-header-whitespace-judy",
        bearer(&raw(&k.rsa, H_WHITESPACE, &judy)),
        "judy",
    );
    let ken = claims("ken", json!({})).to_string();
    s.allow(
        "valid-unicode-escapes-ken",
        bearer(&raw(&k.rsa, H_ESCAPES, &ken)),
        "ken",
    );
    let leo = claims("leo", json!({"scope": "write"}));
    s.deny(
        "valid-no-read-scope-leo",
        sign(&k.ed, &leo),
        InsufficientScope,
    );
    let zoe = ALLOWED_SUBJECTS[12];
    s.allow(
        "valid-control-bytes-subject",
        sign(&k.rsa, &claims(zoe, json!({}))),
        zoe,
    );
    let injection =
        json!({"scope": "read x\r\nX-Injected: 1", "realm_access": {"roles": "x\u{0}y"}});
    let injection = claims("alice", injection);
    s.allow(
        "valid-claim-header-injection-alice",
        sign(&k.ec, &injection),
        "alice",
    );
    let oversized = claims(
        "alice",
        json!({"scope": format!("read {}", "a".repeat(5000))}),
    );
    s.allow(
        "valid-oversized-claim-header-alice",
        sign(&k.ed, &oversized),
        "alice",
    );
    let deep = payload(ISSUER, "alice", &exp, &format!(",\"ext\":{}", nested(100)));
    s.allow(
        "valid-deep-claim-alice",
        bearer(&raw(&k.rsa, &rsa_header, &deep)),
        "alice",
    );
    let far = claims("alice", json!({"exp": i64::MAX}));
    s.allow("valid-exp-i64-max-alice", sign(&k.rsa, &far), "alice");
    // ECDSA signatures are malleable: (r, n - s) verifies too, for the same claims.
    s.allow("valid-es256-high-s-bob", bearer(&high_s(&bob)), "bob");
    s.allow(
        "valid-lowercase-scheme-spaces",
        format!("bearer    {alice}   "),
        "alice",
    );
    s.allow("valid-uppercase-scheme", format!("BEARER {bob}"), "bob");

    // Envoy joins repeated headers with commas.
    let joined = format!("Bearer {alice},Bearer {bob}");
    s.deny("joined-two-bearers", joined, MalformedToken);
    let joined = format!("Bearer {alice}, Basic dXNlcjpwYXNz");
    s.deny("joined-bearer-basic", joined, MalformedToken);

    // alg none, symmetric, and algorithm confusion.
    let none = format!("{}.{mp}.", b64(H_NONE));
    s.deny("alg-none-empty-signature", bearer(&none), MalformedToken);
    let none = format!("{}.{mp}.{asig}", b64(H_NONE));
    s.deny(
        "alg-none-with-signature",
        bearer(&none),
        AlgorithmNotAllowed,
    );
    let none = raw(&k.rsa, H_NONE_CASE, &mal_payload);
    s.deny("alg-none-mixed-case", bearer(&none), AlgorithmNotAllowed);
    let none = raw(&k.rsa, H_NONE_ESCAPED, &mal_payload);
    s.deny(
        "alg-none-unicode-escape",
        bearer(&none),
        AlgorithmNotAllowed,
    );
    let hs = format!("{hs_input}.{}", b64(hs_sig.as_ref()));
    s.deny(
        "alg-hs256-public-key-as-secret",
        bearer(&hs),
        AlgorithmNotAllowed,
    );
    let swap = raw(&k.rsa, H_RS_ON_EC, &mal_payload);
    s.deny("alg-rs256-on-ec-kid", bearer(&swap), KeyAlgorithmMismatch);
    let swap = raw(&k.ec, H_ES_ON_RSA, &mal_payload);
    s.deny("alg-es256-on-rsa-kid", bearer(&swap), KeyAlgorithmMismatch);
    let swap = raw(&k.pss, H_PS_ON_RS, &mal_payload);
    s.deny(
        "alg-ps256-on-rs256-key",
        bearer(&swap),
        KeyAlgorithmMismatch,
    );
    let other_rs = mal(json!({"iss": OTHER_ISSUER}));
    s.deny(
        "alg-other-issuer-rs256",
        sign(&k.rsa, &other_rs),
        AlgorithmNotAllowed,
    );

    // Duplicate members: serde_json alone would keep the last one.
    let dup = raw(&k.rsa, H_DUP_ALG, &mal_payload);
    s.deny("duplicate-alg-header", bearer(&dup), MalformedToken);
    let dup_sub = format!(",\"sub\":\"{HOSTILE_SUBJECT}\"");
    let dup = raw(
        &k.rsa,
        &rsa_header,
        &payload(ISSUER, "alice", &exp, &dup_sub),
    );
    s.deny("duplicate-sub-claim", bearer(&dup), MalformedToken);
    let dup_sub = format!(",\"s\\u0075b\":\"{HOSTILE_SUBJECT}\"");
    let dup = raw(
        &k.rsa,
        &rsa_header,
        &payload(ISSUER, "alice", &exp, &dup_sub),
    );
    s.deny("duplicate-escaped-sub-claim", bearer(&dup), MalformedToken);
    let dup_iss = format!(",\"iss\":\"{ISSUER}\"");
    let evil = payload("https://evil.test", HOSTILE_SUBJECT, &exp, &dup_iss);
    let dup = raw(&k.rsa, &rsa_header, &evil);
    s.deny("duplicate-iss-claim", bearer(&dup), MalformedToken);

    // crit, and headers that carry or point at keys: keys only ever come from configuration.
    let crit = raw(&k.rsa, H_CRIT_EXP, &mal_payload);
    s.deny("crit-exp", bearer(&crit), UnsupportedCritical);
    let crit = raw(&k.rsa, H_CRIT_EMPTY, &mal_payload);
    s.deny("crit-empty", bearer(&crit), UnsupportedCritical);
    let crit = raw(&k.rsa, H_CRIT_B64, &mal_payload);
    s.deny("crit-b64-false", bearer(&crit), UnsupportedCritical);
    let jku = json!({"alg": "RS256", "typ": "at+jwt", "kid": "attacker",
        "jku": "https://evil.test/jwks.json"});
    let jku = signed_with(&k.attacker_rsa, jku, &mal(json!({})));
    s.deny("jku-attacker-key", jku, UnknownKey);
    let jwk = json!({"alg": "RS256", "typ": "at+jwt", "jwk": attacker_jwk});
    let jwk = signed_with(&k.attacker_rsa, jwk, &mal(json!({})));
    s.deny("jwk-embedded-attacker-key", jwk, BadSignature);
    let x5u = json!({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1",
        "x5u": "https://evil.test/cert.pem"});
    let x5u = signed_with(&k.attacker_ec, x5u, &mal(json!({})));
    s.deny("x5u-attacker-key-known-kid", x5u, BadSignature);
    let traversal = json!({"alg": "RS256", "typ": "at+jwt", "kid": "../../../../dev/null"});
    let traversal = signed_with(&k.attacker_rsa, traversal, &mal(json!({})));
    s.deny("kid-path-traversal", traversal, UnknownKey);
    let kid = raw(&k.rsa, H_KID_ARRAY, &mal_payload);
    s.deny("kid-not-a-string", bearer(&kid), MalformedToken);

    // Keys are scoped per issuer.
    s.deny(
        "kid-of-other-issuer",
        sign(&k.other_ec, &mal(json!({}))),
        UnknownKey,
    );
    let cross = mal(json!({"iss": OTHER_ISSUER}));
    s.deny(
        "other-issuer-signed-by-idp-key",
        sign(&k.ec, &cross),
        UnknownKey,
    );

    // Claims.
    let m = |patch: Value| sign(&k.rsa, &mal(patch));
    s.deny(
        "unknown-issuer",
        m(json!({"iss": "https://evil.test"})),
        UnknownIssuer,
    );
    let slash = json!({"iss": format!("{ISSUER}/")});
    s.deny("issuer-trailing-slash", m(slash), UnknownIssuer);
    s.deny(
        "issuer-not-a-string",
        m(json!({"iss": [ISSUER]})),
        MalformedClaims,
    );
    s.deny("issuer-missing", m(json!({"iss": null})), UnknownIssuer);
    let jwt_typ = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"});
    let jwt_typ = signed_with(&k.rsa, jwt_typ, &mal(json!({})));
    s.deny("typ-jwt", jwt_typ, WrongTokenType);
    let no_typ = json!({"alg": "RS256", "kid": "rsa-1"});
    let no_typ = signed_with(&k.rsa, no_typ, &mal(json!({})));
    s.deny("typ-missing", no_typ, WrongTokenType);
    s.deny("expired", m(json!({"exp": NOW - 31})), Expired);
    s.deny(
        "expired-at-leeway-edge",
        m(json!({"exp": NOW - 30})),
        Expired,
    );
    s.deny("exp-missing", m(json!({"exp": null})), MissingExpiry);
    let exp_string = json!({"exp": (NOW + 3600).to_string()});
    s.deny("exp-string", m(exp_string), MalformedClaims);
    s.deny("exp-huge-float", m(json!({"exp": 1e300})), MalformedClaims);
    s.deny(
        "exp-above-i64",
        m(json!({"exp": u64::MAX})),
        MalformedClaims,
    );
    s.deny("exp-bool", m(json!({"exp": true})), MalformedClaims);
    s.deny("nbf-future", m(json!({"nbf": NOW + 31})), NotYetValid);
    s.deny("iat-future", m(json!({"iat": NOW + 31})), IssuedInFuture);
    s.deny("aud-wrong", m(json!({"aud": "other"})), WrongAudience);
    s.deny("aud-missing", m(json!({"aud": null})), WrongAudience);
    s.deny("aud-empty-array", m(json!({"aud": []})), WrongAudience);
    let aud_number = json!({"aud": [AUDIENCE, 1]});
    s.deny("aud-array-with-number", m(aud_number), MalformedClaims);
    let array = raw(&k.rsa, &rsa_header, "[]");
    s.deny("payload-array", bearer(&array), MalformedToken);
    let string = raw(&k.rsa, &rsa_header, "\"sub\"");
    s.deny("payload-json-string", bearer(&string), MalformedToken);
    let bom = raw(&k.rsa, &format!("\u{feff}{rsa_header}"), &mal_payload);
    s.deny("header-with-bom", bearer(&bom), MalformedToken);
    let deep = format!(
        r#"{{"alg":"RS256","kid":"rsa-1","typ":"at+jwt","x":{}}}"#,
        nested(200)
    );
    let deep = raw(&k.rsa, &deep, &mal_payload);
    s.deny("deep-json-header", bearer(&deep), MalformedToken);

    // Signatures.
    s.deny(
        "tampered-payload",
        bearer(&format!("{ah}.{mp}.{asig}")),
        BadSignature,
    );
    let foreign = format!("{bh}.{bp}.{asig}");
    s.deny("signature-of-another-token", bearer(&foreign), BadSignature);
    let truncated = &alice[..alice.len() - 5];
    s.deny("signature-truncated", bearer(truncated), BadSignature);
    s.deny(
        "signature-padded",
        bearer(&format!("{alice}==")),
        MalformedToken,
    );
    let std_b64 = format!("{ah}.{ap}.{}+/", &asig[..asig.len() - 2]);
    s.deny("signature-std-base64", bearer(&std_b64), MalformedToken);
    s.deny(
        "es256-der-signature",
        bearer(&der_signature(&bob)),
        BadSignature,
    );
    let large = m(json!({"pad": "x".repeat(9000)}));
    s.deny("token-too-large", large, TokenTooLarge);

    // Shapes.
    let flattened = json!({"protected": ah, "payload": mp, "header": {"kid": "rsa-1"},
        "signature": asig});
    let flattened = bearer(&flattened.to_string());
    s.deny("json-serialization-flattened", flattened, MalformedToken);
    let general = json!({"payload": mp, "signatures": [{"protected": ah, "signature": asig}]});
    let general = bearer(&general.to_string());
    s.deny("json-serialization-general", general, MalformedToken);
    s.deny("many-dots", bearer(&".".repeat(8000)), MalformedToken);
    s.deny(
        "many-dots-over-size",
        bearer(&".".repeat(16000)),
        TokenTooLarge,
    );
    s.deny("many-segments", bearer(&"ab.".repeat(2700)), MalformedToken);
    let jwe = format!("{ah}.{mp}.aaaa.bbbb.{asig}");
    s.deny("jwe-five-segments", bearer(&jwe), MalformedToken);
    s.deny(
        "empty-segments",
        bearer(&format!("{ah}..{asig}")),
        MalformedToken,
    );
    s.deny(
        "two-segments",
        bearer(&format!("{ah}.{mp}")),
        MalformedToken,
    );

    // Authorization header shapes.
    s.deny("empty", Vec::new(), MissingToken);
    s.deny("bearer-only", "Bearer", EmptyToken);
    s.deny("bearer-spaces-only", "Bearer    ", EmptyToken);
    s.deny("basic", "Basic dXNlcjpwYXNz", MissingToken);
    s.deny(
        "bearer-without-space",
        format!("Bearer{alice}"),
        MissingToken,
    );
    s.deny(
        "bearer-tab",
        format!("Bearer\t{alice}"),
        MalformedAuthorization,
    );
    let nul = format!("Bearer {ah}\0.{ap}.{asig}");
    s.deny("bearer-nul", nul, MalformedAuthorization);
    let del = format!("Bearer {ah}\x7f.{ap}.{asig}");
    s.deny("bearer-del", del, MalformedAuthorization);
    let non_ascii = [b"Bearer ".as_slice(), b"\xff\xfe", alice.as_bytes()].concat();
    s.deny("bearer-non-ascii", non_ascii, MalformedAuthorization);
    s.deny("bearer-comma-inside", "Bearer a,b", MalformedToken);
    s.0
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gen_key = |alg, kid: &str| SigningKey::generate(alg, kid).expect("key");
    let keys = Keys {
        rsa: gen_key(Alg::RS256, "rsa-1"),
        pss: gen_key(Alg::PS256, "rsa-pss"),
        rsa_noalg: gen_key(Alg::RS512, "rsa-noalg"),
        ec: gen_key(Alg::ES256, "ec-1"),
        ed: gen_key(Alg::EdDSA, "ed-1"),
        other_ec: gen_key(Alg::ES256, "ec-b"),
        attacker_rsa: gen_key(Alg::RS256, "attacker"),
        attacker_ec: gen_key(Alg::ES256, "attacker-ec"),
    };
    let mut noalg = keys.rsa_noalg.public_jwk();
    noalg.as_object_mut().expect("object").remove("alg");
    let idp = json!({"keys": [
        keys.rsa.public_jwk(), keys.pss.public_jwk(), noalg, keys.ec.public_jwk(),
        keys.ed.public_jwk(),
    ]});
    let other = json!({"keys": [keys.other_ec.public_jwk()]});
    let idp = serde_json::to_string_pretty(&idp).expect("json") + "\n";
    let other = serde_json::to_string_pretty(&other).expect("json") + "\n";

    let fixture = Fixture::new(&idp, &other);
    let seeds = seeds(&keys);
    let mut failures = 0;
    for (name, value, expect) in &seeds {
        let got = fixture.decide(&header_request(value, SCOPED_PATH));
        let ok = match (expect, &got) {
            (Expect::Allow(sub), Decision::Allow(a)) => {
                a.identity.as_ref().and_then(|i| i.subject()) == Some(*sub)
            }
            (Expect::Deny(reason), Decision::Deny(d)) => d.reason == *reason,
            _ => false,
        };
        if !ok {
            failures += 1;
            eprintln!("seed {name}: unexpected {got:?}");
        }
        check_token_decision(&got, Some("read"));
        check_token_decision(&fixture.decide(&envoy_request(value, UNROUTED_PATH)), None);
        check_token_decision(
            &fixture.decide(&query_request(bare_token(value), SCOPED_PATH)),
            Some("read"),
        );
        if let Ok(token) = std::str::from_utf8(bare_token(value)) {
            check_token_decision(&fixture.verify_token(token), None);
        }
    }
    assert_eq!(
        failures, 0,
        "{failures} seeds decided unexpectedly; nothing written"
    );

    let seed_dir = dir.join("seeds/token");
    fs::create_dir_all(&seed_dir).expect("mkdir");
    for entry in fs::read_dir(&seed_dir).expect("read seeds/token").flatten() {
        let name = entry.file_name();
        // Minimised crash reproducers are kept: they are not signed with these keys anyway.
        if !name.to_string_lossy().starts_with("regression-") {
            fs::remove_file(entry.path()).expect("remove old seed");
        }
    }
    for (name, value, _) in &seeds {
        fs::write(seed_dir.join(name), value).expect("write seed");
    }
    // The jwks target starts from the real key sets too (its other seeds are static shapes).
    fs::write(dir.join("seeds/jwks/idp"), &idp).expect("write jwks seed");
    fs::write(dir.join("seeds/jwks/other"), &other).expect("write jwks seed");
    fs::write(dir.join("fixtures/idp-jwks.json"), idp).expect("write jwks");
    fs::write(dir.join("fixtures/other-jwks.json"), other).expect("write jwks");
    let canary = seeds
        .iter()
        .find(|(name, ..)| *name == "valid-rs256-alice")
        .map(|(_, value, _)| value.clone())
        .expect("canary seed");
    fs::write(dir.join("fixtures/canary-authorization.txt"), canary).expect("write canary");
    println!(
        "wrote {} token seeds, fixtures/idp-jwks.json, fixtures/other-jwks.json and the canary",
        seeds.len()
    );
}
