"""Which steps deserve a kernel, and what the native block hasher buys, on this CPU host.

Usage:
    .venv/bin/python benchmarks/kernels_cpu.py [--quick] [--skip-profile] [--skip-search]

Measures (all on CPU, 1 torch thread unless --threads):
  1. profile/surrogate: torch.profiler over a random-init BERT encoder of MiniLM-L6's shape
     (hidden 384, 6 layers, 12 heads) on a padded batch of short ragged requests, split into
     steps: embeddings (+LayerNorm), encoder layers, masked mean pool, head + softmax.
     Each step's share of the end-to-end surrogate time, plus the top aten ops.
  2. profile/search: model-search steps for a few candidates: feature extraction (encoder
     forwards), kNN proxy (pairwise distances + top-k + vote) and batched LogME from
     ops.reference, and kNN / LogME / linear probe from poodle_vllm.search.scorers when
     present.  Each step's share of search time (the rows are alternatives, not a sum of
     one search: compare ops.reference rows with their search.scorers counterparts).
  3. torch_reference_ops: median time of each ops.reference op at realistic sizes.
  4. native: vLLM block hashes, pure Python vs the C extension (list and flat inputs).

Writes benchmarks/results/kernels_cpu.json and prints tables.  Numbers are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from poodle_vllm import native  # noqa: E402
from poodle_vllm.ops import reference  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "kernels_cpu.json"


def timings_ms(fn: Callable[[], Any], repeats: int = 7, warmup: int = 1) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` in ms after ``warmup`` calls (this script's timer)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(fn: Callable[[], Any], repeats: int = 7, warmup: int = 1) -> float:
    """Median of ``timings_ms``."""
    return statistics.median(timings_ms(fn, repeats, warmup))


def op_timing(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and minimum ms (the minimum is the steadier number on a loaded shared host)."""
    t = timings_ms(fn, repeats)
    return {"ms": statistics.median(t), "min_ms": min(t)}


# --------------------------------------------------------------------------- profile


