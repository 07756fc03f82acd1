// Runs URLs through Jitsi Meet's own web-client code (see jitsi-hooks.mjs), for the tests.
//
// Usage: node jitsi-url.mjs < requests.json   (a JSON array; the answer is a JSON array)
//   {"op": "jwt", "url": U}      -> parseJWTFromURLParams(new URL(U)): the token Jitsi uses
//   {"op": "hash", "url": U}     -> parseURLParams(U): the hash parameters Jitsi applies
//   {"op": "search", "url": U}   -> parseURLParams(U, true, 'search')
import { register } from 'node:module';

register('./jitsi-hooks.mjs', import.meta.url);

// helpers.reportError (called for a hash value that is not JSON) reports to window.onerror.
globalThis.window = {};

const { parseURLParams } = await import('./jitsi-src/react/features/base/util/parseURLParams.ts');
const { parseJWTFromURLParams } = await import('./jitsi-src/react/features/base/jwt/functions.ts');

const OPS = {
  jwt: (r) => parseJWTFromURLParams(new URL(r.url)) ?? null,
  hash: (r) => parseURLParams(r.url),
  search: (r) => parseURLParams(r.url, true, 'search'),
};

let input = '';
for await (const chunk of process.stdin) input += chunk;
const answers = JSON.parse(input).map((request) => {
  const op = OPS[request.op];
  if (!op) return { error: `unknown op ${request.op}` };
  try {
    return { value: op(request) ?? null };
  } catch (err) {
    return { error: String(err?.message ?? err) };
  }
});
process.stdout.write(JSON.stringify(answers));
