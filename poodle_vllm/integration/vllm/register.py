"""``vllm.general_plugins`` entry point: runs in every vLLM process, so it is cheap and idempotent.

It only adds the ``--plugin`` flag to ``vllm serve`` (when the CLI is being built in this
process). Everything else is opt-in: the scheduler via ``--scheduler-cls`` and the endpoints via
``VLLM_PLUGINS``, so a plain ``vllm serve`` with Poodle installed behaves exactly as without it.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("poodle")

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    try:
        if "vllm.entrypoints.cli.serve" in sys.modules:
            from poodle_vllm.integration.vllm.compat import install_plugin_cli_flag

            install_plugin_cli_flag()
    except Exception:  # never break vLLM start-up because of Poodle
        logger.exception("poodle: could not add the --plugin flag to vllm serve")


def is_registered() -> bool:
    return _registered
