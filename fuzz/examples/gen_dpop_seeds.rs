//! Mints the DPoP proof seeds of the `token` target: `cargo run --example gen_dpop_seeds` in
//! `fuzz/`. Proofs carry their own public key, so a fresh key per run is fine; each seed is a
//! proof for the fixture's request and access token (`DPOP_TARGET`, `DPOP_ACCESS_TOKEN`) at the
//! fixed clock, one good per key type and a few broken ones, written to `seeds/token/dpop-*`.

use std::fs;

use authgate::demo::signing::SigningKey;
use authgate::verify::Alg;
use authgate_fuzz::{DPOP_ACCESS_TOKEN, DPOP_TARGET, Fixture, NOW};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

fn main() {
    let ath = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        DPOP_ACCESS_TOKEN.as_bytes(),
    ));
    let claims = |jti: &str| {
        json!({"jti": jti, "htm": "GET", "htu": "https://api.fuzz.test/api/items",
               "iat": NOW, "ath": ath})
    };
    let mut seeds: Vec<(String, String)> = Vec::new();
    for (alg, name) in [
        (Alg::ES256, "es256"),
        (Alg::ES384, "es384"),
        (Alg::EdDSA, "eddsa"),
        (Alg::RS256, "rs256"),
        (Alg::PS256, "ps256"),
    ] {
        let key = SigningKey::generate(alg, name).expect("a key");
        let header = json!({"typ": "dpop+jwt", "alg": alg.as_str(), "jwk": key.public_jwk()});
        let proof = key.sign_with_header(&header, &claims(name)).expect("signs");
        // A good seed holds for the fixture's request (so the fuzzer starts from proofs that
        // reach the replay cache); the checker used here is not the one the target runs.
        let checker =
            authgate::dpop::ProofChecker::new(&Fixture::get().decider.config().dpop_proofs);
        let held = checker.check(proof.as_bytes(), DPOP_ACCESS_TOKEN, DPOP_TARGET, NOW);
        assert!(held.is_ok(), "{name}: {held:?}");
        seeds.push((format!("dpop-{name}"), proof));
    }
    let key = SigningKey::generate(Alg::ES256, "broken").expect("a key");
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()});
    let mut private = header.clone();
    private["jwk"]["d"] = json!("AAAA");
    let mut stale = claims("stale");
    stale["iat"] = json!(NOW - 3600);
    let mut other_uri = claims("uri");
    other_uri["htu"] = json!("https://api.fuzz.test/api/other");
    for (name, header, claims) in [
        ("dpop-private-jwk", private, claims("private")),
        ("dpop-stale", header.clone(), stale),
        ("dpop-other-uri", header.clone(), other_uri),
    ] {
        let proof = key.sign_with_header(&header, &claims).expect("signs");
        seeds.push((name.to_owned(), proof));
    }
    for (name, proof) in seeds {
        fs::write(format!("seeds/token/{name}"), proof).expect("writes the seed");
    }
}
