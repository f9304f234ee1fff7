// A real OpenID provider for authgate's end-to-end suite: `oidc-provider` (v9) on 127.0.0.1,
// issuing JWT access tokens through the client credentials grant with resource indicators
// (RFC 8707). Each resource names the audience and the signing algorithm of its tokens, so one
// IdP issues RS256, PS256, ES256 and EdDSA tokens; the urn:authgate:opaque* resources issue
// opaque tokens instead, for authgate's token introspection (RFC 7662).
//
//   node idp.mjs --port P --keys FILE --client-key FILE [--rotate]
//
// --keys FILE holds the private signing keys (a JWKS); it is created on first start (RSA 2048,
// EC P-256, Ed25519) and reused on restart, so tokens issued before a restart still verify.
// --client-key FILE is the private JWK (EC P-256, ES256) of the `kong` client, which
// authenticates with private_key_jwt (authgate's client_jwk_file); created on first start, its
// public half registered with the client.
// --rotate adds a new RSA key FIRST (so it signs RS256 and PS256 tokens from now on) and keeps
// the old keys published. The issuer is http://127.0.0.1:P, exactly.
//
// A token from bash:
//   curl -s -u e2e-client:e2e-secret -d grant_type=client_credentials \
//     -d resource=urn:authgate:rs256 -d scope=api:read http://127.0.0.1:P/token
//
// The Kong parity clients (README "Migrating from Kong OIDC"):
//   kong      private_key_jwt; the password grant (registered here: oidc-provider has none)
//             for USERS, and client credentials. Default resource urn:authgate:rs256.
//   e2e-mtls  client_secret_basic (secret e2e-mtls-secret), client credentials, certificate-
//             bound access tokens (RFC 8705): cnf.x5t#S256 of the certificate in the request's
//             x-client-cert header (URL-encoded PEM; the IdP runs plain HTTP on loopback, so
//             the test hands the certificate over as a TLS terminator would).
// GET /test/stats answers {"password_grants": N, "last_password_client": {...}}: every
// password grant request that reached the grant (client authenticated), wrong passwords
// included, and how the last one's client authenticated (kept across restarts in
// KEYS.stats.json).
//
// Resources: urn:authgate:{rs256,ps256,es256,eddsa} (audience = the resource, 1 h tokens),
// urn:authgate:short (audience urn:authgate:rs256, RS256, 2 s tokens: for expiry checks),
// urn:other (audience urn:other, RS256: a token for someone else), urn:authgate:opaque
// (OPAQUE tokens, audience urn:authgate:rs256, 1 h) and urn:authgate:opaque-short (the same,
// 2 s tokens). Opaque tokens live in the IdP's memory only: a restart forgets them.
//
// Token introspection (RFC 7662, POST /token/introspection) and revocation (RFC 7009, POST
// /token/revocation; see the discovery document) are on. Any authenticated (confidential)
// client may introspect or revoke any client's token: authgate introspects as kong
// (private_key_jwt) or e2e-client (client_secret_basic), whoever the token was issued to. Only
// opaque tokens can be introspected or revoked (oidc-provider answers unsupported_token_type
// for a JWT). The answer holds active, iss, aud, exp, iat, scope, client_id, token_type and, for
// bound tokens, cnf; no sub for client credentials tokens (they have no user), no jti (it is the
// token itself), and just {"active":false} for an unknown, expired or revoked token.
//
// DPoP (RFC 9449, oidc-provider's features.dPoP): a token request with a `DPoP: <proof>`
// header (ES256 or EdDSA) gets token_type DPoP and a token bound to the proof's key: cnf.jkt in
// the JWT, or in the introspection answer of an opaque token. Nonces are off (no DPoP-Nonce);
// the proof's iat must be within 5 min either way, its jti is not reusable (per client), ath is
// not checked at the token endpoint. client.mjs makes keys, proofs and tokens.
// Prints one line `idp ready <issuer> kids=<kid,...>` when it listens; exits 0 on SIGTERM.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    keys: { type: 'string' },
    'client-key': { type: 'string' },
    rotate: { type: 'boolean', default: false },
  },
});

