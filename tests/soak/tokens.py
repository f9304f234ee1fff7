#!/usr/bin/env python3
"""Tokens for the soak run: mints valid access tokens at the demo issuer's token endpoint and
derives invalid and random-kid ones from them, then writes the shuffled mix that soak.lua
cycles through.

Each line of the mix is `<expected reason> <token>`: the `reason` label authgate's
`authgate_decisions_total` should count for it (`valid_token` is an allow, answered 200; every
other reason is an invalid-token deny, answered 401 on /auth). The soak compares what it sent
per reason with what authgate counted, so a token in the wrong class is caught even though wrk
cannot pair a response with its request.

Standard library only. Usage:
  tokens.py ISSUER_URL OUT_DIR --valid N --random-kid N --mix N --seed S
writes OUT_DIR/mix.txt and OUT_DIR/samples.txt (one token per reason, for the preflight).
"""

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import random
import sys
import time
import urllib.parse

CLIENT = ("demo-client", "demo-secret")
USER = ("john", "doe")

# Share of each class in the mix, in percent (the rest of the brief's 60/20/20).
VALID_PERCENT = 60
INVALID_PERCENT = 20


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url_json(segment: str):
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def mint(issuer_url: str, count: int, connections: int = 4) -> list:
    """`count` access tokens over `connections` keep-alive connections, alternating the password
    grant (john) and the client-credentials grant, so subjects and claims differ. Signing is
    the issuer's work, so a few connections use both cores."""
    url = urllib.parse.urlsplit(issuer_url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"tokens.py: refusing a non-loopback issuer {issuer_url}")
    basic = base64.b64encode(f"{CLIENT[0]}:{CLIENT[1]}".encode()).decode()
    headers = {
        "Authorization": f"Basic {basic}",
        "Content-Type": "application/x-www-form-urlencoded",
    }

    def mint_some(indices):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        tokens = []
        for i in indices:
            if i % 2 == 0:
                form = {"grant_type": "password", "username": USER[0], "password": USER[1]}
            else:
                form = {"grant_type": "client_credentials"}
            conn.request("POST", "/token", body=urllib.parse.urlencode(form), headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"token endpoint answered {response.status}: {body[:200]!r}")
            tokens.append(json.loads(body)["access_token"])
        conn.close()
        return tokens

    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        parts = pool.map(mint_some, [range(k, count, connections) for k in range(connections)])
        return [token for part in parts for token in part]


def invalid_variants(token: str, rng: random.Random) -> list:
    """(expected reason, token) pairs derived from one valid token. None of them can verify;
    the ones with a forged payload are refused by the cheap checks before any key lookup."""
    header_b64, payload_b64, signature = token.split(".")
    header = unb64url_json(header_b64)
    payload = unb64url_json(payload_b64)
    now = int(time.time())

    def forged(claims, hdr=None):
        return f"{b64url_json(hdr or header)}.{b64url_json(claims)}.{signature}"

    # Flip one signature character to another base64url character: same length, wrong bits.
    pos = rng.randrange(len(signature) - 2)
    flipped = "A" if signature[pos] != "A" else "B"
    tampered = f"{header_b64}.{payload_b64}.{signature[:pos]}{flipped}{signature[pos + 1:]}"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    garbage = "".join(rng.choice(alphabet) for _ in range(rng.randrange(20, 400)))
    return [
        ("bad_signature", tampered),
        ("malformed_token", f"{header_b64}.{payload_b64}"),
        ("malformed_token", garbage),
        # `alg: none` as such tokens are usually written, with an empty signature segment, is
        # not a compact JWS to authgate; with a signature it is refused for its algorithm.
        ("malformed_token", forged(payload, {"alg": "none", "typ": "at+jwt"})[: -len(signature)]),
        ("algorithm_not_allowed", forged(payload, {"alg": "none", "typ": "at+jwt"})),
        ("algorithm_not_allowed", forged(payload, {**header, "alg": "HS256"})),
        ("expired", forged({**payload, "exp": now - 3600, "iat": now - 7200, "nbf": now - 7200})),
        ("unknown_issuer", forged({**payload, "iss": "https://idp.invalid"})),
        ("wrong_audience", forged({**payload, "aud": "some-other-api"})),
    ]


def random_kid(token: str, rng: random.Random) -> str:
    """The valid token's payload and signature under a header naming a key nobody has: passes
    every cheap check and reaches the key lookup (unknown kid: a refetch at most once per
    cooldown, a deny either way)."""
    _, payload_b64, signature = token.split(".")
    kid = b64url(rng.randbytes(12))
    header = {"alg": "RS256", "typ": "at+jwt", "kid": kid}
    return f"{b64url_json(header)}.{payload_b64}.{signature}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("issuer_url")
    parser.add_argument("out_dir")
    parser.add_argument("--valid", type=int, default=12000, help="distinct valid tokens to mint")
    parser.add_argument("--random-kid", type=int, default=2000, help="distinct random-kid tokens")
    parser.add_argument("--mix", type=int, default=20000, help="lines in the mix")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    valid = mint(args.issuer_url, max(args.valid, 1))
    invalid = [pair for token in valid for pair in invalid_variants(token, rng)]
    random_kids = [random_kid(rng.choice(valid), rng) for _ in range(max(args.random_kid, 1))]

    # Valid and random-kid tokens are taken in turn, so that with the defaults (12 000 valid
    # tokens, about 12 000 valid lines in a mix of 20 000) every minted token is used: more
    # distinct tokens than the verified cache holds (10 000), so it runs full and evicts.
    mix = []
    next_valid = next_kid = 0
    for _ in range(args.mix):
        roll = rng.randrange(100)
        if roll < VALID_PERCENT:
            mix.append(("valid_token", valid[next_valid % len(valid)]))
            next_valid += 1
        elif roll < VALID_PERCENT + INVALID_PERCENT:
            mix.append(rng.choice(invalid))
        else:
            mix.append(("unknown_key", random_kids[next_kid % len(random_kids)]))
            next_kid += 1

    with open(os.path.join(args.out_dir, "mix.txt"), "w", encoding="ascii") as out:
        for reason, token in mix:
            out.write(f"{reason} {token}\n")
    # One token per expected reason (and per invalid variant), for a check before the load.
    samples = [("valid_token", valid[0]), ("unknown_key", random_kids[0])]
    samples += invalid_variants(valid[0], rng)
    with open(os.path.join(args.out_dir, "samples.txt"), "w", encoding="ascii") as out:
        for reason, token in samples:
            out.write(f"{reason} {token}\n")
    print(
        f"tokens: {len(valid)} valid, {len(invalid)} invalid, {len(random_kids)} random-kid; "
        f"mix of {len(mix)} ({VALID_PERCENT}/{INVALID_PERCENT}/"
        f"{100 - VALID_PERCENT - INVALID_PERCENT} valid/invalid/random kid)"
    )


if __name__ == "__main__":
    main()
