//! Fuzz target `credentials`: what a proxy passes about the client besides a bearer token. The
//! input is, at once, an `Authorization` value (HTTP Basic credentials for the password grant)
//! and a client certificate as proxies send it (URL-encoded PEM, PEM, Traefik's base64 DER, an
//! Envoy `x-forwarded-client-cert` value, a hex SHA-256).
//!
//! Invariants, read off `token::basic_credentials` and `cert::ClientCert`:
//! - `basic_credentials`: `None` unless the value is UTF-8 with the scheme `Basic` (any case);
//!   `Some(Ok((user, password)))` only with a non-empty user, neither part holding a control
//!   character, and `Basic base64(user:password)` parses back to the same pair;
//! - `ClientCert::Encoded(text).thumbprint()`: the same answer twice; when `Some(t)`, the
//!   certificate `matches` base64url(t) and nothing else the input could name (`matches` of a
//!   different 32 bytes is false);
//! - `ClientCert::Sha256Hex(text).thumbprint()` is `Some` only for 64 hex digits;
//! - `ClientCert::from_xfcc(text)` never panics, and what it returns is one of the two shapes.
#![no_main]

use authgate::cert::ClientCert;
use authgate::token::basic_credentials;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match basic_credentials(data) {
        None => {
            let scheme_is_basic = std::str::from_utf8(data).ok().is_some_and(|t| {
                t.trim_matches(' ')
                    .split_once(' ')
                    .is_some_and(|(s, _)| s.eq_ignore_ascii_case("basic"))
            });
            assert!(
                !scheme_is_basic,
                "{data:?}: a Basic credential answered as none"
            );
        }
        Some(Err(_)) => {}
        Some(Ok((user, password))) => {
            assert!(!user.is_empty(), "{data:?}: an empty user");
            for part in [&user, &password] {
                assert!(
                    !part.chars().any(char::is_control),
                    "{data:?}: a control character"
                );
            }
            let again = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
            assert_eq!(
                basic_credentials(again.as_bytes()),
                Some(Ok((user.clone(), password.clone()))),
                "{data:?}: no round trip"
            );
        }
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let encoded = ClientCert::Encoded(text.to_owned());
    let thumbprint = encoded.thumbprint();
    assert_eq!(
        thumbprint,
        encoded.thumbprint(),
        "{text:?}: not deterministic"
    );
    if let Some(t) = thumbprint {
        assert!(
            encoded.matches(&URL_SAFE_NO_PAD.encode(t)),
            "{text:?}: does not match itself"
        );
        let mut other = t;
        other[0] ^= 1;
        assert!(
            !encoded.matches(&URL_SAFE_NO_PAD.encode(other)),
            "{text:?}: matches another"
        );
    }
    if ClientCert::Sha256Hex(text.to_owned())
        .thumbprint()
        .is_some()
    {
        assert!(
            text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()),
            "{text:?}: a hash that is not 64 hex digits"
        );
    }
    match ClientCert::from_xfcc(text) {
        None | Some(ClientCert::Encoded(_)) | Some(ClientCert::Sha256Hex(_)) => {}
    }
});
