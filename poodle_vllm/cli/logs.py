"""``poodle logs``: inspect, export and purge the Arrow request log.

    poodle logs list [--json]
    poodle logs tail [-n N] [--json]
    poodle logs export --format parquet|jsonl OUT
    poodle logs purge (--tenant T | --task ID) [--json]

The log directory is ``$POODLE_STATE_DIR/logs`` unless ``--dir`` names another.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def _log_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "dir", None):
        return Path(args.dir).expanduser()
    from poodle_vllm.paths import resolve_paths

    return resolve_paths().logs


def _shorten(text: str | None, width: int) -> str:
    if text is None:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 3)] + "..."


def _token_preview(ids: list[int], width: int) -> str:
    return _shorten(f"<{len(ids)} tokens: {ids[:8]}{'...' if len(ids) > 8 else ''}>", width)


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def cmd_list(args: argparse.Namespace) -> int:
    """Print every log file with rows, bytes and schema version."""
    from poodle_vllm.arrowlog import describe_log_file, list_log_files

    directory = _log_dir(args)
    infos = [describe_log_file(p) for p in list_log_files(directory)]
    totals = {"files": len(infos), "rows": sum(i.rows for i in infos), "bytes": sum(i.bytes for i in infos)}
    if args.json:
        print(
            json.dumps({"directory": str(directory), "files": [i.to_dict() for i in infos], "total": totals})
        )
        return 0
    if not infos:
        print(f"no log files in {directory}")
        return 0
    print(f"{'file':<56} {'rows':>8} {'size':>10} {'schema':>6}  state")
    for info in infos:
        state = "corrupt" if info.error else ("torn" if info.torn else ("closed" if info.closed else "open"))
        version = "-" if info.schema_version is None else f"v{info.schema_version}"
        print(f"{Path(info.path).name:<56} {info.rows:>8} {_fmt_bytes(info.bytes):>10} {version:>6}  {state}")
    print(f"{totals['files']} file(s), {totals['rows']} row(s), {_fmt_bytes(totals['bytes'])} in {directory}")
    return 0


def _tail_rows(directory: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` rows, reading files newest first so a long log is not read in full."""
    from poodle_vllm.arrowlog import list_log_files, read_log_table

    collected: list[dict[str, Any]] = []
    for path in reversed(list_log_files(directory)):
        if len(collected) >= n:
            break
        table = read_log_table(path)
        need = n - len(collected)
        collected = table.slice(max(0, table.num_rows - need)).to_pylist() + collected
    return collected[-n:] if n > 0 else []


def _tail_entry(row: dict[str, Any], width: int) -> dict[str, Any]:
    prompt = row.get("prompt_text")
    output = row.get("output_text")
    return {
        "request_id": row.get("request_id"),
        "finish_time": row.get("finish_time"),
        "model": row.get("model"),
        "tenant": row.get("tenant"),
        "task_id": row.get("task_id"),
        "served_by": row.get("served_by"),
        "label": row.get("label"),
        "finish_reason": row.get("finish_reason"),
        "num_prompt_tokens": row.get("num_prompt_tokens"),
        "num_output_tokens": row.get("num_output_tokens"),
        "latency_s": row.get("latency_s"),
        "prompt": _shorten(prompt, width)
        if prompt is not None
        else _token_preview(row.get("prompt_token_ids") or [], width),
        "output": _shorten(output, width)
        if output is not None
        else _token_preview(row.get("output_token_ids") or [], width),
    }


def cmd_tail(args: argparse.Namespace) -> int:
    """Print the last N records with shortened prompt and output text."""
    entries = [_tail_entry(r, args.width) for r in _tail_rows(_log_dir(args), args.n)]
    if args.json:
        print(json.dumps(entries))
        return 0
    if not entries:
        print("no records")
        return 0
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["finish_time"] or 0))
        task = e["task_id"] or "-"
        latency = e["latency_s"] or 0.0
        print(
            f"{when} {e['request_id']} [{e['served_by']}] task={task} "
            f"tokens={e['num_prompt_tokens']}->{e['num_output_tokens']} {latency * 1000:.0f} ms"
        )
        print(f"    prompt: {e['prompt']}")
        print(f"    output: {e['output']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export the whole log to Parquet or JSON Lines."""
    from poodle_vllm.arrowlog import ReadReport, export_jsonl, export_parquet

    directory = _log_dir(args)
    fmt = args.format or ("jsonl" if str(args.out).endswith((".jsonl", ".json")) else "parquet")
    report = ReadReport()
    export = export_parquet if fmt == "parquet" else export_jsonl
    rows = export(directory, args.out, report=report)
    result = {"out": str(args.out), "format": fmt, "rows": rows, "report": report.to_dict()}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"exported {rows} row(s) from {report.files} file(s) to {args.out} ({fmt})")
        if report.torn_files:
            print(f"note: {len(report.torn_files)} file(s) end in a torn batch (skipped)", file=sys.stderr)
        for path, why in report.corrupt_files.items():
            print(f"warning: skipped {path}: {why}", file=sys.stderr)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Remove every record of a tenant or a task from the log."""
    from poodle_vllm.arrowlog import purge_log

    report = purge_log(
        _log_dir(args), tenant=args.tenant, task_id=args.task, include_active=args.include_active
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        what = f"tenant {args.tenant!r}" if args.tenant is not None else f"task {args.task!r}"
        print(
            f"removed {report.rows_removed} row(s) of {what}: {len(report.files_rewritten)} file(s) rewritten, "
            f"{len(report.files_deleted)} deleted"
        )
        if report.skipped_active:
            print(
                f"warning: {len(report.skipped_active)} file(s) are still being written and were skipped; "
                "stop the server (or let the log rotate) and purge again, or pass --include-active",
                file=sys.stderr,
            )
        for path in report.skipped_corrupt:
            print(f"warning: skipped unreadable file {path}", file=sys.stderr)
    return 1 if report.skipped_active or report.skipped_corrupt else 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("logs", help="inspect, export and purge the Arrow request log")
    parser.add_argument("--dir", help="log directory (default: $POODLE_STATE_DIR/logs)")
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="logs_command", metavar="ACTION")

    # --dir also after the action; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir", default=argparse.SUPPRESS, help="log directory (default: $POODLE_STATE_DIR/logs)"
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("list", parents=[common], help="log files with rows, bytes and schema version")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("tail", parents=[common], help="the last records")
    p.add_argument("-n", type=int, default=10, help="number of records (default 10)")
    p.add_argument(
        "--width", type=int, default=100, help="shorten prompt / output text to this many characters"
    )
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("export", parents=[common], help="export the log to Parquet or JSON Lines")
    p.add_argument("--format", choices=("parquet", "jsonl"), help="default: from OUT's suffix, else parquet")
    p.add_argument("out", help="output file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("purge", parents=[common], help="remove every record of a tenant or a task")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--tenant", help="tenant key 'cache_salt|lora_name' (e.g. 'acme|' for no LoRA)")
    group.add_argument("--task", help="task id")
    p.add_argument(
        "--include-active", action="store_true", help="also rewrite files a running writer still appends to"
    )
    p.set_defaults(func=cmd_purge)
