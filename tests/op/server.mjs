// Test OpenID Provider for the gateway's integration and browser tests.
//
// Usage: node server.mjs CONFIG.json
//
// CONFIG.json:
//   {
//     "host": "127.0.0.1",            // default 127.0.0.1
//     "port": 0,                      // 0 (default) = the OS picks a free port
//     "accounts": [
//       {"sub": "alice-sub", "username": "alice", "password": "alice-pw",
//        "claims": {"name": "Alice Example", "email": "alice@example.org", ...}}
//     ],
//     "claims": {"openid": ["sub"], "profile": [...], ...}   // optional, replaces the default
//     "ttl": {"IdToken": 120},        // optional lifetimes in seconds
//     "issuer_path": "/<tid>/v2.0",   // optional: issuer http://HOST:PORT<issuer_path>, the
//                                     // provider mounted under that path (Entra's shape)
//     "discovery_issuer": "{origin}/{tenantid}/v2.0"  // optional: the issuer the discovery
//                                     // document claims ({origin} = http://HOST:PORT), e.g.
//                                     // Entra's multi-tenant template
//     "par": "required" | "off"       // optional: pushed authorization requests (RFC 9126)
//                                     // required by discovery, or not offered at all
//   }
//
// Once listening, prints exactly one line to stdout: {"issuer": "http://HOST:PORT"}.
// Everything else (errors) goes to stderr.
//
// Default scope -> claims mapping (a claim is only released if the account has it):
//   openid  -> sub, hd, tid, oid      (Google's hd and Entra's tid/oid come with any request)
//   profile -> name, preferred_username, given_name, family_name, middle_name, nickname,
//              picture, profile, website, gender, birthdate, zoneinfo, locale, updated_at
//   email   -> email, email_verified
//   phone   -> phone_number, phone_number_verified
//   address -> address
//   groups  -> groups
//   roles   -> roles, realm_access, resource_access
// `_claim_names` / `_claim_sources` (distributed claims, e.g. Entra's group overage) in an
// account's claims are passed through by oidc-provider itself, reduced to the entries whose
// claim name is released (e.g. {"_claim_names": {"groups": "src1"}, "_claim_sources":
// {"src1": {...}}} appears when the `groups` scope is granted).
// `conformIdTokenClaims: false`, so every released claim is in the ID token as well as at
// userinfo.
//
// Behaviour:
// - State lives in a process-wide in-memory adapter shared by every Provider instance.
// - Dynamic client registration (RFC 7591) is open. A `client_secret` in the registration
//   body is used verbatim; otherwise a random one is generated.
// - PKCE (S256) is required for every client. Auth methods: client_secret_basic/_post and
//   private_key_jwt (register `jwks` or `jwks_uri`).
// - Login: GET /interaction/:uid renders a form (#username, #password, #login); consent is
//   granted automatically for everything requested.
// - Test control endpoints (handled before the provider):
//     GET  /__test/health              -> {"ok": true}
//     POST /__test/rotate              -> new RS256 signing key; {"kid": NEW, "kids": [NEW, ...OLD]}
//     POST /__test/sign {"claims": {...}, "header": {...}} -> {"token": JWS signed RS256 with
//                                         the current key (typ logout+jwt unless overridden)
//     POST /__test/tamper {"mode": M}  -> corrupt the id_token of the NEXT token response;
//                                         M in signature | payload | alg_none | drop
//     POST /__test/pad {"bytes": N}     -> add a field of N bytes to the NEXT token response
//     POST /__test/delay {"ms": N}      -> hold the NEXT token response for N milliseconds
//     POST /__test/account {"sub": S, "disabled": B} -> disable (or enable) an account: its
//                                         refresh tokens then get invalid_grant, its logins fail
//     POST /__test/revoke {"sub": S}    -> revoke every grant of the account (refresh tokens
//                                         with them), as an IdP admin ending its sessions does
//     POST /__test/token-outage {"status": N} -> the token endpoint answers N (0: normal)
//     GET  /__test/pushed              -> {"count": N, "last": {...}} pushed authorization
//                                         requests seen and the last one's parameters (no secrets)
// Refresh tokens: issued to every client registered with the refresh_token grant type (no
// offline_access needed, as Keycloak does). Front-channel logout (OpenID Connect Front-Channel
// Logout 1.0, which oidc-provider 9 no longer implements): a client registered with
// `frontchannel_logout_uri` is framed, with `iss` and `sid`, by the page the OP shows after a
// confirmed logout; the page continues to where the OP would have redirected when every frame
// has loaded (or after 5 s).

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const DEFAULT_CLAIMS = {
  openid: ['sub', 'hd', 'tid', 'oid'],
  profile: [
    'name', 'preferred_username', 'given_name', 'family_name', 'middle_name', 'nickname',
    'picture', 'profile', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at',
  ],
  email: ['email', 'email_verified'],
  phone: ['phone_number', 'phone_number_verified'],
  address: ['address'],
  groups: ['groups'],
  roles: ['roles', 'realm_access', 'resource_access'],
};

