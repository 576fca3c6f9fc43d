#!/usr/bin/env bash
# The test suite from a fresh clone: installs into .venv, then ruff and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k dht).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv test
.venv/bin/ruff check mycelium_p2p tests scripts
.venv/bin/ruff format --check mycelium_p2p tests scripts
exec .venv/bin/python -m pytest "$@"
