"""One shared `vllm serve` with Poodle and the real 135M model for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from poodle_vllm.launcher import ServerProcess, ServerSpec, free_port
from poodle_vllm.paths import resolve_paths

# The loop must complete within a test: small thresholds, a fixed small base model, and a gate
# that tests the mechanics (the demo runs the real statistical gate).
E2E_POODLE = {
    "worker": True,
    "detection": {"min_requests": 4},
    "serving": {
        "policy": "auto",
        "min_train_items": 60,
        "shadow_requests": 20,
        "shadow_min_per_label": 2,
        "gate_target": 0.0,
        "audit_fraction": 0.0,
        "registry_poll_s": 0.5,
    },
    "development": {"base_model": "paraphrase-minilm-l3-v2", "epochs": 3, "max_length": 64, "num_threads": 2},
}


@pytest.fixture(scope="session")
def e2e_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("poodle-e2e-state")


@pytest.fixture(scope="session")
def poodle_server(e2e_state: Path):
    from poodle_vllm.models import LLM_NAME, prepared_model_path

    try:
        model = str(prepared_model_path(LLM_NAME))
    except FileNotFoundError as exc:
        pytest.skip(str(exc)) if not os.environ.get("CI") else pytest.fail(str(exc))
    paths = resolve_paths(state=e2e_state)
    spec = ServerSpec(model=model, port=free_port(), poodle={**E2E_POODLE, "state_dir": str(e2e_state)})
    server = ServerProcess(spec, e2e_state / "server.log", paths)
    server.start(timeout_s=600)
    yield server
    server.stop()