const TAMPER_MODES = new Set(['signature', 'payload', 'alg_none', 'drop']);

function fail(message) {
  process.stderr.write(`test-op: ${message}\n`);
  process.exit(1);
}

if (process.argv.length < 3) fail('usage: node server.mjs CONFIG.json');

let config;
try {
  config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
} catch (err) {
  fail(`cannot read config: ${err.message}`);
}

const host = config.host ?? '127.0.0.1';
const port = config.port ?? 0;
const claimsConfig = config.claims ?? DEFAULT_CLAIMS;
// Optional lifetimes in seconds, e.g. {"IdToken": 120}; unset ones keep oidc-provider's.
const ttlConfig = config.ttl ?? {};
const issuerPath = (config.issuer_path ?? '').replace(/\/+$/, '');
const discoveryIssuer = config.discovery_issuer ?? null;
const parMode = config.par ?? 'offered';
const disabledAccounts = new Set();
let tokenOutageStatus = 0;
let pushedCount = 0;
let lastPushed = null;
const accounts = new Map();
for (const account of config.accounts ?? []) {
  if (!account.sub || !account.username) fail('every account needs sub and username');
  accounts.set(account.sub, account);
}

function findAccountByUsername(username) {
  for (const account of accounts.values()) {
    if (account.username === username && !disabledAccounts.has(account.sub)) return account;
  }
  return undefined;
}

// ---------------------------------------------------------------- keys

let keyCounter = 0;
function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  keyCounter += 1;
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    ...jwk,
    kid: `test-op-rs256-${keyCounter}-${crypto.randomBytes(4).toString('hex')}`,
    alg: 'RS256',
    use: 'sig',
  };
}

// Newest first: oidc-provider signs with the first matching key.
let signingKeys = [newSigningKey()];
const cookieKeys = [crypto.randomBytes(32).toString('hex')];

// ---------------------------------------------------------------- storage

// oidc-provider 9's default memory adapter keeps one LRU store (1000 entries) per Provider
// instance, so state would be lost on key rotation (a new instance) and evicted in long test
// sessions. This process-wide adapter is shared by every Provider instance created here.
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const grantMembers = new Map(); // grantId -> Set of store keys
const sessionByUid = new Map(); // session uid -> session id
const byUserCode = new Map(); // user code -> `${model}:${id}`

function liveEntry(key) {
  const entry = store.get(key);
  if (entry && entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry;
}

setInterval(() => {
  for (const key of store.keys()) liveEntry(key);
}, 60_000).unref();

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(key, { payload, expiresAt });
    if (payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    if (this.model === 'Session' && payload.uid) sessionByUid.set(payload.uid, id);
    if (payload.userCode) byUserCode.set(payload.userCode, key);
  }

  async find(id) {
    return liveEntry(this.key(id))?.payload;
  }

  async findByUid(uid) {
    const id = sessionByUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const key = byUserCode.get(userCode);
    return key === undefined ? undefined : liveEntry(key)?.payload;
  }

  async consume(id) {
    const entry = liveEntry(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// ---------------------------------------------------------------- html

function escapeHtml(value) {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:24em;margin:2em auto}label,input,button{display:block;margin:.4em 0}.error{color:#b00}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

// The client is named as a person knows it: its registered client_name, else its id.
function loginPage(uid, { error, username = '', clientId, clientName } = {}) {
  const errorHtml = error ? `<p class="error" id="error">${escapeHtml(error)}</p>\n` : '';
  const clientHtml = clientName
    ? `<p id="client">Signing in to <strong>${escapeHtml(clientName)}</strong></p>\n`
    : clientId ? `<p id="client">Signing in to <code>${escapeHtml(clientId)}</code></p>\n` : '';
  return page('Test OP sign-in', `${clientHtml}${errorHtml}<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label for="username">Username</label>
<input id="username" name="username" value="${escapeHtml(username)}" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password">
<button id="login" type="submit">Sign in</button>
</form>`);
}

// ---------------------------------------------------------------- grants

function addRequestedToGrant(grant, scopes, claims) {
  if (scopes?.length) grant.addOIDCScope([...scopes].join(' '));
  if (claims?.length) grant.addOIDCClaims([...claims]);
}

// Consent is automatic: every authorization request gets a grant covering all requested
// OIDC scopes and claims (claims parameter), so the consent prompt never triggers for
// ordinary clients.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new oidc.provider.Grant({
      accountId: oidc.account.accountId,
      clientId: oidc.client.clientId,
    });
  }
  addRequestedToGrant(grant, oidc.requestParamOIDCScopes, oidc.requestParamClaims);
  await grant.save();
  return grant;
}

