"""Surrogate accuracy vs training-set size, on gold labels and on the LLM's labels (the paper's Table 2).

Usage:
    .venv/bin/python benchmarks/accuracy.py --dataset rotten_tomatoes --sizes 500,1000
    .venv/bin/python benchmarks/accuracy.py --dataset rotten_tomatoes --sizes 2000,5000 --labels gold,llm
    .venv/bin/python benchmarks/accuracy.py --dataset imdb --sizes 500,1000,2000,4000 --max-length 128
    .venv/bin/python benchmarks/accuracy.py --sizes 500 --seeds 3 --base minilm-l6-sst2   # a store model

For each size N the first N items of the dataset's fixed training split are used to fine-tune the
base encoder (``--base``, default all-MiniLM-L6-v2) once on the gold labels and once on the LLM's
labels. LLM labels come from the Arrow file written by ``scripts/label_with_llm.py`` (default
``$POODLE_HOME/llm_labels/<dataset>.arrow``); items the LLM answered unparseably are dropped, as
Poodle's log filter does. Without that file only gold rows are run and the output says so.
Each surrogate is scored on the fixed test split: accuracy vs gold, and agreement with the LLM on
the test items the LLM labelled; the LLM's own accuracy vs gold is reported beside them, with the
gap (surrogate minus LLM; the paper's was -0.057 at 500 LLM labels) and the LLM's self-agreement
on repeated inputs (``label_with_llm.py --repeat``). ``--seeds N`` trains each row N times and
reports the mean and spread.

Rows are merged into ``benchmarks/results/accuracy.json`` (keyed by dataset, base, size, labels), so
sizes can be run in separate invocations; a markdown table goes to ``accuracy.md`` and stdout.
All numbers are measured by this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poodle_vllm.paths import resolve_paths  # noqa: E402
from poodle_vllm.train.args import TrainingArguments  # noqa: E402
from poodle_vllm.train.data import examples_from_dataset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def load_llm_labels(path: Path, dataset: str) -> dict[tuple[str, int], dict[str, Any]] | None:
    """``(split, idx) -> row`` from scripts/label_with_llm.py's file; None if it does not exist."""
    if not path.exists():
        return None
    import pyarrow as pa

    with pa.OSFile(str(path), "rb") as f:
        rows = pa.ipc.open_file(f).read_all().to_pylist()
    return {(r["split"], r["idx"]): r for r in rows if r["dataset"] == dataset and not r["error"]}


def llm_self_agreement(path: Path, dataset: str) -> dict[str, Any] | None:
    """The LLM's self-agreement on repeated inputs, measured by ``label_with_llm.py --repeat``."""
    f = path.with_name(path.name + ".self_agreement.json")
    if not f.exists():
        return None
    known = json.loads(f.read_text())
    reports = [r for k, r in known.items() if k.startswith(f"{dataset}/")]
    if not reports:
        return None
    items = sum(r["items"] for r in reports)
    return {
        "items": items,
        "label_agreement": sum(r["label_agreement"] * r["items"] for r in reports) / max(1, items),
        "exact_answer_agreement": sum(r["exact_answer_agreement"] * r["items"] for r in reports)
        / max(1, items),
    }


def llm_test_accuracy(llm: dict[tuple[str, int], dict[str, Any]], test_golds: list[str]) -> dict[str, Any]:
    rows = [llm[("test", i)] for i in range(len(test_golds)) if ("test", i) in llm]
    if not rows:
        return {"items": 0}
    return {
        "items": len(rows),
        "accuracy_vs_gold": sum(r["llm_label"] == r["gold"] for r in rows) / len(rows),
        "unparseable_share": sum(r["llm_label"] is None for r in rows) / len(rows),
    }


def run_one(
    base: Path,
    texts: list[str],
    labels: list[str],
    names: list[str],
    args: TrainingArguments,
    test_texts: list[str],
    test_golds: list[str],
    test_llm: list[str | None] | None,
) -> dict[str, Any]:
    from poodle_vllm.train.trainer import SurrogateTrainer

    trainer = SurrogateTrainer(args)
    t0 = time.perf_counter()
    result = trainer.train(base, texts, labels, names)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    probs = trainer.predict_proba(test_texts)
    eval_s = time.perf_counter() - t1
    pred = [names[k] for k in probs.argmax(-1)]
    row: dict[str, Any] = {
        "train_items": len(texts),
        "accuracy_vs_gold": sum(p == g for p, g in zip(pred, test_golds, strict=False)) / len(test_golds),
        "test_items": len(test_golds),
        "val_agreement": result.best_val_agreement,
        "epochs_run": result.epochs_run,
        "stopped_reason": result.stopped_reason,
        "train_time_s": train_s,
        "eval_time_s": eval_s,
        "eval_items_per_s": len(test_texts) / eval_s if eval_s else None,
        "temperature": result.temperature,
        "truncated_share": result.truncated_share,
    }
    if test_llm is not None:
        pairs = [(p, y) for p, y in zip(pred, test_llm, strict=False) if y is not None]
        row["agreement_with_llm"] = sum(p == y for p, y in pairs) / len(pairs) if pairs else None
        row["agreement_items"] = len(pairs)
    return row


