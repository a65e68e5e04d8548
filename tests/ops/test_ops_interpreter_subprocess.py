"""Rerun the Triton kernel tests in a fresh process when this one cannot interpret them.

On a CPU host the kernels run in Triton's interpreter, which must be enabled before
triton is first imported.  In a full test session vLLM may import triton first; then the
in-process kernel tests skip and this test runs them in a clean interpreter instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="GPU hosts run the kernels compiled, in-process")
def test_kernel_tests_pass_in_fresh_interpreter_process(triton_preimported):
    if not triton_preimported:
        pytest.skip("triton not imported before the ops tests: they already ran in-process")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(HERE),
            "-k",
            "not fresh_interpreter",
        ],
        cwd=HERE.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
