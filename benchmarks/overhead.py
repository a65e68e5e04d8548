"""Poodle's observation overhead: plain vLLM vs vLLM with Poodle observing, alternated.

Usage:
    .venv/bin/python benchmarks/overhead.py [--requests 64] [--rounds 3] [--concurrency 8]

Both servers run with identical vLLM flags (the Poodle one adds only the scheduler class,
the endpoint plugin and its config; detection and logging on, no surrogate serving). Both are
started once; rounds alternate which one receives the load, so drift in machine load hits
both. Each round sends the same chat requests built from IMDB reviews (truncated to keep a
round short on 2 cores). Writes benchmarks/results/overhead.json and prints a table with
throughput and p50/p99 latency per side, per round, and the spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poodle_vllm.launcher import ServerProcess, ServerSpec, free_port  # noqa: E402
from poodle_vllm.models import LLM_NAME, prepared_model_path  # noqa: E402
from poodle_vllm.paths import resolve_paths  # noqa: E402
from poodle_vllm.testing.load import run_chat_load, sentiment_prompt  # noqa: E402
from poodle_vllm.train.data import dataset_splits  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chars", type=int, default=400, help="truncate reviews to this many characters")
    args = ap.parse_args()

    reviews = [t for t, _ in dataset_splits("imdb")["test"][: args.requests]]
    prompts = [sentiment_prompt(t[: args.chars]) for t in reviews]
    model = str(prepared_model_path(LLM_NAME))
    state = Path(tempfile.mkdtemp(prefix="poodle-overhead-"))
    paths = resolve_paths(state=state)
    log_dir = state / "server-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    plain = ServerProcess(
        ServerSpec(model=model, port=free_port(), poodle=None), log_dir / "plain.log", paths
    )
    poodle_cfg = {"state_dir": str(state), "worker": False}
    observed = ServerProcess(
        ServerSpec(model=model, port=free_port(), poodle=poodle_cfg), log_dir / "poodle.log", paths
    )
    rounds: list[dict] = []
    try:
        print("starting both servers (identical vLLM flags) ...", flush=True)
        plain.start(600)
        observed.start(600)
        # Warm-up with the whole prompt set, not measured: every measured round then sees the same
        # (warm) prefix cache on both sides instead of a cold first round.
        for srv in (plain, observed):
            run_chat_load(srv.base_url, prompts, concurrency=args.concurrency, max_tokens=8)
        for r in range(args.rounds):
            order = [("plain", plain), ("poodle", observed)]
            if r % 2:
                order.reverse()
            for name, srv in order:
                res = run_chat_load(srv.base_url, prompts, concurrency=args.concurrency, max_tokens=8)
                row = {"round": r, "side": name, **res.summary()}
                rounds.append(row)
                print(json.dumps(row), flush=True)
    finally:
        plain.stop()
        observed.stop()

    def side(name: str, key: str) -> list[float]:
        return [row[key] for row in rounds if row["side"] == name]

    summary: dict[str, dict[str, float]] = {}
    for name in ("plain", "poodle"):
        tput, p50, p99 = side(name, "items_per_s"), side(name, "p50_ms"), side(name, "p99_ms")
        summary[name] = {
            "items_per_s_median": statistics.median(tput),
            "items_per_s_min": min(tput),
            "items_per_s_max": max(tput),
            "p50_ms_median": statistics.median(p50),
            "p99_ms_median": statistics.median(p99),
            "errors": sum(side(name, "errors")),
        }
    plain_t, poodle_t = summary["plain"]["items_per_s_median"], summary["poodle"]["items_per_s_median"]
    spread = (summary["plain"]["items_per_s_max"] - summary["plain"]["items_per_s_min"]) / plain_t
    result = {
        "benchmark": "overhead",
        "time": time.time(),
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "review_chars": args.chars,
        "per_round": rounds,
        "summary": summary,
        "throughput_cost": 1 - poodle_t / plain_t,
        "p50_cost": summary["poodle"]["p50_ms_median"] / summary["plain"]["p50_ms_median"] - 1,
        "plain_throughput_spread": spread,
        "target": "cost <= 2% throughput and p50, or within the measured spread",
    }
    result["within_target"] = bool(
        result["throughput_cost"] <= max(0.02, spread) and result["p50_cost"] <= max(0.02, spread)
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(result, indent=2))
    print(f"\n{'side':8} {'items/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for name in ("plain", "poodle"):
        s = summary[name]
        print(f"{name:8} {s['items_per_s_median']:9.2f} {s['p50_ms_median']:9.0f} {s['p99_ms_median']:9.0f}")
    print(
        f"throughput cost {100 * result['throughput_cost']:+.1f}%, p50 cost {100 * result['p50_cost']:+.1f}%, "
        f"plain run-to-run spread {100 * spread:.1f}%"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
