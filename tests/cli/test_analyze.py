"""``poodle analyze`` over an Arrow log and over JSON Lines."""

from __future__ import annotations

import json

import pytest

from poodle_vllm.cli.analyze import analyze, iter_jsonl_records
from poodle_vllm.cli.main import main
from poodle_vllm.config import DetectionConfig
from poodle_vllm.paths import resolve_paths
from poodle_vllm.testing.traffic import SimpleTokenizer, load_sources, templated_stream, to_record


@pytest.fixture(scope="module")
def stream():
    tok = SimpleTokenizer()
    mix = {"imdb_sentiment": 0.4, "ag_news_topic": 0.3, "chat": 0.3}
    return tok, templated_stream(tok.encode, 160, seed=11, mix=mix, sources=load_sources(max_chars=300))


def test_analyze_arrow_log_json(stream, tmp_path, capsys):
    arrowlog = pytest.importorskip("poodle_vllm.arrowlog")
    tok, items = stream
    with arrowlog.ArrowLogWriter(tmp_path / "logs") as writer:
        for i, it in enumerate(items):
            assert writer.submit(to_record(it, i))
    assert main(["analyze", str(tmp_path / "logs"), "--json", "--min-requests", "6"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["requests"] == len(items)
    rows = out["tasks"]
    replaceable = [r for r in rows if r["replaceable"]]
    assert len(replaceable) == 2
    assert {frozenset(lb["label"] for lb in r["labels"]) for r in replaceable} == {
        frozenset({"positive", "negative"}),
        frozenset({"world", "sports", "business", "sci/tech"}),
    }
    generative = [r for r in rows if r["state"] == "generative"]
    assert generative and all("free text" in r["reason"] for r in generative)

    assert main(["analyze", str(tmp_path / "logs")]) == 0
    text = capsys.readouterr().out
    assert "recurring task" in text and "free text" in text


def test_analyze_jsonl_records(stream, tmp_path):
    tok, items = stream
    path = tmp_path / "requests.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps({"prompt": it.prompt_text, "response": it.output_text}) + "\n")
        f.write("not json\n")
        f.write(json.dumps({"no_prompt": 1}) + "\n")
    tasks, summary = analyze(
        iter_jsonl_records(path, tok.encode, None, "m"), DetectionConfig(), block_size=32, decode=tok.decode
    )
    assert summary["bad_lines"] == 2 and summary["requests"] == len(items)
    assert sum(t.state == "collecting" for t in tasks) == 2


def test_analyze_missing_file(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.jsonl")]) == 1
    assert "does not exist" in capsys.readouterr().err


SMOLLM = resolve_paths().models / "smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.skipif(not (SMOLLM / "tokenizer.json").exists(), reason="SmolLM2 is not prepared")
def test_analyze_chat_jsonl_with_the_real_tokenizer(stream, tmp_path, capsys):
    _, items = stream
    path = tmp_path / "chat.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for it in items:
            user = it.prompt_text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
            messages = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": user}]
            f.write(json.dumps({"messages": messages, "answer": it.output_text}) + "\n")
    assert main(["analyze", str(path), "--json", "--tokenizer", str(SMOLLM)]) == 0
    rows = json.loads(capsys.readouterr().out)["tasks"]
    assert sum(r["replaceable"] for r in rows) == 2
