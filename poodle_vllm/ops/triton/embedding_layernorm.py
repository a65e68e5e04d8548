"""Wrapper for the fused BERT embedding sum + LayerNorm kernel."""

from __future__ import annotations

import torch

from poodle_vllm.ops.triton._common import check_launchable, next_pow2
from poodle_vllm.ops.triton.kernels.embedding_layernorm import embedding_layernorm_kernel

MAX_HIDDEN = 8192
_TILE_ELEMS = 8192


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
    """Triton version of ``reference.embedding_layernorm``: ``[B, L, H]`` in ``word_emb``'s dtype.

    Indices are not bounds-checked on the device (as in ``nn.Embedding`` on CUDA); the
    wrapper only checks shapes.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L], got {tuple(input_ids.shape)}")
    b, seq = input_ids.shape
    h = word_emb.shape[1]
    for name, t in (("pos_emb", pos_emb), ("type_emb", type_emb)):
        if t.dim() != 2 or t.shape[1] != h:
            raise ValueError(f"{name} must be [*, {h}], got {tuple(t.shape)}")
    if tuple(gamma.shape) != (h,) or tuple(beta.shape) != (h,):
        raise ValueError(f"gamma and beta must be [{h}]")
    if h > MAX_HIDDEN:
        raise ValueError(f"hidden size {h} > {MAX_HIDDEN} is not supported by the kernel")
    if position_ids is None:
        if seq > pos_emb.shape[0]:
            raise ValueError(f"sequence length {seq} exceeds {pos_emb.shape[0]} positions")
        position_ids = torch.arange(seq, device=input_ids.device).expand(b, seq)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    for name, t in (("token_type_ids", token_type_ids), ("position_ids", position_ids)):
        if tuple(t.shape) != (b, seq):
            raise ValueError(f"{name} must be [{b}, {seq}], got {tuple(t.shape)}")
    check_launchable(
        embedding_layernorm_kernel,
        input_ids,
        word_emb,
        pos_emb,
        type_emb,
        gamma,
        beta,
        token_type_ids,
        position_ids,
    )

    out = torch.empty((b, seq, h), dtype=word_emb.dtype, device=word_emb.device)
    num_tokens = b * seq
    if num_tokens == 0:
        return out
    block_h = next_pow2(h)
    block_t = max(1, min(16, _TILE_ELEMS // block_h))
    grid = ((num_tokens + block_t - 1) // block_t,)
    embedding_layernorm_kernel[grid](
        input_ids.reshape(-1).contiguous(),
        token_type_ids.reshape(-1).contiguous(),
        position_ids.reshape(-1).contiguous(),
        word_emb.contiguous(),
        pos_emb.contiguous(),
        type_emb.contiguous(),
        gamma.contiguous(),
        beta.contiguous(),
        out,
        num_tokens,
        h,
        float(eps),
        BLOCK_T=block_t,
        BLOCK_H=block_h,
        num_warps=4 if block_h <= 1024 else 8,
    )
    return out
