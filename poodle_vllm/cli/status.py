"""``poodle status [--json]``: server reachability, logs, tasks, offers and configuration.

It reads ``POODLE_HOME`` / ``POODLE_STATE_DIR`` directly, so it works while the server is down.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from typing import Any

from poodle_vllm.paths import PoodlePaths, resolve_paths

STATUS_VERSION = "1"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="server reachability, logs, tasks, offers and configuration")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--api-key", default=None, help="bearer token when the server runs with --api-key")
    p.set_defaults(func=run_status)


def server_status(paths: PoodlePaths, api_key: str | None = None, timeout: float = 2.0) -> dict[str, Any]:
    from poodle_vllm.launcher import read_server_file

    info = read_server_file(paths)
    if info is None:
        return {"known": False, "reachable": False}
    out: dict[str, Any] = {"known": True, "url": info.get("url"), "pid": info.get("pid"), "reachable": False}
    req = urllib.request.Request(str(info.get("url")) + "/poodle/v1/status")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out["reachable"] = True
            out["poodle"] = json.loads(resp.read())
    except Exception as exc:  # down, starting, or not a Poodle server
        out["error"] = str(exc)
    return out


def log_status(paths: PoodlePaths) -> dict[str, Any]:
    from poodle_vllm.arrowlog import ReadReport, count_records, list_log_files

    files = list_log_files(paths.logs) if paths.logs.exists() else []
    report = ReadReport()
    rows = count_records(paths.logs, report) if files else 0
    return {
        "dir": str(paths.logs),
        "files": len(files),
        "records": rows,
        "bytes": sum(f.stat().st_size for f in files),
        "torn_batches": getattr(report, "torn_batches", 0),
    }


def registry_status(paths: PoodlePaths) -> dict[str, Any]:
    if not paths.registry.exists():
        return {"path": str(paths.registry), "tasks": [], "offers": [], "counters": {}}
    from poodle_vllm.cli.views import offers_payload, tasks_payload
    from poodle_vllm.core.registry import Registry

    reg = Registry(paths.registry)
    try:
        return {
            "path": str(paths.registry),
            "tasks": tasks_payload(reg)["tasks"],
            "offers": offers_payload(reg)["offers"],
            "counters": reg.counters(),
        }
    finally:
        reg.close()


def collect_status(paths: PoodlePaths, api_key: str | None = None) -> dict[str, Any]:
    return {
        "version": STATUS_VERSION,
        "time": time.time(),
        "paths": {
            "home": str(paths.home),
            "models": str(paths.models),
            "store": str(paths.store),
            "state": str(paths.state),
        },
        "server": server_status(paths, api_key),
        "logs": log_status(paths),
        "registry": registry_status(paths),
    }


def run_status(args: argparse.Namespace) -> int:
    paths = resolve_paths()
    status = collect_status(paths, args.api_key)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    srv = status["server"]
    reach = "[green]reachable[/]" if srv.get("reachable") else "[red]not reachable[/]"
    console.print(f"[bold]Poodle[/] state in {paths.state}")
    console.print(f"server: {srv.get('url', 'none recorded')} {reach}")
    logs = status["logs"]
    console.print(f"logs: {logs['files']} files, {logs['records']} records, {logs['bytes'] / 1e6:.1f} MB")
    reg = status["registry"]
    table = Table("task", "name", "state", "requests", "eligible", "labels")
    for t in reg["tasks"]:
        table.add_row(
            t["task_id"],
            t["name"],
            t["state"],
            str(t["requests_seen"]),
            str(t["eligible_seen"]),
            ", ".join(f"{lab['label']}:{lab['count']}" for lab in t["labels"]),
        )
    console.print(table)
    for offer in reg["offers"]:
        console.print(f"offer: task {offer.get('task_id')}: {json.dumps(offer, default=str)[:300]}")
    if reg["counters"]:
        console.print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(reg["counters"].items())))
    return 0
