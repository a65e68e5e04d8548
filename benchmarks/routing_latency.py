"""Latency of a request the surrogate answers vs the floor of vLLM's shortest path (issue 6).

Usage:
    .venv/bin/python benchmarks/routing_latency.py [--requests 60] [--base paraphrase-minilm-l3-v2]

One ``vllm serve`` with Poodle (``benchmarks.floor_scheduler.FloorProbeScheduler``: Poodle's
scheduler plus a probe) is driven with templated rotten_tomatoes reviews until its task is served
(fixed base model, small mechanical gate, as in the end-to-end tests). Then, with the server
otherwise idle, single sequential chat requests alternate between

* **floor**: the same rendered prompt with ``vllm_xargs.floor_probe_ids`` = the task's canonical
  answer ids, answered in the engine with no model work through the very path a surrogate answer
  takes (vLLM's shortest path; the shared notes measured 11-13 ms over HTTP here);
* **routed**: a review the surrogate answers (prefix match, batching thread, prediction, emit).

The surrogate's own compute for one request is timed in this process on the same texts (the
served artifact, batch 1, one thread like the engine's). Target (issue 6): routed p50 at most
5 ms above floor p50 + surrogate compute p50. Writes ``benchmarks/results/routing_latency.json``
and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from poodle_vllm.launcher import ServerProcess, ServerSpec, free_port  # noqa: E402
from poodle_vllm.paths import resolve_paths  # noqa: E402
from poodle_vllm.testing.load import run_chat_load, sentiment_prompt, served_by_of  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def serving_config(base: str) -> dict[str, Any]:
    return {
        "worker": True,
        "detection": {"min_requests": 4},
        "serving": {"policy": "auto", "min_train_items": 60, "shadow_requests": 20, "shadow_min_per_label": 2,
                    "gate_target": 0.0, "audit_fraction": 0.0, "registry_poll_s": 0.5},
        "development": {"base_model": base, "epochs": 3, "max_length": 64, "num_threads": 2},
    }  # fmt: skip


def drive_to_serving(url: str, registry: Any, texts: list[str], timeout_s: float = 900) -> tuple[Any, int]:
    """Send templated reviews until the task is served; returns the task and the texts used."""
    pos, deadline = 0, time.time() + timeout_s
    while time.time() < deadline:
        run_chat_load(url, [sentiment_prompt(t) for t in texts[pos : pos + 16]], concurrency=8)
        pos += 16
        tasks = registry.list_tasks()
        if tasks:
            task = max(tasks, key=lambda t: t.requests_seen)
            if task.state == "serving":
                return task, pos
            if task.state in ("ready", "developing"):
                time.sleep(5)  # the worker trains; no need to send more
    raise TimeoutError("the task was not served in time")


def timed_chat(client: Any, content: str, **extra: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    resp = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": content}], temperature=0, max_tokens=16,
        extra_body=extra or None,
    )  # fmt: skip
    return 1000 * (time.perf_counter() - t0), resp


def p50(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=60, help="sequential requests per side")
    p.add_argument("--base", default="paraphrase-minilm-l3-v2", help="the surrogate's fixed base model")
    p.add_argument("--load-items", type=int, default=400, help="requests in the served-throughput run")
    p.add_argument("--llm-items", type=int, default=96, help="the same prompts answered by the LLM")
    p.add_argument("--concurrency", type=int, default=32, help="client concurrency of both throughput runs")
    p.add_argument("--out", type=Path, default=RESULTS / "routing_latency.json")
    ns = p.parse_args(argv)

    import tempfile

    from openai import OpenAI

    from poodle_vllm.core.registry import Registry
    from poodle_vllm.models import LLM_NAME, prepared_model_path
    from poodle_vllm.surrogate.runtime import SurrogateModel
    from poodle_vllm.train.data import dataset_splits

    state = Path(tempfile.mkdtemp(prefix="poodle-latency-"))
    paths = resolve_paths(state=state)
    spec = ServerSpec(
        model=str(prepared_model_path(LLM_NAME)), port=free_port(),
        poodle={**serving_config(ns.base), "state_dir": str(state)},
        extra_args=["--scheduler-cls", "benchmarks.floor_scheduler.FloorProbeScheduler"],
        env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    texts = [t for t, _ in dataset_splits("rotten_tomatoes")["train"]]
    server = ServerProcess(spec, state / "server.log", paths)
    t0 = time.time()
    server.start(timeout_s=900)
    print(f"server up in {time.time() - t0:.0f}s (log {state / 'server.log'})", flush=True)
    try:
        registry = Registry(paths.registry)
        task, used = drive_to_serving(server.base_url, registry, texts)
        print(f"task {task.task_id} served after {used} requests, {time.time() - t0:.0f}s", flush=True)
        canonical = {lab.label: lab.canonical_token_ids for lab in task.labels if lab.canonical_token_ids}
        probe_ids = ",".join(str(t) for t in next(iter(canonical.values())))
        client = OpenAI(base_url=server.base_url + "/v1", api_key="EMPTY", max_retries=0, timeout=60)
        sample = texts[used + 100 : used + 100 + ns.requests]
        for t in sample[:5]:  # warm-up: first-request costs on both paths
            timed_chat(client, sentiment_prompt(t))
            timed_chat(client, sentiment_prompt(t), vllm_xargs={"floor_probe_ids": probe_ids})
        floor: list[float] = []
        routed: list[float] = []
        routed_to_llm = 0
        for t in sample:  # alternated, so both sides see the same machine state
            ms, resp = timed_chat(client, sentiment_prompt(t), vllm_xargs={"floor_probe_ids": probe_ids})
            floor.append(ms)
            ms, resp = timed_chat(client, sentiment_prompt(t))
            if served_by_of(resp) == "surrogate":
                routed.append(ms)
            else:
                routed_to_llm += 1
        # Served throughput on the same server and cores: the served task at a busy client's
        # concurrency, then the LLM answering the same prompts (opted out of Poodle).
        load_texts = [sentiment_prompt(t) for t in texts[used + 200 : used + 200 + ns.load_items]]
        surrogate_load = run_chat_load(server.base_url, load_texts, concurrency=ns.concurrency)
        llm_load = run_chat_load(
            server.base_url, load_texts[: ns.llm_items], concurrency=ns.concurrency,
            extra_body={"vllm_xargs": {"poodle": "off"}},
        )  # fmt: skip
        active = registry.active_surrogate(task.task_id)
    finally:
        server.stop()
    # The surrogate's compute for one request, on the same texts, with the server gone (idle host).
    model = SurrogateModel.load(active["path"], num_threads=1)
    model.predict(sample[:3])
    compute: list[float] = []
    for t in sample:
        c0 = time.perf_counter()
        model.predict([t])
        compute.append(1000 * (time.perf_counter() - c0))
    out = {
        "benchmark": "routing_latency",
        "requests_per_side": ns.requests,
        "surrogate_base": ns.base,
        "surrogate_path": str(active["path"]),
        "floor_ms": {"p50": p50(floor), "min": min(floor), "max": max(floor)},
        "routed_ms": {"p50": p50(routed), "min": min(routed, default=float("nan")),
                      "max": max(routed, default=float("nan")), "served": len(routed), "to_llm": routed_to_llm},
        "surrogate_compute_ms": {"p50": p50(compute), "min": min(compute), "max": max(compute)},
    }  # fmt: skip
    served_share = sum(r.served_by == "surrogate" for r in surrogate_load.ok) / max(1, len(surrogate_load.replies))
    out["served_throughput"] = {
        "concurrency": ns.concurrency,
        "surrogate_task": {**surrogate_load.summary(), "served_by_surrogate_share": served_share},
        "llm_same_prompts": llm_load.summary(),
        "x_llm": surrogate_load.throughput() / llm_load.throughput() if llm_load.throughput() else None,
        "target": "served task >= 20x the LLM's items/s on the same cores (issue 6)",
    }
    overhead = out["routed_ms"]["p50"] - out["floor_ms"]["p50"] - out["surrogate_compute_ms"]["p50"]
    out["overhead_ms"] = overhead
    out["target"] = "routed p50 <= floor p50 + surrogate compute p50 + 5 ms"
    out["within_target"] = bool(overhead <= 5.0)
    out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(out, indent=2))
    table = (
        "| path | p50 ms | min | max |\n|---|---:|---:|---:|\n"
        + "".join(
            f"| {name} | {out[key]['p50']:.1f} | {out[key]['min']:.1f} | {out[key]['max']:.1f} |\n"
            for name, key in (("floor (no work, same emit path)", "floor_ms"), ("routed (surrogate)", "routed_ms"),
                              ("surrogate compute, batch 1", "surrogate_compute_ms"))
        )
        + f"\nPoodle's routing overhead at p50: {overhead:+.1f} ms (target <= 5 ms)\n"
    )  # fmt: skip
    tp = out["served_throughput"]
    table += (
        f"\nServed throughput, concurrency {ns.concurrency}: task served by the surrogate "
        f"{tp['surrogate_task']['items_per_s']:.1f} items/s ({served_share:.0%} answered by it), "
        f"LLM on the same prompts {tp['llm_same_prompts']['items_per_s']:.1f} items/s: "
        f"{tp['x_llm'] or float('nan'):.1f}x (target >= 20x)\n"
    )
    ns.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
