// Module hooks that let Node run a few of Jitsi Meet's own TypeScript files (jitsi-src/,
// see fetch-jitsi-source.sh) outside their app. Relative imports between the files listed in
// REAL resolve to them; `@jitsi/js-utils` comes from node_modules; every other import (redux
// state, logger, lib-jitsi-meet, types...) is bound to a stand-in from globalThis.__jitsiStubs
// (undefined when none is given): the functions under test do not call those. Only import
// lines are rewritten; Jitsi's code is otherwise run as published.
import { readFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';

const SRC = new URL('./jitsi-src/react/features/', import.meta.url).href;

const REAL = new Set([
  'base/util/parseURLParams.ts',
  'base/util/helpers.ts',
  'base/jwt/functions.ts',
  'authentication/functions.any.ts',
  'authentication/functions.web.ts',
]);

const IMPORT_RE = /^import\s+(type\s+)?([\s\S]*?)\s+from\s+'([^']+)';?$/gm;

function realTarget(specifier, parentUrl) {
  if (!specifier.startsWith('.')) return null;
  const url = new URL(`${specifier}.ts`, parentUrl).href;
  return url.startsWith(SRC) && REAL.has(url.slice(SRC.length)) ? url : null;
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
    if (specifier.startsWith('@jitsi/js-utils') || realTarget(specifier, url)) {
      const target = realTarget(specifier, url);
      return target ? line.replace(`'${specifier}'`, `'${target}'`) : line;
    }
    return bindStub(clause, specifier);
  });
  return { format: 'module', source: stripTypeScriptTypes(rewritten), shortCircuit: true };
}
