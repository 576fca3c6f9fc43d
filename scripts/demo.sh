#!/usr/bin/env bash
# The main job from a fresh clone: installs into .venv, then runs `mycelium-p2p demo`.
# Extra arguments go to the demo (e.g. scripts/demo.sh --duration 30).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv bench
exec .venv/bin/mycelium-p2p demo "$@"
