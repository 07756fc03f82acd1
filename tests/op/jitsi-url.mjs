// Runs URLs through Jitsi Meet's own web-client code (see jitsi-hooks.mjs), for the tests.
//
// Usage: node jitsi-url.mjs < requests.json   (a JSON array; the answer is a JSON array)
//   {"op": "jwt", "url": U}      -> parseJWTFromURLParams(new URL(U)): the token Jitsi uses
//   {"op": "hash", "url": U}     -> parseURLParams(U): the hash parameters Jitsi applies
//   {"op": "search", "url": U}   -> parseURLParams(U, true, 'search')
//   {"op": "tokenAuthUrl", "platform": "web"|"electron"|"ios"|"android",
//    "tokenAuthUrl": T, "location": L, "room": R, "tenant": N, "options": {...},
//    "refreshToken": X}
//                                -> getTokenAuthUrl(...) of the web build (web, electron) or
//                                   of the app build (ios, android): the URL Jitsi's login
//                                   button opens; "codeVerifier" is what it kept for PKCE
import { register } from 'node:module';

register('./jitsi-hooks.mjs', import.meta.url);

const current = { platform: 'web' };
const session = new Map();
// The browser globals the functions under test touch. helpers.reportError (called for a
// hash value that is not JSON) reports to window.onerror.
globalThis.window = {
  crypto: globalThis.crypto,
  sessionStorage: {
    getItem: (k) => session.get(k) ?? null,
    setItem: (k, v) => session.set(k, String(v)),
    removeItem: (k) => session.delete(k),
  },
};
const quiet = { debug() {}, info() {}, log() {}, warn() {}, error() {} };
globalThis.__jitsiStubs = {
  './logger': { default: quiet },
  '../jaas/functions': { isVpaasMeeting: () => false },
  '../../jaas/functions': { isVpaasMeeting: () => false },
  '@braintree/sanitize-url': { sanitizeUrl: (url) => url },
  '../base/lib-jitsi-meet': { browser: { isElectron: () => current.platform === 'electron' } },
  'react-native': { Platform: { get OS() { return current.platform; } } },
};

const base = './jitsi-src/react/features';
const { parseURLParams } = await import(`${base}/base/util/parseURLParams.ts`);
const { parseJWTFromURLParams } = await import(`${base}/base/jwt/functions.ts`);
const web = await import(`${base}/authentication/functions.web.ts`);
const native = await import(`${base}/authentication/functions.native.ts`);

async function tokenAuthUrl(r) {
  current.platform = r.platform ?? 'web';
  session.clear();
  const build = ['ios', 'android'].includes(current.platform) ? native : web;
  const url = await build.getTokenAuthUrl(
    { tokenAuthUrl: r.tokenAuthUrl },
    new URL(r.location),
    r.options ?? {},
    r.room,
    r.tenant ?? undefined,
    r.refreshToken ?? undefined,
  );
  return { url, codeVerifier: session.get('code_verifier') ?? null };
}

const OPS = {
  jwt: (r) => parseJWTFromURLParams(new URL(r.url)) ?? null,
  hash: (r) => parseURLParams(r.url),
  search: (r) => parseURLParams(r.url, true, 'search'),
  tokenAuthUrl,
};

let input = '';
for await (const chunk of process.stdin) input += chunk;
const answers = [];
for (const request of JSON.parse(input)) {
  const op = OPS[request.op];
  if (!op) {
    answers.push({ error: `unknown op ${request.op}` });
    continue;
  }
  try {
    answers.push({ value: (await op(request)) ?? null });
  } catch (err) {
    answers.push({ error: String(err?.stack ?? err) });
  }
}
process.stdout.write(JSON.stringify(answers));
