// A real OpenID provider for authgate's end-to-end suite: `oidc-provider` (v9) on 127.0.0.1,
// issuing JWT access tokens through the client credentials grant with resource indicators
// (RFC 8707). Each resource names the audience and the signing algorithm of its tokens, so one
// IdP issues RS256, PS256, ES256 and EdDSA tokens.
//
//   node idp.mjs --port P --keys FILE [--rotate]
//
// FILE holds the private signing keys (a JWKS); it is created on first start (RSA 2048,
// EC P-256, Ed25519) and reused on restart, so tokens issued before a restart still verify.
// --rotate adds a new RSA key FIRST (so it signs RS256 and PS256 tokens from now on) and keeps
// the old keys published. The issuer is http://127.0.0.1:P, exactly.
//
// A token from bash:
//   curl -s -u e2e-client:e2e-secret -d grant_type=client_credentials \
//     -d resource=urn:authgate:rs256 -d scope=api:read http://127.0.0.1:P/token
//
// Resources: urn:authgate:{rs256,ps256,es256,eddsa} (audience = the resource, 1 h tokens),
// urn:authgate:short (audience urn:authgate:rs256, RS256, 2 s tokens: for expiry checks) and
// urn:other (audience urn:other, RS256: a token for someone else).
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
    rotate: { type: 'boolean', default: false },
  },
});

if (!args.port || !args.keys) {
  console.error('usage: node idp.mjs --port PORT --keys FILE [--rotate]');
  process.exit(64);
}

const port = Number.parseInt(args.port, 10);
const issuer = `http://127.0.0.1:${port}`;

export const CLIENT_ID = 'e2e-client';
export const CLIENT_SECRET = 'e2e-secret';
const SCOPE = 'api:read api:write';

// resource indicator -> what a token for it looks like
const RESOURCES = {
  'urn:authgate:rs256': { alg: 'RS256' },
  'urn:authgate:ps256': { alg: 'PS256' },
  'urn:authgate:es256': { alg: 'ES256' },
  'urn:authgate:eddsa': { alg: 'EdDSA' },
  'urn:authgate:short': { alg: 'RS256', audience: 'urn:authgate:rs256', ttl: 2 },
  'urn:other': { alg: 'RS256' },
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
  ],
  jwks,
  scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
  // Only the client credentials grant is used; cookies are never set, but the provider wants keys.
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // No resource parameter: no resource server, an opaque token (not used by the suite).
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resourceIndicator, client) {
        const resource = RESOURCES[resourceIndicator];
        if (!resource || client.clientId !== CLIENT_ID) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: SCOPE,
          audience: resource.audience ?? resourceIndicator,
          accessTokenFormat: 'jwt',
          ...(resource.ttl ? { accessTokenTTL: resource.ttl } : {}),
          jwt: { sign: { alg: resource.alg } },
        };
      },
    },
  },
  enabledJWA: {
    // The default list lacks PS256 for some artifacts; list what the resources sign with.
    idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'],
  },
  ttl: {
    // The resource server's accessTokenTTL when it has one (urn:authgate:short), else 1 h.
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600,
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(issuer, configuration);

// Quiet: one line per server error, nothing per request.
provider.on('server_error', (_ctx, err) => console.error(`idp server_error: ${err.message}`));

const server = http.createServer(provider.callback());
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
