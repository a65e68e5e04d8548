"""Wrapper for the batched pairwise-distance + top-k kernel (kNN proxy score)."""

from __future__ import annotations

import torch

from poodle_vllm.ops.reference import knn_vote_accuracy, prepare_knn_features
from poodle_vllm.ops.triton._common import check_launchable, next_pow2
from poodle_vllm.ops.triton.kernels.knn_topk import knn_topk_kernel

MAX_K = 64


def knn_topk(
    features: torch.Tensor,
    k: int,
    metric: str = "l2",
    exclude_self: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of ``reference.knn_topk``: sorted ``(dist, idx)`` ``[M, N, k]``.

    All M candidate models run in one launch; distances are fp32 (inputs are upcast).
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [M, N, D], got {tuple(features.shape)}")
    m, n, d = features.shape
    if k < 1 or k > n - int(exclude_self):
        raise ValueError(f"k={k} out of range for N={n} (exclude_self={exclude_self})")
    if k > MAX_K:
        raise ValueError(f"k={k} > {MAX_K} is not supported by the kernel")
    check_launchable(knn_topk_kernel, features)
    x = prepare_knn_features(features, metric).contiguous()
    sq = (x * x).sum(-1).contiguous()
    out_d = torch.empty((m, n, k), dtype=torch.float32, device=x.device)
    out_i = torch.empty((m, n, k), dtype=torch.int64, device=x.device)
    if m == 0 or n == 0:
        return out_d, out_i
    block_q = 32 if n > 16 else 16
    block_k = 64 if n > 32 else (32 if n > 16 else 16)
    block_d = max(16, min(64, next_pow2(d)))
    grid = (m, (n + block_q - 1) // block_q)
    knn_topk_kernel[grid](
        x,
        sq,
        out_d,
        out_i,
        n,
        d,
        k,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        EXCLUDE_SELF=exclude_self,
        BLOCK_Q=block_q,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        K_PAD=max(2, next_pow2(k)),
        num_warps=4,
    )
    # The kernel keeps each query's k best unordered; sort the small [M, N, k] result.
    out_d, order = torch.sort(out_d, dim=-1)
    return out_d, out_i.gather(-1, order)


def knn_proxy_scores(
    features: torch.Tensor,
    labels: torch.Tensor,
    k: int = 5,
    metric: str = "cosine",
) -> torch.Tensor:
    """Leave-one-out kNN accuracy ``[M]`` for M candidate feature sets in one kernel launch."""
    _, idx = knn_topk(features, k, metric=metric, exclude_self=True)
    return knn_vote_accuracy(idx, labels)
