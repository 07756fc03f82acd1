#!/usr/bin/env bash
# The whole test suite: install what it needs, lint, then pytest (real OP, real
# MongoDB-wire server or $MONGODB_URI, real Chromium, real nginx). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
