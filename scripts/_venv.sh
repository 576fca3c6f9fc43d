# Sourced by scripts/test.sh and scripts/demo.sh: make .venv and install the package into it.
# torch is pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build); set
# TORCH_SPEC to choose another, e.g. TORCH_SPEC="torch==2.13.0+cpu" with PIP_EXTRA_INDEX_URL
# pointing at PyTorch's CPU wheel index on machines that have no local wheel.
ensure_venv() {
  local extras=$1 py=${PYTHON:-python3}
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "mycelium-p2p needs Python >= 3.10 (set PYTHON=...)" >&2; return 1; }
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    "${TORCH_SPEC:-torch==2.13.0}" -e ".[$extras]"
}
