"""Check and time Poodle's Triton kernels against their torch references on a CUDA GPU.

Usage (from the repository root):
    python benchmarks/gpu_kernels.py [--quick] [--budget-s 400] [--out PATH]
    TRITON_INTERPRET=1 python benchmarks/gpu_kernels.py --smoke   # CPU: tiny sizes, code paths only

For every kernel, at the sizes the surrogate and the model search meet (batch 32-256, sequence
128/256, hidden 384/768; kNN / LogME over N = 500-5000 items and 8-16 candidates), it
  1. checks the kernel output against ``poodle_vllm.ops.reference`` (tolerance in each row),
  2. times kernel and reference: CUDA-event median of many runs after warm-up,
prints a table and writes benchmarks/results/gpu_kernels.json.

Cases: ``pool_classify`` (surrogate tail), ``embedding_layernorm`` (surrogate head),
``knn_topk`` and ``knn_proxy_scores`` (kNN proxy score), ``logme_evidence`` (the iteration alone)
and ``logme_scores`` (what the search calls: shared ``eigh``/SVD step + iteration).

Needs only torch and triton (``poodle_vllm.ops`` imports nothing else; no vLLM, no network).
Without a CUDA GPU it prints why and exits 0 without writing anything; ``--smoke`` instead runs
every case at tiny sizes in Triton's CPU interpreter (timings meaningless) to prove the script
itself works. Stops starting cases once ``--budget-s`` is spent, so a run stays under 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
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

DEVICE = "cuda"
"""Where the cases run: ``cuda``, or ``cpu`` for ``--smoke`` (interpreted kernels)."""


def median_ms(fn: Callable[[], Any], warmup: int = 10, runs: int = 100, max_s: float = 5.0) -> float:
    """Median per-call time in ms after ``warmup`` calls (CUDA events); one plain call on CPU
    (``--smoke``: the interpreter's timings mean nothing, only the code path is exercised)."""
    if DEVICE != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_end = time.perf_counter() + max_s
    torch.cuda.synchronize()
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


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def _row(
    op: str, shape: str, err: float, tol: float, kernel_ms: float, ref_ms: float, **extra: Any
) -> dict[str, Any]:
    return {"op": op, "shape": shape, "max_err": err, "tol": tol, "ok": err <= tol,
            "kernel_ms": kernel_ms, "reference_ms": ref_ms, **extra}  # fmt: skip


# ----------------------------------------------------------------------------- cases


def case_pool_classify(b: int, seq: int, h: int, c: int, dtype: torch.dtype) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.pool_classify import pool_classify

    g = _gen(0)
    hidden = torch.randn(b, seq, h, device=DEVICE, generator=g).to(dtype)
    lengths = torch.randint(1, seq + 1, (b,), device=DEVICE, generator=g)  # ragged, padded batch
    mask = (torch.arange(seq, device=DEVICE)[None] < lengths[:, None]).long()
    w = (torch.randn(c, h, device=DEVICE, generator=g) * 0.05).to(dtype)
    bias = torch.randn(c, device=DEVICE, generator=g).to(dtype)
    logits, probs = pool_classify(hidden, mask, w, bias, 1.7)
    ref_logits, ref_probs = reference.pool_classify(hidden, mask, w, bias, 1.7)
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    err = max(
        _max_err(probs, ref_probs), _max_err(logits, ref_logits) / max(1.0, float(ref_logits.abs().max()))
    )
    return _row(
        "pool_classify", f"B={b} L={seq} H={h} C={c} {str(dtype).replace('torch.', '')}", err, tol,
        median_ms(lambda: pool_classify(hidden, mask, w, bias, 1.7)),
        median_ms(lambda: reference.pool_classify(hidden, mask, w, bias, 1.7)),
    )  # fmt: skip


def case_embedding_layernorm(
    b: int, seq: int, h: int, dtype: torch.dtype, vocab: int = 30522
) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.embedding_layernorm import embedding_layernorm

    g = _gen(1)
    word = torch.randn(vocab, h, device=DEVICE, generator=g).to(dtype)
    pos = torch.randn(max(512, seq), h, device=DEVICE, generator=g).to(dtype)
    typ = torch.randn(2, h, device=DEVICE, generator=g).to(dtype)
    gamma = (1 + 0.1 * torch.randn(h, device=DEVICE, generator=g)).to(dtype)
    beta = (0.1 * torch.randn(h, device=DEVICE, generator=g)).to(dtype)
    ids = torch.randint(0, vocab, (b, seq), device=DEVICE, generator=g)
    types = torch.randint(0, 2, (b, seq), device=DEVICE, generator=g)
    args = (ids, word, pos, typ, gamma, beta, types)
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # bf16/fp16 output rounding (values ~N(0,1))
    err = _max_err(embedding_layernorm(*args), reference.embedding_layernorm(*args))
    return _row(
        "embedding_layernorm", f"B={b} L={seq} H={h} V={vocab} {str(dtype).replace('torch.', '')}", err, tol,
        median_ms(lambda: embedding_layernorm(*args)), median_ms(lambda: reference.embedding_layernorm(*args)),
    )  # fmt: skip


def _search_features(m: int, n: int, d: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """M candidates' features of N labelled items: class signal of varying strength plus noise."""
    g = _gen(seed)
    labels = torch.randint(0, c, (n,), device=DEVICE, generator=g)
    centers = torch.randn(c, d, device=DEVICE, generator=g)
    strength = torch.linspace(0.1, 1.0, m, device=DEVICE)[:, None, None]
    return strength * centers[labels][None] + torch.randn(m, n, d, device=DEVICE, generator=g), labels


def case_knn_topk(m: int, n: int, d: int, k: int) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.knn_topk import knn_topk

    x = torch.randn(m, n, d, device=DEVICE, generator=_gen(2))
    dist, idx = knn_topk(x, k, "cosine")
    ref_dist, ref_idx = reference.knn_topk(x, k, "cosine")
    # Distances must match; each returned index must sit at its reported distance.
    y = reference.prepare_knn_features(x, "cosine")
    gathered = (
        (y.unsqueeze(2) - y.gather(1, idx.reshape(m, -1, 1).expand(-1, -1, d)).reshape(m, n, k, d)) ** 2
    ).sum(-1)
    err = max(_max_err(dist, ref_dist), _max_err(gathered, dist))
    return _row(
        "knn_topk", f"M={m} N={n} D={d} k={k} cosine", err, 1e-3,
        median_ms(lambda: knn_topk(x, k, "cosine"), warmup=3, runs=30),
        median_ms(lambda: reference.knn_topk(x, k, "cosine"), warmup=3, runs=30),
        index_agreement=float((idx == ref_idx).float().mean().item()),
    )  # fmt: skip


def case_knn_proxy_scores(m: int, n: int, d: int, k: int) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.knn_topk import knn_proxy_scores

    x, labels = _search_features(m, n, d, 4, seed=4)
    got = knn_proxy_scores(x, labels, k, "cosine")
    want = reference.knn_proxy_scores(x, labels, k, "cosine")
    # A near-tie may swap a k-th neighbour: allow one item in a thousand to flip its vote.
    return _row(
        "knn_proxy_scores", f"M={m} N={n} D={d} k={k}", _max_err(got, want), max(1e-3, 1.0 / n),
        median_ms(lambda: knn_proxy_scores(x, labels, k, "cosine"), warmup=3, runs=30),
        median_ms(lambda: reference.knn_proxy_scores(x, labels, k, "cosine"), warmup=3, runs=30),
    )  # fmt: skip


def case_logme_evidence(m: int, n: int, d: int, c: int) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.logme import logme_evidence

    x, labels = _search_features(m, n, d, c, seed=3)
    s, z_sq, resid = reference.logme_prepare(x, labels)  # shared decomposition step (cuSOLVER)
    err = _max_err(logme_evidence(s, z_sq, resid, n, d), reference.logme_evidence(s, z_sq, resid, n, d))
    return _row(
        "logme_evidence", f"M={m} N={n} D={d} C={c} fp64 (iteration only)", err, 1e-8,
        median_ms(lambda: logme_evidence(s, z_sq, resid, n, d), warmup=3, runs=30),
        median_ms(lambda: reference.logme_evidence(s, z_sq, resid, n, d), warmup=2, runs=10),
    )  # fmt: skip


def case_logme_scores(m: int, n: int, d: int, c: int) -> dict[str, Any]:
    from poodle_vllm.ops import reference
    from poodle_vllm.ops.triton.logme import logme_scores

    x, labels = _search_features(m, n, d, c, seed=5)
    err = _max_err(logme_scores(x, labels), reference.logme_scores(x, labels))
    return _row(
        "logme_scores", f"M={m} N={n} D={d} C={c} fp64 (decomposition + iteration)", err, 1e-8,
        median_ms(lambda: logme_scores(x, labels), warmup=2, runs=10),
        median_ms(lambda: reference.logme_scores(x, labels), warmup=2, runs=10),
        prepare_ms=median_ms(lambda: reference.logme_prepare(x, labels), warmup=1, runs=5),
    )  # fmt: skip


Case = tuple[str, Callable[[], dict[str, Any]]]


def build_cases(quick: bool) -> list[Case]:
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    cases: list[Case] = [
        ("pool_classify b32 L128", lambda: case_pool_classify(32, 128, 384, 2, f32)),
        ("embedding_layernorm b32 L128", lambda: case_embedding_layernorm(32, 128, 384, f32)),
        ("knn_topk N500", lambda: case_knn_topk(16, 500, 384, 10)),
        ("knn_proxy_scores N500", lambda: case_knn_proxy_scores(16, 500, 384, 10)),
        ("logme_evidence M8 N500", lambda: case_logme_evidence(8, 500, 384, 2)),
        ("logme_scores M8 N500", lambda: case_logme_scores(8, 500, 384, 2)),
    ]
    if not quick:
        cases += [
            ("pool_classify b256 L256 bf16", lambda: case_pool_classify(256, 256, 768, 2, bf16)),
            ("pool_classify b128 L256 fp16", lambda: case_pool_classify(128, 256, 384, 8, f16)),
            ("pool_classify b64 L128 C1000", lambda: case_pool_classify(64, 128, 384, 1000, f32)),
            ("embedding_layernorm b256 L256 bf16", lambda: case_embedding_layernorm(256, 256, 768, bf16)),
            ("embedding_layernorm b128 L256 fp16", lambda: case_embedding_layernorm(128, 256, 384, f16)),
            ("knn_topk N2000 D768", lambda: case_knn_topk(8, 2000, 768, 10)),
            ("knn_topk N5000", lambda: case_knn_topk(8, 5000, 384, 10)),
            ("knn_proxy_scores N5000 D768", lambda: case_knn_proxy_scores(8, 5000, 768, 10)),
            ("logme_evidence M16 N5000 D768 C4", lambda: case_logme_evidence(16, 5000, 768, 4)),
            ("logme_scores M16 N2000 D768", lambda: case_logme_scores(16, 2000, 768, 2)),
            ("logme_scores M16 N5000 D384 C4", lambda: case_logme_scores(16, 5000, 384, 4)),
        ]
    return cases


def smoke_cases() -> list[Case]:
    """Every case at tiny sizes, for Triton's CPU interpreter."""
    f32 = torch.float32
    return [
        ("pool_classify smoke", lambda: case_pool_classify(3, 9, 40, 3, f32)),
        ("embedding_layernorm smoke", lambda: case_embedding_layernorm(2, 7, 24, f32, vocab=50)),
        ("knn_topk smoke", lambda: case_knn_topk(2, 40, 12, 3)),
        ("knn_proxy_scores smoke", lambda: case_knn_proxy_scores(2, 40, 12, 3)),
        ("logme_evidence smoke", lambda: case_logme_evidence(2, 30, 8, 2)),
        ("logme_scores smoke", lambda: case_logme_scores(2, 30, 8, 3)),
    ]


def run_cases(cases: list[Case], budget_s: float) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name, fn in cases:
        if time.perf_counter() - t0 > budget_s:
            rows.append({"case": name, "skipped": "time budget spent"})
            continue
        try:
            row = fn()
            row["speedup"] = row["reference_ms"] / row["kernel_ms"] if row["kernel_ms"] > 0 else None
        except Exception as exc:  # noqa: BLE001 - record and keep going: one bad kernel must not hide the rest
            row = {"error": repr(exc), "traceback": traceback.format_exc(limit=6)}
            print(row["traceback"], file=sys.stderr)
        row["case"] = name
        rows.append(row)
        print(f"  {name}: " + ("ok" if row.get("ok") else row.get("error", "FAILED")), flush=True)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("case", "shape", "ok", "max_err", "tol", "kernel ms", "ref ms", "speedup")
    table = []
    for r in rows:
        if "kernel_ms" in r:
            table.append((r["case"], r["shape"], "yes" if r["ok"] else "NO", f"{r['max_err']:.2e}", f"{r['tol']:.0e}",
                          f"{r['kernel_ms']:.4f}", f"{r['reference_ms']:.4f}", f"{r['speedup']:.2f}x"))  # fmt: skip
        else:
            what = "ERROR" if "error" in r else "skipped"
            table.append(
                (r["case"], "-", what, r.get("error", r.get("skipped", ""))[:60], "-", "-", "-", "-")
            )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=False)]
    for t in (header, *table):
        print("  ".join(str(x).ljust(w) for x, w in zip(t, widths, strict=False)))