// ---------------------------------------------------------------- tampering

let tamperMode = null;
let padBytes = 0;
let delayMs = 0;

function b64urlJson(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function tamperIdToken(idToken, mode) {
  const [header, payload, signature] = idToken.split('.');
  switch (mode) {
    case 'signature': {
      // Change leading characters: all their bits are significant, so the bytes change.
      const flipped = [...signature.slice(0, 8)].map((c) => (c === 'A' ? 'B' : 'A')).join('');
      return `${header}.${payload}.${flipped}${signature.slice(8)}`;
    }
    case 'payload': {
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      claims.sub = `${claims.sub}-tampered`;
      return `${header}.${b64urlJson(claims)}.${signature}`;
    }
    case 'alg_none': {
      const head = JSON.parse(Buffer.from(header, 'base64url').toString('utf8'));
      head.alg = 'none';
      return `${b64urlJson(head)}.${payload}.`;
    }
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
}

async function tamperMiddleware(ctx, next) {
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token' && ctx.status === 200 && ctx.body
      && typeof ctx.body === 'object') {
    if (padBytes > 0) {
      ctx.body.padding = 'x'.repeat(padBytes);
      padBytes = 0;
    }
    if (delayMs > 0) {
      const ms = delayMs;
      delayMs = 0;
      await new Promise((resolve) => { setTimeout(resolve, ms); });
    }
  }
  if (
    tamperMode
    && ctx.method === 'POST'
    && ctx.path === '/token'
    && ctx.status === 200
    && ctx.body
    && typeof ctx.body === 'object'
    && typeof ctx.body.id_token === 'string'
  ) {
    const mode = tamperMode;
    tamperMode = null;
    if (mode === 'drop') {
      delete ctx.body.id_token;
    } else {
      ctx.body.id_token = tamperIdToken(ctx.body.id_token, mode);
    }
  }
}

// ---------------------------------------------------------------- front-channel logout

// The frames a confirmed logout shows, keyed by the logout's xsrf value (set while the
// session is still known, in logoutSource; used once the confirmation succeeded).
const frontchannelPending = new Map();

async function frontchannelFrames(ctx) {
  const session = ctx.oidc.session;
  const frames = [];
  for (const clientId of Object.keys(session?.authorizations ?? {})) {
    const client = await ctx.oidc.provider.Client.find(clientId);
    const uri = client?.metadata().frontchannel_logout_uri;
    if (!uri) continue;
    const url = new URL(uri);
    url.searchParams.set('iss', ctx.oidc.issuer);
    const sid = session.sidFor(clientId);
    if (sid) url.searchParams.set('sid', sid);
    frames.push(url.href);
  }
  return frames;
}

function frontchannelPage(frames, next) {
  const iframes = frames
    .map((src) => `<iframe class="fc" src="${escapeHtml(src)}" width="1" height="1"></iframe>`)
    .join('\n');
  return page('Test OP signing out', `<p id="frontchannel">Signing you out of ${frames.length} application(s)...</p>
${iframes}
<p><a id="continue" href="${escapeHtml(next)}">Continue</a></p>
<script>
(() => {
  const next = document.getElementById('continue').href;
  const frames = [...document.querySelectorAll('iframe.fc')];
  let left = frames.length;
  const go = () => { window.location.replace(next); };
  if (!left) go();
  frames.forEach((f) => f.addEventListener('load', () => { left -= 1; if (!left) go(); }));
  setTimeout(go, 5000);
})();
</script>`);
}

async function frontchannelMiddleware(ctx, next) {
  const confirming = ctx.method === 'POST' && ctx.path === '/session/end/confirm';
  await next();
  if (!confirming || ctx.status !== 303) return;
  const xsrf = ctx.oidc?.params?.xsrf;
  const frames = xsrf ? frontchannelPending.get(xsrf) : undefined;
  if (xsrf) frontchannelPending.delete(xsrf);
  if (!frames?.length) return;
  const location = ctx.response.get('location');
  ctx.status = 200;
  ctx.remove('location');
  ctx.type = 'html';
  ctx.body = frontchannelPage(frames, location);
}

// The IdP as an outage, the PAR requests it saw.
async function testHooksMiddleware(ctx, next) {
  if (tokenOutageStatus && ctx.method === 'POST' && ctx.path === '/token') {
    ctx.status = tokenOutageStatus;
    ctx.body = { error: 'temporarily_unavailable' };
    return;
  }
  if (ctx.method === 'POST' && ctx.path === '/request') {
    await next();
    if (ctx.status === 201) {
      pushedCount += 1;
      const params = { ...(ctx.oidc?.params ?? {}) };
      for (const key of Object.keys(params)) {
        if (params[key] === undefined) delete params[key];
      }
      lastPushed = {
        params,
        client_auth: ctx.oidc?.client?.clientAuthMethod ?? null,
        client_id: ctx.oidc?.client?.clientId ?? null,
      };
    }
    return;
  }
  await next();
}

// ---------------------------------------------------------------- provider

function makeProvider(issuer) {
  const provider = new Provider(issuer, {
    // Shared by every Provider instance (key rotation keeps clients, sessions,
    // interactions, grants and codes).
    adapter: SharedMemoryAdapter,
    clients: [],
    jwks: { keys: signingKeys },
    cookies: {
      names: {
        session: 'op_session',
        interaction: 'op_interaction',
        resume: 'op_interaction_resume',
      },
      keys: cookieKeys,
    },
    claims: claimsConfig,
    conformIdTokenClaims: false,
    ...(Object.keys(ttlConfig).length ? { ttl: ttlConfig } : {}),
    extraClientMetadata: {
      properties: ['frontchannel_logout_uri', 'frontchannel_logout_session_required'],
    },
    // Refresh tokens for every client allowed the grant (Keycloak's default), rotated on use.
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    // private_key_jwt: a client registers `jwks` or `jwks_uri`; oidc-provider checks the
    // assertion's signature, iss/sub, aud (issuer, token endpoint or endpoint URL), exp and
    // refuses a jti it has seen (ReplayDetection, kept in the shared adapter).
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      registration: {
        enabled: true,
        initialAccessToken: false,
        issueRegistrationAccessToken: false,
        async secretFactory(ctx) {
          const wanted = ctx.oidc.body?.client_secret;
          if (typeof wanted === 'string' && wanted.length) return wanted;
          return crypto.randomBytes(48).toString('base64url');
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          const xsrf = /name="xsrf" value="([^"]+)"/.exec(form)?.[1];
          if (xsrf) frontchannelPending.set(xsrf, await frontchannelFrames(ctx));
          ctx.type = 'html';
          ctx.body = page('Test OP sign-out', `${form}
<p>Do you want to sign out from the Test OP?</p>
<button id="logout" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button id="stay" type="submit" form="op.logoutForm">No, stay signed in</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.type = 'html';
          ctx.body = page('Test OP signed out', '<p id="signed-out">You are signed out.</p>');
        },
      },
      backchannelLogout: { enabled: true },
      pushedAuthorizationRequests: {
        enabled: parMode !== 'off',
        requirePushedAuthorizationRequests: parMode === 'required',
      },
      claimsParameter: { enabled: true },
      userinfo: { enabled: true },
      // RFC 9207 `iss` in authorization responses has no feature flag in oidc-provider 9:
      // it is always on, and discovery always advertises
      // authorization_response_iss_parameter_supported: true.
    },
    async findAccount(ctx, sub) {
      const account = accounts.get(sub);
      if (!account || disabledAccounts.has(sub)) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { ...(account.claims ?? {}), sub };
        },
      };
    },
    loadExistingGrant,
    // oidc-provider 9 refuses outgoing requests (back-channel logout, sector_identifier_uri,
    // jwks_uri) to special-use addresses such as 127.0.0.1 via an SSRF-guarding undici
    // dispatcher; every test service is on loopback, so drop that dispatcher.
    fetch(url, { dispatcher, ...options }) {
      return globalThis.fetch(url, options);
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      const rows = Object.entries(out)
        .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: <span class="${escapeHtml(key)}">${escapeHtml(value)}</span></p>`)
        .join('\n');
      ctx.body = page('Test OP error', rows);
    },
  });
  // ID tokens carry `sid` for front-channel clients that require it, as for back-channel ones.
  const includeSid = provider.Client.prototype.includeSid;
  provider.Client.prototype.includeSid = function includeSidForFrontchannel() {
    const meta = this.metadata();
    return includeSid.call(this)
      || Boolean(meta.frontchannel_logout_uri && meta.frontchannel_logout_session_required);
  };
  provider.use(testHooksMiddleware);
  provider.use(frontchannelMiddleware);
  provider.use(tamperMiddleware);
  if (discoveryIssuer) {
    provider.use(async (ctx, next) => {
      await next();
      if (ctx.oidc?.route === 'discovery' && ctx.body) {
        ctx.body.issuer = discoveryIssuer.replace('{origin}', new URL(issuer).origin);
      }
    });
  }
  provider.on('server_error', (ctx, err) => {
    process.stderr.write(`test-op server_error on ${ctx.method} ${ctx.path}: ${err.stack ?? err}\n`);
  });
  provider.on('backchannel.error', (ctx, err, client) => {
    process.stderr.write(`test-op backchannel logout to ${client.backchannelLogoutUri} failed: ${err.message}\n`);
  });
  if (process.env.TEST_OP_DEBUG) {
    for (const event of ['authorization.error', 'grant.error', 'registration_create.error',
      'end_session.error', 'userinfo.error', 'jwks.error', 'backchannel.success']) {
      provider.on(event, (ctx, err) => {
        process.stderr.write(`test-op ${event} on ${ctx.method} ${ctx.path}: ${err?.message ?? ''}\n`);
      });
    }
  }
  return provider;
}

