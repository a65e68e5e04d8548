"""``poodle search``: rank the store's models for a task's labelled sample."""

from __future__ import annotations

import argparse
import json
import random
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("search", help="rank store models for a task with proxy scores")
    p.add_argument(
        "task", nargs="?", default=None, help="task id or name in the registry (labels from the request log)"
    )
    p.add_argument(
        "--dataset", default=None, help="a public dataset instead: imdb, rotten_tomatoes, sst2, ag_news"
    )
    p.add_argument("--n", type=int, default=500, help="labelled items to use (default 500)")
    p.add_argument("--store-dir", default=None, help="store folder (default: $POODLE_HOME/store)")
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=0.0,
        help="ms per item at 128 tokens, batch 32; 0 = no limit (default: latency here is noisy)",
    )
    p.add_argument(
        "--max-params", type=float, default=60.0, help="millions of parameters (default 60); 0 = no limit"
    )
    p.add_argument("--scorers", default="logme,linear", help="comma list of logme, knn, linear")
    p.add_argument("--rounds", default="100,250,500", help="successive-halving sample sizes")
    p.add_argument("--no-halving", action="store_true", help="score every candidate on all items")
    p.add_argument(
        "--cluster-prune", action="store_true", help="score fingerprint-cluster representatives first"
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--no-save", action="store_true", help="do not keep the result in the search history")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_search)


def _task_sample(task: str, n: int, seed: int) -> tuple[list[str], list[str], str, str]:
    from poodle_vllm.core.registry import Registry
    from poodle_vllm.paths import resolve_paths
    from poodle_vllm.train.data import load_task_examples

    paths = resolve_paths()
    reg = Registry(paths.registry)
    try:
        info = reg.find_task(task)
    finally:
        reg.close()
    if info is None:
        raise ValueError(f"no task {task!r} in the registry at {paths.registry}")
    texts, labels, _ = load_task_examples(paths.logs, info.task_id, [lab.label for lab in info.labels])
    idx = list(range(len(texts)))
    random.Random(seed).shuffle(idx)
    idx = idx[:n]
    return [texts[i] for i in idx], [labels[i] for i in idx], info.name or info.task_id, info.task_id


def cmd_search(args: argparse.Namespace) -> int:
    from poodle_vllm.search.config import SearchConfig
    from poodle_vllm.search.search import search_models
    from poodle_vllm.store.catalog import open_catalog
    from poodle_vllm.store.importer import import_prepared, update_fingerprints

    task_id = None
    if args.dataset:
        from poodle_vllm.train.data import examples_from_dataset

        texts, labels, _ = examples_from_dataset(args.dataset, n=args.n)
        name = f"dataset:{args.dataset}"
    elif args.task:
        texts, labels, name, task_id = _task_sample(args.task, args.n, args.seed)
    else:
        raise ValueError("give a TASK (id or name) or --dataset NAME")
    cat = open_catalog(args.store_dir)
    if import_prepared(cat):
        update_fingerprints(cat)
    if not len(cat):
        raise FileNotFoundError(
            f"the store at {cat.root} is empty; run `poodle store build-zoo` or `poodle store add PATH`"
        )
    cfg = SearchConfig(
        scorers=[s.strip() for s in args.scorers.split(",") if s.strip()],
        max_latency_ms=args.max_latency_ms or None,
        max_parameters=int(args.max_params * 1e6) or None,
        round_sizes=[int(x) for x in args.rounds.split(",") if x.strip()],
        halving=not args.no_halving,
        cluster_prune=args.cluster_prune,
        use_cache=not args.no_cache,
        save_result=not args.no_save,
        seed=args.seed,
    )
    result = search_models(texts, labels, cat, cfg, task_name=name, task_id=task_id)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"model search: {name}, {result.n_items} items, {result.n_labels} labels")
    for col in ("rank", "model", "score", *cfg.scorers, "pred. acc", "items", "params M", "ms/item"):
        t.add_column(col)
    for c in result.ranking:
        t.add_row(
            str(c.rank), c.model_id, f"{c.combined:+.2f}", *[f"{c.scores.get(s, float('nan')):.3f}" for s in cfg.scorers],
            "-" if c.predicted_accuracy is None else f"{c.predicted_accuracy:.3f}", str(c.n_items),
            f"{c.num_parameters / 1e6:.1f}", "-" if c.latency_ms_128 is None else f"{c.latency_ms_128:.1f}",
        )  # fmt: skip
    console = Console()
    console.print(t)
    for m, why in sorted(result.excluded.items()):
        console.print(f"excluded {m}: {why}")
    if result.warm_start_from:
        console.print(f"warm start from similar past tasks: {', '.join(result.warm_start_from)}")
    tm = result.timing
    console.print(
        f"time: load {tm['load']:.1f}s, inference {tm['inference']:.1f}s, scoring {tm['scoring']:.1f}s, total {tm['total']:.1f}s"
    )
    return 0
