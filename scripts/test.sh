#!/usr/bin/env bash
# The README's test command: sets everything up (idempotent), prepares the models, runs all tests
# (unit and end-to-end; end-to-end tests start a real `vllm serve` on 127.0.0.1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
.venv/bin/poodle models prepare
exec .venv/bin/pytest "$@"
