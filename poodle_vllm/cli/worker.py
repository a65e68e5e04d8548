"""``poodle worker [--once]``: run the development worker in the foreground."""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run the development worker (search + training of ready tasks)")
    p.add_argument("--once", action="store_true", help="develop at most one ready task, then exit")
    p.add_argument("--config", default=None, help="Poodle config JSON (default: POODLE_CONFIG)")
    p.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from poodle_vllm.config import load_config
    from poodle_vllm.paths import resolve_paths
    from poodle_vllm.worker.pipeline import DevelopmentWorker

    config = load_config(args.config)
    worker = DevelopmentWorker(config, resolve_paths(config.home, config.state_dir))
    if args.once:
        report = worker.run_once()
        print(
            json.dumps(dataclasses.asdict(report) if report else {"developed": None}, indent=2, default=str)
        )
        return 0
    worker.run_forever()
    return 0
