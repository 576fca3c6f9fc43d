#!/usr/bin/env bash
# The test suite from a fresh clone: installs into .venv, then ruff, mypy, the docs build and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k dht).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv test
.venv/bin/ruff check mycelium_p2p tests scripts
.venv/bin/ruff format --check mycelium_p2p tests scripts
.venv/bin/mypy  # strict, on mycelium_p2p (pyproject.toml's [tool.mypy])
# the docs: a broken link, anchor or missing page fails the build (warnings are errors)
site="$(mktemp -d)"
.venv/bin/mkdocs build --strict --site-dir "$site" >"$site.log" 2>&1 || { cat "$site.log"; exit 1; }
rm -rf "$site" "$site.log"
exec .venv/bin/python -m pytest "$@"
