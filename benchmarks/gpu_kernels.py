"""Check and time Poodle's Triton kernels against their torch references on a CUDA GPU.

Usage (from the repository root):
    python benchmarks/gpu_kernels.py [--quick] [--budget-s 420]

For every kernel and a few realistic sizes it
  1. checks the kernel output against ``poodle_vllm.ops.reference`` (tolerances in each row),
  2. times kernel and reference: CUDA-event median of many runs after warm-up,
prints a table and writes benchmarks/results/gpu_kernels.json.

Needs only torch and triton (it imports ``poodle_vllm.ops`` modules, which themselves
import only torch/triton; no vLLM).  Without a CUDA GPU it prints a message and exits 0.
Stops adding cases once ``--budget-s`` is spent so the whole run stays under 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "gpu_kernels.json"

import torch  # noqa: E402


def cuda_median_ms(fn: Callable[[], Any], warmup: int = 10, runs: int = 100, max_s: float = 5.0) -> float:
    """Median of per-call CUDA-event times in ms after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    t_end = time.perf_counter() + max_s
    while len(times) < runs and (len(times) < 10 or time.perf_counter() < t_end):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max().item()) if a.numel() else 0.0


# ----------------------------------------------------------------------------- cases


def case_pool_classify(b: int, seq: int, h: int, c: int, dtype: torch.dtype) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.pool_classify import pool_classify

    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(b, seq, h, device="cuda", generator=g).to(dtype)
    lengths = torch.randint(1, seq + 1, (b,), device="cuda", generator=g)
    mask = (torch.arange(seq, device="cuda")[None] < lengths[:, None]).long()
    w = (torch.randn(c, h, device="cuda", generator=g) * 0.05).to(dtype)
    bias = torch.randn(c, device="cuda", generator=g).to(dtype)
    logits, probs = pool_classify(hidden, mask, w, bias, 1.7)
    ref_logits, ref_probs = reference.pool_classify(hidden, mask, w, bias, 1.7)
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    err = max(
        _max_err(probs, ref_probs), _max_err(logits, ref_logits) / max(1.0, float(ref_logits.abs().max()))
    )
    return {
        "op": "pool_classify",
        "shape": f"B={b} L={seq} H={h} C={c} {str(dtype).replace('torch.', '')}",
        "max_err": err,
        "tol": tol,
        "ok": err <= tol,
        "kernel_ms": cuda_median_ms(lambda: pool_classify(hidden, mask, w, bias, 1.7)),
        "reference_ms": cuda_median_ms(lambda: reference.pool_classify(hidden, mask, w, bias, 1.7)),
    }


def case_embedding_layernorm(b: int, seq: int, h: int, dtype: torch.dtype) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.embedding_layernorm import embedding_layernorm

    g = torch.Generator(device="cuda").manual_seed(1)
    vocab = 30522
    word = torch.randn(vocab, h, device="cuda", generator=g).to(dtype)
    pos = torch.randn(512, h, device="cuda", generator=g).to(dtype)
    typ = torch.randn(2, h, device="cuda", generator=g).to(dtype)
    gamma = (1 + 0.1 * torch.randn(h, device="cuda", generator=g)).to(dtype)
    beta = (0.1 * torch.randn(h, device="cuda", generator=g)).to(dtype)
    ids = torch.randint(0, vocab, (b, seq), device="cuda", generator=g)
    types = torch.randint(0, 2, (b, seq), device="cuda", generator=g)
    args = (ids, word, pos, typ, gamma, beta, types)
    out = embedding_layernorm(*args)
    ref = reference.embedding_layernorm(*args)
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # bf16/fp16 output rounding (values ~N(0,1))
    err = _max_err(out, ref)
    return {
        "op": "embedding_layernorm",
        "shape": f"B={b} L={seq} H={h} V={vocab} {str(dtype).replace('torch.', '')}",
        "max_err": err,
        "tol": tol,
        "ok": err <= tol,
        "kernel_ms": cuda_median_ms(lambda: embedding_layernorm(*args)),
        "reference_ms": cuda_median_ms(lambda: reference.embedding_layernorm(*args)),
    }


def case_knn_topk(m: int, n: int, d: int, k: int) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.knn_topk import knn_topk

    g = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(m, n, d, device="cuda", generator=g)
    dist, idx = knn_topk(x, k, "cosine")
    ref_dist, ref_idx = reference.knn_topk(x, k, "cosine")
    # Distances must match; each returned index must sit at its reported distance.
    y = reference.prepare_knn_features(x, "cosine")
    gathered = (
        (y.unsqueeze(2) - y.gather(1, idx.reshape(m, -1, 1).expand(-1, -1, d)).reshape(m, n, k, d)) ** 2
    ).sum(-1)
    err = max(_max_err(dist, ref_dist), _max_err(gathered, dist))
    tol = 1e-3
    return {
        "op": "knn_topk",
        "shape": f"M={m} N={n} D={d} k={k} cosine",
        "max_err": err,
        "tol": tol,
        "ok": err <= tol,
        "index_agreement": float((idx == ref_idx).float().mean().item()),
        "kernel_ms": cuda_median_ms(lambda: knn_topk(x, k, "cosine"), warmup=3, runs=30),
        "reference_ms": cuda_median_ms(lambda: reference.knn_topk(x, k, "cosine"), warmup=3, runs=30),
    }


