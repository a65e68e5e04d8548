"""``python -m poodle_vllm.worker``: the development worker process (config from ``POODLE_CONFIG``)."""

from __future__ import annotations

import logging
import os

from poodle_vllm.config import load_config
from poodle_vllm.paths import resolve_paths
from poodle_vllm.worker.pipeline import DevelopmentWorker


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config()
    paths = resolve_paths(config.home, config.state_dir)
    parent = os.environ.get("POODLE_WORKER_PARENT")
    DevelopmentWorker(config, paths).run_forever(int(parent) if parent else None)


if __name__ == "__main__":
    main()
