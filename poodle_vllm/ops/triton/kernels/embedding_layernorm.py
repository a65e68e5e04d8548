"""Fused BERT embedding gather-sum (word + position + token type) + LayerNorm."""

import triton
import triton.language as tl


@triton.jit
def embedding_layernorm_kernel(
    ids_ptr,
    types_ptr,
    pos_ptr,
    word_ptr,
    posemb_ptr,
    typeemb_ptr,
    gamma_ptr,
    beta_ptr,
    out_ptr,
    T,
    H,
    eps,
    BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    # ids / types / positions are flattened contiguous int64 [T]; tables are contiguous rows.
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_h = tl.arange(0, BLOCK_H)
    t_mask = offs_t < T
    h_mask = offs_h < H
    m2 = t_mask[:, None] & h_mask[None, :]

    ids = tl.load(ids_ptr + offs_t, mask=t_mask, other=0).to(tl.int64)
    types = tl.load(types_ptr + offs_t, mask=t_mask, other=0).to(tl.int64)
    pos = tl.load(pos_ptr + offs_t, mask=t_mask, other=0).to(tl.int64)

    x = tl.load(word_ptr + ids[:, None] * H + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
    x += tl.load(posemb_ptr + pos[:, None] * H + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)
    x += tl.load(typeemb_ptr + types[:, None] * H + offs_h[None, :], mask=m2, other=0.0).to(tl.float32)

    mean = tl.sum(x, axis=1) / H
    xc = tl.where(m2, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / H
    rstd = 1.0 / tl.sqrt(var + eps)
    g = tl.load(gamma_ptr + offs_h, mask=h_mask, other=0.0).to(tl.float32)
    b = tl.load(beta_ptr + offs_h, mask=h_mask, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * g[None, :] + b[None, :]
    tl.store(out_ptr + offs_t[:, None] * H + offs_h[None, :], y.to(out_ptr.dtype.element_ty), mask=m2)
