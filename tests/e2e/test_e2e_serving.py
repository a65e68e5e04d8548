"""End to end with a real `vllm serve` (SmolLM2-135M, CPU): the foundation and the JITR loop.

Tests run in file order on one shared server: the foundation checks first (different prompts,
no task), then a templated stream that leads to a served surrogate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.request
from pathlib import Path

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
    # The stream says who served it: the final chunk and the usage chunk carry Poodle's marker.
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    for c in (final[-1], chunks[-1]):
        assert (c.model_extra.get("kv_transfer_params") or {}).get("poodle_served_by") == "surrogate"

    # A completion of the same rendered prompt is the same task: served, with the same answer.
    from transformers import AutoTokenizer

    from poodle_vllm.models import LLM_NAME, prepared_model_path

    tok = AutoTokenizer.from_pretrained(prepared_model_path(LLM_NAME))
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    comp = client.completions.create(model="smollm2", prompt=rendered, temperature=0, max_tokens=16)
    assert (comp.model_extra.get("kv_transfer_params") or {}).get("poodle_served_by") == "surrogate"
    assert comp.choices[0].text in canonical
    # Every API response names who served it in a header, /v1/responses and /v1/messages too.
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=16
    )
    assert raw.headers["x-poodle-served-by"] == "surrogate" and raw.headers["x-poodle-task"] == task.task_id
    for route, body in (
        ("/v1/responses", {"input": prompt, "max_output_tokens": 16}),
        ("/v1/messages", {"messages": [{"role": "user", "content": prompt}], "max_tokens": 16}),
    ):
        headers, reply = _post_json(url + route, {"model": "smollm2", "temperature": 0, **body})
        answer = json.dumps(reply)
        assert headers.get("x-poodle-served-by") == "surrogate", (route, headers, answer[:300])
        assert any(f'"{c}"' in answer for c in canonical), (route, answer)

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


def _post_json(url: str, body: dict) -> tuple[dict, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())


def _restart(server, state, **serving):
    """Stop ``server`` and start a new one on the same state with ``serving`` overrides."""
    from poodle_vllm.launcher import ServerProcess, free_port

    server.stop()
    poodle = {**server.spec.poodle, "serving": {**server.spec.poodle["serving"], **serving}}
    spec = dataclasses.replace(server.spec, port=free_port(), poodle=poodle)
    return ServerProcess(spec, state / "server.log", server.paths).start(timeout_s=600)


def _engine_counters(server) -> dict:
    with urllib.request.urlopen(server.base_url + "/poodle/v1/status", timeout=10) as resp:
        return json.loads(resp.read())["engine"]["counters"]


def test_restart_low_confidence_timeout_and_forced_fallback(poodle_server, e2e_state) -> None:
    """After a restart the accepted surrogate serves again; requests below the confidence
    threshold, and held requests whose surrogate is too slow, are answered by the LLM; a surrogate
    whose answers stop agreeing with the LLM's audited ones is taken out of service."""
    reg = Registry(resolve_paths(state=e2e_state).registry)
    task = max(reg.list_tasks(), key=lambda t: t.requests_seen)
    assert task.state == "serving", "runs after test_templated_stream_leads_to_a_served_surrogate"
    texts = [t for t, _ in dataset_splits("rotten_tomatoes")["train"]][400:]
    served_conf = sorted(
        r.surrogate_confidence for r in _records(e2e_state, 0).values()
        if r.served_by == "surrogate" and r.surrogate_confidence is not None
    )  # fmt: skip
    threshold = served_conf[len(served_conf) // 2]  # the median: about half fall below it

    # 1. Restart with a confidence threshold: the surrogate serves again, doubtful inputs go to the LLM.
    server = _restart(poodle_server, e2e_state, confidence_threshold=threshold)
    try:
        res = run_chat_load(server.base_url, [sentiment_prompt(t) for t in texts[:24]], concurrency=8)
        assert not [r for r in res.replies if r.error]
        assert any(r.served_by == "surrogate" for r in res.replies), "served again after the restart"
        counters = _engine_counters(server)
        assert counters.get("llm_low_confidence", 0) >= 1
        recs = _records(e2e_state)
        ids = {r.request_id for r in res.replies}
        mine = [rec for rid, rec in recs.items() if rid in ids]
        assert all(r.surrogate_confidence >= threshold for r in mine if r.served_by == "surrogate")
        low = [r for r in mine if r.route_reason == "low_confidence"]
        assert low and all(r.served_by == "llm" and r.surrogate_confidence < threshold for r in low)
    finally:
        server.stop()

    # 2. A surrogate that disagrees with the LLM (its label order reversed on disk: every
    # prediction flips) and answers too slowly: held requests time out to the LLM, audits show
    # the drop in agreement, and the task falls back.
    active = reg.active_surrogate(task.task_id)
    meta_path = Path(active["path"]) / "poodle.json"
    meta = json.loads(meta_path.read_text())
    meta["label_names"] = list(reversed(meta["label_names"]))
    meta_path.write_text(json.dumps(meta))
    server = _restart(
        poodle_server, e2e_state, audit_fraction=0.5, fallback_window=8, fallback_target=0.6,
        surrogate_timeout_s=0.0001,
    )  # fmt: skip
    try:
        pos, state, late = 24, "serving", []
        while state == "serving" and pos < 120:
            res = run_chat_load(
                server.base_url, [sentiment_prompt(t) for t in texts[pos : pos + 16]], concurrency=8
            )
            assert not [r for r in res.replies if r.error], "Poodle's trouble never fails a request"
            late.extend(r for r in res.replies if r.served_by == "surrogate")
            pos += 16
            state = _wait_for_state(e2e_state, {"fallback", "collecting", "ready"}, timeout=5)
        assert state in {"fallback", "collecting", "ready"}, state
        counters = _engine_counters(server)
        # A held request is still answered by the surrogate when its prediction is already back
        # the first time the scheduler looks (it costs no wait); measured: 3 of about 20 while the
        # engine was busy with the audits' LLM steps. The rest time out to the LLM.
        assert counters.get("llm_surrogate_timeout", 0) > len(late), (counters, len(late))
        assert counters.get("llm_audit", 0) >= 8
        events = [e["reason"] or "" for e in reg.events(task.task_id)]
        assert any("rolling agreement" in m for m in events), events[-5:]
    finally:
        server.stop()
