"""Wrapper for the batched LogME evidence kernel (model-search proxy score)."""

from __future__ import annotations

import math

import torch

from poodle_vllm.ops.reference import logme_prepare
from poodle_vllm.ops.triton._common import check_launchable, next_pow2
from poodle_vllm.ops.triton.kernels.logme import logme_evidence_kernel

MAX_RANK = 8192


def logme_evidence(
    s: torch.Tensor,
    z_sq: torch.Tensor,
    resid_out: torch.Tensor,
    n: int,
    d: int,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> torch.Tensor:
    """Triton version of ``reference.logme_evidence``: evidence / n ``[M, C]`` fp64."""
    if s.dim() != 2 or z_sq.dim() != 3 or resid_out.dim() != 2:
        raise ValueError("expected s [M, r], z_sq [M, C, r], resid_out [M, C]")
    m, r = s.shape
    c = z_sq.shape[1]
    if tuple(z_sq.shape) != (m, c, r) or tuple(resid_out.shape) != (m, c):
        raise ValueError(
            f"shape mismatch: s {tuple(s.shape)}, z_sq {tuple(z_sq.shape)}, resid {tuple(resid_out.shape)}"
        )
    if r > MAX_RANK:
        raise ValueError(f"rank {r} > {MAX_RANK} is not supported by the kernel")
    check_launchable(logme_evidence_kernel, s, z_sq, resid_out)
    s64, z64, res64 = (t.to(torch.float64).contiguous() for t in (s, z_sq, resid_out))
    consts = torch.tensor(
        [float(n), float(d), math.log(2 * math.pi), float(tol), 1e-12, float(r)],
        dtype=torch.float64,
        device=s.device,
    )
    out = torch.empty((m, c), dtype=torch.float64, device=s.device)
    if m * c == 0:
        return out
    block_r = max(16, next_pow2(r))
    logme_evidence_kernel[(m * c,)](
        s64, z64, res64, consts, out, c, r, max_iter, BLOCK_R=block_r, num_warps=4 if block_r <= 2048 else 8
    )
    return out


def logme_scores(
    features: torch.Tensor, labels: torch.Tensor, max_iter: int = 100, tol: float = 1e-5
) -> torch.Tensor:
    """LogME ``[M]`` of M candidates: torch ``eigh`` for the spectrum, one kernel for all iterations."""
    s, z_sq, resid_out = logme_prepare(features, labels)
    return logme_evidence(s, z_sq, resid_out, features.shape[1], features.shape[2], max_iter, tol).mean(-1)
