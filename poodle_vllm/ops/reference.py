"""Pure-torch reference implementations of Poodle's fused ops.

Each function here is the ground truth its Triton kernel is tested against
(``tests/ops/``) and the fallback ``ops.dispatch`` uses on CPU.  They favour
clarity over speed: fp32 accumulation, no in-place tricks.

Ops:
    * ``pool_classify``       masked mean pooling + linear head + softmax(logits / T)
                              (the surrogate's per-request tail after the encoder)
    * ``embedding_layernorm`` BERT embeddings: word + position + token-type, then LayerNorm
    * ``knn_topk``            pairwise distances + k nearest neighbours, for several
                              candidate feature sets at once (leave-one-out)
    * ``knn_vote_accuracy``   majority vote over the neighbours' labels -> kNN proxy score
    * ``knn_proxy_scores``    ``knn_topk`` + ``knn_vote_accuracy``
    * ``logme_prepare``       spectrum (Gram eigh, SVD where ill-conditioned) + label projections
    * ``logme_evidence``      LogME fixed-point iteration for every (candidate, class) pair
    * ``logme_scores``        ``logme_prepare`` + ``logme_evidence`` + mean over classes
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

METRICS = ("l2", "cosine")


def pool_classify(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean pooling, a linear classification head and a tempered softmax.

    Args:
        hidden: ``[B, L, H]`` last hidden states of a padded batch.
        mask: ``[B, L]`` attention mask (non-zero = real token).  A row with no
            real token pools to zeros (the head then yields ``bias``).
        weight: ``[C, H]`` head weight (``nn.Linear`` layout).
        bias: ``[C]`` head bias or None.
        temperature: softmax temperature (calibration); must be > 0.

    Returns:
        ``(logits, probs)``, both ``[B, C]`` fp32; ``probs = softmax(logits / temperature)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    h = hidden.float()
    m = (mask != 0).to(h.dtype)
    counts = m.sum(dim=1, keepdim=True).clamp_min(1.0)
    pooled = (h * m.unsqueeze(-1)).sum(dim=1) / counts
    logits = pooled @ weight.float().t()
    if bias is not None:
        logits = logits + bias.float()
    probs = torch.softmax(logits / temperature, dim=-1)
    return logits, probs


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
    """BERT input embeddings: ``LayerNorm(word[ids] + pos[positions] + type[types])``.

    Matches ``transformers``' ``BertEmbeddings`` in eval mode (absolute positions,
    ``position_ids`` defaulting to ``arange(L)``, token types defaulting to 0).

    Returns:
        ``[B, L, H]`` in ``word_emb``'s dtype (computed in fp32).
    """
    b, seq = input_ids.shape
    if position_ids is None:
        position_ids = torch.arange(seq, device=input_ids.device).expand(b, seq)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    # NOTE: F.embedding (index_select) is ~10x faster on CPU than advanced indexing.
    x = (
        F.embedding(input_ids, word_emb).float()
        + F.embedding(position_ids, pos_emb).float()
        + F.embedding(token_type_ids, type_emb).float()
    )
    y = F.layer_norm(x, (x.shape[-1],), gamma.float(), beta.float(), eps)
    return y.to(word_emb.dtype)


def prepare_knn_features(features: torch.Tensor, metric: str) -> torch.Tensor:
    """fp32 copy of ``features``; L2-normalised rows for ``cosine``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    x = features.float()
    if metric == "cosine":
        x = F.normalize(x, dim=-1)
    return x


