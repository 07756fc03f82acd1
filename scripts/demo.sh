#!/usr/bin/env bash
# Run the demo: embedded store, local test OP, Jitsi stand-in and the gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/jitsi-oidc-gateway demo "$@"