def _bert(hidden: int, layers: int, heads: int, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    return BertModel(cfg, add_pooling_layer=False).eval()


def _padded_batch(batch: int, max_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(2, max_len // 4), max_len + 1, (batch,), generator=g)
    ids = torch.randint(1000, 30000, (batch, max_len), generator=g)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def _extended_mask(model, mask: torch.Tensor) -> torch.Tensor:
    # Additive attention mask [B, 1, 1, L]; what BertModel builds internally for eager attention.
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def _step_shares(prof, steps: list[str], iters: int) -> dict[str, dict[str, float]]:
    totals = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in steps}
    whole = sum(totals.get(s, 0.0) for s in steps) or 1.0
    return {
        s: {"ms_per_iter": totals.get(s, 0.0) / 1e3 / iters, "share": totals.get(s, 0.0) / whole}
        for s in steps
    }


def _top_ops(prof, n: int = 8) -> list[dict[str, Any]]:
    evs = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    evs.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in evs) or 1.0
    return [{"op": e.key, "self_share": e.self_cpu_time_total / total, "calls": e.count} for e in evs[:n]]


def profile_surrogate(batch: int, max_len: int, num_labels: int, iters: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile, record_function

    model = _bert(384, 6, 12)
    ids, mask = _padded_batch(batch, max_len, seed=1)
    head_w = torch.randn(num_labels, 384) * 0.05
    head_b = torch.zeros(num_labels)
    steps = ["embeddings+layernorm", "encoder_layers", "masked_mean_pool", "head+softmax"]

    def run() -> None:
        with torch.no_grad():
            with record_function(steps[0]):
                x = model.embeddings(input_ids=ids)
            with record_function(steps[1]):
                ext = _extended_mask(model, mask)
                for layer in model.encoder.layer:
                    out = layer(x, attention_mask=ext)
                    x = out[0] if isinstance(out, tuple) else out
            with record_function(steps[2]):
                m = mask.unsqueeze(-1).float()
                pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
            with record_function(steps[3]):
                torch.softmax((pooled @ head_w.t() + head_b) / 1.0, dim=-1)

    run()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            run()
    # Cross-check without the profiler: wall time per step, median over iterations.
    wall: dict[str, list[float]] = {s: [] for s in steps}
    with torch.no_grad():
        for _ in range(iters):
            t0 = time.perf_counter()
            x = model.embeddings(input_ids=ids)
            t1 = time.perf_counter()
            ext = _extended_mask(model, mask)
            for layer in model.encoder.layer:
                out = layer(x, attention_mask=ext)
                x = out[0] if isinstance(out, tuple) else out
            t2 = time.perf_counter()
            m = mask.unsqueeze(-1).float()
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
            t3 = time.perf_counter()
            torch.softmax(pooled @ head_w.t() + head_b, dim=-1)
            t4 = time.perf_counter()
            for s, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=False):
                wall[s].append(dt * 1e3)
    wall_ms = {s: statistics.median(v) for s, v in wall.items()}
    wall_total = sum(wall_ms.values()) or 1.0
    # Cross-check: the unfused reference head on the same hidden states.
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    fused_ref_ms = median_ms(lambda: reference.pool_classify(hidden, mask, head_w, head_b, 1.0), repeats=20)
    return {
        "config": {
            "model": "BertConfig(hidden=384, layers=6, heads=12) random init",
            "batch": batch,
            "max_len": max_len,
            "real_tokens": int(mask.sum()),
            "num_labels": num_labels,
            "iters": iters,
        },
        "steps": _step_shares(prof, steps, iters),
        "steps_wall": {s: {"ms": v, "share": v / wall_total} for s, v in wall_ms.items()},
        "top_aten_ops": _top_ops(prof),
        "reference_pool_classify_ms": fused_ref_ms,
    }


def profile_search(n: int, max_len: int, candidates: list[tuple[int, int, int]], k: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile, record_function

    try:
        from poodle_vllm.search import scorers
    except Exception:  # noqa: BLE001 - another helper's module; profile what exists
        scorers = None
    models = [_bert(h, layer_count, heads, seed=i) for i, (h, layer_count, heads) in enumerate(candidates)]
    ids, mask = _padded_batch(n, max_len, seed=2)
    labels = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(3))
    steps = ["feature_extraction", "knn_proxy(torch)"]
    steps += ["logme(ops.reference, batched eigh)"]
    if scorers is not None:
        steps += ["knn_proxy(search.scorers/faiss)", "logme(search.scorers)", "linear_probe(search.scorers)"]
    feats: list[torch.Tensor] = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.no_grad():
            with record_function(steps[0]):
                for model in models:
                    chunks = []
                    for s in range(0, n, 64):
                        h = model(
                            input_ids=ids[s : s + 64], attention_mask=mask[s : s + 64]
                        ).last_hidden_state
                        m = mask[s : s + 64].unsqueeze(-1).float()
                        chunks.append((h * m).sum(1) / m.sum(1))
                    feats.append(torch.cat(chunks))
            with record_function(steps[1]):
                from poodle_vllm.ops.dispatch import stack_padded_features

                reference.knn_proxy_scores(stack_padded_features(feats), labels, k=k)
            with record_function(steps[2]):
                # Batched per width: LogME's (d - r) term needs each candidate's true D.
                for width in sorted({f.shape[1] for f in feats}):
                    reference.logme_scores(torch.stack([f for f in feats if f.shape[1] == width]), labels)
        if scorers is not None:
            np_feats = [f.numpy() for f in feats]
            y = labels.numpy()
            with record_function(steps[3]):
                for f in np_feats:
                    scorers.knn_accuracy(f, y, k=k)
            with record_function(steps[4]):
                for f in np_feats:
                    scorers.logme(f, y)
            with record_function(steps[5]):
                for f in np_feats:
                    scorers.linear_probe_accuracy(f, y)
    return {
        "config": {
            "candidates(hidden,layers,heads)": candidates,
            "samples": n,
            "max_len": max_len,
            "k": k,
            "search_scorers_available": scorers is not None,
        },
        "steps": _step_shares(prof, steps, 1),
    }


# --------------------------------------------------------------------------- reference ops


def time_reference_ops(quick: bool) -> dict[str, dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, Any]] = {}
    b, seq, h, c = 32, 64, 384, 8
    hidden = torch.randn(b, seq, h, generator=g)
    mask = (torch.arange(seq)[None] < torch.randint(8, seq + 1, (b, 1), generator=g)).long()
    w, bias = torch.randn(c, h, generator=g), torch.randn(c, generator=g)
    out["pool_classify"] = {
        "shape": f"B={b} L={seq} H={h} C={c}",
        **op_timing(lambda: reference.pool_classify(hidden, mask, w, bias, 1.5), 20),
    }
    word, pos, typ = torch.randn(30522, h, generator=g), torch.randn(512, h), torch.randn(2, h)
    gamma, beta = torch.ones(h), torch.zeros(h)
    ids = torch.randint(0, 30522, (b, seq), generator=g)
    out["embedding_layernorm"] = {
        "shape": f"B={b} L={seq} H={h} V=30522",
        **op_timing(lambda: reference.embedding_layernorm(ids, word, pos, typ, gamma, beta), 20),
    }
    m, n, d, k = (3, 1024, 384, 10) if quick else (4, 2048, 384, 10)
    feats = torch.randn(m, n, d, generator=g)
    out["knn_topk"] = {
        "shape": f"M={m} N={n} D={d} k={k}",
        **op_timing(lambda: reference.knn_topk(feats, k, "cosine"), 5),
    }
    m, n, d, c = (3, 512, 384, 4) if quick else (3, 1024, 384, 4)
    labels = torch.randint(0, c, (n,), generator=g)
    feats = torch.randn(m, n, d, generator=g)
    out["logme_scores"] = {
        "shape": f"M={m} N={n} D={d} C={c}",
        **op_timing(lambda: reference.logme_scores(feats, labels), 3),
    }
    try:
        from poodle_vllm.search import scorers

        numpy_t = op_timing(lambda: [scorers.logme(f.numpy(), labels.numpy()) for f in feats], 3)
        out["logme_scores"]["search_scorers_numpy_ms"] = numpy_t["ms"]
        out["logme_scores"]["search_scorers_numpy_min_ms"] = numpy_t["min_ms"]
    except ImportError:
        pass
    return out