if (!args.port || !args.keys || !args['client-key']) {
  console.error('usage: node idp.mjs --port PORT --keys FILE --client-key FILE [--rotate]');
  process.exit(64);
}

const port = Number.parseInt(args.port, 10);
const issuer = `http://127.0.0.1:${port}`;

export const CLIENT_ID = 'e2e-client';
export const CLIENT_SECRET = 'e2e-secret';
const SCOPE = 'api:read api:write';
export const USERS = { john: 'doe', jane: 'secret' };
const PASSWORD_CLIENT = 'kong';
const MTLS_CLIENT = 'e2e-mtls';

// resource indicator -> what a token for it looks like
const RESOURCES = {
  'urn:authgate:rs256': { alg: 'RS256' },
  'urn:authgate:ps256': { alg: 'PS256' },
  'urn:authgate:es256': { alg: 'ES256' },
  'urn:authgate:eddsa': { alg: 'EdDSA' },
  'urn:authgate:short': { alg: 'RS256', audience: 'urn:authgate:rs256', ttl: 2 },
  'urn:other': { alg: 'RS256' },
  'urn:authgate:opaque': { format: 'opaque', audience: 'urn:authgate:rs256' },
  'urn:authgate:opaque-short': { format: 'opaque', audience: 'urn:authgate:rs256', ttl: 2 },
};

function newKid() {
  return crypto.randomBytes(9).toString('base64url');
}

function privateJwk(type, options) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: newKid(), use: 'sig' };
}

const newRsaKey = () => privateJwk('rsa', { modulusLength: 2048 });

