"""The compat module is pinned to vLLM 0.32.0: every private touch point must still exist."""

from __future__ import annotations

import argparse
import inspect
import os

import pytest

vllm = pytest.importorskip("vllm")

from poodle_vllm.integration.vllm import compat  # noqa: E402


def test_pinned_version() -> None:
    assert compat.installed_vllm_version() == compat.SUPPORTED_VLLM_VERSION == "0.32.0"


def test_private_touch_points_exist() -> None:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.core.sched.utils import check_stop
    from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.request import Request

    for name in (
        "add_request",
        "finish_requests",
        "_free_request",
        "update_from_output",
        "schedule",
        "has_requests",
        "get_num_unfinished_requests",
        "shutdown",
    ):
        assert hasattr(Scheduler, name), name
    assert list(inspect.signature(Scheduler._free_request).parameters)[:3] == [
        "self",
        "request",
        "delay_free_blocks",
    ]
    assert {"request_id", "new_token_ids", "finish_reason", "stop_reason", "prefill_stats"} <= set(
        EngineCoreOutput.__struct_fields__
    )
    assert "outputs" in EngineCoreOutputs.__struct_fields__
    assert callable(check_stop) and callable(SchedulerOutput.make_empty)
    assert hasattr(Request, "append_output_token_ids") and hasattr(Request, "take_prefill_stats")
    assert isinstance(inspect.getattr_static(EngineArgs, "add_cli_args"), staticmethod)
    assert hasattr(ServeSubcommand, "validate")
    assert hasattr(EngineCore, "__init__")


def test_block_hash_to_int_matches_kv_events() -> None:
    from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash

    h = bytes(range(32))
    assert compat.block_hash_to_int(h) == maybe_convert_block_hash(h)


def test_external_request_id() -> None:
    assert compat.external_request_id("chatcmpl-abc-1234abcd") == "chatcmpl-abc"
    assert compat.external_request_id("plain") == "plain"


def test_plugin_allow_list_keeps_other_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    allow = compat.plugin_allow_list(None).split(",")
    assert "poodle" in allow and "poodle_endpoints" in allow
    general = [
        ep.name for ep in __import__("importlib.metadata").metadata.entry_points(group="vllm.general_plugins")
    ]
    assert set(general) <= set(allow)
    assert compat.plugin_allow_list("mine").split(",") == ["mine", "poodle", "poodle_endpoints"]


def test_apply_plugin_flag_sets_poodle_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    args = argparse.Namespace(
        plugin=["poodle"],
        scheduler_cls=None,
        additional_config={},
        block_size=None,
        dtype="auto",
        enforce_eager=False,
        host=None,
    )
    changes = compat.apply_plugin_flag(args)
    assert args.scheduler_cls == compat.SCHEDULER_CLS
    assert args.additional_config == {"poodle": {}}
    assert args.block_size == 32 and args.host == "127.0.0.1"
    assert "poodle_endpoints" in os.environ["VLLM_PLUGINS"]
    assert changes
    untouched = argparse.Namespace(plugin=None)
    assert compat.apply_plugin_flag(untouched) == []


def test_plugin_flag_added_to_vllm_serve_parser() -> None:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    compat.install_plugin_cli_flag()
    compat.install_plugin_cli_flag()  # idempotent
    parser = make_arg_parser(FlexibleArgumentParser())
    args = parser.parse_args(["--plugin", "poodle"])
    assert args.plugin == ["poodle"]


def test_serving_entry_points_exist_with_the_assumed_shape() -> None:
    import importlib

    for kind, (module, cls_name, method) in compat.SERVING_ENTRY_POINTS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        fn = inspect.unwrap(cls.__dict__[method])
        assert inspect.iscoroutinefunction(fn), kind
        assert list(inspect.signature(fn).parameters)[:3] == ["self", "request", "raw_request"], kind
    from vllm.entrypoints.anthropic.serving import AnthropicServingMessages
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.openai.responses.serving import OpenAIServingResponses

    # /v1/messages runs the chat endpoint inside (so the outermost tag must win) ...
    assert issubclass(AnthropicServingMessages, OpenAIServingChat)
    assert "create_chat_completion" not in AnthropicServingMessages.__dict__
    source = inspect.getsource(inspect.unwrap(AnthropicServingMessages.__dict__["create_messages"]))
    assert "self.create_chat_completion(" in source
    # ... and /v1/responses calls engine_client.generate lazily, from an async generator.
    assert inspect.isasyncgenfunction(OpenAIServingResponses._generate_with_builtin_tools)
    assert "self.engine_client.generate(" in inspect.getsource(OpenAIServingResponses._generate_with_builtin_tools)


def test_request_facts_read_real_request_bodies() -> None:
    from vllm.entrypoints.anthropic.protocol import AnthropicMessagesRequest
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest

    system = {"role": "system", "content": "Be brief."}
    user = {"role": "user", "content": "Classify: great film"}
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    chat = ChatCompletionRequest(model="m", messages=[system, user])
    assert compat.request_facts("chat", chat) == (False, 1)
    assert compat.request_facts("chat", ChatCompletionRequest(model="m", messages=[user], tools=[tool])) == (True, 1)
    history = [system, user, {"role": "assistant", "content": "positive"}, {"role": "user", "content": "sure?"}]
    assert compat.request_facts("chat", ChatCompletionRequest(model="m", messages=history)) == (False, 3)
    assert compat.request_facts("completions", CompletionRequest(model="m", prompt="x")) == (False, 1)
    assert compat.request_facts("responses", ResponsesRequest(input="Classify: great film")) == (False, 1)
    items = [user, {"role": "assistant", "content": "positive"}, {"role": "user", "content": "sure?"}]
    assert compat.request_facts("responses", ResponsesRequest(input=items, instructions="Be brief.")) == (False, 3)
    follow_up = ResponsesRequest(input="and this one?", previous_response_id="resp_1")
    assert compat.request_facts("responses", follow_up) == (False, 2)
    fn = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    assert compat.request_facts("responses", ResponsesRequest(input="x", tools=[fn]))[0] is True
    msg = AnthropicMessagesRequest(model="m", max_tokens=8, messages=[user], system="Be brief.")
    assert compat.request_facts("messages", msg) == (False, 1)
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    with_tools = AnthropicMessagesRequest(model="m", max_tokens=8, messages=[user], tools=tools)
    assert compat.request_facts("messages", with_tools) == (True, 1)


def test_token_id_logprobs_count_as_logprobs() -> None:
    from vllm.sampling_params import SamplingParams

    assert compat.sampling_info_from_params(SamplingParams(logprob_token_ids=[5, 7])).logprobs == 2
    assert compat.sampling_info_from_params(SamplingParams(logprobs=3)).logprobs == 3
    plain = compat.sampling_info_from_params(SamplingParams())
    assert plain.logprobs is None and plain.prompt_logprobs is None
    scored = SamplingParams(prompt_logprob_token_ids=[[1], [2]])
    assert compat.sampling_info_from_params(scored).prompt_logprobs == -1
