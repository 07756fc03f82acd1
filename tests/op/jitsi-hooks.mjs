// Module hooks that let Node run a few of Jitsi Meet's own TypeScript files (jitsi-src/,
// see fetch-jitsi-source.sh) outside their app. Relative imports between the files listed in
// REAL resolve to them; the npm packages in PACKAGES come from node_modules (the versions
// Jitsi pins); every other import (redux state, logger, lib-jitsi-meet, react-native,
// types...) is bound to a stand-in from globalThis.__jitsiStubs (undefined when none is
// given). Only import lines are rewritten; Jitsi's code is otherwise run as published.
import { readFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';

const SRC = new URL('./jitsi-src/react/features/', import.meta.url).href;

const REAL = new Set([
  'base/util/parseURLParams.ts',
  'base/util/helpers.ts',
  'base/util/uri.ts',
  'base/util/strings.web.ts',
  'base/jwt/functions.ts',
  'authentication/functions.any.ts',
  'authentication/functions.web.ts',
  'authentication/functions.native.ts',
]);

const PACKAGES = ['@jitsi/js-utils', 'base64-js'];

const IMPORT_RE = /^import\s+(type\s+)?([\s\S]*?)\s+from\s+'([^']+)';?$/gm;
const REEXPORT_RE = /^export\s+(?:\*|\{[^}]*\})\s+from\s+'([^']+)';?$/gm;

// Jitsi's bundler picks `<name>.web.ts` for the web build; plain `<name>.ts` otherwise.
function realTarget(specifier, parentUrl) {
  if (!specifier.startsWith('.')) return null;
  for (const suffix of ['.ts', '.web.ts']) {
    const url = new URL(`${specifier}${suffix}`, parentUrl).href;
    if (url.startsWith(SRC) && REAL.has(url.slice(SRC.length))) return url;
  }
  return null;
}

function bindStub(clause, specifier) {
  const lookup = `(globalThis.__jitsiStubs?.[${JSON.stringify(specifier)}] ?? {})`;
  const out = [];
  const named = clause.match(/\{([\s\S]*)\}/);
  const defaultName = clause.replace(/\{[\s\S]*\}/, '').replace(/,/g, '').trim();
  if (defaultName.startsWith('* as ')) {
    out.push(`const ${defaultName.slice(5).trim()} = ${lookup};`);
  } else if (defaultName) {
    out.push(`const ${defaultName} = ${lookup}.default;`);
  }
  if (named) {
    const names = named[1].split(',').map((n) => n.trim()).filter(Boolean)
      .map((n) => n.replace(/^type\s+/, '').replace(/\s+as\s+/, ': '));
    out.push(`const { ${names.join(', ')} } = ${lookup};`);
  }
  return out.join(' ');
}

export async function load(url, context, next) {
  if (!url.startsWith(SRC) || !url.endsWith('.ts')) return next(url, context);
  const text = await readFile(new URL(url), 'utf8');
  const rewritten = text.replace(IMPORT_RE, (line, typeOnly, clause, specifier) => {
    if (typeOnly) return '';
    if (PACKAGES.some((p) => specifier === p || specifier.startsWith(`${p}/`))
        || realTarget(specifier, url)) {
      const target = realTarget(specifier, url);
      return target ? line.replace(`'${specifier}'`, `'${target}'`) : line;
    }
    return bindStub(clause, specifier);
  }).replace(REEXPORT_RE, (line, specifier) => {
    const target = realTarget(specifier, url);
    if (!target) throw new Error(`${url}: re-export of ${specifier}, which is not loaded`);
    return line.replace(`'${specifier}'`, `'${target}'`);
  });
  return { format: 'module', source: stripTypeScriptTypes(rewritten, { mode: 'transform' }), shortCircuit: true };
}
