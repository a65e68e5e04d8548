"""``vllm.endpoint_plugins`` entry point: Poodle's routes and the API-server side of the hook.

* Routes under ``/poodle/v1/`` (status, tasks, offers), honouring vLLM's ``--api-key`` (vLLM's
  own auth middleware guards only ``/v1``-style prefixes, so Poodle checks the same tokens).
* ``engine_client.generate`` is wrapped once so that every API (chat, completions, responses,
  messages) passes the exact prompt text to the engine side (``vllm_xargs`` key
  ``poodle_prompt_text``: the scheduler only sees token ids) and so that client-supplied
  Poodle keys are dropped unless configuration allows them.
* Prometheus metrics on vLLM's ``/metrics``, read from the registry the engine keeps current.
"""

from __future__ import annotations

import hmac
import logging
import os
from argparse import Namespace
from typing import Any

from fastapi import APIRouter, Request  # vLLM's own web stack; route annotations need module scope
from fastapi.responses import JSONResponse

from poodle_vllm.config import PoodleConfig, config_from_additional
from poodle_vllm.paths import resolve_paths

logger = logging.getLogger("poodle.endpoints")

API_VERSION = "1"
CLIENT_KEYS_GUARDED = ("poodle_task", "poodle_prompt_text")


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
    """Wrap ``engine_client.generate`` (idempotent) to pass the prompt text and vet client keys."""
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
            sampling_params.extra_args = extra or None
        except Exception:  # never fail a request because of Poodle
            logger.exception("poodle: could not annotate request %s", request_id)
        return original(prompt, sampling_params, request_id, *args, **kwargs)

    generate._poodle_wrapped = True  # type: ignore[attr-defined]
    engine_client.generate = generate
