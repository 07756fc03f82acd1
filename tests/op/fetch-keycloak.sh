#!/usr/bin/env bash
# Keycloak's server distribution (Quarkus, org.keycloak:keycloak-quarkus-dist) for
# tests/test_keycloak.py: fetched from Maven Central with Maven, checked against its pinned
# sha256 and unpacked into ${XDG_CACHE_HOME:-~/.cache}/jitsi-oidc-gateway/keycloak-<version>
# (outside the repository; tests/support/keycloak.py starts a copy of it). 26.7.3 is the
# newest version Maven Central serves here; it starts on the machine's OpenJDK 17. Idempotent.
set -euo pipefail
VERSION=26.7.3
SHA256=77657f30b7e90d70f727712ce1c967f430fd6a5e9f458d32d8c6df0635345f47
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/jitsi-oidc-gateway"
HOME_DIR="$CACHE/keycloak-$VERSION"
[[ -x "$HOME_DIR/bin/kc.sh" ]] && exit 0
mkdir -p "$CACHE"
archive="$CACHE/keycloak-quarkus-dist-$VERSION.tar.gz"
if [[ ! -f "$archive" ]] || ! echo "$SHA256  $archive" | sha256sum -c --quiet - 2>/dev/null; then
  rm -f "$archive"
  mvn -q -B dependency:copy "-Dartifact=org.keycloak:keycloak-quarkus-dist:$VERSION:tar.gz" \
    "-DoutputDirectory=$CACHE"
fi
if ! echo "$SHA256  $archive" | sha256sum -c --quiet -; then
  echo "fetch-keycloak: sha256 mismatch for keycloak-quarkus-dist $VERSION" >&2
  rm -f "$archive"
  exit 1
fi
tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar xzf "$archive" -C "$tmp"
mv "$tmp/keycloak-$VERSION" "$HOME_DIR"
