#!/usr/bin/env bash
# Jitsi Meet's own web-client source for the tests: the files that read a room URL
# (parseURLParams, parseJWTFromURLParams) and build tokenAuthUrl (authentication/functions).
# jitsi-meet publishes its react/ tree on npm as @jitsi/react-native-sdk; that package cannot
# be installed with its dependencies (one is a GitHub tarball), so the pinned tarball is
# fetched from the npm registry, checked against its pinned integrity and the few files are
# extracted into tests/op/jitsi-src (not committed). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=13.2.0
INTEGRITY="sha512-J7itSoy85IScxeC4letOtoS33Sp0tH5hLYFHYtH+v3WQwLjganuWlFCjlDbL5ks9ebGhVNsCyCBdML9qC+SAWw=="
DEST=jitsi-src
[[ -f "$DEST/VERSION" && "$(cat "$DEST/VERSION")" == "$VERSION" ]] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm pack --silent --pack-destination "$tmp" "@jitsi/react-native-sdk@$VERSION" >/dev/null
tarball=$(ls "$tmp"/*.tgz)
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ "$actual" != "$INTEGRITY" ]]; then
  echo "fetch-jitsi-source: integrity mismatch for @jitsi/react-native-sdk@$VERSION" >&2
  exit 1
fi
rm -rf "$DEST"
mkdir -p "$DEST"
tar xzf "$tarball" -C "$DEST" --strip-components=1 \
  package/react/features/base/util/parseURLParams.ts \
  package/react/features/base/util/helpers.ts \
  package/react/features/base/util/uri.ts \
  package/react/features/base/util/strings.web.ts \
  package/react/features/authentication/functions.any.ts \
  package/react/features/authentication/functions.web.ts \
  package/react/features/authentication/functions.native.ts \
  package/react/features/base/jwt/functions.ts
echo "$VERSION" > "$DEST/VERSION"
