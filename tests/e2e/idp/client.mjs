// A client of the e2e IdP (idp.mjs) for the suite's DPoP (RFC 9449) and token introspection
// (RFC 7662) checks: it makes DPoP keys and proofs, fetches tokens, revokes and introspects.
// Each subcommand prints its result as one line on stdout; on failure it prints a message on
// stderr and exits non-zero (1; 64 for usage errors).
//
//   node client.mjs dpop-key FILE
//       creates an EC P-256 private JWK (alg ES256) in FILE (mode 600) unless FILE exists;
//       prints FILE
//   node client.mjs thumbprint --key FILE
//       prints the key's RFC 7638 SHA-256 thumbprint (base64url), i.e. a token's cnf.jkt
//   node client.mjs dpop-token --idp URL --key FILE [--resource urn:authgate:rs256]
//                              [--client e2e-client --secret e2e-secret]
//       client credentials grant (scope "api:read api:write") with a DPoP proof of FILE's key;
//       prints the access token; fails unless token_type is DPoP
//   node client.mjs dpop-proof --key FILE --htm GET --htu URL --token ACCESS_TOKEN
//                              [--iat-offset SECONDS] [--jti ID] [--no-ath] [--typ T] [--alg A]
//       prints a DPoP proof: header {typ dpop+jwt, alg ES256, jwk (public)}, claims {jti, htm,
//       htu, iat = now + offset, ath = base64url(SHA-256(token))}; --typ, --alg (the header's
//       value only: the signature stays ES256) and --no-ath make broken proofs
//   node client.mjs opaque-token --idp URL [--resource urn:authgate:opaque]
//       prints a Bearer (opaque) token of e2e-client, client credentials grant
//   node client.mjs revoke --idp URL --token T
//       revokes T as e2e-client; prints "revoked"
//   node client.mjs introspect --idp URL --token T
//       prints the introspection answer (JSON) as e2e-client
//
// Endpoints come from URL/.well-known/openid-configuration.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';

import { calculateJwkThumbprint } from 'jose';

const CLIENT_ID = 'e2e-client';
const CLIENT_SECRET = 'e2e-secret';
const SCOPE = 'api:read api:write';

class Usage extends Error {}

function need(values, ...names) {
  for (const name of names) {
    if (values[name] === undefined) throw new Usage(`--${name} is required`);
  }
}

