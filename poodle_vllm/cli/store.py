"""``poodle store``: list, add, build the zoo, and find similar models."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("store", help="the model store (candidate encoders for surrogates)")
    p.add_argument("--store-dir", default=None, help="store folder (default: $POODLE_HOME/store)")
    sub = p.add_subparsers(dest="store_command", metavar="ACTION")

    ls = sub.add_parser("list", help="list the store's models")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--no-auto-import", action="store_true", help="do not import newly prepared base models")
    ls.set_defaults(func=cmd_list)

    add = sub.add_parser("add", help="import an HF encoder folder")
    add.add_argument("path")
    add.add_argument("--id", default=None, help="model id (default: folder name)")
    add.add_argument("--kind", default="base")
    add.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    add.add_argument("--overwrite", action="store_true")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=cmd_add)

    zoo = sub.add_parser("build-zoo", help="derive task-tuned, truncated and control models")
    zoo.add_argument("--quick", action="store_true", help="two 400-item fine-tunes instead of four of 1,500")
    zoo.add_argument("--seed", type=int, default=0)
    zoo.set_defaults(func=cmd_build_zoo)

    sim = sub.add_parser("similar", help="models with the most similar fingerprint")
    sim.add_argument("model")
    sim.add_argument("-k", type=int, default=5)
    sim.add_argument("--json", action="store_true")
    sim.set_defaults(func=cmd_similar)

    cl = sub.add_parser("clusters", help="cluster the store's models by fingerprint")
    cl.add_argument("-k", type=int, default=4)
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_clusters)

    me = sub.add_parser("measure", help="measure CPU latency again (best of several runs)")
    me.add_argument("models", nargs="*", help="model ids (default: all with a folder)")
    me.add_argument("--repeats", type=int, default=3)
    me.set_defaults(func=cmd_measure)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _catalog(args: argparse.Namespace) -> Any:
    from poodle_vllm.store.catalog import open_catalog

    return open_catalog(args.store_dir)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def cmd_list(args: argparse.Namespace) -> int:
    cat = _catalog(args)
    if not args.no_auto_import:
        from poodle_vllm.store.importer import import_prepared

        import_prepared(cat)
    entries = sorted(cat.entries(), key=lambda e: (e.kind != "base", e.id))
    if args.json:
        print(json.dumps([e.summary() for e in entries], indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"model store {cat.root} ({len(entries)} models)")
    for col in (
        "id",
        "kind",
        "arch",
        "params M",
        "hidden",
        "layers",
        "ms/item@128",
        "ms/item@256",
        "disk MB",
        "lineage",
        "tags",
    ):
        t.add_column(col)
    for e in entries:
        lineage = f"{e.parent}[:{e.parent_layer}]" if e.parent else (e.base_model or "")
        t.add_row(
            e.id, e.kind, e.architecture, _mb(e.num_parameters), str(e.hidden_size), str(e.num_layers),
            "-" if e.latency_ms_128 is None else f"{e.latency_ms_128:.1f}",
            "-" if e.latency_ms_256 is None else f"{e.latency_ms_256:.1f}",
            _mb(e.size_bytes), lineage, ",".join(e.task_tags),
        )  # fmt: skip
    Console(width=220).print(t)
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from poodle_vllm.store.importer import remeasure_latency

    cat = _catalog(args)
    for m, (a, b) in remeasure_latency(cat, args.models or None, args.repeats).items():
        print(f"{m:32s} {a} ms/item @128   {b} ms/item @256")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from poodle_vllm.store.importer import add_model, update_fingerprints

    cat = _catalog(args)
    entry = add_model(
        cat,
        args.path,
        model_id=args.id,
        kind=args.kind,
        measure=not args.no_latency,
        overwrite=args.overwrite,
    )
    update_fingerprints(cat)
    if args.json:
        print(json.dumps(cat.get(entry.id).summary(), indent=1))
    else:
        print(
            f"added {entry.id} ({_mb(entry.num_parameters)}M parameters, {entry.latency_ms_128} ms/item at 128 tokens)"
        )
    return 0


def cmd_build_zoo(args: argparse.Namespace) -> int:
    from poodle_vllm.store.zoo import build_zoo

    cat = _catalog(args)
    built = build_zoo(cat, quick=args.quick, seed=args.seed)
    print(f"zoo: {len(built)} models built or imported; the store now holds {len(cat)}")
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from poodle_vllm.store.fingerprint import FingerprintIndex

    cat = _catalog(args)
    index = FingerprintIndex.from_entries(cat.entries())
    hits = index.similar(args.model, args.k)
    if args.json:
        print(json.dumps([{"model": m, "similarity": round(s, 4)} for m, s in hits], indent=1))
    else:
        for m, s in hits:
            print(f"{s:7.3f}  {m}")
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    from poodle_vllm.store.fingerprint import FingerprintIndex

    cat = _catalog(args)
    index = FingerprintIndex.from_entries(cat.entries())
    clusters = index.cluster(args.k)
    groups: dict[int, list[str]] = {}
    for m, c in clusters.items():
        groups.setdefault(c, []).append(m)
    if args.json:
        print(json.dumps({str(c): ms for c, ms in sorted(groups.items())}, indent=1))
    else:
        for c, ms in sorted(groups.items()):
            print(f"cluster {c}: {', '.join(sorted(ms))}")
    return 0
