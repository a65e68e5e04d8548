"""Poodle's observation overhead: plain vLLM vs vLLM with Poodle observing, alternated.

Usage:
    .venv/bin/python benchmarks/overhead.py [--requests 64] [--rounds 12] [--concurrency 8] [--py-spy BIN]

Both servers run with identical vLLM flags (the Poodle one adds only the scheduler class,
the endpoint plugin and its config; detection and logging on, no surrogate serving). Both are
started once; rounds alternate which one receives the load, so drift in machine load hits
both. Each round sends the same chat requests built from IMDB reviews (truncated to keep a
round short on 2 cores). Writes benchmarks/results/overhead.json and prints a table with
throughput and p50/p99 latency per side, per round, and the spread.

Rounds are paired (the two sides back to back), so the cost is estimated from the per-pair
ratios: their median, and a bootstrap 95% interval of their mean. ``--py-spy BIN`` samples the
Poodle server's EngineCore with py-spy during the whole run and reports each thread's share of
the samples (how much of the engine's Python time Poodle's own threads take).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import subprocess
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
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--py-spy", default=None, help="py-spy binary: profile the Poodle EngineCore")
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
        spy = start_py_spy(args.py_spy, observed, state / "engine.pyspy") if args.py_spy else None
        for r in range(args.rounds):
            order = [("plain", plain), ("poodle", observed)]
            if r % 2:
                order.reverse()
            for name, srv in order:
                res = run_chat_load(srv.base_url, prompts, concurrency=args.concurrency, max_tokens=8)
                row = {"round": r, "side": name, **res.summary()}
                rounds.append(row)
                print(json.dumps(row), flush=True)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
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
    result.update(paired_costs(rounds))
    if args.py_spy:
        result["engine_thread_shares"] = thread_shares(state / "engine.pyspy")
    # Met when the paired cost is at most 2%, or when zero lies inside its 95% interval.
    result["within_target"] = bool(
        (result["throughput_cost_paired_median"] <= 0.02 or result["throughput_cost_ci95"][0] <= 0.0)
        and (result["p50_cost_paired_median"] <= 0.02 or result["p50_cost_ci95"][0] <= 0.0)
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
    for key in ("throughput", "p50"):
        lo, hi = result[f"{key}_cost_ci95"]
        print(
            f"paired {key} cost: median {100 * result[f'{key}_cost_paired_median']:+.1f}%, "
            f"95% interval of the mean [{100 * lo:+.1f}%, {100 * hi:+.1f}%]"
        )
    for thread, share in (result.get("engine_thread_shares") or {}).items():
        print(f"  EngineCore samples in {thread}: {100 * share:.2f}%")
    return 0


def paired_costs(rounds: list[dict]) -> dict:
    """Per-round Poodle cost relative to the plain side of the same round, with bootstrap CIs."""
    by_round: dict[int, dict[str, dict]] = collections.defaultdict(dict)
    for row in rounds:
        by_round[row["round"]][row["side"]] = row
    pairs = [v for _, v in sorted(by_round.items()) if len(v) == 2]
    tput = [1 - v["poodle"]["items_per_s"] / v["plain"]["items_per_s"] for v in pairs]
    p50 = [v["poodle"]["p50_ms"] / v["plain"]["p50_ms"] - 1 for v in pairs]
    rng = random.Random(0)

    def ci95(xs: list[float]) -> list[float]:
        means = sorted(statistics.fmean(rng.choices(xs, k=len(xs))) for _ in range(5000))
        return [means[124], means[4874]]

    return {
        "paired_rounds": len(pairs),
        "throughput_cost_per_round": tput,
        "p50_cost_per_round": p50,
        "throughput_cost_paired_median": statistics.median(tput),
        "p50_cost_paired_median": statistics.median(p50),
        "throughput_cost_ci95": ci95(tput),
        "p50_cost_ci95": ci95(p50),
    }


def start_py_spy(binary: str, server: ServerProcess, out: Path) -> subprocess.Popen:
    """py-spy (raw format, per thread) on the EngineCore process of ``server``."""
    import psutil

    assert server.proc is not None
    engines = [
        c
        for c in psutil.Process(server.proc.pid).children(recursive=True)
        if "EngineCore" in " ".join(c.cmdline() + [c.name()])
    ]
    if not engines:
        raise RuntimeError("no EngineCore process found under the Poodle server")
    cmd = [
        binary,
        "record",
        "-p",
        str(engines[0].pid),
        "--threads",
        "--nonblocking",
        "-r",
        "50",
        "-f",
        "raw",
        "-o",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def thread_shares(raw: Path) -> dict[str, float]:
    """Share of py-spy's (active) samples per thread name, from its raw collapsed-stack output."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        thread = stack.split(";", 1)[0]
        counts[thread.split(": ", 1)[-1] if ": " in thread else thread] += int(n)
    total = sum(counts.values()) or 1
    return {t: c / total for t, c in counts.most_common()}


if __name__ == "__main__":
    sys.exit(main())
