"""Batched pairwise squared-L2 distances with a fused running top-k (smallest).

Grid ``(M, cdiv(N, BLOCK_Q))``: one program holds BLOCK_Q queries of one candidate model,
sweeps all N keys in tiles and keeps each query's k best in registers, so the ``[N, N]``
distance matrix is never written to memory.
"""

import triton
import triton.language as tl


@triton.jit
def knn_topk_kernel(
    x_ptr,
    sq_ptr,
    out_d_ptr,
    out_i_ptr,
    N,
    D,
    K,
    stride_xm,
    stride_xn,
    stride_xd,
    EXCLUDE_SELF: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    K_PAD: tl.constexpr,
):
    m = tl.program_id(0)
    offs_q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = offs_q < N
    x_base = x_ptr + m * stride_xm
    sq_q = tl.load(sq_ptr + m * N + offs_q, mask=q_mask, other=0.0)

    slot = tl.arange(0, K_PAD)
    # Slots >= K hold -inf so they are never the "current worst" and never replaced.
    best_d = tl.where(slot[None, :] < K, float("inf"), float("-inf")) + tl.zeros([BLOCK_Q, K_PAD], tl.float32)
    best_i = tl.full([BLOCK_Q, K_PAD], -1, tl.int64)

    for k0 in range(0, N, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < N
        dot = tl.zeros([BLOCK_Q, BLOCK_K], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_mask = offs_d < D
            q = tl.load(
                x_base + offs_q[:, None] * stride_xn + offs_d[None, :] * stride_xd,
                mask=q_mask[:, None] & d_mask[None, :],
                other=0.0,
            )
            kt = tl.load(
                x_base + offs_k[None, :] * stride_xn + offs_d[:, None] * stride_xd,
                mask=k_mask[None, :] & d_mask[:, None],
                other=0.0,
            )
            # NOTE: ieee precision: TF32 would reorder near neighbours vs the fp32 reference.
            dot = tl.dot(q, kt, acc=dot, input_precision="ieee")
        sq_k = tl.load(sq_ptr + m * N + offs_k, mask=k_mask, other=0.0)
        dist = tl.maximum(sq_q[:, None] + sq_k[None, :] - 2.0 * dot, 0.0)
        invalid = ~k_mask[None, :] | ~q_mask[:, None]
        if EXCLUDE_SELF:
            invalid = invalid | (offs_q[:, None] == offs_k[None, :])
        dist = tl.where(invalid, float("inf"), dist)

        # Merge the tile into the running top-k: K rounds of "take the tile's best,
        # replace the worst kept one if better".
        for _ in range(0, K):
            tile_min = tl.min(dist, axis=1)
            tile_arg = tl.argmin(dist, axis=1)
            worst = tl.max(best_d, axis=1)
            worst_slot = tl.argmax(best_d, axis=1)
            take = tile_min < worst
            repl = take[:, None] & (slot[None, :] == worst_slot[:, None])
            best_d = tl.where(repl, tile_min[:, None], best_d)
            best_i = tl.where(repl, (k0 + tile_arg).to(tl.int64)[:, None], best_i)
            dist = tl.where(tl.arange(0, BLOCK_K)[None, :] == tile_arg[:, None], float("inf"), dist)

    out_off = (m * N + offs_q[:, None]) * K + slot[None, :]
    o_mask = q_mask[:, None] & (slot[None, :] < K)
    tl.store(out_d_ptr + out_off, best_d, mask=o_mask)
    tl.store(out_i_ptr + out_off, best_i, mask=o_mask)
