"""The API-side wrapper: request facts per endpoint reach the engine and cannot be spoofed."""

from __future__ import annotations

import asyncio
import importlib
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("vllm")

from poodle_vllm.config import load_config  # noqa: E402
from poodle_vllm.integration.vllm import compat  # noqa: E402
from poodle_vllm.integration.vllm.endpoints import (  # noqa: E402
    current_request_facts,
    install_endpoint_tagging,
    tag_endpoint,
    wrap_generate,
)


class FakeEngine:
    """Records what ``generate`` received, as vLLM's engine client would forward it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def generate(self, prompt: Any, sampling_params: Any, request_id: str, **kwargs: Any) -> str:
        self.sent.append(dict(sampling_params.extra_args or {}))
        return request_id


def params(**client_xargs: Any) -> SimpleNamespace:
    return SimpleNamespace(extra_args=dict(client_xargs) or None)


def request(messages: int = 1, tools: bool = False) -> SimpleNamespace:
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(messages)]
    return SimpleNamespace(
        messages=[{"role": "system", "content": "s"}, *turns], tools=[{}] if tools else None
    )


def make_engine(allow_client_xargs: bool = False) -> FakeEngine:
    engine = FakeEngine()
    wrap_generate(engine, load_config({"serving": {"allow_client_xargs": allow_client_xargs}}))
    return engine


def test_facts_overwrite_what_a_client_sent() -> None:
    engine = make_engine()

    async def create_chat_completion(self: Any, req: Any, raw_request: Any = None) -> str:
        # A client claims a single-turn, tool-free completion request.
        sp = params(poodle_tools=False, poodle_turns=1, poodle_endpoint="completions", poodle_task="x")
        return engine.generate({"prompt": "rendered"}, sp, "chatcmpl-1")

    chat = tag_endpoint("chat", create_chat_completion)
    asyncio.run(chat(None, request(messages=3, tools=True)))
    sent = engine.sent[-1]
    assert sent["poodle_endpoint"] == "chat" and sent["poodle_tools"] is True and sent["poodle_turns"] == 3
    assert sent["poodle_prompt_text"] == "rendered" and "poodle_task" not in sent
    assert current_request_facts() is None  # reset after the call
    # generate called outside any known endpoint: an unknown API route, never a forged one.
    engine.generate({"prompt": "p"}, params(poodle_endpoint="chat", poodle_turns=1), "x")
    assert engine.sent[-1]["poodle_endpoint"] == "other"


def test_messages_wins_over_the_chat_endpoint_it_runs_inside() -> None:
    engine = make_engine()

    async def create_chat_completion(self: Any, req: Any, raw_request: Any = None) -> str:
        return engine.generate({"prompt": "p"}, params(), "chatcmpl-2")

    chat = tag_endpoint("chat", create_chat_completion)

    async def create_messages(self: Any, req: Any, raw_request: Any = None) -> str:
        converted = SimpleNamespace(messages=req.messages, tools=None)
        return await chat(self, converted, raw_request)

    messages = tag_endpoint("messages", create_messages)
    asyncio.run(messages(None, request()))
    assert engine.sent[-1]["poodle_endpoint"] == "messages" and engine.sent[-1]["poodle_turns"] == 1


def test_a_responses_stream_generates_later_in_another_task() -> None:
    engine = make_engine()

    async def create_responses(self: Any, req: Any, raw_request: Any = None) -> Any:
        async def stream() -> Any:  # like _generate_with_builtin_tools: generate runs when iterated
            yield engine.generate({"prompt": "p"}, params(), "resp_1_0")

        return stream()

    responses = tag_endpoint("responses", create_responses)
    req = SimpleNamespace(
        input="Classify: fine", tools=[], previous_response_id=None, previous_input_messages=None
    )

    async def route() -> list[Any]:
        # vLLM runs the handler in a child task (with_cancellation) and sends the stream from the
        # parent, after the handler returned: the facts must travel with the stream.
        stream = await asyncio.create_task(responses(None, req))
        assert current_request_facts() is None
        return [item async for item in stream]

    assert asyncio.run(route()) == ["resp_1_0"]
    assert engine.sent[-1]["poodle_endpoint"] == "responses" and engine.sent[-1]["poodle_turns"] == 1


def test_an_unreadable_request_and_a_failing_annotation_leave_the_request_to_the_llm() -> None:
    engine = make_engine()

    async def create_chat_completion(self: Any, req: Any, raw_request: Any = None) -> str:
        return engine.generate({"prompt": "p"}, params(), "chatcmpl-3")

    asyncio.run(tag_endpoint("chat", create_chat_completion)(None, SimpleNamespace(messages=42)))
    assert engine.sent[-1]["poodle_turns"] == 0  # the engine answers "request_shape_unknown"

    class Stubborn:
        """extra_args that refuses the first assignment (Poodle's annotation fails midway)."""

        def __init__(self) -> None:
            self._extra: Any = {"poodle_tools": False, "poodle_turns": 1, "keep": 1}
            self.refused = False

        @property
        def extra_args(self) -> Any:
            return self._extra

        @extra_args.setter
        def extra_args(self, value: Any) -> None:
            if not self.refused:
                self.refused = True
                raise RuntimeError("no")
            self._extra = value

    sp = Stubborn()
    assert engine.generate({"prompt": "p"}, sp, "x") == "x"  # the request itself goes on
    assert sp.extra_args == {"keep": 1, "poodle_endpoint": "other", "poodle_tools": False, "poodle_turns": 1}


def test_install_tags_the_real_serving_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    for module, cls_name, method in compat.SERVING_ENTRY_POINTS.values():
        cls = getattr(importlib.import_module(module), cls_name)
        monkeypatch.setattr(cls, method, cls.__dict__[method])  # restored after the test
    kinds = install_endpoint_tagging()
    assert kinds == ["chat", "completions", "responses", "messages"]
    wrapped = {}
    for kind, (module, cls_name, method) in compat.SERVING_ENTRY_POINTS.items():
        wrapped[kind] = getattr(importlib.import_module(module), cls_name).__dict__[method]
        assert wrapped[kind]._poodle_wrapped
    assert install_endpoint_tagging() == kinds  # idempotent: nothing wrapped twice
    for kind, (module, cls_name, method) in compat.SERVING_ENTRY_POINTS.items():
        assert getattr(importlib.import_module(module), cls_name).__dict__[method] is wrapped[kind]


def test_real_messages_endpoint_is_told_apart_from_chat(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's own create_messages -> create_chat_completion chain, with only the model work faked."""
    from vllm.entrypoints.anthropic.protocol import AnthropicMessagesRequest
    from vllm.entrypoints.anthropic.serving import AnthropicServingMessages
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse

    for module, cls_name, method in compat.SERVING_ENTRY_POINTS.values():
        cls = getattr(importlib.import_module(module), cls_name)
        monkeypatch.setattr(cls, method, cls.__dict__[method])
    install_endpoint_tagging()
    engine = make_engine()

    async def render_and_generate(req: Any, raw_request: Any = None) -> ErrorResponse:
        engine.generate({"prompt": "rendered"}, params(poodle_endpoint="chat"), "chatcmpl-9")
        return ErrorResponse(error=ErrorInfo(message="stop here", type="test", code=400))

    def server(cls: type) -> Any:
        serving = cls.__new__(cls)
        serving.has_kv_connector = False
        serving._merge_inline_system = False
        serving._create_chat_completion = render_and_generate
        return serving

    turns = [
        {"role": "user", "content": "Classify: great"},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "Classify: dull"},
    ]
    body = AnthropicMessagesRequest(model="m", max_tokens=4, messages=turns, system="Answer in one word.")
    assert isinstance(asyncio.run(server(AnthropicServingMessages).create_messages(body)), ErrorResponse)
    assert engine.sent[-1]["poodle_endpoint"] == "messages" and engine.sent[-1]["poodle_turns"] == 3
    chat = ChatCompletionRequest(model="m", messages=turns[:1])
    asyncio.run(server(OpenAIServingChat).create_chat_completion(chat))
    assert engine.sent[-1]["poodle_endpoint"] == "chat" and engine.sent[-1]["poodle_turns"] == 1


class StreamingEngine(FakeEngine):
    """``generate`` returns an async stream of outputs; the marked prompts carry Poodle's marker."""

    def __init__(self, marked: set[str]) -> None:
        super().__init__()
        self.marked = marked

    def generate(self, prompt: Any, sampling_params: Any, request_id: str, **kwargs: Any) -> Any:
        self.sent.append(dict(sampling_params.extra_args or {}))
        marker = {"poodle_served_by": "surrogate", "poodle_task": "t1", "other": 1}

        async def outputs() -> Any:
            yield SimpleNamespace(kv_transfer_params=marker if request_id in self.marked else None)

        return outputs()


def _sse(chunk: dict[str, Any]) -> str:
    import json

    return f"data: {json.dumps(chunk)}\n\n"


def _served_by_stream(marked: set[str], prompts: list[str], stream: bool = True) -> list[Any]:
    """Run a fake completions endpoint shaped like vLLM's: generate per prompt, then SSE chunks."""
    import json

    engine = StreamingEngine(marked)
    wrap_generate(engine, load_config({}))

    async def create_completion(self: Any, req: Any, raw_request: Any = None) -> Any:
        gens = [engine.generate({"prompt": p}, params(), p) for p in prompts]

        async def sse() -> Any:
            for i, g in enumerate(gens):
                async for _ in g:
                    yield _sse(
                        {"id": "c", "choices": [{"index": i, "text": "positive", "finish_reason": "stop"}]}
                    )
            yield _sse({"id": "c", "choices": [], "usage": {"completion_tokens": len(prompts)}})
            yield "data: [DONE]\n\n"

        return sse()

    async def consume() -> list[Any]:
        result = await tag_endpoint("completions", create_completion)(
            None, SimpleNamespace(prompt=prompts, stream=stream)
        )
        return [json.loads(p[6:]) if p.startswith("data: {") else p async for p in result]

    return asyncio.run(consume())


def test_streaming_chunks_of_a_surrogate_answer_carry_the_marker() -> None:
    chunks = _served_by_stream({"a"}, ["a"])
    assert chunks[0]["kv_transfer_params"] == {"poodle_served_by": "surrogate", "poodle_task": "t1"}
    assert chunks[1]["kv_transfer_params"]["poodle_served_by"] == "surrogate"  # the usage chunk
    assert chunks[-1] == "data: [DONE]\n\n"
    # LLM answers pass unchanged; with two prompts only the surrogate's chunk is stamped.
    assert all("kv_transfer_params" not in c for c in _served_by_stream(set(), ["a"])[:-1])
    mixed = _served_by_stream({"b"}, ["a", "b"])
    assert "kv_transfer_params" not in mixed[0] and mixed[1]["kv_transfer_params"]["poodle_served_by"]
    assert "kv_transfer_params" not in mixed[2]  # usage covers both prompts: not all surrogate
    # Non-streaming requests are not wrapped (vLLM itself copies kv_transfer_params there).
    engine = StreamingEngine({"a"})
    wrap_generate(engine, load_config({}))

    async def create_chat_completion(self: Any, req: Any, raw_request: Any = None) -> Any:
        return engine.generate({"prompt": "p"}, params(), "a")

    out = asyncio.run(
        tag_endpoint("chat", create_chat_completion)(None, SimpleNamespace(messages=[], stream=False))
    )
    assert out.__qualname__.endswith("outputs")  # the engine's own stream, untouched


def _app_with_served_by_header(marked: set[str], enabled: bool = True) -> Any:
    """A FastAPI app with Poodle's routes and middleware, and fake API routes shaped like vLLM's:
    a non-streaming /v1/responses (one prompt) and a streaming /v1/completions (one per prompt)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    from poodle_vllm.integration.vllm.endpoints import PoodleEndpointPlugin

    engine = StreamingEngine(marked)
    wrap_generate(engine, load_config({}))
    app = FastAPI()
    plugin = PoodleEndpointPlugin()
    plugin.attach_router(app)
    plugin.config = load_config({"enabled": enabled})

    @app.post("/v1/responses")
    async def responses(body: dict[str, Any]) -> Any:
        async for _ in engine.generate({"prompt": body["input"]}, params(), body["input"]):
            pass
        return JSONResponse({"output_text": "positive"})

    @app.post("/v1/completions")
    async def completions(body: dict[str, Any]) -> Any:
        gens = [engine.generate({"prompt": p}, params(), p) for p in body["prompt"]]

        async def sse() -> Any:
            for g in gens:
                async for _ in g:
                    yield "data: {}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    @app.get("/health")
    async def health() -> Any:
        return {}

    return app


def test_every_api_response_names_who_served_it_in_a_header() -> None:
    from fastapi.testclient import TestClient

    client = TestClient(_app_with_served_by_header({"a", "b"}))
    served = client.post("/v1/responses", json={"input": "a"})
    assert served.status_code == 200 and served.json() == {"output_text": "positive"}
    assert served.headers["x-poodle-served-by"] == "surrogate"
    assert served.headers["x-poodle-task"] == "t1" and "x-poodle-version" not in served.headers
    assert client.post("/v1/responses", json={"input": "z"}).headers["x-poodle-served-by"] == "llm"
    # A stream's header goes out with its first chunk: known for the first prompt only, so a
    # two-prompt stream says nothing unless the surrogate answered the first (answers at once).
    stream = client.post("/v1/completions", json={"prompt": ["a"]})
    assert stream.headers["x-poodle-served-by"] == "surrogate" and stream.text.endswith("[DONE]\n\n")
    assert "x-poodle-served-by" not in client.post("/v1/completions", json={"prompt": ["z", "a"]}).headers
    assert "x-poodle-served-by" not in client.get("/health").headers
    # Installed but not enabled: no header at all.
    plain = TestClient(_app_with_served_by_header({"a"}, enabled=False))
    assert "x-poodle-served-by" not in plain.post("/v1/responses", json={"input": "a"}).headers
