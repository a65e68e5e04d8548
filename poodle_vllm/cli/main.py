"""The ``poodle`` command: one module per subcommand group under ``poodle_vllm.cli``.

Each module exposes ``add_parser(subparsers)`` and sets ``func`` (``args -> int`` exit code)
on the parsers it adds. Heavy imports (torch, vllm, transformers) stay inside the commands so
``poodle --help`` and ``poodle status`` are fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order in ``poodle --help``.
SUBCOMMAND_MODULES = (
    "serve",
    "demo",
    "status",
    "models",
    "logs",
    "tasks",
    "analyze",
    "store",
    "search",
    "train",
    "lifecycle",
    "worker",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poodle",
        description="Poodle: just-in-time replacement of recurring LLM tasks by small surrogates, inside vLLM.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"poodle_vllm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"poodle_vllm.cli.{name}":
                continue  # subcommand not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after a lone `--` is handed to the command untouched (e.g. extra vllm serve flags).
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `poodle ... --json | head`
        return 0
    except (FileNotFoundError, PermissionError, ValueError) as exc:
        print(f"poodle: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
