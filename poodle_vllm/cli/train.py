"""``poodle train``: develop a surrogate for a task from its logged LLM answers (or from gold labels).

    poodle train TASK [--base MODEL] [--max-items N] [--json]
    poodle train --dataset rotten_tomatoes --n 500 [--base MODEL] [--json]

With a TASK (id, name or unique prefix) the label space comes from the registry and the training
items from the Arrow request log; the surrogate is saved as the next version under
``surrogates/<task_id>/v<N>/`` and registered (not activated: shadow testing decides that).
With ``--dataset`` a surrogate is trained on a public dataset's gold labels and scored on its
fixed test split, without any task (an experiment; it is not registered).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_BASE = "all-minilm-l6-v2"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a surrogate for a task (or on a dataset's gold labels)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", nargs="?", help="task id, name or unique prefix")
    p.add_argument(
        "--dataset", help="train on gold labels of this dataset (imdb, rotten_tomatoes, sst2, ag_news)"
    )
    p.add_argument("--n", type=int, default=500, help="--dataset: training items (default 500)")
    p.add_argument("--test-items", type=int, default=1000, help="--dataset: test items scored (default 1000)")
    p.add_argument(
        "--base",
        default=DEFAULT_BASE,
        help=f"base encoder: a prepared model name or a folder ({DEFAULT_BASE})",
    )
    p.add_argument(
        "--max-items", type=int, default=None, help="cap the training items (seeded random sample)"
    )
    p.add_argument("--max-length", type=int, default=None, help="tokens per text (default 128)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 3)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--output", help="--dataset: output folder (default: surrogates/dataset-<name>/v<N>)")
    p.add_argument(
        "--no-register", action="store_true", help="TASK: save the artifact but do not register it"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_train)


def resolve_base(base: str) -> Path:
    """A path to an HF folder, a prepared model name (under the models folder) or a model-store id."""
    from poodle_vllm.paths import resolve_paths

    candidate = Path(base).expanduser()
    if (candidate / "config.json").exists():
        return candidate
    prepared = resolve_paths().models / base
    if (prepared / "config.json").exists():
        return prepared
    store = resolve_paths().store
    if store.is_dir():
        try:
            from poodle_vllm.store.catalog import open_catalog

            catalog = open_catalog(store)
            if base in catalog.ids():
                path = Path(str(catalog.get(base).path))
                if (path / "config.json").exists():
                    return path
        except Exception:  # an unreadable store: fall through to the clear error below
            pass
    models = resolve_paths().models
    known = (
        sorted(p.name for p in models.iterdir() if (p / "config.json").exists()) if models.is_dir() else []
    )
    raise FileNotFoundError(
        f"base model {base!r} not found (prepared models under {models}: {known or 'none'})"
    )


def build_args(ns: argparse.Namespace) -> Any:
    from poodle_vllm.train.args import TrainingArguments

    overrides = {
        "max_length": ns.max_length,
        "epochs": ns.epochs,
        "batch_size": ns.batch_size,
        "learning_rate": ns.lr,
        "time_budget_s": ns.time_budget,
        "num_threads": ns.threads,
        "seed": ns.seed,
    }
    return TrainingArguments(**{k: v for k, v in overrides.items() if v is not None}).validate()


def _progress(event: dict[str, Any]) -> None:
    if event.get("event") == "eval":
        print(
            f"  epoch {event['epoch']:.2f}: validation agreement {event['val_agreement']:.4f} "
            f"({event['elapsed_s']:.0f}s)",
            file=sys.stderr,
        )


def _sample(texts: list[str], labels: list[str], cap: int | None, seed: int) -> tuple[list[str], list[str]]:
    if cap is None or len(texts) <= cap:
        return texts, labels
    idx = sorted(random.Random(seed).sample(range(len(texts)), cap))
    return [texts[i] for i in idx], [labels[i] for i in idx]


def train_task(ns: argparse.Namespace) -> dict[str, Any]:
    from poodle_vllm.core.registry import Registry
    from poodle_vllm.paths import resolve_paths
    from poodle_vllm.train.artifact import (
        canonical_answers_from_labels,
        save_surrogate_version,
        template_hash,
    )
    from poodle_vllm.train.data import load_task_examples
    from poodle_vllm.train.trainer import SurrogateTrainer

    paths = resolve_paths()
    if not paths.registry.exists():
        raise FileNotFoundError(f"no task registry at {paths.registry} (has `poodle serve` run?)")
    registry = Registry(paths.registry)
    task = registry.find_task(ns.task)
    if task is None:
        raise ValueError(f"no task matches {ns.task!r} (see `poodle tasks`)")
    label_names = [li.label for li in task.labels]
    if len(label_names) < 2:
        raise ValueError(
            f"task {task.task_id} has {len(label_names)} induced label(s); it cannot be distilled yet"
        )
    args = build_args(ns)
    base = resolve_base(ns.base)
    texts, labels, report = load_task_examples(paths.logs, task.task_id, label_names)
    texts, labels = _sample(texts, labels, ns.max_items, args.seed)
    print(
        f"task {task.task_id} ({task.name}): {len(texts)} items from the log "
        f"(labels {report.label_counts}); base {base.name}",
        file=sys.stderr,
    )
    trainer = SurrogateTrainer(args, progress=None if ns.json else _progress)
    t0 = time.perf_counter()
    result = trainer.train(base, texts, labels, label_names)
    meta = trainer.build_metadata(
        task_id=task.task_id,
        template_hash=template_hash(task.template),
        canonical_answers=canonical_answers_from_labels(task.labels),
        base_model=base.name,
        extra={"data_report": report.to_dict(), "task_name": task.name},
    )
    next_registered = max((s["version"] for s in registry.list_surrogates(task.task_id)), default=0) + 1
    version, path = save_surrogate_version(
        paths.surrogates, task.task_id, trainer.write_model, meta, min_version=next_registered
    )
    metrics = {
        "validation_agreement": result.best_val_agreement,
        "validation_items": result.val_items,
        "training_items": result.train_items,
        "temperature": result.temperature,
        "train_time_s": result.train_time_s,
        "base_model": base.name,
    }
    registered = None
    if not ns.no_register:
        registered = registry.add_surrogate(task.task_id, path, metrics)
        if registered != version:
            logger.warning(
                "surrogate folder v%d registered as version %d (concurrent writer?)", version, registered
            )
    return {
        "task_id": task.task_id,
        "task_name": task.name,
        "path": str(path),
        "version": version,
        "registered_version": registered,
        "validation_agreement": result.best_val_agreement,
        "validation_majority_share": result.val_majority_share,
        "data": report.to_dict(),
        "result": result.to_dict(),
        "wall_s": time.perf_counter() - t0,
    }


def train_dataset(ns: argparse.Namespace) -> dict[str, Any]:
    from poodle_vllm.paths import resolve_paths
    from poodle_vllm.train.artifact import save_surrogate_version
    from poodle_vllm.train.data import examples_from_dataset
    from poodle_vllm.train.trainer import SurrogateTrainer

    args = build_args(ns)
    base = resolve_base(ns.base)
    texts, labels, names = examples_from_dataset(ns.dataset, ns.n, "train")
    test_texts, test_labels, _ = examples_from_dataset(ns.dataset, None, "test")
    test_texts, test_labels = test_texts[: ns.test_items], test_labels[: ns.test_items]
    trainer = SurrogateTrainer(args, progress=None if ns.json else _progress)
    result = trainer.train(base, texts, labels, names)
    test = trainer.evaluate(test_texts, test_labels)
    meta = trainer.build_metadata(
        task_id=f"dataset-{ns.dataset}",
        base_model=base.name,
        extra={"dataset": ns.dataset, "test": test.to_dict()},
    )
    if ns.output:
        path = trainer.save(ns.output, meta)
        version = None
    else:
        version, path = save_surrogate_version(
            resolve_paths().surrogates, f"dataset-{ns.dataset}", trainer.write_model, meta
        )
    return {
        "dataset": ns.dataset,
        "path": str(path),
        "version": version,
        "validation_agreement": result.best_val_agreement,
        "validation_majority_share": result.val_majority_share,
        "test_accuracy": test.accuracy,
        "test_items": test.items,
        "test_majority_share": test.majority_share,
        "result": result.to_dict(),
    }


def run_train(ns: argparse.Namespace) -> int:
    if bool(ns.task) == bool(ns.dataset):
        print("poodle train: give either TASK or --dataset NAME", file=sys.stderr)
        return 2
    out = train_dataset(ns) if ns.dataset else train_task(ns)
    if ns.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    r = out["result"]
    cal = r.get("calibration") or {}
    print(
        f"validation agreement {out['validation_agreement']:.4f} "
        f"(majority label {out['validation_majority_share']:.4f}) on {r['val_items']} items; "
        f"trained on {r['train_items']} items, {r['epochs_run']} epochs, {r['train_time_s']:.1f}s ({r['stopped_reason']})"
    )
    if cal:
        print(
            f"calibration: T={cal['temperature']:.3f}, validation NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}"
        )
    if "test_accuracy" in out:
        print(f"test accuracy (gold) {out['test_accuracy']:.4f} on {out['test_items']} items")
    print(f"artifact: {out['path']}" + (f" (v{out['version']})" if out.get("version") else ""))
    return 0
