"""Task detection end to end on simulated traffic (fast: toy tokenizer, a few hundred requests)."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict

import pytest

from poodle_vllm.config import DetectionConfig
from poodle_vllm.core.detector import TaskDetector
from poodle_vllm.testing.traffic import (
    SimpleTokenizer,
    load_sources,
    render_chatml,
    templated_stream,
    to_record,
)
from poodle_vllm.types import RequestRecord, SamplingInfo, TaskState


@pytest.fixture(scope="module")
def sources():
    return load_sources(max_chars=400)


def _run(items, tok, *, block_size=32, config=None, detector=None):
    det = detector or TaskDetector(
        config or DetectionConfig(), model="m", block_size=block_size, tokenizer_decode=tok.decode
    )
    records = [to_record(it, i, block_size=block_size) for i, it in enumerate(items)]
    for rec in records:
        det.observe(rec)
    by_task: dict = defaultdict(Counter)
    for it, rec in zip(items, records, strict=True):
        by_task[rec.task_id][it.template_id] += 1
    return det, records, by_task


def _assert_no_false_merges(by_task):
    for task_id, counts in by_task.items():
        if task_id is not None:
            assert len(counts) == 1, f"task {task_id} mixes templates {dict(counts)}"


def test_two_templates_behind_one_system_prompt_are_two_tasks(sources):
    tok = SimpleTokenizer()
    items = templated_stream(
        tok.encode, 300, seed=0, mix={"imdb_sentiment": 0.5, "ag_news_topic": 0.5}, sources=sources
    )
    det, records, by_task = _run(items, tok)
    tasks = det.tasks()
    assert len(tasks) == 2
    _assert_no_false_merges(by_task)
    assert {next(iter(by_task[t.task_id])) for t in tasks} == {"imdb_sentiment", "ag_news_topic"}
    # the template is the instruction, not just the shared system prompt
    for t in tasks:
        assert "Article:" in t.template.prefix_text or "Review:" in t.template.prefix_text
        assert t.state == TaskState.COLLECTING.value
    # the slot is the input, byte for byte
    assigned = [(it, r) for it, r in zip(items, records, strict=True) if r.task_id]
    assert len(assigned) >= 0.9 * len(items)
    assert all(r.slot_text == it.slot_text for it, r in assigned)
    # every template is found within 20 of its requests
    for t in tasks:
        assert t.extra["detected_after_requests"] <= 20


def test_same_template_under_two_cache_salts_is_two_tasks(sources):
    tok = SimpleTokenizer()
    items = templated_stream(
        tok.encode,
        200,
        seed=1,
        mix={"imdb_sentiment": 1.0},
        cache_salts=("tenant-a", "tenant-b"),
        sources=sources,
    )
    det, records, _ = _run(items, tok)
    tasks = det.tasks()
    assert sorted(t.tenant for t in tasks) == ["tenant-a|", "tenant-b|"]
    assert tasks[0].template.prefix_token_ids == tasks[1].template.prefix_token_ids
    assert tasks[0].task_id != tasks[1].task_id
    for it, rec in zip(items, records, strict=True):
        if rec.task_id:
            assert det.get_task(rec.task_id).tenant == f"{it.cache_salt}|"
    ids = items[-1].prompt_token_ids
    assert det.match(ids, "tenant-a")[0] != det.match(ids, "tenant-b")[0]
    assert det.match(ids, "tenant-c") is None


def test_template_shorter_than_a_block_and_instruction_after_slot(sources):
    tok = SimpleTokenizer()
    items = templated_stream(
        tok.encode,
        240,
        seed=2,
        mix={"sentiment_after": 0.6, "imdb_sentiment": 0.4},
        system_prompt=None,
        sources=sources,
    )
    det, records, by_task = _run(items, tok, block_size=32)
    _assert_no_false_merges(by_task)
    tasks = {next(iter(by_task[t.task_id])): t for t in det.tasks()}
    assert set(tasks) == {"sentiment_after", "imdb_sentiment"}
    after = tasks["sentiment_after"]
    assert len(after.template.prefix_token_ids) < 32  # "<|im_start|>user\n" only: less than a block
    assert "Is the opinion in the text above positive or negative?" in after.template.suffix_text
    assert len(tasks["imdb_sentiment"].template.prefix_token_ids) < 32
    rec = next(
        r for it, r in zip(items, records, strict=True) if it.template_id == "sentiment_after" and r.task_id
    )
    assert rec.slot_text and not rec.slot_text.endswith("Answer with a single word.")


def test_json_labels_free_text_refused_and_restart_keeps_ids(sources):
    tok = SimpleTokenizer()
    items = templated_stream(
        tok.encode, 300, seed=3, mix={"ag_news_topic": 0.5, "chat": 0.5}, sources=sources
    )
    det, _, by_task = _run(items, tok)
    tasks = det.tasks()
    topic = next(t for t in tasks if "ag_news_topic" in by_task[t.task_id])
    assert topic.state == TaskState.COLLECTING.value
    assert {lb.label for lb in topic.labels} <= {"world", "sports", "business", "sci/tech"}
    assert all(
        lb.canonical_text.startswith('{"topic": ') and lb.canonical_share == 1.0 for lb in topic.labels
    )
    chat = [t for t in tasks if None in by_task[t.task_id]]
    assert chat and all(t.state == TaskState.GENERATIVE.value and "free text" in t.reason for t in chat)

    # restart: a fresh detector restored from the stored tasks keeps ids and routes at once
    restored = TaskDetector(DetectionConfig(), model="m", block_size=16, tokenizer_decode=tok.decode)
    restored.load_tasks(tasks)
    more = templated_stream(tok.encode, 60, seed=4, mix={"ag_news_topic": 1.0}, sources=sources)
    assert restored.match(more[0].prompt_token_ids)[0] == topic.task_id
    for i, it in enumerate(more):
        rec = to_record(it, i, block_size=16)
        res = restored.observe(rec)
        assert rec.task_id == topic.task_id and not res.new_tasks
    assert {t.task_id for t in restored.tasks()} == {t.task_id for t in tasks}
    assert restored.get_task(topic.task_id).requests_seen == topic.requests_seen + 60


def test_task_ids_do_not_depend_on_block_size_or_hash_seed(sources, monkeypatch):
    tok = SimpleTokenizer()
    items = templated_stream(tok.encode, 120, seed=5, mix={"imdb_sentiment": 1.0}, sources=sources)
    det16, _, _ = _run(items, tok, block_size=16)
    monkeypatch.setenv("PYTHONHASHSEED", "99")
    det32, _, _ = _run(items, tok, block_size=32)
    assert [t.task_id for t in det16.tasks()] == [t.task_id for t in det32.tasks()]


def _record(prompt, output=(1, 2), text="positive", **kw):
    return RequestRecord(
        "x", 0.0, 0.0, list(prompt), list(output), kw.pop("finish_reason", "stop"), output_text=text, **kw
    )


def test_bad_inputs_are_counted_not_raised():
    det = TaskDetector(DetectionConfig(max_prompt_tokens=500), model="m", block_size=32)
    bad = [
        _record([]),
        _record(range(10)),
        _record(range(600)),
    ]
    for rec in bad:
        res = det.observe(rec)
        assert rec.task_id is None and rec.eligible is False and res.rejected
    broken = _record(range(40))
    broken.prompt_token_ids = None  # type: ignore[assignment]
    assert det.observe(broken).rejected == "empty_prompt"
    worse = _record(range(40))
    worse.prompt_token_ids = [object()] * 40  # type: ignore[list-item]
    assert det.observe(worse).rejected == "error"
    assert det.match(None) is None and det.match([]) is None  # type: ignore[arg-type]
    s = det.summary()
    assert s["rejected:empty_prompt"] == 2
    assert s["rejected:prompt_shorter_than_block"] == 1
    assert s["rejected:prompt_too_long"] == 1
    assert s["errors"] == 1


def test_answer_eligibility_and_self_agreement():
    tok = SimpleTokenizer()
    cfg = DetectionConfig(min_requests=4)
    det = TaskDetector(cfg, model="m", block_size=8, tokenizer_decode=tok.decode)
    instruction = "Rate the sentiment of this product review as positive or negative, one word only.\n\n"
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()
    reviews = [f"{a} {b} {c} works" for a in words[:6] for b in words[6:9] for c in words[9:]]
    random.Random(0).shuffle(reviews)
    kinds = Counter()
    for i, review in enumerate(reviews * 2):  # every review twice: self-agreement pairs
        prompt = render_chatml("Be brief.", instruction + review)
        kw = {}
        if i % 10 == 3:
            kw["finish_reason"] = "length"
        elif i % 10 == 5:
            kw["sampling"] = SamplingInfo(temperature=1.5)
        elif i % 10 == 7:
            kw["sampling"] = SamplingInfo(n=2)
        flip = i >= len(reviews) and i % 9 == 0  # some repeats get the other label
        label = "positive" if (len(review) % 2 == 0) != flip else "negative"
        answer = "" if i % 10 == 9 else label.capitalize()
        rec = _record(tok.encode(prompt), tok.encode(answer), answer, **kw)
        det.observe(rec)
        kinds[rec.ineligible_reason] += 1
    (task,) = det.tasks()
    assert task.extra["ineligible"].keys() >= {"finish_length", "high_temperature", "n_gt_1", "empty_answer"}
    assert 0.3 < task.extra["ineligible_share"] < 0.5
    agreement = task.extra["self_agreement"]
    assert agreement["pairs"] > 0 and 0.0 < agreement["rate"] <= 1.0
    assert {lb.label for lb in task.labels} == {"positive", "negative"}


def test_match_is_fast_and_returns_the_slot(sources):
    tok = SimpleTokenizer()
    items = templated_stream(tok.encode, 200, seed=6, sources=sources)
    det, _, _ = _run(items, tok)
    probe = templated_stream(tok.encode, 200, seed=7, sources=sources)
    hits = 0
    start = time.perf_counter()
    for it in probe:
        m = det.match(it.prompt_token_ids)
        if m and it.template_id:
            hits += 1
            assert tok.decode(m[1]).strip() == it.slot_text.strip()
    per_call = (time.perf_counter() - start) / len(probe)
    assert hits >= 0.8 * sum(1 for it in probe if it.template_id)
    assert per_call < 1e-3  # microseconds in practice; generous for a loaded CI machine


def test_core_detection_imports_neither_torch_nor_vllm():
    import subprocess
    import sys

    code = (
        "import sys, poodle_vllm.core.detector, poodle_vllm.testing.traffic, poodle_vllm.cli.analyze;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'vllm', 'transformers'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_long_prompts_keep_exact_templates_with_bounded_memory():
    rng = random.Random(3)
    system = [rng.randrange(1000, 2000) for _ in range(1500)]  # a long shared system prompt
    instruction, question = list(range(10, 30)), list(range(40, 52))
    det = TaskDetector(DetectionConfig(), model="m", block_size=32)
    for i in range(24):
        slot = [rng.randrange(5000, 50_000) for _ in range(3000)]
        rec = _record(system + instruction + slot + question, [7], "yes" if i % 2 else "no")
        det.observe(rec)
    (task,) = det.tasks()
    assert task.template.prefix_token_ids == system + instruction
    assert task.template.suffix_token_ids == question
    assert task.extra["shared_prefix_blocks"] == len(system + instruction) // 32
    inducer = next(iter(det._inducers.values()))
    # per prompt: the shared head plus at most max_leaf_tokens of its own tokens on each side
    assert inducer.memory_bytes() < 24 * 4 * (1600 + 3 * 256) + 2_000_000
