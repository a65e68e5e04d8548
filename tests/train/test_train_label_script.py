"""scripts/label_with_llm.py against a small in-process OpenAI-compatible endpoint (no vLLM)."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from poodle_vllm.paths import REPO_ROOT

_spec = importlib.util.spec_from_file_location("label_with_llm", REPO_ROOT / "scripts" / "label_with_llm.py")
label_with_llm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(label_with_llm)  # type: ignore[union-attr]


class _Endpoint(BaseHTTPRequestHandler):
    """Answers like a chatty LLM: 'Positive.' when the review has more e's than a's (a fixed rule)."""

    seen: list[dict] = []
    fail_every = 0

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(
            {"object": "list", "data": [{"id": "toy-llm", "object": "model", "created": 0, "owned_by": "t"}]}
        )

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        text = body["messages"][0]["content"]
        answer = "Positive." if text.count("e") > text.count("a") else "negative"
        if "zzz" in text:
            answer = "I cannot tell."
        self._send(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


@pytest.fixture()
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Endpoint.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_parse_label():
    names = ["negative", "positive"]
    assert label_with_llm.parse_label("Positive.", names) == "positive"
    assert label_with_llm.parse_label(" NEGATIVE\n", names) == "negative"
    assert label_with_llm.parse_label("The sentiment of this", names) is None
    assert label_with_llm.parse_label("nonpositive", names) is None
    assert label_with_llm.parse_label("Negative, not positive", names) == "negative"
    assert label_with_llm.parse_label(None, names) is None


def test_labels_resumes_and_reports(endpoint, tmp_path: Path, capsys):
    out = tmp_path / "rt.arrow"
    common = ["--url", endpoint, "--dataset", "rotten_tomatoes", "--split", "train", "--out", str(out)]
    assert label_with_llm.main(common + ["--n", "12", "--concurrency", "4", "--checkpoint", "5"]) == 0
    first = label_with_llm.read_rows(out)
    assert len(first) == 12 and [r["idx"] for r in first] == list(range(12))
    assert all(r["model"] == "toy-llm" for r in first)
    sent = _Endpoint.seen[0]
    assert sent["temperature"] == 0 and sent["max_tokens"] == 16
    assert sent["vllm_xargs"] == {"poodle": "off"}
    assert sent["messages"][0]["content"].startswith("Classify the sentiment of this review")

    _Endpoint.seen = []
    assert label_with_llm.main(common + ["--n", "20"]) == 0
    assert len(_Endpoint.seen) == 8  # only the 8 new items were asked
    rows = label_with_llm.read_rows(out)
    assert len(rows) == 20 and len({r["idx"] for r in rows}) == 20
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    parsed = [r for r in rows if r["llm_label"] is not None]
    assert summary["train"]["answered"] == 20
    assert summary["train"]["accuracy_vs_gold"] == pytest.approx(
        sum(r["llm_label"] == r["gold"] for r in parsed) / 20
    )
    assert "LLM accuracy vs gold" in capsys.readouterr().out
