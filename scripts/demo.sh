#!/usr/bin/env bash
# The README's main command: sets everything up (idempotent), prepares the models, runs the demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
.venv/bin/poodle models prepare
# The model store the demo's search picks from: the prepared bases plus the quick zoo (task-tuned,
# truncated and control models; about 4 minutes once, then kept).
.venv/bin/poodle store build-zoo --quick
exec .venv/bin/poodle demo "$@"
