"""Fixtures for the ops tests: the Triton wrappers, interpreted on CPU when there is no GPU.

NOTE: triton decides "interpreted or compiled" when its own modules and our kernel files
are imported, so ``TRITON_INTERPRET=1`` must be set before the first ``import triton`` in
the process.  We set it here (process-wide, CPU-only hosts) when triton is not imported
yet.  If an earlier test already imported triton (e.g. through vLLM), the in-process
kernel tests skip and ``test_ops_interpreter_subprocess.py`` reruns them in a fresh
process instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
DEVICE = "cuda" if HAS_CUDA else "cpu"

_OPS = ("pool_classify", "embedding_layernorm", "knn_topk", "logme")

if not HAS_CUDA and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# True when kernels launched in this process will run (compiled on a GPU, or interpreted).
INTERPRET_READY = HAS_CUDA or (
    os.environ.get("TRITON_INTERPRET") == "1"
    and (
        "triton" not in sys.modules
        or bool(
            getattr(sys.modules["triton"], "knobs", None) and sys.modules["triton"].knobs.runtime.interpret
        )
    )
)
_PREIMPORTED = "triton" in sys.modules


@pytest.fixture(scope="session")
def triton_ops() -> types.SimpleNamespace:
    """The Triton wrapper modules (``.pool_classify``, ``.embedding_layernorm``, ``.knn_topk``, ``.logme``)."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    if not HAS_CUDA and _PREIMPORTED:
        pytest.skip(
            "triton was imported before TRITON_INTERPRET=1 could be set (an earlier test imported "
            "vLLM/triton); test_ops_interpreter_subprocess.py runs these tests in a fresh process"
        )
    return types.SimpleNamespace(
        **{op: importlib.import_module(f"poodle_vllm.ops.triton.{op}") for op in _OPS}
    )


@pytest.fixture(scope="session")
def triton_preimported() -> bool:
    """True when triton was imported (not interpreted) before these tests could enable interpretation."""
    return not HAS_CUDA and _PREIMPORTED