// ---------------------------------------------------------------- http plumbing

async function readBody(req, limit = 1024 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
  });
  res.end(html);
}

let provider;
let providerCallback;

// Test-only: sign arbitrary claims (and header overrides) with the OP's current RS256 key,
// so tests can build logout tokens with wrong claims that still carry a valid signature.
function signWithCurrentKey(claims, headerOverrides) {
  const key = signingKeys[0];
  const header = { alg: 'RS256', typ: 'logout+jwt', kid: key.kid, ...headerOverrides };
  const input = `${b64urlJson(header)}.${b64urlJson(claims)}`;
  const privateKey = crypto.createPrivateKey({ key, format: 'jwk' });
  const signature = crypto.sign('RSA-SHA256', Buffer.from(input), privateKey).toString('base64url');
  return `${input}.${signature}`;
}

async function handleTest(req, res, path) {
  if (path === '/__test/health' && req.method === 'GET') {
    return sendJson(res, 200, { ok: true });
  }
  if (path === '/__test/rotate' && req.method === 'POST') {
    await readBody(req);
    signingKeys = [newSigningKey(), ...signingKeys];
    provider = makeProvider(provider.issuer);
    providerCallback = provider.callback();
    const kids = signingKeys.map((key) => key.kid);
    return sendJson(res, 200, { kid: kids[0], kids });
  }
  if (path === '/__test/sign' && req.method === 'POST') {
    let body;
    try {
      body = JSON.parse(await readBody(req) || '{}');
    } catch {
      return sendJson(res, 400, { error: 'body must be JSON' });
    }
    if (typeof body.claims !== 'object' || body.claims === null) {
      return sendJson(res, 400, { error: 'claims must be a JSON object' });
    }
    return sendJson(res, 200, { token: signWithCurrentKey(body.claims, body.header ?? {}) });
  }
  if ((path === '/__test/pad' || path === '/__test/delay') && req.method === 'POST') {
    let body;
    try {
      body = JSON.parse(await readBody(req) || '{}');
    } catch {
      return sendJson(res, 400, { error: 'body must be JSON' });
    }
    const value = path === '/__test/pad' ? body.bytes : body.ms;
    if (!Number.isInteger(value) || value < 0 || value > 64 * 1024 * 1024) {
      return sendJson(res, 400, { error: 'give a non-negative integer' });
    }
    if (path === '/__test/pad') padBytes = value; else delayMs = value;
    return sendJson(res, 200, { ok: true });
  }
  if (path === '/__test/pushed' && req.method === 'GET') {
    return sendJson(res, 200, { count: pushedCount, last: lastPushed });
  }
  if (['/__test/account', '/__test/revoke', '/__test/token-outage'].includes(path)
      && req.method === 'POST') {
    let body;
    try {
      body = JSON.parse(await readBody(req) || '{}');
    } catch {
      return sendJson(res, 400, { error: 'body must be JSON' });
    }
    if (path === '/__test/token-outage') {
      if (!Number.isInteger(body.status) || (body.status && (body.status < 400 || body.status > 599))) {
        return sendJson(res, 400, { error: 'status: 0 or 400-599' });
      }
      tokenOutageStatus = body.status;
      return sendJson(res, 200, { ok: true });
    }
    if (!accounts.has(body.sub)) return sendJson(res, 404, { error: 'no such account' });
    if (path === '/__test/account') {
      if (body.disabled) disabledAccounts.add(body.sub); else disabledAccounts.delete(body.sub);
      return sendJson(res, 200, { ok: true });
    }
    let revoked = 0;
    for (const [key, entry] of [...store.entries()]) {
      if (key.startsWith('Grant:') && entry.payload.accountId === body.sub) {
        const grantId = key.slice('Grant:'.length);
        for (const member of grantMembers.get(grantId) ?? []) store.delete(member);
        grantMembers.delete(grantId);
        store.delete(key);
        revoked += 1;
      }
    }
    return sendJson(res, 200, { revoked });
  }
  if (path === '/__test/tamper' && req.method === 'POST') {
    let mode;
    try {
      ({ mode } = JSON.parse(await readBody(req) || '{}'));
    } catch {
      return sendJson(res, 400, { error: 'body must be JSON' });
    }
    if (!TAMPER_MODES.has(mode)) {
      return sendJson(res, 400, { error: `mode must be one of ${[...TAMPER_MODES].join(', ')}` });
    }
    tamperMode = mode;
    return sendJson(res, 200, { ok: true });
  }
  return sendJson(res, 404, { error: 'not found' });
}

