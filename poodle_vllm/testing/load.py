"""A bounded-concurrency OpenAI client load generator shared by the demo, benchmarks and tests.

Requests go only to the given base URL (127.0.0.1 in everything Poodle runs); loops are bounded
by the number of prompts and a per-request timeout.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

SENTIMENT_INSTRUCTION = "Classify the sentiment of this review as positive or negative. Answer with one word."


def sentiment_prompt(text: str) -> str:
    """The demo's user message: the plain prompt the 135M teacher handles best (notes §3.4)."""
    return f"{SENTIMENT_INSTRUCTION}\nReview: {text}"


@dataclass
class Reply:
    """One request's outcome as the client saw it."""

    index: int
    request_id: str
    text: str
    finish_reason: str | None
    latency_s: float
    started_at: float
    served_by: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class LoadResult:
    replies: list[Reply] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> list[Reply]:
        return [r for r in self.replies if r.error is None]

    def throughput(self) -> float:
        return len(self.ok) / self.wall_s if self.wall_s > 0 else 0.0

    def latency_quantile(self, q: float) -> float:
        lat = sorted(r.latency_s for r in self.ok)
        if not lat:
            return float("nan")
        if len(lat) == 1:
            return lat[0]
        return statistics.quantiles(lat, n=100, method="inclusive")[max(0, min(98, int(q * 100) - 1))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.replies),
            "errors": len(self.replies) - len(self.ok),
            "wall_s": self.wall_s,
            "items_per_s": self.throughput(),
            "p50_ms": 1000 * self.latency_quantile(0.50),
            "p99_ms": 1000 * self.latency_quantile(0.99),
        }


def served_by_of(response: Any) -> str:
    """Poodle's marker on non-streaming responses (``kv_transfer_params``); absent = the LLM."""
    extra = getattr(response, "model_extra", None) or {}
    params = extra.get("kv_transfer_params") or {}
    return str(params.get("poodle_served_by", "llm"))


async def _one_chat(
    client: Any, model: str, index: int, content: str, sem: asyncio.Semaphore, kwargs: dict[str, Any]
) -> Reply:
    async with sem:
        t0 = time.perf_counter()
        started = time.time()
        try:
            resp = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": content}], **kwargs
            )
            choice = resp.choices[0]
            return Reply(
                index=index,
                request_id=resp.id,
                text=choice.message.content or "",
                finish_reason=choice.finish_reason,
                latency_s=time.perf_counter() - t0,
                started_at=started,
                served_by=served_by_of(resp),
                prompt_tokens=resp.usage.prompt_tokens if resp.usage else 0,
                completion_tokens=resp.usage.completion_tokens if resp.usage else 0,
            )
        except Exception as exc:  # recorded, never raised: a load run reports its errors
            return Reply(index, "", "", None, time.perf_counter() - t0, started, "error", error=repr(exc))


async def run_chat_load_async(
    base_url: str,
    contents: list[str],
    *,
    model: str = "smollm2",
    concurrency: int = 8,
    temperature: float = 0.0,
    max_tokens: int = 16,
    timeout_s: float = 300.0,
    extra_body: dict[str, Any] | None = None,
    api_key: str = "EMPTY",
    start_index: int = 0,
) -> LoadResult:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        base_url=base_url.rstrip("/") + "/v1", api_key=api_key, timeout=timeout_s, max_retries=0
    )
    sem = asyncio.Semaphore(concurrency)
    kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
    if extra_body:
        kwargs["extra_body"] = extra_body
    t0 = time.perf_counter()
    try:
        replies = await asyncio.gather(
            *(_one_chat(client, model, start_index + i, c, sem, kwargs) for i, c in enumerate(contents))
        )
    finally:
        await client.close()
    return LoadResult(replies=list(replies), wall_s=time.perf_counter() - t0)


def run_chat_load(base_url: str, contents: list[str], **kwargs: Any) -> LoadResult:
    """Synchronous wrapper of :func:`run_chat_load_async`."""
    return asyncio.run(run_chat_load_async(base_url, contents, **kwargs))
