"""The demo's summary: accuracy, agreement, latency, throughput, cost and break-even; JSON + PNG."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from poodle_vllm.demo.runner import DemoRun

REPORT_VERSION = "1"


def _accuracy(pairs: list[tuple[str | None, str | None]]) -> dict[str, Any]:
    scored = [(p, g) for p, g in pairs if g is not None]
    parsed = [(p, g) for p, g in scored if p is not None]
    return {
        "n": len(scored),
        "unparseable": len(scored) - len(parsed),
        # Unparseable answers count as wrong: that is what a user's parser would face.
        "accuracy": (sum(p == g for p, g in parsed) / len(scored)) if scored else None,
    }


def _phase(replies: list[Any]) -> dict[str, Any]:
    ok = [r for r in replies if r.error is None]
    if not ok:
        return {"n": 0}
    lat = sorted(r.latency_s for r in ok)
    start = min(r.started_at for r in ok)
    end = max(r.started_at + r.latency_s for r in ok)
    return {
        "n": len(ok),
        "errors": len(replies) - len(ok),
        "p50_ms": 1000 * statistics.median(lat),
        "items_per_s": len(ok) / (end - start) if end > start else None,
        "prompt_tokens_mean": statistics.mean(r.prompt_tokens for r in ok),
        "completion_tokens_mean": statistics.mean(r.completion_tokens for r in ok),
    }


def summarize(run: DemoRun) -> dict[str, Any]:
    from poodle_vllm.core.cost import (
        LLM_PRICES,
        JITRAssumptions,
        Workload,
        api_cost_curve,
        surrogate_cost_per_request,
    )
    from poodle_vllm.core.labels import normalize_answer

    llm = [(r, it) for r, it, state in run.replies if r.served_by == "llm" and state != "serving"]
    sur = [(r, it) for r, it, _ in run.replies if r.served_by == "surrogate"]
    audits = [(r, it) for r, it, state in run.replies if r.served_by == "llm" and state == "serving"]
    llm_acc = _accuracy([(normalize_answer(r.text), it.gold) for r, it in llm])
    sur_acc = _accuracy([(normalize_answer(r.text), it.gold) for r, it in sur])
    llm_phase, sur_phase = _phase([r for r, _ in llm]), _phase([r for r, _ in sur])
    gate = (run.live or {}).get("gate") or {}
    audit = (run.live or {}).get("audit") or {}
    surrogate = run.surrogate or {}
    timings = (surrogate.get("metrics") or {}).get("timings") or {}
    dev_s = float(timings.get("search_s", 0.0) + timings.get("train_s", 0.0))
    collected = sum(1 for r, _, state in run.replies if state not in ("serving",))
    cost: dict[str, Any] = {}
    if llm_phase.get("n") and sur_phase.get("n"):
        work = Workload(llm_phase["prompt_tokens_mean"], llm_phase["completion_tokens_mean"])
        for key in ("gpt-4.1-nano", "gpt-4.1", "llama-3.1-405b-turbo"):
            curve = api_cost_curve(
                LLM_PRICES[key],
                work,
                JITRAssumptions(
                    switch_after=collected,
                    development_hours=dev_s / 3600.0,
                    # Priced at the paper's accelerator rate, at the surrogate's measured items/s.
                    surrogate_cost_per_request=surrogate_cost_per_request(sur_phase["items_per_s"], 4.0 / 3.0)
                    if sur_phase.get("items_per_s")
                    else 0.0,
                    audit_fraction=run.settings.poodle_config(Path("."))["serving"]["audit_fraction"],
                ),
            )
            per_llm = curve.llm_per_request if hasattr(curve, "llm_per_request") else None
            cost[key] = {
                "break_even_requests": curve.break_even_requests(),
                "llm_usd_per_million": per_llm * 1e6 if per_llm is not None else None,
                "savings_usd_on_this_run": (per_llm or 0.0) * len(sur),
                "summary": curve.summary(),
            }
    speedup = None
    if sur_phase.get("items_per_s") and llm_phase.get("items_per_s"):
        speedup = sur_phase["items_per_s"] / llm_phase["items_per_s"]
    return {
        "version": REPORT_VERSION,
        "settings": {k: v for k, v in vars(run.settings).items() if k != "poodle"},
        "stop_reason": run.stop_reason,
        "wall_s": run.finished_at - run.started_at,
        "server_start_s": run.server_start_s,
        "requests": len(run.replies),
        "served_by_surrogate": len(sur),
        "llm": {**llm_acc, **llm_phase},
        "surrogate": {
            **sur_acc,
            **sur_phase,
            "version": surrogate.get("version"),
            "base_model": (surrogate.get("metrics") or {}).get("base_model"),
        },
        "audits": {**_accuracy([(normalize_answer(r.text), it.gold) for r, it in audits]), "live": audit},
        "agreement_shadow": gate.get("agreement"),
        "gate": gate,
        "speedup_items_per_s": speedup,
        "development_s": dev_s,
        "development_timings": timings,
        "collected_before_switch": collected,
        "cost": cost,
        "events": [vars(e) for e in run.events],
        "task": run.task,
    }


def write_timeline_png(run: DemoRun, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = run.started_at
    fig, ax = plt.subplots(figsize=(10, 4))
    for who, color in (("llm", "tab:blue"), ("surrogate", "tab:green"), ("error", "tab:red")):
        pts = [(r.started_at - t0, 1000 * r.latency_s) for r, _, _ in run.replies if r.served_by == who]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=6, color=color, label=f"{who} ({len(pts)})")
    for ev in run.events:
        if ev.t >= t0:
            ax.axvline(ev.t - t0, color="grey", lw=0.8, ls="--")
            ax.text(
                ev.t - t0,
                ax.get_ylim()[1] if ax.has_data() else 1,
                ev.state,
                rotation=90,
                va="top",
                fontsize=7,
            )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Poodle demo: who answered each request, and when the task changed state")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run: DemoRun, out_dir: Path) -> tuple[dict[str, Any], Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    json_path, png_path = out_dir / "demo_report.json", out_dir / "demo_timeline.png"
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    write_timeline_png(run, png_path)
    return summary, json_path, png_path
