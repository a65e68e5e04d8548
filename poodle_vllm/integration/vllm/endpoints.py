"""``vllm.endpoint_plugins`` entry point: Poodle's routes and the API-server side of the hook.

* Routes under ``/poodle/v1/`` (status, tasks, offers), honouring vLLM's ``--api-key`` (vLLM's
  own auth middleware guards only ``/v1``-style prefixes, so Poodle checks the same tokens).
* ``engine_client.generate`` is wrapped once so that every API (chat, completions, responses,
  messages) passes the exact prompt text to the engine side (``vllm_xargs`` key
  ``poodle_prompt_text``: the scheduler only sees token ids) and so that client-supplied
  Poodle keys are dropped unless configuration allows them.
* The serving classes' entry methods are wrapped so the ``generate`` wrapper also knows which
  endpoint a request came from and whether it declared tools or carried several turns
  (:class:`RequestFacts`, passed in a context variable); these facts always overwrite whatever
  a client sent under the same keys, so the engine's request contract cannot be spoofed.
* Prometheus metrics on vLLM's ``/metrics``, read from the registry the engine keeps current.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
from argparse import Namespace
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request  # vLLM's own web stack; route annotations need module scope
from fastapi.responses import JSONResponse

from poodle_vllm.config import PoodleConfig, config_from_additional
from poodle_vllm.paths import resolve_paths
from poodle_vllm.surrogate.router import REQUEST_FACT_KEYS, XARG_ENDPOINT, XARG_TOOLS, XARG_TURNS

logger = logging.getLogger("poodle.endpoints")

API_VERSION = "1"
CLIENT_KEYS_GUARDED = ("poodle_task", "poodle_prompt_text")
"""Dropped from client ``vllm_xargs`` unless ``serving.allow_client_xargs``. The request facts
(:data:`~poodle_vllm.surrogate.router.REQUEST_FACT_KEYS`) are always overwritten instead."""
LAZY_GENERATE_KINDS = frozenset({"responses"})
"""Endpoints whose stream calls ``engine_client.generate`` while it is consumed (see compat)."""


@dataclass(frozen=True)
class RequestFacts:
    """What the API server knows about a request that the engine cannot see in its token ids."""

    endpoint: str
    tools: bool = False
    turns: int = 1

    def extra_args(self) -> dict[str, Any]:
        return {XARG_ENDPOINT: self.endpoint, XARG_TOOLS: self.tools, XARG_TURNS: self.turns}


@dataclass
class StreamNote:
    """Who answered each prompt of one request, learnt from the engine's outputs (a streaming
    endpoint's note, and the response note behind the served-by header).

    The engine's answer reaches the API server as ``RequestOutput.kv_transfer_params``, which
    vLLM copies into non-streaming responses only; the ``generate`` wrapper notes it here so the
    stream wrapper can stamp the chunks (``compat.stamp_stream_chunk``)."""

    generators: int = 0
    """``generate`` calls made for the request (one per prompt; completions may batch prompts)."""
    served: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Prompt index -> Poodle's marker, for the prompts a surrogate answered."""
    seen: set[int] = field(default_factory=set)
    """Prompt indexes the engine has sent at least one output for (the marker comes on the first)."""


STAMPED_STREAM_KINDS = frozenset({"chat", "completions"})
"""Endpoints whose streaming chunks carry Poodle's served-by marker."""
_STREAM_NOTE: ContextVar[StreamNote | None] = ContextVar("poodle_stream_note", default=None)

OTHER_ENDPOINT = RequestFacts("other")
"""``generate`` called from an API route Poodle does not know (the engine keeps it with the LLM)."""
_REQUEST_FACTS: ContextVar[RequestFacts | None] = ContextVar("poodle_request_facts", default=None)


def current_request_facts() -> RequestFacts | None:
    return _REQUEST_FACTS.get()


