"""Pick the Triton kernel or the torch reference for each fused op.

Detect once, fall back, allow an override (the nanochat pattern):

* ``auto`` (default): Triton when it is importable *and* the inputs are CUDA tensors,
  otherwise the torch reference.  A Triton failure is never hidden: only the choice
  is automatic.
* ``POODLE_OPS_BACKEND=torch|triton`` in the environment forces one backend.
* ``set_backend(...)`` / ``use_backend(...)`` override both (for tests and benchmarks).

Forcing ``triton`` on CPU tensors only works with ``TRITON_INTERPRET=1`` set before the
kernels are first imported; the wrappers raise a clear error otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from poodle_vllm.ops import reference

BACKENDS = ("auto", "torch", "triton")
ENV_VAR = "POODLE_OPS_BACKEND"

HAS_TRITON: bool = importlib.util.find_spec("triton") is not None

_override: str | None = None


def _check_name(name: str) -> str:
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown ops backend {name!r}; expected one of {BACKENDS}")
    return name


def set_backend(name: str | None) -> None:
    """Force a backend for this process (``None`` returns to env / auto selection)."""
    global _override
    _override = None if name is None else _check_name(name)


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager form of ``set_backend`` that restores the previous choice."""
    global _override
    prev = _override
    set_backend(name)
    try:
        yield
    finally:
        _override = prev


def requested_backend() -> str:
    """The configured backend name: override, else ``$POODLE_OPS_BACKEND``, else ``auto``."""
    if _override is not None:
        return _override
    return _check_name(os.environ.get(ENV_VAR, "auto") or "auto")


def resolve_backend(device: torch.device | str | None = None) -> str:
    """The backend that will run for inputs on ``device``: ``"torch"`` or ``"triton"``."""
    name = requested_backend()
    if name == "triton":
        if not HAS_TRITON:
            raise RuntimeError(f"{ENV_VAR}=triton but triton is not installed")
        return "triton"
    if name == "torch":
        return "torch"
    dev = torch.device(device) if device is not None else None
    if HAS_TRITON and dev is not None and dev.type == "cuda":
        return "triton"
    return "torch"


def _triton_module(op: str) -> Any:
    # NOTE: imported lazily: importing triton costs ~1 s and kernels read
    # TRITON_INTERPRET at import time.
    return importlib.import_module(f"poodle_vllm.ops.triton.{op}")


def pool_classify(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean pool + linear head + softmax(logits / T); see ``reference.pool_classify``."""
    if resolve_backend(hidden.device) == "triton":
        return _triton_module("pool_classify").pool_classify(hidden, mask, weight, bias, temperature)
    return reference.pool_classify(hidden, mask, weight, bias, temperature)


def embedding_layernorm(
    input_ids: torch.Tensor,
    word_emb: torch.Tensor,
    pos_emb: torch.Tensor,
    type_emb: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """BERT embeddings + LayerNorm; see ``reference.embedding_layernorm``."""
    args = (input_ids, word_emb, pos_emb, type_emb, gamma, beta, token_type_ids, position_ids, eps)
    if resolve_backend(word_emb.device) == "triton":
        return _triton_module("embedding_layernorm").embedding_layernorm(*args)
    return reference.embedding_layernorm(*args)


def knn_topk(
    features: torch.Tensor, k: int, metric: str = "l2", exclude_self: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched k nearest neighbours for M candidates; see ``reference.knn_topk``."""
    if resolve_backend(features.device) == "triton":
        return _triton_module("knn_topk").knn_topk(features, k, metric, exclude_self)
    return reference.knn_topk(features, k, metric, exclude_self)


def knn_proxy_scores(
    features: torch.Tensor, labels: torch.Tensor, k: int = 5, metric: str = "cosine"
) -> torch.Tensor:
    """Leave-one-out kNN accuracy per candidate ``[M]``; see ``reference.knn_proxy_scores``."""
    if resolve_backend(features.device) == "triton":
        return _triton_module("knn_topk").knn_proxy_scores(features, labels, k, metric)
    return reference.knn_proxy_scores(features, labels, k, metric)


def logme_scores(
    features: torch.Tensor, labels: torch.Tensor, max_iter: int = 100, tol: float = 1e-5
) -> torch.Tensor:
    """LogME ``[M]`` (fp64) of M candidates of the same width; see ``reference.logme_scores``."""
    if resolve_backend(features.device) == "triton":
        return _triton_module("logme").logme_scores(features, labels, max_iter, tol)
    return reference.logme_scores(features, labels, max_iter, tol)


def stack_padded_features(features: list[torch.Tensor]) -> torch.Tensor:
    """Stack M ``[N, D_i]`` feature matrices into ``[M, N, max D]``, zero-padding D.

    Zero columns change neither squared-L2 distances nor L2 norms, so candidates with
    different embedding sizes can share one ``knn_topk`` launch.
    """
    if not features:
        raise ValueError("need at least one feature matrix")
    n = features[0].shape[0]
    if any(f.dim() != 2 or f.shape[0] != n for f in features):
        raise ValueError("all feature matrices must be [N, D_i] with the same N")
    d = max(f.shape[1] for f in features)
    out = features[0].new_zeros((len(features), n, d), dtype=torch.float32)
    for i, f in enumerate(features):
        out[i, :, : f.shape[1]] = f.float()
    return out