function loadKeys(file, rotate) {
  let jwks;
  if (fs.existsSync(file)) {
    jwks = JSON.parse(fs.readFileSync(file, 'utf8'));
  } else {
    jwks = {
      keys: [
        newRsaKey(),
        privateJwk('ec', { namedCurve: 'P-256' }),
        privateJwk('ed25519'),
      ],
    };
  }
  if (rotate) {
    // oidc-provider signs with the first key that fits the algorithm.
    jwks.keys.unshift(newRsaKey());
  }
  fs.writeFileSync(file, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  return jwks;
}

const jwks = loadKeys(args.keys, args.rotate);

// The kong client's key pair: the private JWK for authgate, the public one registered here.
function loadClientKey(file) {
  if (!fs.existsSync(file)) {
    const key = { ...privateJwk('ec', { namedCurve: 'P-256' }), alg: 'ES256' };
    fs.writeFileSync(file, `${JSON.stringify(key, null, 2)}\n`, { mode: 0o600 });
  }
  const { d, ...publicJwk } = JSON.parse(fs.readFileSync(file, 'utf8'));
  return publicJwk;
}
const clientPublicJwk = loadClientKey(args['client-key']);

// Kept next to the keys, so that a restart (key rotation, an outage) does not forget them.
const statsFile = `${args.keys}.stats.json`;
const stats = fs.existsSync(statsFile)
  ? JSON.parse(fs.readFileSync(statsFile, 'utf8'))
  : { password_grants: 0, last_password_client: null };

function confidentialCaller(ctx, client) {
  return client.clientAuthMethod !== 'none';
}

const configuration = {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPE,
    },
    {
      client_id: PASSWORD_CLIENT,
      grant_types: ['password', 'client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks: { keys: [clientPublicJwk] },
      scope: SCOPE,
    },
    {
      client_id: MTLS_CLIENT,
      client_secret: 'e2e-mtls-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      tls_client_certificate_bound_access_tokens: true,
      scope: SCOPE,
    },
  ],
  jwks,
  scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
  // Only the client credentials grant is used; cookies are never set, but the provider wants keys.
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // Sender-constrained tokens (RFC 9449) for a token request that carries a DPoP proof. No
    // nonceSecret: no DPoP-Nonce is ever asked for (requireNonce false, nonces unsupported).
    dPoP: { enabled: true, requireNonce: () => false, allowReplay: false },
    // Any client that authenticated (none here is public) may introspect or revoke any
    // client's token; the defaults refuse to revoke another client's token.
    introspection: { enabled: true, allowedPolicy: confidentialCaller },
    mTLS: {
      enabled: true,
      certificateBoundAccessTokens: true,
      // A header that is not a certificate is none (the grant then answers invalid_grant),
      // never hashed into a cnf.
      getCertificate(ctx) {
        const header = ctx.get('x-client-cert');
        try {
          return header ? new crypto.X509Certificate(decodeURIComponent(header)) : undefined;
        } catch {
          return undefined;
        }
      },
    },
    revocation: { enabled: true, allowedPolicy: confidentialCaller },
    resourceIndicators: {
      enabled: true,
      // No resource parameter: no resource server, an opaque token (not used by the suite).
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resourceIndicator, client) {
        const resource = RESOURCES[resourceIndicator];
        if (!resource || ![CLIENT_ID, PASSWORD_CLIENT, MTLS_CLIENT].includes(client.clientId)) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: SCOPE,
          audience: resource.audience ?? resourceIndicator,
          accessTokenFormat: resource.format ?? 'jwt',
          ...(resource.ttl ? { accessTokenTTL: resource.ttl } : {}),
          ...(resource.alg ? { jwt: { sign: { alg: resource.alg } } } : {}),
        };
      },
    },
  },
  enabledJWA: {
    // The default list lacks PS256 for some artifacts; list what the resources sign with.
    idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'],
  },
  ttl: {
    // The resource server's accessTokenTTL when it has one (the *short ones), else 1 h.
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600,
    // The password grant's tokens: the same rule.
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600,
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

// The password grant (RFC 6749 §4.3), registered before the provider first loads its clients
// (whose grant_types name it). The client has authenticated (private_key_jwt) before this runs.
// The token is an ordinary access token of the user (accountId = sub) for the requested
// resource, default urn:authgate:rs256, so it is a JWT like the client credentials tokens.
async function passwordGrant(ctx) {
  const { client, params } = ctx.oidc;
  stats.password_grants += 1;
  stats.last_password_client = {
    client_id: client.clientId,
    auth_method: client.clientAuthMethod,
    assertion: params.client_assertion
      ? JSON.parse(Buffer.from(params.client_assertion.split('.')[1], 'base64url').toString())
      : null,
    assertion_header: params.client_assertion
      ? JSON.parse(Buffer.from(params.client_assertion.split('.')[0], 'base64url').toString())
      : null,
  };
  fs.writeFileSync(statsFile, JSON.stringify(stats));
  if (!Object.hasOwn(USERS, params.username) || USERS[params.username] !== params.password) {
    throw new errors.InvalidGrant('invalid resource owner credentials');
  }
  const indicator = params.resource ?? 'urn:authgate:rs256';
  const info = configuration.features.resourceIndicators.getResourceServerInfo(ctx, indicator, client);
  const resourceServer = new provider.ResourceServer(indicator, info);
  const requested = (params.scope ?? SCOPE).split(' ');
  const scope = requested.filter((s) => info.scope.split(' ').includes(s)).join(' ');
  const token = new provider.AccessToken({
    accountId: params.username,
    client,
    gty: 'password',
    scope: scope || undefined,
  });
  token.resourceServer = resourceServer;
  const value = await token.save();
  ctx.body = {
    access_token: value,
    token_type: token.tokenType,
    expires_in: token.expiration,
    scope: token.scope,
  };
}

const provider = new Provider(issuer, configuration);
provider.registerGrantType('password', passwordGrant, ['username', 'password', 'scope', 'resource']);

// Quiet: one line per server error, nothing per request.
provider.on('server_error', (_ctx, err) => console.error(`idp server_error: ${err.message}`));

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/test/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  callback(req, res);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`idp ready ${issuer} kids=${jwks.keys.map((k) => k.kid).join(',')}`);
});
server.on('error', (err) => {
  console.error(`idp: ${err.message}`);
  process.exit(69);
});

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
