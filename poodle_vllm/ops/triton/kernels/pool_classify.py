"""Fused masked mean pooling + linear head + tempered softmax (one program per row)."""

import triton
import triton.language as tl


@triton.jit
def _head_logits(pooled, w_ptr, b_ptr, offs_c, offs_h, C, H, stride_wc, stride_wh, HAS_BIAS: tl.constexpr):
    c_mask = offs_c < C
    h_mask = offs_h < H
    w = tl.load(
        w_ptr + offs_c[:, None] * stride_wc + offs_h[None, :] * stride_wh,
        mask=c_mask[:, None] & h_mask[None, :],
        other=0.0,
    ).to(tl.float32)
    logit = tl.sum(w * pooled[None, :], axis=1)
    if HAS_BIAS:
        logit += tl.load(b_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    return logit


@triton.jit
def pool_classify_kernel(
    h_ptr,
    mask_ptr,
    w_ptr,
    b_ptr,
    logits_ptr,
    probs_ptr,
    L,
    H,
    C,
    stride_hb,
    stride_hl,
    stride_hh,
    stride_mb,
    stride_ml,
    stride_wc,
    stride_wh,
    inv_temp,
    HAS_BIAS: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0)
    offs_h = tl.arange(0, BLOCK_H)
    h_mask = offs_h < H

    # 1) masked mean over the sequence; padded positions are never loaded.
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    cnt = tl.zeros([BLOCK_L], dtype=tl.float32)
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        keep = tl.load(mask_ptr + row * stride_mb + offs_l * stride_ml, mask=offs_l < L, other=0) != 0
        x = tl.load(
            h_ptr + row * stride_hb + offs_l[:, None] * stride_hl + offs_h[None, :] * stride_hh,
            mask=keep[:, None] & h_mask[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(x, axis=0)
        cnt += keep.to(tl.float32)
    pooled = acc / tl.maximum(tl.sum(cnt, axis=0), 1.0)

    # 2) logits in chunks of classes with an online max / sum for the softmax.
    m_run = tl.max(tl.full([BLOCK_C], float("-inf"), tl.float32), axis=0)
    s_run = tl.sum(tl.zeros([BLOCK_C], dtype=tl.float32), axis=0)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_mask = offs_c < C
        logit = _head_logits(pooled, w_ptr, b_ptr, offs_c, offs_h, C, H, stride_wc, stride_wh, HAS_BIAS)
        tl.store(logits_ptr + row * C + offs_c, logit, mask=c_mask)
        z = tl.where(c_mask, logit * inv_temp, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(z, axis=0))
        s_run = s_run * tl.exp(m_run - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m_run = m_new

    # 3) probabilities. NOTE: logits are recomputed rather than re-read from global
    # memory, because a read-after-write across threads of one program is unordered.
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_mask = offs_c < C
        logit = _head_logits(pooled, w_ptr, b_ptr, offs_c, offs_h, C, H, stride_wc, stride_wh, HAS_BIAS)
        p = tl.exp(logit * inv_temp - m_run) / s_run
        tl.store(probs_ptr + row * C + offs_c, p, mask=c_mask)
