"""``poodle analyze FILE``: run task detection offline over a request log.

Input: a Poodle Arrow log (a file or a folder) or an OpenAI-style JSON Lines file with one
request per line, either ``{"prompt": "...", "response": "..."}`` or ``{"messages": [...],
"response"|"answer": "..."}`` (chat messages are rendered with the tokenizer's chat template).
JSONL text is tokenised with ``--tokenizer`` or the prepared SmolLM2 tokenizer. The report lists
the recurring tasks, their volume, and whether each is replaceable (and why not).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from poodle_vllm.config import DetectionConfig
from poodle_vllm.types import RequestRecord, TaskInfo

DEFAULT_TOKENIZER = "smollm2-135m-instruct"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="find recurring tasks in a request log (Arrow log or JSONL)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="Arrow log file/folder, or .jsonl file")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--tokenizer", help="tokenizer folder for JSONL input (default: prepared SmolLM2)")
    p.add_argument("--block-size", type=int, default=32, help="prefix-cache block size (default 32)")
    p.add_argument(
        "--min-requests", type=int, default=None, help="requests that make a task (default: config)"
    )
    p.add_argument("--model", default="", help="model name the tasks belong to (JSONL input)")
    p.set_defaults(func=run_analyze)


class _Tokenizer:
    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer  # heavy: only for JSONL input

        self.tok = AutoTokenizer.from_pretrained(str(folder))

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def render(self, messages: list[dict[str, Any]]) -> str:
        return str(self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _find_tokenizer(path: str | None) -> _Tokenizer | None:
    if path:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
        return _Tokenizer(folder)
    from poodle_vllm.paths import resolve_paths

    folder = resolve_paths().models / DEFAULT_TOKENIZER
    return _Tokenizer(folder) if (folder / "tokenizer.json").exists() else None


def _is_jsonl(path: Path) -> bool:
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return True
    if path.is_file():
        with path.open("rb") as f:
            return f.read(1) in (b"{", b"[")
    return False


def iter_jsonl_records(
    path: Path,
    encode: Callable[[str], list[int]],
    render: Callable[[list[dict[str, Any]]], str] | None,
    model: str,
) -> Iterator[RequestRecord | None]:
    """One record per line (None for a line that is not a usable request)."""
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                yield None
                continue
            if not isinstance(obj, dict):
                yield None
                continue
            if isinstance(obj.get("messages"), list) and render is not None:
                prompt = render(obj["messages"])
            elif isinstance(obj.get("prompt"), str):
                prompt = obj["prompt"]
            else:
                yield None
                continue
            answer = obj.get("response", obj.get("answer", obj.get("completion", "")))
            answer = answer if isinstance(answer, str) else json.dumps(answer)
            yield RequestRecord(
                request_id=str(obj.get("id", f"line-{i + 1}")),
                arrival_time=float(i),
                finish_time=float(i),
                prompt_token_ids=encode(prompt),
                output_token_ids=encode(answer) if answer else [],
                finish_reason=str(obj.get("finish_reason", "stop")),
                model=str(obj.get("model", model)),
                cache_salt=obj.get("cache_salt"),
                prompt_text=prompt,
                output_text=answer,
            )


def _iter_arrow_records(path: Path) -> Iterator[RequestRecord]:
    try:
        from poodle_vllm.arrowlog import iter_records
    except ImportError:  # the log package is not part of this build: read the columns directly
        import pyarrow as pa

        with pa.memory_map(str(path)) as src:
            for batch in pa.ipc.open_stream(src):
                for row in batch.to_pylist():
                    fields = set(RequestRecord.__dataclass_fields__)
                    yield RequestRecord(**{k: v for k, v in row.items() if k in fields and k != "sampling"})
        return
    yield from iter_records(path)


def analyze(
    records: Iterator[RequestRecord | None],
    config: DetectionConfig,
    *,
    block_size: int,
    decode: Callable[[list[int]], str] | None,
    model: str = "",
) -> tuple[list[TaskInfo], dict[str, Any]]:
    """Run the detector over ``records``; return the tasks and the detector's counters."""
    from poodle_vllm.core.detector import TaskDetector

    detector: TaskDetector | None = None
    bad_lines = 0
    for rec in records:
        if rec is None:
            bad_lines += 1
            continue
        if detector is None:
            detector = TaskDetector(
                config, model=model or rec.model, block_size=block_size, tokenizer_decode=decode
            )
        detector.observe(rec)
    if detector is None:
        return [], {"requests": 0, "bad_lines": bad_lines}
    summary = detector.summary()
    summary["bad_lines"] = bad_lines
    return detector.tasks(), summary


def _task_row(t: TaskInfo) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "name": t.name,
        "tenant": t.tenant,
        "state": t.state,
        "replaceable": t.state not in ("observing", "generative"),
        "reason": t.reason,
        "requests": t.requests_seen,
        "eligible": t.eligible_seen,
        "unparseable": t.unparseable,
        "labels": [{"label": lb.label, "count": lb.count, "answer": lb.canonical_text} for lb in t.labels],
        "prefix_tokens": len(t.template.prefix_token_ids),
        "suffix_tokens": len(t.template.suffix_token_ids),
        "self_agreement": t.extra.get("self_agreement"),
        "ineligible": t.extra.get("ineligible"),
    }


def run_analyze(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    config = DetectionConfig()
    if args.min_requests is not None:
        config.min_requests = args.min_requests
    tokenizer: _Tokenizer | None = None
    if _is_jsonl(path):
        tokenizer = _find_tokenizer(args.tokenizer)
        if tokenizer is None:
            raise ValueError("JSONL input needs a tokenizer: pass --tokenizer PATH (or prepare SmolLM2)")
        records: Iterator[RequestRecord | None] = iter_jsonl_records(
            path, tokenizer.encode, tokenizer.render, args.model
        )
    else:
        if args.tokenizer:
            tokenizer = _find_tokenizer(args.tokenizer)
        records = _iter_arrow_records(path)
    tasks, summary = analyze(
        records,
        config,
        block_size=args.block_size,
        decode=tokenizer.decode if tokenizer else None,
        model=args.model,
    )
    rows = [_task_row(t) for t in tasks]
    if args.json:
        print(json.dumps({"file": str(path), "summary": summary, "tasks": rows}, indent=2, default=str))
        return 0
    total = summary.get("requests", 0)
    print(f"{path}: {total} requests, {len(rows)} recurring task(s)")
    if not rows:
        return 0
    print(f"{'task':<17} {'requests':>8} {'share':>6}  {'replaceable':<11} name / reason")
    for r in rows:
        share = r["requests"] / total if total else 0.0
        verdict = "yes" if r["replaceable"] else ("not yet" if r["state"] == "observing" else "no")
        labels = ", ".join(lb["label"] for lb in r["labels"])
        detail = f"labels: {labels}" if r["replaceable"] else (r["reason"] or "")
        print(f"{r['task_id']:<17} {r['requests']:>8} {share:>6.1%}  {verdict:<11} {r['name']}")
        if detail:
            print(f"{'':<47}{detail}")
    skipped = {k: v for k, v in summary.items() if k.startswith(("rejected:", "ineligible:"))}
    if skipped or summary.get("bad_lines"):
        print("not assigned / not labels:", json.dumps({**skipped, "bad_lines": summary.get("bad_lines", 0)}))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="poodle")
    add_parser(parser.add_subparsers())
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
