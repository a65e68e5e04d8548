"""Wrapper for the fused masked-mean-pool + linear head + softmax kernel."""

from __future__ import annotations

import torch

from poodle_vllm.ops.triton._common import check_launchable, next_pow2
from poodle_vllm.ops.triton.kernels.pool_classify import pool_classify_kernel

MAX_HIDDEN = 8192
# Register budget: elements of one [BLOCK, BLOCK_H] tile held by a program.
_TILE_ELEMS = 8192


def pool_classify(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of ``reference.pool_classify``: returns fp32 ``(logits, probs)`` ``[B, C]``."""
    if hidden.dim() != 3 or mask.dim() != 2 or weight.dim() != 2:
        raise ValueError("expected hidden [B, L, H], mask [B, L], weight [C, H]")
    b, seq, h = hidden.shape
    c = weight.shape[0]
    if tuple(mask.shape) != (b, seq) or weight.shape[1] != h:
        raise ValueError(
            f"shape mismatch: hidden {tuple(hidden.shape)}, mask {tuple(mask.shape)}, weight {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (c,):
        raise ValueError(f"bias must be [{c}], got {tuple(bias.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if h > MAX_HIDDEN:
        raise ValueError(f"hidden size {h} > {MAX_HIDDEN} is not supported by the kernel")
    check_launchable(pool_classify_kernel, hidden, mask, weight, *([bias] if bias is not None else []))
    if mask.dtype == torch.bool:
        mask = mask.to(torch.int8)
    if bias is not None:
        bias = bias.contiguous()

    logits = torch.empty((b, c), dtype=torch.float32, device=hidden.device)
    probs = torch.empty_like(logits)
    if b == 0 or c == 0:
        return logits, probs
    block_h = next_pow2(h)
    block_l = max(1, min(next_pow2(seq), _TILE_ELEMS // block_h))
    block_c = max(1, min(next_pow2(c), _TILE_ELEMS // block_h))
    pool_classify_kernel[(b,)](
        hidden,
        mask,
        weight,
        bias if bias is not None else weight,  # dummy pointer, unused when HAS_BIAS=False
        logits,
        probs,
        seq,
        h,
        c,
        hidden.stride(0),
        hidden.stride(1),
        hidden.stride(2),
        mask.stride(0),
        mask.stride(1),
        weight.stride(0),
        weight.stride(1),
        1.0 / float(temperature),
        HAS_BIAS=bias is not None,
        BLOCK_L=block_l,
        BLOCK_H=block_h,
        BLOCK_C=block_c,
        num_warps=4 if block_h <= 1024 else 8,
    )
    return logits, probs