# --------------------------------------------------------------------------- native


def time_native(num_requests: int, block_size: int, rounds: int = 7) -> dict[str, Any]:
    import numpy as np

    rng = random.Random(0)
    reqs = [[rng.randrange(0, 151_000) for _ in range(rng.randrange(64, 1024))] for _ in range(num_requests)]
    flat = np.fromiter((t for r in reqs for t in r), dtype=np.int64)
    offsets = np.zeros(len(reqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in reqs])
    blocks = sum(len(r) // block_size for r in reqs)
    parent = native.none_hash()

    def py() -> None:
        for r in reqs:
            native.block_hashes_py(r, block_size, parent)

    res: dict[str, Any] = {
        "has_native": native.HAS_NATIVE,
        "sha256_backend": native._native.sha256_backend() if native.HAS_NATIVE else None,
        "requests": num_requests,
        "blocks": blocks,
        "tokens": int(offsets[-1]),
        "block_size": block_size,
    }
    fns: dict[str, Callable[[], None]] = {"python": py}
    if native.HAS_NATIVE:
        want = b"".join(h for r in reqs for h in native.block_hashes_py(r, block_size, parent))
        assert native.block_hashes_flat(flat, offsets, block_size, use_native=True) == want

        def nat_list() -> None:
            for r in reqs:
                native.block_hashes(r, block_size, parent, use_native=True)

        def nat_flat() -> None:
            native.block_hashes_flat(flat, offsets, block_size, parent, use_native=True)

        fns["native_list"] = nat_list
        fns["native_flat_numpy"] = nat_flat
    # NOTE: paths interleaved round by round so load spikes on the shared host hit all alike.
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += timings_ms(fn, repeats=1, warmup=0)
    for name, t in times.items():
        res[name] = {
            "ms": statistics.median(t),
            "min_ms": min(t),
            "us_per_block": statistics.median(t) * 1e3 / blocks,
            "min_us_per_block": min(t) * 1e3 / blocks,
            "speedup_median": statistics.median(times["python"]) / statistics.median(t),
            "speedup_min": min(times["python"]) / min(t),
        }
    return res


# --------------------------------------------------------------------------- main


def _print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=False)))
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=False)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--skip-profile", action="store_true", help="skip the surrogate/search profiles")
    ap.add_argument("--skip-search", action="store_true", help="skip the search profile")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: steadiest numbers on an oversubscribed host)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
        },
        "quick": args.quick,
        "loadavg_start": os.getloadavg(),
    }
    if not args.skip_profile:
        sur = profile_surrogate(
            batch=16 if args.quick else 32, max_len=64, num_labels=8, iters=2 if args.quick else 5
        )
        result["profile_surrogate"] = sur
        _print_table(
            "Surrogate inference (CPU): torch.profiler and plain wall clock",
            [
                (
                    s,
                    f"{v['ms_per_iter']:.2f}",
                    f"{100 * v['share']:.1f}%",
                    f"{sur['steps_wall'][s]['ms']:.2f}",
                    f"{100 * sur['steps_wall'][s]['share']:.1f}%",
                )
                for s, v in sur["steps"].items()
            ],
            ("step", "prof ms/iter", "prof share", "wall ms", "wall share"),
        )
        _print_table(
            "  top aten ops",
            [(o["op"], f"{100 * o['self_share']:.1f}%", o["calls"]) for o in sur["top_aten_ops"]],
            ("op", "self share", "calls"),
        )
        if not args.skip_search:
            cands = [(384, 6, 12), (256, 4, 4)] if args.quick else [(384, 6, 12), (384, 4, 12), (256, 4, 4)]
            sea = profile_search(n=128 if args.quick else 512, max_len=32, candidates=cands, k=10)
            result["profile_search"] = sea
            _print_table(
                "Model search (CPU, torch.profiler)",
                [(s, f"{v['ms_per_iter']:.1f}", f"{100 * v['share']:.1f}%") for s, v in sea["steps"].items()],
                ("step", "ms", "share"),
            )
    # NOTE: default 1 thread: with 2 OpenMP threads on an oversubscribed host, small ops
    # spend most of their time in thread barriers and the numbers mean little.
    ops = time_reference_ops(args.quick)
    result["torch_reference_ops"] = ops
    _print_table(
        f"Torch reference ops (CPU, {args.threads} thread(s))",
        [
            (
                k,
                v["shape"],
                f"{v['ms']:.3f}",
                f"{v['min_ms']:.3f}",
                f"{v['search_scorers_numpy_min_ms']:.1f}" if "search_scorers_numpy_min_ms" in v else "-",
            )
            for k, v in ops.items()
        ],
        ("op", "shape", "median ms", "min ms", "search.scorers numpy min ms"),
    )
    nat = time_native(300 if args.quick else 1000, 16)
    result["native_block_hash"] = nat
    rows = [
        (
            name,
            f"{nat[name]['ms']:.1f}",
            f"{nat[name]['min_ms']:.1f}",
            f"{nat[name]['min_us_per_block']:.2f}",
            f"{nat[name]['speedup_median']:.1f}x",
            f"{nat[name]['speedup_min']:.1f}x",
        )
        for name in ("python", "native_list", "native_flat_numpy")
        if name in nat
    ]
    _print_table(
        f"vLLM block hashes: {nat['requests']} requests, {nat['blocks']} blocks "
        f"(HAS_NATIVE={nat['has_native']}, sha256={nat['sha256_backend']})",
        rows,
        ("path", "median ms", "min ms", "min us/block", "speedup (median)", "speedup (min)"),
    )
    result["loadavg_end"] = os.getloadavg()
    print(
        f"\nhost load average start {result['loadavg_start'][0]:.1f}, end {result['loadavg_end'][0]:.1f} "
        f"(shared {os.cpu_count()}-CPU host: absolute times are inflated; compare ratios)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