function readKey(file) {
  let jwk;
  try {
    jwk = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read key ${file}: ${err.message}`);
  }
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || !jwk.d) {
    throw new Error(`${file} is not an EC P-256 private JWK`);
  }
  return jwk;
}

function publicJwk(jwk) {
  return { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y };
}

async function dpopProof(jwk, {
  htm, htu, token, iatOffset = 0, jti, ath = true, typ = 'dpop+jwt', alg = 'ES256',
}) {
  const header = { typ, alg, jwk: publicJwk(jwk) };
  const claims = {
    jti: jti ?? crypto.randomUUID(),
    htm,
    htu,
    iat: Math.floor(Date.now() / 1000) + iatOffset,
  };
  if (token !== undefined && ath) {
    claims.ath = crypto.createHash('sha256').update(token, 'ascii').digest('base64url');
  }
  // Signed by hand (always ES256), so that a proof can name another alg in its header.
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${b64(header)}.${b64(claims)}`;
  const signature = crypto.sign('sha256', Buffer.from(input), {
    key: crypto.createPrivateKey({ key: jwk, format: 'jwk' }),
    dsaEncoding: 'ieee-p1363',
  });
  return `${input}.${signature.toString('base64url')}`;
}

async function discovery(idp) {
  const url = `${idp.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res.json();
}

function basicAuth(client, secret) {
  const enc = (s) => encodeURIComponent(s);
  return `Basic ${Buffer.from(`${enc(client)}:${enc(secret)}`).toString('base64')}`;
}

async function post(url, form, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
  });
  const text = await res.text();
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

function failed(what, { status, body }) {
  return new Error(`${what}: HTTP ${status} ${typeof body === 'string' ? body : JSON.stringify(body)}`);
}

async function tokenRequest(idp, { resource, client, secret, dpop }) {
  const meta = await discovery(idp);
  const endpoint = meta.token_endpoint;
  const headers = { authorization: basicAuth(client, secret) };
  if (dpop) headers.dpop = await dpopProof(dpop, { htm: 'POST', htu: endpoint });
  const res = await post(endpoint, { grant_type: 'client_credentials', resource, scope: SCOPE }, headers);
  if (res.status !== 200 || typeof res.body?.access_token !== 'string') {
    throw failed(`token request at ${endpoint}`, res);
  }
  return res.body;
}

const commands = {
  async 'dpop-key'(argv) {
    const { positionals } = parseArgs({ args: argv, allowPositionals: true });
    if (positionals.length !== 1) throw new Usage('dpop-key FILE');
    const [file] = positionals;
    if (!fs.existsSync(file)) {
      const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256' };
      fs.writeFileSync(file, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: 'wx' });
    }
    readKey(file);
    return file;
  },

  async thumbprint(argv) {
    const { values } = parseArgs({ args: argv, options: { key: { type: 'string' } } });
    need(values, 'key');
    return calculateJwkThumbprint(publicJwk(readKey(values.key)), 'sha256');
  },

  async 'dpop-token'(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        idp: { type: 'string' },
        key: { type: 'string' },
        resource: { type: 'string', default: 'urn:authgate:rs256' },
        client: { type: 'string', default: CLIENT_ID },
        secret: { type: 'string', default: CLIENT_SECRET },
      },
    });
    need(values, 'idp', 'key');
    const body = await tokenRequest(values.idp, { ...values, dpop: readKey(values.key) });
    if (body.token_type !== 'DPoP') {
      throw new Error(`token_type is ${JSON.stringify(body.token_type)}, not DPoP`);
    }
    return body.access_token;
  },

  async 'dpop-proof'(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        key: { type: 'string' },
        htm: { type: 'string' },
        htu: { type: 'string' },
        token: { type: 'string' },
        'iat-offset': { type: 'string', default: '0' },
        jti: { type: 'string' },
        'no-ath': { type: 'boolean', default: false },
        typ: { type: 'string', default: 'dpop+jwt' },
        alg: { type: 'string', default: 'ES256' },
      },
    });
    need(values, 'key', 'htm', 'htu', 'token');
    const iatOffset = Number(values['iat-offset']);
    if (!Number.isInteger(iatOffset)) throw new Usage('--iat-offset must be an integer');
    return dpopProof(readKey(values.key), {
      htm: values.htm,
      htu: values.htu,
      token: values.token,
      iatOffset,
      jti: values.jti,
      ath: !values['no-ath'],
      typ: values.typ,
      alg: values.alg,
    });
  },

  async 'opaque-token'(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        idp: { type: 'string' },
        resource: { type: 'string', default: 'urn:authgate:opaque' },
      },
    });
    need(values, 'idp');
    const body = await tokenRequest(values.idp, {
      resource: values.resource, client: CLIENT_ID, secret: CLIENT_SECRET,
    });
    return body.access_token;
  },

  async revoke(argv) {
    const { values } = parseArgs({
      args: argv, options: { idp: { type: 'string' }, token: { type: 'string' } },
    });
    need(values, 'idp', 'token');
    const endpoint = (await discovery(values.idp)).revocation_endpoint;
    if (!endpoint) throw new Error('the IdP has no revocation_endpoint');
    const res = await post(endpoint, { token: values.token }, {
      authorization: basicAuth(CLIENT_ID, CLIENT_SECRET),
    });
    if (res.status !== 200) throw failed(`revocation at ${endpoint}`, res);
    return 'revoked';
  },

  async introspect(argv) {
    const { values } = parseArgs({
      args: argv, options: { idp: { type: 'string' }, token: { type: 'string' } },
    });
    need(values, 'idp', 'token');
    const endpoint = (await discovery(values.idp)).introspection_endpoint;
    if (!endpoint) throw new Error('the IdP has no introspection_endpoint');
    const res = await post(endpoint, { token: values.token }, {
      authorization: basicAuth(CLIENT_ID, CLIENT_SECRET),
      accept: 'application/json',
    });
    if (res.status !== 200 || typeof res.body !== 'object') {
      throw failed(`introspection at ${endpoint}`, res);
    }
    return JSON.stringify(res.body);
  },
};

// `--name value` -> `--name=value` for the options that take a value, so that a value may start
// with a dash (an opaque token is base64url: it may; a negative --iat-offset does).
const VALUED = new Set(['idp', 'key', 'resource', 'client', 'secret', 'htm', 'htu', 'token',
  'iat-offset', 'jti', 'typ', 'alg']);
function joinValues(argv) {
  const out = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith('--') ? argv[i].slice(2) : undefined;
    if (name !== undefined && VALUED.has(name) && i + 1 < argv.length) {
      out.push(`--${name}=${argv[i + 1]}`);
      i += 1;
    } else {
      out.push(argv[i]);
    }
  }
  return out;
}

const [command, ...rest] = joinValues(process.argv.slice(2));
try {
  if (!Object.hasOwn(commands, command ?? '')) {
    throw new Usage(`usage: node client.mjs {${Object.keys(commands).join('|')}} ...`);
  }
  process.stdout.write(`${await commands[command](rest)}\n`);
} catch (err) {
  console.error(`client.mjs${command ? ` ${command}` : ''}: ${err.message}`);
  process.exit(err instanceof Usage || err.code?.startsWith?.('ERR_PARSE_ARGS') ? 64 : 1);
}