def facts_for(kind: str, request: Any) -> RequestFacts:
    """The facts of one parsed request body; an unreadable body yields turns=0 (the LLM answers)."""
    from poodle_vllm.integration.vllm import compat

    try:
        tools, turns = compat.request_facts(kind, request)
        return RequestFacts(kind, tools, turns)
    except Exception:
        logger.exception("poodle: could not read the %s request's tools and turns", kind)
        return RequestFacts(kind, False, 0)


async def _stream_with_facts(stream: AsyncIterator[Any], facts: RequestFacts) -> AsyncIterator[Any]:
    # Runs in the task that consumes the stream, where the entry method's context is gone.
    token = _REQUEST_FACTS.set(facts)
    try:
        async for item in stream:
            yield item
    finally:
        try:
            _REQUEST_FACTS.reset(token)
        except ValueError:  # closed from another context (garbage collection): nothing to undo
            pass
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def tag_endpoint(kind: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an endpoint's entry method so ``generate`` calls under it see the request's facts."""

    @functools.wraps(original)
    async def entry(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if _REQUEST_FACTS.get() is not None:  # nested: /v1/messages runs chat inside; outermost wins
            return await original(self, request, *args, **kwargs)
        facts = facts_for(kind, request)
        note = StreamNote() if kind in STAMPED_STREAM_KINDS and _field_true(request, "stream") else None
        token = _REQUEST_FACTS.set(facts)
        note_token = _STREAM_NOTE.set(note)
        try:
            result = await original(self, request, *args, **kwargs)
        finally:
            _STREAM_NOTE.reset(note_token)
            _REQUEST_FACTS.reset(token)
        if kind in LAZY_GENERATE_KINDS and hasattr(result, "__anext__"):
            return _stream_with_facts(result, facts)
        if note is not None and note.generators and hasattr(result, "__anext__"):
            return _stream_with_marker(result, note)
        return result

    return entry


def _field_true(request: Any, name: str) -> bool:
    try:
        return bool(getattr(request, name, False))
    except Exception:
        return False


async def _note_served_by(
    outputs: AsyncIterator[Any], notes: list[tuple[StreamNote, int]]
) -> AsyncIterator[Any]:
    """Pass the engine's outputs through, noting Poodle's marker (per note, at its prompt index)."""
    from poodle_vllm.integration.vllm import compat

    async for out in outputs:
        try:
            marker = compat.served_marker_of(out)
            for note, index in notes:
                note.seen.add(index)
                if marker is not None:
                    note.served[index] = marker
        except Exception:  # the marker is informative: never fail the stream for it
            logger.exception("poodle: could not read the served-by marker")
        yield out


async def _stream_with_marker(stream: AsyncIterator[Any], note: StreamNote) -> AsyncIterator[Any]:
    from poodle_vllm.integration.vllm import compat

    try:
        async for piece in stream:
            if note.served:
                try:
                    piece = compat.stamp_stream_chunk(piece, note.served, note.generators)
                except Exception:
                    logger.exception("poodle: could not stamp a stream chunk")
            yield piece
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


_RESPONSE_NOTE: ContextVar[StreamNote | None] = ContextVar("poodle_response_note", default=None)
HEADER_SERVED_BY = "x-poodle-served-by"
"""Response header naming who answered: ``surrogate``, ``llm`` or ``mixed`` (several prompts)."""
MARKED_PATH_PREFIX = "/v1/"
"""Only OpenAI/Anthropic API routes get the header (not /health, /metrics, /poodle/v1)."""


def served_by_headers(note: StreamNote) -> list[tuple[bytes, bytes]]:
    """The served-by headers for what ``note`` knows; none while a prompt has not answered yet.

    ``surrogate`` (with ``x-poodle-task`` and ``x-poodle-version``) when a surrogate answered
    every prompt, ``llm`` when the engine answered every prompt without one, ``mixed`` otherwise.
    A non-streaming response is complete when its headers go out; a stream's headers go with its
    first chunk, by which time a surrogate's answer (one output, at once) is known."""
    n = note.generators
    if n == 0:
        return []
    if len(note.served) == n:
        headers = [(HEADER_SERVED_BY, "surrogate")]
        for key in ("poodle_task", "poodle_version"):
            values = {m.get(key) for m in note.served.values()}
            if len(values) == 1 and None not in values:  # one task/version for every prompt
                headers.append((f"x-{key.replace('_', '-')}", str(values.pop())))
    elif len(note.seen) == n:
        headers = [(HEADER_SERVED_BY, "mixed" if note.served else "llm")]
    else:
        return []
    return [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers]


class ServedByHeaderMiddleware:
    """Pure ASGI middleware: every API response says who served it in a header.

    It covers the endpoints whose bodies carry no marker (``/v1/responses``, ``/v1/messages``)
    as well as chat and completions. ``http.response.start`` is held back until the first body
    message so the engine's first output has been seen; the body is never touched."""

    def __init__(self, app: Any, enabled: Callable[[], bool]) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).startswith(MARKED_PATH_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            enabled = self.enabled()
        except Exception:
            enabled = False
        if not enabled:
            await self.app(scope, receive, send)
            return
        note = StreamNote()
        token = _RESPONSE_NOTE.set(note)
        held: Any = None  # the response start, until the first body message

        async def send_marked(message: Any) -> None:
            nonlocal held
            if message.get("type") == "http.response.start":
                held = message
                return
            if held is not None:
                start, held = held, None
                try:
                    start = {**start, "headers": [*start.get("headers", []), *served_by_headers(note)]}
                except Exception:  # the header is informative: never fail a response for it
                    logger.exception("poodle: could not add the served-by header")
                await send(start)
            await send(message)

        try:
            await self.app(scope, receive, send_marked)
        finally:
            _RESPONSE_NOTE.reset(token)
            if held is not None:  # a start with no body message (not per spec): send it
                await send(held)


def install_endpoint_tagging() -> list[str]:
    """Wrap every known endpoint's entry method (idempotent); returns the endpoint kinds tagged."""
    from poodle_vllm.integration.vllm import compat

    return compat.wrap_serving_methods(tag_endpoint)


def make_endpoint_plugin() -> PoodleEndpointPlugin:
    return PoodleEndpointPlugin()


class PoodleEndpointPlugin:
    name = "poodle_endpoints"
    required_tasks = None

    def __init__(self) -> None:
        self.config: PoodleConfig | None = None
        self.engine_client: Any = None
        self.api_keys: list[str] = []
        self.served_model = ""

    # -- wiring -------------------------------------------------------------------------------

    def attach_router(self, app: Any) -> None:
        router = APIRouter(prefix="/poodle/v1")
        plugin = self

        def denied(request: Request) -> JSONResponse | None:
            if not plugin.api_keys:
                return None
            auth = request.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ").strip()
            if any(hmac.compare_digest(token, k) for k in plugin.api_keys):
                return None
            return JSONResponse({"error": "Unauthorized"}, status_code=401)

        @router.get("/status")
        async def status(request: Request) -> Any:
            if (resp := denied(request)) is not None:
                return resp
            return await plugin.status()

        @router.get("/tasks")
        async def tasks(request: Request) -> Any:
            if (resp := denied(request)) is not None:
                return resp
            from poodle_vllm.cli.views import tasks_payload

            return tasks_payload(plugin._registry())

        @router.get("/offers")
        async def offers(request: Request) -> Any:
            if (resp := denied(request)) is not None:
                return resp
            from poodle_vllm.cli.views import offers_payload

            return offers_payload(plugin._registry())

        app.include_router(router)
        # Added before vLLM's own middleware (build_app attaches plugins first): the innermost.
        app.add_middleware(
            ServedByHeaderMiddleware, enabled=lambda: bool(plugin.config and plugin.config.enabled)
        )

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        self.engine_client = engine_client
        self.api_keys = [k for k in (getattr(args, "api_key", None) or [os.environ.get("VLLM_API_KEY")]) if k]
        if engine_client is None:
            return
        vllm_config = getattr(engine_client, "vllm_config", None)
        try:
            self.config = config_from_additional(getattr(vllm_config, "additional_config", None))
        except ValueError:
            logger.exception("poodle: bad --additional-config; Poodle stays inert")
            self.config = None
        if self.config is None or not self.config.enabled:
            return
        self.served_model = str(getattr(getattr(vllm_config, "model_config", None), "served_model_name", ""))
        wrap_generate(engine_client, self.config)
        try:
            tagged = install_endpoint_tagging()
            logger.info("poodle: tagging requests of endpoints %s", ", ".join(tagged))
        except Exception:  # the engine then sees every API request as endpoint "other": LLM answers
            logger.exception("poodle: endpoint tagging not installed")
        try:
            from poodle_vllm.integration.vllm.metrics import register_metrics

            register_metrics(resolve_paths(self.config.home, self.config.state_dir))
        except Exception:
            logger.exception("poodle: metrics not registered")

    def _registry(self) -> Any:
        from poodle_vllm.core.registry import Registry

        cfg = self.config or PoodleConfig()
        return Registry(resolve_paths(cfg.home, cfg.state_dir).registry)

    async def status(self) -> dict[str, Any]:
        engine: dict[str, Any] = {"reachable": False}
        if self.engine_client is not None:
            try:
                core = self.engine_client.engine_core
                engine = await core.call_utility_async("poodle_query", "status")
                engine["reachable"] = True
            except Exception as exc:  # an older engine or Poodle's scheduler not loaded
                engine = {"reachable": False, "error": str(exc)}
        return {
            "api_version": API_VERSION,
            "enabled": bool(self.config and self.config.enabled),
            "model": self.served_model,
            "engine": engine,
        }


def wrap_generate(engine_client: Any, config: PoodleConfig) -> None:
    """Wrap ``engine_client.generate`` (idempotent): pass the prompt text and the request facts,
    vet client keys."""
    original = engine_client.generate
    if getattr(original, "_poodle_wrapped", False):
        return
    allow_client = config.serving.allow_client_xargs

    def generate(prompt: Any, sampling_params: Any, request_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            extra = dict(getattr(sampling_params, "extra_args", None) or {})
            if not allow_client:
                for key in CLIENT_KEYS_GUARDED:
                    extra.pop(key, None)
            text = kwargs.get("prompt_text")
            if text is None and isinstance(prompt, dict):
                text = prompt.get("prompt")
            if isinstance(text, str):
                extra["poodle_prompt_text"] = text
            extra.update((_REQUEST_FACTS.get() or OTHER_ENDPOINT).extra_args())
            sampling_params.extra_args = extra or None
        except Exception:  # never fail a request because of Poodle
            logger.exception("poodle: could not annotate request %s", request_id)
            _strip_poodle_keys(sampling_params)
        outputs = original(prompt, sampling_params, request_id, *args, **kwargs)
        notes = [n for n in (_STREAM_NOTE.get(), _RESPONSE_NOTE.get()) if n is not None]
        if notes and hasattr(outputs, "__anext__"):
            for note in notes:
                note.generators += 1
            return _note_served_by(outputs, [(n, n.generators - 1) for n in notes])
        return outputs

    generate._poodle_wrapped = True  # type: ignore[attr-defined]
    engine_client.generate = generate


def _strip_poodle_keys(sampling_params: Any) -> None:
    """Last resort after a failed annotation: no client-sent Poodle key reaches the engine, and
    the request is marked as coming from an unknown route so the LLM answers it."""
    try:
        extra = getattr(sampling_params, "extra_args", None) or {}
        guarded = set(CLIENT_KEYS_GUARDED) | set(REQUEST_FACT_KEYS)
        kept = {k: v for k, v in extra.items() if k not in guarded}
        sampling_params.extra_args = {**kept, **OTHER_ENDPOINT.extra_args()}  # unknown: the LLM answers
    except Exception:
        logger.exception("poodle: could not strip Poodle keys")
