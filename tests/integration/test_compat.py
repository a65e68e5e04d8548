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