def main(argv: list[str] | None = None) -> int:
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the six smallest cases only")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny sizes in the Triton interpreter (no GPU)")
    ap.add_argument("--budget-s", type=float, default=400.0, help="start no case after this many seconds")
    ap.add_argument(
        "--out", type=Path, default=None, help=f"JSON path (GPU default {RESULTS.relative_to(ROOT)})"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
        if DEVICE == "cpu":
            os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton is first imported
    elif not torch.cuda.is_available():
        print(
            "gpu_kernels: no CUDA GPU available, nothing measured and nothing written. The script is ready "
            "to run on a GPU host (torch + triton only); on CPU, `--smoke` checks its code paths and "
            "`pytest tests/ops` checks the kernels in Triton's interpreter."
        )
        return 0
    try:
        import triton
    except ImportError:
        print("gpu_kernels: triton is not installed; nothing measured and nothing written.")
        return 0

    t0 = time.perf_counter()
    rows = run_cases(smoke_cases() if args.smoke else build_cases(args.quick), args.budget_s)
    print_table(rows)
    result = {
        "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (Triton interpreter, --smoke)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "mode": "smoke" if args.smoke else ("quick" if args.quick else "full"),
        "elapsed_s": time.perf_counter() - t0,
        "all_ok": all(r.get("ok", False) for r in rows if "skipped" not in r),
        "kernels_covered": sorted({r["op"] for r in rows if "op" in r}),
        "cases": rows,
    }
    out = args.out or (None if args.smoke else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
    print(f"{len(rows)} cases in {result['elapsed_s']:.0f} s; all_ok={result['all_ok']}")
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
