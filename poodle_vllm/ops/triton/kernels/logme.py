"""LogME evidence: MacKay's fixed point for many (candidate, class) pairs in one launch.

One program per pair holds the spectrum ``s`` and projections ``z_sq`` (length r) in
registers and runs all ``max_iter`` updates without leaving the kernel; a pair that has
converged keeps its values (masked updates), which matches the early stop of the
reference.  Everything is fp64, like the reference.
"""

import triton
import triton.language as tl


@triton.jit
def _sums(alpha, beta, s, z, msk):
    denom = alpha + beta * s
    gamma = tl.sum(tl.where(msk, beta * s / denom, 0.0), axis=0)
    m_sq = tl.sum(tl.where(msk, beta * beta * s * z / (denom * denom), 0.0), axis=0)
    res_in = tl.sum(tl.where(msk, z * (alpha / denom) * (alpha / denom), 0.0), axis=0)
    return denom, gamma, m_sq, res_in


@triton.jit
def logme_evidence_kernel(
    s_ptr,
    zsq_ptr,
    resid_ptr,
    consts_ptr,
    out_ptr,
    C,
    R,
    max_iter,
    BLOCK_R: tl.constexpr,
):
    pair = tl.program_id(0)
    m = pair // C
    offs = tl.arange(0, BLOCK_R)
    msk = offs < R
    s = tl.load(s_ptr + m * R + offs, mask=msk, other=0.0)
    z = tl.load(zsq_ptr + pair * R + offs, mask=msk, other=0.0)
    resid_out = tl.load(resid_ptr + pair)
    # fp64 constants come through memory: scalar kernel arguments would be fp32.
    n = tl.load(consts_ptr + 0)
    d = tl.load(consts_ptr + 1)
    log_2pi = tl.load(consts_ptr + 2)
    tol = tl.load(consts_ptr + 3)
    eps = tl.load(consts_ptr + 4)
    r = tl.load(consts_ptr + 5)

    alpha = resid_out * 0.0 + 1.0
    beta = resid_out * 0.0 + 1.0
    active = resid_out * 0.0 + 1.0  # 1.0 while iterating, 0.0 once converged
    for _ in range(0, max_iter):
        denom, gamma, m_sq, res_in = _sums(alpha, beta, s, z, msk)
        res_sq = res_in + resid_out
        new_alpha = gamma / tl.maximum(m_sq, eps)
        new_beta = (n - gamma) / tl.maximum(res_sq, eps)
        ratio = alpha / beta
        converged = tl.abs(new_alpha / new_beta - ratio) / ratio < tol
        upd = active > 0.5
        alpha = tl.where(upd, new_alpha, alpha)
        beta = tl.where(upd, new_beta, beta)
        active = tl.where(converged, 0.0, active)

    denom, gamma, m_sq, res_in = _sums(alpha, beta, s, z, msk)
    res_sq = res_in + resid_out
    log_det = tl.sum(tl.where(msk, tl.log(denom), 0.0), axis=0) + (d - r) * tl.log(alpha)
    evidence = (
        0.5 * d * tl.log(alpha)
        + 0.5 * n * tl.log(beta)
        - 0.5 * log_det
        - 0.5 * beta * res_sq
        - 0.5 * alpha * m_sq
        - 0.5 * n * log_2pi
    )
    tl.store(out_ptr + pair, evidence / n)
