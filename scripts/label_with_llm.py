"""Label a dataset from ../shared/data with the real LLM behind a running OpenAI-compatible server.

Usage (the lead runs it against ``poodle serve`` / ``vllm serve``):

    .venv/bin/python scripts/label_with_llm.py --url http://127.0.0.1:8000/v1 \\
        --dataset rotten_tomatoes --split train --n 5000
    .venv/bin/python scripts/label_with_llm.py --url http://127.0.0.1:8000/v1 \\
        --dataset rotten_tomatoes --split test --n 1000

Every request carries ``vllm_xargs={"poodle": "off"}`` so Poodle never answers with a surrogate:
the labels are the LLM's own. The demo template is used (user message "Classify the sentiment of
this review as positive or negative. Answer with one word.\\nReview: {text}", temperature 0,
max_tokens 16). Answers are stored with the text, the parsed label and the gold label in one Arrow
IPC file (default ``$POODLE_HOME/llm_labels/<dataset>.arrow``), checkpointed every
``--checkpoint`` answers by an atomic rewrite; a rerun skips items already answered (resume) and
retries failed ones. At the end it prints the LLM's accuracy against gold and the unparseable
share, and writes them to ``<file>.summary.json``. ``benchmarks/accuracy.py`` reads the file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poodle_vllm.paths import resolve_paths  # noqa: E402
from poodle_vllm.train.data import DATASET_LABELS, examples_from_dataset  # noqa: E402

DEMO_TEMPLATE = (
    "Classify the sentiment of this review as positive or negative. Answer with one word.\nReview: {text}"
)

SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("idx", pa.int64()),
        ("text", pa.string()),
        ("gold", pa.string()),
        ("llm_answer", pa.string()),
        ("llm_label", pa.string()),
        ("model", pa.string()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
        ("error", pa.string()),
    ],
    metadata={"poodle.llm_labels.version": "1"},
)


def default_output(dataset: str) -> Path:
    return resolve_paths().home / "llm_labels" / f"{dataset}.arrow"


def parse_label(answer: str | None, label_names: list[str]) -> str | None:
    """The one label named in the answer as a whole word (case-insensitive); None if none or several."""
    if not answer:
        return None
    text = answer.casefold()
    found = [
        name
        for name in label_names
        if re.search(r"(?<![a-z])" + re.escape(name.casefold()) + r"(?![a-z])", text)
    ]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:  # "Positive. Not negative": take the first mentioned
        return min(found, key=lambda n: text.index(n.casefold()))
    return None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows already stored (empty if the file does not exist)."""
    if not path.exists():
        return []
    with pa.OSFile(str(path), "rb") as f:
        table = pa.ipc.open_file(f).read_all()
    return table.to_pylist()


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole file atomically (a crash leaves the previous checkpoint intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, SCHEMA) as w:
        w.write_table(table)
    os.replace(tmp, path)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """LLM accuracy against gold and the unparseable share, per split and overall."""
    out: dict[str, Any] = {}
    for split in sorted({r["split"] for r in rows}) + ["all"]:
        part = [r for r in rows if (split == "all" or r["split"] == split) and not r["error"]]
        if not part:
            continue
        parsed = [r for r in part if r["llm_label"] is not None]
        correct = sum(r["llm_label"] == r["gold"] for r in parsed)
        out[split] = {
            "answered": len(part),
            "unparseable": len(part) - len(parsed),
            "unparseable_share": (len(part) - len(parsed)) / len(part),
            "accuracy_vs_gold": correct / len(part),
            "accuracy_vs_gold_parsed_only": correct / len(parsed) if parsed else None,
        }
    out["errors"] = sum(1 for r in rows if r["error"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--dataset", default="rotten_tomatoes", choices=sorted(DATASET_LABELS))
    p.add_argument("--split", default="train", help="train or test (sst2 also validation)")
    p.add_argument("--n", type=int, default=None, help="first N items of the split (default: all)")
    p.add_argument("--model", default=None, help="served model name (default: the server's first model)")
    p.add_argument(
        "--out", type=Path, default=None, help="Arrow file (default $POODLE_HOME/llm_labels/<dataset>.arrow)"
    )
    p.add_argument(
        "--concurrency", type=int, default=12, help="requests in flight (8-16 suits the CPU server)"
    )
    p.add_argument("--template", default=DEMO_TEMPLATE, help="user message with {text}")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument(
        "--max-chars", type=int, default=6000, help="cut longer texts (keeps IMDB under the context)"
    )
    p.add_argument("--checkpoint", type=int, default=200, help="rewrite the file every N answers")
    p.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="ask the first N answered items of the split again and report the LLM's self-agreement",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout (s)")
    ns = p.parse_args(argv)

    from openai import OpenAI

    out = ns.out or default_output(ns.dataset)
    label_names = DATASET_LABELS[ns.dataset]
    texts, golds, _ = examples_from_dataset(ns.dataset, ns.n, ns.split)
    client = OpenAI(base_url=ns.url, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"), timeout=ns.timeout)
    model = ns.model or client.models.list().data[0].id

    rows = read_rows(out)
    # Successful answers are kept; failed ones are dropped so they are retried.
    rows = [r for r in rows if not r["error"]]
    done = {(r["split"], r["idx"]) for r in rows if r["dataset"] == ns.dataset}
    todo = [i for i in range(len(texts)) if (ns.split, i) not in done]
    print(
        f"{ns.dataset}/{ns.split}: {len(texts)} items, {len(texts) - len(todo)} already answered, {len(todo)} to go"
    )
    lock = threading.Lock()
    since_checkpoint = 0

    def ask(i: int) -> dict[str, Any]:
        text = texts[i]
        t0 = time.perf_counter()
        row: dict[str, Any] = {
            "dataset": ns.dataset,
            "split": ns.split,
            "idx": i,
            "text": text,
            "gold": golds[i],
            "llm_answer": None,
            "llm_label": None,
            "model": model,
            "finish_reason": None,
            "latency_s": None,
            "error": None,
        }
        try:
            resp = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": ns.template.format(text=text[: ns.max_chars])}],
                temperature=0.0,
                max_tokens=ns.max_tokens,
                extra_body={"vllm_xargs": {"poodle": "off"}},
            )
            choice = resp.choices[0]
            row["llm_answer"] = choice.message.content or ""
            row["llm_label"] = parse_label(row["llm_answer"], label_names)
            row["finish_reason"] = choice.finish_reason
        except Exception as exc:  # recorded and retried on the next run
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        row["latency_s"] = time.perf_counter() - t0
        return row

    t_start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=ns.concurrency) as pool:
            futures = [pool.submit(ask, i) for i in todo]
            for k, fut in enumerate(as_completed(futures), 1):
                row = fut.result()
                with lock:
                    rows.append(row)
                    since_checkpoint += 1
                    if since_checkpoint >= ns.checkpoint:
                        write_rows(out, rows)
                        since_checkpoint = 0
                if k % 100 == 0 or k == len(todo):
                    rate = k / (time.perf_counter() - t_start)
                    print(f"  {k}/{len(todo)} answered ({rate:.1f}/s)", flush=True)
    finally:
        rows.sort(key=lambda r: (r["dataset"], r["split"], r["idx"]))
        write_rows(out, rows)
    if ns.repeat:
        stored = {r["idx"]: r for r in rows if r["dataset"] == ns.dataset and r["split"] == ns.split}
        again_idx = sorted(stored)[: ns.repeat]
        with ThreadPoolExecutor(max_workers=ns.concurrency) as pool:
            again = list(pool.map(ask, again_idx))
        pairs = [(stored[r["idx"]], r) for r in again if not r["error"]]
        report = {
            "items": len(pairs),
            "label_agreement": sum(a["llm_label"] == b["llm_label"] for a, b in pairs) / max(1, len(pairs)),
            "exact_answer_agreement": sum(a["llm_answer"] == b["llm_answer"] for a, b in pairs)
            / max(1, len(pairs)),
            "how": "the same request sent again at the same concurrency, temperature 0",
        }
        self_file = out.with_name(out.name + ".self_agreement.json")
        known = json.loads(self_file.read_text()) if self_file.exists() else {}
        known[f"{ns.dataset}/{ns.split}"] = report
        self_file.write_text(json.dumps(known, indent=2))
        print(f"self-agreement on {report['items']} repeated items: labels {report['label_agreement']:.4f}, "
              f"exact answers {report['exact_answer_agreement']:.4f}")  # fmt: skip
    summary = summarize([r for r in rows if r["dataset"] == ns.dataset])
    summary.update({"dataset": ns.dataset, "model": model, "file": str(out), "template": ns.template})
    out.with_name(out.name + ".summary.json").write_text(json.dumps(summary, indent=2))
    for split, s in summary.items():
        if isinstance(s, dict):
            print(
                f"{split}: {s['answered']} answered, LLM accuracy vs gold {s['accuracy_vs_gold']:.4f}, "
                f"unparseable {s['unparseable_share']:.2%}"
            )
    print(f"errors: {summary['errors']}; file: {out}")
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
