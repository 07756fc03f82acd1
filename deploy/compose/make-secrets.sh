#!/usr/bin/env bash
# Create the secret files docker-compose.yml mounts (mode 600). The cookie secret is random;
# the Jitsi app secret must equal Prosody's, the client secret the one your IdP issued.
set -euo pipefail
cd "$(dirname "$0")/secrets"
umask 077
[[ -s cookie_secret ]] || head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > cookie_secret
for name in jitsi_app_secret idp_client_secret; do
  if [[ ! -s $name ]]; then
    read -r -s -p "$name: " value && echo
    printf '%s' "$value" > "$name"
  fi
done
ls -l