def run_seeds(
    base: Path,
    texts: list[str],
    labels: list[str],
    names: list[str],
    args: TrainingArguments,
    seeds: int,
    test_texts: list[str],
    test_golds: list[str],
    test_llm: list[str | None] | None,
) -> dict[str, Any]:
    """:func:`run_one` for ``seeds`` consecutive seeds: the mean of each figure, per-seed lists beside."""
    import dataclasses

    import numpy as np

    runs = [
        run_one(base, texts, labels, names, dataclasses.replace(args, seed=args.seed + k), test_texts,
                test_golds, test_llm)
        for k in range(max(1, seeds))
    ]  # fmt: skip
    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])
    for key in ("accuracy_vs_gold", "agreement_with_llm", "val_agreement", "train_time_s", "eval_time_s"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            row[key] = float(np.mean(vals))
            row[f"{key}_std"] = float(np.std(vals))
            row[f"{key}_per_seed"] = vals
    row["epochs_run"] = float(np.mean([r["epochs_run"] for r in runs]))
    return row


def gap(row: dict[str, Any]) -> float | None:
    """Surrogate accuracy minus the LLM's own, both against gold (the paper: -0.057 at 500 labels)."""
    llm = row.get("llm_accuracy_vs_gold")
    return None if llm is None else row["accuracy_vs_gold"] - llm


def spread(row: dict[str, Any]) -> str:
    std = row.get("accuracy_vs_gold_std")
    return "" if std is None else f" ± {std:.3f} ({len(row['accuracy_vs_gold_per_seed'])} seeds)"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| dataset | base | labels | N | acc. vs gold | agreement w/ LLM | LLM self-agreement | LLM acc. vs gold "
        "| gap to LLM | epochs | train s |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )

    def f(x: Any) -> str:
        return "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))

    lines = [
        f"| {r['dataset']} | {r['base']} | {r['labels']} | {r['size']} | {f(r['accuracy_vs_gold'])}{spread(r)} | "
        f"{f(r.get('agreement_with_llm'))} | {f((r.get('llm_self_agreement') or {}).get('label_agreement'))} | "
        f"{f(r.get('llm_accuracy_vs_gold'))} | {f(gap(r))} | {r['epochs_run']} | "
        f"{r['train_time_s']:.0f} |"
        for r in sorted(rows, key=lambda r: (r["dataset"], r["base"], r["size"], r["labels"]))
    ]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--dataset", default="rotten_tomatoes", choices=["rotten_tomatoes", "imdb", "sst2", "ag_news"]
    )
    p.add_argument("--sizes", default="500,1000,2000,5000", help="comma-separated training-set sizes")
    p.add_argument("--labels", default="gold,llm", help="which label sources to run: gold, llm or both")
    p.add_argument("--base", default="all-minilm-l6-v2", help="prepared encoder name or folder")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-length", type=int, default=None, help="default 64 (128 for imdb)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1.5e-4, help="peak learning rate (short runs want it high)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is faster on a shared 2-core host)"
    )
    p.add_argument("--test-items", type=int, default=2000, help="test items scored (capped by the split)")
    p.add_argument("--llm-labels", type=Path, default=None, help="Arrow file from scripts/label_with_llm.py")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument(
        "--seeds", type=int, default=1, help="seeds per row (seed, seed+1, ...): mean and spread reported"
    )
    p.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    ns = p.parse_args(argv)

    from poodle_vllm.cli.train import resolve_base

    base = resolve_base(ns.base)
    sizes = [int(s) for s in ns.sizes.split(",") if s]
    sources = [s.strip() for s in ns.labels.split(",") if s.strip()]
    max_length = ns.max_length or (128 if ns.dataset == "imdb" else 64)
    args = TrainingArguments(
        max_length=max_length,
        epochs=ns.epochs,
        batch_size=ns.batch_size,
        learning_rate=ns.lr,
        num_threads=ns.threads,
        seed=ns.seed,
    )
    test_texts, test_golds, names = examples_from_dataset(ns.dataset, None, "test")
    test_texts, test_golds = test_texts[: ns.test_items], test_golds[: ns.test_items]
    train_all, gold_all, _ = examples_from_dataset(ns.dataset, None, "train")

    llm_path = ns.llm_labels or resolve_paths().home / "llm_labels" / f"{ns.dataset}.arrow"
    llm = load_llm_labels(llm_path, ns.dataset)
    notes: list[str] = []
    test_llm: list[str | None] | None = None
    llm_acc: dict[str, Any] = {"items": 0}
    self_agreement = llm_self_agreement(llm_path, ns.dataset)
    if llm is None:
        notes.append(f"no LLM label file at {llm_path}: gold-label rows only (run scripts/label_with_llm.py)")
        sources = [s for s in sources if s != "llm"]
    else:
        test_llm = [
            llm[("test", i)]["llm_label"] if ("test", i) in llm else None for i in range(len(test_golds))
        ]
        llm_acc = llm_test_accuracy(llm, test_golds)
        if not llm_acc["items"]:
            notes.append("the LLM label file has no test-split answers: no LLM accuracy / agreement on test")
    for note in notes:
        print("NOTE:", note)

    previous: list[dict[str, Any]] = []
    if ns.out.exists():
        previous = json.loads(ns.out.read_text()).get("rows", [])
    new_rows: list[dict[str, Any]] = []
    for size in sizes:
        if size > len(train_all):
            print(f"skip N={size}: the {ns.dataset} training split has {len(train_all)} items")
            continue
        for source in sources:
            if source == "gold":
                texts, labels = train_all[:size], gold_all[:size]
                dropped = 0
            else:
                assert llm is not None
                keyed = [(i, llm.get(("train", i))) for i in range(size)]
                missing = sum(r is None for _, r in keyed)
                if missing:
                    print(
                        f"skip N={size} llm: {missing} of the first {size} training items have no LLM answer"
                    )
                    continue
                usable = [
                    (i, r["llm_label"]) for i, r in keyed if r is not None and r["llm_label"] is not None
                ]
                texts, labels = [train_all[i] for i, _ in usable], [y for _, y in usable]
                dropped = size - len(usable)
            print(f"N={size} labels={source}: training on {len(texts)} items ...", flush=True)
            row = run_seeds(base, texts, labels, names, args, ns.seeds, test_texts, test_golds, test_llm)
            row.update(
                {
                    "dataset": ns.dataset,
                    "base": base.name,
                    "labels": source,
                    "size": size,
                    "unparseable_dropped": dropped,
                    "max_length": max_length,
                    "train_args": {
                        "epochs": ns.epochs,
                        "learning_rate": ns.lr,
                        "batch_size": ns.batch_size,
                        "threads": ns.threads,
                        "seed": ns.seed,
                        "seeds": ns.seeds,
                        "pooling": args.pooling,
                        "head_learning_rate": args.head_learning_rate,
                    },
                    "llm_accuracy_vs_gold": llm_acc.get("accuracy_vs_gold"),
                    "llm_test_items": llm_acc.get("items"),
                    "llm_self_agreement": self_agreement,
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
            print(
                f"  acc vs gold {row['accuracy_vs_gold']:.4f}, agreement w/ LLM {row.get('agreement_with_llm')}, "
                f"{row['epochs_run']} epochs, train {row['train_time_s']:.0f}s, eval {row['eval_time_s']:.0f}s",
                flush=True,
            )
            new_rows.append(row)
            keys = {(r["dataset"], r["base"], r["size"], r["labels"]) for r in new_rows}
            merged = [r for r in previous if (r["dataset"], r["base"], r["size"], r["labels"]) not in keys]
            merged += new_rows
            ns.out.parent.mkdir(parents=True, exist_ok=True)
            ns.out.write_text(
                json.dumps(
                    {
                        "benchmark": "accuracy",
                        "host": {"machine": platform.machine(), "python": platform.python_version()},
                        "notes": notes,
                        "last_invocation_args": {k: str(v) for k, v in vars(ns).items()},
                        "rows": merged,
                    },
                    indent=2,
                )
            )
            ns.out.with_suffix(".md").write_text(markdown(merged))
    if new_rows:
        merged = json.loads(ns.out.read_text())["rows"]
        print()
        print(markdown(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