async function finishConsent(req, res, details) {
  const { prompt: { details: missing }, params, session } = details;
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  if (!grant) {
    grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  }
  addRequestedToGrant(grant, missing.missingOIDCScope, missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, {
    mergeWithLastSubmission: true,
  });
}

async function handleInteraction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return sendHtml(res, 400, page('Test OP error', `<p class="error">${escapeHtml(err.message)}</p>`));
  }
  if (details.uid !== uid) {
    return sendHtml(res, 400, page('Test OP error', '<p class="error">interaction mismatch</p>'));
  }
  const promptName = details.prompt.name;

  if (action === undefined && req.method === 'GET') {
    if (promptName === 'consent') return finishConsent(req, res, details);
    const client = await provider.Client.find(details.params.client_id);
    return sendHtml(res, 200, loginPage(uid, {
      clientId: details.params.client_id,
      clientName: client?.clientName,
    }));
  }

  if (action === 'login' && req.method === 'POST') {
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const password = form.get('password') ?? '';
    const account = findAccountByUsername(username);
    if (promptName !== 'login') {
      return sendHtml(res, 400, page('Test OP error', '<p class="error">not a login prompt</p>'));
    }
    if (!account || account.password !== password) {
      return sendHtml(res, 200, loginPage(uid, {
        error: 'Invalid username or password',
        username,
        clientId: details.params.client_id,
        clientName: (await provider.Client.find(details.params.client_id))?.clientName,
      }));
    }
    return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, {
      mergeWithLastSubmission: false,
    });
  }

  return sendHtml(res, 405, page('Test OP error', '<p class="error">method not allowed</p>'));
}

const INTERACTION_RE = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?\/?$/;

async function handle(req, res) {
  const path = new URL(req.url, 'http://placeholder').pathname;
  if (path.startsWith('/__test/')) return handleTest(req, res, path);
  const match = INTERACTION_RE.exec(path);
  if (match) return handleInteraction(req, res, match[1], match[2]);
  if (issuerPath) {
    if (path !== issuerPath && !path.startsWith(`${issuerPath}/`)) {
      return sendJson(res, 404, { error: 'not_found' });
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(issuerPath.length) || '/';
  }
  return providerCallback(req, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`test-op error on ${req.method} ${req.url}: ${err.stack ?? err}\n`);
    if (!res.headersSent) {
      sendJson(res, 500, { error: 'server_error', error_description: String(err.message ?? err) });
    } else {
      res.destroy();
    }
  });
});

server.on('error', (err) => fail(`listen failed: ${err.message}`));

server.listen(port, host, () => {
  const address = server.address();
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const issuer = `http://${hostPart}:${address.port}${issuerPath}`;
  try {
    provider = makeProvider(issuer);
    providerCallback = provider.callback();
  } catch (err) {
    fail(`cannot build provider: ${err.stack ?? err}`);
  }
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
