#!/usr/bin/env bash
# The whole test suite: install what it needs, lint, then pytest (real OP, real
# MongoDB-wire server or $MONGODB_URI, real Chromium, real nginx). Extra arguments go to pytest.
# pytest-xdist: one worker per CPU (PYTEST_WORKERS=N to choose, 0 for none), each with its own
# OP, store, Chromium; --dist loadfile keeps a module on one worker, so its module-scoped
# fixtures (one nginx, one gateway with read-only data) are set up once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -p no:cacheprovider -n "${PYTEST_WORKERS:-auto}" --dist loadfile "$@"