def case_logme(m: int, n: int, d: int, c: int) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.logme import logme_evidence

    g = torch.Generator(device="cuda").manual_seed(3)
    labels = torch.randint(0, c, (n,), device="cuda", generator=g)
    centers = torch.randn(c, d, device="cuda", generator=g)
    x = centers[labels][None] * 0.3 + torch.randn(m, n, d, device="cuda", generator=g)
    s, z_sq, resid = reference.logme_prepare(x, labels)  # shared eigh step (cuSOLVER)
    got = logme_evidence(s, z_sq, resid, n, d)
    want = reference.logme_evidence(s, z_sq, resid, n, d)
    err = _max_err(got, want)
    tol = 1e-8
    return {
        "op": "logme_evidence",
        "shape": f"M={m} N={n} D={d} C={c} fp64 (iteration only)",
        "max_err": err,
        "tol": tol,
        "ok": err <= tol,
        "kernel_ms": cuda_median_ms(lambda: logme_evidence(s, z_sq, resid, n, d), warmup=3, runs=30),
        "reference_ms": cuda_median_ms(
            lambda: reference.logme_evidence(s, z_sq, resid, n, d), warmup=2, runs=10
        ),
        "prepare_eigh_ms": cuda_median_ms(lambda: reference.logme_prepare(x, labels), warmup=2, runs=10),
    }


def build_cases(quick: bool) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("pool_classify small", lambda: case_pool_classify(32, 64, 384, 2, f32)),
        ("pool_classify fp16", lambda: case_pool_classify(64, 128, 384, 8, f16)),
        ("embedding_layernorm", lambda: case_embedding_layernorm(64, 128, 384, f32)),
        ("knn_topk", lambda: case_knn_topk(4, 2048, 384, 10)),
        ("logme_evidence", lambda: case_logme(4, 2048, 384, 4)),
    ]
    if not quick:
        cases += [
            ("pool_classify large", lambda: case_pool_classify(256, 256, 768, 32, bf16)),
            ("pool_classify many labels", lambda: case_pool_classify(64, 128, 384, 1000, f32)),
            ("embedding_layernorm bf16", lambda: case_embedding_layernorm(256, 256, 768, bf16)),
            ("knn_topk large", lambda: case_knn_topk(8, 4096, 768, 10)),
            ("knn_topk k=32", lambda: case_knn_topk(16, 1024, 384, 32)),
            ("logme_evidence many", lambda: case_logme(16, 4096, 768, 20)),
        ]
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="four small cases only")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop adding cases after this many seconds")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_kernels: no CUDA GPU available; nothing to do (run the CPU checks with pytest tests/ops).")
        return 0
    try:
        import triton
    except ImportError:
        print("gpu_kernels: triton is not installed; nothing to do.")
        return 0

    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name, fn in build_cases(args.quick):
        if time.perf_counter() - t0 > args.budget_s:
            rows.append({"op": name, "skipped": "time budget spent"})
            continue
        try:
            row = fn()
            row["speedup"] = row["reference_ms"] / row["kernel_ms"] if row["kernel_ms"] > 0 else None
        except Exception as exc:  # noqa: BLE001 - record and keep going: one bad kernel must not hide the rest
            row = {"op": name, "error": repr(exc), "traceback": traceback.format_exc(limit=6)}
            print(row["traceback"], file=sys.stderr)
        row["case"] = name
        rows.append(row)
        torch.cuda.empty_cache()

    header = ("case", "shape", "ok", "max_err", "kernel ms", "ref ms", "speedup")
    table = []
    for r in rows:
        if "kernel_ms" in r:
            table.append(
                (
                    r["case"],
                    r["shape"],
                    "yes" if r["ok"] else "NO",
                    f"{r['max_err']:.2e}",
                    f"{r['kernel_ms']:.4f}",
                    f"{r['reference_ms']:.4f}",
                    f"{r['speedup']:.2f}x",
                )
            )
        else:
            table.append(
                (
                    r.get("case", r["op"]),
                    "-",
                    "ERROR" if "error" in r else "skipped",
                    r.get("error", r.get("skipped", ""))[:60],
                    "-",
                    "-",
                    "-",
                )
            )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=False)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)))
    for t in table:
        print("  ".join(str(x).ljust(w) for x, w in zip(t, widths, strict=False)))

    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "elapsed_s": time.perf_counter() - t0,
        "all_ok": all(r.get("ok", False) for r in rows if "skipped" not in r),
        "cases": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)} in {result['elapsed_s']:.0f} s; all_ok={result['all_ok']}")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
