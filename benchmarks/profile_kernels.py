"""Where model search and surrogate inference spend their time, before and after batched scoring.

Usage (from the repository root):
    .venv/bin/python benchmarks/profile_kernels.py [--items 500] [--with-mpnet] [--quick]

(a) search: a real sample (the first ``--items`` rotten_tomatoes training items from
    ``poodle_vllm.train.data.dataset_splits``) over the model store at ``POODLE_STORE_DIR`` when it
    has been built, else over the prepared encoders (``POODLE_MODELS_DIR``) plus every truncation x
    pooling of them as virtual variants. The same search runs twice from a cold feature cache:
    ``per_model`` (``SearchConfig(batched_scoring=False)``: numpy / faiss scorers, one model at a
    time) and ``batched`` (each halving round's candidates scored together through
    ``poodle_vllm.ops`` dispatch), after a warm-up that pays the imports. Default constraints
    (``max_parameters`` 60M) unless ``--with-mpnet``. Reported: seconds and share of the search in model loading,
    feature extraction, each scorer and the rest; then the scoring alone, repeated on the warm
    cache with the two paths alternated (the steadier comparison on a shared host).
(b) surrogate: all-MiniLM-L6-v2 on a padded batch of 32 ragged requests at lengths 32/128/256:
    seconds and share in embeddings (+LayerNorm), encoder layers, and pooling + head + softmax
    (``ops.dispatch.pool_classify``).

On this CPU host ops dispatch runs the torch references, so the Triton kernels themselves are
not timed here (``benchmarks/gpu_kernels.py`` does that on a GPU). Writes
benchmarks/results/kernels_profile.json and prints tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "kernels_profile.json"

import numpy as np  # noqa: E402
import torch  # noqa: E402

SCORERS = ["logme", "knn", "linear"]
SMALL_ROOTS = ["all-minilm-l6-v2", "paraphrase-minilm-l3-v2", "sre-minilm-l6"]


# --------------------------------------------------------------------------- (a) search


def search_catalog(work: Path, with_mpnet: bool) -> tuple[Any, str]:
    """The built store when there is one, else prepared encoders plus their virtual variants."""
    from poodle_vllm.paths import resolve_paths
    from poodle_vllm.store.catalog import Catalog, open_catalog
    from poodle_vllm.store.importer import import_prepared
    from poodle_vllm.store.zoo import build_variant_store

    paths = resolve_paths()
    if (paths.store / "catalog.json").exists():
        cat = open_catalog(paths.store)
        if cat.ids():
            return cat, f"model store {paths.store} ({len(cat.ids())} models)"
    real = Catalog(work / "prepared")
    import_prepared(real, paths.models, measure=False)
    roots = [m for m in SMALL_ROOTS + (["all-mpnet-base-v2"] if with_mpnet else []) if m in real.ids()]
    if not roots:
        raise SystemExit(f"profile_kernels: no model store and no prepared encoder under {paths.models}")
    cat = build_variant_store(real, work / "variants", roots=roots)
    return cat, f"prepared encoders {roots} + virtual truncation x pooling variants ({len(cat.ids())} models)"


def rotten_tomatoes_sample(n: int) -> tuple[list[str], list[str]]:
    from poodle_vllm.train.data import DATASET_LABELS, dataset_splits

    items = dataset_splits("rotten_tomatoes")["train"][:n]
    names = DATASET_LABELS["rotten_tomatoes"]
    return [t for t, _ in items], [names[y] for _, y in items]


def _shares(timing: dict[str, float]) -> dict[str, dict[str, float]]:
    total = timing["total"]
    steps = {"load": timing["load"], "feature_extraction": timing["inference"]}
    steps.update({f"score_{s}": timing.get(f"scoring_{s}", 0.0) for s in SCORERS})
    steps["other"] = max(0.0, total - sum(steps.values()))
    return {k: {"s": round(v, 3), "share": round(v / total, 4) if total else 0.0} for k, v in steps.items()}


def warm_up_imports() -> None:
    """Import transformers, faiss and scikit-learn and run each path once, so neither timed
    search pays the one-off import / first-call costs of the other."""
    import transformers  # noqa: F401

    from poodle_vllm.search import batch_scores

    rng = np.random.default_rng(0)
    feats = {
        "a": rng.normal(size=(40, 8)).astype(np.float32),
        "b": rng.normal(size=(40, 12)).astype(np.float32),
    }
    y = np.array(["x", "y"] * 20)
    for batched in (False, True):
        batch_scores.score_candidates(feats, y, SCORERS, batched=batched)


def profile_search(items: int, with_mpnet: bool, repeats: int) -> dict[str, Any]:
    from poodle_vllm.ops import dispatch
    from poodle_vllm.search import batch_scores
    from poodle_vllm.search.config import SearchConfig
    from poodle_vllm.search.features import FeatureExtractor
    from poodle_vllm.search.search import search_models, stratified_order

    work = Path(tempfile.mkdtemp(prefix="poodle-profile-"))
    try:
        cat, source = search_catalog(work, with_mpnet)
        texts, labels = rotten_tomatoes_sample(items)
        # Default constraints (60M parameters: MPNet-base out) unless --with-mpnet.
        base: dict[str, Any] = dict(scorers=SCORERS, warm_start=False, save_result=False)
        if with_mpnet:
            base["max_parameters"] = None
        warm_up_imports()
        runs: dict[str, Any] = {}
        for name, batched in (("per_model", False), ("batched", True)):
            ext = FeatureExtractor(cat, cache_dir=work / f"cache-{name}")  # cold cache each time
            res = search_models(
                texts, labels, cat, SearchConfig(batched_scoring=batched, **base), extractor=ext
            )
            runs[name] = {
                "timing_s": res.timing,
                "steps": _shares(res.timing),
                "ranking": [c.model_id for c in res.ranking],
                "rounds": [{"items": r["size"], "candidates": r["candidates"]} for r in res.rounds],
            }
            print(f"  search {name}: {res.timing}", flush=True)
        # Scoring alone on identical features (warm cache), paths alternated.
        ext = FeatureExtractor(cat, cache_dir=work / "cache-batched")
        order = stratified_order(labels, 0)
        y = np.asarray([labels[i] for i in order])
        texts_o = [texts[i] for i in order]
        rounds = []
        for rnd in runs["batched"]["rounds"]:
            size = rnd["items"]
            feats = ext.features_many(rnd["candidates"], texts_o[:size])
            per: dict[str, dict[str, list[float]]] = {"per_model": {}, "batched": {}}
            for _ in range(repeats):
                for name, batched in (("per_model", False), ("batched", True)):
                    t: dict[str, float] = {}
                    batch_scores.score_candidates(feats, y[:size], SCORERS, batched=batched, timings=t)
                    for s, v in t.items():
                        per[name].setdefault(s, []).append(v)
            rounds.append(
                {
                    "items": size,
                    "candidates": len(feats),
                    "widths": sorted({int(f.shape[1]) for f in feats.values()}),
                    **{
                        name: {s: round(statistics.median(v), 4) for s, v in d.items()}
                        for name, d in per.items()
                    },
                }
            )
            print(f"  scoring round {rounds[-1]}", flush=True)
        return {
            "models": source,
            "items": items,
            "config": {
                "scorers": SCORERS,
                "round_sizes": SearchConfig().round_sizes,
                "eta": SearchConfig().eta,
                "torch_threads": torch.get_num_threads(),
                "ops_backend": dispatch.resolve_backend("cpu"),
            },
            "cold_search": runs,
            "rankings_identical": runs["per_model"]["ranking"] == runs["batched"]["ranking"],
            "scoring_only_warm_cache": rounds,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- (b) surrogate


def profile_surrogate(lengths: list[int], batch: int, iters: int, num_labels: int) -> dict[str, Any]:
    from poodle_vllm.models import prepared_model_path
    from poodle_vllm.ops import dispatch
    from poodle_vllm.store.encoder import load_encoder

    enc = load_encoder(prepared_model_path("all-minilm-l6-v2"))
    model = enc.model
    hidden = int(model.config.hidden_size)
    g = torch.Generator().manual_seed(0)
    head_w = torch.randn(num_labels, hidden, generator=g) * 0.05
    head_b = torch.zeros(num_labels)
    out: dict[str, Any] = {"model": "all-MiniLM-L6-v2", "batch": batch, "num_labels": num_labels,
                           "torch_threads": torch.get_num_threads(),
                           "ops_backend": dispatch.resolve_backend("cpu"), "lengths": {}}  # fmt: skip
    steps = ("embeddings", "encoder_layers", "pool_head_softmax")
    for seq in lengths:
        # A padded batch of ragged requests: real lengths uniform in [seq/2, seq].
        lens = torch.randint(max(2, seq // 2), seq + 1, (batch,), generator=g)
        mask = (torch.arange(seq)[None, :] < lens[:, None]).long()
        ids = torch.randint(1000, int(model.config.vocab_size), (batch, seq), generator=g) * mask
        ext_mask = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        wall: dict[str, list[float]] = {s: [] for s in steps}
        with torch.inference_mode():
            for it in range(iters + 1):  # the first pass is a warm-up
                t0 = time.perf_counter()
                x = model.embeddings(input_ids=ids)
                t1 = time.perf_counter()
                for layer in model.encoder.layer:
                    o = layer(x, attention_mask=ext_mask)
                    x = o[0] if isinstance(o, tuple) else o
                t2 = time.perf_counter()
                dispatch.pool_classify(x, mask, head_w, head_b, 1.0)
                t3 = time.perf_counter()
                if it:
                    for s, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                        wall[s].append(dt)
            # The step-by-step run must be the model's own forward pass.
            full = model(input_ids=ids, attention_mask=mask).last_hidden_state
            err = float((full - x).abs().max())
        med = {s: statistics.median(v) for s, v in wall.items()}
        total = sum(med.values())
        out["lengths"][str(seq)] = {
            "real_tokens": int(mask.sum()),
            "padded_tokens": batch * seq,
            "max_abs_diff_vs_model_forward": err,
            "total_ms": round(1e3 * total, 3),
            "steps": {s: {"ms": round(1e3 * v, 3), "share": round(v / total, 5)} for s, v in med.items()},
        }
        print(f"  surrogate L={seq}: {out['lengths'][str(seq)]['steps']}", flush=True)
    return out


# --------------------------------------------------------------------------- main


def _table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    for r in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=False)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=500, help="rotten_tomatoes items in the search sample")
    ap.add_argument(
        "--with-mpnet", action="store_true", help="add all-mpnet-base-v2 (768-d) and its variants"
    )
    ap.add_argument("--repeats", type=int, default=3, help="scoring-only repeats per path and round")
    ap.add_argument("--iters", type=int, default=3, help="surrogate timing iterations per length")
    ap.add_argument("--quick", action="store_true", help="200 items, 1 repeat, lengths 32/128 (smoke run)")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--skip-surrogate", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    if a.quick:
        a.items, a.repeats, a.iters = 200, 1, 1
    result: dict[str, Any] = {
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.is_available(),
            "loadavg_start": os.getloadavg(),
        },
    }
    if not a.skip_search:
        print("(a) model search", flush=True)
        sea = profile_search(a.items, a.with_mpnet, a.repeats)
        result["search"] = sea
        runs = sea["cold_search"]
        _table(
            f"Search, cold cache ({sea['models']}; {sea['items']} items)",
            ("step", *[f"{n} s" for n in runs], *[f"{n} share" for n in runs]),
            [
                (step, *[f"{runs[n]['steps'][step]['s']:.2f}" for n in runs],
                 *[f"{100 * runs[n]['steps'][step]['share']:.1f}%" for n in runs])
                for step in runs["batched"]["steps"]
            ]
            + [("total", *[f"{runs[n]['timing_s']['total']:.2f}" for n in runs], "", "")],
        )  # fmt: skip
        _table(
            "Scoring only, warm cache (median s)",
            ("items", "models", "widths", *[f"{p} {s}" for p in ("per_model", "batched") for s in SCORERS]),
            [
                (str(r["items"]), str(r["candidates"]), str(r["widths"]),
                 *[f"{r[p].get(s, 0.0):.3f}" for p in ("per_model", "batched") for s in SCORERS])
                for r in sea["scoring_only_warm_cache"]
            ],
        )  # fmt: skip
    if not a.skip_surrogate:
        print("(b) surrogate inference", flush=True)
        lengths = [32, 128] if a.quick else [32, 128, 256]
        sur = profile_surrogate(lengths, batch=32, iters=a.iters, num_labels=2)
        result["surrogate"] = sur
        _table(
            f"Surrogate inference, {sur['model']}, batch {sur['batch']} (median ms)",
            ("length", "real tokens", "embeddings", "encoder layers", "pool+head+softmax", "total"),
            [
                (L, str(v["real_tokens"]),
                 *[f"{v['steps'][s]['ms']:.2f} ({100 * v['steps'][s]['share']:.2f}%)"
                   for s in ("embeddings", "encoder_layers", "pool_head_softmax")],
                 f"{v['total_ms']:.1f}")
                for L, v in sur["lengths"].items()
            ],
        )  # fmt: skip
    result["host"]["loadavg_end"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.out.exists() and (a.skip_search or a.skip_surrogate):
        kept = json.loads(a.out.read_text())  # a partial run keeps the other part's numbers
        result = {**kept, **result}
    a.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