def knn_topk(
    features: torch.Tensor,
    k: int,
    metric: str = "l2",
    exclude_self: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of every sample, for several candidate models at once.

    Args:
        features: ``[M, N, D]``: M candidate models' features of the same N samples
            (models with smaller D are zero-padded, which changes no distance).
        k: neighbours per sample (``k <= N - 1`` with ``exclude_self``).
        metric: ``"l2"`` (squared Euclidean) or ``"cosine"`` (squared Euclidean of
            L2-normalised rows, i.e. ``2 - 2 cos``; same ranking as cosine distance).
        exclude_self: leave-one-out (a sample is not its own neighbour).

    Returns:
        ``(dist, idx)``, ``[M, N, k]`` fp32 / int64, sorted by ascending distance.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [M, N, D], got {tuple(features.shape)}")
    n = features.shape[1]
    if k < 1 or k > n - int(exclude_self):
        raise ValueError(f"k={k} out of range for N={n} (exclude_self={exclude_self})")
    x = prepare_knn_features(features, metric)
    sq = (x * x).sum(-1)
    d = sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * torch.bmm(x, x.transpose(1, 2))
    d = d.clamp_min(0.0)
    if exclude_self:
        eye = torch.eye(n, dtype=torch.bool, device=d.device)
        d = d.masked_fill(eye, float("inf"))
    dist, idx = torch.topk(d, k, dim=-1, largest=False, sorted=True)
    return dist, idx


def knn_vote_accuracy(
    idx: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Leave-one-out kNN accuracy from neighbour indices.

    Args:
        idx: ``[M, N, k]`` neighbour indices (from ``knn_topk``).
        labels: ``[N]`` integer labels.
        num_classes: label count (default ``labels.max() + 1``).

    Returns:
        ``[M]`` fp32 accuracy of the majority vote (ties go to the smaller label).
    """
    labels = labels.to(idx.device).long()
    c = int(labels.max().item()) + 1 if num_classes is None else num_classes
    neigh = labels[idx]  # [M, N, k]
    votes = F.one_hot(neigh, c).sum(dim=2)  # [M, N, C]
    pred = votes.argmax(dim=-1)
    return (pred == labels.unsqueeze(0)).float().mean(dim=1)


def knn_proxy_scores(
    features: torch.Tensor,
    labels: torch.Tensor,
    k: int = 5,
    metric: str = "cosine",
) -> torch.Tensor:
    """kNN proxy score (leave-one-out accuracy) for each of M candidate feature sets."""
    _, idx = knn_topk(features, k, metric=metric, exclude_self=True)
    return knn_vote_accuracy(idx, labels)


LOGME_EIGH_MIN_RATIO = 1e-8
"""``logme_prepare`` trusts the Gram-matrix ``eigh`` only when every eigenvalue of a candidate is
at least this share of its largest; below it the eigenvalues keep too few correct digits
(absolute error ~ eps * max) and that candidate is decomposed by SVD instead."""


def _spectrum_eigh(f: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s [M, r], z_sq [M, r, C])`` from a batched ``eigh`` of the smaller Gram matrix."""
    n, d = f.shape[1], f.shape[2]
    if d <= n:
        s, v = torch.linalg.eigh(f.transpose(1, 2) @ f)  # [M, D], [M, D, D]
        proj = v.transpose(1, 2) @ (f.transpose(1, 2) @ targets)  # sigma * (U^T y): [M, D, C]
        z_sq = proj * proj / s.clamp_min(1e-300)[..., None]
    else:
        s, u = torch.linalg.eigh(f @ f.transpose(1, 2))  # [M, N], [M, N, N]
        z = u.transpose(1, 2) @ targets  # [M, N, C]
        z_sq = z * z
    # Directions at the fp64 noise floor of the squared spectrum carry no information (and a
    # division by ~0 above): zero them, which leaves only their log(alpha) terms.
    keep = s > 1e-10 * s.amax(dim=-1, keepdim=True).clamp_min(1e-300)
    return torch.where(keep, s, 0.0), torch.where(keep[..., None], z_sq, 0.0)


def _spectrum_svd(f: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s [M, r], z_sq [M, r, C])`` from the thin SVD of F (the per-model numpy LogME's way)."""
    u, sigma, _ = torch.linalg.svd(f, full_matrices=False)  # [M, N, r], [M, r]
    z = u.transpose(1, 2) @ targets
    return sigma * sigma, z * z


def logme_prepare(
    features: torch.Tensor, labels: torch.Tensor, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spectral inputs of LogME for M candidates: ``(s, z_sq, resid_out)`` in fp64.

    With the thin SVD ``F_m = U diag(sigma) V^T``: ``s = sigma^2`` ``[M, r]``, ``r = min(N, D)``;
    ``z_sq[m, c] = (U^T y_c)^2`` ``[M, C, r]`` for the one-vs-rest target ``y_c`` of each
    class present in ``labels``; ``resid_out = |y_c|^2 - sum(z_sq)`` ``[M, C]`` (the part of
    ``y_c`` outside F's column space).

    ``method``: ``"eigh"`` (batched ``eigh`` of the smaller Gram matrix, ``F^T F`` or ``F F^T``:
    several times faster than an SVD, and the decomposition is LogME's whole cost), ``"svd"``
    (thin SVD of F, as the per-model numpy LogME), or ``"auto"``: ``eigh``, then SVD for the
    candidates whose spectrum spans more than ``1 / LOGME_EIGH_MIN_RATIO``.

    NOTE: squaring F squares its condition number, so the Gram eigenvalues of near rank-deficient
    features (small random encoders, LayerNorm outputs, duplicated columns) lose their digits;
    those tiny directions still move the evidence by several percent when the labels are fitted
    well (large beta), hence the SVD fallback rather than a cut-off.
    """
    if features.dim() != 3 or labels.dim() != 1 or labels.shape[0] != features.shape[1]:
        raise ValueError("expected features [M, N, D] and labels [N]")
    if method not in ("auto", "eigh", "svd"):
        raise ValueError(f"unknown LogME decomposition {method!r}; expected auto, eigh or svd")
    f = features.double()
    _, y = torch.unique(labels.to(f.device), return_inverse=True)
    targets = F.one_hot(y, int(y.max().item()) + 1).double()  # [N, C]
    if method == "svd":
        s, z_sq = _spectrum_svd(f, targets)
    else:
        s, z_sq = _spectrum_eigh(f, targets)
        if method == "auto":
            bad = s.amin(dim=-1) < LOGME_EIGH_MIN_RATIO * s.amax(dim=-1)
            if bool(bad.any()):
                s_b, z_b = _spectrum_svd(f[bad], targets)
                s, z_sq = s.clone(), z_sq.clone()
                s[bad], z_sq[bad] = s_b, z_b
    z_sq = z_sq.transpose(1, 2).contiguous()  # [M, C, r]
    resid_out = (targets.sum(0)[None, :] - z_sq.sum(-1)).clamp_min(0.0)
    return s.contiguous(), z_sq, resid_out


def logme_evidence(
    s: torch.Tensor,
    z_sq: torch.Tensor,
    resid_out: torch.Tensor,
    n: int,
    d: int,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> torch.Tensor:
    """LogME evidence / n ``[M, C]`` by MacKay's fixed point, all pairs iterated together.

    Same updates and stopping rule as ``poodle_vllm.search.scorers._logme_one_target``:
    each (candidate, class) pair stops once ``alpha / beta`` moves by less than ``tol``
    (relative); a stopped pair keeps its values while the others continue.
    """
    ss = s[:, None, :]
    alpha = torch.ones_like(resid_out)
    beta = torch.ones_like(resid_out)
    active = torch.ones_like(resid_out, dtype=torch.bool)
    for _ in range(max_iter):
        a, b = alpha[..., None], beta[..., None]
        denom = a + b * ss
        gamma = (b * ss / denom).sum(-1)
        m_sq = (b * b * ss * z_sq / (denom * denom)).sum(-1)
        res_sq = (z_sq * (a / denom) ** 2).sum(-1) + resid_out
        new_alpha = gamma / m_sq.clamp_min(1e-12)
        new_beta = (n - gamma) / res_sq.clamp_min(1e-12)
        ratio = alpha / beta
        converged = (new_alpha / new_beta - ratio).abs() / ratio < tol
        alpha = torch.where(active, new_alpha, alpha)
        beta = torch.where(active, new_beta, beta)
        active = active & ~converged
        if not bool(active.any()):
            break
    a, b = alpha[..., None], beta[..., None]
    denom = a + b * ss
    m_sq = (b * b * ss * z_sq / (denom * denom)).sum(-1)
    res_sq = (z_sq * (a / denom) ** 2).sum(-1) + resid_out
    r = s.shape[-1]
    log_det = torch.log(denom).sum(-1) + (d - r) * torch.log(alpha)
    evidence = (
        d / 2.0 * torch.log(alpha)
        + n / 2.0 * torch.log(beta)
        - 0.5 * log_det
        - beta / 2.0 * res_sq
        - alpha / 2.0 * m_sq
        - n / 2.0 * math.log(2 * math.pi)
    )
    return evidence / n


def logme_scores(
    features: torch.Tensor, labels: torch.Tensor, max_iter: int = 100, tol: float = 1e-5
) -> torch.Tensor:
    """LogME ``[M]`` (fp64) of M candidate feature sets of the same N samples, in one batch.

    Candidates with different widths can be zero-padded to a common D only if the caller
    accounts for the ``(d - r) log alpha`` term; pass the true D per group instead.
    """
    s, z_sq, resid_out = logme_prepare(features, labels)
    n, d = features.shape[1], features.shape[2]
    return logme_evidence(s, z_sq, resid_out, n, d, max_iter, tol).mean(-1)
