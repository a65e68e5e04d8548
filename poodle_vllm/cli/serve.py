"""``poodle serve [MODEL] [-- extra vllm serve args]``: launch ``vllm serve`` with Poodle enabled."""

from __future__ import annotations

import argparse
import json
import os
import sys

from poodle_vllm.launcher import ServerSpec, build_command, format_command
from poodle_vllm.paths import resolve_paths


def default_model() -> str:
    from poodle_vllm.models import LLM_NAME, prepared_model_path

    return str(prepared_model_path(LLM_NAME))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="launch vllm serve with Poodle enabled (prints the exact command)",
        epilog="Arguments after a lone `--` are passed to vllm serve unchanged.",
    )
    p.add_argument(
        "model", nargs="?", help="model folder or name (default: the prepared SmolLM2-135M-Instruct)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--served-model-name", default="smollm2")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument(
        "--config", default="{}", help="Poodle config as JSON (the poodle section of --additional-config)"
    )
    p.add_argument("--plain", action="store_true", help="launch plain vLLM without Poodle (for comparisons)")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from poodle_vllm.config import config_to_dict, load_config

    cfg = load_config(args.config)  # validates keys before the slow start
    paths = resolve_paths(cfg.home, cfg.state_dir).ensure()
    extra = list(getattr(args, "passthrough", None) or [])
    spec = ServerSpec(
        model=args.model or default_model(),
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        max_model_len=args.max_model_len,
        poodle=None if args.plain else config_to_dict(cfg),
        extra_args=extra,
    )
    cmd, env = build_command(spec)
    print(format_command(cmd, env), flush=True)
    if args.dry_run:
        return 0
    if spec.poodle is not None:
        paths.server_file.write_text(
            json.dumps(
                {
                    "url": f"http://{spec.host}:{spec.port}",
                    "pid": os.getpid(),
                    "model": spec.served_model_name,
                    "command": format_command(cmd, env),
                },
                indent=2,
            )
        )
    os.execvpe(cmd[0], cmd, {**os.environ, **env})
    return 1  # pragma: no cover - exec does not return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
