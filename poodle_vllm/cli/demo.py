"""``poodle demo [--dataset imdb] [--quick] [--input FILE]``: the JITR loop on real reviews."""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

QUICK_MAX_CHARS = 700
"""--quick keeps IMDB reviews up to this many characters (about 170 tokens; 1,054 of the 3,995
training reviews): shorter texts, same gate."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the JITR loop on real reviews: detect, collect, search, train, shadow, serve"
    )
    p.add_argument("--dataset", default="imdb", choices=["imdb", "rotten_tomatoes", "sst2"])
    p.add_argument(
        "--input", default=None, help="your own CSV or JSONL with a 'text' (and optional 'label') field"
    )
    p.add_argument("--quick", action="store_true", help="shorter texts and smaller phases: under 10 minutes")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--base-model", default=None, help="skip the model search and fine-tune this base model")
    p.add_argument("--serve-requests", type=int, default=None, help="requests to measure after the switch")
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds of traffic")
    p.add_argument("--out", default="demo-output", help="folder for the JSON report and the PNG timeline")
    p.add_argument(
        "--state-dir", default=None, help="Poodle state for this demo (default: a fresh temp folder)"
    )
    p.set_defaults(func=run_demo)


def _settings(args: argparse.Namespace) -> Any:
    from poodle_vllm.demo.runner import DemoSettings

    quick = bool(args.quick)
    return DemoSettings(
        dataset=args.dataset,
        input_file=args.input,
        quick=quick,
        concurrency=args.concurrency,
        max_chars=QUICK_MAX_CHARS if quick and not args.input else None,
        serve_requests=args.serve_requests or (150 if quick else 500),
        time_limit_s=args.time_limit or (900.0 if quick else 4 * 3600.0),
        base_model=args.base_model,
    )


def _estimate(settings: Any) -> str:
    cfg = settings.poodle_config(Path("."))
    n_llm = cfg["serving"]["min_train_items"] + cfg["serving"]["shadow_requests"]
    rate = 4.0 if settings.quick else 1.0  # LLM items/s measured here: short reviews ~4/s, full ~1/s
    minutes = (60 + n_llm / rate + (300 if settings.quick else 1500)) / 60
    return (
        f"about {minutes:.0f} minutes: ~60 s server start, {n_llm} LLM-answered requests at ~{rate:g}/s "
        f"(labels, then shadow test), model search and training, then {settings.serve_requests} surrogate-served requests"
    )


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from poodle_vllm.demo.report import write_report
    from poodle_vllm.demo.runner import Demo
    from poodle_vllm.models import LLM_NAME, prepared_model_path
    from poodle_vllm.paths import resolve_paths

    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console = Console()
    settings = _settings(args)
    model = str(prepared_model_path(LLM_NAME))
    state = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="poodle-demo-"))
    paths = resolve_paths(state=state)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]Poodle demo[/] on {settings.input_file or settings.dataset}: {_estimate(settings)}")
    console.print(f"state: {state}   report: {out}/")
    started = time.time()

    def table(run: Any, status: str) -> Table:
        t = Table(title=f"task state: {status}   ({time.time() - started:.0f} s)")
        for col in ("requests", "by LLM", "by surrogate", "errors", "last event"):
            t.add_column(col)
        by = {"llm": 0, "surrogate": 0, "error": 0}
        for r, _, _ in run.replies:
            by[r.served_by] = by.get(r.served_by, 0) + 1
        last = run.events[-1] if run.events else None
        t.add_row(
            str(len(run.replies)),
            str(by["llm"]),
            str(by["surrogate"]),
            str(by["error"]),
            f"{last.state}: {last.reason[:70]}" if last else "-",
        )
        return t

    with Live(console=console, refresh_per_second=2) as live:
        demo = Demo(settings, paths, on_update=lambda run, status: live.update(table(run, status)))
        run = demo.execute(model, out / "server.log")
    summary, json_path, png_path = write_report(run, out)
    _print_summary(console, summary)
    console.print(f"report: {json_path}   timeline: {png_path}")
    return 0 if summary["served_by_surrogate"] else 1


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _print_summary(console: Any, s: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"Poodle demo summary ({s['stop_reason']})")
    t.add_column("")
    t.add_column("LLM (SmolLM2-135M)")
    t.add_column("surrogate")
    llm, sur = s["llm"], s["surrogate"]
    t.add_row("requests answered", str(llm.get("n", 0)), str(sur.get("n", 0)))
    t.add_row("accuracy vs gold", _fmt(llm.get("accuracy")), _fmt(sur.get("accuracy")))
    t.add_row("p50 latency (ms)", _fmt(llm.get("p50_ms"), ".0f"), _fmt(sur.get("p50_ms"), ".0f"))
    t.add_row("items / s", _fmt(llm.get("items_per_s"), ".2f"), _fmt(sur.get("items_per_s"), ".2f"))
    console.print(t)
    console.print(
        f"shadow agreement with the LLM: {_fmt(s.get('agreement_shadow'))}; surrogate {sur.get('base_model')} "
        f"v{sur.get('version')}; development {s['development_s']:.0f} s; speed-up {_fmt(s.get('speedup_items_per_s'), '.1f')}x"
    )
    for key, c in (s.get("cost") or {}).items():
        console.print(
            f"at {key} prices: break-even after {c['break_even_requests']} requests; "
            f"LLM ${_fmt(c['llm_usd_per_million'], ',.0f')} per million requests"
        )
