"""End to end with a real `vllm serve` (SmolLM2-135M, CPU): the foundation and the JITR loop.

Tests run in file order on one shared server: the foundation checks first (different prompts,
no task), then a templated stream that leads to a served surrogate.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest

from poodle_vllm.arrowlog import iter_records
from poodle_vllm.core.registry import Registry
from poodle_vllm.paths import resolve_paths
from poodle_vllm.testing.load import run_chat_load, sentiment_prompt
from poodle_vllm.train.data import dataset_splits

pytestmark = pytest.mark.e2e


def _client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url + "/v1", api_key="EMPTY", max_retries=0, timeout=120)


def _records(state, flush_wait: float = 3.0):
    time.sleep(flush_wait)  # the writer flushes a partial batch after flush_interval_s
    return {r.request_id: r for r in iter_records(state / "logs")}


def test_foundation_requests_are_answered_and_logged(poodle_server, e2e_state) -> None:
    client = _client(poodle_server)
    chat = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=12,
    )
    assert "Paris" in chat.choices[0].message.content
    comp = client.completions.create(
        model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=5
    )
    assert comp.choices[0].text.strip()
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Name a colour."}],
            temperature=0,
            max_tokens=8,
            stream=True,
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed

    async def aborted() -> None:
        from openai import AsyncOpenAI

        aclient = AsyncOpenAI(
            base_url=poodle_server.base_url + "/v1", api_key="EMPTY", max_retries=0, timeout=0.5
        )
        import openai

        with pytest.raises((openai.APITimeoutError, openai.APIConnectionError)):
            await aclient.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "Write a long story about a dog."}],
                temperature=0,
                max_tokens=400,
            )
        await aclient.close()

    asyncio.run(aborted())
    time.sleep(2)
    recs = _records(e2e_state)
    # Completions ids gain the prompt's index in the engine ("cmpl-X-0"): the log keeps it.
    comp_rec = next(r for rid, r in recs.items() if rid.startswith(comp.id))
    assert chat.id in recs
    rc = recs[chat.id]
    assert rc.finish_reason in ("stop", "length") and rc.served_by == "llm"
    assert rc.output_text and "Paris" in rc.output_text
    assert rc.prompt_text and "What is the capital of France?" in rc.prompt_text
    assert rc.block_size == 32 and len(rc.block_hashes) == len(rc.prompt_token_ids) // 32
    assert comp_rec.output_text.strip() == comp.choices[0].text.strip()
    assert any(r.finish_reason == "abort" for r in recs.values()), "the aborted request is logged"
    assert sum(1 for r in recs.values() if r.output_text and r.output_text == streamed) >= 1

    with urllib.request.urlopen(poodle_server.base_url + "/poodle/v1/status", timeout=10) as resp:
        status = json.loads(resp.read())
    assert status["enabled"] and status["engine"]["reachable"]
    assert status["engine"]["counters"]["finished"] >= 4


def _wait_for_state(state_dir, wanted: set[str], timeout: float) -> str:
    reg = Registry(resolve_paths(state=state_dir).registry)
    deadline = time.time() + timeout
    last = "none"
    while time.time() < deadline:
        tasks = reg.list_tasks()
        if tasks:
            last = max(tasks, key=lambda t: t.requests_seen).state
            if last in wanted:
                return last
        time.sleep(1)
    return last


def test_templated_stream_leads_to_a_served_surrogate(poodle_server, e2e_state) -> None:
    items = dataset_splits("rotten_tomatoes")["train"]
    texts = [t for t, _ in items]
    url = poodle_server.base_url
    first = run_chat_load(url, [sentiment_prompt(t) for t in texts[:90]], concurrency=8)
    assert not [r for r in first.replies if r.error]
    assert _wait_for_state(e2e_state, {"shadow", "serving"}, timeout=240) in {"shadow", "serving"}
    pos = 90
    state = "shadow"
    while state != "serving" and pos < 300:
        run_chat_load(url, [sentiment_prompt(t) for t in texts[pos : pos + 16]], concurrency=8)
        pos += 16
        state = _wait_for_state(e2e_state, {"serving"}, timeout=2)
    assert state == "serving"

    reg = Registry(resolve_paths(state=e2e_state).registry)
    task = max(reg.list_tasks(), key=lambda t: t.requests_seen)
    canonical = {lab.canonical_text for lab in task.labels}
    # What an operator sees: `poodle tasks --json` lists the task with template, slot and labels.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "poodle_vllm.cli.main", "tasks", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={"POODLE_STATE_DIR": str(e2e_state), "PATH": "/usr/bin:/bin"},
    )
    listed = {t["task_id"]: t for t in json.loads(out.stdout)["tasks"]}[task.task_id]
    assert "Classify the sentiment" in listed["template"]["prefix_text"]
    assert {"negative", "positive"} <= {lab["label"] for lab in listed["labels"]}
    assert listed["state"] == "serving"
    served = run_chat_load(url, [sentiment_prompt(t) for t in texts[pos : pos + 24]], concurrency=8)
    by_surrogate = [r for r in served.replies if r.served_by == "surrogate"]
    assert len(by_surrogate) >= 20
    assert all(r.text in canonical and r.finish_reason == "stop" for r in by_surrogate)

    client = _client(poodle_server)
    prompt = sentiment_prompt(texts[pos + 30])
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in canonical
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1

    # The same template under another tenant (cache_salt) is another task: never the surrogate.
    other = run_chat_load(
        url,
        [sentiment_prompt(t) for t in texts[pos + 40 : pos + 44]],
        concurrency=4,
        extra_body={"cache_salt": "tenant-b"},
    )
    assert all(r.served_by == "llm" for r in other.replies)
    # Logprobs are never fabricated: such requests go to the LLM.
    lp = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=16,
        logprobs=True,
    )
    assert not (lp.model_extra.get("kv_transfer_params") or {}).get("poodle_served_by")
    assert lp.choices[0].logprobs is not None

    recs = _records(e2e_state)
    logged = [recs[r.request_id] for r in by_surrogate if r.request_id in recs]
    assert logged and all(r.served_by == "surrogate" and r.task_id == task.task_id for r in logged)
