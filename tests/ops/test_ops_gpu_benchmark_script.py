"""benchmarks/gpu_kernels.py on a CPU host: a clean exit without a GPU, and a working smoke run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_kernels.py"
OPS = {
    "pool_classify",
    "embedding_layernorm",
    "knn_topk",
    "knn_proxy_scores",
    "logme_evidence",
    "logme_scores",
}


def _run(*args: str, interpret: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU, whatever the host has
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_without_gpu_it_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run("--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA GPU available" in proc.stdout
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_smoke_run_checks_every_kernel_in_the_interpreter(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _run("--smoke", "--out", str(out), interpret=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke" and result["all_ok"]
    assert set(result["kernels_covered"]) == OPS
    assert all(r["ok"] and r["max_err"] <= r["tol"] for r in result["cases"])


def test_full_run_covers_every_kernel_at_search_and_surrogate_sizes():
    spec = importlib.util.spec_from_file_location("gpu_kernels_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = [name for name, _ in mod.build_cases(quick=False)]
    assert {n.split()[0] for n in names} == OPS
    assert {n.split()[0] for n, _ in mod.build_cases(quick=True)} == OPS
