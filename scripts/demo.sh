#!/usr/bin/env bash
# The README's main command: sets everything up (idempotent), prepares the models, runs the demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
.venv/bin/poodle models prepare
exec .venv/bin/poodle demo "$@"
