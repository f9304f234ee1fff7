//! Fuzz target `token`: the input is one `Authorization` header value (seeds: `Bearer <jwt>`).
//! It goes through the real decision core four ways: as the header of a forward-auth check on a
//! scoped route, as an Envoy-joined header split back into credentials on an unrouted path, as the
//! `access_token` query parameter, and as a bare token on the TokenService path; and straight
//! into `parse_compact` and `split_joined_credentials`. The same bytes are also checked as a
//! DPoP proof (RFC 9449) for a fixed request and access token.
//!
//! Invariants, for any input:
//! - nothing panics;
//! - an allow carries a verified identity whose subject is one a seed token was signed for
//!   (random bytes cannot forge a signature), from a configured issuer, not expired beyond the
//!   leeway, with the route's required scope;
//! - deciding the same check twice gives the same decision (the verified-signature cache changes
//!   nothing but speed);
//! - a parsed JWS has exactly two dots, and its signing input and signature rebuild the token;
//! - splitting joined credentials loses nothing but spaces and tabs around the commas it splits
//!   at, and every credential is trimmed;
//! - a DPoP proof never holds for an access token its `ath` does not name; one that holds
//!   yields its `jwk`'s thumbprint, and holds once only (seeds: `dpop-*`).
#![no_main]

use authgate::token::split_joined_credentials;
use authgate::verify::parse_compact;
use authgate_fuzz::{
    Fixture, SCOPED_PATH, UNROUTED_PATH, bare_token, check_token_decision, envoy_request,
    header_request, query_request,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixture = Fixture::get();

    let scoped = header_request(data, SCOPED_PATH);
    let first = fixture.decide(&scoped);
    check_token_decision(&first, Some("read"));
    assert_eq!(
        first,
        fixture.decide(&scoped),
        "a repeated check decided differently"
    );

    check_token_decision(&fixture.decide(&envoy_request(data, UNROUTED_PATH)), None);

    let token = bare_token(data);
    check_token_decision(
        &fixture.decide(&query_request(token, SCOPED_PATH)),
        Some("read"),
    );

    check_split(data);
    fixture.check_proof(data);

    let Ok(token) = std::str::from_utf8(token) else {
        return;
    };
    check_token_decision(&fixture.verify_token(token), None);
    if let Ok(jws) = parse_compact(token) {
        assert_eq!(token.bytes().filter(|&b| b == b'.').count(), 2);
        assert_eq!(format!("{}.{}", jws.signing_input, jws.signature), token);
        assert!(!jws.signature.is_empty());
    }
});

fn check_split(data: &[u8]) {
    let credentials = split_joined_credentials(data);
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    assert!(!credentials.is_empty(), "no credential out of {data:?}");
    for c in &credentials {
        assert!(
            !c.first().is_some_and(blank) && !c.last().is_some_and(blank),
            "untrimmed credential {c:?}"
        );
    }
    let squeeze =
        |bytes: &[u8]| -> Vec<u8> { bytes.iter().copied().filter(|b| !blank(b)).collect() };
    assert_eq!(
        squeeze(&credentials.join(&b','))[..],
        squeeze(data)[..],
        "splitting lost or added bytes"
    );
}
